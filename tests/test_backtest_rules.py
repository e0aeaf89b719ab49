"""Each backtest rule (SPEC §3, :mod:`fbe_pipeline.research.backtest` docstring) on hand-made
bars."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from fbe_pipeline.research.backtest import run_backtest
from fbe_pipeline.research.config import ScoringConfig
from fbe_pipeline.research.slippage import slippage
from fbe_pipeline.research.trade_rules import (
    bracket_levels,
    close_exit_reason,
    entry_decision,
    exit_on_bar,
    scan_exit,
    side_of,
    trade_pnl,
)

T0 = pd.Timestamp("2013-10-08 14:00", tz="UTC")
MIN = pd.Timedelta(60, "s")
# No slippage and no costs unless a test asks for them: prices stay exact.
FLAT = ScoringConfig(slippage_base=0.0, cost_bps=0.0, stop_atr_buffer=0.25, time_stop_bars=10)


def session(
    ohlc: list[tuple[float, float, float, float]],
    signals: list[tuple[int, str]],
    *,
    atr: float = 0.4,
    range_high: float = 101.0,
    range_low: float = 99.0,
    vol_ratio: float = 0.5,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Bars ``T0 + i min`` with the given OHLC, flat features, and signals ``(bar, direction)``.

    Every bar has ``atr14 = atr`` and the range ``[range_low, range_high]`` (target 100.0 by
    default); a signal's decision time is its bar's close.
    """
    ts = [T0 + i * MIN for i in range(len(ohlc))]
    bars = pd.DataFrame(
        {
            "ts": ts,
            "open": [b[0] for b in ohlc],
            "high": [b[1] for b in ohlc],
            "low": [b[2] for b in ohlc],
            "close": [b[3] for b in ohlc],
        }
    )
    feats = pd.DataFrame(
        {
            "ts": ts,
            "atr14": atr,
            "range_high": range_high,
            "range_low": range_low,
            "vol_ratio": vol_ratio,
        }
    )
    regimes = pd.DataFrame({"ts": ts, "vol_regime": "normal", "session_tag": "us"})
    sigs = pd.DataFrame(
        {
            "signal_id": [f"TEST:{i}:{d}" for i, d in signals],
            "symbol": "TEST",
            "trading_date": pd.Timestamp("2013-10-08"),
            "ts": [ts[i] for i, _ in signals],
            "decision_time": [ts[i] + MIN for i, _ in signals],
            "direction": [d for _, d in signals],
        }
    )
    return bars, feats, sigs, regimes


def backtest(
    ohlc: list[tuple[float, float, float, float]],
    signals: list[tuple[int, str]],
    config: ScoringConfig = FLAT,
    **features: float,
) -> pd.DataFrame:
    bars, feats, sigs, regimes = session(ohlc, signals, **features)
    return run_backtest(bars, feats, sigs, regimes, config, "test")


# A short at bar 0: signal bar high 102 -> stop 102 + 0.25 * 0.4 = 102.1; target 100.0.
SHORT_SIGNAL = (101.0, 102.0, 100.8, 101.2)
QUIET = (100.5, 100.6, 100.4, 100.5)


def test_entry_decision_uses_the_open_not_the_slipped_fill() -> None:
    # The open (100.01) is above the short's target (100.0); a 2 % slippage puts the fill below
    # the target. The decision ignores the draw: the trade is taken and exits at the target.
    slippy = ScoringConfig(slippage_base=0.01, slippage_vol_coeff=1.0, cost_bps=0.0)
    ohlc = [SHORT_SIGNAL, (100.01, 100.05, 99.9, 100.0)]
    trades = backtest(ohlc, [(0, "short")], slippy)
    assert len(trades) == 1
    t = trades.iloc[0]
    slip_in = slippage(100.01, 0.5, "TEST:0:short", slippy)
    assert t["entry_price"] == pytest.approx(100.01 - slip_in, abs=1e-12)
    assert t["entry_price"] < t["target_price"] == 100.0
    assert t["exit_reason"] == "target" and t["bars_held"] == 1
    assert t["pnl"] < 0
    # The slippage draw's size does not change the decision: vol_ratio 0 or 5, same trade.
    for vr in (0.0, 5.0):
        assert len(backtest(ohlc, [(0, "short")], slippy, vol_ratio=vr)) == 1


@pytest.mark.parametrize("entry_open", [100.0, 99.9])
def test_entry_skipped_when_the_open_is_at_or_beyond_the_target(entry_open: float) -> None:
    ohlc = [SHORT_SIGNAL, (entry_open, 100.2, 99.5, 99.8)]
    assert backtest(ohlc, [(0, "short")]).empty
    assert not entry_decision(-1, entry_open, 102.1, 100.0)


@pytest.mark.parametrize("entry_open", [102.1, 102.3])
def test_entry_skipped_when_the_open_is_at_or_beyond_the_stop(entry_open: float) -> None:
    ohlc = [SHORT_SIGNAL, (entry_open, 102.5, 101.0, 101.5)]
    assert backtest(ohlc, [(0, "short")]).empty
    assert not entry_decision(-1, entry_open, 102.1, 100.0)
    assert entry_decision(-1, 102.09, 102.1, 100.0)
    assert entry_decision(1, 99.0, 98.0, 100.0) and not entry_decision(1, 98.0, 98.0, 100.0)


def test_stop_crossed_at_a_later_open_fills_at_that_open_plus_slippage() -> None:
    # Short, stop 102.1; bar 2 opens at 102.6, above the stop: exit reference 102.6, not 102.1.
    slippy = ScoringConfig(slippage_base=0.0002, cost_bps=0.5)
    ohlc = [SHORT_SIGNAL, (101.0, 101.5, 100.5, 101.4), (102.6, 103.0, 102.4, 102.9)]
    t = backtest(ohlc, [(0, "short")], slippy).iloc[0]
    assert t["exit_reason"] == "stop" and t["bars_held"] == 2
    slip_out = slippage(102.6, 0.5, "TEST:0:short:exit", slippy)
    assert t["exit_price"] == pytest.approx(102.6 + slip_out, abs=1e-12)
    slip_in = slippage(101.0, 0.5, "TEST:0:short", slippy)
    assert t["slippage_paid"] == pytest.approx(slip_in + slip_out, abs=1e-12)
    cost = 0.5e-4 * (t["entry_price"] + t["exit_price"])
    assert t["cost"] == pytest.approx(cost, abs=1e-12)
    assert t["pnl"] == pytest.approx(t["entry_price"] - t["exit_price"] - cost, abs=1e-12)


def test_stop_crossed_at_the_open_fills_at_the_open_on_any_bar_the_entry_bar_included() -> None:
    # The entry decision keeps a trade from opening beyond its stop, so on the entry bar this
    # applies only to a caller that entered anyway (e.g. a paper fill that came late).
    assert exit_on_bar(-1, 102.1, 100.0, 102.3, 102.5, 101.0) == (102.3, "stop")
    assert exit_on_bar(1, 98.0, 100.0, 97.5, 99.0, 97.0) == (97.5, "stop")
    assert scan_exit(1, 98.0, 100.0, [97.5], [99.0], [97.0], [98.5], 0, 10) == (97.5, "stop", 0)


def test_open_beyond_the_target_exits_at_the_target_never_better() -> None:
    # Long, target 100.0; bar 2 opens at 100.4, above the target: exit at 100.0 (limit price).
    ohlc = [(99.0, 99.2, 98.0, 98.8), (98.9, 99.5, 98.7, 99.4), (100.4, 100.6, 100.3, 100.5)]
    t = backtest(ohlc, [(0, "long")]).iloc[0]
    assert (t["exit_reason"], t["exit_price"], t["bars_held"]) == ("target", 100.0, 2)
    assert t["pnl"] == pytest.approx(100.0 - 98.9, abs=1e-12)
    assert exit_on_bar(-1, 102.1, 100.0, 99.6, 99.8, 99.5) == (100.0, "target")


@pytest.mark.parametrize("missing", ["range_high", "range_low", "atr"])
def test_a_signal_without_a_complete_range_or_atr_cannot_trade(missing: str) -> None:
    ohlc = [SHORT_SIGNAL, (101.0, 101.2, 99.5, 99.8)]
    levels = {"range_high": 101.0, "range_low": 99.0, "atr": 0.4} | {missing: math.nan}
    assert backtest(ohlc, [(0, "short")], FLAT, **levels).empty
    assert (
        bracket_levels(-1, 102.0, levels["atr"], levels["range_high"], levels["range_low"], 0.25)
        is None
    )


def test_bracket_levels_stop_beyond_the_extreme_target_at_the_range_midpoint() -> None:
    assert bracket_levels(-1, 102.0, 0.4, 101.0, 99.0, 0.25) == pytest.approx((102.1, 100.0))
    assert bracket_levels(1, 98.0, 0.4, 101.0, 99.0, 0.25) == pytest.approx((97.9, 100.0))
    t = backtest([SHORT_SIGNAL, (101.0, 101.2, 99.5, 99.8)], [(0, "short")]).iloc[0]
    assert (t["stop_price"], t["target_price"]) == pytest.approx((102.1, 100.0))


def test_a_bar_touching_stop_and_target_exits_at_the_stop() -> None:
    ohlc = [SHORT_SIGNAL, (101.0, 102.2, 99.8, 100.5)]
    t = backtest(ohlc, [(0, "short")]).iloc[0]
    assert (t["exit_reason"], t["exit_price"], t["bars_held"]) == ("stop", 102.1, 1)


def test_a_touch_equal_to_a_level_counts() -> None:
    # atr 0: stop = the signal bar's high 102.0; an entry bar whose high is exactly 102.0 stops.
    t = backtest([SHORT_SIGNAL, (101.0, 102.0, 100.5, 101.0)], [(0, "short")], atr=0.0).iloc[0]
    assert (t["exit_reason"], t["exit_price"]) == ("stop", 102.0)
    # A low exactly at the target (100.0) takes profit.
    t = backtest([SHORT_SIGNAL, (101.0, 101.5, 100.0, 100.2)], [(0, "short")]).iloc[0]
    assert (t["exit_reason"], t["exit_price"]) == ("target", 100.0)
    assert exit_on_bar(1, 98.0, 100.0, 99.0, 99.5, 98.0) == (98.0, "stop")
    assert exit_on_bar(1, 98.0, 100.0, 99.0, 100.0, 98.1) == (100.0, "target")


def test_time_stop_counts_the_entry_bar_and_exits_at_that_close() -> None:
    config = ScoringConfig(slippage_base=0.0, cost_bps=0.0, time_stop_bars=3)
    ohlc = [SHORT_SIGNAL, QUIET, QUIET, (100.5, 100.6, 100.4, 100.45), QUIET, QUIET]
    t = backtest(ohlc, [(0, "short")], config).iloc[0]
    assert (t["exit_reason"], t["bars_held"], t["exit_price"]) == ("time_stop", 3, 100.45)
    assert t["entry_time"] == T0 + MIN + pd.Timedelta(250, "ms")
    assert t["exit_time"] == T0 + 4 * MIN  # close of bar 3 (the third bar held)
    assert close_exit_reason(3, 3, True) == "time_stop"
    assert close_exit_reason(2, 3, True) == "session_end"
    assert close_exit_reason(2, 3, False) is None


def test_session_end_exits_at_the_last_bar_close() -> None:
    t = backtest([SHORT_SIGNAL, QUIET, (100.5, 100.6, 100.4, 100.55)], [(0, "short")]).iloc[0]
    assert (t["exit_reason"], t["bars_held"], t["exit_price"]) == ("session_end", 2, 100.55)
    assert t["exit_time"] == T0 + 3 * MIN


def test_one_position_per_symbol_and_a_skipped_signal_does_not_block() -> None:
    # Signal at bar 0 trades bars 1..3 (target at bar 3, exit time = bar 4 open); the signal
    # at bar 1 comes while it is open (dropped); bar 3's decision (bar 4 open) equals the exit
    # time and trades.
    ohlc = [SHORT_SIGNAL, QUIET, QUIET, (100.5, 100.6, 99.9, 100.2), QUIET, QUIET]
    trades = backtest(ohlc, [(0, "short"), (1, "short"), (3, "short")])
    assert list(trades["signal_id"]) == ["TEST:0:short", "TEST:3:short"]
    assert trades["exit_time"].iloc[0] == trades["decision_time"].iloc[1]
    # A signal skipped by the entry decision leaves the position free for the next one.
    skipped_first = [SHORT_SIGNAL, (99.9, 100.0, 99.8, 99.9), SHORT_SIGNAL, QUIET]
    trades = backtest(skipped_first, [(0, "short"), (2, "short")])
    assert list(trades["signal_id"]) == ["TEST:2:short"]


def test_entry_at_the_first_bar_opening_at_or_after_the_decision() -> None:
    # Minute 1 missing: the entry bar is the one at T0 + 2 min.
    bars, feats, sigs, regimes = session([SHORT_SIGNAL, QUIET, QUIET], [(0, "short")])
    bars = bars.drop(index=1).reset_index(drop=True)
    t = run_backtest(bars, feats, sigs, regimes, FLAT, "test").iloc[0]
    # decision + latency (T0 + 1 min 250 ms) is before that bar opens: filled just after it.
    assert t["entry_time"] == T0 + 2 * MIN + pd.Timedelta(1, "ns")
    assert t["entry_price"] == 100.5
    # No bar at or after the decision: no trade.
    bars, feats, sigs, regimes = session([SHORT_SIGNAL], [(0, "short")])
    assert run_backtest(bars, feats, sigs, regimes, FLAT, "test").empty


def test_long_trade_values_with_slippage_and_costs() -> None:
    config = ScoringConfig(slippage_base=0.0002, cost_bps=0.5)
    ohlc = [(99.0, 99.2, 98.0, 98.8), (98.9, 99.5, 98.7, 99.4), (99.5, 100.2, 99.4, 100.1)]
    t = backtest(ohlc, [(0, "long")], config, vol_ratio=2.0).iloc[0]
    slip_in = slippage(98.9, 2.0, "TEST:0:long", config)
    slip_out = slippage(100.0, 2.0, "TEST:0:long:exit", config)
    entry, exit_px = 98.9 + slip_in, 100.0 - slip_out
    pnl, cost = trade_pnl(1, entry, exit_px, 0.5)
    assert pnl == pytest.approx(exit_px - entry - 0.5e-4 * (entry + exit_px), abs=1e-12)
    np.testing.assert_allclose(
        t[["entry_price", "exit_price", "pnl", "cost"]].to_numpy(np.float64),
        [entry, exit_px, pnl, cost],
        rtol=0,
        atol=1e-12,
    )
    assert t["r_multiple"] == pytest.approx(pnl / (entry - 97.9), abs=1e-12)
    assert t["return_bps"] == pytest.approx(pnl / entry * 1e4, abs=1e-9)


def test_bad_sides_and_directions_raise() -> None:
    with pytest.raises(ValueError, match="direction"):
        side_of("flat")
    with pytest.raises(ValueError, match="side"):
        entry_decision(0, 100.0, 99.0, 101.0)
    with pytest.raises(ValueError, match="stop_atr_buffer"):
        bracket_levels(1, 98.0, 0.4, 101.0, 99.0, -0.1)
    with pytest.raises(ValueError, match="entry_index"):
        scan_exit(1, 98.0, 100.0, [99.0], [99.5], [98.5], [99.0], 1, 10)
