"""The local instance's pooled SQLite event log: selected by dagster.yaml, the same files as
Dagster's own storage (either reads what the other wrote), connections kept and bounded."""

from __future__ import annotations

from pathlib import Path

import pytest
from dagster import (
    AssetKey,
    DagsterInstance,
    DailyPartitionsDefinition,
    MaterializeResult,
    asset,
    materialize,
)
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage

from fbe_pipeline import event_log_storage
from fbe_pipeline.event_log_storage import PooledSqliteEventLogStorage
from fbe_pipeline.settings import prepare_dagster_home

DAYS = DailyPartitionsDefinition(start_date="2024-01-01", end_date="2024-01-20")


@asset(partitions_def=DAYS)
def counted(context) -> MaterializeResult:  # type: ignore[no-untyped-def]
    return MaterializeResult(metadata={"day": context.partition_key})


def test_the_repository_instance_uses_it_and_dagsters_storage_reads_its_files(
    fbe_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(event_log_storage, "MAX_OPEN_SHARDS", 3)
    home = prepare_dagster_home()
    instance = DagsterInstance.get()
    storage = instance.event_log_storage
    assert isinstance(storage, PooledSqliteEventLogStorage)
    assert storage._base_dir == str(home / "history" / "runs")
    keys = DAYS.get_partition_keys()[:6]
    for key in keys:
        assert materialize([counted], partition_key=key, instance=instance).success
    # The index plus the most recent runs stay open, never more than the bound.
    assert 1 <= len(storage._engines) <= 3
    assert instance.get_materialized_partitions(AssetKey("counted")) == set(keys)
    assert storage.has_table("asset_check_executions")
    with storage.index_connection() as conn:
        assert conn.exec_driver_sql("pragma synchronous").scalar() == 1  # NORMAL
        assert conn.exec_driver_sql("pragma journal_mode").scalar() == "wal"
    instance.dispose()
    assert storage._engines == {}

    plain = SqliteEventLogStorage(str(home / "history" / "runs"))
    records = plain.fetch_materializations(AssetKey("counted"), limit=100).records
    assert sorted(r.partition_key for r in records) == sorted(keys)
    plain.dispose()


def test_wipe_closes_the_run_shards_before_deleting_them(fbe_home: Path) -> None:
    prepare_dagster_home()
    instance = DagsterInstance.get()
    storage = instance.event_log_storage
    assert materialize([counted], partition_key="2024-01-02", instance=instance).success
    assert storage._engines
    runs = set(storage._engines) - {"index"}
    assert runs
    storage.wipe()
    # Dagster empties the index through a new connection; no run shard stays open.
    assert set(storage._engines) <= {"index"}
    assert not any((Path(storage._base_dir) / f"{run}.db").exists() for run in runs)
    assert instance.get_materialized_partitions(AssetKey("counted")) == set()
    assert materialize([counted], partition_key="2024-01-03", instance=instance).success
    assert instance.get_materialized_partitions(AssetKey("counted")) == {"2024-01-03"}
    instance.dispose()


def test_without_dagster_home_the_log_goes_to_a_temporary_directory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As for `dg check defs`, which makes a temporary instance from the repository's yaml."""
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    first, second = event_log_storage.default_base_dir(), event_log_storage.default_base_dir()
    assert first != second
    assert Path(first).is_dir() and not any(Path(first).iterdir())
