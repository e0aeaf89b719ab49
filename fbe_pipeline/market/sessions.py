"""Trading sessions and trading dates from exchange calendars (SPEC §1).

The partition day of a tick is the exchange-local trading date: the session that contains the
tick, or, for a tick outside every session (e.g. US pre-market), its local calendar date. An
overnight session (CME Globex opens 17:00 CT the evening before) therefore belongs to the next
day, and a 24/7 venue's day is its UTC date.
"""

from __future__ import annotations

from datetime import date, time, timedelta
from functools import lru_cache

import exchange_calendars as xcals
import numpy as np
import pandas as pd

from fbe_pipeline.market.instruments import Instrument

NS_PER_MINUTE = 60_000_000_000


@lru_cache(maxsize=16)
def _calendar(name: str) -> xcals.ExchangeCalendar:
    return xcals.get_calendar(name, start="2000-01-01")


def session_table(instrument: Instrument, start: date, end: date) -> pd.DataFrame:
    """Return the instrument's sessions whose trading date lies in ``[start, end]``.

    Returns
    -------
    pandas.DataFrame
        Columns ``trading_date`` (``datetime64[ns]``, midnight-naive date label), ``open_ns`` and
        ``close_ns`` (int64 ns UTC; the session is ``[open_ns, close_ns)``), one row per session,
        ordered by date. Session times are the calendar's, narrowed by the instrument's
        ``session_open``/``session_close`` when configured.
    """
    sched = _calendar(instrument.calendar).schedule
    sched = sched.loc[pd.Timestamp(start) : pd.Timestamp(end)]
    opens = sched["open"].dt.tz_convert("UTC")
    closes = sched["close"].dt.tz_convert("UTC")
    if instrument.session_open is not None and instrument.session_close is not None:
        opens = _local_wall_clock(sched.index, instrument.session_open, instrument.tz)
        closes = _local_wall_clock(sched.index, instrument.session_close, instrument.tz)
    return pd.DataFrame(
        {
            "trading_date": sched.index.tz_localize(None).astype("datetime64[ns]"),
            "open_ns": pd.DatetimeIndex(opens).as_unit("ns").asi8,
            "close_ns": pd.DatetimeIndex(closes).as_unit("ns").asi8,
        }
    ).reset_index(drop=True)


def _local_wall_clock(days: pd.DatetimeIndex, t: time, tz: str) -> pd.DatetimeIndex:
    # Localize the naive wall-clock time, not midnight + offset, so a DST change day keeps the
    # configured local time; a skipped time moves forward, a repeated one takes the first.
    naive = days.tz_localize(None) + pd.Timedelta(hours=t.hour, minutes=t.minute)
    local = naive.tz_localize(
        tz, ambiguous=np.ones(len(naive), dtype=bool), nonexistent="shift_forward"
    )
    return local.tz_convert("UTC")


def session_for(instrument: Instrument, trading_date: date) -> tuple[int, int] | None:
    """Return ``(open_ns, close_ns)`` of the session on ``trading_date``, or ``None`` if closed."""
    table = session_table(instrument, trading_date, trading_date)
    if table.empty:
        return None
    return int(table["open_ns"].iloc[0]), int(table["close_ns"].iloc[0])


def assign_trading_dates(
    instrument: Instrument, ts_event: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Map tick times to trading dates.

    Parameters
    ----------
    ts_event : numpy.ndarray
        int64 ns UTC, shape (n,), any order.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        ``datetime64[D]`` trading dates and a bool ``in_session`` mask, both shape (n,).
    """
    if len(ts_event) == 0:
        return np.array([], dtype="datetime64[D]"), np.array([], dtype=bool)
    ts = np.asarray(ts_event, dtype=np.int64)
    local = pd.DatetimeIndex(ts.astype("datetime64[ns]"), tz="UTC").tz_convert(instrument.tz)
    local_dates = local.tz_localize(None).normalize().to_numpy().astype("datetime64[D]")
    lo = pd.Timestamp(local_dates.min()).date() - timedelta(days=1)
    hi = pd.Timestamp(local_dates.max()).date() + timedelta(days=2)
    table = session_table(instrument, lo, hi)
    if table.empty:
        return local_dates, np.zeros(len(ts), dtype=bool)
    closes = table["close_ns"].to_numpy()
    opens = table["open_ns"].to_numpy()
    idx = np.searchsorted(closes, ts, side="right")
    valid = idx < len(closes)
    safe = np.minimum(idx, len(closes) - 1)
    in_session = valid & (ts >= opens[safe]) & (ts < closes[safe])
    session_dates = table["trading_date"].to_numpy().astype("datetime64[D]")[safe]
    dates = np.where(in_session, session_dates, local_dates)
    return dates, in_session


def session_minutes(open_ns: int, close_ns: int) -> np.ndarray:
    """Return the bar open times of a session, int64 ns UTC, ``[open, close)`` in 1-minute steps."""
    return np.arange(open_ns, close_ns, NS_PER_MINUTE, dtype=np.int64)
