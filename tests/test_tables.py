"""The warehouse: per-session Parquet files typed by the contracts, replaced atomically, read
back exactly, queried through DuckDB views, on local disk and on S3 (moto server)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import boto3
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fbe_pipeline.market.instruments import get_instrument
from fbe_pipeline.market.sources.lean import read_lean_trades
from fbe_pipeline.pipeline import session_bars, session_ticks
from fbe_pipeline.storage.tables import Warehouse, arrow_schema
from fbe_pipeline.storage.warehouse import open_tables, partition_summary, warehouse_from_env

SPY = get_instrument("SPY")
DAYS = (date(2013, 10, 7), date(2013, 10, 8))


@pytest.fixture(scope="module")
def spy_bars(sample_data: Path) -> pd.DataFrame:
    """SPY's real 1-minute bars of two sessions (780 rows), as the pipeline writes them."""
    frames = []
    for day in DAYS:
        raw = read_lean_trades(
            sample_data / f"lean/spy/tick/{day:%Y%m%d}_trade.zip", "SPY", SPY.tz, 10_000.0
        )
        ticks, _ = session_ticks(raw, None, SPY, day)
        frames.append(session_bars(ticks, SPY, day))
    return pd.concat(frames, ignore_index=True)


def test_real_bars_round_trip_exactly_one_file_per_session(
    tmp_path: Path, spy_bars: pd.DataFrame
) -> None:
    warehouse = Warehouse.local(tmp_path)
    warehouse.write("bars_1m", spy_bars, "SPY", list(DAYS))
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))
    assert [f for f in files if f.endswith(".parquet")] == [
        "bars_1m/SPY/2013-10-07.parquet",
        "bars_1m/SPY/2013-10-08.parquet",
    ]
    assert not [f for f in files if f.endswith(".tmp")]
    back = warehouse.read("bars_1m", "SPY", list(DAYS))
    pd.testing.assert_frame_equal(back, spy_bars.reset_index(drop=True))
    assert str(back["ts"].dtype) == "datetime64[ns, UTC]"
    one = warehouse.read("bars_1m", "SPY", [DAYS[1]])
    assert len(one) == 390 and set(one["trading_date"].dt.date) == {DAYS[1]}
    assert warehouse.read("bars_1m", "BAC", list(DAYS)).empty
    closes = warehouse.read("bars_1m", "SPY", list(DAYS), columns=["ts", "close"])
    assert list(closes.columns) == ["ts", "close"]
    pd.testing.assert_frame_equal(closes, spy_bars[["ts", "close"]].reset_index(drop=True))


def test_a_session_written_again_with_no_rows_is_emptied(
    tmp_path: Path, spy_bars: pd.DataFrame
) -> None:
    warehouse = Warehouse.local(tmp_path)
    warehouse.write("bars_1m", spy_bars, "SPY", list(DAYS))
    second = spy_bars.loc[spy_bars["trading_date"].dt.date == DAYS[1]]
    warehouse.write("bars_1m", second.iloc[0:0], "SPY", [DAYS[1]])
    back = warehouse.read("bars_1m", "SPY", list(DAYS))
    assert len(back) == 390 and set(back["trading_date"].dt.date) == {DAYS[0]}
    with warehouse.query() as con:
        assert con.execute("select count(*) from bars_1m").fetchone() == (390,)


def test_rows_outside_the_sessions_written_are_refused_and_nothing_changes(
    tmp_path: Path, spy_bars: pd.DataFrame
) -> None:
    warehouse = Warehouse.local(tmp_path)
    first = spy_bars.loc[spy_bars["trading_date"].dt.date == DAYS[0]]
    warehouse.write("bars_1m", first, "SPY", [DAYS[0]])
    before = (tmp_path / "bars_1m/SPY/2013-10-07.parquet").read_bytes()
    with pytest.raises(ValueError, match="dated 2013-10-08 are outside the sessions"):
        warehouse.write("bars_1m", spy_bars, "SPY", [DAYS[0]])
    assert (tmp_path / "bars_1m/SPY/2013-10-07.parquet").read_bytes() == before
    assert not (tmp_path / "bars_1m/SPY/2013-10-08.parquet").exists()


def test_a_frame_that_breaks_its_contract_is_refused(tmp_path: Path) -> None:
    warehouse = Warehouse.local(tmp_path)
    bad = pd.DataFrame(
        {"symbol": ["SPY"], "trading_date": [pd.Timestamp("2013-10-07")], "open": ["high"]}
    )
    with pytest.raises(ValueError, match="does not fit the contract"):
        warehouse.write("bars_1m", bad, "SPY", [DAYS[0]])
    assert not list(tmp_path.rglob("*.parquet"))
    with pytest.raises(KeyError):
        warehouse.write("no_such_table", bad, "SPY", [DAYS[0]])


def test_a_file_from_before_a_contract_column_reads_that_column_as_null(
    tmp_path: Path,
) -> None:
    """A store written before ``scores.unavailable`` existed keeps working."""
    schema = arrow_schema("scores")
    old = schema.remove(schema.get_field_index("unavailable"))
    table = pa.Table.from_pylist(
        [
            {
                "symbol": "SPY",
                "trading_date": pd.Timestamp("2013-10-07"),
                "ts": pd.Timestamp("2013-10-07 13:30", tz="UTC"),
                "poke": "up",
                "score": 55.0,
                "c_wick": True,
                "c_vol": True,
                "c_poke": False,
                "c_book_churn": False,
                "c_delta": True,
                "config_version": "v1",
            }
        ],
        schema=old,
    )
    (tmp_path / "scores/SPY").mkdir(parents=True)
    pq.write_table(table, tmp_path / "scores/SPY/2013-10-07.parquet")
    warehouse = Warehouse.local(tmp_path)
    back = warehouse.read("scores", "SPY", [DAYS[0]])
    assert list(back.columns) == schema.names
    assert back.loc[0, "score"] == 55.0 and back["unavailable"].isna().all()
    with warehouse.query() as con:
        assert con.execute("select score, unavailable from scores").fetchall() == [(55.0, None)]


def test_views_give_every_contract_table_typed_even_when_empty(
    tmp_path: Path, spy_bars: pd.DataFrame
) -> None:
    warehouse = Warehouse.local(tmp_path)
    assert warehouse.tables() == set()
    warehouse.write("bars_1m", spy_bars, "SPY", list(DAYS))
    assert warehouse.tables() == {"bars_1m"}
    with warehouse.query() as con:
        assert con.execute("select count(*) from signals").fetchone() == (0,)
        kinds = dict(
            con.execute("select column_name, column_type from (describe bars_1m)").fetchall()
        )
        assert kinds["ts"] == "TIMESTAMP WITH TIME ZONE" and kinds["volume"] == "DOUBLE"
        first = con.execute("select ts from bars_1m order by ts limit 1").df()
    assert first.loc[0, "ts"] == pd.Timestamp("2013-10-07 13:30", tz="UTC")
    rows = partition_summary(warehouse)
    assert [(r["symbol"], r["date"], r["bars"], r["ticks"]) for r in rows] == [
        ("SPY", "2013-10-07", 390, 0),
        ("SPY", "2013-10-08", 390, 0),
    ]


def test_the_s3_warehouse_holds_the_same_rows_as_the_local_one(
    tmp_path: Path,
    spy_bars: pd.DataFrame,
    s3_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FBE_WAREHOUSE_BACKEND", "s3")
    boto3.client("s3", endpoint_url=s3_env["FBE_S3_ENDPOINT_URL"]).create_bucket(
        Bucket=s3_env["FBE_S3_BUCKET"]
    )
    remote = warehouse_from_env(tmp_path)
    assert remote.describe() == f"s3://{s3_env['FBE_S3_BUCKET']}/warehouse/"
    remote.write("bars_1m", spy_bars, "SPY", list(DAYS))
    local = Warehouse.local(tmp_path / "local")
    local.write("bars_1m", spy_bars, "SPY", list(DAYS))
    assert not (tmp_path / "warehouse").exists()
    pd.testing.assert_frame_equal(
        remote.read("bars_1m", "SPY", list(DAYS)), local.read("bars_1m", "SPY", list(DAYS))
    )
    frames = []
    for source in (tmp_path, local):
        with open_tables(source) as con:
            frames.append(con.execute("select * from bars_1m order by all").df())
    pd.testing.assert_frame_equal(frames[0], frames[1])
    assert len(frames[0]) == 780


def test_an_unknown_backend_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FBE_WAREHOUSE_BACKEND", "hdfs")
    with pytest.raises(ValueError, match="unknown FBE_WAREHOUSE_BACKEND 'hdfs'"):
        warehouse_from_env(tmp_path)
    monkeypatch.setenv("FBE_WAREHOUSE_BACKEND", "s3")
    monkeypatch.delenv("FBE_S3_BUCKET", raising=False)
    monkeypatch.delenv("FBE_WAREHOUSE_BUCKET", raising=False)
    with pytest.raises(ValueError, match="needs FBE_WAREHOUSE_BUCKET or FBE_S3_BUCKET"):
        warehouse_from_env(tmp_path)
