"""Partitions: trading day x symbol, and the look-back mappings (never a later partition)."""

from __future__ import annotations

import os
from datetime import date

from dagster import (
    DailyPartitionsDefinition,
    DimensionPartitionMapping,
    IdentityPartitionMapping,
    MultiPartitionKey,
    MultiPartitionMapping,
    MultiPartitionsDefinition,
    StaticPartitionsDefinition,
    TimeWindowPartitionMapping,
)

from fbe_pipeline.instruments import load_instruments

PARTITIONS_START = os.environ.get("FBE_PARTITIONS_START", "2013-01-01")

# Calendar-day look-backs: 4 days reach the previous session across a weekend plus a holiday;
# 31 days hold the trailing 20 sessions of the regime percentile.
WARMUP_DAYS = 4
REGIME_DAYS = 31
SUMMARY_DAYS = 31

date_partitions = DailyPartitionsDefinition(start_date=PARTITIONS_START, end_offset=1)
symbol_partitions = StaticPartitionsDefinition(sorted(load_instruments()))
day_symbol_partitions = MultiPartitionsDefinition(
    {"date": date_partitions, "symbol": symbol_partitions}
)


def lookback(days: int) -> MultiPartitionMapping:
    """Same symbol, trading days ``[d - days, d]``: the current and earlier partitions only."""
    return MultiPartitionMapping(
        {
            "date": DimensionPartitionMapping(
                "date",
                TimeWindowPartitionMapping(
                    start_offset=-days, end_offset=0, allow_nonexistent_upstream_partitions=True
                ),
            ),
            "symbol": DimensionPartitionMapping("symbol", IdentityPartitionMapping()),
        }
    )


def partition_key(trading_date: date, symbol: str) -> MultiPartitionKey:
    """The partition key of a trading date and symbol."""
    return MultiPartitionKey({"date": trading_date.isoformat(), "symbol": symbol})


def split_key(key: str | MultiPartitionKey) -> tuple[date, str]:
    """``(trading_date, symbol)`` of a partition key such as ``2013-10-07|SPY``."""
    if isinstance(key, MultiPartitionKey):
        dims = key.keys_by_dimension
        return date.fromisoformat(dims["date"]), dims["symbol"]
    day, symbol = str(key).split("|")
    return date.fromisoformat(day), symbol


PARTITION_EXPR = {"date": "trading_date", "symbol": "symbol"}
