"""Tests of ``load_file``: real vendor files into the raw store, split by trading date (SPEC §2).

Expected row counts are computed independently from the raw vendor files (zipfile / csv), not
through the readers under test.
"""

from __future__ import annotations

import csv
import zipfile
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fbe_pipeline.market.ingest import load_file
from fbe_pipeline.market.instruments import get_instrument
from fbe_pipeline.storage.store import LocalRawStore

NS_PER_MS = 1_000_000


@pytest.fixture(autouse=True)
def _isolated_home(fbe_home: Path) -> Path:
    # get_instrument merges $FBE_HOME/instruments.yaml; keep a developer's registrations out.
    return fbe_home


@pytest.fixture
def store(tmp_path: Path) -> LocalRawStore:
    return LocalRawStore(tmp_path / "raw")


def _need(path: Path) -> Path:
    if not path.is_file():
        pytest.skip(f"sample file missing: {path}")
    return path


def _zip_rows(path: Path, member_suffix: str = "") -> list[list[str]]:
    with zipfile.ZipFile(path) as zf:
        members = [n for n in zf.namelist() if n.endswith(member_suffix)]
        assert len(members) == 1, members
        text = zf.read(members[0]).decode()
    return [line.split(",") for line in text.splitlines() if line.strip()]


def _utc_ns(text: str) -> int:
    return int(pd.Timestamp(text, tz="UTC").value)


# --- Lean equities ---------------------------------------------------------------------------


def test_spy_lean_trades_day_becomes_one_object_with_every_trade(
    store: LocalRawStore, sample_data: Path
) -> None:
    path = _need(sample_data / "lean/spy/tick/20131007_trade.zip")
    raw = _zip_rows(path)

    report = load_file(store, "lean-trades", path, get_instrument("SPY"))

    assert len(report.written) == 1
    [key] = report.written
    assert key.startswith("ticks/SPY/2013/10/07/20131007_trade-")
    assert key.endswith(".parquet")
    assert report.skipped == []
    assert report.rows == len(raw) == 250_601
    [entry] = store.manifest()
    assert entry.rows == len(raw)
    assert entry.source_file == "20131007_trade.zip"
    frame = store.read_partition("ticks", "SPY", date(2013, 10, 7))
    assert frame is not None
    assert len(frame) == len(raw)
    assert frame["size"].sum() == sum(int(r[2]) for r in raw)
    assert frame["price"].iloc[0] == pytest.approx(int(raw[0][1]) / 10_000)  # 167.41
    assert store.partitions() == [("SPY", date(2013, 10, 7))]


def test_second_load_of_same_file_stores_nothing_new(
    store: LocalRawStore, sample_data: Path
) -> None:
    path = _need(sample_data / "lean/spy/tick/20131007_trade.zip")
    first = load_file(store, "lean-trades", path, get_instrument("SPY"))
    manifest_bytes = (store.root / "manifest.jsonl").read_bytes()
    files_before = sorted(p for p in store.root.rglob("*") if p.is_file())

    second = load_file(store, "lean-trades", path, get_instrument("SPY"))

    assert second.written == []
    assert second.skipped == first.written
    assert (store.root / "manifest.jsonl").read_bytes() == manifest_bytes
    assert sorted(p for p in store.root.rglob("*") if p.is_file()) == files_before


# --- Lean futures: the CME Globex session opens 17:00 CT the evening before ------------------


def test_gc_day_file_splits_into_two_trading_dates_at_the_globex_open(
    store: LocalRawStore, sample_data: Path
) -> None:
    path = _need(sample_data / "lean/gc/tick/20131007_trade.zip")
    # Front month = the contract with the most traded size in the zip (201312 here). Lean
    # futures times are ms since UTC midnight; 17:00 CDT = 22:00 UTC opens the 10-08 session.
    raw = _zip_rows(path, "_201312.csv")
    globex_open_ms = 22 * 3_600_000
    expected_07 = sum(int(r[0]) < globex_open_ms for r in raw)
    expected_08 = len(raw) - expected_07

    report = load_file(store, "lean-trades", path, get_instrument("GC"))

    assert sorted(k.split("/2013/")[1][:5] for k in report.written) == ["10/07", "10/08"]
    by_day = {e.key.split("/")[4]: e.rows for e in store.manifest()}
    assert by_day == {"07": expected_07, "08": expected_08}
    assert (expected_07, expected_08) == (39_306, 396)
    assert report.rows == len(raw)
    late = store.read_partition("ticks", "GC", date(2013, 10, 8))
    early = store.read_partition("ticks", "GC", date(2013, 10, 7))
    assert late is not None
    assert early is not None
    assert late["ts_event"].min() >= _utc_ns("2013-10-07 22:00")
    assert early["ts_event"].max() < _utc_ns("2013-10-07 22:00")
    assert store.partitions() == [("GC", date(2013, 10, 7)), ("GC", date(2013, 10, 8))]


# --- Tardis ----------------------------------------------------------------------------------


def test_tardis_btcusdt_trades_land_on_utc_date_with_positive_receive_drift(
    store: LocalRawStore, sample_data: Path
) -> None:
    files = sorted((sample_data / "tardis").glob("*BTCUSDT_trades_2020-02-22.csv"))
    if not files:
        pytest.skip("Tardis trades sample missing")
    path = files[0]
    with path.open(newline="") as fh:
        n_raw = sum(1 for _ in csv.DictReader(fh))

    report = load_file(store, "tardis-trades", path, get_instrument("BTCUSDT"))

    assert len(report.written) == 1
    assert report.written[0].startswith("ticks/BTCUSDT/2020/02/22/")
    frame = store.read_partition("ticks", "BTCUSDT", date(2020, 2, 22))
    assert frame is not None
    assert len(frame) == n_raw == 9_999
    assert not frame["ts_recv"].isna().any()
    drift_ms = (frame["ts_recv"].astype("int64") - frame["ts_event"]).to_numpy() / NS_PER_MS
    assert (drift_ms > 0).mean() > 0.99
    # A real receive delay: ~0.1 s, not an artefact of unit conversion (µs -> ns).
    assert 50 < float(np.median(drift_ms)) < 1_000
    assert set(frame["side"]) == {"buy", "sell"}


# --- Databento MBO -----------------------------------------------------------------------------


def test_databento_es_ticks_land_on_trading_date_after_christmas(
    store: LocalRawStore, sample_data: Path
) -> None:
    path = _need(sample_data / "databento/esh4-glbx-mdp3-20231225.mbo.dbn.zst")

    report = load_file(store, "databento-mbo", path, get_instrument("ES"))

    tick_keys = [k for k in report.written if k.startswith("ticks/")]
    assert len(tick_keys) == 1
    assert tick_keys[0].startswith("ticks/ES/2023/12/26/")
    assert [p for p in store.partitions() if p[0] == "ES"] == [("ES", date(2023, 12, 26))]
    frame = store.read_partition("ticks", "ES", date(2023, 12, 26))
    assert frame is not None
    assert len(frame) > 1_000
    # Trades start at the Globex open for 12-26: 17:00 CT on 12-25 = 23:00 UTC.
    assert frame["ts_event"].min() >= _utc_ns("2023-12-25 23:00")
    assert frame["ts_event"].max() < _utc_ns("2023-12-26 00:00")
    assert any(k.startswith("books/ES/") for k in report.written)


# --- malformed generic files -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("timestamp,size\n2013-10-07T14:00:00Z,5\n", "missing required columns"),
        (
            "timestamp,price,size\n2013-10-07T14:00:00Z,100.5,5\n2013-10-07T14:00:01Z,-1,5\n",
            "non-positive price",
        ),
        ("timestamp,price,size\n2013-10-07T14:00:00Z,100.5,-5\n", "negative"),
        ("timestamp,price,size\nyesterday,100.5,5\n", "timestamp"),
    ],
    ids=["missing-price-column", "negative-price", "negative-size", "bad-timestamp"],
)
def test_malformed_csv_raises_value_error_naming_the_file_and_writes_nothing(
    store: LocalRawStore, tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "broken_trades.csv"
    path.write_text(content)

    with pytest.raises(ValueError, match=message) as info:
        load_file(store, "csv", path, get_instrument("SPY"))

    assert "broken_trades.csv" in str(info.value)
    assert store.manifest() == []
    assert not store.root.exists() or not any(store.root.rglob("*"))


def test_good_generic_csv_is_split_by_trading_date_with_its_columns(
    store: LocalRawStore, tmp_path: Path
) -> None:
    path = tmp_path / "trades.csv"
    path.write_text(
        "timestamp,price,size,side,ts_recv\n"
        "2013-10-07T15:00:00.5-04:00,167.0,10,sell,2013-10-07T19:00:00.6Z\n"
        "2013-10-07T14:00:00Z,166.5,5,buy,2013-10-07T14:00:00.1Z\n"
        "2013-10-08T14:00:00Z,165.0,1,unknown,2013-10-08T14:00:00.2Z\n"
    )

    report = load_file(store, "csv", path, get_instrument("SPY"))

    assert report.rows == 3
    assert len(report.written) == 2
    day1 = store.read_partition("ticks", "SPY", date(2013, 10, 7))
    assert day1 is not None
    assert day1["price"].tolist() == [166.5, 167.0]  # ordered by ts_event
    assert day1["side"].tolist() == ["buy", "sell"]
    assert day1["ts_event"].tolist() == [
        _utc_ns("2013-10-07 14:00"),
        _utc_ns("2013-10-07 19:00:00.5"),
    ]
    drift_ms = (day1["ts_recv"].astype("int64") - day1["ts_event"]) / NS_PER_MS
    assert drift_ms.tolist() == [100.0, 100.0]
    day2 = store.read_partition("ticks", "SPY", date(2013, 10, 8))
    assert day2 is not None
    assert day2["price"].tolist() == [165.0]


def test_csv_timestamp_without_zone_is_rejected(store: LocalRawStore, tmp_path: Path) -> None:
    path = tmp_path / "naive.csv"
    path.write_text("timestamp,price,size\n2013-10-07T10:00:00,167.0,1\n")
    with pytest.raises(ValueError, match=r"naive\.csv"):
        load_file(store, "csv", path, get_instrument("SPY"))
    assert store.manifest() == []


def test_unknown_format_raises_value_error_listing_formats(
    store: LocalRawStore, tmp_path: Path
) -> None:
    path = tmp_path / "x.csv"
    path.write_text("timestamp,price,size\n")
    with pytest.raises(ValueError, match=r"unknown format 'xlsx'.*lean-trades"):
        load_file(store, "xlsx", path, get_instrument("SPY"))
    assert store.manifest() == []
