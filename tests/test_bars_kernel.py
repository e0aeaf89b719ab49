"""The numba bar kernels against a plain-Python reference of the bar rules, on synthetic ticks.

``build_bars`` aggregates with branch-free selects and register accumulators; these tests pin
its output bit for bit to a straightforward per-minute implementation of SPEC §3 (sums added in
``(ts_event, seq)`` order, as the kernel does), on inputs with timestamp ties, unsorted rows,
out-of-session ticks, gaps of every length, and minutes with only OHLC- or volume-ineligible
prints. No real data needed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fbe_pipeline.market.bars import BAR_COLUMNS, MAX_FILL_MINUTES, build_bars

MIN = 60_000_000_000
OPEN_NS = pd.Timestamp("2013-10-07 13:30", tz="UTC").value
N_MIN = 30
CLOSE_NS = OPEN_NS + N_MIN * MIN
DAY = pd.Timestamp("2013-10-07")


def synthetic_ticks(seed: int, shuffle: bool) -> pd.DataFrame:
    """~3k ticks around a 30-minute session with ties, gaps and special minutes."""
    rng = np.random.default_rng(seed)
    n = 3000
    # Millisecond resolution inside [open - 3 min, close + 3 min): many equal timestamps.
    ts = OPEN_NS - 3 * MIN + rng.integers(0, (N_MIN + 6) * 60_000, n) * 1_000_000
    minute = (ts - OPEN_NS) // MIN
    keep = ~np.isin(minute, [0, 1, 5, 9, 10, 14, 15, 16, N_MIN - 2, N_MIN - 1])
    ts, minute = ts[keep], minute[keep]
    n = len(ts)
    ohlc_ok = rng.random(n) < 0.6
    vol_ok = rng.random(n) < 0.95
    ohlc_ok[minute == 20] = False  # volume only: a flat bar at the previous close
    vol_ok[minute == 22] = False  # prices only: traded, volume 0, vwap = close
    ohlc_ok[minute == 24] = vol_ok[minute == 24] = False  # nothing counts: a 1-minute gap
    ticks = pd.DataFrame(
        {
            "ts_event": ts.astype(np.int64),
            "seq": rng.permutation(n).astype(np.int64),
            "price": np.round(100 + rng.normal(0, 0.5, n), 2),
            "size": rng.choice([0.0, 1.0, 100.0, 250.0, 1e4], n),
            "side_sign": rng.choice(np.array([-1, 0, 1], dtype=np.int8), n),
            "ohlc_eligible": ohlc_ok,
            "volume_eligible": vol_ok,
        }
    )
    if not shuffle:
        ticks = ticks.sort_values(["ts_event", "seq"], kind="stable")
    return ticks.reset_index(drop=True)


def reference_bars(ticks: pd.DataFrame) -> pd.DataFrame:
    """SPEC §3 written out minute by minute in plain Python."""
    t = ticks.sort_values(["ts_event", "seq"], kind="stable")
    t = t[(t["ts_event"] >= OPEN_NS) & (t["ts_event"] < CLOSE_NS)]
    stats = []
    for m in range(N_MIN):
        rows = t[(t["ts_event"] - OPEN_NS) // MIN == m]
        prices = [r.price for r in rows.itertuples() if r.ohlc_eligible]
        vol = buy = sell = pv = vv = 0.0
        count = 0
        for r in rows.itertuples():
            if r.volume_eligible:
                vol += r.size
                count += 1
                buy += r.size if r.side_sign > 0 else 0.0
                sell += r.size if r.side_sign < 0 else 0.0
                if r.ohlc_eligible:
                    pv += r.price * r.size
                    vv += r.size
        ohlc = (prices[0], max(prices), min(prices), prices[-1]) if prices else None
        stats.append((ohlc, vol, buy, sell, count, pv, vv))

    traded = [s[0] is not None or s[4] > 0 for s in stats]
    first = traded.index(True) if any(traded) else N_MIN
    filled = [False] * N_MIN
    m = first
    while m < N_MIN:
        if traded[m]:
            m += 1
            continue
        end = m
        while end < N_MIN and not traded[end]:
            end += 1
        if end - m <= MAX_FILL_MINUTES:
            filled[m:end] = [True] * (end - m)
        m = end

    out = []
    last_close = None
    for m, (ohlc, vol, buy, sell, count, pv, vv) in enumerate(stats):
        if ohlc is not None:
            last_close = ohlc[3]
        if not (traded[m] or filled[m]):
            continue
        if ohlc is None:
            if last_close is None:
                continue
            ohlc = (last_close,) * 4
        vwap = pv / vv if vv > 0 else ohlc[3]
        ts = pd.Timestamp(OPEN_NS + m * MIN, tz="UTC")
        out.append(("SPY", DAY, ts, *ohlc, vol, buy, sell, buy - sell, count, vwap, filled[m]))
    frame = pd.DataFrame(out, columns=list(BAR_COLUMNS))
    return frame.astype(
        {
            "trading_date": "datetime64[ns]",
            "ts": "datetime64[ns, UTC]",
            "tick_count": np.int64,
            "is_filled": bool,
        }
    )


@pytest.mark.parametrize("shuffle", [False, True], ids=["sorted", "shuffled"])
@pytest.mark.parametrize("seed", range(4))
def test_build_bars_matches_reference(seed: int, shuffle: bool) -> None:
    ticks = synthetic_ticks(seed, shuffle)
    bars = build_bars(ticks, "SPY", DAY, OPEN_NS, CLOSE_NS)
    pd.testing.assert_frame_equal(bars, reference_bars(ticks), check_exact=True)
    # The special minutes did what they are there for.
    by_minute = {(row.ts.value - OPEN_NS) // MIN: row for row in bars.itertuples()}
    assert 0 not in by_minute and 1 not in by_minute  # leading gap: never filled
    assert by_minute[5].is_filled  # 1-minute gap
    assert by_minute[9].is_filled and by_minute[10].is_filled  # 2-minute gap
    assert not {14, 15, 16} & by_minute.keys()  # 3-minute gap stays a gap
    assert by_minute[N_MIN - 1].is_filled  # trailing 2-minute gap
    assert by_minute[20].open == by_minute[19].close and by_minute[20].volume > 0
    assert by_minute[22].volume == 0 and by_minute[22].vwap == by_minute[22].close
    assert by_minute[24].is_filled


def test_unsorted_input_gives_identical_bars() -> None:
    ordered = build_bars(synthetic_ticks(7, False), "SPY", DAY, OPEN_NS, CLOSE_NS)
    shuffled = build_bars(synthetic_ticks(7, True), "SPY", DAY, OPEN_NS, CLOSE_NS)
    pd.testing.assert_frame_equal(ordered, shuffled, check_exact=True)


def test_volume_only_first_minute_without_earlier_close_is_dropped() -> None:
    ticks = synthetic_ticks(3, False)
    minute = (ticks["ts_event"] - OPEN_NS) // MIN
    ticks = ticks[minute >= 2].copy()
    ticks.loc[(ticks["ts_event"] - OPEN_NS) // MIN == 2, "ohlc_eligible"] = False
    bars = build_bars(ticks, "SPY", DAY, OPEN_NS, CLOSE_NS)
    assert bars["ts"].iloc[0] == pd.Timestamp(OPEN_NS + 3 * MIN, tz="UTC")
    pd.testing.assert_frame_equal(bars, reference_bars(ticks), check_exact=True)


@pytest.mark.parametrize("case", ["no ticks", "none eligible", "outside session"])
def test_no_bars(case: str) -> None:
    ticks = synthetic_ticks(0, False)
    if case == "no ticks":
        ticks = ticks.iloc[:0]
    elif case == "none eligible":
        ticks = ticks.assign(ohlc_eligible=False, volume_eligible=False)
    else:
        ticks = ticks[ticks["ts_event"] < OPEN_NS]
    bars = build_bars(ticks, "SPY", DAY, OPEN_NS, CLOSE_NS)
    assert bars.empty
    assert list(bars.columns) == list(BAR_COLUMNS)
    assert str(bars["ts"].dtype) == "datetime64[ns, UTC]"
    assert bars["tick_count"].dtype == np.int64 and bars["is_filled"].dtype == bool
