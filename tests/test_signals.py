"""SIGTERM and SIGINT stop ``scripts/ui.sh`` and ``fbe materialize`` within 10 s, leaving no
process behind, and a re-run afterwards succeeds.

Each command starts in a session of its own; "no process left" means no live (non-zombie)
process of that session once the command has exited. The signal goes to the command's own
process only, as ``kill PID`` or a process supervisor sends it (Ctrl-C in a terminal reaches the
whole foreground process group, which is the easier case).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.processes import cli_env

REPO = Path(__file__).resolve().parents[1]
STOP_WITHIN = 10.0
SIGNALS = [signal.SIGTERM, signal.SIGINT]


def _session_processes(sid: int) -> list[str]:
    """``pid command`` of every live process of session ``sid`` (zombies excluded)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # state, ppid, pgrp, session, ...
        if int(fields[3]) == sid and fields[0] != "Z":
            found.append(f"{entry.name} {cmdline.strip()[:160]}")
    return found


def _kill_session(sid: int) -> None:
    """Test cleanup only: SIGKILL whatever the command under test left behind."""
    for line in _session_processes(sid):
        with contextlib.suppress(OSError):
            os.kill(int(line.split()[0]), signal.SIGKILL)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _fbe(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fbe_pipeline.cli", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _runs(home: Path) -> list[tuple[str, str]]:
    """``(partition, status)`` of every partition run of the instance, oldest first."""
    db = home / "dagster" / "history" / "runs.db"
    if not db.exists():
        return []
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
            rows = con.execute(
                "select partition, status from runs where partition is not null order by id"
            ).fetchall()
    except sqlite3.Error:
        return []
    return [(str(p), str(s)) for p, s in rows]


def _materializations(home: Path) -> int:
    index = home / "dagster" / "history" / "runs" / "index.db"
    if not index.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{index}?mode=ro", uri=True, timeout=0.2) as con:
            row = con.execute(
                "select count(*) from event_logs where dagster_event_type = 'ASSET_MATERIALIZATION'"
            ).fetchone()
    except sqlite3.Error:
        return 0
    return int(row[0]) if row else 0


def _stop(proc: subprocess.Popen[bytes], sig: signal.Signals) -> float:
    """Send ``sig`` to ``proc``; return the seconds until it exited (fails beyond 10 s)."""
    start = time.monotonic()
    proc.send_signal(sig)
    try:
        proc.wait(STOP_WITHIN)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running {STOP_WITHIN} s after {sig.name}")
    return time.monotonic() - start


@pytest.fixture(scope="module")
def loaded_spy(tmp_path_factory: pytest.TempPathFactory, sample_data: Path) -> Path:
    """An FBE_HOME whose raw store holds SPY 2013-10-07."""
    home = tmp_path_factory.mktemp("loaded_spy") / "fbe_home"
    spy = sample_data / "lean" / "spy" / "tick" / "20131007_trade.zip"
    result = _fbe(_env(home, sample_data), "load", "lean-trades", str(spy), "--symbol", "SPY")
    assert result.returncode == 0, result.stderr
    return home


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory, sample_data: Path, loaded_spy: Path) -> Path:
    """An FBE_HOME whose raw store holds SPY 2013-10-07 and the Tardis BTCUSDT trades."""
    home = tmp_path_factory.mktemp("loaded") / "fbe_home"
    shutil.copytree(loaded_spy, home)
    btc = sample_data / "tardis" / "tardis_binance-futures_BTCUSDT_trades_2020-02-22.csv"
    result = _fbe(_env(home, sample_data), "load", "tardis-trades", str(btc), "--symbol", "BTCUSDT")
    assert result.returncode == 0, result.stderr
    return home


def _env(home: Path, sample: Path) -> dict[str, str]:
    return cli_env(home, sample)


def _copy_raw(source: Path, tmp_path: Path) -> Path:
    """A fresh FBE_HOME with the raw store of ``source`` and no Dagster instance or tables."""
    target = tmp_path / "fbe_home"
    target.mkdir()
    shutil.copytree(source / "raw", target / "raw")
    return target


@pytest.fixture
def home(tmp_path: Path, loaded: Path) -> Path:
    """SPY 2013-10-07 and BTCUSDT 2020-02-22: two partitions to materialize."""
    return _copy_raw(loaded, tmp_path)


@pytest.fixture
def spy_home(tmp_path: Path, loaded_spy: Path) -> Path:
    """SPY 2013-10-07 only."""
    return _copy_raw(loaded_spy, tmp_path)


@pytest.fixture
def session() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes started by the test, each in a session of its own; cleaned up afterwards."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        _kill_session(proc.pid)


def _wait_http(proc: subprocess.Popen[bytes], url: str, log: Path, limit: float = 150) -> None:
    deadline = time.monotonic() + limit
    while True:
        assert proc.poll() is None, f"ui.sh exited with {proc.returncode}:\n{log.read_text()}"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                assert response.status == 200
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        assert time.monotonic() < deadline, f"no webserver at {url}:\n{log.read_text()[-3000:]}"
        time.sleep(0.5)


def _graphql(port: int, query: str, variables: dict[str, object]) -> dict[str, object]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query, "variables": variables}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        body: dict[str, object] = json.loads(response.read())
    return body


LAUNCH = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
  }
}
"""


def _ui_with_a_run(
    spy_home: Path, sample_data: Path, tmp_path: Path, session: list[subprocess.Popen[bytes]]
) -> tuple[subprocess.Popen[bytes], Path]:
    """``scripts/ui.sh`` on ``spy_home`` with a run of SPY 2013-10-07 launched as the UI does,
    once the run is one second into its steps; returns the script's process and its log."""
    port = _free_port()
    log = tmp_path / "ui.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["bash", "scripts/ui.sh", "-p", str(port)],
            env=_env(spy_home, sample_data),
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    session.append(proc)
    _wait_http(proc, f"http://127.0.0.1:{port}/server_info", log)
    params = {
        "selector": {
            "repositoryLocationName": "fbe",
            "repositoryName": "__repository__",
            "jobName": "fbe_pipeline_SPY",
        },
        "executionMetadata": {"tags": [{"key": "dagster/partition", "value": "2013-10-07"}]},
    }
    deadline = time.monotonic() + 90
    while True:  # the code location loads after the webserver answers
        launched = _graphql(port, LAUNCH, {"params": params})["data"]["launchRun"]  # type: ignore[index]
        if launched["__typename"] == "LaunchRunSuccess":
            break
        assert time.monotonic() < deadline, launched
        time.sleep(1)
    deadline = time.monotonic() + 90
    while _runs(spy_home) != [("2013-10-07", "STARTED")]:
        assert time.monotonic() < deadline, f"run not started: {_runs(spy_home)}"
        time.sleep(0.2)
    time.sleep(1.0)  # into the run's steps
    return proc, log


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: s.name)
def test_ui_stops_with_a_run_in_progress(
    spy_home: Path,
    sample_data: Path,
    tmp_path: Path,
    session: list[subprocess.Popen[bytes]],
    sig: signal.Signals,
) -> None:
    """``dagster dev`` alone left its code servers and the run going for 40-75 s."""
    proc, log = _ui_with_a_run(spy_home, sample_data, tmp_path, session)
    assert len(_session_processes(proc.pid)) >= 5  # dagster dev, webserver, daemon, code servers

    seconds = _stop(proc, sig)
    # A process killed at the deadline may still be exiting (no cmdline left) for a moment.
    settle = time.monotonic() + 3
    while (left := _session_processes(proc.pid)) and time.monotonic() < settle:
        time.sleep(0.1)
    assert left == [], f"left after {sig.name}: {left}"
    assert proc.returncode == 128 + sig, log.read_text()[-3000:]
    assert seconds < STOP_WITHIN
    # The run was interrupted and recorded as such, not left "started" with nothing running it.
    assert _runs(spy_home)[0][1] in ("FAILURE", "CANCELED"), _runs(spy_home)


def test_a_run_whose_worker_died_is_recorded_as_failed_when_the_ui_stops(
    spy_home: Path, sample_data: Path, tmp_path: Path, session: list[subprocess.Popen[bytes]]
) -> None:
    """A run worker killed with its code server before either could record anything (SIGKILL)
    leaves its run "started"; stopping the UI records it as failed (the reaper of
    ``scripts/ui.sh``)."""
    proc, log = _ui_with_a_run(spy_home, sample_data, tmp_path, session)
    # The run worker announces itself in the UI's log: "Executing steps in process (pid: N)".
    deadline = time.monotonic() + 30
    while not (found := re.search(r"Executing steps in process \(pid: (\d+)\)", log.read_text())):
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.2)
    worker = int(found.group(1))
    # Its code server first (it would record the worker's death), then the worker: as when
    # both die at the UI's stop deadline.
    server = int(Path(f"/proc/{worker}/stat").read_text().rsplit(")", 1)[1].split()[1])
    os.kill(server, signal.SIGKILL)
    os.kill(worker, signal.SIGKILL)
    time.sleep(1.0)
    assert _runs(spy_home) == [("2013-10-07", "STARTED")]
    seconds = _stop(proc, signal.SIGTERM)
    assert seconds < STOP_WITHIN
    assert _runs(spy_home) == [("2013-10-07", "FAILURE")], log.read_text()[-3000:]
    assert "recorded as failed" in log.read_text()


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: s.name)
def test_materialize_stops_then_reruns(
    home: Path,
    sample_data: Path,
    session: list[subprocess.Popen[bytes]],
    sig: signal.Signals,
) -> None:
    """Dagster turns the signal into a failed run; fbe used to go on with the next partition."""
    env = _env(home, sample_data)
    proc = subprocess.Popen(
        [sys.executable, "-m", "fbe_pipeline.cli", "materialize"],
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    session.append(proc)
    deadline = time.monotonic() + 120
    while _materializations(home) < 1:  # inside the first partition's run
        assert proc.poll() is None, "materialize finished before the signal"
        assert time.monotonic() < deadline
        time.sleep(0.02)

    seconds = _stop(proc, sig)
    # A process killed at the deadline may still be exiting (no cmdline left) for a moment.
    settle = time.monotonic() + 3
    while (left := _session_processes(proc.pid)) and time.monotonic() < settle:
        time.sleep(0.1)
    assert left == [], f"left after {sig.name}: {left}"
    assert proc.returncode == 130  # KeyboardInterrupt, for SIGTERM too
    assert seconds < STOP_WITHIN
    # Stopped in the first partition (SPY): no run completed, so BTCUSDT was not materialized.
    # (At most its run was started and failed at once, when the interrupt came back to fbe only
    # after Dagster had created that run.)
    runs = _runs(home)
    assert runs[0] == ("2013-10-07", "FAILURE")
    assert runs[1:] in ([], [("2020-02-22", "FAILURE")])
    seen = len(runs)

    result = _fbe(env, "materialize")
    assert result.returncode == 0, result.stdout + result.stderr
    assert _runs(home)[seen:] == [("2013-10-07", "SUCCESS"), ("2020-02-22", "SUCCESS")]
