"""Tests of the Databento MBO reader against the real CME ESH4 sample and tiny synthetic files.

Expected numbers for the real file were computed once with an independent script (raw record
attributes, a brute-force per-order book aggregated at each checkpoint) and are hard-coded.
"""

from __future__ import annotations

import os
from pathlib import Path

import databento_dbn as dbn
import numpy as np
import pandas as pd
import pytest
import zstandard

from fbe_pipeline.market.frames import BOOK_COLUMNS, BOOK_LEVELS, TICK_COLUMNS
from fbe_pipeline.market.sources.databento import SEQ_STRIDE, read_databento_mbo

DATA_DIR = Path(
    os.environ.get("FBE_SAMPLE_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)
MBO_FILE = DATA_DIR / "databento" / "esh4-glbx-mdp3-20231225.mbo.dbn.zst"

needs_sample = pytest.mark.skipif(
    not MBO_FILE.is_file(),
    reason=f"Databento sample not found at {MBO_FILE}; set FBE_SAMPLE_DATA to shared/data",
)

OPEN_23UTC = pd.Timestamp("2023-12-25 23:00", tz="UTC").value
END_24UTC = pd.Timestamp("2023-12-26 00:00", tz="UTC").value
PX = 1_000_000_000  # Databento fixed-point scale


@pytest.fixture(scope="module")
def esh4() -> tuple[pd.DataFrame, pd.DataFrame]:
    return read_databento_mbo(MBO_FILE, "ESH4")


# --- real data: ticks ------------------------------------------------------------------------


@needs_sample
def test_tick_layout(esh4: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    ticks, _ = esh4
    assert tuple(ticks.columns) == TICK_COLUMNS
    assert ticks["ts_event"].dtype == np.int64
    assert ticks["ts_recv"].dtype == pd.Int64Dtype()
    assert ticks["price"].dtype == np.float64
    assert ticks["size"].dtype == np.float64
    assert ticks["seq"].dtype == np.int64
    assert ticks["ohlc_eligible"].dtype == bool
    assert ticks["volume_eligible"].dtype == bool
    assert (ticks["symbol"] == "ESH4").all()
    assert (ticks["source"] == "databento").all()
    assert (ticks["exchange"] == "GLBX").all()
    assert (ticks["condition"] == "0").all()  # every T record has flags 0 in this file
    assert ticks["ohlc_eligible"].all()
    assert ticks["volume_eligible"].all()
    assert list(ticks.index) == list(range(len(ticks)))


@needs_sample
def test_trade_counts_volume_and_sides(esh4: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    ticks, _ = esh4
    # One row per T record; the 6,371 F records (10,201 contracts) are not rows.
    assert len(ticks) == 2973
    assert ticks["size"].sum() == 9892.0
    assert ticks["side"].value_counts().to_dict() == {"buy": 1542, "sell": 1430, "unknown": 1}
    assert ticks.groupby("side")["size"].sum().to_dict() == {
        "buy": 5322.0,
        "sell": 4526.0,
        "unknown": 44.0,
    }
    # The only trade without an aggressor is the opening-auction uncross at 23:00:00.000.
    unknown = ticks[ticks["side"] == "unknown"]
    assert unknown["ts_event"].tolist() == [OPEN_23UTC]
    assert (ticks.loc[ticks["ts_event"] > OPEN_23UTC, "side"].isin(["buy", "sell"])).all()


@needs_sample
def test_trade_values(esh4: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    ticks, _ = esh4
    assert ticks["ts_event"].min() >= OPEN_23UTC
    assert ticks["ts_event"].max() < END_24UTC
    assert ticks["ts_recv"].notna().all()
    assert (ticks["ts_recv"] >= ticks["ts_event"]).all()

    first = ticks.iloc[0]
    assert (first["ts_event"], first["price"], first["size"]) == (OPEN_23UTC, 4800.25, 44.0)
    assert first["ts_recv"] == 1703545200105900877
    second = ticks.iloc[1]
    assert (second["ts_event"], second["price"], second["size"], second["side"]) == (
        1703545200085275419,
        4800.25,
        5.0,
        "buy",
    )
    last = ticks.iloc[-1]
    assert (last["ts_event"], last["price"], last["size"], last["side"]) == (
        1703548796799167221,
        4810.0,
        1.0,
        "sell",
    )
    assert ticks["price"].max() == 4811.75
    assert ticks["price"].min() == 4800.25
    # ES trades on a 0.25 index-point grid; the 1e-9 fixed-point conversion must be exact.
    assert (ticks["price"] * 4 == np.round(ticks["price"] * 4)).all()


@needs_sample
def test_tick_seq_unique_and_sorted(esh4: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    ticks, _ = esh4
    assert ticks["seq"].is_unique  # 90 T records share their venue sequence with another T
    assert ticks["seq"].iloc[0] == 6000 * SEQ_STRIDE
    ordered = ticks.sort_values(["ts_event", "seq"], kind="stable", ignore_index=True)
    pd.testing.assert_frame_equal(ticks, ordered)


# --- real data: books -------------------------------------------------------------------------


def _px(books: pd.DataFrame, side: str) -> np.ndarray:
    return books[[f"{side}_px_{i}" for i in range(1, BOOK_LEVELS + 1)]].to_numpy()


def _sz(books: pd.DataFrame, side: str) -> np.ndarray:
    return books[[f"{side}_sz_{i}" for i in range(1, BOOK_LEVELS + 1)]].to_numpy()


@needs_sample
def test_book_layout_and_count(esh4: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    _, books = esh4
    assert tuple(books.columns) == BOOK_COLUMNS
    assert books["ts_event"].dtype == np.int64
    assert books["ts_recv"].dtype == pd.Int64Dtype()
    assert books["seq"].dtype == np.int64
    for col in BOOK_COLUMNS[3:-2]:
        assert books[col].dtype == np.float64, col
    assert (books["symbol"] == "ESH4").all()
    assert (books["source"] == "databento").all()
    assert len(books) == 34499
    assert books["seq"].is_unique
    ordered = books.sort_values(["ts_event", "seq"], kind="stable", ignore_index=True)
    pd.testing.assert_frame_equal(books, ordered)
    # The initial snapshot (F_SNAPSHOT, no F_LAST) emits nothing; the first row is the first
    # live event, the pre-open at 22:00 UTC.
    assert books["ts_event"].iloc[0] == 1703541600180087113
    assert books["ts_event"].max() < END_24UTC


@needs_sample
def test_book_never_repeats_a_snapshot(esh4: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    _, books = esh4
    levels = books[list(BOOK_COLUMNS[3:-2])].fillna(-1.0).to_numpy()
    assert (np.diff(levels, axis=0) != 0).any(axis=1).all()


@needs_sample
def test_book_levels_ordered_and_sized(esh4: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    _, books = esh4
    for side, sign in (("bid", -1.0), ("ask", 1.0)):
        px, sz = _px(books, side), _sz(books, side)
        present = ~np.isnan(px)
        assert (present == ~np.isnan(sz)).all()
        assert (sz[present] > 0).all()
        # empty levels only at the far end
        assert (present[:, :-1] | ~present[:, 1:]).all()
        both = present[:, :-1] & present[:, 1:]
        step = np.diff(px, axis=1)
        assert (sign * step[both] > 0).all()
        assert (np.round(px[present] * 4) == px[present] * 4).all()


@needs_sample
def test_book_not_crossed_after_the_open(esh4: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    _, books = esh4
    live = books[books["ts_event"] >= OPEN_23UTC]
    assert len(live) == 34439
    assert (live["bid_px_1"] < live["ask_px_1"]).all()
    # Real quirk: during the CME pre-open (22:00-23:00 UTC) orders may cross without trading
    # until the opening auction uncrosses them, so the rebuilt book is crossed there.
    pre = books[books["ts_event"] < OPEN_23UTC]
    assert len(pre) == 60
    assert int((pre["bid_px_1"] > pre["ask_px_1"]).sum()) == 59


@needs_sample
def test_book_hand_checked_snapshot(esh4: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    _, books = esh4
    # Book in force at 23:30:00 UTC, i.e. after the last F_LAST record at or before it
    # (seq 37948, ts_event 23:29:59.181849127); checked against a brute-force sum of the
    # resting orders (e.g. 18 orders for 49 lots at 4810.25 bid, 9 orders for 20 at 4810.50).
    cut = pd.Timestamp("2023-12-25 23:30", tz="UTC").value
    row = books[books["ts_event"] <= cut].iloc[-1]
    assert row["ts_event"] == 1703546999181849127
    assert row["ts_recv"] == 1703546999181939892
    assert row["seq"] == 37948 * SEQ_STRIDE
    assert _px(row.to_frame().T, "bid").ravel().tolist() == [
        4810.25,
        4810.0,
        4809.75,
        4809.5,
        4809.25,
    ]
    assert _sz(row.to_frame().T, "bid").ravel().tolist() == [49.0, 51.0, 45.0, 62.0, 53.0]
    assert _px(row.to_frame().T, "ask").ravel().tolist() == [
        4810.5,
        4810.75,
        4811.0,
        4811.25,
        4811.5,
    ]
    assert _sz(row.to_frame().T, "ask").ravel().tolist() == [20.0, 149.0, 133.0, 38.0, 46.0]


@needs_sample
def test_aggressor_side_matches_book(esh4: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    ticks, books = esh4
    # Confirms the side convention on the data: a buyer lifts the offer, a seller hits the bid.
    prior = books.iloc[books["seq"].searchsorted(ticks["seq"].to_numpy()) - 1]
    buy = (ticks["side"] == "buy").to_numpy()
    sell = (ticks["side"] == "sell").to_numpy()
    assert (ticks["price"].to_numpy()[buy] >= prior["ask_px_1"].to_numpy()[buy]).all()
    assert (ticks["price"].to_numpy()[sell] <= prior["bid_px_1"].to_numpy()[sell]).all()


@needs_sample
def test_symbol_argument_is_written(esh4: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    ticks, books = read_databento_mbo(str(MBO_FILE), "ES_FUT")
    assert (ticks["symbol"] == "ES_FUT").all()
    assert (books["symbol"] == "ES_FUT").all()
    assert len(ticks) == len(esh4[0])
    assert len(books) == len(esh4[1])


# --- synthetic files: book semantics and errors -------------------------------------------------


def _msg(
    action: str,
    side: str,
    order_id: int,
    price: float | None,
    size: int,
    ts: int,
    sequence: int,
    flags: int = dbn.F_LAST,
) -> dbn.MBOMsg:
    return dbn.MBOMsg(
        publisher_id=1,
        instrument_id=7,
        ts_event=ts,
        order_id=order_id,
        price=dbn.UNDEF_PRICE if price is None else round(price * PX),
        size=size,
        action=dbn.Action.from_str(action),
        side=dbn.Side.from_str(side),
        ts_recv=ts + 5,
        flags=flags,
        sequence=sequence,
    )


def _write(path: Path, records: list[dbn.MBOMsg], schema: str = "mbo") -> Path:
    meta = dbn.Metadata(
        dataset="GLBX.MDP3",
        schema=dbn.Schema.from_str(schema),
        start=0,
        stype_in=dbn.SType.from_str("raw_symbol"),
        stype_out=dbn.SType.from_str("instrument_id"),
        symbols=["X"],
    )
    raw = bytes(meta) + b"".join(bytes(r) for r in records)
    path.write_bytes(zstandard.ZstdCompressor().compress(raw))
    return path


def test_synthetic_book_and_trades(tmp_path: Path) -> None:
    a, b, n = "A", "B", "N"
    add, cancel, modify, trade, fill, clear = "A", "C", "M", "T", "F", "R"
    records = [
        _msg(add, b, 1, 100.0, 3, 10, 1, flags=0),  # no F_LAST: no row yet
        _msg(add, b, 2, 100.0, 2, 10, 1),  # -> row 1: bid 100 x 5
        _msg(add, a, 3, 101.0, 4, 20, 2),  # -> row 2
        _msg(trade, a, 0, 100.0, 2, 30, 3, flags=0),  # sell aggressor
        _msg(fill, b, 1, 100.0, 2, 30, 3, flags=0),
        _msg(cancel, b, 1, 100.0, 2, 30, 3),  # partial cancel -> row 3: bid 100 x 3
        _msg(modify, b, 2, 99.5, 2, 40, 4),  # price change -> row 4
        _msg(modify, a, 9, 101.25, 1, 50, 5),  # unknown order: add -> row 5
        _msg(trade, b, 0, 101.0, 1, 60, 6, flags=0),  # buy aggressor, same sequence twice
        _msg(trade, b, 0, 101.25, 1, 60, 6, flags=0),
        _msg(trade, n, 0, None, 1, 60, 6, flags=0),  # undefined price: dropped
        _msg(trade, n, 0, 101.0, 0, 60, 6),  # size 0: dropped; F_LAST, book unchanged: no row
        _msg(clear, n, 0, None, 0, 70, 7),  # -> row 6: empty book
    ]
    ticks, books = read_databento_mbo(_write(tmp_path / "s.mbo.dbn.zst", records), "SYN")

    assert ticks[["ts_event", "price", "size", "side", "seq"]].values.tolist() == [
        [30, 100.0, 2.0, "sell", 3 * SEQ_STRIDE],
        [60, 101.0, 1.0, "buy", 6 * SEQ_STRIDE],
        [60, 101.25, 1.0, "buy", 6 * SEQ_STRIDE + 1],
    ]
    assert ticks["ts_recv"].tolist() == [35, 65, 65]

    assert books["ts_event"].tolist() == [10, 20, 30, 40, 50, 70]
    assert books["seq"].tolist() == [
        1 * SEQ_STRIDE + 1,
        2 * SEQ_STRIDE,
        3 * SEQ_STRIDE + 2,
        4 * SEQ_STRIDE,
        5 * SEQ_STRIDE,
        7 * SEQ_STRIDE,
    ]
    top = books[["bid_px_1", "bid_sz_1", "bid_px_2", "bid_sz_2", "ask_px_1", "ask_sz_1"]]
    top = top.fillna(0.0)
    assert top.values.tolist() == [
        [100.0, 5.0, 0.0, 0.0, 0.0, 0.0],
        [100.0, 5.0, 0.0, 0.0, 101.0, 4.0],
        [100.0, 3.0, 0.0, 0.0, 101.0, 4.0],
        [100.0, 1.0, 99.5, 2.0, 101.0, 4.0],
        [100.0, 1.0, 99.5, 2.0, 101.0, 4.0],
        [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
    ]
    assert books.loc[4, "ask_px_2"] == 101.25
    assert books.loc[4, "ask_sz_2"] == 1.0
    assert books.iloc[-1, 3:-2].isna().all()


def test_snapshot_records_only_seed_the_book(tmp_path: Path) -> None:
    snap = dbn.F_SNAPSHOT | dbn.F_BAD_TS_RECV
    records = [
        _msg("A", "B", 1, 100.0, 3, 1, 1, flags=snap | dbn.F_LAST),
        _msg("A", "A", 2, 101.0, 1, 90, 9),
    ]
    _, books = read_databento_mbo(_write(tmp_path / "s.dbn.zst", records), "SYN")
    assert books["ts_event"].tolist() == [90]
    assert books[["bid_px_1", "bid_sz_1", "ask_px_1"]].to_numpy().tolist() == [[100.0, 3.0, 101.0]]


def test_missing_file() -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        read_databento_mbo(Path("/nonexistent/dir/x.mbo.dbn.zst"), "X")


def test_wrong_schema(tmp_path: Path) -> None:
    path = _write(tmp_path / "t.trades.dbn.zst", [], schema="trades")
    with pytest.raises(ValueError, match="expected 'mbo'"):
        read_databento_mbo(path, "X")


def test_not_dbn(tmp_path: Path) -> None:
    path = tmp_path / "junk.dbn.zst"
    path.write_bytes(zstandard.ZstdCompressor().compress(b"symbol,price\nES,1\n"))
    with pytest.raises(ValueError, match="not a DBN file"):
        read_databento_mbo(path, "X")


def test_truncated_zstd(tmp_path: Path) -> None:
    records = [_msg("A", "B", i, 100.0, 1, i, i) for i in range(1, 500)]
    full = _write(tmp_path / "full.dbn.zst", records).read_bytes()
    cut = tmp_path / "cut.dbn.zst"
    cut.write_bytes(full[: len(full) // 2])
    with pytest.raises(ValueError, match="truncated"):
        read_databento_mbo(cut, "X")
