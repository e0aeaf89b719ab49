"""Helpers shared by the asset modules: context to domain arguments, check results."""

from __future__ import annotations

from datetime import date
from typing import Any

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    MetadataValue,
    TableColumn,
    TableColumnConstraints,
    TableSchema,
)
from pandera.api.pandas.container import DataFrameSchema

from assets.partitions import PARTITION_EXPR, split_key
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


OWNERS = ["team:fbe-quant-data"]


def column_schema(schema: DataFrameSchema) -> TableSchema:
    """The Dagster table schema of a pandera contract: each column's dtype, nullability and
    checks (e.g. ``greater_than(0)``), so the catalog shows what the contract enforces."""

    def rule(check: Any) -> str:
        args = ", ".join(str(v) for v in (check.statistics or {}).values())
        return f"{check.name}({args})"

    return TableSchema(
        columns=[
            TableColumn(
                name,
                str(col.dtype),
                constraints=TableColumnConstraints(
                    nullable=bool(col.nullable), other=[rule(c) for c in col.checks]
                ),
            )
            for name, col in schema.columns.items()
        ]
    )


def table_asset(schema: DataFrameSchema, layer: str, partitioned: bool = True) -> dict[str, Any]:
    """Catalog arguments shared by the DuckDB-backed assets: kinds, owners, a ``layer`` tag,
    the column schema from the pandera contract and, when partitioned, the I/O manager's
    ``partition_expr``."""
    metadata: dict[str, Any] = {"dagster/column_schema": column_schema(schema)}
    if partitioned:
        metadata["partition_expr"] = PARTITION_EXPR
    return {
        "kinds": {"pandas", "duckdb"},
        "owners": OWNERS,
        "tags": {"layer": layer},
        "metadata": metadata,
    }


def rounded(figures: dict[str, Any], digits: int = 4) -> dict[str, Any]:
    """Metadata figures rounded for people (floats to ``digits`` significant decimals)."""
    return {k: round(v, digits) if isinstance(v, float) else v for k, v in figures.items()}
