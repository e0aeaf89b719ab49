"""Streaming detector: turns each closed minute into bars, features, scores and signals with
the batch pipeline's own functions, on the window the batch assets read.

Owns :class:`StreamingDetector` and :class:`BarsClosed`. Driven by the live service loop
(:mod:`.service`), which feeds it landing lines and watermarks; no Dagster import.

When a minute closes
    A symbol's event-time boundary is the larger of its latest ``ts_event`` minus the grace
    (default 2 s, for late ticks) and the sender's watermark (``POST /v1/watermark``), floored
    to the minute. Bars ending at or before it are closed. A tick of a later session moves the
    boundary past the earlier session's close, which closes its last bar. A session that
    closes by the wall clock while the service runs (close + grace <= now, and the close is
    no older than a day before the service started, so historic replays are left to event
    time) closes its last bar too, unless the symbol's market-data feed is down (stale,
    reconnecting or in safe mode).

Why results equal the batch ones
    Each evaluation recomputes the session so far with :func:`~fbe_pipeline.pipeline.session_ticks`,
    :func:`~fbe_pipeline.pipeline.session_bars` and
    :func:`~fbe_pipeline.pipeline.session_features` over the previous session's bars plus
    today's (the ``features`` asset's one-session look-back), then scores and signals. A
    signal bar has trades, so every gap before it is settled, and features read no later bar;
    signals of bars closed by the boundary are therefore final, and are recorded once each in
    the :class:`~.signal_store.LiveSignalStore`. Ticks arriving after their minute closed
    (later than the grace) still land and reach the batch, not the live signal already decided.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta

import numpy as np
import pandas as pd

from fbe_pipeline.market.bars import BAR_COLUMNS
from fbe_pipeline.market.frames import TICK_COLUMNS
from fbe_pipeline.market.instruments import Instrument
from fbe_pipeline.market.sessions import session_table
from fbe_pipeline.pipeline import (
    CONTEXT_COLUMNS,
    NoSessionError,
    session_bars,
    session_bounds,
    session_features,
    session_scores,
    session_signals,
    session_ticks,
    signal_context,
)
from fbe_pipeline.research.config import ScoringConfig
from fbe_pipeline.storage.store import RawStore

log = logging.getLogger(__name__)

NS_PER_MINUTE = 60_000_000_000
DEFAULT_GRACE_MS = 2_000
_DAY_NS = 86_400 * 1_000_000_000
STAGES = ("bars", "features", "signals", "record")


@dataclass(frozen=True)
class BarsClosed:
    """What one evaluation closed for a symbol's session (one report per new bar).

    Attributes
    ----------
    symbol : str
    trading_date : datetime.date
    bar_closes : tuple of int
        Close times (ns UTC) of the bars closed by this evaluation, ascending.
    bars : int
        Bars of the session closed so far.
    signals : int
        Signals of the session on bars closed so far.
    signal_closes : tuple of int
        Bar close times (ns UTC) of those signals, ascending.
    new_signals : pandas.DataFrame
        Signals recorded by this evaluation (``SIGNAL_COLUMNS``).
    closed_through : int
        Event-time boundary, ns UTC.
    stage_seconds : dict of str to float
        Wall time of each stage of :data:`STAGES`.
    session_closed : bool
        Whether the session's last bar is closed.
    """

    symbol: str
    trading_date: date
    bar_closes: tuple[int, ...]
    bars: int
    signals: int
    signal_closes: tuple[int, ...]
    new_signals: pd.DataFrame
    closed_through: int
    stage_seconds: dict[str, float]
    session_closed: bool = False


@dataclass
class _Day:
    open_ns: int
    close_ns: int
    base: pd.DataFrame | None
    quotes: pd.DataFrame | None
    books: pd.DataFrame | None
    frames: list[pd.DataFrame] = field(default_factory=list)
    keys: set[str] = field(default_factory=set)
    closed_through: int = 0
    bars: pd.DataFrame | None = None
    # Session ticks prepared so far, the raw frames not yet prepared, and the largest
    # (ts_event, seq) of the raw ticks prepared (in session or not).
    prepared: pd.DataFrame | None = None
    unprepared: list[pd.DataFrame] = field(default_factory=list)
    prepared_through: tuple[int, int] = (-1, -1)
    # Whether live ticks arrived for the session; a session read only for warm-up is not
    # evaluated.
    live: bool = False


class StreamingDetector:
    """Per-symbol session state and the evaluation of closed minutes.

    Not thread-safe: one caller (the live service loop).

    Parameters
    ----------
    instruments : Mapping of str to Instrument
        Registered instruments.
    store : RawStore
        Source of ticks already in the raw store (earlier sessions, sealed minutes, quotes and
        books), read once per session.
    config : ScoringConfig
        The scoring configuration of the batch pipeline.
    record : callable
        ``record(signals, closed_through) -> new signals``; stores signals once each (see
        :meth:`~.signal_store.LiveSignalStore.record`).
    grace_ms : int
        Event-time grace for late ticks, ms (default 2,000).
    started_ns : int, optional
        Wall clock at service start, ns UTC (default now); bounds the wall-clock close rule.
    feeds_down : callable, optional
        Symbols whose market-data feed is stale, reconnecting or in safe mode now: their
        sessions never close by the wall clock (a minute without data from a dead feed is a
        gap, not a flat bar); event time still closes them.
    """

    def __init__(
        self,
        instruments: Mapping[str, Instrument],
        store: RawStore,
        config: ScoringConfig,
        record: Callable[[pd.DataFrame, int], pd.DataFrame],
        grace_ms: int = DEFAULT_GRACE_MS,
        started_ns: int | None = None,
        feeds_down: Callable[[], set[str]] = set,
    ) -> None:
        self.instruments = instruments
        self.feeds_down = feeds_down
        # Bars closing after this time (ns UTC) are decided with ``config``; earlier bars keep
        # the signals recorded under the config before it (see :meth:`set_config`).
        self.config_since_ns = 0
        self.store = store
        self.config = config
        self.record = record
        self.grace_ns = grace_ms * 1_000_000
        self.started_ns = time.time_ns() if started_ns is None else started_ns
        self._days: dict[str, dict[date, _Day]] = {}
        self._latest_event: dict[str, int] = {}
        self._watermark: dict[str, int] = {}

    def set_config(self, config: ScoringConfig, since_ns: int) -> bool:
        """Score with ``config`` from the bars that open at or after ``since_ns`` (ns UTC, a
        minute boundary: the next bar after a config change); bars before keep their
        recorded signals. Returns whether the config changed."""
        if config.version == self.config.version:
            return False
        self.config = config
        self.config_since_ns = since_ns
        return True

    def add(self, symbol: str, trading_date: date, frame: pd.DataFrame) -> int:
        """Take newly landed lines of one symbol and trading date (first line per key kept).

        Parameters
        ----------
        frame : pandas.DataFrame
            :func:`~.tail.landed_frame` rows, file order.

        Returns
        -------
        int
            Ticks added (new keys).
        """
        if symbol not in self.instruments or frame.empty:
            return 0
        latest = int(frame["ts_event"].max())
        self._latest_event[symbol] = max(self._latest_event.get(symbol, latest), latest)
        day = self._day(symbol, trading_date)
        if day is None:
            return 0
        day.live = True
        fresh = np.zeros(len(frame), dtype=bool)
        for i, key in enumerate(frame["key"].tolist()):
            if key not in day.keys:
                day.keys.add(key)
                fresh[i] = True
        if not fresh.any():
            return 0
        new = frame.loc[fresh, list(TICK_COLUMNS)]
        day.frames.append(new)
        if len(day.frames) >= 256:  # keep a full recomputation's concat cheap
            day.frames = [pd.concat(day.frames, ignore_index=True)]
        day.unprepared.append(new)
        return int(fresh.sum())

    def advance_watermark(self, symbol: str, watermark_ns: int) -> None:
        """Apply a sender's promise that no tick before ``watermark_ns`` (ns UTC) follows."""
        self._watermark[symbol] = max(self._watermark.get(symbol, watermark_ns), watermark_ns)

    def boundary(self, symbol: str) -> int:
        """The symbol's event-time boundary, ns UTC, floored to the minute (0 before data)."""
        latest = self._latest_event.get(symbol)
        by_ticks = latest - self.grace_ns if latest is not None else 0
        edge = max(by_ticks, self._watermark.get(symbol, 0))
        return edge - edge % NS_PER_MINUTE

    def cutoff(self, symbol: str, trading_date: date) -> int:
        """Time (ns UTC) before which ticks of ``symbol`` on ``trading_date`` may be sealed:
        the event-time boundary, or the session's closed-through time if later."""
        day = self._days.get(symbol, {}).get(trading_date)
        return max(self.boundary(symbol), day.closed_through if day else 0)

    def advance(self, now_ns: int | None = None) -> list[BarsClosed]:
        """Evaluate every session whose closed boundary moved.

        Parameters
        ----------
        now_ns : int, optional
            Wall clock, ns UTC (default now), for the wall-clock close of a live session.

        Returns
        -------
        list of BarsClosed
            One per session evaluated.
        """
        now = time.time_ns() if now_ns is None else now_ns
        out = []
        down: set[str] | None = None
        for symbol, days in self._days.items():
            edge = self.boundary(symbol)
            for trading_date, day in sorted(days.items()):
                if not day.live:
                    continue
                through = min(edge, day.close_ns)
                live_close = day.close_ns >= self.started_ns - _DAY_NS
                if live_close and now >= day.close_ns + self.grace_ns and through < day.close_ns:
                    down = self.feeds_down() if down is None else down
                    if symbol not in down:
                        through = day.close_ns
                if through > day.closed_through and through > day.open_ns:
                    out.append(self._evaluate(symbol, trading_date, day, through))
        return out

    def _day(self, symbol: str, trading_date: date) -> _Day | None:
        days = self._days.setdefault(symbol, {})
        if trading_date in days:
            return days[trading_date]
        instrument = self.instruments[symbol]
        try:
            open_ns, close_ns = session_bounds(instrument, trading_date)
        except NoSessionError:
            return None  # ticks outside any session: sealed, never in a bar
        day = _Day(
            open_ns,
            close_ns,
            self.store.read_partition("ticks", symbol, trading_date),
            self.store.read_partition("quotes", symbol, trading_date),
            self.store.read_partition("books", symbol, trading_date),
        )
        days[trading_date] = day
        # Keep the session and the one before it (the warm-up); older ones are done.
        for old in sorted(days)[:-2]:
            del days[old]
        return day

    def _session_bars(self, symbol: str, trading_date: date, day: _Day) -> pd.DataFrame:
        """Bars of the session so far from :func:`session_ticks` and :func:`session_bars`.

        Ticks usually arrive in ``(ts_event, seq)`` order; then only the new ones go through
        :func:`session_ticks`, preceded by the prepared ticks from the last price change on (all
        the tick rule reads before them), which gives the rows a full recomputation would. Any
        tick at or before the last prepared one (a late tick, a tie) recomputes the session.
        """
        instrument = self.instruments[symbol]
        new = [f for f in day.unprepared if len(f)]
        day.unprepared = []
        if day.prepared is None or (new and _first(new) <= day.prepared_through):
            frames = [f for f in (day.base, *day.frames) if f is not None and len(f)]
            raw = pd.concat(frames, ignore_index=True) if frames else None
            if raw is not None and len(day.frames) > 1:
                # One frame from now on: later recomputations concatenate one frame, not one
                # per step (single-tick posts would make thousands).
                day.frames = [raw.iloc[len(day.base) if day.base is not None else 0 :]]
            day.prepared, _ = session_ticks(raw, day.quotes, instrument, trading_date)
            day.prepared_through = _last([raw]) if raw is not None else (-1, -1)
        elif new:
            old = day.prepared
            price = old["price"].to_numpy(np.float64)
            changes = np.flatnonzero(np.diff(price) != 0)
            start = int(changes[-1]) if len(changes) else 0
            context = old.iloc[start:][list(TICK_COLUMNS)]
            raw = pd.concat([context, *new], ignore_index=True)
            ticks, _ = session_ticks(raw, day.quotes, instrument, trading_date)
            day.prepared = pd.concat([old, ticks.iloc[len(context) :]], ignore_index=True)
            day.prepared_through = max(day.prepared_through, _last(new))
        return session_bars(day.prepared, instrument, trading_date)

    def _previous_bars(self, symbol: str, trading_date: date) -> pd.DataFrame:
        instrument = self.instruments[symbol]
        earlier = session_table(
            instrument, trading_date - timedelta(days=14), trading_date - timedelta(days=1)
        )
        if earlier.empty:
            return pd.DataFrame(columns=list(BAR_COLUMNS))
        prev = pd.Timestamp(earlier["trading_date"].iloc[-1]).date()
        day = self._day(symbol, prev)
        if day is None:
            return pd.DataFrame(columns=list(BAR_COLUMNS))
        if day.bars is None:
            day.bars = self._session_bars(symbol, prev, day)
        return day.bars

    def _evaluate(self, symbol: str, trading_date: date, day: _Day, through: int) -> BarsClosed:
        t0 = time.perf_counter()
        bars = self._session_bars(symbol, trading_date, day)
        prev = self._previous_bars(symbol, trading_date)
        t1 = time.perf_counter()
        window = pd.concat([prev, bars], ignore_index=True) if len(prev) else bars
        features = session_features(window, trading_date, day.books)
        t2 = time.perf_counter()
        signals = session_signals(session_scores(features, self.config), self.config)
        closes = pd.DatetimeIndex(signals["bar_close"]).as_unit("ns").asi8
        final = signals.loc[(closes <= through) & (closes > self.config_since_ns)]
        final = final.reset_index(drop=True)
        if len(final):
            context = signal_context(final, features, window)
            final["context"] = [
                json.dumps(dict(zip(CONTEXT_COLUMNS, row, strict=True)))
                for row in context[list(CONTEXT_COLUMNS)].itertuples(index=False)
            ]
        t3 = time.perf_counter()
        new = self.record(final, through)
        t4 = time.perf_counter()
        stages = dict(zip(STAGES, np.diff([t0, t1, t2, t3, t4]).tolist(), strict=True))
        bar_close = pd.DatetimeIndex(bars["ts"]).as_unit("ns").asi8 + NS_PER_MINUTE
        closed = bar_close[(bar_close > day.closed_through) & (bar_close <= through)]
        day.closed_through = through
        if through >= day.close_ns:
            day.bars = bars
        return BarsClosed(
            symbol=symbol,
            trading_date=trading_date,
            bar_closes=tuple(int(c) for c in closed),
            bars=int((bar_close <= through).sum()),
            signals=len(final),
            signal_closes=tuple(int(c) for c in closes[closes <= through]),
            new_signals=new,
            closed_through=through,
            stage_seconds=stages,
            session_closed=through >= day.close_ns,
        )


def _first(frames: list[pd.DataFrame]) -> tuple[int, int]:
    """Smallest ``(ts_event, seq)`` of the ticks in ``frames`` (non-empty)."""
    whole = pd.concat([f[["ts_event", "seq"]] for f in frames], ignore_index=True)
    ts = whole["ts_event"].to_numpy(np.int64)
    i = int(np.lexsort((whole["seq"].to_numpy(np.int64), ts))[0])
    return int(ts[i]), int(whole["seq"].iloc[i])


def _last(frames: list[pd.DataFrame]) -> tuple[int, int]:
    """Largest ``(ts_event, seq)`` of the ticks in ``frames``; ``(-1, -1)`` when empty."""
    if not frames:
        return (-1, -1)
    whole = pd.concat([f[["ts_event", "seq"]] for f in frames], ignore_index=True)
    ts = whole["ts_event"].to_numpy(np.int64)
    i = int(np.lexsort((whole["seq"].to_numpy(np.int64), ts))[-1])
    return int(ts[i]), int(whole["seq"].iloc[i])
