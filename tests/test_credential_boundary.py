"""The execution boundary (issue 9): broker credentials reach the execution code location's
processes only. ``fbe live`` runs with ``FBE_BROKER_API_KEY`` set; a detection run (a real BAC
session) and a paper run are launched through its daemon, and every process under ``fbe live``
is sampled from ``/proc`` while they run.

Expected: the detection run's worker, the detection code server, the daemon and the ingest
service with its detector have no credential in their environment; the execution code server
and the paper run's worker have it; and nothing in detection imports the execution package
(``tests/test_definitions.py``).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

from fbe_pipeline.settings import REPO_ROOT, sample_data_dir
from tests.processes import cli_env
from tests.test_live import free_port
from tests.test_live_crash import _wait_healthy

SECRET = "broker-secret-4f2a"


@dataclass(frozen=True)
class Seen:
    """One sampled process."""

    pid: int
    ppid: int
    cmdline: str
    has_secret: bool


def _descendants(root: int) -> list[Seen]:
    """Every live process whose ancestry reaches ``root`` (and ``root``), from /proc."""
    procs: dict[int, tuple[int, str, bool]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        has = any(v.startswith(b"FBE_BROKER_API_KEY=") and SECRET.encode() in v for v in environ)
        procs[int(entry.name)] = (ppid, cmdline, has)
    found = []
    for pid, (ppid, cmdline, has) in procs.items():
        cursor, chain = pid, 0
        while cursor in procs and cursor != root and chain < 64:
            cursor, chain = procs[cursor][0], chain + 1
        if cursor == root:
            found.append(Seen(pid, ppid, cmdline, has))
    return found


def _fbe(env: dict[str, str], *args: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "fbe_pipeline.cli", *args],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr


def test_only_the_execution_location_holds_broker_credentials(tmp_path: Path) -> None:
    env = cli_env(
        tmp_path,
        sample_data_dir(),
        FBE_WEBHOOK_PASSPHRASE="p",
        FBE_INGEST_HMAC_KEY="k",
        FBE_BROKER_API_KEY=SECRET,
    )
    trades = sample_data_dir() / "lean" / "bac" / "tick" / "20131008_trade.zip"
    _fbe(env, "load", "lean-trades", str(trades), "--symbol", "BAC")
    port = free_port()
    live = subprocess.Popen(
        [sys.executable, "-m", "fbe_pipeline.cli", "live", "--no-ui", "--port", str(port)],
        env=env,
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    seen: dict[int, Seen] = {}
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            for process in _descendants(live.pid):
                seen.setdefault(process.pid, process)
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    dagster_home = tmp_path / "dagster"
    try:
        _wait_healthy(port, live, timeout_s=120)
        launch_env = {**env, "DAGSTER_HOME": str(dagster_home)}
        del launch_env["FBE_BROKER_API_KEY"]
        workspace = str(dagster_home / "live-workspace.yaml")
        dagster = str(Path(sys.executable).parent / "dagster")
        launch = [dagster, "job", "launch", "-w", workspace]
        for location, job, tags in (
            ("fbe", "fbe_pipeline_BAC", {"dagster/partition": "2013-10-08"}),
            ("fbe_execution", "paper_orders_job", {}),
        ):
            subprocess.run(
                [*launch, "-l", location, "-j", job, "--tags", json.dumps(tags)],
                env=launch_env,
                cwd=REPO_ROOT,
                check=True,
                capture_output=True,
                timeout=120,
            )
        os.environ["DAGSTER_HOME"] = str(dagster_home)
        with DagsterInstance.get() as instance:
            deadline = time.monotonic() + 300
            while True:
                runs = instance.get_runs(RunsFilter())
                finished = [r for r in runs if r.is_finished]
                if len(runs) == 2 and len(finished) == 2:
                    break
                assert time.monotonic() < deadline, [(r.job_name, r.status) for r in runs]
                time.sleep(0.5)
            assert {r.job_name: r.status for r in runs} == {
                "fbe_pipeline_BAC": DagsterRunStatus.SUCCESS,
                "paper_orders_job": DagsterRunStatus.SUCCESS,
            }
    finally:
        sampling.set()
        sampler.join()
        live.terminate()
        live.wait(timeout=60)
        os.environ.pop("DAGSTER_HOME", None)

    # The paper run's read of the credential is in the audit log: which, where, never the value.
    with sqlite3.connect(tmp_path / "ops.sqlite") as db:
        reads = db.execute(
            "SELECT actor, target, outcome, detail FROM audit WHERE action = 'credential_read'"
        ).fetchall()
        everything = " ".join(str(v) for row in db.execute("SELECT * FROM audit") for v in row)
    paper_run = next(r for r in runs if r.job_name == "paper_orders_job")
    assert [(a, t, o) for a, t, o, _ in reads] == [("fbe_execution", "FBE_BROKER_API_KEY", "ok")]
    assert reads[0][3].startswith("pid ") and paper_run.run_id in reads[0][3]
    assert SECRET not in everything

    def server(location: str) -> Seen:
        """The gRPC server that loads ``location``'s code and starts its runs' workers."""
        found = [
            p
            for p in seen.values()
            if "api grpc" in p.cmdline and f"--location-name {location} " in p.cmdline
        ]
        assert len(found) == 1, f"no code server of {location} was sampled"
        return found[0]

    def workers(location: str) -> list[Seen]:
        """Run workers: processes the location's gRPC server spawned for a run."""
        parent = server(location).pid
        return [p for p in seen.values() if p.ppid == parent and "spawn_main" in p.cmdline]

    detection, execution = server("fbe"), server("fbe_execution")
    assert workers("fbe") and workers("fbe_execution")
    assert not any(p.has_secret for p in workers("fbe"))
    assert all(p.has_secret for p in workers("fbe_execution"))
    assert execution.has_secret and not detection.has_secret
    daemons = [p for p in seen.values() if "dagster-daemon" in p.cmdline]
    assert daemons and not any(p.has_secret for p in daemons)
    ingest = [p for p in seen.values() if "fbe_pipeline.cli serve" in p.cmdline]
    assert len(ingest) == 1 and not ingest[0].has_secret
    # Whatever holds the credential is the execution location's code server or descends from it
    # (or `fbe live` itself, which only supervises and hands the credential to that server).
    for process in (p for p in seen.values() if p.has_secret and p.pid != live.pid):
        cursor = process
        while "execution_definitions" not in cursor.cmdline:
            assert cursor.ppid in seen, f"credential outside the execution location: {process}"
            cursor = seen[cursor.ppid]
