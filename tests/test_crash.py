"""Crash tests: SIGKILL of the real ``fbe`` CLI at several points, then a re-run.

After every crash and re-run the raw store passes integrity (no duplicate manifest key, every
object verifies), holds exactly the objects of a clean load (same keys and SHA-256s), and every
DuckDB table equals that of a clean run row for row. Kill points are deterministic where the
state can be observed from outside (the Nth manifest record, the Nth asset materialization in
the Dagster event log) or forced from inside (SIGKILL right after the object's ``link`` and
before its manifest record), plus time-based ones.

Data: two SPY days (Lean trades) and the Tardis BTCUSDT trades, i.e. three partitions.
"""

from __future__ import annotations

import json
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from assets import PIPELINE_TABLES
from fbe_pipeline.storage.integrity import verify_store
from fbe_pipeline.storage.store import LocalRawStore
from fbe_pipeline.storage.warehouse import open_tables
from tests.processes import cli_env

REPO = Path(__file__).resolve().parents[1]
TABLES = PIPELINE_TABLES
SYMBOLS = ("--symbol", "SPY", "--symbol", "BTCUSDT")
# SIGKILL of ``fbe`` from inside, right after the Nth raw object is linked into place (before
# its manifest record is appended): the narrowest window of the local store's write.
KILL_AFTER_LINK = """
import os, signal, sys
left = int(os.environ["FBE_TEST_KILL_AFTER_LINK"])
real_link = os.link
def link(*args, **kwargs):
    global left
    real_link(*args, **kwargs)
    left -= 1
    if left == 0:
        os.kill(os.getpid(), signal.SIGKILL)
os.link = link
from fbe_pipeline.cli import main
sys.argv[0] = "fbe"
main()
"""


@dataclass
class Run:
    """An ``fbe`` environment: its ``FBE_HOME`` and process environment."""

    home: Path
    env: dict[str, str]

    def cmd(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "fbe_pipeline.cli", *args]

    def fbe(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        """Run ``fbe ARGS`` to completion."""
        return subprocess.run(
            self.cmd(*args), env=self.env, cwd=REPO, capture_output=True, text=True, timeout=timeout
        )

    def spawn(self, *args: str, code: str | None = None) -> subprocess.Popen[bytes]:
        """Start ``fbe ARGS`` (or ``python -c CODE ARGS``) in a session of its own."""
        cmd = [sys.executable, "-c", code, *args] if code else self.cmd(*args)
        return subprocess.Popen(
            cmd,
            env=self.env,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    @property
    def store(self) -> LocalRawStore:
        return LocalRawStore(self.home / "raw")


def _env(home: Path, sample: Path) -> dict[str, str]:
    return cli_env(home, sample, FBE_LOG_LEVEL="WARNING")


def _load_commands(sample: Path) -> list[tuple[str, ...]]:
    spy = sample / "lean" / "spy" / "tick"
    btc = sample / "tardis" / "tardis_binance-futures_BTCUSDT_trades_2020-02-22.csv"
    days = [str(spy / f"2013100{d}_trade.zip") for d in (7, 8)]
    return [
        ("load", "lean-trades", *days, "--symbol", "SPY"),
        ("load", "tardis-trades", str(btc), "--symbol", "BTCUSDT"),
    ]


def _check(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, f"{result.args}\n{result.stdout}\n{result.stderr}"


def _objects(run: Run) -> dict[str, str]:
    """Manifest key -> SHA-256, asserting the manifest has no duplicate key."""
    keys = [e.key for e in run.store.manifest()]
    assert len(keys) == len(set(keys)), f"duplicate manifest keys: {sorted(keys)}"
    return {e.key: e.sha256 for e in run.store.manifest()}


def _tables(home: Path) -> dict[str, pd.DataFrame]:
    """Every pipeline table, rows in a canonical order."""
    with open_tables(home) as con:
        return {t: con.execute(f"select * from main.{t} order by all").fetchdf() for t in TABLES}


def _assert_store_intact(run: Run, clean: Clean) -> None:
    report = verify_store(run.store)
    assert report.ok, report.findings()
    assert report.checked == len(clean.objects)
    assert _objects(run) == clean.objects


def _assert_tables_equal(home: Path, clean: Clean) -> None:
    tables = _tables(home)
    for name in TABLES:
        assert len(tables[name]) == len(clean.tables[name]), name
        pd.testing.assert_frame_equal(tables[name], clean.tables[name], obj=name)


def _kill_when(
    proc: subprocess.Popen[bytes], ready: Callable[[], bool], limit: float = 120
) -> None:
    """SIGKILL ``proc`` as soon as ``ready()``; assert it was still running then."""
    deadline = time.monotonic() + limit
    while not ready():
        assert proc.poll() is None, "fbe finished before the kill point"
        assert time.monotonic() < deadline, "kill point not reached"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(30) == -signal.SIGKILL


def _kill_after(proc: subprocess.Popen[bytes], seconds: float) -> None:
    time.sleep(seconds)
    assert proc.poll() is None, f"fbe finished within {seconds} s"
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(30) == -signal.SIGKILL


def _manifest_records(run: Run) -> int:
    path = run.home / "raw" / "manifest.jsonl"
    return path.read_bytes().count(b"\n") if path.exists() else 0


def _materializations(run: Run) -> int:
    """ASSET_MATERIALIZATION events in the instance's event log (0 before it exists)."""
    index = run.home / "dagster" / "history" / "runs" / "index.db"
    if not index.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{index}?mode=ro", uri=True, timeout=0.2) as con:
            (n,) = con.execute(
                "select count(*) from event_logs where dagster_event_type = 'ASSET_MATERIALIZATION'"
            ).fetchone()
    except sqlite3.Error:
        return 0
    return int(n)


def _materialized(run: Run, n: int) -> Callable[[], bool]:
    """Kill point: the event log holds at least ``n`` asset materializations."""
    return lambda: _materializations(run) >= n


@dataclass
class Clean:
    """The result of an uninterrupted load and materialize."""

    run: Run
    objects: dict[str, str]
    tables: dict[str, pd.DataFrame]
    loads: list[tuple[str, ...]]


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory, sample_data: Path) -> Clean:
    home = tmp_path_factory.mktemp("clean") / "fbe_home"
    run = Run(home, _env(home, sample_data))
    loads = _load_commands(sample_data)
    for args in loads:
        _check(run.fbe(*args))
    _check(run.fbe("materialize", *SYMBOLS))
    objects = _objects(run)
    assert len(objects) == 3
    assert verify_store(run.store).ok
    tables = _tables(home)
    with open_tables(home) as con:
        for name in TABLES:
            assert len(tables[name]) > 0, name
            assert set(tables[name]["symbol"]) == {"SPY", "BTCUSDT"}, name
            row = con.execute(f"select count(*) from (select distinct * from {name})").fetchone()
            assert row is not None
            distinct = row[0]
            assert distinct == len(tables[name]), f"{name} has duplicate rows in a clean run"
    return Clean(run, objects, tables, loads)


def _fresh(tmp_path: Path, clean: Clean, with_raw: bool = False) -> Run:
    home = tmp_path / "fbe_home"
    home.mkdir()
    if with_raw:
        shutil.copytree(clean.run.home / "raw", home / "raw")
    return Run(home, clean.run.env | {"FBE_HOME": str(home)})


def _rerun_loads(run: Run, clean: Clean) -> None:
    before = _objects(run)
    for args in clean.loads:
        _check(run.fbe(*args))
    after = _objects(run)
    # The re-run stores exactly what was missing and leaves what was stored untouched.
    assert after == clean.objects
    assert {k: after[k] for k in before} == before


@pytest.mark.parametrize(
    "point",
    ["after-1st-manifest-record", "after-1st-link", "after-2nd-link", "at-1.5s"],
)
def test_sigkill_during_load(tmp_path: Path, clean: Clean, point: str) -> None:
    run = _fresh(tmp_path, clean)
    spy_load = clean.loads[0]
    if point.endswith("link"):
        n = 1 if point == "after-1st-link" else 2
        hooked = Run(run.home, run.env | {"FBE_TEST_KILL_AFTER_LINK": str(n)})
        proc = hooked.spawn(*spy_load, code=KILL_AFTER_LINK)
        assert proc.wait(120) == -signal.SIGKILL
        # The Nth object is in place but not (yet) in the manifest.
        stored = {o.key for o in run.store.stored_objects()}
        assert len(stored) == n
        assert _manifest_records(run) == n - 1
    elif point == "after-1st-manifest-record":
        proc = run.spawn(*spy_load)
        _kill_when(proc, lambda: _manifest_records(run) >= 1)
        assert _manifest_records(run) < len(clean.objects)
    else:
        proc = run.spawn(*spy_load)
        _kill_after(proc, float(point.removeprefix("at-").removesuffix("s")))
    # Whatever was recorded before the crash is a correct part of the clean store.
    partial = _objects(run)
    assert partial.items() <= clean.objects.items()
    assert len(partial) < len(clean.objects)

    _rerun_loads(run, clean)
    _assert_store_intact(run, clean)


def test_sigkill_during_materialize_repeatedly(tmp_path: Path, clean: Clean) -> None:
    """Three crashed runs in a row on a store without tables, then one to the end.

    Kill points: after the 3rd and the 10th materialization of a run (SPY's two sessions are
    one batched run, BTCUSDT's session another) and 12 s into a run.
    """
    run = _fresh(tmp_path, clean, with_raw=True)
    # One complete run: 9 assets x 3 partitions, plus the second materialization of each
    # daily review of SPY's two-session batch (its own, after the batch's summary one).
    total = 9 * 3 + 2
    seen = 0
    for point in (3, 10, "12s"):
        proc = run.spawn("materialize", *SYMBOLS)
        if isinstance(point, int):
            _kill_when(proc, _materialized(run, seen + point))
        else:
            _kill_after(proc, float(point.removesuffix("s")))
        done = _materializations(run) - seen
        assert done < total, f"the run killed at {point} completed"
        seen += done
        # Nothing a killed run does touches the raw store.
        _assert_store_intact(run, clean)

    _check(run.fbe("materialize", *SYMBOLS))
    assert _materializations(run) == seen + total
    _assert_store_intact(run, clean)
    _assert_tables_equal(run.home, clean)


def _twice_at_once(run: Run, args: tuple[str, ...]) -> None:
    """Start the same ``fbe`` command twice at once; both must exit 0."""
    procs = [
        subprocess.Popen(
            run.cmd(*args),
            env=run.env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    for proc, out in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, out


def test_concurrent_materialize(tmp_path: Path, clean: Clean) -> None:
    """Two ``fbe materialize`` of the same partitions at once (on an instance and tables that
    exist): both succeed and the tables hold each row once."""
    home = tmp_path / "fbe_home"
    shutil.copytree(clean.run.home, home)
    run = Run(home, clean.run.env | {"FBE_HOME": str(home)})
    seen = _materializations(run)
    args = ("materialize", *SYMBOLS, "--from", "2013-10-08")  # SPY 2013-10-08 and BTCUSDT
    _twice_at_once(run, args)
    assert _materializations(run) == seen + 2 * 9 * 2  # 2 commands x 9 assets x 2 sessions
    _assert_store_intact(run, clean)
    _assert_tables_equal(run.home, clean)


def test_concurrent_materialize_on_a_new_home(tmp_path: Path, clean: Clean) -> None:
    """Two ``fbe materialize`` at once on a home with only its raw store (no Dagster instance,
    no DuckDB file yet): both create what they need without tripping on each other."""
    home = tmp_path / "fbe_home"
    shutil.copytree(clean.run.home / "raw", home / "raw")
    run = Run(home, clean.run.env | {"FBE_HOME": str(home)})
    args = ("materialize", *SYMBOLS)
    _twice_at_once(run, args)
    _assert_store_intact(run, clean)
    _assert_tables_equal(run.home, clean)


def test_manifest_record_count_matches_json(clean: Clean) -> None:
    """The kill-point probe counts manifest records by newline; check it against the parser."""
    lines = (clean.run.home / "raw" / "manifest.jsonl").read_text().splitlines()
    assert [json.loads(line)["key"] for line in lines] == list(clean.objects)
    assert _manifest_records(clean.run) == len(clean.objects)
