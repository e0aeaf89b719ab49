"""Wall time of a backfill launched as the Dagster UI launches it, against ``fbe materialize``.

What is measured
----------------
The real sample data set (``$FBE_SAMPLE_DATA``) is loaded into two fresh, temporary
``FBE_HOME`` directories with ``fbe load-sample`` (or, with ``--generated N``, N sessions of
each of two synthetic XNYS instruments from ``benchmarks/generate.py``, loaded with ``fbe load
parquet``). Then:

1. **baseline** -- ``fbe materialize`` on the first home (in-process runs of up to 10
   consecutive sessions);
2. **UI backfill** -- ``scripts/ui.sh`` (``dagster dev``: webserver and daemon) on the second
   home, and the GraphQL mutation the UI sends for "Materialize all partitions" of every lane
   asset (``launchPartitionBackfill`` with ``allPartitions``); timed from the mutation until the
   backfill's status is ``COMPLETED``. The backfill daemon picks a backfill up on its loop (up
   to 30 s), a fixed cost that is printed apart.

Both homes must end with the same tables, compared row for row. Prints both wall times and the
ratio. Run from the repository root with the project's virtualenv (about 3-5 minutes)::

    python benchmarks/bench_ui_backfill.py [--keep] [--generated SESSIONS [--ticks 20000]]

Exit status: 0 on success, 1 when the backfill fails or the tables differ, 2 without sample data.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pandas as pd

from fbe_pipeline.storage.warehouse import open_tables

REPO = Path(__file__).resolve().parents[1]
TABLES: tuple[str, ...] = ("raw_ticks", "bars_1m", "features", "scores", "signals")
TABLES += ("regime_tags", "backtest_trades", "backtest_summary")
LAUNCH = """
mutation Launch($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
  }
}
"""
STATUS = """
query Status($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    ... on PartitionBackfill { status }
    ... on PythonError { message }
  }
}
"""


def env_for(home: Path) -> dict[str, str]:
    """``fbe`` environment on ``home`` with the demo config (trigger 30)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FBE_", "DAGSTER_"))}
    env.update(FBE_HOME=str(home), FBE_SCORING_CONFIG='{"trigger_score": 30}')
    if "FBE_SAMPLE_DATA" in os.environ:
        env["FBE_SAMPLE_DATA"] = os.environ["FBE_SAMPLE_DATA"]
    return env


def fbe(home: Path, *args: str) -> float:
    """Run ``fbe ARGS`` on ``home``; return its wall time in seconds (raises on failure)."""
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "fbe_pipeline.cli", *args],
        env=env_for(home),
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - start


def graphql(port: int, query: str, variables: dict[str, object]) -> dict[str, object]:
    """POST one GraphQL request to the webserver on ``port``."""
    body = json.dumps({"query": query, "variables": variables}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql", body, {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return dict(json.loads(response.read()))


def lane_assets(home: Path) -> list[list[str]]:
    """Asset key paths of every lane table of the code location built on ``home``."""
    code = (
        "import json; from assets import PIPELINE_TABLES; "
        "from fbe_pipeline.definitions import defs; "
        "print(json.dumps([k.path for k in defs().resolve_asset_graph().get_all_asset_keys() "
        "if len(k.path) == 2 and k.path[1] in PIPELINE_TABLES]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env_for(home), cwd=REPO, check=True, capture_output=True
    )
    return list(json.loads(out.stdout.decode().strip().splitlines()[-1]))


def tables(home: Path) -> dict[str, pd.DataFrame]:
    """Every pipeline table of ``home``, rows in a fixed order."""
    with open_tables(home) as con:
        return {t: con.execute(f"select * from {t} order by all").fetchdf() for t in TABLES}


def ui_backfill(home: Path) -> tuple[float, float]:
    """Start ``scripts/ui.sh`` on ``home``, backfill every partition of every lane asset.

    Returns (seconds from launch to COMPLETED, seconds until the first run started).
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    log = (home / "ui.log").open("wb")
    proc = subprocess.Popen(
        ["bash", "scripts/ui.sh", "-p", str(port)],
        env=env_for(home),
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        keys = lane_assets(home)
        deadline = time.monotonic() + 180
        while True:
            try:
                launched = graphql(
                    port,
                    LAUNCH,
                    {
                        "params": {
                            "assetSelection": [{"path": k} for k in keys],
                            "allPartitions": True,
                        }
                    },
                )["data"]["launchPartitionBackfill"]  # type: ignore[index]
            except OSError:
                launched = {"__typename": "not up"}
            if launched["__typename"] == "LaunchBackfillSuccess":
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"backfill not launched: {launched}")
            time.sleep(1)
        start = time.perf_counter()
        first_run = 0.0
        runs_db = home / "dagster" / "history" / "runs.db"
        while True:
            status = graphql(port, STATUS, {"id": launched["backfillId"]})
            state = status["data"]["partitionBackfillOrError"]["status"]  # type: ignore[index]
            if not first_run and runs_db.exists():
                with sqlite3.connect(f"file:{runs_db}?mode=ro", uri=True) as con:
                    if con.execute("select count(*) from runs").fetchone()[0]:
                        first_run = time.perf_counter() - start
            if state in ("COMPLETED", "FAILED", "CANCELED", "COMPLETED_SUCCESS"):
                if state not in ("COMPLETED", "COMPLETED_SUCCESS"):
                    raise RuntimeError(f"backfill ended {state}")
                return time.perf_counter() - start, first_run
            time.sleep(0.5)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(60)
        log.close()


def load_generated(home: Path, data: Path) -> None:
    """``fbe load parquet`` every generated session of every symbol under ``data``."""
    for folder in sorted(p for p in data.iterdir() if p.is_dir()):
        files = [str(f) for f in sorted(folder.glob("*.parquet"))]
        args = ["--symbol", folder.name, "--calendar", "XNYS"]
        fbe(home, "load", "parquet", *files, *args, "--tick-size", "0.01", "--lot-size", "1")


def main() -> int:
    """Measure, compare the tables, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--keep", action="store_true", help="keep the temporary homes")
    parser.add_argument(
        "--generated",
        type=int,
        default=0,
        metavar="SESSIONS",
        help="instead of the sample data: SESSIONS generated XNYS sessions of each of two "
        "synthetic symbols (benchmarks/generate.py, --ticks trades per session)",
    )
    parser.add_argument("--ticks", type=int, default=20_000)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="fbe-bench-ui-"))
    try:
        base, ui = root / "cli", root / "ui"
        if args.generated:
            subprocess.run(
                [
                    sys.executable,
                    str(REPO / "benchmarks" / "generate.py"),
                    str(root / "data"),
                    "--sessions",
                    str(args.generated),
                    "--ticks",
                    str(args.ticks),
                ],
                check=True,
                capture_output=True,
            )
        for home in (base, ui):
            if args.generated:
                load_generated(home, root / "data")
            else:
                fbe(home, "load-sample")
        t_cli = fbe(base, "materialize")
        sessions = sum(1 for _ in (base / "raw" / "ticks").glob("*/*/*/*"))
        print(f"{sessions} sessions")
        t_ui, t_first = ui_backfill(ui)
        same = all(
            a.equals(b) for a, b in zip(tables(base).values(), tables(ui).values(), strict=True)
        )
        print(f"fbe materialize (baseline):           {t_cli:7.1f} s")
        print(f"UI backfill, launch -> completed:     {t_ui:7.1f} s")
        print(f"  of which until the first run:       {t_first:7.1f} s (daemon loop, fixed cost)")
        print(f"ratio UI / CLI:                       {t_ui / t_cli:7.2f}x")
        print(f"ratio (UI - first-run wait) / CLI:    {(t_ui - t_first) / t_cli:7.2f}x")
        print(f"tables identical: {same}")
        return 0 if same else 1
    finally:
        if args.keep:
            print(f"homes kept under {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
