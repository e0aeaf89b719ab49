"""The S3 raw store against a real S3-compatible HTTP endpoint (moto's server on 127.0.0.1)."""

from __future__ import annotations

import importlib
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from dagster import DagsterInstance, materialize
from typer.testing import CliRunner

from assets import lane_assets, make_lane
from assets.integrity import raw_integrity
from assets.partitions import partition_key
from fbe_pipeline.market.ingest import load_file
from fbe_pipeline.market.instruments import get_instrument
from fbe_pipeline.storage.integrity import verify_store
from fbe_pipeline.storage.store import LocalRawStore, ObjectExistsError, frame_to_parquet
from fbe_pipeline.storage.store_s3 import S3RawStore, init_bucket
from fbe_pipeline.storage.warehouse import open_tables
from resources.fbe import RawStoreResource, ScoringConfigResource
from resources.warehouse_io import FbeWarehouseIOManager

DAY = date(2013, 10, 7)


def _resource(home: Path, env: dict[str, str]) -> RawStoreResource:
    return RawStoreResource(
        home=str(home),
        backend="s3",
        s3_bucket=env["FBE_S3_BUCKET"],
        s3_endpoint_url=env["FBE_S3_ENDPOINT_URL"],
    )


@pytest.fixture
def s3_store(tmp_path: Path, s3_env: dict[str, str]) -> tuple[S3RawStore, Any]:
    resource = _resource(tmp_path, s3_env)
    client = resource.s3_client()
    assert init_bucket(client, s3_env["FBE_S3_BUCKET"], retention_days=30) == "created"
    store = resource.get_store()
    assert isinstance(store, S3RawStore)
    return store, client


def _frame(n: int = 3) -> bytes:
    return frame_to_parquet(pd.DataFrame({"x": range(n)}))


def test_bucket_init_enables_versioning_and_compliance_lock_and_reruns(
    s3_store: tuple[S3RawStore, Any], s3_env: dict[str, str]
) -> None:
    _store, client = s3_store
    bucket = s3_env["FBE_S3_BUCKET"]
    assert client.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    rule = client.get_object_lock_configuration(Bucket=bucket)["ObjectLockConfiguration"]["Rule"]
    assert rule["DefaultRetention"]["Mode"] == "COMPLIANCE"
    assert rule["DefaultRetention"]["Days"] == 30
    assert init_bucket(client, bucket, retention_days=365) == "exists"
    rule = client.get_object_lock_configuration(Bucket=bucket)["ObjectLockConfiguration"]["Rule"]
    assert rule["DefaultRetention"]["Days"] == 365


def test_conditional_overwrite_is_refused_by_the_store(s3_store: tuple[S3RawStore, Any]) -> None:
    store, client = s3_store
    key = "ticks/SPY/2013/10/07/a.parquet"
    assert store.put(key, _frame(3), rows=3, source_file="a", source_sha256="s")
    assert not store.put(key, _frame(3), rows=3, source_file="a", source_sha256="s")
    with pytest.raises(ObjectExistsError, match="If-None-Match"):
        store.put(key, _frame(4), rows=4, source_file="a", source_sha256="t")
    entry = store.manifest()[0]
    assert entry.key == key and entry.version_id and entry.size == len(_frame(3))
    assert len(client.list_object_versions(Bucket=store.bucket, Prefix=key)["Versions"]) == 1
    assert store.get(key) == _frame(3)


def test_delete_of_a_locked_version_is_refused(s3_store: tuple[S3RawStore, Any]) -> None:
    store, client = s3_store
    key = "ticks/SPY/2013/10/07/b.parquet"
    store.put(key, _frame(), rows=3, source_file="b", source_sha256="s")
    version = store.manifest()[0].version_id
    with pytest.raises(Exception, match="AccessDenied"):
        client.delete_object(Bucket=store.bucket, Key=key, VersionId=version)
    assert store.get(key) == _frame()


def test_integrity_names_an_object_rewritten_around_the_lock(
    s3_store: tuple[S3RawStore, Any],
) -> None:
    store, client = s3_store
    key = "ticks/SPY/2013/10/07/c.parquet"
    store.put(key, _frame(), rows=3, source_file="c", source_sha256="s")
    assert verify_store(store).ok
    client.put_object(Bucket=store.bucket, Key=key, Body=b"tampered")  # unconditional
    client.put_object(Bucket=store.bucket, Key="ticks/SPY/2013/10/07/stray.parquet", Body=b"x")
    report = verify_store(store)
    assert report.extra_versions == [key]
    assert report.unmanifested == ["ticks/SPY/2013/10/07/stray.parquet"]
    # Reads stay pinned to the manifest's version: the pipeline never sees the tampered bytes.
    assert store.get(key) == _frame()


def test_integrity_names_a_local_object_with_a_changed_byte(tmp_path: Path) -> None:
    store = LocalRawStore(tmp_path / "raw")
    key = "ticks/SPY/2013/10/07/d.parquet"
    store.put(key, _frame(), rows=3, source_file="d", source_sha256="s")
    path = tmp_path / "raw" / key
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[10] ^= 0xFF
    path.write_bytes(bytes(data))
    report = verify_store(store)
    assert report.sha_mismatch == [key]
    assert not report.ok
    path.unlink()
    assert verify_store(store).missing == [key]


def _bars(home: Path, raw_store: RawStoreResource) -> pd.DataFrame:
    result = materialize(
        lane_assets(make_lane(get_instrument("SPY"), DAY, DAY)),
        selection=["SPY/raw_ticks", "SPY/bars_1m"],
        partition_key=partition_key(DAY),
        resources={
            "io_manager": FbeWarehouseIOManager(home=str(home)),
            "raw_store": raw_store,
            "scoring": ScoringConfigResource(),
        },
        instance=DagsterInstance.ephemeral(),
    )
    assert result.success
    with open_tables(home) as con:
        return con.execute("select * from bars_1m order by ts").fetchdf()


def test_pipeline_from_s3_builds_the_same_bars_as_from_local(
    tmp_path: Path, s3_env: dict[str, str], sample_data: Path
) -> None:
    spy = get_instrument("SPY")
    path = sample_data / "lean/spy/tick/20131007_trade.zip"
    local_home, s3_home = tmp_path / "local", tmp_path / "s3"
    load_file(LocalRawStore(local_home / "raw"), "lean-trades", path, spy)
    resource = _resource(s3_home, s3_env)
    init_bucket(resource.s3_client(), s3_env["FBE_S3_BUCKET"])
    load_file(resource.get_store(), "lean-trades", path, spy)

    local_bars = _bars(local_home, RawStoreResource(home=str(local_home)))
    s3_bars = _bars(s3_home, resource)
    assert len(local_bars) == 390
    pd.testing.assert_frame_equal(local_bars, s3_bars)


def test_cli_storage_init_and_integrity_exit_codes(
    tmp_path: Path, s3_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FBE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home" / "dagster"))
    (tmp_path / "home" / "dagster").mkdir(parents=True)
    cli = importlib.import_module("fbe_pipeline.cli")
    runner = CliRunner()
    first = runner.invoke(cli.app, ["storage", "init", "--retention-days", "10"])
    assert first.exit_code == 0, first.output
    assert "created" in first.output
    again = runner.invoke(cli.app, ["storage", "init"])
    assert again.exit_code == 0 and "exists" in again.output

    csv = tmp_path / "t.csv"
    csv.write_text("timestamp,price,size\n2013-10-07T14:00:00Z,167.0,100\n")
    assert runner.invoke(cli.app, ["load", "csv", str(csv), "--symbol", "SPY"]).exit_code == 0
    resource = _resource(tmp_path, s3_env)
    key = resource.get_store().manifest()[0].key

    # Definitions are built at import from the environment; rebuild them for this bucket.
    definitions = importlib.reload(importlib.import_module("fbe_pipeline.definitions"))
    assert definitions.run_integrity()[0]
    resource.s3_client().put_object(Bucket=s3_env["FBE_S3_BUCKET"], Key=key, Body=b"x")
    definitions = importlib.reload(importlib.import_module("fbe_pipeline.definitions"))
    result = runner.invoke(cli.app, ["integrity"])
    assert result.exit_code == 1
    assert key.replace("/", "") in result.output.replace("\n", "").replace("/", "")
    assert "extra_versions" in result.output
    assert raw_integrity.key.to_user_string() == "raw_integrity"
