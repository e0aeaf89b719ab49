"""Live/batch parity on any tick files: replay them into a fresh ``fbe serve``, let the live
detector record its signals, run the batch pipeline on the sealed raw objects, and compare.

Usage::

    .venv/bin/python benchmarks/live_parity.py lean-trades \\
        ../shared/data/lean/bac/tick/*trade.zip --symbol BAC [--trigger 30] [--speed 0]

Prints per trading date the batch and live signal counts, how many ``signal_id`` match exactly
(same id, direction, score, components), and the live signals recorded before their bar closed
in event time (``closed_through`` < ``bar_close``; must be 0); exits 1 on any difference. Not a
test: it checks parity on data the test suite does not use (issue 8).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from fbe_pipeline.live.replay import read_ticks, replay_frame
from fbe_pipeline.live.signal_store import LiveSignalStore, signals_path
from fbe_pipeline.market.instruments import get_instrument
from fbe_pipeline.storage.warehouse import batch_signals

ROOT = Path(__file__).resolve().parents[1]
KEY = "parity-key"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(home: Path, trigger: float) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FBE_", "DAGSTER_"))}
    env.update(
        FBE_HOME=str(home),
        FBE_SCORING_CONFIG=json.dumps({"trigger_score": trigger}),
        FBE_WEBHOOK_PASSPHRASE="p",
        FBE_INGEST_HMAC_KEY=KEY,
        FBE_LIVE_SEAL_INTERVAL_S="1",
    )
    return env


def _wait_sealed(home: Path) -> None:
    with sqlite3.connect(home / "landing" / "idempotency.sqlite") as db:
        while db.execute(
            "SELECT (SELECT count(*) FROM landed WHERE sealed IS NULL)"
            " + (SELECT count(*) FROM seals WHERE state = 'pending')"
        ).fetchone()[0]:
            time.sleep(0.5)


def main() -> int:
    """Run the comparison; returns the exit status (0: identical)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("fmt")
    parser.add_argument("paths", nargs="+", type=Path)
    parser.add_argument("--symbol", required=True)
    parser.add_argument("--trigger", type=float, default=30)
    parser.add_argument("--speed", type=float, default=0.0)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="fbe-parity-"))
    env = _env(home, args.trigger)
    port = _port()
    server = subprocess.Popen(
        [sys.executable, "-m", "fbe_pipeline.cli", "serve", "--port", str(port)],
        env=env,
        cwd=ROOT,
    )
    try:
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        ticks = read_ticks(args.fmt, args.paths, get_instrument(args.symbol))
        report = replay_frame(ticks, f"http://127.0.0.1:{port}", KEY, speed=args.speed)
        print(
            f"replayed {report.sent:,} ticks in {report.elapsed_s:.1f} s "
            f"({report.accepted:,} accepted, {report.duplicates:,} duplicates)"
        )
        _wait_sealed(home)
    finally:
        server.terminate()
        server.wait(60)
    subprocess.run(
        [sys.executable, "-m", "fbe_pipeline.cli", "materialize", "--symbol", args.symbol],
        env=env,
        cwd=ROOT,
        check=True,
    )
    store = LiveSignalStore(signals_path(home))
    live = store.signals(args.symbol)
    store.close()
    batch = batch_signals(args.symbol, source=home)
    cols = ["signal_id", "direction", "score", "components"]
    failures = 0
    for day in sorted(set(batch["trading_date"]) | set(live["trading_date"])):
        b = batch[batch["trading_date"] == day]
        lv = live[live["trading_date"] == day]
        same = b[cols].merge(lv[cols], how="inner")
        early = int((lv["closed_through"] < lv["bar_close"]).sum())
        ok = len(same) == len(b) == len(lv) and early == 0
        failures += not ok
        print(
            f"{args.symbol} {day:%Y-%m-%d}: batch {len(b)}, live {len(lv)}, identical "
            f"{len(same)}, live before its bar closed {early} -> {'OK' if ok else 'DIFFERENT'}"
        )
    shutil.rmtree(home, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
