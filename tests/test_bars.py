"""1-minute bars on real ticks: vendor agreement, invariants, visibility and gap filling."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from fbe_pipeline.market.bars import build_bars, find_gaps
from fbe_pipeline.quality.checks import check_bar_times, check_ohlc_invariants, vendor_match
from tests.realdata import DAYS, lean_bars, lean_reference, lean_ticks, session

MIN = 60_000_000_000


@pytest.mark.parametrize("symbol", ["SPY", "BAC"])
@pytest.mark.parametrize("day", DAYS, ids=str)
def test_bars_match_lean_minute_bars(symbol: str, day: date) -> None:
    open_ns, close_ns = session(symbol, day)
    outcome = vendor_match(lean_bars(symbol, day), lean_reference(symbol, day), open_ns, close_ns)
    assert outcome.metadata["reference_bars"] == 390
    assert outcome.metadata["volume_match_pct"] >= 99.0
    assert outcome.metadata["ohlc_match_pct"] >= 98.0
    assert outcome.passed


def test_spy_first_bar_values() -> None:
    bars = lean_bars("SPY", date(2013, 10, 7))
    first = bars.iloc[0]
    assert len(bars) == 390
    assert not bars["is_filled"].any()
    assert first["ts"] == pd.Timestamp("2013-10-07 13:30", tz="UTC")
    # OHLC equal Lean's 09:30 bar; volume includes the whole opening cross (Lean counts only
    # the first auction print).
    assert first[["open", "high", "low", "close"]].tolist() == [167.43, 167.52, 167.41, 167.44]
    assert first["volume"] == 1_054_719
    assert first["tick_count"] == 2311
    assert first["buy_volume"] == 682_555 and first["sell_volume"] == 372_164
    assert first["delta"] == 310_391
    assert first["vwap"] == pytest.approx(167.454262, abs=1e-6)


def test_real_bars_pass_blocking_invariants() -> None:
    for symbol in ("SPY", "BAC"):
        day = date(2013, 10, 8)
        bars = lean_bars(symbol, day)
        open_ns, close_ns = session(symbol, day)
        assert check_ohlc_invariants(bars).passed
        assert check_bar_times(bars, open_ns, close_ns).passed


def test_out_of_order_bar_fails_the_ordering_check() -> None:
    bars = lean_bars("SPY", date(2013, 10, 7)).copy()
    open_ns, close_ns = session("SPY", date(2013, 10, 7))
    swapped = bars.iloc[[0, 2, 1, *range(3, len(bars))]].reset_index(drop=True)
    outcome = check_bar_times(swapped, open_ns, close_ns)
    assert not outcome.passed
    assert outcome.metadata["not_strictly_increasing"] == 1


def test_broken_ohlc_fails_the_invariant_check() -> None:
    bars = lean_bars("SPY", date(2013, 10, 7)).copy()
    bars.loc[5, "high"] = bars.loc[5, "low"] - 0.01
    outcome = check_ohlc_invariants(bars)
    assert not outcome.passed
    assert outcome.metadata["violations"] == 1


def test_tick_order_does_not_change_bars() -> None:
    day = date(2013, 10, 7)
    open_ns, close_ns = session("SPY", day)
    ticks = lean_ticks("SPY", day)
    shuffled = ticks.sample(frac=1.0, random_state=7)
    a = build_bars(ticks, "SPY", pd.Timestamp(day), open_ns, close_ns)
    b = build_bars(shuffled, "SPY", pd.Timestamp(day), open_ns, close_ns)
    pd.testing.assert_frame_equal(a, b)


def _ticks(minutes: list[float], prices: list[float], open_ns: int) -> pd.DataFrame:
    n = len(minutes)
    return pd.DataFrame(
        {
            "ts_event": [open_ns + int(m * MIN) for m in minutes],
            "seq": np.arange(n),
            "price": prices,
            "size": [100.0] * n,
            "side_sign": np.ones(n, dtype=np.int8),
            "ohlc_eligible": [True] * n,
            "volume_eligible": [True] * n,
        }
    )


def test_short_gaps_are_filled_flat_and_long_gaps_stay_gaps() -> None:
    open_ns = 1_000 * MIN
    close_ns = open_ns + 10 * MIN
    # trades in minutes 0, 3 (gap of 2 -> filled), 7 (gap of 3 -> stays), nothing after 7
    ticks = _ticks([0.5, 3.2, 7.1], [10.0, 11.0, 12.0], open_ns)
    bars = build_bars(ticks, "X", pd.Timestamp("2020-01-01"), open_ns, close_ns)
    minutes = ((pd.DatetimeIndex(bars["ts"]).asi8 - open_ns) // MIN).tolist()
    assert minutes == [0, 1, 2, 3, 7, 8, 9]
    filled = bars.set_index(pd.Index(minutes))
    assert filled.loc[1, "is_filled"] and filled.loc[2, "is_filled"]
    assert filled.loc[1, ["open", "high", "low", "close"]].tolist() == [10.0] * 4
    assert filled.loc[1, "volume"] == 0
    assert not filled.loc[3, "is_filled"]
    assert filled.loc[8, "close"] == 12.0 and filled.loc[9, "is_filled"]
    gaps = find_gaps(bars, open_ns, close_ns)
    assert gaps["minutes"].tolist() == [3]


def test_bar_is_labelled_by_open_and_excludes_its_close_instant() -> None:
    open_ns = 1_000 * MIN
    ticks = _ticks([0.0, 0.999, 1.0], [10.0, 11.0, 9.0], open_ns)
    bars = build_bars(ticks, "X", pd.Timestamp("2020-01-01"), open_ns, open_ns + 2 * MIN)
    assert bars["close"].tolist() == [11.0, 9.0]
    assert bars["ts"].iloc[1] == pd.Timestamp(open_ns + MIN, tz="UTC")


def test_ineligible_prints_count_volume_but_not_price() -> None:
    open_ns = 1_000 * MIN
    ticks = _ticks([0.1, 0.2, 0.3], [10.0, 50.0, 10.5], open_ns)
    ticks.loc[1, "ohlc_eligible"] = False
    bars = build_bars(ticks, "X", pd.Timestamp("2020-01-01"), open_ns, open_ns + MIN)
    assert bars.loc[0, "high"] == 10.5
    assert bars.loc[0, "volume"] == 300.0
