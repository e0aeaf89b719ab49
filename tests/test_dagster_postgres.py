"""The production Dagster instance (``dagster.postgres.yaml``) on a real PostgreSQL server: the
pipeline runs on it as on the SQLite default, and runs, materializations and each session's
check status live in PostgreSQL."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest

from fbe_pipeline.market.ingest import load_file
from fbe_pipeline.market.instruments import get_instrument
from fbe_pipeline.settings import prepare_dagster_home
from fbe_pipeline.storage.store import LocalRawStore
from fbe_pipeline.storage.warehouse import open_tables
from tests.pg import PostgresServer
from tests.realdata import require_data

DAYS = (date(2013, 10, 7), date(2013, 10, 8))


@pytest.fixture
def pg_instance_env(
    postgres_server: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """A fresh ``FBE_HOME`` whose Dagster instance is ``dagster.postgres.yaml`` on a new
    database of the throwaway server."""
    name = f"dagster_{os.getpid()}"
    url = postgres_server.create_database(name)
    home = tmp_path / "home"
    monkeypatch.setenv("FBE_HOME", str(home))
    monkeypatch.setenv("FBE_DAGSTER_YAML", "dagster.postgres.yaml")
    # dagster-postgres's statements are written for psycopg2 (SQLAlchemy 2.1's default
    # PostgreSQL driver is psycopg 3): name the driver.
    monkeypatch.setenv("FBE_DAGSTER_PG_URL", url.replace("+psycopg://", "+psycopg2://"))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    try:
        yield home
    finally:
        os.environ.pop("DAGSTER_HOME", None)
        postgres_server.drop_database(name)


def test_pipeline_runs_on_a_postgresql_backed_instance(pg_instance_env: Path) -> None:
    from dagster import AssetCheckKey, AssetKey, DagsterInstance, RunsFilter
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage

    home = pg_instance_env
    data = require_data()
    store = LocalRawStore(home / "raw")
    spy = get_instrument("SPY")
    for day in DAYS:
        load_file(store, "lean-trades", data / f"lean/spy/tick/{day:%Y%m%d}_trade.zip", spy)
    assert (prepare_dagster_home() / "dagster.yaml").read_text().count("postgres_url") == 1
    from fbe_pipeline.definitions import materialize_partitions

    assert materialize_partitions(store) == 0
    instance = DagsterInstance.get()
    assert isinstance(instance.run_storage, PostgresRunStorage)
    assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
    [run] = instance.get_runs(RunsFilter(job_name="fbe_pipeline_SPY"))
    assert run.is_success
    materialized = instance.get_materialized_partitions(AssetKey(["SPY", "signals"]))
    assert materialized == {d.isoformat() for d in DAYS}
    infos = instance.event_log_storage.get_asset_check_partition_info(
        [AssetCheckKey(AssetKey(["SPY", "bars_1m"]), "ohlc_invariants")]
    )
    status = {i.partition_key: i.latest_execution_status.value for i in infos if i.partition_key}
    assert status == {d.isoformat(): "SUCCEEDED" for d in DAYS}
    # No SQLite instance files: everything went to PostgreSQL.
    assert not list((home / "dagster").rglob("*.db"))
    with open_tables(home) as con:
        bars = dict(
            con.execute(
                "select strftime(trading_date, '%Y-%m-%d'), count(*) from bars_1m group by 1"
            ).fetchall()
        )
    assert bars == {"2013-10-07": 390, "2013-10-08": 390}
