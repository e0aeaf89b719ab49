"""Helpers shared by the asset modules: context to domain arguments, check results."""

from __future__ import annotations

from datetime import date
from typing import Any

import pandas as pd
from dagster import AssetCheckResult, AssetCheckSeverity, AssetExecutionContext, MetadataValue

from assets.partitions import split_key
from fbe_pipeline.checks import CheckOutcome
from fbe_pipeline.instruments import Instrument, get_instrument


def partition(context: AssetExecutionContext) -> tuple[date, Instrument]:
    """The trading date and instrument of the partition being materialized."""
    day, symbol = split_key(context.partition_key)
    return day, get_instrument(symbol)


def _meta(value: object) -> Any:
    if isinstance(value, str) and "\n" in value:
        return MetadataValue.md(f"```\n{value}\n```")
    if isinstance(value, list | dict):
        return MetadataValue.json(value)
    return value


def check_result(name: str, outcome: CheckOutcome, warn: bool = False) -> AssetCheckResult:
    """Turn a domain :class:`CheckOutcome` into an ``AssetCheckResult`` with metadata
    (severity WARN for monitors, ERROR otherwise)."""
    return AssetCheckResult(
        check_name=name,
        passed=outcome.passed,
        severity=AssetCheckSeverity.WARN if warn else AssetCheckSeverity.ERROR,
        metadata={k: _meta(v) for k, v in outcome.metadata.items()},
    )


def from_store(frame: pd.DataFrame) -> pd.DataFrame:
    """Inputs read back from DuckDB carry the session time zone; normalise to UTC and sort."""
    out = frame.copy()
    for col in out.columns:
        if isinstance(out[col].dtype, pd.DatetimeTZDtype):
            out[col] = out[col].dt.tz_convert("UTC").astype("datetime64[ns, UTC]")
    if "trading_date" in out:
        out["trading_date"] = pd.to_datetime(out["trading_date"]).astype("datetime64[ns]")
    return out.sort_values("ts").reset_index(drop=True) if "ts" in out else out
