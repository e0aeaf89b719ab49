"""The market-data feeds in the Dagster UI (issue 14): a sensor that reports each live
instrument's feed figures as a runless observation of ``<SYMBOL>/live_session`` whenever they
change (state, trades forwarded, gaps, reconnects), so the asset's timeline shows when a feed
went stale, entered safe mode or recovered."""

from __future__ import annotations

import json
from collections.abc import Mapping

import numpy as np
from dagster import (
    AssetKey,
    AssetObservation,
    DefaultSensorStatus,
    MetadataValue,
    PartitionsDefinition,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from assets.partitions import partition_key
from fbe_pipeline.live.feeds.status import FeedStatusStore, feeds_path
from fbe_pipeline.market.instruments import load_instruments
from fbe_pipeline.market.sessions import assign_trading_dates
from fbe_pipeline.settings import paths

# Figures that make a new observation when they change (lag alone does not).
CHANGES = ("state", "forwarded", "gaps", "reconnects", "duplicates", "backfilled", "malformed")
FIGURES = (*CHANGES, "received", "last_trade_id", "lag_trades", "lag_ms")


def build_feed_status_sensor(partitions: Mapping[str, PartitionsDefinition]) -> SensorDefinition:
    """The ``feed_status`` sensor over the instruments in ``partitions`` (symbol -> the
    partitions of its ``live_session`` asset); a feed's figures are reported on the partition
    of the trading date they were written on, when the instrument has it. Cursor: JSON of the
    last reported figures per feed and symbol."""

    @sensor(
        name="feed_status",
        minimum_interval_seconds=15,
        default_status=DefaultSensorStatus.RUNNING,
        description="Reports each feed's state and counters (fbe feeds) as observations of "
        "<SYMBOL>/live_session when they change.",
    )
    def feed_status(context: SensorEvaluationContext) -> SensorResult | SkipReason:
        path = feeds_path(paths().home)
        if not path.exists():
            return SkipReason("no feed has run on this FBE_HOME")
        store = FeedStatusStore(path)
        try:
            rows = store.symbols()
        finally:
            store.close()
        instruments = load_instruments()
        last = json.loads(context.cursor or "{}")
        events = []
        for row in rows.to_dict("records"):
            symbol = str(row["symbol"])
            if symbol not in partitions or symbol not in instruments:
                continue
            key = f"{row['feed']}:{symbol}"
            signature = [row[c] for c in CHANGES]
            if last.get(key) == signature:
                continue
            dates, _ = assign_trading_dates(instruments[symbol], np.array([row["updated_ns"]]))
            partition = partition_key(dates[0].astype(object))
            if not partitions[symbol].has_partition_key(partition):
                continue
            metadata = {
                f"feed_{c}": (None if row[c] != row[c] else row[c])  # NaN: no trade yet
                for c in FIGURES
            }
            events.append(
                AssetObservation(
                    asset_key=AssetKey([symbol, "live_session"]),
                    partition=partition,
                    metadata={
                        "feed": str(row["feed"]),
                        **{k: v for k, v in metadata.items() if v is not None},
                        "feed_updated": MetadataValue.timestamp(row["updated_ns"] / 1e9),
                    },
                )
            )
            last[key] = signature
        if not events:
            return SkipReason("no feed changed")
        return SensorResult(asset_events=events, cursor=json.dumps(last, default=str))

    return feed_status
