"""1-minute OHLCV bars from raw ticks (SPEC §3).

The bar ``[t, t + 60 s)`` is labelled by its open time ``t`` (UTC) and becomes visible at its
close ``t + 60 s``. Ticks are ordered by ``(ts_event, seq)``. A minute inside the session with no
tick becomes a flat bar at the previous close with ``volume = 0`` and ``is_filled = True`` when
the gap is at most :data:`MAX_FILL_MINUTES` long; longer gaps stay gaps (see
:func:`find_gaps`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from numba import njit

from fbe_pipeline.sessions import NS_PER_MINUTE

MAX_FILL_MINUTES = 2

BAR_COLUMNS: tuple[str, ...] = (
    "symbol",
    "trading_date",
    "ts",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "buy_volume",
    "sell_volume",
    "delta",
    "tick_count",
    "vwap",
    "is_filled",
)


def _empty_bars() -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series(dtype=np.float64) for c in BAR_COLUMNS})
    return frame.astype(
        {
            "symbol": object,
            "trading_date": "datetime64[ns]",
            "ts": "datetime64[ns, UTC]",
            "tick_count": np.int64,
            "is_filled": bool,
        }
    )


def build_bars(
    ticks: pd.DataFrame,
    symbol: str,
    trading_date: pd.Timestamp,
    session_open_ns: int,
    session_close_ns: int,
) -> pd.DataFrame:
    """Aggregate one session's ticks into 1-minute bars.

    Parameters
    ----------
    ticks : pandas.DataFrame
        Raw ticks (:data:`fbe_pipeline.frames.TICK_COLUMNS`) plus the int8 aggressor sign
        ``side_sign`` (+1 buy, -1 sell, 0 unknown) from
        :func:`fbe_pipeline.aggressor.resolve_sides`. Ticks outside
        ``[session_open_ns, session_close_ns)`` are ignored. Need not be sorted.
    symbol : str
        Written to the ``symbol`` column.
    trading_date : pandas.Timestamp
        Session date label, written to ``trading_date``.
    session_open_ns, session_close_ns : int
        Session bounds, ns UTC; bars are aligned to whole minutes from the open.

    Returns
    -------
    pandas.DataFrame
        :data:`BAR_COLUMNS`, one row per bar, strictly increasing ``ts``
        (``datetime64[ns, UTC]``, bar open). Prices in the instrument's currency;
        ``open/high/low/close`` from OHLC-eligible prints; ``volume``, ``buy_volume``,
        ``sell_volume`` (aggressor side), ``delta = buy - sell`` and ``tick_count`` over
        volume-eligible prints; ``vwap = sum(price * size) / sum(size)`` over prints eligible for
        both (the close when that volume is 0). Minutes whose only prints are OHLC-ineligible
        are flat at the previous close.

    Raises
    ------
    ValueError
        If the session bounds are not whole minutes apart.
    """
    if (session_close_ns - session_open_ns) % NS_PER_MINUTE:
        raise ValueError("session length must be a whole number of minutes")
    n_minutes = (session_close_ns - session_open_ns) // NS_PER_MINUTE
    cols = (
        ticks["ts_event"].to_numpy(np.int64),
        ticks["seq"].to_numpy(np.int64),
        ticks["price"].to_numpy(np.float64),
        ticks["size"].to_numpy(np.float64),
        ticks["side_sign"].to_numpy(np.int8),
        ticks["ohlc_eligible"].to_numpy(np.bool_),
        ticks["volume_eligible"].to_numpy(np.bool_),
    )
    if not _is_ordered(cols[0], cols[1]):
        order = np.lexsort((cols[1], cols[0]))
        cols = tuple(c[order] for c in cols)
    open_, high, low, close, volume, buy, sell, count, pv, vv = _aggregate(
        cols[0], cols[2], cols[3], cols[4], cols[5], cols[6], session_open_ns, n_minutes
    )
    if not (count > 0).any() and np.isnan(open_).all():
        return _empty_bars()

    traded = ~np.isnan(open_) | (count > 0)
    first = int(np.argmax(traded))
    filled = _fillable(traded, first, MAX_FILL_MINUTES)
    present = traded | filled
    present[:first] = False

    # Carry the last close forward so filled bars and OHLC-less minutes are flat at it.
    idx = np.where(~np.isnan(close), np.arange(n_minutes), -1)
    np.maximum.accumulate(idx, out=idx)
    prev_close = np.where(idx >= 0, close[np.maximum(idx, 0)], np.nan)
    flat = present & np.isnan(open_)
    open_[flat] = high[flat] = low[flat] = close[flat] = prev_close[flat]
    present &= ~np.isnan(open_)

    sel = np.flatnonzero(present)
    with np.errstate(invalid="ignore", divide="ignore"):
        vwap = np.where(vv[sel] > 0, pv[sel] / vv[sel], close[sel])
    bars = pd.DataFrame(
        {
            "symbol": symbol,
            "trading_date": pd.Timestamp(trading_date).normalize(),
            "ts": pd.to_datetime(session_open_ns + sel * NS_PER_MINUTE, utc=True),
            "open": open_[sel],
            "high": high[sel],
            "low": low[sel],
            "close": close[sel],
            "volume": volume[sel],
            "buy_volume": buy[sel],
            "sell_volume": sell[sel],
            "delta": buy[sel] - sell[sel],
            "tick_count": count[sel],
            "vwap": vwap,
            "is_filled": filled[sel] & ~traded[sel],
        },
        columns=list(BAR_COLUMNS),
    )
    bars["trading_date"] = bars["trading_date"].astype("datetime64[ns]")
    return bars


@njit(cache=True)
def _is_ordered(ts: np.ndarray, seq: np.ndarray) -> bool:  # pragma: no cover - compiled
    for i in range(1, len(ts)):
        if ts[i] < ts[i - 1] or (ts[i] == ts[i - 1] and seq[i] < seq[i - 1]):
            return False
    return True


@njit(cache=True)
def _aggregate(
    ts: np.ndarray,
    price: np.ndarray,
    size: np.ndarray,
    sign: np.ndarray,
    ohlc_ok: np.ndarray,
    vol_ok: np.ndarray,
    open_ns: int,
    n_minutes: int,
) -> tuple[np.ndarray, ...]:  # pragma: no cover - compiled
    # One pass over ticks already in (ts_event, seq) order: the first and last eligible print
    # of a minute are its open and close, so no per-bucket sort is needed.
    o = np.full(n_minutes, np.nan)
    h = np.full(n_minutes, np.nan)
    lo = np.full(n_minutes, np.nan)
    c = np.full(n_minutes, np.nan)
    vol = np.zeros(n_minutes)
    buy = np.zeros(n_minutes)
    sell = np.zeros(n_minutes)
    cnt = np.zeros(n_minutes, np.int64)
    pv = np.zeros(n_minutes)
    vv = np.zeros(n_minutes)
    end_ns = open_ns + n_minutes * NS_PER_MINUTE
    for i in range(len(ts)):
        t = ts[i]
        if t < open_ns or t >= end_ns:
            continue
        m = (t - open_ns) // NS_PER_MINUTE
        s = size[i]
        if vol_ok[i]:
            vol[m] += s
            cnt[m] += 1
            if sign[i] > 0:
                buy[m] += s
            elif sign[i] < 0:
                sell[m] += s
        if ohlc_ok[i]:
            p = price[i]
            if np.isnan(o[m]):
                o[m] = p
                h[m] = p
                lo[m] = p
            else:
                if p > h[m]:
                    h[m] = p
                if p < lo[m]:
                    lo[m] = p
            c[m] = p
            if vol_ok[i]:
                pv[m] += p * s
                vv[m] += s
    return o, h, lo, c, vol, buy, sell, cnt, pv, vv


def _fillable(traded: np.ndarray, first: int, max_len: int) -> np.ndarray:
    """Mark untraded minutes after ``first`` that lie in a run of at most ``max_len``."""
    n = len(traded)
    out = np.zeros(n, dtype=bool)
    gap = ~traded
    gap[: first + 1] = False
    if not gap.any():
        return out
    edges = np.diff(np.r_[0, gap.astype(np.int8), 0])
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)
    for s, e in zip(starts, ends, strict=True):
        if e - s <= max_len:
            out[s:e] = True
    return out


def find_gaps(
    bars: pd.DataFrame, session_open_ns: int, session_close_ns: int
) -> pd.DataFrame:
    """Report runs of session minutes without a bar.

    Parameters
    ----------
    bars : pandas.DataFrame
        Output of :func:`build_bars` for one session.
    session_open_ns, session_close_ns : int
        Session bounds, ns UTC.

    Returns
    -------
    pandas.DataFrame
        Columns ``gap_start`` and ``gap_end`` (``datetime64[ns, UTC]``, first and last missing
        bar open time) and ``minutes`` (int64), one row per run, in time order. Leading and
        trailing gaps of the session are included.
    """
    n = (session_close_ns - session_open_ns) // NS_PER_MINUTE
    have = np.zeros(n, dtype=bool)
    if len(bars):
        ts = pd.DatetimeIndex(bars["ts"]).as_unit("ns").asi8
        have[(ts - session_open_ns) // NS_PER_MINUTE] = True
    edges = np.diff(np.r_[0, (~have).astype(np.int8), 0])
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)
    return pd.DataFrame(
        {
            "gap_start": pd.to_datetime(session_open_ns + starts * NS_PER_MINUTE, utc=True),
            "gap_end": pd.to_datetime(session_open_ns + (ends - 1) * NS_PER_MINUTE, utc=True),
            "minutes": (ends - starts).astype(np.int64),
        }
    )
