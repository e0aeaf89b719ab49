"""Features, scores, signals and backtest on real bars; the no-look-ahead checks (SPEC §4)."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest
import talib

from fbe_pipeline.market.instruments import get_instrument
from fbe_pipeline.pipeline import session_features, session_regimes
from fbe_pipeline.quality.checks import (
    check_entry_timing,
    check_prefix_invariance,
    check_signal_timing,
    sample_cut_times,
)
from fbe_pipeline.research.backtest import run_backtest, trade_metrics
from fbe_pipeline.research.config import ScoringConfig
from fbe_pipeline.research.features import compute_features, wilder_atr
from fbe_pipeline.research.scoring import compute_scores, generate_signals, signal_id
from fbe_pipeline.research.slippage import seeded_uniform
from tests.realdata import lean_bars

D1, D2 = date(2013, 10, 7), date(2013, 10, 8)
DEMO = ScoringConfig(trigger_score=40)


def _window(symbol: str = "SPY") -> pd.DataFrame:
    return pd.concat([lean_bars(symbol, D1), lean_bars(symbol, D2)], ignore_index=True)


def test_atr14_equals_talib_on_real_bars() -> None:
    bars = _window()
    ours = compute_features(bars)["atr14"].to_numpy()
    ref = talib.ATR(
        bars["high"].to_numpy(), bars["low"].to_numpy(), bars["close"].to_numpy(), timeperiod=14
    )
    assert np.isnan(ours[:14]).all() and np.isnan(ref[:14]).all()
    np.testing.assert_allclose(ours[14:], ref[14:], rtol=1e-9, atol=0)
    assert len(ours) == 780


def test_atr_warmup_is_nan_and_never_backfilled() -> None:
    high = np.array([10.0, 11, 12, 11, 10])
    atr = wilder_atr(high, high - 1, high - 0.5, period=3)
    assert np.isnan(atr[:3]).all()
    # TR[1..3] = 1.5, 1.5, 1.5 (gaps to previous close dominate); seed = mean.
    assert atr[3] == pytest.approx(1.5)


def test_range_excludes_the_current_bar_and_needs_20_prior_bars() -> None:
    feats = compute_features(_window())
    bars = _window()
    assert feats["range_high"].iloc[:20].isna().all()
    assert feats["range_high"].iloc[20] == bars["high"].iloc[:20].max()
    assert feats["range_low"].iloc[57] == bars["low"].iloc[37:57].min()
    up = feats["poke"] == "up"
    assert (bars.loc[up, "high"] > feats.loc[up, "range_high"]).all()


def test_features_are_prefix_invariant_on_real_data() -> None:
    window = _window()
    compute = lambda b: session_features(b, D2, None)  # noqa: E731
    cuts = sample_cut_times(compute(window)["ts"], samples=6)
    outcome = check_prefix_invariance(window, compute, cuts)
    assert outcome.passed, outcome.metadata
    assert outcome.metadata["cuts"] >= 3


def test_a_feature_that_peeks_one_bar_ahead_fails_prefix_invariance() -> None:
    window = _window()

    def peeking(bars: pd.DataFrame) -> pd.DataFrame:
        feats = session_features(bars, D2, None)
        # next bar's high leaks into this bar's range: the classic off-by-one look-ahead
        nxt = bars.loc[pd.to_datetime(bars["trading_date"]) == pd.Timestamp(D2), "high"]
        feats["range_high"] = nxt.shift(-1).to_numpy()
        return feats

    cuts = sample_cut_times(peeking(window)["ts"], samples=6)
    outcome = check_prefix_invariance(window, peeking, cuts)
    assert not outcome.passed
    assert outcome.metadata["failed_cuts"] >= 1


def test_scores_and_signals_on_real_data() -> None:
    feats = session_features(_window(), D2, None)
    scores = compute_scores(feats, DEMO)
    assert ((scores["poke"] == "none") <= (scores["score"] == 0)).all()
    signals = generate_signals(scores, DEMO)
    assert len(signals) == int((scores["score"] >= 40).sum()) and len(signals) > 0
    assert set(signals["direction"]) <= {"long", "short"}
    shorts = signals["direction"] == "short"
    assert (signals.loc[shorts, "poke"] == "up").all()
    assert check_signal_timing(signals).passed
    first = signals.iloc[0]
    assert first["signal_id"] == signal_id("SPY", first["ts"], DEMO.version)
    assert first["decision_time"] == first["ts"] + pd.Timedelta(60, "s")


def test_decision_before_bar_close_fails_the_timing_check() -> None:
    feats = session_features(_window(), D2, None)
    signals = generate_signals(compute_scores(feats, DEMO), DEMO)
    broken = signals.copy()
    broken.loc[0, "decision_time"] = broken.loc[0, "ts"] + pd.Timedelta(59, "s")
    outcome = check_signal_timing(broken)
    assert not outcome.passed and outcome.metadata["before_close"] == 1


def _backtest(symbol: str = "SPY") -> tuple[pd.DataFrame, pd.DataFrame]:
    window = _window(symbol)
    feats = session_features(window, D2, None)
    signals = generate_signals(compute_scores(feats, DEMO), DEMO)
    regimes = session_regimes(compute_features(window), get_instrument(symbol), D2)
    bars = lean_bars(symbol, D2)
    return run_backtest(bars, feats, signals, regimes, DEMO, "test"), signals


def test_backtest_entries_come_strictly_after_decisions_and_reproduce() -> None:
    trades, signals = _backtest()
    assert len(trades) > 0
    assert check_entry_timing(trades).passed
    assert set(trades["signal_id"]) <= set(signals["signal_id"])
    # one position at a time
    entries = trades.sort_values("entry_time")
    assert (
        entries["entry_time"].iloc[1:].to_numpy() >= entries["exit_time"].iloc[:-1].to_numpy()
    ).all()
    again, _ = _backtest()
    pd.testing.assert_frame_equal(trades, again)
    metrics = trade_metrics(trades)
    assert metrics["trades"] == len(trades)
    assert metrics["pnl"] == pytest.approx(trades["pnl"].sum())
    assert metrics["max_drawdown"] >= 0


def test_entry_before_decision_fails_the_entry_timing_check() -> None:
    trades, _ = _backtest()
    broken = trades.copy()
    broken.loc[broken.index[0], "entry_time"] = broken.loc[broken.index[0], "decision_time"]
    outcome = check_entry_timing(broken)
    assert not outcome.passed and outcome.metadata["violations"] == 1


def test_slippage_draw_is_seeded_by_signal_id() -> None:
    a = seeded_uniform("SPY:20131008T1400Z:abc")
    assert a == seeded_uniform("SPY:20131008T1400Z:abc")
    assert 0.5 <= a < 1.5
    assert a != seeded_uniform("SPY:20131008T1401Z:abc")


def test_replaying_bars_one_at_a_time_yields_the_batch_signals() -> None:
    # SPEC §4.3: the live path (the same functions on a growing window) signals exactly where
    # the batch run does, never earlier.
    window = _window()
    batch = generate_signals(compute_scores(session_features(window, D2, None), DEMO), DEMO)
    live = []
    day2 = pd.DatetimeIndex(window["ts"])[
        pd.to_datetime(window["trading_date"]) == pd.Timestamp(D2)
    ]
    for t in day2:
        visible = window.loc[pd.DatetimeIndex(window["ts"]) <= t]
        sigs = generate_signals(compute_scores(session_features(visible, D2, None), DEMO), DEMO)
        live.append(sigs.loc[pd.DatetimeIndex(sigs["ts"]) == t])
    replayed = pd.concat(live, ignore_index=True)
    assert len(batch) > 0
    pd.testing.assert_frame_equal(replayed, batch)
