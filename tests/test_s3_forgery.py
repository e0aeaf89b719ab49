"""Forged manifests and delete markers on the S3 raw store (moto's server on 127.0.0.1), run
through the real ``fbe`` commands, and no credentials in logs at DEBUG."""

from __future__ import annotations

import importlib
import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from fbe_pipeline.market.ingest import load_file
from fbe_pipeline.market.instruments import get_instrument
from fbe_pipeline.storage.store import sha256_bytes
from fbe_pipeline.storage.store_s3 import MANIFEST_PREFIX, S3RawStore
from fbe_pipeline.storage.warehouse import open_tables
from resources.fbe import RawStoreResource


def _flat(text: str) -> str:
    return re.sub(r"\s+", "", text)


@pytest.fixture
def s3_cli(
    fbe_home: Path, s3_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, sample_data: Path
) -> Iterator[tuple[ModuleType, CliRunner, S3RawStore, Any, float]]:
    """A bucket made by ``fbe storage init`` holding SPY 2013-10-07, materialized once, and
    the sum of that day's 390 bar closes from the untouched ticks."""
    monkeypatch.setenv("DAGSTER_HOME", str(fbe_home / "dagster"))
    importlib.reload(importlib.import_module("fbe_pipeline.definitions"))
    cli = importlib.import_module("fbe_pipeline.cli")
    runner = CliRunner()
    assert runner.invoke(cli.app, ["storage", "init", "--retention-days", "1"]).exit_code == 0
    resource = RawStoreResource(
        home=str(fbe_home),
        backend="s3",
        s3_bucket=s3_env["FBE_S3_BUCKET"],
        s3_endpoint_url=s3_env["FBE_S3_ENDPOINT_URL"],
    )
    store = resource.get_store()
    assert isinstance(store, S3RawStore)
    path = sample_data / "lean/spy/tick/20131007_trade.zip"
    load_file(store, "lean-trades", path, get_instrument("SPY"))
    first = runner.invoke(cli.app, ["materialize"])
    assert first.exit_code == 0, first.output
    closes = _close_sum(fbe_home)
    assert 60_000 < closes < 70_000
    yield cli, runner, store, resource.s3_client(), closes
    monkeypatch.undo()
    importlib.reload(importlib.import_module("fbe_pipeline.definitions"))


def _close_sum(home: Path) -> float:
    with open_tables(home) as con:
        count, total = con.execute("select count(*), sum(close) from bars_1m").fetchone() or (0, 0)
    assert count == 390
    return float(total)


def _forge(store: S3RawStore, client: Any) -> tuple[str, str]:
    """Write doubled prices as a new version of the data object and a new version of its
    manifest object pointing at it with matching size and SHA-256, as in the issue."""
    [entry] = store.entries("ticks/SPY/")
    frame = pq.read_table(io.BytesIO(store.get(entry.key))).to_pandas()
    frame["price"] *= 2.0
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), buf, compression="zstd")
    forged = buf.getvalue()
    put = client.put_object(Bucket=store.bucket, Key=entry.key, Body=forged)
    record = json.loads(json.dumps(entry.__dict__))
    record |= {"version_id": put["VersionId"], "size": len(forged), "sha256": sha256_bytes(forged)}
    manifest_key = MANIFEST_PREFIX + entry.key + ".json"
    client.put_object(Bucket=store.bucket, Key=manifest_key, Body=json.dumps(record).encode())
    return entry.key, manifest_key


def test_forged_manifest_version_never_redirects_a_read_and_is_named_by_integrity(
    s3_cli: tuple[ModuleType, CliRunner, S3RawStore, Any, float], fbe_home: Path
) -> None:
    cli, runner, store, client, closes = s3_cli
    key, manifest_key = _forge(store, client)

    again = runner.invoke(cli.app, ["materialize"])

    assert again.exit_code == 0, again.output
    assert _close_sum(fbe_home) == closes  # never the doubled prices
    result = runner.invoke(cli.app, ["integrity"])
    assert result.exit_code == 1
    flat = _flat(result.output)
    assert _flat(f"manifest_rewritten: {manifest_key}") in flat
    assert _flat(f"extra_versions: {key}") in flat


def test_forgery_with_the_first_manifest_version_removed_is_refused(
    s3_cli: tuple[ModuleType, CliRunner, S3RawStore, Any, float], fbe_home: Path
) -> None:
    """When retention was bypassed (moto lets a COMPLIANCE retention be shortened; real S3
    refuses) and the original manifest version deleted, the forged record points at a version
    that is not the object's first: the partition is refused, never computed."""
    cli, runner, store, client, closes = s3_cli
    key, manifest_key = _forge(store, client)
    versions = client.list_object_versions(Bucket=store.bucket, Prefix=manifest_key)["Versions"]
    original = min(versions, key=lambda v: v["LastModified"])
    if len(versions) > 1 and versions[0]["VersionId"] == original["VersionId"]:
        original = versions[-1]
    soon = datetime.now(UTC) + timedelta(seconds=1)
    try:
        client.put_object_retention(
            Bucket=store.bucket,
            Key=manifest_key,
            VersionId=original["VersionId"],
            Retention={"Mode": "COMPLIANCE", "RetainUntilDate": soon},
        )
        import time

        time.sleep(1.5)
        client.delete_object(Bucket=store.bucket, Key=manifest_key, VersionId=original["VersionId"])
    except Exception as exc:  # a store that enforces COMPLIANCE cannot be forged this way
        pytest.skip(f"the S3 server refused to remove a locked version: {exc}")

    again = runner.invoke(cli.app, ["materialize"])

    assert again.exit_code == 1
    assert _flat(f"not_first_version: {key}") in _flat(again.output)
    assert _close_sum(fbe_home) == closes


def test_delete_markers_on_data_and_manifest_keys_are_findings_and_change_no_result(
    s3_cli: tuple[ModuleType, CliRunner, S3RawStore, Any, float], fbe_home: Path
) -> None:
    cli, runner, store, client, closes = s3_cli
    [entry] = store.entries("ticks/SPY/")
    manifest_key = MANIFEST_PREFIX + entry.key + ".json"
    client.delete_object(Bucket=store.bucket, Key=entry.key)
    client.delete_object(Bucket=store.bucket, Key=manifest_key)
    # Listing the sessions (names only, no GET) still sees the hidden manifest object.
    assert store.partitions("ticks") == [("SPY", date(2013, 10, 7))]

    again = runner.invoke(cli.app, ["materialize"])

    # The partition is not skipped: its first, locked versions are still read and verified.
    assert again.exit_code == 0, again.output
    assert "SPY 2013-10-07" in again.output or "1/1" in again.output
    assert _close_sum(fbe_home) == closes
    result = runner.invoke(cli.app, ["integrity"])
    assert result.exit_code == 1
    flat = _flat(result.output)
    assert _flat(f"delete_marker: {entry.key}") in flat
    assert _flat(f"delete_marker: {manifest_key}") in flat


SECRETS = {
    "AWS_ACCESS_KEY_ID": "AKIAFBELOGTESTKEY777",
    "AWS_SECRET_ACCESS_KEY": "fbe-log-test-secret-key-do-not-print",
    "AWS_SESSION_TOKEN": "FBELOGTESTSESSIONTOKEN0123456789",
}


def test_debug_logging_never_prints_credentials(tmp_path: Path, s3_env: dict[str, str]) -> None:
    home = tmp_path / "home"
    env = {**os.environ, **s3_env, **SECRETS, "FBE_HOME": str(home), "FBE_LOG_LEVEL": "DEBUG"}
    env["FBE_S3_BUCKET"] = "fbe-log-test"
    csv = tmp_path / "ticks.csv"
    csv.write_text("timestamp,price,size\n2013-10-07T14:00:00Z,167.0,100\n")
    fbe = [sys.executable, "-m", "fbe_pipeline.cli"]
    outputs = []
    for args in (
        ["storage", "init"],
        ["load", "csv", str(csv), "--symbol", "SPY"],
        ["materialize"],
        ["integrity"],
    ):
        done = subprocess.run(
            [*fbe, *args], env=env, capture_output=True, text=True, timeout=300, check=False
        )
        # One tick makes a thin day whose checks may fail; only what is logged matters here.
        allowed = (0, 1) if args[0] == "materialize" else (0,)
        assert done.returncode in allowed, done.stderr[-2000:]
        outputs.append(done.stdout + done.stderr)
    logged = "\n".join(outputs)
    assert "DEBUG" in logged  # the level took effect: there is debug output to search
    for path in home.rglob("*"):
        if path.is_file() and path.suffix not in (".parquet",):
            logged += path.read_bytes().decode("utf-8", "replace")
    for name, value in SECRETS.items():
        assert value not in logged, f"{name} leaked into logs"
