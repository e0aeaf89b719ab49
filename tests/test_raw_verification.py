"""Raw bytes verified on every read, and a damaged manifest reported, never crashing (local
backend; the S3 forgeries are in ``test_s3_forgery.py``)."""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from types import ModuleType

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from fbe_pipeline.market.ingest import load_file
from fbe_pipeline.market.instruments import get_instrument
from fbe_pipeline.storage.integrity import verify_partition, verify_store
from fbe_pipeline.storage.store import (
    LocalRawStore,
    ManifestConflictError,
    TamperedObjectError,
    frame_to_parquet,
    object_key,
    sha256_bytes,
)
from fbe_pipeline.storage.warehouse import open_tables

SPY_DAYS = (date(2013, 10, 7), date(2013, 10, 8))


def _flat(text: str) -> str:
    return re.sub(r"\s+", "", text)


def _ticks(n: int = 3) -> pd.DataFrame:
    return pd.DataFrame({"ts_event": range(n), "price": [100.0 + i for i in range(n)]})


def _put(store: LocalRawStore, key: str, frame: pd.DataFrame) -> bytes:
    data = frame_to_parquet(frame)
    store.put(key, data, rows=len(frame), source_file="f.csv", source_sha256="cd" * 32)
    return data


def _rewrite(path: Path, frame: pd.DataFrame) -> None:
    """Tamper with a stored object the way a user with shell access would."""
    path.chmod(0o644)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, compression="zstd")


@pytest.fixture
def store(tmp_path: Path) -> LocalRawStore:
    return LocalRawStore(tmp_path / "raw")


def test_read_partition_refuses_a_rewritten_object_naming_key_and_both_hashes(
    store: LocalRawStore,
) -> None:
    key = object_key("ticks", "SPY", SPY_DAYS[0], "a.parquet")
    original = _put(store, key, _ticks())
    assert store.read_partition("ticks", "SPY", SPY_DAYS[0]) is not None
    tampered = _ticks()
    tampered.loc[0, "price"] *= 1.5
    _rewrite(store.root / key, tampered)
    new_sha = sha256_bytes((store.root / key).read_bytes())

    with pytest.raises(TamperedObjectError) as info:
        store.read_partition("ticks", "SPY", SPY_DAYS[0])
    assert info.value.entry.sha256 == sha256_bytes(original)
    assert info.value.sha256 == new_sha
    assert sha256_bytes(original) in str(info.value) and new_sha in str(info.value)
    [finding] = verify_partition(store, "SPY", SPY_DAYS[0])
    assert (finding.key, finding.expected_sha256, finding.actual_sha256) == (
        key,
        sha256_bytes(original),
        new_sha,
    )


def test_verify_partition_flags_unmanifested_objects_conflicts_and_empty_partitions(
    store: LocalRawStore,
) -> None:
    day = SPY_DAYS[0]
    assert [(f.problem, f.key) for f in verify_partition(store, "SPY", day)] == [
        ("no_objects", "ticks/SPY/2013/10/07/")
    ]
    key = object_key("ticks", "SPY", day, "a.parquet")
    _put(store, key, _ticks())
    assert verify_partition(store, "SPY", day) == []
    # An object whose manifest record was lost would silently drop its rows: refuse instead.
    stray = store.root / object_key("quotes", "SPY", day, "stray.parquet")
    stray.parent.mkdir(parents=True)
    stray.write_bytes(frame_to_parquet(_ticks(1)))
    assert [(f.problem, f.key) for f in verify_partition(store, "SPY", day)] == [
        ("unmanifested", "quotes/SPY/2013/10/07/stray.parquet")
    ]
    stray.unlink()
    record = json.loads((store.root / "manifest.jsonl").read_text())
    record["sha256"] = "0" * 64
    with (store.root / "manifest.jsonl").open("a") as fh:
        fh.write(json.dumps(record) + "\n")
    assert [(f.problem, f.key) for f in verify_partition(store, "SPY", day)] == [
        ("conflicting_entries", key)
    ]
    with pytest.raises(ManifestConflictError, match="more than once"):
        store.read_partition("ticks", "SPY", day)


def test_damaged_manifest_is_reported_record_by_record_and_the_rest_still_verified(
    store: LocalRawStore,
) -> None:
    keys = [object_key("ticks", "SPY", SPY_DAYS[0], f"{n}.parquet") for n in "abc"]
    for key in keys:
        _put(store, key, _ticks())
    manifest = store.root / "manifest.jsonl"
    lines = manifest.read_text().splitlines()
    bad_size = json.loads(lines[1]) | {"size": "12"}
    manifest.write_text(
        "\n".join([lines[0], "{not json", json.dumps(bad_size), lines[0], lines[2][:40]]) + "\n"
    )
    (store.root / keys[2]).chmod(0o644)
    (store.root / keys[2]).write_bytes(b"x")

    report = verify_store(store)

    assert [m.split(" (")[0] for m in report.malformed_manifest] == [
        "manifest.jsonl:2: not valid JSON",
        "manifest.jsonl:3: size must be a non-negative integer, got '12'",
        "manifest.jsonl:5: not valid JSON",
    ]
    assert report.duplicate_entry == [keys[0]]
    assert report.checked == 1
    assert report.unmanifested == keys[1:]
    assert not report.ok


def test_a_load_killed_between_object_and_manifest_record_is_completed_by_the_rerun(
    store: LocalRawStore,
) -> None:
    key = object_key("ticks", "SPY", SPY_DAYS[0], "a.parquet")
    data = _put(store, key, _ticks())
    manifest = store.root / "manifest.jsonl"
    whole = manifest.read_bytes()
    manifest.write_bytes(whole[: len(whole) // 2])  # a torn record, as after SIGKILL

    assert store.put(key, data, rows=3, source_file="f.csv", source_sha256="cd" * 32)
    assert store.put(key, data, rows=3, source_file="f.csv", source_sha256="cd" * 32) is False

    report = verify_store(store)
    assert [e.key for e in store.manifest()] == [key]
    assert len(report.malformed_manifest) == 1  # the torn record stays visible, on its own line
    assert report.unmanifested == [] and report.sha_mismatch == []


@pytest.fixture
def cli_home(
    fbe_home: Path, monkeypatch: pytest.MonkeyPatch, sample_data: Path
) -> Iterator[tuple[Path, ModuleType, CliRunner]]:
    """Two real SPY days and the BTCUSDT trades loaded into a fresh FBE_HOME, with the CLI and
    the ``Definitions`` rebuilt for it."""
    monkeypatch.setenv("DAGSTER_HOME", str(fbe_home / "dagster"))
    monkeypatch.setenv("FBE_SCORING_CONFIG", '{"trigger_score": 30}')
    store = LocalRawStore(fbe_home / "raw")
    for day in SPY_DAYS:
        path = sample_data / f"lean/spy/tick/{day:%Y%m%d}_trade.zip"
        load_file(store, "lean-trades", path, get_instrument("SPY"))
    btc = sample_data / "tardis/tardis_binance-futures_BTCUSDT_trades_2020-02-22.csv"
    load_file(store, "tardis-trades", btc, get_instrument("BTCUSDT"))
    importlib.reload(importlib.import_module("fbe_pipeline.definitions"))
    yield fbe_home, importlib.import_module("fbe_pipeline.cli"), CliRunner()
    monkeypatch.undo()
    importlib.reload(importlib.import_module("fbe_pipeline.definitions"))


def _bar_counts(home: Path) -> dict[tuple[str, str], int]:
    with open_tables(home) as con:
        rows = con.execute(
            "select symbol, strftime(trading_date, '%Y-%m-%d'), count(*) from bars_1m group by all"
        ).fetchall()
    return {(s, d): n for s, d, n in rows}


def test_tampered_real_day_is_refused_and_the_clean_partitions_still_materialize(
    cli_home: tuple[Path, ModuleType, CliRunner],
) -> None:
    home, cli, runner = cli_home
    store = LocalRawStore(home / "raw")
    [entry] = store.entries("ticks/SPY/2013/10/08/")
    frame = pq.read_table(home / "raw" / entry.key).to_pandas()
    frame.loc[:99, "price"] *= 1.5  # the edit of the issue: 100 prices times 1.5
    _rewrite(home / "raw" / entry.key, frame)
    actual = sha256_bytes((home / "raw" / entry.key).read_bytes())

    result = runner.invoke(cli.app, ["materialize"])

    assert result.exit_code == 1
    flat = _flat(result.output)
    assert _flat("runfailed:SPY2013-10-08") in flat
    assert _flat(f"size_mismatch: {entry.key}") in flat
    assert "Traceback" not in result.output
    assert _bar_counts(home) == {("SPY", "2013-10-07"): 390, ("BTCUSDT", "2020-02-22"): 126}

    definitions = importlib.import_module("fbe_pipeline.definitions")
    failed = definitions.failed_checks(store)
    assert "raw_objects_verified (error)" in failed[("SPY", "2013-10-08")]
    assert "failed: raw_ticks" in failed[("SPY", "2013-10-08")]
    assert all("(warn)" in name for name in failed.get(("SPY", "2013-10-07"), []))
    # Dagster itself keeps each partition's own check status.
    from dagster import AssetCheckKey, AssetKey, DagsterInstance

    keys = [
        AssetCheckKey(AssetKey([symbol, "raw_ticks"]), "raw_objects_verified")
        for symbol in ("SPY", "BTCUSDT")
    ]
    infos = DagsterInstance.get().event_log_storage.get_asset_check_partition_info(keys)
    # The batched run's combined result (SPY's two sessions together, failed) has no partition.
    assert {(i.check_key.asset_key.path[0], i.partition_key) for i in infos} - {
        ("SPY", "2013-10-07"),
        ("SPY", "2013-10-08"),
        ("BTCUSDT", "2020-02-22"),
    } == {("SPY", None)}
    status = {
        (i.check_key.asset_key.path[0], i.partition_key): i.latest_execution_status.value
        for i in infos
        if i.partition_key is not None
    }
    assert status == {
        ("SPY", "2013-10-07"): "SUCCEEDED",
        ("SPY", "2013-10-08"): "FAILED",
        ("BTCUSDT", "2020-02-22"): "SUCCEEDED",
    }
    metadata = _check_metadata(definitions, "2013-10-08")
    [obj] = metadata["objects"].data
    assert obj["key"] == entry.key
    assert (obj["expected_sha256"], obj["actual_sha256"]) == (entry.sha256, actual)
    summary = runner.invoke(cli.app, ["summary"])
    assert "raw_objects_verified(error)" in _flat(summary.output)


def _check_metadata(definitions: ModuleType, partition: str) -> dict[str, object]:
    """Metadata of the latest ``raw_objects_verified`` evaluation of a partition's runs."""
    from dagster import AssetCheckEvaluation, DagsterEventType, DagsterInstance, RunsFilter

    instance = DagsterInstance.get()
    for run in instance.get_runs(RunsFilter(tags={"dagster/partition": partition})):
        for record in instance.all_logs(
            run.run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION
        ):
            data = record.dagster_event.event_specific_data if record.dagster_event else None
            if isinstance(data, AssetCheckEvaluation) and (
                data.asset_check_key.name == "raw_objects_verified"
            ):
                return dict(data.metadata)
    raise AssertionError(f"no raw_objects_verified evaluation for {partition}")


def test_a_partition_whose_raw_data_vanished_fails_loudly_instead_of_being_skipped(
    cli_home: tuple[Path, ModuleType, CliRunner],
) -> None:
    home, cli, runner = cli_home
    first = runner.invoke(cli.app, ["materialize", "--symbol", "BTCUSDT"])
    assert first.exit_code == 0, first.output
    store = LocalRawStore(home / "raw")
    [entry] = store.entries("ticks/BTCUSDT/")
    manifest = home / "raw" / "manifest.jsonl"
    kept = [line for line in manifest.read_text().splitlines() if entry.key not in line]
    manifest.write_text("\n".join(kept) + "\n")
    (home / "raw" / entry.key).unlink()

    again = runner.invoke(cli.app, ["materialize", "--symbol", "BTCUSDT"])

    assert again.exit_code == 1
    assert _flat("run failed: BTCUSDT 2020-02-22") in _flat(again.output)
    assert _flat("no_objects: ticks/BTCUSDT/2020/02/22/") in _flat(again.output)


def test_materialize_with_an_unknown_symbol_names_the_known_ones(
    cli_home: tuple[Path, ModuleType, CliRunner],
) -> None:
    _, cli, runner = cli_home
    result = runner.invoke(cli.app, ["materialize", "--symbol", "../../x"])
    assert result.exit_code == 2
    assert _flat("unknown symbol '../../x'") in _flat(result.output)
    assert _flat("known symbols: BAC, BANKNIFTY_FUT, BTCUSDT, ES, GC") in _flat(result.output)
    nothing = runner.invoke(cli.app, ["materialize", "--symbol", "GC"])
    assert nothing.exit_code == 1
    assert _flat("no raw ticks for GC") in _flat(nothing.output)


def test_integrity_cli_reports_a_malformed_manifest_line_without_a_traceback(
    cli_home: tuple[Path, ModuleType, CliRunner],
) -> None:
    home, cli, runner = cli_home
    with (home / "raw" / "manifest.jsonl").open("a") as fh:
        fh.write('{"key": "ticks/SPY/2013/10/07/x.parquet", "size": \n')
    result = runner.invoke(cli.app, ["integrity"])
    assert result.exit_code == 1
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert _flat("malformed_manifest: manifest.jsonl:4: not valid JSON") in _flat(result.output)
    assert "Traceback" not in result.output
