"""The market as paper execution sees it: a session's trades and closed bars from the raw store
and the landing log, through the batch pipeline's own functions.

Owns :class:`SessionMarket` and :func:`offers_from_live`.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pandas as pd

from fbe_pipeline.execution.broker import FrameMarketData
from fbe_pipeline.execution.gateway import SignalOffer
from fbe_pipeline.live.tail import landed_frame
from fbe_pipeline.market.frames import TICK_COLUMNS
from fbe_pipeline.market.instruments import Instrument
from fbe_pipeline.pipeline import session_bars, session_bounds, session_ticks
from fbe_pipeline.storage.store import RawStore


class SessionMarket(FrameMarketData):
    """Trades and bars of one symbol's session: the raw store's ticks plus the landing log's
    (duplicates dropped by :func:`~fbe_pipeline.pipeline.session_ticks`).

    Attributes
    ----------
    clock_ns : int
        The latest trade time of the session, ns UTC (0 without trades): the market's clock.
    bars : pandas.DataFrame
        The session's 1-minute bars closed by ``clock_ns`` (``ts`` as int64 ns, bar open).
    close_ns : int
        The session's close, ns UTC.
    """

    def __init__(
        self, store: RawStore, landing_dir: Path, instrument: Instrument, trading_date: date
    ) -> None:
        frames = [store.read_partition("ticks", instrument.symbol, trading_date)]
        path = landing_dir / instrument.symbol / f"{trading_date.isoformat()}.jsonl"
        if path.exists():
            lines = []
            for line in path.read_bytes().splitlines():
                try:
                    doc = json.loads(line)
                except ValueError:
                    continue  # a line torn by a crash
                if isinstance(doc, dict) and doc.get("key"):
                    lines.append(doc)
            if lines:
                landed = landed_frame(lines).drop_duplicates("key")
                frames.append(landed[list(TICK_COLUMNS)])
        present = [f for f in frames if f is not None and len(f)]
        raw = pd.concat(present, ignore_index=True) if present else None
        ticks, _ = session_ticks(raw, None, instrument, trading_date)
        super().__init__(ticks[["symbol", "ts_event", "price"]])
        _, self.close_ns = session_bounds(instrument, trading_date)
        self.clock_ns = int(ticks["ts_event"].max()) if len(ticks) else 0
        bars = session_bars(ticks, instrument, trading_date)
        bar_open = pd.DatetimeIndex(bars["ts"]).as_unit("ns").asi8
        closed = bar_open + 60_000_000_000 <= max(self.clock_ns, 0)
        self.bars = bars.loc[closed].assign(ts=bar_open[closed]).reset_index(drop=True)


def offers_from_live(signals: pd.DataFrame) -> list[SignalOffer]:
    """Signal offers from rows of the live signal store
    (:meth:`~fbe_pipeline.live.signal_store.LiveSignalStore.signals`)."""
    return [
        SignalOffer(
            signal_id=str(r.signal_id),
            symbol=str(r.symbol),
            trading_date=pd.Timestamp(r.trading_date).date().isoformat(),
            direction=str(r.direction),
            bar_close_ns=pd.Timestamp(r.bar_close).value,
            decision_ns=pd.Timestamp(r.decision_time).value,
            config_version=str(r.config_version),
            source="live",
            context=json.loads(str(r.context)),
        )
        for r in signals.itertuples(index=False)
    ]
