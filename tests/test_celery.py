"""Scale-out with configuration only (issue 12): the sample backfill of two instruments runs on
dagster-celery's executor, with a real Redis broker and two Celery worker processes, the Dagster
instance in PostgreSQL and the raw store and warehouse on S3 (moto's server), and gives the
same tables, row for row, as the default in-process run on one machine.

The code location is unchanged; only the environment differs (``FBE_EXECUTOR=celery``, the
broker and backend URLs, ``dagster.postgres.yaml``, ``FBE_RAW_BACKEND=s3``,
``FBE_WAREHOUSE_BACKEND=s3``), and the workers start from the repository's ``celery.yaml``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import pytest

from assets import PIPELINE_TABLES
from fbe_pipeline.market.ingest import load_file
from fbe_pipeline.market.instruments import get_instrument
from fbe_pipeline.market.sample import sample_files
from fbe_pipeline.settings import prepare_dagster_home
from fbe_pipeline.storage.store import LocalRawStore, RawStore
from fbe_pipeline.storage.store_s3 import S3RawStore, init_bucket
from fbe_pipeline.storage.tables import Warehouse
from fbe_pipeline.storage.warehouse import open_tables, s3_client, table_names
from sensors import pipeline_job_name
from tests.pg import PostgresServer
from tests.processes import cli_env

if TYPE_CHECKING:
    from dagster import DagsterInstance, ExecutorDefinition

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SYMBOLS = ("SPY", "BAC")
DAYS = (date(2013, 10, 7), date(2013, 10, 8))
WORKERS = ("fbe-w1", "fbe-w2")
START_TIMEOUT = 60  # seconds, for redis-server and each worker to come up
RUN_TIMEOUT = 240  # seconds, for one run of two sessions (in-process or on the workers)
_UNSET = ("FBE_", "DAGSTER_", "AWS_")

Step = tuple[str, str]  # (symbol, step key)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stop(process: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """Stop a process started in a session of its own, with everything it started."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=grace)
    # The group may outlive its leader (dagster-celery's `celery` child): kill what is left.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=grace)


def _tail(path: Path, limit: int = 3000) -> str:
    return path.read_text(errors="replace")[-limit:] if path.exists() else f"<no {path}>"


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    """A throwaway ``redis-server`` on a free loopback port (no persistence); its URL."""
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(binary).is_file():
        pytest.skip(
            "redis-server not found: install Debian's redis-server (`apt-get install "
            "redis-server`; scripts/test.sh does when run as root)"
        )
    import redis

    workdir = tmp_path / "redis"
    workdir.mkdir()
    port = _free_port()
    log = workdir / "redis.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [
                binary,
                "--port", str(port),
                "--bind", "127.0.0.1",
                "--dir", str(workdir),
                "--save", "",
                "--appendonly", "no",
                "--daemonize", "no",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if server.poll() is not None:
                pytest.fail(f"redis-server exited ({server.returncode}):\n{_tail(log)}")
            with contextlib.suppress(redis.ConnectionError):
                if client.ping():
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"redis-server not answering on port {port}:\n{_tail(log)}")
            time.sleep(0.1)
        client.close()
        yield f"redis://127.0.0.1:{port}"
    finally:
        _stop(server)


@pytest.fixture
def cluster_env(
    tmp_path: Path,
    sample_data: Path,
    redis_url: str,
    s3_env: dict[str, str],
    postgres_server: PostgresServer,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[dict[str, str]]:
    """The environment of every process of the scaled-out deployment: its own ``FBE_HOME``,
    the Dagster instance and the operational store on PostgreSQL, raw store and warehouse on
    S3, the celery executor on the Redis broker. Also set in this process (to read results)."""
    home = tmp_path / "cluster"
    names = [f"fbe_celery_dagster_{os.getpid()}", f"fbe_celery_ops_{os.getpid()}"]
    dagster_url, ops_url = (postgres_server.create_database(name) for name in names)
    env = cli_env(
        home,
        sample_data,
        **s3_env,
        FBE_DAGSTER_YAML="dagster.postgres.yaml",
        # dagster-postgres is written for psycopg2; FBE's own store uses psycopg 3.
        FBE_DAGSTER_PG_URL=dagster_url.replace("+psycopg://", "+psycopg2://"),
        FBE_DATABASE_URL=ops_url,
        FBE_WAREHOUSE_BACKEND="s3",
        FBE_EXECUTOR="celery",
        FBE_CELERY_BROKER=f"{redis_url}/0",
        FBE_CELERY_BACKEND=f"{redis_url}/1",
        DAGSTER_HOME=str(home / "dagster"),
        # dagster-celery starts workers as `celery ...`: find the venv's.
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    for key in [k for k in os.environ if k.startswith(_UNSET)]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    prepare_dagster_home()
    try:
        yield env
    finally:
        for name in names:
            postgres_server.drop_database(name)


@pytest.fixture
def celery_workers(cluster_env: dict[str, str], tmp_path: Path) -> Iterator[dict[str, int]]:
    """Two ``dagster-celery`` workers on the broker, each one process (solo pool: a step runs
    in the worker's own process, so its events carry that pid); ``{node name: pid}``."""
    logs = tmp_path / "workers"
    logs.mkdir()
    started: list[tuple[str, subprocess.Popen[bytes]]] = []
    try:
        for name in WORKERS:
            with (logs / f"{name}.out").open("wb") as out:
                started.append(
                    (
                        name,
                        subprocess.Popen(
                            [
                                str(BIN / "dagster-celery"), "worker", "start",
                                "-A", "dagster_celery.app",
                                "-y", str(REPO / "celery.yaml"),
                                "-n", name,
                                "--",
                                "--pool=solo",
                                f"--pidfile={logs / name}.pid",
                                f"--logfile={logs / name}.log",
                            ],
                            env=cluster_env,
                            cwd=REPO,
                            stdout=out,
                            stderr=subprocess.STDOUT,
                            start_new_session=True,
                        ),
                    )
                )  # fmt: skip
        pids = {}
        deadline = time.monotonic() + START_TIMEOUT
        for name, process in started:
            log = logs / f"{name}.log"
            while " ready." not in (log.read_text(errors="replace") if log.exists() else ""):
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(
                        f"celery worker {name} did not start:\n{_tail(logs / f'{name}.out')}"
                        f"\n{_tail(log)}"
                    )
                time.sleep(0.2)
            pids[f"{name}@{socket.gethostname()}"] = int((logs / f"{name}.pid").read_text())
        yield pids
    finally:
        for _, process in started:
            _stop(process)


def _load(store: RawStore, sample_data: Path) -> int:
    """Load the sample files of ``SYMBOLS`` on ``DAYS`` as `fbe load-sample` does; rows."""
    days = {f"{day:%Y%m%d}" for day in DAYS}
    rows = 0
    for item in sample_files(sample_data):
        if item.symbol in SYMBOLS and item.path.name[:8] in days:
            rows += load_file(store, item.fmt, item.path, get_instrument(item.symbol)).rows
    return rows


def _tables(source: Warehouse | Path) -> dict[str, pd.DataFrame]:
    """Every pipeline table, rows in a canonical order."""
    with open_tables(source) as con:
        return {t: con.execute(f"select * from {t} order by all").df() for t in PIPELINE_TABLES}


def _run_on_workers(env: dict[str, str], tmp_path: Path) -> dict[str, int]:
    """One run per instrument over both sessions (a ranged run, as a backfill launches it),
    through `dagster job execute` with the celery executor, the two runs at once; their
    orchestrating pids by symbol."""
    tags = {
        "dagster/asset_partition_range_start": DAYS[0].isoformat(),
        "dagster/asset_partition_range_end": DAYS[-1].isoformat(),
    }
    runs: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
    try:
        for symbol in SYMBOLS:
            log = tmp_path / f"run_{symbol}.log"
            with log.open("wb") as out:
                runs[symbol] = (
                    subprocess.Popen(
                        [
                            str(BIN / "dagster"), "job", "execute",
                            "-m", "fbe_pipeline.definitions",
                            "-a", "defs",
                            "-j", pipeline_job_name(symbol),
                            "--tags", json.dumps(tags),
                        ],
                        env=env,
                        cwd=REPO,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    ),
                    log,
                )  # fmt: skip
        deadline = time.monotonic() + RUN_TIMEOUT
        for symbol, (process, log) in runs.items():
            try:
                code = process.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pytest.fail(f"{symbol} run on the workers timed out:\n{_tail(log)}")
            assert code == 0, f"{symbol} run on the workers failed ({code}):\n{_tail(log)}"
        return {symbol: process.pid for symbol, (process, _) in runs.items()}
    finally:
        for process, _ in runs.values():
            _stop(process)


def _run_in_process(home: Path, sample_data: Path) -> None:
    """The one-machine reference: local raw store and warehouse, SQLite instance, in-process
    executor, through `fbe materialize` (ranged runs of up to 10 sessions)."""
    assert _load(LocalRawStore(home / "raw"), sample_data) > 0
    env = cli_env(home, sample_data)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "fbe_pipeline.cli",
            "materialize",
            *(f"--symbol={s}" for s in SYMBOLS),
        ],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"


def _placement(instance: DagsterInstance) -> tuple[dict[Step, str], dict[Step, set[int]]]:
    """Of each step of the one run of each instrument's job (which must have succeeded): the
    Celery worker that its worker-side engine event names, and the pids its step events came
    from."""
    from dagster import DagsterEventType, DagsterRunStatus, RunsFilter

    worker_of_step: dict[Step, str] = {}
    step_pids: dict[Step, set[int]] = {}
    for symbol in SYMBOLS:
        [run] = instance.get_runs(RunsFilter(job_name=pipeline_job_name(symbol)))
        assert run.status == DagsterRunStatus.SUCCESS, symbol
        for entry in instance.all_logs(run.run_id):
            event = entry.dagster_event
            if event is None or event.step_key is None:
                continue
            key = (symbol, event.step_key)
            if event.event_type == DagsterEventType.ENGINE_EVENT:
                worker = event.engine_event_data.metadata.get("Celery worker")
                if worker is not None:
                    worker_of_step[key] = str(worker.value)
            elif event.event_type in (DagsterEventType.STEP_START, DagsterEventType.STEP_SUCCESS):
                # -1 for an event without a pid: it can then match no worker.
                step_pids.setdefault(key, set()).add(-1 if event.pid is None else event.pid)
    return worker_of_step, step_pids


def test_backfill_on_celery_workers_matches_in_process_run(
    cluster_env: dict[str, str],
    celery_workers: dict[str, int],
    sample_data: Path,
    tmp_path: Path,
) -> None:
    from dagster import DagsterInstance
    from dagster_postgres import PostgresRunStorage

    env = cluster_env
    client = s3_client(env["FBE_S3_ENDPOINT_URL"], env["AWS_DEFAULT_REGION"])
    init_bucket(client, env["FBE_S3_BUCKET"])
    loaded = _load(S3RawStore(client, env["FBE_S3_BUCKET"]), sample_data)
    assert loaded > 0

    orchestrators = _run_on_workers(env, tmp_path)
    reference_home = tmp_path / "one_machine"
    _run_in_process(reference_home, sample_data)

    # The runs are in the PostgreSQL instance and succeeded; every step ran in a worker: the
    # worker's engine event names it, and the step's own events carry that worker's pid.
    with DagsterInstance.get() as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        worker_of_step, step_pids = _placement(instance)
    tables = {(s, f"{s}__{t}") for s in SYMBOLS for t in PIPELINE_TABLES}
    assert tables <= set(step_pids), sorted(step_pids)
    assert set(worker_of_step) == set(step_pids)
    assert set(worker_of_step.values()) == set(celery_workers), worker_of_step
    for key, pids in step_pids.items():
        assert pids == {celery_workers[worker_of_step[key]]}, (key, pids, celery_workers)
    assert not set(orchestrators.values()) & {p for ps in step_pids.values() for p in ps}

    # Outputs are on S3 (nothing in the cluster home's warehouse directory) ...
    listed = client.list_objects_v2(Bucket=env["FBE_S3_BUCKET"], Prefix="warehouse/bars_1m/")
    assert sorted(o["Key"] for o in listed.get("Contents", [])) == [
        f"warehouse/bars_1m/{s}/{d.isoformat()}.parquet" for s in sorted(SYMBOLS) for d in DAYS
    ]
    assert not (Path(env["FBE_HOME"]) / "warehouse").exists()
    # ... and the same, row for row, as the one-machine run's.
    distributed = _tables(Path(env["FBE_HOME"]))
    reference_warehouse = Warehouse.local(reference_home / "warehouse")
    reference = _tables(reference_warehouse)
    assert table_names(Path(env["FBE_HOME"])) == table_names(reference_warehouse)
    assert set(PIPELINE_TABLES) <= table_names(reference_warehouse)
    for name, frame in reference.items():
        pd.testing.assert_frame_equal(distributed[name], frame, check_exact=True, obj=name)
    bars = reference["bars_1m"].groupby(["symbol", "trading_date"]).size()
    assert bars.tolist() == [390] * 4  # two full NYSE sessions of each instrument
    assert len(reference["raw_ticks"]) > 100_000
    assert len(reference["signals"]) > 0


def _resolved(executor: ExecutorDefinition) -> dict[str, Any]:
    """The executor's config as a run starting now would get it (variables read now)."""
    schema: Any = executor.config_schema  # a configured definition's schema resolves its own
    return dict(schema.resolve_config({}).value["config"])


def test_executor_from_env_selects_by_fbe_executor(monkeypatch: pytest.MonkeyPatch) -> None:
    from dagster import in_process_executor

    from fbe_pipeline.executor import executor_from_env

    for name in ("FBE_EXECUTOR", "FBE_CELERY_BROKER", "FBE_CELERY_BACKEND"):
        monkeypatch.delenv(name, raising=False)
    assert executor_from_env() is in_process_executor
    monkeypatch.setenv("FBE_EXECUTOR", "in_process")
    assert executor_from_env() is in_process_executor

    monkeypatch.setenv("FBE_EXECUTOR", "celery")
    with pytest.raises(ValueError, match="FBE_CELERY_BROKER and FBE_CELERY_BACKEND"):
        executor_from_env()
    monkeypatch.setenv("FBE_CELERY_BROKER", "redis://127.0.0.1:6379/0")
    with pytest.raises(ValueError, match="needs FBE_CELERY_BACKEND:"):
        executor_from_env()
    monkeypatch.setenv("FBE_CELERY_BACKEND", "redis://127.0.0.1:6379/1")
    celery = executor_from_env()
    assert celery.name == "celery"
    config = _resolved(celery)
    assert (config["broker"], config["backend"]) == (
        "redis://127.0.0.1:6379/0",
        "redis://127.0.0.1:6379/1",
    )
    # The URLs are references to the variables, read when a run starts, not when the code
    # location loads (nor stored with the run).
    monkeypatch.setenv("FBE_CELERY_BROKER", "redis://broker.internal:6379/0")
    config = _resolved(celery)
    assert config["broker"] == "redis://broker.internal:6379/0"

    monkeypatch.setenv("FBE_EXECUTOR", "kubernetes")
    with pytest.raises(ValueError, match="unknown FBE_EXECUTOR 'kubernetes'; expected one of"):
        executor_from_env()
