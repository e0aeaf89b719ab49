"""The streaming detector's rules on real trades (Binance futures BTCUSDT, Tardis sample):
when a minute closes (grace, sender watermark, wall clock for a live session), and that its
incremental preparation of ticks gives exactly the batch bars whatever the arrival order."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fbe_pipeline.live.detector import NS_PER_MINUTE, StreamingDetector
from fbe_pipeline.live.replay import read_ticks
from fbe_pipeline.market.instruments import load_instruments
from fbe_pipeline.pipeline import session_bars, session_bounds, session_ticks
from fbe_pipeline.research.config import ScoringConfig
from fbe_pipeline.settings import sample_data_dir
from fbe_pipeline.storage.store import LocalRawStore

DAY = date(2020, 2, 22)
TARDIS = sample_data_dir() / "tardis" / "tardis_binance-futures_BTCUSDT_trades_2020-02-22.csv"
INSTRUMENTS = load_instruments()


@pytest.fixture(scope="module")
def btc() -> pd.DataFrame:
    ticks = read_ticks("tardis-trades", [TARDIS], INSTRUMENTS["BTCUSDT"])
    return ticks.assign(key=[f"k{i}" for i in range(len(ticks))])


def _detector(
    tmp_path: Path,
    started_ns: int | None = None,
    grace_ms: int = 2000,
    feeds_down: set[str] | None = None,
) -> tuple[StreamingDetector, list[pd.DataFrame]]:
    recorded: list[pd.DataFrame] = []

    def record(signals: pd.DataFrame, through: int) -> pd.DataFrame:
        recorded.append(signals)
        return signals

    detector = StreamingDetector(
        INSTRUMENTS,
        LocalRawStore(tmp_path / "raw"),
        ScoringConfig(trigger_score=30),
        record,
        grace_ms=grace_ms,
        started_ns=started_ns,
        feeds_down=lambda: set(feeds_down or ()),
    )
    return detector, recorded


def test_a_minute_closes_only_after_the_grace(tmp_path: Path, btc: pd.DataFrame) -> None:
    detector, _ = _detector(tmp_path)
    minute = int(btc["ts_event"].iloc[0]) // NS_PER_MINUTE * NS_PER_MINUTE
    end = minute + NS_PER_MINUTE
    first = btc[btc["ts_event"] < end + 1_999_000_000]
    detector.add("BTCUSDT", DAY, first)
    assert detector.advance(now_ns=end) == []  # 1.999 s past the close: still open
    later = btc[(btc["ts_event"] >= end + 1_999_000_000)].head(1)
    assert int(later["ts_event"].iloc[0]) >= end + 2_000_000_000
    detector.add("BTCUSDT", DAY, later)
    [closed] = detector.advance(now_ns=end)
    assert closed.bar_closes[0] == end
    assert closed.closed_through >= end


def test_a_sender_watermark_closes_the_last_bar(tmp_path: Path, btc: pd.DataFrame) -> None:
    detector, _ = _detector(tmp_path)
    detector.add("BTCUSDT", DAY, btc)
    last = int(btc["ts_event"].max())
    last_close = last // NS_PER_MINUTE * NS_PER_MINUTE + NS_PER_MINUTE
    [before] = detector.advance()
    assert before.bar_closes[-1] < last_close
    detector.advance_watermark("BTCUSDT", last_close)
    [after] = detector.advance()
    assert after.bar_closes == (last_close,)


def test_the_wall_clock_closes_a_live_session_but_not_a_replayed_one(
    tmp_path: Path, btc: pd.DataFrame
) -> None:
    _, close_ns = session_bounds(INSTRUMENTS["BTCUSDT"], DAY)
    # The sample's ticks, moved to the session's last two minutes.
    shifted = btc.head(50).assign(
        ts_event=close_ns - 90 * 10**9 + np.arange(50) * 10**9, seq=np.arange(50)
    )
    live, _ = _detector(tmp_path, started_ns=close_ns - 3600 * 10**9)
    live.add("BTCUSDT", DAY, shifted)
    [first] = live.advance(now_ns=close_ns - 10**9)
    assert first.closed_through < close_ns
    [closed] = live.advance(now_ns=close_ns + 2 * 10**9)
    assert closed.session_closed and closed.closed_through == close_ns
    replayed, _ = _detector(tmp_path, started_ns=close_ns + 400 * 86_400 * 10**9)
    replayed.add("BTCUSDT", DAY, shifted)
    [only] = replayed.advance(now_ns=close_ns + 400 * 86_400 * 10**9)
    assert not only.session_closed


def test_the_wall_clock_closes_nothing_while_the_feed_is_down(
    tmp_path: Path, btc: pd.DataFrame
) -> None:
    """Issue 14: a stale feed's last minute is a gap, not a flat bar; its next trade (event
    time) or its recovery closes it."""
    _, close_ns = session_bounds(INSTRUMENTS["BTCUSDT"], DAY)
    shifted = btc.head(50).assign(
        ts_event=close_ns - 90 * 10**9 + np.arange(50) * 10**9, seq=np.arange(50)
    )
    down = {"BTCUSDT"}
    live, _ = _detector(tmp_path, started_ns=close_ns - 3600 * 10**9, feeds_down=down)
    live.add("BTCUSDT", DAY, shifted)
    [first] = live.advance(now_ns=close_ns - 10**9)
    assert live.advance(now_ns=close_ns + 60 * 10**9) == []
    down.clear()
    [closed] = live.advance(now_ns=close_ns + 61 * 10**9)
    assert closed.session_closed and closed.closed_through == close_ns
    assert first.closed_through < close_ns


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_incremental_bars_equal_the_batch_bars_in_any_arrival_order(
    tmp_path: Path, btc: pd.DataFrame, seed: int
) -> None:
    """Chunks arrive in order, with ties split across chunks, and with late ticks (a chunk
    holding ticks older than the last one seen) — the bars always equal the batch's."""
    rng = np.random.default_rng(seed)
    cuts = np.sort(rng.choice(np.arange(1, len(btc)), size=40, replace=False))
    chunks = np.split(np.arange(len(btc)), cuts)
    order = list(range(len(chunks)))
    for i in rng.choice(len(order) - 1, size=4, replace=False):  # swap neighbours: late ticks
        order[i], order[i + 1] = order[i + 1], order[i]
    detector, _ = _detector(tmp_path)
    instrument = INSTRUMENTS["BTCUSDT"]
    for n, i in enumerate(order):
        detector.add("BTCUSDT", DAY, btc.iloc[chunks[i]])
        day = detector._days["BTCUSDT"][DAY]
        bars = detector._session_bars("BTCUSDT", DAY, day)
        seen = btc.iloc[np.concatenate([chunks[j] for j in order[: n + 1]])]
        ticks, _ = session_ticks(seen.drop(columns="key"), None, instrument, DAY)
        pd.testing.assert_frame_equal(bars, session_bars(ticks, instrument, DAY))


def test_a_config_change_scores_only_the_bars_after_its_effective_time(
    tmp_path: Path, btc: pd.DataFrame
) -> None:
    """Issue 10: a config version that takes effect while the service runs decides the bars
    that open from then on; earlier bars keep the signals recorded before."""
    detector, recorded = _detector(tmp_path)
    half = len(btc) // 2
    detector.add("BTCUSDT", DAY, btc.iloc[:half])
    [first] = detector.advance()
    since = first.closed_through
    old, new = ScoringConfig(trigger_score=30), ScoringConfig(trigger_score=20)
    assert detector.set_config(new, since) and not detector.set_config(new, since)
    detector.add("BTCUSDT", DAY, btc.iloc[half:])
    last = int(btc["ts_event"].max()) // NS_PER_MINUTE * NS_PER_MINUTE + NS_PER_MINUTE
    detector.advance_watermark("BTCUSDT", last)
    detector.advance()
    signals = pd.concat(recorded, ignore_index=True).drop_duplicates("signal_id")
    closes = pd.DatetimeIndex(signals["bar_close"]).as_unit("ns").asi8
    before, after = signals[closes <= since], signals[closes > since]
    assert len(before) and len(after)
    assert set(before["config_version"]) == {old.version}
    assert set(after["config_version"]) == {new.version}
