"""Backtest of the false-breakout fade (SPEC §3), one session at a time.

The per-trade rules live in :mod:`fbe_pipeline.research.trade_rules` (shared with paper trading);
this
module walks a session's signals and bars with them. The rules below alone reproduce every
trade (``tests/test_backtest_reference.py`` re-derives them independently). Prices are in the
instrument's currency per unit, timestamps UTC, a bar ``t`` covers ``[t, t + 60 s)``.

1. **Signals** are taken in ``ts`` order. One position per symbol: a signal whose
   ``decision_time`` is before the previous trade's ``exit_time`` is dropped (not queued);
   ``decision_time == exit_time`` may trade. A signal that is skipped (rules 2-4) does not
   block later signals.
2. **Entry bar**: the first bar of the session whose open time ``ts >= decision_time`` (the
   bar after the signal bar when there is no decision latency and no missing minute). No such
   bar: no trade.
3. **Levels** from the signal bar (side ``+1`` long, ``-1`` short): ``stop = extreme - side *
   stop_atr_buffer * atr14`` with ``extreme`` the signal bar's high (short) or low (long);
   ``target = (range_high + range_low) / 2``. A signal whose ``range_high``, ``range_low``,
   ``atr14`` or extreme is NaN cannot trade.
4. **Entry decision** from the levels and the entry bar's open only: enter when the open is
   strictly between stop and target (long ``stop < open < target``, short ``target < open <
   stop``); an open at or beyond either level skips the signal. The slipped fill is not used
   (its random draw is unknown before the order is sent), so it may lie beyond the target.
5. **Entry fill**: ``entry_price = open + side * slip_in`` with ``slip_in`` =
   :func:`fbe_pipeline.research.slippage.slippage` of the open, the signal bar's ``vol_ratio`` and
   the
   key ``signal_id``. ``entry_time = max(decision_time + execution_latency_ms, entry bar ts +
   1 ns)``, always strictly after the decision.
6. **Exit scan**, bar by bar from the entry bar (included), first match wins:

   a. open at or beyond the stop (long ``open <= stop``, short ``open >= stop``): exit at
      that bar's **open**, reason ``stop`` (after a positive entry decision this can only
      happen from the bar after the entry bar on);
   b. the bar touches the stop (long ``low <= stop``, short ``high >= stop``): exit at the
      stop, reason ``stop``. Stop before target: a bar touching both exits at the stop;
   c. the bar touches the target (long ``high >= target``, short ``low <= target``), an open
      beyond it included: exit at the **target** (a resting limit order never fills better
      than its limit), reason ``target``;
   d. still open at the bar's close: when the trade has been open ``time_stop_bars`` bars
      (the entry bar is bar 1), exit at that close, reason ``time_stop``; else on the
      session's last bar, exit at its close, reason ``session_end`` (``time_stop`` wins when
      both apply).

   A touch equal to a level counts.
7. **Exit fill**: ``exit_price = reference - side * slip_out`` with ``slip_out`` = slippage of
   the exit reference price, the signal bar's ``vol_ratio`` and the key ``signal_id + ":exit"``
   (slippage applies to every exit, target included). ``exit_time`` = the exit bar's close
   (``ts + 60 s``; an intrabar stop or target is stamped at the close of its bar), and never
   before ``entry_time``. ``bars_held`` = exit bar index - entry bar index + 1.
8. **PnL**: ``cost = cost_bps / 1e4 * (entry_price + exit_price)``, ``pnl = side *
   (exit_price - entry_price) - cost``, ``r_multiple = pnl / |entry_price - stop|``,
   ``return_bps = pnl / entry_price * 1e4``, ``slippage_paid = slip_in + slip_out``.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from fbe_pipeline.research.config import ScoringConfig
from fbe_pipeline.research.slippage import slippage
from fbe_pipeline.research.trade_rules import (
    bracket_levels,
    entry_decision,
    entry_fill,
    exit_fill,
    scan_exit,
    side_of,
    trade_pnl,
)

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
    """Simulate the signals of one session with the rules of the module docstring.

    Parameters
    ----------
    bars, features, regimes : pandas.DataFrame
        One session's bars (sorted by ``ts``), features and regime tags, aligned on ``ts``.
    signals : pandas.DataFrame
        That session's signals (:data:`fbe_pipeline.research.scoring.SIGNAL_COLUMNS`).
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

    Raises
    ------
    ValueError
        If a signal's bar has no row in ``bars`` or ``features``, or a direction is neither
        ``long`` nor ``short``.
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
    for sig in signals.sort_values("ts", kind="stable").itertuples(index=False):
        decision = pd.Timestamp(sig.decision_time)
        if decision < free_from:
            continue  # one position per symbol: a trade is still open
        k = int(ts.searchsorted(decision, side="left"))
        if k >= len(ts):
            continue  # no bar opens at or after the decision
        signal_ts = pd.Timestamp(sig.ts)
        s = int(ts.searchsorted(signal_ts, side="left"))
        if s >= len(ts) or ts[s] != signal_ts or signal_ts not in feat.index:
            raise ValueError(f"signal {sig.signal_id}: no bar/features row at {signal_ts}")
        f = feat.loc[signal_ts]
        side = side_of(sig.direction)
        levels = bracket_levels(
            side,
            float(h[s] if side < 0 else lo[s]),
            float(f["atr14"]),
            float(f["range_high"]),
            float(f["range_low"]),
            config.stop_atr_buffer,
        )
        if levels is None:
            continue  # incomplete range or ATR: the signal cannot trade
        stop, target = levels
        if not entry_decision(side, float(o[k]), stop, target):
            continue  # the entry bar opens at or beyond a level: no edge left
        vr = float(f["vol_ratio"])
        entry_slip = slippage(float(o[k]), vr, sig.signal_id, config)
        entry = entry_fill(side, float(o[k]), entry_slip)
        entry_time = max(decision + latency, ts[k] + pd.Timedelta(1, "ns"))
        exit_ref, reason, j = scan_exit(side, stop, target, o, h, lo, c, k, config.time_stop_bars)
        exit_slip = slippage(exit_ref, vr, f"{sig.signal_id}:exit", config)
        exit_px = exit_fill(side, exit_ref, exit_slip)
        pnl, cost = trade_pnl(side, entry, exit_px, config.cost_bps)
        risk = abs(entry - stop)
        exit_time = max(ts[j] + BAR, entry_time)
        regime_row = reg.loc[signal_ts]
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
