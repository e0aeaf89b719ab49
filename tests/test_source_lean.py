"""Tests of the Lean readers against the real QuantConnect sample files and tiny synthetic zips.

Expected numbers for the real files were read off the raw CSVs (``unzip -p ... | awk``) and are
hard-coded. The vendor-match test rebuilds regular-session 1-minute bars from the ticks the way
the pipeline does and compares them with Lean's own minute bars.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fbe_pipeline.market.frames import QUOTE_COLUMNS, REFERENCE_BAR_COLUMNS, TICK_COLUMNS
from fbe_pipeline.market.sources.lean import (
    condition_eligibility,
    parse_condition_bits,
    read_lean_minute_bars,
    read_lean_quotes,
    read_lean_trades,
)

DATA_DIR = Path(
    os.environ.get("FBE_SAMPLE_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)
LEAN = DATA_DIR / "lean"
NY = "America/New_York"
EQ_SCALE = 10000.0

needs_sample = pytest.mark.skipif(
    not (LEAN / "spy" / "tick" / "20131007_trade.zip").is_file(),
    reason=f"Lean sample data not found under {LEAN}; set FBE_SAMPLE_DATA to shared/data",
)


def _utc_ns(text: str) -> int:
    return int(pd.Timestamp(text, tz="UTC").value)


@pytest.fixture(scope="module")
def spy_1007() -> pd.DataFrame:
    return read_lean_trades(LEAN / "spy/tick/20131007_trade.zip", "SPY", NY, EQ_SCALE)


# --- trades ----------------------------------------------------------------------------------


@needs_sample
def test_trade_layout_and_first_tick(spy_1007: pd.DataFrame) -> None:
    t = spy_1007
    assert tuple(t.columns) == TICK_COLUMNS
    assert len(t) == 250_601
    assert t["ts_event"].dtype == np.int64
    assert t["ts_recv"].dtype == pd.Int64Dtype()
    assert t["ts_recv"].isna().all()
    assert t["price"].dtype == np.float64
    assert t["size"].dtype == np.float64
    assert t["seq"].dtype == np.int64
    assert t["ohlc_eligible"].dtype == bool
    assert t["volume_eligible"].dtype == bool
    assert (t["seq"].to_numpy() == np.arange(len(t))).all()
    assert set(t["side"]) == {"unknown"}
    assert set(t["source"]) == {"lean"}
    assert set(t["symbol"]) == {"SPY"}
    assert np.all(np.diff(t["ts_event"].to_numpy()) >= 0)

    # CSV line 1: 14400464,1674100,100,P,20002000,0 -> 04:00:00.464 EDT
    first = t.iloc[0]
    assert first["ts_event"] == _utc_ns("2013-10-07 08:00:00.464")
    assert first["price"] == pytest.approx(167.41)
    assert first["size"] == 100.0
    assert first["exchange"] == "P"
    assert first["condition"] == "20002000"  # read as a string, not a number
    assert not first["ohlc_eligible"]  # extended hours (Form T)
    assert first["volume_eligible"]


@needs_sample
def test_dst_correct_utc_conversion(spy_1007: pd.DataFrame) -> None:
    # 2013-10-07 is EDT (UTC-4): 09:30 ET == 13:30 UTC.
    t = spy_1007
    open_ns = _utc_ns("2013-10-07 13:30")
    first_rth = t[t["ts_event"] >= open_ns].iloc[0]
    assert first_rth["seq"] == 2835  # CSV: 34200007,1674100,500,Q,2000,0
    assert first_rth["ts_event"] == open_ns + 7_000_000
    bars = read_lean_minute_bars(LEAN / "spy/minute/20131007_trade.zip", "SPY", NY, EQ_SCALE)
    assert open_ns in set(bars["ts"])
    assert pd.Timestamp("2013-10-07 09:30", tz=NY).value == open_ns


def _trade_zip(tmp_path: Path, name: str, lines: list[str], member: str = "t.csv") -> Path:
    path = tmp_path / name
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(member, "\n".join(lines) + "\n")
    return path


def test_dst_transition_days(tmp_path: Path) -> None:
    # Fall back 2013-11-03: 01:30 happens twice; Lean (NodaTime lenient) takes the earlier (EDT).
    fall = _trade_zip(tmp_path, "20131103_trade.zip", ["5400000,100000,1,P,1,0"])
    assert read_lean_trades(fall, "X", NY, EQ_SCALE)["ts_event"].iloc[0] == _utc_ns(
        "2013-11-03 05:30"
    )
    # The day after is EST (UTC-5): 09:30 ET == 14:30 UTC.
    after = _trade_zip(tmp_path, "20131104_trade.zip", ["34200000,100000,1,P,1,0"])
    assert read_lean_trades(after, "X", NY, EQ_SCALE)["ts_event"].iloc[0] == _utc_ns(
        "2013-11-04 14:30"
    )
    # Spring forward 2013-03-10: 02:30 does not exist and shifts forward to 03:00 EDT.
    spring = _trade_zip(tmp_path, "20130310_trade.zip", ["9000000,100000,1,P,1,0"])
    assert read_lean_trades(spring, "X", NY, EQ_SCALE)["ts_event"].iloc[0] == _utc_ns(
        "2013-03-10 07:00"
    )
    # UTC data (futures) is taken as is.
    utc = _trade_zip(tmp_path, "20131103_trade.zip", ["5400000,1300.5,2,usa,,0"])
    got = read_lean_trades(utc, "GC", "UTC", 1.0).iloc[0]
    assert got["ts_event"] == _utc_ns("2013-11-03 01:30")
    assert got["price"] == 1300.5


@needs_sample
@pytest.mark.parametrize(
    ("day", "rows", "rows_201402"),
    [("20131007", 39_702, 213), ("20131008", 52_038, 113), ("20131009", 64_712, 219)],
)
def test_gc_front_month(day: str, rows: int, rows_201402: int) -> None:
    path = LEAN / "gc/tick" / f"{day}_trade.zip"
    front = read_lean_trades(path, "GC", "UTC", 1.0)
    explicit = read_lean_trades(path, "GC", "UTC", 1.0, contract="201312")
    # The most traded contract of each day is Dec 2013.
    pd.testing.assert_frame_equal(front, explicit)
    assert len(front) == rows
    assert tuple(front.columns) == TICK_COLUMNS
    assert set(front["exchange"]) == {"usa"}
    assert set(front["condition"]) == {""}
    day_start = pd.Timestamp(day, tz="UTC").value
    assert front["ts_event"].min() >= day_start
    assert front["ts_event"].max() < day_start + 86_400_000_000_000
    # No conditions = regular way; zero-size prints are not trades.
    assert front["volume_eligible"].all()
    assert (front["ohlc_eligible"] == (front["size"] > 0)).all()
    assert len(read_lean_trades(path, "GC", "UTC", 1.0, contract="201402")) == rows_201402


@needs_sample
def test_gc_first_front_month_tick() -> None:
    t = read_lean_trades(LEAN / "gc/tick/20131007_trade.zip", "GC", "UTC", 1.0)
    first = t.iloc[0]  # CSV: 276,1313.7,1,usa,,0
    assert first["ts_event"] == _utc_ns("2013-10-07 00:00:00.276")
    assert first["price"] == 1313.7
    assert first["size"] == 1.0


@pytest.mark.parametrize(
    ("code", "ohlc", "volume"),
    [
        ("1", True, True),  # regular
        ("20000001", True, True),  # regular, trade-through exempt
        ("40", True, True),  # opening prints (NYSE opening auction)
        ("80", True, True),  # closing prints
        ("20200040", True, True),  # cross + opening prints
        ("4800", True, True),  # sold out of sequence: updates high/low in both plans
        ("", True, True),  # no conditions (futures)
        ("20000020", False, True),  # ISO: vendor deviation, volume only
        ("20", False, True),  # ISO without the 611 exemption bit
        ("2000", False, True),  # extended hours / Form T
        ("20002020", False, True),  # extended hours ISO
        ("20100200", False, True),  # average price, derivatively priced
        ("20000200", False, True),  # derivatively priced
        ("20000002", False, True),  # cash
        ("20000004", False, True),  # next day
        ("20000008", False, True),  # seller
        ("40000", False, True),  # stock-option (contingent) trade
        ("2000000", False, True),  # prior reference price
        ("4000000", False, False),  # official open: a report, no new volume
        ("1000000", False, False),  # official close
        ("80000000", False, True),  # odd lot
    ],
)
def test_condition_eligibility(code: str, ohlc: bool, volume: bool) -> None:
    bits = parse_condition_bits(pd.Series([code], dtype=object))
    got_ohlc, got_volume = condition_eligibility(bits)
    assert (bool(got_ohlc[0]), bool(got_volume[0])) == (ohlc, volume)


def test_condition_bits_are_hex() -> None:
    bits = parse_condition_bits(pd.Series(["20004a00", "1", "", "20004A00"], dtype=object))
    assert bits.dtype == np.int64
    assert bits.tolist() == [0x20004A00, 1, 0, 0x20004A00]
    with pytest.raises(ValueError, match="hexadecimal"):
        parse_condition_bits(pd.Series(["12g4"], dtype=object))


@needs_sample
def test_suspicious_prints_are_ineligible() -> None:
    t = read_lean_trades(LEAN / "spy/tick/20131010_trade.zip", "SPY", NY, EQ_SCALE)
    assert len(t) == 460_032
    # The ten rows with suspicious == 1 in the CSV (after-hours 165.59 blocks).
    suspicious_seq = [
        453113,
        455165,
        456501,
        456511,
        456545,
        457005,
        457127,
        457390,
        457557,
        457559,
    ]
    rows = t.set_index("seq").loc[suspicious_seq]
    assert not rows["ohlc_eligible"].any()
    assert not rows["volume_eligible"].any()
    assert (rows["price"] == 165.59).all()
    assert rows.loc[453113, "condition"] == "20002000"
    assert rows.loc[453113, "size"] == 250_629.0


# --- quotes and reference bars ---------------------------------------------------------------


@needs_sample
def test_quotes_one_side_per_row() -> None:
    q = read_lean_quotes(LEAN / "bac/tick/20131007_quote.zip", "BAC", NY, EQ_SCALE)
    assert tuple(q.columns) == QUOTE_COLUMNS
    assert len(q) == 476_855  # no suspicious rows in this file
    for col in ("bid_px", "bid_sz", "ask_px", "ask_sz"):
        assert q[col].dtype == np.float64
    assert q["ts_recv"].isna().all()
    assert (q["seq"].to_numpy() == np.arange(len(q))).all()
    has_bid = q["bid_px"].notna()
    has_ask = q["ask_px"].notna()
    assert int(has_bid.sum()) == 238_427
    assert int(has_ask.sum()) == 238_428
    assert not (has_bid & has_ask).any()
    assert (has_bid == q["bid_sz"].notna()).all()
    # CSV: 14400151,0,0,140200,500,Q,1,0 and 14400554,138400,700,0,0,P,1,0
    first, second = q.iloc[0], q.iloc[1]
    assert first["ts_event"] == _utc_ns("2013-10-07 08:00:00.151")
    assert np.isnan(first["bid_px"])
    assert first["ask_px"] == pytest.approx(14.02)
    assert first["ask_sz"] == 500.0
    assert first["exchange"] == "Q"
    assert second["bid_px"] == pytest.approx(13.84)
    assert second["bid_sz"] == 700.0
    assert np.isnan(second["ask_px"])


def test_quotes_drop_suspicious_keep_seq(tmp_path: Path) -> None:
    path = _trade_zip(
        tmp_path,
        "20131007_quote.zip",
        [
            "34200000,138400,700,0,0,P,1,0",
            "34200001,0,0,139500,100,P,1,1",
            "34200002,0,0,1,9,Q,1,0",
        ],
    )
    q = read_lean_quotes(path, "BAC", NY, EQ_SCALE)
    assert q["seq"].tolist() == [0, 2]
    assert q["ask_px"].iloc[1] == pytest.approx(0.0001)


@needs_sample
def test_reference_bar() -> None:
    bars = read_lean_minute_bars(LEAN / "spy/minute/20131007_trade.zip", "SPY", NY, EQ_SCALE)
    assert tuple(bars.columns) == REFERENCE_BAR_COLUMNS
    assert len(bars) == 828
    assert bars["ts"].dtype == np.int64
    bar = bars.set_index("ts").loc[_utc_ns("2013-10-07 13:30")]
    assert bar["open"] == pytest.approx(167.43)
    assert bar["high"] == pytest.approx(167.52)
    assert bar["low"] == pytest.approx(167.41)
    assert bar["close"] == pytest.approx(167.44)
    assert bar["volume"] == 816_453.0
    first = bars.iloc[0]  # CSV: 14400000,1674100,1674100,1672500,1672700,3197
    assert first["ts"] == _utc_ns("2013-10-07 08:00")
    assert first["open"] == pytest.approx(167.41)
    assert first["volume"] == 3197.0


# --- vendor match ----------------------------------------------------------------------------


def _session_bars(ticks: pd.DataFrame, day: str) -> pd.DataFrame:
    """1-minute bars over 09:30-16:00 ET, built as the pipeline does."""
    start = pd.Timestamp(f"{day} 09:30", tz=NY).value
    end = pd.Timestamp(f"{day} 16:00", tz=NY).value
    t = ticks[(ticks["ts_event"] >= start) & (ticks["ts_event"] < end)]
    t = t.sort_values(["ts_event", "seq"], kind="stable")
    minute = t["ts_event"] // 60_000_000_000 * 60_000_000_000
    px = t.loc[t["ohlc_eligible"], "price"].groupby(minute[t["ohlc_eligible"]])
    ohlc = pd.DataFrame({"open": px.first(), "high": px.max(), "low": px.min(), "close": px.last()})
    vol = t.loc[t["volume_eligible"], "size"].groupby(minute[t["volume_eligible"]]).sum()
    return ohlc.join(vol.rename("volume"), how="outer")


def _match(symbol: str, day: str) -> tuple[float, float, int]:
    ticks = read_lean_trades(LEAN / symbol / "tick" / f"{day}_trade.zip", symbol, NY, EQ_SCALE)
    ref = read_lean_minute_bars(
        LEAN / symbol / "minute" / f"{day}_trade.zip", symbol, NY, EQ_SCALE
    ).set_index("ts")
    start = pd.Timestamp(f"{day} 09:30", tz=NY).value
    end = pd.Timestamp(f"{day} 16:00", tz=NY).value
    ref = ref[(ref.index >= start) & (ref.index < end)]
    ours = _session_bars(ticks, day).reindex(ref.index)
    volume_ok = (ours["volume"] == ref["volume"]).to_numpy()
    ohlc_ok = np.ones(len(ref), dtype=bool)
    for col in ("open", "high", "low", "close"):
        ohlc_ok &= (ours[col].round(4) == ref[col].round(4)).to_numpy()
    return float(volume_ok.mean()), float(ohlc_ok.mean()), len(ref)


@needs_sample
@pytest.mark.parametrize(("symbol", "day"), [("spy", "20131008"), ("bac", "20131009")])
def test_bars_match_vendor(symbol: str, day: str) -> None:
    volume_share, ohlc_share, n_bars = _match(symbol, day)
    assert n_bars == 390
    assert volume_share >= 0.99
    assert ohlc_share >= 0.98


# --- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (["34200000,1674100,100,P,1,0", "34200001,1674100,100,P,1"], "line 2: expected 6 fields"),
        (["34200000,1674100,100,P,1,0,9"], "line 1: expected 6 fields, got 7"),
        (["34200000,abc,100,P,1,0"], "field 'price' is not numeric"),
        (["34200000,,100,P,1,0"], "field 'price' is not numeric"),
        (["34200000,0,100,P,1,0"], r"price must be > 0"),
        (["34200000,-5,100,P,1,0"], r"price must be > 0"),
        (["34200000,1674100,-1,P,1,0"], r"size must be >= 0"),
        (["34200000.5,1674100,1,P,1,0"], "milliseconds since midnight"),
        (["86400000,1674100,1,P,1,0"], "milliseconds since midnight"),
        (["34200000,1674100,1,P,1,2"], "suspicious must be 0 or 1"),
        (["34200000,1674100,1,P,xyz,0"], "not a hexadecimal bit mask"),
    ],
)
def test_malformed_trade_csv(tmp_path: Path, lines: list[str], message: str) -> None:
    path = _trade_zip(tmp_path, "20131007_trade.zip", lines)
    with pytest.raises(ValueError, match=message):
        read_lean_trades(path, "SPY", NY, EQ_SCALE)


def test_empty_files_give_typed_empty_frames(tmp_path: Path) -> None:
    path = tmp_path / "20131007_trade.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("t.csv", "")
    ticks = read_lean_trades(path, "SPY", NY, EQ_SCALE)
    assert tuple(ticks.columns) == TICK_COLUMNS
    assert len(ticks) == 0
    assert ticks["ts_event"].dtype == np.int64
    assert ticks["ohlc_eligible"].dtype == bool
    assert len(read_lean_minute_bars(path, "SPY", NY, EQ_SCALE)) == 0
    quote_path = tmp_path / "20131007_quote.zip"
    with zipfile.ZipFile(quote_path, "w") as zf:
        zf.writestr("q.csv", "")
    quotes = read_lean_quotes(quote_path, "SPY", NY, EQ_SCALE)
    assert tuple(quotes.columns) == QUOTE_COLUMNS
    assert len(quotes) == 0


def test_malformed_bar_and_quote_csv(tmp_path: Path) -> None:
    bars = _trade_zip(tmp_path, "20131007_trade.zip", ["34200000,1,1,0,1,100"])
    with pytest.raises(ValueError, match="low must be > 0"):
        read_lean_minute_bars(bars, "SPY", NY, EQ_SCALE)
    quotes = _trade_zip(tmp_path, "20131008_quote.zip", ["34200000,1,1,1,1,P,1"])
    with pytest.raises(ValueError, match="expected 8 fields, got 7"):
        read_lean_quotes(quotes, "SPY", NY, EQ_SCALE)


def test_missing_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_lean_trades(tmp_path / "20131007_trade.zip", "SPY", NY, EQ_SCALE)
    with pytest.raises(FileNotFoundError):
        read_lean_quotes(tmp_path / "20131007_quote.zip", "SPY", NY, EQ_SCALE)
    with pytest.raises(FileNotFoundError):
        read_lean_minute_bars(tmp_path / "20131007_trade.zip", "SPY", NY, EQ_SCALE)
    not_zip = tmp_path / "20131007_trade.zip"
    not_zip.write_text("34200000,1674100,100,P,1,0\n")
    with pytest.raises(ValueError, match="not a valid zip"):
        read_lean_trades(not_zip, "SPY", NY, EQ_SCALE)
    no_date = _trade_zip(tmp_path, "trade.zip", ["34200000,1674100,100,P,1,0"])
    with pytest.raises(ValueError, match="YYYYMMDD"):
        read_lean_trades(no_date, "SPY", NY, EQ_SCALE)


def test_contract_selection_errors(tmp_path: Path) -> None:
    path = tmp_path / "20131007_trade.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("20131007_gc_tick_trade_201312.csv", "1,1300.0,5,usa,,0\n")
        zf.writestr("20131007_gc_tick_trade_201402.csv", "1,1301.0,2,usa,,0\n2,1301.0,2,usa,,0\n")
    assert read_lean_trades(path, "GC", "UTC", 1.0)["price"].tolist() == [1300.0]
    assert len(read_lean_trades(path, "GC", "UTC", 1.0, contract="201402")) == 2
    with pytest.raises(ValueError, match="no contract '201406'"):
        read_lean_trades(path, "GC", "UTC", 1.0, contract="201406")
    single = _trade_zip(tmp_path, "20131008_trade.zip", ["34200000,1674100,100,P,1,0"])
    with pytest.raises(ValueError, match="not per-contract"):
        read_lean_trades(single, "SPY", NY, EQ_SCALE, contract="201312")
