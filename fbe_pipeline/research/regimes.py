"""Regime tags per bar: volatility regime and intraday session tag (SPEC §3).

The volatility regime is the percentile rank of the bar's ATR among the ATRs of the trailing 20
sessions before the bar's session plus the bar's own session up to and including the bar (so
no later bar is read), cut into terciles: ``low`` (< 1/3), ``normal``, ``high`` (> 2/3).
Below :data:`MIN_POOL` ATR observations the regime is ``unknown``.
"""

from __future__ import annotations

from datetime import time

import numpy as np
import pandas as pd

TRAILING_SESSIONS = 20
MIN_POOL = 60

REGIME_COLUMNS: tuple[str, ...] = (
    "symbol",
    "trading_date",
    "ts",
    "atr14",
    "atr_pct",
    "vol_regime",
    "session_tag",
)


def atr_percentile(today_atr: np.ndarray, history_atr: np.ndarray) -> np.ndarray:
    """Percentile rank of each of today's ATRs in history plus today's bars so far.

    Parameters
    ----------
    today_atr : numpy.ndarray
        float64, shape (n,), today's ``atr14`` in bar order (NaN in warm-up).
    history_atr : numpy.ndarray
        float64, shape (m,), ``atr14`` of the trailing sessions (NaN ignored).

    Returns
    -------
    numpy.ndarray
        float64, shape (n,), in [0, 1]: share of the pool at or below the value; NaN where the
        ATR is NaN or the pool has fewer than :data:`MIN_POOL` values.
    """
    hist = np.sort(history_atr[~np.isnan(history_atr)])
    n = len(today_atr)
    valid = ~np.isnan(today_atr)
    vals = np.where(valid, today_atr, np.inf)
    below_hist = np.searchsorted(hist, vals, side="right")
    # Pairwise comparison with earlier bars of the same session (n is at most 1,440 a day).
    earlier = np.tril(np.ones((n, n), dtype=bool))
    le_today = ((vals[None, :] <= vals[:, None]) & earlier & valid[None, :]).sum(axis=1)
    pool = len(hist) + np.cumsum(valid)
    with np.errstate(invalid="ignore", divide="ignore"):
        pct = (below_hist + le_today) / pool
    return np.where(valid & (pool >= MIN_POOL), pct, np.nan)


def vol_regime(pct: np.ndarray) -> np.ndarray:
    """Terciles of :func:`atr_percentile`: ``low``, ``normal``, ``high`` or ``unknown`` (NaN)."""
    return np.where(
        np.isnan(pct),
        "unknown",
        np.where(pct < 1 / 3, "low", np.where(pct > 2 / 3, "high", "normal")),
    )


def session_tags(
    ts: pd.DatetimeIndex, tz: str, windows: list[tuple[str, time, time]]
) -> np.ndarray:
    """Tag bars with the first configured local-time window containing the bar's open.

    Parameters
    ----------
    ts : pandas.DatetimeIndex
        Bar open times, tz-aware UTC.
    tz : str
        Local time zone of the windows.
    windows : list of (tag, start, end)
        Local ``[start, end)`` windows; ``end == 00:00`` means midnight.

    Returns
    -------
    numpy.ndarray
        object array of tags, ``"other"`` outside every window.
    """
    local = ts.tz_convert(tz)
    minute = (local.hour * 60 + local.minute).to_numpy()
    out = np.full(len(ts), "other", dtype=object)
    free = np.ones(len(ts), dtype=bool)
    for tag, start, end in windows:
        lo = start.hour * 60 + start.minute
        hi = end.hour * 60 + end.minute or 24 * 60
        hit = free & (minute >= lo) & (minute < hi)
        out[hit] = tag
        free &= ~hit
    return out


def compute_regimes(
    features_today: pd.DataFrame,
    history_atr: np.ndarray,
    tz: str,
    windows: list[tuple[str, time, time]],
) -> pd.DataFrame:
    """Regime tags of one session's bars.

    Parameters
    ----------
    features_today : pandas.DataFrame
        Features (:data:`fbe_pipeline.research.features.FEATURE_COLUMNS`) of one session, bar order.
    history_atr : numpy.ndarray
        float64 ``atr14`` values of up to :data:`TRAILING_SESSIONS` earlier sessions.
    tz, windows
        Session-tag windows, see :func:`session_tags`.

    Returns
    -------
    pandas.DataFrame
        :data:`REGIME_COLUMNS`: ``atr_pct`` float64 in [0, 1] or NaN, ``vol_regime`` and
        ``session_tag`` strings.
    """
    atr = features_today["atr14"].to_numpy(np.float64)
    pct = atr_percentile(atr, history_atr)
    ts = pd.DatetimeIndex(features_today["ts"])
    return pd.DataFrame(
        {
            "symbol": features_today["symbol"].to_numpy(),
            "trading_date": features_today["trading_date"].to_numpy(),
            "ts": ts,
            "atr14": atr,
            "atr_pct": pct,
            "vol_regime": vol_regime(pct),
            "session_tag": session_tags(ts, tz, windows),
        },
        columns=list(REGIME_COLUMNS),
    )
