"""Backtest of the false-breakout fade (SPEC §3), one session at a time.

Entry at the open of the first bar at or after the decision (the bar after the signal bar),
filled ``execution_latency_ms`` after the decision, plus slippage; stop beyond the poke extreme
plus an ATR buffer; target at the range midpoint; a time stop after ``time_stop_bars`` bars; an
open trade is closed at the session's last bar. One position per symbol: signals while a trade
is open are not taken. A bar touching both stop and target counts as a stop (conservative).
Costs are ``cost_bps`` per side plus the slippage model of :mod:`fbe_pipeline.slippage` on both
fills.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from fbe_pipeline.config import ScoringConfig
from fbe_pipeline.slippage import slippage

BAR = pd.Timedelta(60, "s")

TRADE_COLUMNS: tuple[str, ...] = (
    "trade_id",
    "signal_id",
    "symbol",
    "trading_date",
    "direction",
    "signal_ts",
    "decision_time",
    "entry_time",
    "entry_price",
    "stop_price",
    "target_price",
    "exit_time",
    "exit_price",
    "exit_reason",
    "bars_held",
    "pnl",
    "r_multiple",
    "return_bps",
    "slippage_paid",
    "cost",
    "vol_regime",
    "session_tag",
    "config_version",
    "data_version",
)

SUMMARY_COLUMNS: tuple[str, ...] = (
    "symbol",
    "trading_date",
    "period",
    "group_by",
    "group",
    "trades",
    "win_rate",
    "avg_r",
    "pnl",
    "sharpe",
    "max_drawdown",
    "slippage_paid",
    "config_version",
    "data_version",
)


def empty_trades() -> pd.DataFrame:
    """An empty frame with :data:`TRADE_COLUMNS` and their dtypes."""
    return _typed_trades(pd.DataFrame(columns=list(TRADE_COLUMNS)))


def _typed_trades(frame: pd.DataFrame) -> pd.DataFrame:
    ts_cols = ["signal_ts", "decision_time", "entry_time", "exit_time"]
    for col in ts_cols:
        frame[col] = pd.to_datetime(frame[col], utc=True)
    frame["trading_date"] = pd.to_datetime(frame["trading_date"]).astype("datetime64[ns]")
    floats = ["entry_price", "stop_price", "target_price", "exit_price", "pnl", "r_multiple"]
    floats += ["return_bps", "slippage_paid", "cost"]
    frame[floats] = frame[floats].astype(np.float64)
    frame["bars_held"] = frame["bars_held"].astype(np.int64)
    return frame


def run_backtest(
    bars: pd.DataFrame,
    features: pd.DataFrame,
    signals: pd.DataFrame,
    regimes: pd.DataFrame,
    config: ScoringConfig,
    data_version: str,
) -> pd.DataFrame:
    """Simulate the signals of one session.

    Parameters
    ----------
    bars, features, regimes : pandas.DataFrame
        One session's bars, features and regime tags, aligned on ``ts``.
    signals : pandas.DataFrame
        That session's signals (:data:`fbe_pipeline.scoring.SIGNAL_COLUMNS`).
    config : ScoringConfig
        Latency, stop buffer, time stop, costs and slippage parameters.
    data_version : str
        Identifier of the raw data the session was built from, recorded on every trade.

    Returns
    -------
    pandas.DataFrame
        :data:`TRADE_COLUMNS`, one row per trade in entry order. Prices in the instrument's
        currency per unit; ``pnl`` after slippage and costs; ``r_multiple`` = pnl / initial risk
        (|entry - stop|); ``return_bps`` = pnl / entry price in basis points; timestamps UTC.
        ``entry_time`` is always strictly after ``decision_time``.
    """
    if signals.empty or bars.empty:
        return empty_trades()
    ts = pd.DatetimeIndex(bars["ts"])
    o = bars["open"].to_numpy(np.float64)
    h = bars["high"].to_numpy(np.float64)
    lo = bars["low"].to_numpy(np.float64)
    c = bars["close"].to_numpy(np.float64)
    feat = features.set_index(pd.DatetimeIndex(features["ts"]))
    reg = regimes.set_index(pd.DatetimeIndex(regimes["ts"]))
    latency = pd.Timedelta(config.execution_latency_ms, "ms")
    rows: list[dict[str, object]] = []
    free_from = ts[0] - BAR
    for sig in signals.sort_values("ts").itertuples(index=False):
        decision = pd.Timestamp(sig.decision_time)
        if decision < free_from:
            continue
        k = int(ts.searchsorted(decision, side="left"))
        if k >= len(ts):
            continue
        f = feat.loc[pd.Timestamp(sig.ts)]
        side = -1 if sig.direction == "short" else 1
        atr = float(f["atr14"])
        if math.isnan(atr):
            continue
        extreme = float(bars.loc[ts == pd.Timestamp(sig.ts), "high" if side < 0 else "low"].iloc[0])
        stop = extreme - side * config.stop_atr_buffer * atr
        target = (float(f["range_high"]) + float(f["range_low"])) / 2.0
        vr = float(f["vol_ratio"])
        entry_slip = slippage(o[k], vr, sig.signal_id, config)
        entry = o[k] + side * entry_slip
        if side * (target - entry) <= 0 or side * (entry - stop) <= 0:
            continue  # target or stop already on the wrong side of the entry: no edge left
        entry_time = max(decision + latency, ts[k] + pd.Timedelta(1, "ns"))
        exit_ref, reason, j = _exit(o, h, lo, c, k, side, stop, target, config.time_stop_bars)
        exit_slip = slippage(exit_ref, vr, f"{sig.signal_id}:exit", config)
        exit_px = exit_ref - side * exit_slip
        cost = config.cost_bps / 1e4 * (entry + exit_px)
        pnl = side * (exit_px - entry) - cost
        risk = abs(entry - stop)
        exit_time = max(ts[j] + BAR, entry_time)
        regime_row = reg.loc[pd.Timestamp(sig.ts)]
        rows.append(
            {
                "trade_id": f"T:{sig.signal_id}",
                "signal_id": sig.signal_id,
                "symbol": sig.symbol,
                "trading_date": sig.trading_date,
                "direction": sig.direction,
                "signal_ts": sig.ts,
                "decision_time": decision,
                "entry_time": entry_time,
                "entry_price": entry,
                "stop_price": stop,
                "target_price": target,
                "exit_time": exit_time,
                "exit_price": exit_px,
                "exit_reason": reason,
                "bars_held": j - k + 1,
                "pnl": pnl,
                "r_multiple": pnl / risk,
                "return_bps": pnl / entry * 1e4,
                "slippage_paid": entry_slip + exit_slip,
                "cost": cost,
                "vol_regime": regime_row["vol_regime"],
                "session_tag": regime_row["session_tag"],
                "config_version": config.version,
                "data_version": data_version,
            }
        )
        free_from = exit_time
    if not rows:
        return empty_trades()
    return _typed_trades(pd.DataFrame(rows, columns=list(TRADE_COLUMNS)))


def _exit(
    o: np.ndarray,
    h: np.ndarray,
    lo: np.ndarray,
    c: np.ndarray,
    k: int,
    side: int,
    stop: float,
    target: float,
    time_stop_bars: int,
) -> tuple[float, str, int]:
    """Exit reference price, reason and bar index of a trade entered at the open of bar ``k``.

    Bars ``k .. k + time_stop_bars - 1`` are scanned in order; the first touching the stop
    exits at the stop (at the bar's open when it gapped through the stop after the entry bar),
    else the first touching the target exits at the target; otherwise the trade closes at the
    last scanned bar's close (``time_stop``, or ``session_end`` when the session ran out first).
    """
    last = min(k + time_stop_bars - 1, len(c) - 1)
    for i in range(k, last + 1):
        hit_stop = h[i] >= stop if side < 0 else lo[i] <= stop
        if hit_stop:
            gapped = o[i] > stop if side < 0 else o[i] < stop
            return (float(o[i]) if gapped and i > k else stop), "stop", i
        hit_target = lo[i] <= target if side < 0 else h[i] >= target
        if hit_target:
            return target, "target", i
    reason = "time_stop" if last == k + time_stop_bars - 1 else "session_end"
    return float(c[last]), reason, last


def trade_metrics(trades: pd.DataFrame) -> dict[str, float]:
    """Performance metrics of a set of trades.

    Returns
    -------
    dict
        ``trades`` (count), ``win_rate`` (share with pnl > 0), ``avg_r`` (mean R multiple),
        ``pnl`` (sum, price currency per unit), ``sharpe`` (per-trade Sharpe ratio: mean /
        sample std of ``return_bps`` times sqrt(trades), not annualised; NaN under 2 trades or
        zero dispersion), ``max_drawdown`` (largest peak-to-trough fall of cumulative pnl in
        entry order, >= 0), ``slippage_paid`` (sum). NaN ratios for no trades.
    """
    n = len(trades)
    if n == 0:
        nan = float("nan")
        return {
            "trades": 0,
            "win_rate": nan,
            "avg_r": nan,
            "pnl": 0.0,
            "sharpe": nan,
            "max_drawdown": 0.0,
            "slippage_paid": 0.0,
        }
    ordered = trades.sort_values("entry_time")
    pnl = ordered["pnl"].to_numpy(np.float64)
    ret = ordered["return_bps"].to_numpy(np.float64)
    equity = np.cumsum(pnl)
    peak = np.maximum.accumulate(np.r_[0.0, equity])[1:]
    std = float(np.std(ret, ddof=1)) if n > 1 else 0.0
    return {
        "trades": n,
        "win_rate": float((pnl > 0).mean()),
        "avg_r": float(ordered["r_multiple"].mean()),
        "pnl": float(pnl.sum()),
        "sharpe": float(ret.mean() / std * math.sqrt(n)) if std > 0 else float("nan"),
        "max_drawdown": float(np.max(peak - equity)),
        "slippage_paid": float(ordered["slippage_paid"].sum()),
    }


def summarize(
    history: pd.DataFrame,
    today: pd.DataFrame,
    symbol: str,
    trading_date: pd.Timestamp,
    config_version: str,
    data_version: str,
) -> pd.DataFrame:
    """Walk-forward summary: earlier sessions in-sample, this session out-of-sample.

    Parameters
    ----------
    history : pandas.DataFrame
        Trades of the earlier sessions in the look-back window (in-sample period).
    today : pandas.DataFrame
        Trades of this session (out-of-sample period).

    Returns
    -------
    pandas.DataFrame
        :data:`SUMMARY_COLUMNS`, one row per ``period`` (``in_sample``, ``out_of_sample``) and
        group: ``group_by = "all"`` (group ``"all"``), ``"vol_regime"`` and ``"session_tag"``
        (one row per value present), metrics from :func:`trade_metrics`.
    """
    rows: list[dict[str, object]] = []
    for period, trades in (("in_sample", history), ("out_of_sample", today)):
        groups: list[tuple[str, str, pd.DataFrame]] = [("all", "all", trades)]
        for by in ("vol_regime", "session_tag"):
            groups += [(by, str(g), t) for g, t in trades.groupby(by, sort=True)]
        for by, group, subset in groups:
            rows.append(
                {
                    "symbol": symbol,
                    "trading_date": pd.Timestamp(trading_date),
                    "period": period,
                    "group_by": by,
                    "group": group,
                    **trade_metrics(subset),
                    "config_version": config_version,
                    "data_version": data_version,
                }
            )
    out = pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))
    out["trading_date"] = out["trading_date"].astype("datetime64[ns]")
    out["trades"] = out["trades"].astype(np.int64)
    return out
