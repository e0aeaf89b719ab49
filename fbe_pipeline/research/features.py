"""Per-bar features of the false-breakout detector (SPEC §3); bar t reads bars <= t only.

References
----------
Wilder, J. W. (1978), *New Concepts in Technical Trading Systems*: true range and the average
true range with Wilder's smoothing ``ATR_t = (ATR_{t-1} * (n - 1) + TR_t) / n``, seeded with the
mean of the first ``n`` true ranges; the first bar has no true range (TA-Lib ``ATR`` layout, so
the first value is at index ``n``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from numba import njit

ATR_PERIOD = 14
RANGE_BARS = 20
VOLUME_BARS = 20

FEATURE_COLUMNS: tuple[str, ...] = (
    "symbol",
    "trading_date",
    "ts",
    "atr14",
    "range_high",
    "range_low",
    "poke",
    "poke_atr",
    "wick_ratio",
    "vol_ratio",
    "delta_ratio",
    "delta_against",
    "book_churn",
    "has_l2",
)


@njit(cache=True)
def _wilder_atr(high: np.ndarray, low: np.ndarray, close: np.ndarray, n: int) -> np.ndarray:
    out = np.full(len(high), np.nan)  # pragma: no cover - compiled
    if len(high) <= n:
        return out
    acc = 0.0
    for i in range(1, n + 1):
        tr = max(high[i] - low[i], abs(high[i] - close[i - 1]), abs(low[i] - close[i - 1]))
        acc += tr
    atr = acc / n
    out[n] = atr
    for i in range(n + 1, len(high)):
        tr = max(high[i] - low[i], abs(high[i] - close[i - 1]), abs(low[i] - close[i - 1]))
        atr = (atr * (n - 1) + tr) / n
        out[i] = atr
    return out


def wilder_atr(
    high: np.ndarray, low: np.ndarray, close: np.ndarray, period: int = ATR_PERIOD
) -> np.ndarray:
    """Wilder's average true range, TA-Lib ``ATR`` compatible.

    Parameters
    ----------
    high, low, close : numpy.ndarray
        float64 bar prices, shape (n,), in time order.
    period : int
        Smoothing length in bars.

    Returns
    -------
    numpy.ndarray
        float64, shape (n,), in price units; NaN for the first ``period`` bars (warm-up, never
        back-filled).
    """
    return _wilder_atr(
        np.asarray(high, np.float64),
        np.asarray(low, np.float64),
        np.asarray(close, np.float64),
        period,
    )


def book_churn(bar_ts: np.ndarray, books: pd.DataFrame | None) -> np.ndarray:
    """Top-5 depth churn per bar.

    ``sum(|depth_k - depth_{k-1}|)`` over consecutive snapshots inside the bar, divided by the
    mean depth of those snapshots, where depth is the total size on the top 5 bid and ask
    levels. The first snapshot of a bar is compared with the last snapshot before it.

    Parameters
    ----------
    bar_ts : numpy.ndarray
        int64 ns UTC bar open times, shape (n,), increasing.
    books : pandas.DataFrame or None
        L2 snapshots (:data:`fbe_pipeline.market.frames.BOOK_COLUMNS`).

    Returns
    -------
    numpy.ndarray
        float64, shape (n,); NaN for bars without snapshots or when there is no L2 data.
    """
    out = np.full(len(bar_ts), np.nan)
    if books is None or books.empty or len(bar_ts) == 0:
        return out
    b = books.sort_values(["ts_event", "seq"], kind="stable")
    size_cols = [c for c in b.columns if c.startswith(("bid_sz_", "ask_sz_"))]
    depth = b[size_cols].fillna(0.0).to_numpy().sum(axis=1)
    ts = b["ts_event"].to_numpy(np.int64)
    change = np.abs(np.diff(depth, prepend=depth[0]))
    idx = np.searchsorted(bar_ts, ts, side="right") - 1
    ok = (idx >= 0) & (ts < bar_ts[np.maximum(idx, 0)] + 60_000_000_000)
    n = len(bar_ts)
    churn = np.bincount(idx[ok], weights=change[ok], minlength=n)
    depth_sum = np.bincount(idx[ok], weights=depth[ok], minlength=n)
    count = np.bincount(idx[ok], minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_depth = depth_sum / count
        out = np.where((count > 0) & (mean_depth > 0), churn / mean_depth, np.nan)
    return out


def compute_features(
    bars: pd.DataFrame, books: pd.DataFrame | None = None, has_l2: bool = False
) -> pd.DataFrame:
    """Compute the features of every bar from that bar and earlier bars.

    Parameters
    ----------
    bars : pandas.DataFrame
        Bars (:data:`fbe_pipeline.market.bars.BAR_COLUMNS`) of one symbol, warm-up bars first, in
        strictly increasing ``ts``.
    books : pandas.DataFrame, optional
        L2 snapshots for ``book_churn``.
    has_l2 : bool
        Whether L2 data exists for the bars' session(s); ``False`` leaves ``book_churn`` NaN.

    Returns
    -------
    pandas.DataFrame
        :data:`FEATURE_COLUMNS`, one row per input bar, same order. ``atr14``, ``range_high``,
        ``range_low`` in price units (NaN in warm-up: 14 bars for ATR, 20 prior bars for the
        range); ``poke`` in ``{"up", "down", "none"}`` (``up`` wins when both sides are
        breached); ``poke_atr`` the distance beyond the range in ATR units (0 without a poke,
        NaN when ATR is NaN); ``wick_ratio`` in [0, 1]; ``vol_ratio`` = volume / mean volume of
        the prior 20 bars; ``delta_ratio`` = delta / volume (0 when volume is 0, NaN when
        the bar's delta is unknown);
        ``delta_against`` bool; ``book_churn`` float (NaN without L2); ``has_l2`` bool.
    """
    high = bars["high"].to_numpy(np.float64)
    low = bars["low"].to_numpy(np.float64)
    open_ = bars["open"].to_numpy(np.float64)
    close = bars["close"].to_numpy(np.float64)
    volume = bars["volume"].to_numpy(np.float64)
    delta = bars["delta"].to_numpy(np.float64)

    atr = wilder_atr(high, low, close)
    prior = pd.DataFrame({"h": high, "l": low, "v": volume}).shift(1)
    range_high = prior["h"].rolling(RANGE_BARS, min_periods=RANGE_BARS).max().to_numpy()
    range_low = prior["l"].rolling(RANGE_BARS, min_periods=RANGE_BARS).min().to_numpy()
    mean_vol = prior["v"].rolling(VOLUME_BARS, min_periods=VOLUME_BARS).mean().to_numpy()

    up = high > range_high
    down = ~up & (low < range_low)
    poke = np.where(up, "up", np.where(down, "down", "none"))
    beyond = np.where(up, high - range_high, np.where(down, range_low - low, 0.0))
    with np.errstate(invalid="ignore", divide="ignore"):
        poke_atr = np.where(up | down, beyond / atr, 0.0)
        poke_atr = np.where(np.isnan(atr), np.nan, poke_atr)
        span = high - low
        upper_wick = (high - np.maximum(open_, close)) / span
        lower_wick = (np.minimum(open_, close) - low) / span
        wick = np.where(up, upper_wick, np.where(down, lower_wick, 0.0))
        wick = np.where(span > 0, wick, 0.0)
        vol_ratio = np.where(mean_vol > 0, volume / mean_vol, np.nan)
        # Unknown delta (no aggressor side: bars from vendor candles) stays unknown.
        delta_ratio = np.where(np.isnan(delta), np.nan, np.where(volume > 0, delta / volume, 0.0))
    delta_against = (up & (delta <= 0)) | (down & (delta >= 0))

    bar_ts = pd.DatetimeIndex(bars["ts"]).as_unit("ns").asi8
    churn = book_churn(bar_ts, books) if has_l2 else np.full(len(bars), np.nan)
    return pd.DataFrame(
        {
            "symbol": bars["symbol"].to_numpy(),
            "trading_date": bars["trading_date"].to_numpy(),
            "ts": pd.DatetimeIndex(bars["ts"]),
            "atr14": atr,
            "range_high": range_high,
            "range_low": range_low,
            "poke": poke,
            "poke_atr": poke_atr,
            "wick_ratio": wick,
            "vol_ratio": vol_ratio,
            "delta_ratio": delta_ratio,
            "delta_against": delta_against,
            "book_churn": churn,
            "has_l2": has_l2,
        },
        columns=list(FEATURE_COLUMNS),
    )
