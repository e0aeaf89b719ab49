"""Bar close -> paper order recorded through the real ``fbe live`` (issue 9 acceptance).

What is measured
----------------
``fbe live --no-ui`` (``python -m fbe_pipeline.cli live``: the ingest service with its streaming
detector, plus the Dagster daemon whose ``paper_execution`` sensor, minimum interval 2 s, asks
for one ``paper_orders`` run per new live signal, run key ``signal:<signal_id>``, tag
``fbe/signal_id``) runs as a subprocess on a fresh temporary ``FBE_HOME`` with the demo scoring
config (trigger 30), ``FBE_EXECUTION_CONFIG={"validity_bars": 100000}``, the grace of
``--grace-ms`` (``FBE_LIVE_GRACE_MS``, default 2,000) and every other ``FBE_*``/``DAGSTER_*``
variable stripped. Once ``/healthz`` answers, the benchmark waits for the daemon's first
``paper_execution`` tick (read from the Dagster instance in ``$FBE_HOME/dagster``; the wait is
reported), then replays SPY's regular session (13:30-20:00 UTC, ``--minutes`` of it) of
2013-10-07 (``--day``) with :func:`fbe_pipeline.live.replay.replay_frame` at ``--speed`` x real
time (default 60: one bar per wall second, 6.5 min), waits for the detector to close the last
bar and for every signal's run to finish, stops ``fbe live`` (SIGTERM, which stops the daemon)
and reads, per live signal:

* ``a`` closing tick received -> signal recorded: the ``ts_recv`` (landing log) of the first
  tick with ``ts_event >= bar_close + grace`` -> ``live_signals.recorded_at`` (as
  ``bench_live.py``). Signals closed by the end-of-replay watermark have no closing tick and
  are left out of ``a`` and of the total.
* ``b`` signal recorded -> run created: the run tagged ``fbe/signal_id`` (its ``RUN_ENQUEUED``
  event, logged right after the run row is written; the row's ``create_timestamp`` has 1 s
  resolution on SQLite and is only cross-checked). Split into ``b1`` recorded -> the start of
  the sensor tick that requested the run (waiting for the sensor's 2 s interval and the
  daemon's loop) and ``b2`` tick start -> run created (sensor evaluation in the code server).
* ``c`` run created -> run started (``RUN_START``: the step process is up). Split into ``c1``
  created -> launched (``RUN_STARTING``: the queued run coordinator's dequeue, every 1 s, in
  threads, at most 2 runs in flight per ``dagster.yaml``) and ``c2`` launched -> started (the
  default run launcher spawns a Python subprocess that loads the code location).
* ``d`` run started -> order recorded (``orders.created_ns`` of ``$FBE_HOME/ops.sqlite``),
  with ``d1`` run started -> step started inside it.
* ``total`` closing tick received -> order recorded.

Every figure is given as p50/p95/max. Context: each signal run's queue position (runs created
before it and not yet launched; runs in flight), every run of the window by kind (signal runs,
the sensor's ``process:<stamp>`` runs, other jobs) with its queue, launch and duration times,
and the sensor's tick interval and evaluation time. Orders must equal signals (one order per
signal); missing orders, runs without an order and duplicate runs are listed.

Target (printed, never asserted): total p95 <= 15 s.

Run from the repository root with the project's virtualenv (about 390 / speed minutes of replay
plus ~1-2 min of start-up and settling; other CPU load on the machine skews every figure)::

    .venv/bin/python benchmarks/bench_paper.py [--speed 60] [--minutes 390] [--day 20131007]
        [--grace-ms 2000] [--settle-s 300] [--json PATH] [--keep]

Exit status: 0 when every signal got exactly one order and one run (the target missed is only
reported), 1 otherwise or on a failure, 2 when the sample data is missing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
from bench_live import (
    KEY,
    NS_PER_DAY,
    NS_PER_S,
    PASSPHRASE,
    REGULAR_UTC,
    SCORING,
    closing_receipts,
    fmt_q,
    free_port,
    python,
    quantiles,
    received_at,
    spy_day,
    wait_closed,
)

from fbe_pipeline.live.replay import replay_frame
from fbe_pipeline.market.instruments import get_instrument
from fbe_pipeline.pipeline import session_bounds
from fbe_pipeline.settings import sample_data_dir

EXECUTION = '{"validity_bars": 100000}'
SENSOR = "paper_execution"
SIGNAL_TAG = "fbe/signal_id"
TARGET_TOTAL_P95_S = 15.0
SEGMENTS = {
    "a": ("closing tick received", "signal recorded"),
    "b": ("signal recorded", "run created"),
    "b1": ("signal recorded", "sensor tick started"),
    "b2": ("sensor tick started", "run created"),
    "c": ("run created", "run started"),
    "c1": ("run created", "run launched"),
    "c2": ("run launched", "run started"),
    "d": ("run started", "order recorded"),
    "d1": ("run started", "step started"),
    "total": ("closing tick received", "order recorded"),
}
# Columns of the per-signal rows (wall seconds) that start and end each segment.
ENDPOINTS = {
    "a": ("received", "recorded"),
    "b": ("recorded", "created"),
    "b1": ("recorded", "tick"),
    "b2": ("tick", "created"),
    "c": ("created", "started"),
    "c1": ("created", "launched"),
    "c2": ("launched", "started"),
    "d": ("started", "order"),
    "d1": ("started", "step_started"),
    "total": ("received", "order"),
}


def child_pids(pid: int) -> list[int]:
    """Direct children of ``pid`` (from ``/proc``; empty if unknown)."""
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError, ValueError):
            out += [int(x) for x in (task / "children").read_text().split()]
    return out


@dataclass
class Live:
    """``fbe live --no-ui`` as a subprocess on ``home``."""

    home: Path
    grace_ms: int
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    children: list[int] = field(default_factory=list)

    @property
    def url(self) -> str:
        """Base URL of the ingest service."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        """The subprocess's stdout and stderr (the daemon's output included)."""
        return self.home.parent / f"{self.home.name}-live.log"

    def start(self, timeout_s: float = 180.0) -> float:
        """Start ``fbe live`` and wait for ``GET /healthz`` 200; return the seconds."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FBE_", "DAGSTER_"))}
        env.update(
            FBE_HOME=str(self.home),
            FBE_WEBHOOK_PASSPHRASE=PASSPHRASE,
            FBE_INGEST_HMAC_KEY=KEY,
            FBE_SCORING_CONFIG=SCORING,
            FBE_EXECUTION_CONFIG=EXECUTION,
            FBE_LIVE_GRACE_MS=str(self.grace_ms),
        )
        self.home.mkdir(parents=True, exist_ok=True)
        cmd = [python(), "-m", "fbe_pipeline.cli", "live", "--no-ui", "--port", str(self.port)]
        started = time.perf_counter()
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                cmd, env=env, cwd=Path(__file__).resolve().parents[1], stdout=log, stderr=log
            )
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"fbe live exited {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    self.children = child_pids(self.proc.pid)
                    return time.perf_counter() - started
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"fbe live not healthy in {timeout_s} s:\n{self.log_tail()}")
            time.sleep(0.2)

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the subprocess's output."""
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> float:
        """SIGTERM (``fbe live`` then stops the daemon), wait up to 60 s, then kill it and the
        process groups of the children it started (the daemon runs in its own session).
        Returns the seconds it took."""
        if self.proc is None or self.proc.poll() is not None:
            return 0.0
        start = time.perf_counter()
        self.proc.terminate()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            print("  fbe live did not stop in 60 s after SIGTERM; killing it", flush=True)
            self.proc.kill()
            self.proc.wait(30)
            for pid in self.children:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
        return time.perf_counter() - start


# --------------------------------------------------------------------------------------------
# reading the stores


def ro(path: Path) -> sqlite3.Connection:
    """A read-only connection to a SQLite file."""
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)


def live_signals(home: Path) -> list[tuple[str, str, int, int]]:
    """``(signal_id, trading_date, bar_close, recorded_at)`` of every live signal, by bar."""
    path = home / "live" / "signals.sqlite"
    if not path.exists():
        return []
    try:
        with ro(path) as db:
            rows = db.execute(
                "SELECT signal_id, trading_date, bar_close, recorded_at FROM live_signals "
                "ORDER BY bar_close, signal_id"
            ).fetchall()
    except sqlite3.OperationalError:  # tables not created yet
        return []
    return [(str(a), str(b), int(c), int(d)) for a, b, c, d in rows]


def orders(home: Path) -> dict[str, list[tuple[int, str]]]:
    """``signal_id -> [(created_ns, state), ...]`` of the operational store's orders."""
    path = home / "ops.sqlite"
    if not path.exists():
        return {}
    try:
        with ro(path) as db:
            rows = db.execute("SELECT signal_id, created_ns, state FROM orders").fetchall()
    except sqlite3.OperationalError:  # not migrated yet
        return {}
    out: dict[str, list[tuple[int, str]]] = {}
    for sid, created, state in rows:
        out.setdefault(str(sid), []).append((int(created), str(state)))
    return out


def sensor_ticks(instance: Any) -> list[Any]:
    """Every stored tick of the ``paper_execution`` sensor (empty before the first)."""
    from dagster._core.definitions.run_request import InstigatorType

    for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR):
        if state.instigator_name == SENSOR:
            return list(instance.get_ticks(state.instigator_origin_id, state.selector_id))
    return []


def wait_first_tick(instance: Any, live: Live, timeout_s: float) -> float:
    """Seconds until the daemon stored its first ``paper_execution`` tick (``nan`` on
    timeout)."""
    start = time.perf_counter()
    while not sensor_ticks(instance):
        if live.proc is not None and live.proc.poll() is not None:
            raise RuntimeError(f"fbe live exited {live.proc.returncode}:\n{live.log_tail()}")
        if time.perf_counter() - start > timeout_s:
            return float("nan")
        time.sleep(0.5)
    return time.perf_counter() - start


def signal_runs(instance: Any) -> dict[str, list[Any]]:
    """``signal_id -> run records`` of every run tagged ``fbe/signal_id``."""
    out: dict[str, list[Any]] = {}
    for record in instance.get_run_records():
        sid = record.dagster_run.tags.get(SIGNAL_TAG)
        if sid:
            out.setdefault(sid, []).append(record)
    return out


def settled(home: Path, instance: Any) -> tuple[int, int, int]:
    """``(signals, signals with an order, signals whose runs all finished)``."""
    sids = [s[0] for s in live_signals(home)]
    have = orders(home)
    runs = signal_runs(instance)
    finished = sum(
        1 for s in sids if runs.get(s) and all(r.dagster_run.is_finished for r in runs[s])
    )
    return len(sids), sum(1 for s in sids if s in have), finished


def wait_settled(home: Path, instance: Any, timeout_s: float) -> tuple[float, tuple[int, ...]]:
    """Wait until every signal has an order and finished runs; ``(seconds, last state)``
    (``nan`` seconds on timeout)."""
    start = time.perf_counter()
    while True:
        state = settled(home, instance)
        if state[0] == state[1] == state[2]:
            return time.perf_counter() - start, state
        if time.perf_counter() - start > timeout_s:
            return float("nan"), state
        time.sleep(1.0)


def wait_quiet(instance: Any, timeout_s: float) -> tuple[float, int]:
    """Wait until no run is queued or in flight (the sensor's ``process:<stamp>`` runs stop
    once the detector stops moving), so that stopping ``fbe live`` interrupts none; ``(seconds,
    runs still unfinished)`` (``nan`` seconds on timeout)."""
    start = time.perf_counter()
    while True:
        busy = sum(1 for r in instance.get_run_records() if not r.dagster_run.is_finished)
        if not busy:
            return time.perf_counter() - start, 0
        if time.perf_counter() - start > timeout_s:
            return float("nan"), busy
        time.sleep(1.0)


def failure_reason(instance: Any, run_id: str) -> str:
    """The first step or run failure message of a run (empty if none is found)."""
    from dagster import DagsterEventType

    kinds = {DagsterEventType.STEP_FAILURE, DagsterEventType.RUN_FAILURE}
    with contextlib.suppress(Exception):  # optional detail: the event API may change
        for record in instance.get_records_for_run(run_id, of_type=kinds).records:
            entry = record.event_log_entry
            event = entry.dagster_event
            error = getattr(getattr(event, "event_specific_data", None), "error", None)
            if error is not None:
                return f"{error.cls_name}: {error.message.strip()}"[:300]
            return str(entry.message or "")[:300]
    return ""


def run_times(instance: Any, record: Any) -> dict[str, Any]:
    """Wall seconds of one run: created (``RUN_ENQUEUED``, else the row's 1 s timestamp),
    launched, started, step started, ended; plus its kind and status."""
    from dagster import DagsterEventType

    run = record.dagster_run
    stats = instance.get_run_stats(run.run_id)
    created_row = record.create_timestamp.timestamp()
    step_started = None
    with contextlib.suppress(Exception):  # optional detail: the event API may change
        steps = instance.get_records_for_run(
            run.run_id, of_type=DagsterEventType.STEP_START, limit=1
        ).records
        if steps:
            step_started = float(steps[0].event_log_entry.timestamp)
    run_key = run.tags.get("dagster/run_key", "")
    if run.tags.get(SIGNAL_TAG):
        kind = "signal"
    elif run_key.startswith("process:"):
        kind = "process"
    else:
        kind = run.job_name
    return {
        "run_id": run.run_id,
        "kind": kind,
        "status": run.status.value,
        "failure": failure_reason(instance, run.run_id) if run.status.value == "FAILURE" else "",
        "created_row": created_row,
        "created": stats.enqueued_time if stats.enqueued_time else created_row,
        "launched": stats.launch_time,
        "started": stats.start_time,
        "step_started": step_started,
        "ended": stats.end_time,
    }


def diff(row: dict[str, Any], begin: str, end: str) -> float | None:
    """``row[end] - row[begin]`` (seconds), ``None`` when either is missing."""
    a, b = row.get(begin), row.get(end)
    return None if a is None or b is None else float(b) - float(a)


def collect(
    home: Path, instance: Any, day: date, grace_ms: int, window: tuple[float, float]
) -> dict[str, Any]:
    """The per-signal rows, the segment quantiles and the context figures."""
    grace_ns = grace_ms * 1_000_000
    receipts = closing_receipts(home / "landing" / "SPY" / f"{day.isoformat()}.jsonl")
    sigs = live_signals(home)
    have = orders(home)
    runs_by_signal = signal_runs(instance)
    all_runs = [run_times(instance, r) for r in instance.get_run_records()]
    by_id = {r["run_id"]: r for r in all_runs}
    ticks = sensor_ticks(instance)
    tick_of_run: dict[str, Any] = {}
    for tick in ticks:
        for run_id in tick.run_ids:
            tick_of_run[run_id] = tick

    rows: list[dict[str, Any]] = []
    missing_orders: list[str] = []
    missing_runs: list[str] = []
    duplicate_runs: list[str] = []
    extra_orders: list[str] = []
    for sid, _, bar_close, recorded_at in sigs:
        recv = received_at(receipts, bar_close + grace_ns)
        row: dict[str, Any] = {
            "signal_id": sid,
            "bar_close": pd.Timestamp(bar_close, unit="ns", tz="UTC").isoformat(),
            "received": None if recv is None else recv / 1e9,
            "recorded": recorded_at / 1e9,
        }
        found = have.get(sid, [])
        if not found:
            missing_orders.append(sid)
        elif len(found) > 1:
            extra_orders.append(sid)
        if found:
            row["order"] = min(c for c, _ in found) / 1e9
            row["order_state"] = found[0][1]
        records = runs_by_signal.get(sid, [])
        if not records:
            missing_runs.append(sid)
        elif len(records) > 1:
            duplicate_runs.append(sid)
        if records:
            first = min(records, key=lambda r: r.create_timestamp)
            times = by_id[first.dagster_run.run_id]
            row.update({k: times[k] for k in ("run_id", "status", "created_row", "created")})
            row.update({k: times[k] for k in ("launched", "started", "step_started", "ended")})
            tick = tick_of_run.get(times["run_id"])
            if tick is not None:
                row["tick"] = float(tick.timestamp)
            created = float(times["created"])
            row["queued_ahead"] = sum(
                1
                for r in all_runs
                if r["run_id"] != times["run_id"]
                and r["created"] < created
                and (r["launched"] is None or r["launched"] > created)
            )
            row["in_flight"] = sum(
                1
                for r in all_runs
                if r["launched"] is not None
                and r["launched"] <= created
                and (r["ended"] is None or r["ended"] > created)
            )
        for name, (begin, end) in ENDPOINTS.items():
            row[name] = diff(row, begin, end)
        row["order_to_run_end"] = diff(row, "order", "ended")
        rows.append(row)

    segments = {
        name: quantiles([r[name] for r in rows if r[name] is not None], (50, 95))
        for name in ENDPOINTS
    }
    # every run of the replay window, by kind
    kinds: dict[str, dict[str, Any]] = {}
    lo, hi = window
    for r in all_runs:
        if not lo <= r["created"] <= hi:
            continue
        k = kinds.setdefault(r["kind"], {"runs": 0, "statuses": {}, "_q": [], "_l": [], "_d": []})
        k["runs"] += 1
        k["statuses"][r["status"]] = k["statuses"].get(r["status"], 0) + 1
        for key, (begin, end) in (("_q", ("created", "launched")), ("_l", ("launched", "started"))):
            value = diff(r, begin, end)
            if value is not None:
                k[key].append(value)
        value = diff(r, "started", "ended")
        if value is not None:
            k["_d"].append(value)
    failures = [
        {"run_id": r["run_id"], "kind": r["kind"], "reason": r["failure"]}
        for r in all_runs
        if r["status"] == "FAILURE"
    ]
    for k in kinds.values():
        k["created_to_launched_s"] = quantiles(k.pop("_q"), (50, 95))
        k["launched_to_started_s"] = quantiles(k.pop("_l"), (50, 95))
        k["started_to_ended_s"] = quantiles(k.pop("_d"), (50, 95))
    starts = sorted(float(t.timestamp) for t in ticks if lo <= float(t.timestamp) <= hi)
    durations = [
        float(t.end_timestamp) - float(t.timestamp)
        for t in ticks
        if t.end_timestamp is not None and lo <= float(t.timestamp) <= hi
    ]
    row_check = [
        r["created"] - r["created_row"]
        for r in rows
        if r.get("created") is not None and r.get("created_row") is not None
    ]
    return {
        "signals": len(sigs),
        "orders": sum(1 for s, *_ in sigs if s in have),
        "orders_total": sum(len(v) for v in have.values()),
        "signals_closed_by_watermark": sum(1 for r in rows if r["received"] is None),
        "missing_orders": missing_orders,
        "duplicate_orders": extra_orders,
        "missing_runs": missing_runs,
        "duplicate_runs": duplicate_runs,
        "segments_s": segments,
        "queued_ahead": quantiles([r["queued_ahead"] for r in rows if "queued_ahead" in r], (50,)),
        "in_flight": quantiles([r["in_flight"] for r in rows if "in_flight" in r], (50,)),
        "order_to_run_end_s": quantiles(
            [r["order_to_run_end"] for r in rows if r["order_to_run_end"] is not None], (50, 95)
        ),
        "enqueued_minus_row_timestamp_s": quantiles(row_check, (50,)),
        "runs_by_kind": kinds,
        "failed_runs": failures,
        "sensor_ticks": len(starts),
        "sensor_tick_interval_s": quantiles(list(np.diff(starts)), (50, 95)),
        "sensor_tick_duration_s": quantiles(durations, (50, 95)),
        "per_signal": rows,
    }


# --------------------------------------------------------------------------------------------


def session_frame(day: str, minutes: int) -> tuple[date, pd.DataFrame]:
    """SPY ticks of ``day``'s regular session, its first ``minutes``."""
    ticks = spy_day(day)
    ts = ticks["ts_event"].to_numpy(np.int64)
    tod_s = (ts % NS_PER_DAY) // NS_PER_S
    start_s = REGULAR_UTC[0]
    end_s = min(REGULAR_UTC[1], start_s + 60 * minutes)
    keep = (tod_s >= start_s) & (tod_s < end_s)
    return date.fromisoformat(f"{day[:4]}-{day[4:6]}-{day[6:]}"), ticks[keep]


def run(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """Start ``fbe live``, replay, settle, stop, collect; returns the figures."""
    from dagster import DagsterInstance

    day, frame = session_frame(args.day, args.minutes)
    print(
        f"bar close -> paper order: SPY {day} regular session, {args.minutes} min "
        f"({len(frame):,} ticks) at speed {args.speed:g}, grace {args.grace_ms} ms",
        flush=True,
    )
    home = root / "home"
    live = Live(home, args.grace_ms)
    instance = None
    try:
        healthy_s = live.start()
        print(f"  fbe live healthy on {live.url} in {healthy_s:.1f} s", flush=True)
        instance = DagsterInstance.from_config(str(home / "dagster"))
        first_tick_s = wait_first_tick(instance, live, args.daemon_timeout_s)
        print(
            f"  first {SENSOR} tick {first_tick_s:.1f} s after /healthz "
            f"({healthy_s + first_tick_s:.1f} s after the start)",
            flush=True,
        )
        window_start = time.time()
        report = replay_frame(frame, live.url, KEY, speed=args.speed)
        _, close_ns = session_bounds(get_instrument("SPY"), day)
        last_ns = int(frame["ts_event"].max())
        through = min(close_ns, last_ns - last_ns % (60 * NS_PER_S) + 60 * NS_PER_S)
        closed_s = wait_closed(home, "SPY", day, through, timeout_s=300)
        print(
            f"  replayed {report.sent:,} ticks in {report.batches:,} batches, "
            f"{report.elapsed_s:.1f} s; detector done {closed_s:.2f} s after the last ack",
            flush=True,
        )
        settle_s, state = wait_settled(home, instance, args.settle_s)
        print(
            f"  settled {settle_s:.1f} s later: {state[0]} signals, {state[1]} with an order, "
            f"{state[2]} with finished runs",
            flush=True,
        )
        window_end = time.time()
        quiet_s, busy = wait_quiet(instance, args.settle_s)
        print(
            f"  no run queued or in flight {quiet_s:.1f} s later"
            + (f" ({busy} still unfinished)" if busy else ""),
            flush=True,
        )
    finally:
        stop_s = live.stop()
        print(f"  fbe live stopped in {stop_s:.1f} s", flush=True)
    if instance is None:
        raise RuntimeError("no Dagster instance")
    try:
        figures = collect(home, instance, day, args.grace_ms, (window_start, window_end))
    finally:
        instance.dispose()
    return {
        "day": day.isoformat(),
        "minutes": args.minutes,
        "speed": args.speed,
        "grace_ms": args.grace_ms,
        "ticks": report.sent,
        "replay_s": report.elapsed_s,
        "healthy_s": healthy_s,
        "first_sensor_tick_after_healthy_s": first_tick_s,
        "detector_done_after_s": closed_s,
        "settled_after_s": settle_s,
        "quiet_after_s": quiet_s,
        "stop_s": stop_s,
        **figures,
    }


def print_figures(r: dict[str, Any]) -> None:
    """The detailed figures."""
    print(
        f"  signals {r['signals']} ({r['signals_closed_by_watermark']} closed by the "
        f"end-of-replay watermark, left out of a and total); orders for them {r['orders']} "
        f"({r['orders_total']} orders in the store)"
    )
    for name in ("missing_orders", "duplicate_orders", "missing_runs", "duplicate_runs"):
        if r[name]:
            print(f"  {name.replace('_', ' ').upper()}: {', '.join(r[name])}")
    for name, (begin, end) in SEGMENTS.items():
        label = f"{name:>5} {begin} -> {end}:"
        print(f"  {label:<52} {fmt_q(r['segments_s'][name], 1.0, 's')}")
    label = "      order recorded -> run ended:"
    print(f"  {label:<52} {fmt_q(r['order_to_run_end_s'], 1.0, 's')}")
    qa, fl = r["queued_ahead"], r["in_flight"]
    if qa:
        print(
            f"  at a signal run's creation: runs queued ahead p50 {qa['p50']:.0f} max "
            f"{qa['max']:.0f}; runs in flight p50 {fl['p50']:.0f} max {fl['max']:.0f}"
        )
    check = r["enqueued_minus_row_timestamp_s"]
    if check:
        print(
            f"  RUN_ENQUEUED - run row create_timestamp (1 s resolution): p50 "
            f"{check['p50']:.2f} s, max {check['max']:.2f} s"
        )
    for kind, k in r["runs_by_kind"].items():
        print(
            f"  runs '{kind}': {k['runs']} {k['statuses']}; created -> launched "
            f"{fmt_q(k['created_to_launched_s'], 1.0, 's')}; launched -> started "
            f"{fmt_q(k['launched_to_started_s'], 1.0, 's')}; started -> ended "
            f"{fmt_q(k['started_to_ended_s'], 1.0, 's')}"
        )
    for failed in r["failed_runs"]:
        print(f"  FAILED run {failed['run_id']} ({failed['kind']}): {failed['reason']}")
    print(
        f"  {SENSOR}: {r['sensor_ticks']} ticks; interval "
        f"{fmt_q(r['sensor_tick_interval_s'], 1.0, 's')}; evaluation "
        f"{fmt_q(r['sensor_tick_duration_s'], 1.0, 's')}"
    )
    print(
        f"  start-up: /healthz {r['healthy_s']:.1f} s, first sensor tick "
        f"+{r['first_sensor_tick_after_healthy_s']:.1f} s; replay {r['replay_s']:.1f} s; "
        f"settled +{r['settled_after_s']:.1f} s; runs quiet +{r['quiet_after_s']:.1f} s; stop "
        f"{r['stop_s']:.1f} s"
    )


def table(r: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """Rows ``(figure, value, target, verdict)`` of the final table."""
    rows: list[tuple[str, str, str, str]] = []
    for name, (begin, end) in SEGMENTS.items():
        if name in ("b1", "b2", "c1", "c2", "d1"):
            continue
        q = r["segments_s"][name]
        value = (
            f"{q['p50']:,.2f} / {q['p95']:,.2f} / {q['max']:,.2f} s (n={int(q['n'])})"
            if q
            else "n/a"
        )
        target = verdict = ""
        if name == "total":
            target = "p95 <= 15 s"
            verdict = "ok" if q and q["p95"] <= TARGET_TOTAL_P95_S else "MISSED"
        rows.append((f"{name}: {begin} -> {end} p50/p95/max", value, target, verdict))
    missing = len(r["missing_orders"])
    rows.append(
        (
            "orders / signals",
            f"{r['orders']} / {r['signals']}" + (f" ({missing} missing)" if missing else ""),
            "one order per signal",
            "ok" if ok(r) else "MISSED",
        )
    )
    return rows


def ok(r: dict[str, Any]) -> bool:
    """Exactly one order and one run per signal, and at least one signal."""
    problems = ("missing_orders", "duplicate_orders", "missing_runs", "duplicate_runs")
    return r["signals"] > 0 and r["orders"] == r["signals"] and not any(r[p] for p in problems)


def main() -> int:
    """Run, print the figures and the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--speed", type=float, default=60.0, help="replay pace (x real time)")
    parser.add_argument("--minutes", type=int, default=390, help="minutes from 13:30 UTC")
    parser.add_argument("--day", default="20131007", help="SPY session, YYYYMMDD")
    parser.add_argument("--grace-ms", type=int, default=2000, help="FBE_LIVE_GRACE_MS")
    parser.add_argument(
        "--daemon-timeout-s", type=float, default=180.0, help="wait for the first sensor tick"
    )
    parser.add_argument(
        "--settle-s", type=float, default=300.0, help="wait for the last orders and runs"
    )
    parser.add_argument("--json", type=Path, help="write the figures to this JSON file")
    parser.add_argument("--keep", action="store_true", help="keep the temporary FBE_HOME")
    args = parser.parse_args()
    if args.speed <= 0:
        parser.error("--speed must be > 0 (the replay is paced)")
    if not (sample_data_dir() / "lean" / "spy" / "tick").is_dir():
        print(f"sample data not found in {sample_data_dir()} (set FBE_SAMPLE_DATA)")
        return 2

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # SIGTERM cleans up like Ctrl-C: fbe live stopped, dir removed

    signal.signal(signal.SIGTERM, interrupt)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"machine: {os.cpu_count()} CPUs, load average {load}; python {sys.version.split()[0]}")
    root = Path(tempfile.mkdtemp(prefix="fbe-bench-paper-"))
    start = time.perf_counter()
    try:
        results = run(args, root)
    except Exception as exc:
        print(f"FAILED: {type(exc).__name__}: {exc}", flush=True)
        return 1
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    print_figures(results)
    print(f"  (took {time.perf_counter() - start:.0f} s)")
    rows = table(results)
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    print()
    print("figure".ljust(widths[0]), "value".rjust(widths[1]), " target", sep="  ")
    for row in rows:
        print(
            row[0].ljust(widths[0]),
            row[1].rjust(widths[1]),
            row[2].ljust(widths[2]),
            row[3],
            sep="  ",
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")
        print(f"figures written to {args.json}")
    return 0 if ok(results) else 1


if __name__ == "__main__":
    sys.exit(main())
