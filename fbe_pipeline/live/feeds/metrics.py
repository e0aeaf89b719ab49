"""The feeds' figures on the ingest service's ``/metrics``: a Prometheus collector that reads
:class:`~fbe_pipeline.live.feeds.status.FeedStatusStore` at each scrape (the feeds are other
processes, so their counters live in the status store, not in this process)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from fbe_pipeline.live.feeds.status import STATES, FeedStatusStore

# Status column -> (metric name, help); each a gauge labelled by feed and symbol.
FIGURES = {
    "received": ("fbe_feed_trades_received", "Trades received on the venue's stream"),
    "backfilled": ("fbe_feed_trades_backfilled", "Trades fetched from the venue's history"),
    "duplicates": ("fbe_feed_trades_duplicates", "Trades dropped as already forwarded"),
    "forwarded": ("fbe_feed_trades_forwarded", "Trades acknowledged by the ingest"),
    "malformed": ("fbe_feed_messages_malformed", "Stream messages that could not be parsed"),
    "reconnects": ("fbe_feed_reconnects", "Connections lost and re-opened"),
    "lag_trades": ("fbe_feed_lag_trades", "Trades received, not yet acknowledged"),
    "lag_ms": ("fbe_feed_lag_ms", "Age of the oldest trade not yet acknowledged, ms"),
    "gaps": ("fbe_feed_gaps", "Ranges of trades the venue could not supply"),
    "last_trade_id": ("fbe_feed_last_trade_id", "Id of the last acknowledged trade"),
}


class FeedCollector(Collector):
    """Gauges of every (feed, symbol) in the feeds database at ``path``, plus
    ``fbe_feed_state{feed, symbol, state}`` (1 for the current state, 0 for the others)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """Read the status store; nothing while no feed has run."""
        if not self.path.exists():
            return
        store = FeedStatusStore(self.path)
        try:
            rows = store.symbols()
        finally:
            store.close()
        labels = ["feed", "symbol"]
        for column, (name, doc) in FIGURES.items():
            family = GaugeMetricFamily(name, doc, labels=labels)
            for row in rows.itertuples(index=False):
                value = getattr(row, column)
                if value is not None and value == value:  # NaN: no trade yet
                    family.add_metric([row.feed, row.symbol], float(value))
            yield family
        state = GaugeMetricFamily(
            "fbe_feed_state", "1 for the feed's current state", labels=[*labels, "state"]
        )
        for row in rows.itertuples(index=False):
            for name in STATES:
                state.add_metric([row.feed, row.symbol, name], float(row.state == name))
        yield state
