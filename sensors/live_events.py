"""Reports of the live detector to the Dagster instance: one runless observation of the
``live_session`` asset per closed bar and symbol, never one per tick (issue 8)."""

from __future__ import annotations

from dagster import AssetKey, AssetObservation, DagsterInstance, MetadataValue

from fbe_pipeline.live.detector import BarsClosed


def bar_observations(item: BarsClosed) -> list[AssetObservation]:
    """One observation of ``[<symbol>, "live_session"]``, partition = the trading date, per
    bar closed by the evaluation ``item``.

    Metadata: ``bars`` (bars of the session closed up to this one), ``bar_close`` (the bar's
    close, UTC), ``signals`` (signals on bars closed up to this one) and ``closed_through``.
    """
    first = item.bars - len(item.bar_closes)
    out = []
    for i, close in enumerate(item.bar_closes):
        signals = sum(1 for c in item.signal_closes if c <= close)
        out.append(
            AssetObservation(
                asset_key=AssetKey([item.symbol, "live_session"]),
                partition=item.trading_date.isoformat(),
                metadata={
                    "bars": first + i + 1,
                    "bar_close": MetadataValue.timestamp(close / 1e9),
                    "signals": signals,
                    "closed_through": MetadataValue.timestamp(item.closed_through / 1e9),
                },
            )
        )
    return out


class DagsterBarReporter:
    """Callable for :class:`~fbe_pipeline.live.service.LiveService`'s ``on_bars_closed``.

    Parameters
    ----------
    instance : DagsterInstance
        The instance of the batch pipeline (``$FBE_HOME/dagster``).
    """

    def __init__(self, instance: DagsterInstance) -> None:
        self.instance = instance
        self.reported = 0

    def __call__(self, item: BarsClosed) -> None:
        """Report each closed bar of ``item`` as a runless asset event."""
        for observation in bar_observations(item):
            self.instance.report_runless_asset_event(observation)
            self.reported += 1
