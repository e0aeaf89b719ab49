"""Runs of different instruments in parallel processes write the same tables, row for row,
as one instrument after the other, and really overlap in time (issue 12)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd
import pytest
from dagster import DagsterInstance

from assets import PIPELINE_TABLES
from fbe_pipeline.definitions import materialize_partitions
from fbe_pipeline.market.ingest import load_file
from fbe_pipeline.market.instruments import get_instrument
from fbe_pipeline.settings import prepare_dagster_home
from fbe_pipeline.storage.store import LocalRawStore
from fbe_pipeline.storage.warehouse import open_tables

DAYS = (date(2013, 10, 7), date(2013, 10, 8))
SYMBOLS = ("SPY", "BAC")


def _load(home: Path, sample_data: Path) -> LocalRawStore:
    store = LocalRawStore(home / "raw")
    for symbol in SYMBOLS:
        instrument = get_instrument(symbol)
        for day in DAYS:
            path = sample_data / f"lean/{symbol.lower()}/tick/{day:%Y%m%d}_trade.zip"
            load_file(store, "lean-trades", path, instrument)
    return store


def _materialize(
    home: Path, sample_data: Path, monkeypatch: pytest.MonkeyPatch, parallel: int
) -> dict[str, pd.DataFrame]:
    monkeypatch.setenv("FBE_HOME", str(home))
    monkeypatch.setenv("FBE_SCORING_CONFIG", '{"trigger_score": 30}')
    store = _load(home, sample_data)
    prepare_dagster_home()
    failures = materialize_partitions(
        store, symbols=list(SYMBOLS), through="backtest_summary", parallel=parallel
    )
    assert failures == 0
    with open_tables(home) as con:
        return {
            t: con.execute(f"select * from {t} order by all").fetchdf() for t in PIPELINE_TABLES
        }


def test_two_instruments_in_parallel_write_the_same_tables_as_one_at_a_time(
    tmp_path: Path, sample_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    serial = _materialize(tmp_path / "serial", sample_data, monkeypatch, parallel=1)
    together = _materialize(tmp_path / "parallel", sample_data, monkeypatch, parallel=2)
    for table in PIPELINE_TABLES:
        assert set(serial[table]["symbol"]) == set(SYMBOLS), table
        pd.testing.assert_frame_equal(serial[table], together[table], obj=table)
    assert len(serial["raw_ticks"]) == 241_504 + 440_353 + 86_434 + 124_969
    assert len(serial["signals"]) > 0

    # The two instruments' runs (one per instrument: both sessions in one batch) overlapped.
    instance = DagsterInstance.from_config(str(tmp_path / "parallel" / "dagster"))
    spans = {}
    for record in instance.get_run_records():
        symbol = record.dagster_run.job_name.rsplit("_", 1)[-1]
        assert record.start_time is not None and record.end_time is not None
        spans[symbol] = (record.start_time, record.end_time)
    assert set(spans) == set(SYMBOLS)
    (a_start, a_end), (b_start, b_end) = spans["SPY"], spans["BAC"]
    assert a_start < b_end and b_start < a_end, spans
