"""The live path against the real ``fbe serve`` process (issue 8): bar close -> signal latency,
sustained batched ingest, and single TradingView posts.

What is measured
----------------
Each part starts its own ``fbe serve`` subprocess (``python -m fbe_pipeline.cli serve``) on a
fresh temporary ``FBE_HOME`` with the demo scoring config (trigger 30), the grace of
``--grace-ms`` (``FBE_LIVE_GRACE_MS``, default 2,000) and the Dagster bar reporter on, as in
production; the benchmark process is the client, on the same machine.

1. **Bar close -> signal recorded** (``latency``). SPY's regular session (13:30-20:00 UTC) of
   2013-10-07 (``--latency-days``; add ``20131008`` for a second session with a warm-up) is
   replayed with :func:`fbe_pipeline.live.replay.replay_frame` at ``--speed`` x real time
   (default 60: one bar per wall second, 6.5 min a session). Bar ``m`` closes when a tick with
   ``ts_event >= bar_close + grace`` arrives; the latency of a bar is the wall time its
   evaluation finished minus the time the service *received* that closing tick (its
   ``ts_recv`` in the landing log ``$FBE_HOME/landing/SPY/<date>.jsonl``). "Finished" is
   ``recorded_at`` of ``live_signals`` (``$FBE_HOME/live/signals.sqlite``) for signals, and the
   timestamp of the bar's ``SPY/live_session`` observation in the Dagster instance for every
   closed bar (queued once the evaluation's signals are recorded, written by the service's
   reporter thread; the JSON also gives the record -> report lag). Bars closed by the
   end-of-replay watermark have no closing tick and are left out. Where the time goes: the
   service's ``/metrics`` histograms ``fbe_live_stage_seconds`` (bars, features, signals, record
   per evaluation) and ``fbe_ingest_request_seconds`` of ``/v1/ticks``, and the bar latency
   by hour of the session (an evaluation recomputes the session so far).
   Baseline in the same run: the grace, the per-bar wall budget ``60 s / speed``, and the bare
   detector time per evaluation (sum of the stage means).
2. **Sustained ingest, batched** (``ingest``). The full SPY day of 2013-10-08 (451,545 ticks,
   ``--ingest-day``) replayed at speed 0 (full batches back to back): ticks/s and loss
   (acknowledged, landing-log lines and ``landed`` rows of ``idempotency.sqlite`` must all equal
   the ticks sent). Baseline: the same ticks appended in process with
   :meth:`fbe_pipeline.live.landing.LandingLog.append` in batches of the replay's mean batch
   size (the storage floor: SQLite keys and fsynced lines, no HTTP, no JSON, no validation),
   and the ratio of the two. Also how long after the last acknowledgement the detector
   finished the session.
3. **Single TradingView posts** (``posts``). ``--posts`` one-alert ``POST /webhook/tradingview``
   bodies (SPEC: symbol, price, volume, ISO timestamp, passphrase, trade_id) built from the
   real Tardis BTCUSDT trades, sent by ``--clients`` threads, each with its own keep-alive
   ``httpx.Client`` (thread ``i`` sends trades ``i, i + clients, ...``): posts/s and the
   client-side acknowledgement latency p50/p99/max; no loss (every answer 200, ``accepted``
   summing to the posts, as many landed rows and lines). Baseline: the same alerts landed in
   process, one :meth:`~fbe_pipeline.live.landing.LandingLog.append` each, sequentially (the
   per-request storage floor: a SQLite commit and an fsynced line).

Targets (printed next to the figures, never asserted): bar close + grace -> signal p95
<= 1 s; batched ingest >= 5,000 ticks/s; TradingView posts >= 300/s with p99 <= 250 ms.

The parts run in the order 2, 3, 1 (short ones first). Run from the repository root with the
project's virtualenv (about 8 minutes with the defaults on 2 cores, of which the latency replay
takes 390 / speed minutes per session; other CPU load on the machine skews every figure)::

    .venv/bin/python benchmarks/bench_live.py [--speed 60] [--posts 3000] [--clients 4]
        [--latency-days 20131007 [20131008]] [--minutes 390] [--skip-latency]
        [--skip-ingest] [--skip-posts] [--json PATH] [--keep]

Exit status: 0 when every part ran without loss (targets missed are only reported), 1 on a
loss or a failed part, 2 when the sample data is missing.
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
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
from prometheus_client.parser import text_string_to_metric_families

from fbe_pipeline.live.detector import STAGES
from fbe_pipeline.live.landing import LandingLog
from fbe_pipeline.live.models import LandedTick
from fbe_pipeline.live.replay import read_ticks, replay_frame
from fbe_pipeline.market.instruments import get_instrument, load_instruments
from fbe_pipeline.market.sources.tardis import read_tardis_trades
from fbe_pipeline.pipeline import session_bounds
from fbe_pipeline.settings import sample_data_dir

REPO = Path(__file__).resolve().parents[1]
KEY = "bench-live-hmac-key"
PASSPHRASE = "bench-live-passphrase"
SCORING = '{"trigger_score": 30}'
NS_PER_S = 1_000_000_000
NS_PER_DAY = 86_400 * NS_PER_S
REGULAR_UTC = (13 * 3600 + 30 * 60, 20 * 3600)  # SPY in October 2013 (EDT), seconds of day
WEBHOOK = "/webhook/tradingview"
TARGET_SIGNAL_P95_S = 1.0
TARGET_INGEST_TPS = 5_000.0
TARGET_POSTS_PS = 300.0
TARGET_POST_P99_S = 0.250


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def python() -> str:
    """The project's interpreter (``.venv/bin/python``), else the running one."""
    venv = REPO / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@dataclass
class Server:
    """``fbe serve`` as a subprocess on ``home``; a context manager (see :func:`serving`)."""

    home: Path
    grace_ms: int
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Base URL of the service."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        """The subprocess's stdout and stderr."""
        return self.home.parent / f"{self.home.name}-serve.log"

    def start(self, timeout_s: float = 180.0) -> float:
        """Start the service and wait for ``GET /healthz`` 200; return the start-up seconds."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FBE_", "DAGSTER_"))}
        env.update(
            FBE_HOME=str(self.home),
            FBE_WEBHOOK_PASSPHRASE=PASSPHRASE,
            FBE_INGEST_HMAC_KEY=KEY,
            FBE_SCORING_CONFIG=SCORING,
            FBE_LIVE_GRACE_MS=str(self.grace_ms),
        )
        self.home.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [python(), "-m", "fbe_pipeline.cli", "serve", "--port", str(self.port)],
                env=env,
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"fbe serve exited {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return time.perf_counter() - started
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"fbe serve not healthy in {timeout_s} s:\n{self.log_tail()}")
            time.sleep(0.2)

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the subprocess's output."""
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def metrics(self) -> Samples:
        """Every sample of ``GET /metrics`` by ``(name, sorted labels)``."""
        text = httpx.get(self.url + "/metrics", timeout=30).text
        out: Samples = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                out[(sample.name, tuple(sorted(sample.labels.items())))] = float(sample.value)
        return out

    def peak_rss_mb(self) -> float:
        """Peak resident memory of the service so far (``VmHWM``), MB; 0.0 if unknown."""
        if self.proc is None:
            return 0.0
        try:
            text = Path(f"/proc/{self.proc.pid}/status").read_text()
        except OSError:
            return 0.0
        for line in text.splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def stop(self) -> None:
        """Terminate, wait up to 30 s, then kill."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            print("  fbe serve did not stop in 30 s after SIGTERM; killing it", flush=True)
            self.proc.kill()
            self.proc.wait(30)


@contextmanager
def serving(home: Path, grace_ms: int) -> Iterator[Server]:
    """A started :class:`Server` on ``home``, stopped on exit."""
    server = Server(home, grace_ms)
    try:
        seconds = server.start()
        print(f"  fbe serve up on {server.url} in {seconds:.1f} s", flush=True)
        yield server
    finally:
        server.stop()


def sample(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value (0.0 when absent)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def hist(samples: Samples, name: str, **labels: str) -> tuple[float, int]:
    """``(sum, count)`` of one histogram series."""
    return sample(samples, name + "_sum", **labels), int(sample(samples, name + "_count", **labels))


def quantiles(values: list[float] | np.ndarray, qs: tuple[float, ...]) -> dict[str, float]:
    """``{"p50": ..., "max": ...}`` of ``values`` (seconds); empty when there are none."""
    arr = np.asarray(values, dtype=np.float64)
    if not len(arr):
        return {}
    out = {f"p{q:g}": float(np.percentile(arr, q)) for q in qs}
    out["max"] = float(arr.max())
    out["mean"] = float(arr.mean())
    out["n"] = float(len(arr))
    return out


def fmt_q(q: dict[str, float], unit: float = 1e3, suffix: str = "ms") -> str:
    """``p50 ... p95 ... max ...`` in ``suffix``."""
    if not q:
        return "n/a"
    keys = [k for k in q if k.startswith("p")] + ["max"]
    return "  ".join(f"{k} {q[k] * unit:,.1f} {suffix}" for k in keys)


def landing_lines(home: Path) -> int:
    """Lines of every landing file under ``home``."""
    total = 0
    for path in (home / "landing").glob("*/*.jsonl"):
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                total += chunk.count(b"\n")
    return total


def landed_rows(home: Path) -> int:
    """``SELECT count(*) FROM landed`` of ``home``'s idempotency database."""
    path = home / "landing" / "idempotency.sqlite"
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return int(db.execute("SELECT count(*) FROM landed").fetchone()[0])


def progress(home: Path, symbol: str, day: date) -> int:
    """``closed_through`` of ``live_progress`` (ns UTC; 0 before the first evaluation)."""
    path = home / "live" / "signals.sqlite"
    if not path.exists():
        return 0
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        try:
            row = db.execute(
                "SELECT closed_through FROM live_progress WHERE symbol = ? AND trading_date = ?",
                (symbol, day.isoformat()),
            ).fetchone()
        except sqlite3.OperationalError:  # tables not created yet
            return 0
    return 0 if row is None else int(row[0])


def wait_closed(home: Path, symbol: str, day: date, close_ns: int, timeout_s: float) -> float:
    """Wait until the detector closed ``day`` through ``close_ns``; return the seconds waited
    (``nan`` on timeout)."""
    start = time.perf_counter()
    while progress(home, symbol, day) < close_ns:
        if time.perf_counter() - start > timeout_s:
            return float("nan")
        time.sleep(0.05)
    return time.perf_counter() - start


def spy_day(day: str) -> pd.DataFrame:
    """SPY trade ticks of ``day`` (``YYYYMMDD``) from the Lean sample, sorted."""
    path = sample_data_dir() / "lean" / "spy" / "tick" / f"{day}_trade.zip"
    return read_ticks("lean-trades", [path], get_instrument("SPY"))


# --------------------------------------------------------------------------------------------
# 1. bar close -> signal recorded


def closing_receipts(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """From a landing file: ``ts_event`` ascending and, for each position, the earliest
    ``ts_recv`` of the ticks at or after it (so ``recv[searchsorted(ts, t)]`` is when the
    service first received a tick with ``ts_event >= t``)."""
    ts, recv = [], []
    with path.open() as fh:
        for line in fh:
            if line.strip():
                doc = json.loads(line)
                ts.append(doc["ts_event"])
                recv.append(doc["ts_recv"])
    ts_arr = np.asarray(ts, dtype=np.int64)
    recv_arr = np.asarray(recv, dtype=np.int64)
    order = np.argsort(ts_arr, kind="stable")
    ts_arr, recv_arr = ts_arr[order], recv_arr[order]
    suffix_min = np.minimum.accumulate(recv_arr[::-1])[::-1]
    return ts_arr, suffix_min


def received_at(receipts: tuple[np.ndarray, np.ndarray], threshold_ns: int) -> int | None:
    """Wall ns at which the first tick with ``ts_event >= threshold_ns`` was received."""
    ts, recv = receipts
    i = int(np.searchsorted(ts, threshold_ns, side="left"))
    return None if i >= len(ts) else int(recv[i])


def dagster_bar_times(home: Path, days: list[date]) -> dict[tuple[date, int], float]:
    """Wall time (s) of each ``SPY/live_session`` observation by ``(day, bar_close ns)``."""
    from dagster import AssetKey, AssetRecordsFilter, DagsterInstance

    instance = DagsterInstance.from_config(str(home / "dagster"))
    out: dict[tuple[date, int], float] = {}
    try:
        for day in days:
            records = instance.fetch_observations(
                AssetRecordsFilter(
                    asset_key=AssetKey(["SPY", "live_session"]),
                    asset_partitions=[day.isoformat()],
                ),
                limit=10_000,
            ).records
            for record in records:
                observation = record.asset_observation
                if observation is None:
                    continue
                close_s = float(observation.metadata["bar_close"].value)  # type: ignore[arg-type]
                out[(day, round(close_s) * NS_PER_S)] = float(record.timestamp)
    finally:
        instance.dispose()
    return out


def run_latency(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """Part 1; returns the figures."""
    grace_ns = args.grace_ms * 1_000_000
    spy = get_instrument("SPY")
    frames: list[tuple[date, pd.DataFrame]] = []
    for day in args.latency_days:
        ticks = spy_day(day)
        ts = ticks["ts_event"].to_numpy(np.int64)
        tod_s = (ts % NS_PER_DAY) // NS_PER_S
        start_s = REGULAR_UTC[0]
        end_s = min(REGULAR_UTC[1], start_s + 60 * args.minutes)
        keep = (tod_s >= start_s) & (tod_s < end_s)
        frames.append((date.fromisoformat(f"{day[:4]}-{day[4:6]}-{day[6:]}"), ticks[keep]))
    home = root / "latency"
    print(
        f"[1] bar close -> signal: SPY {', '.join(d.isoformat() for d, _ in frames)} "
        f"regular session ({sum(len(f) for _, f in frames):,} ticks) at speed {args.speed:g}, "
        f"grace {args.grace_ms} ms",
        flush=True,
    )
    replays: list[dict[str, Any]] = []
    batch_latencies: list[float] = []
    with serving(home, args.grace_ms) as server:
        for day, frame in frames:
            report = replay_frame(frame, server.url, KEY, speed=args.speed)
            _, close_ns = session_bounds(spy, day)
            last_ns = int(frame["ts_event"].max())
            through = min(close_ns, last_ns - last_ns % (60 * NS_PER_S) + 60 * NS_PER_S)
            waited = wait_closed(home, "SPY", day, through, timeout_s=300)
            batch_latencies += report.latencies_s
            replays.append(
                {
                    "day": day.isoformat(),
                    "ticks": report.sent,
                    "accepted": report.accepted,
                    "batches": report.batches,
                    "elapsed_s": report.elapsed_s,
                    "detector_done_after_s": waited,
                }
            )
            print(
                f"  {day}: {report.sent:,} ticks in {report.batches:,} batches, "
                f"{report.elapsed_s:.1f} s; detector done {waited:.2f} s after the last ack",
                flush=True,
            )
        metrics = server.metrics()
        rss = server.peak_rss_mb()

    path = home / "live" / "signals.sqlite"
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        signal_rows = db.execute(
            "SELECT trading_date, bar_close, recorded_at FROM live_signals ORDER BY bar_close"
        ).fetchall()
    receipts = {
        day: closing_receipts(home / "landing" / "SPY" / f"{day.isoformat()}.jsonl")
        for day, _ in frames
    }
    signal_lat, unclosed_signals = [], 0
    signal_recorded: dict[tuple[date, int], int] = {}
    for day_text, bar_close, recorded_at in signal_rows:
        day = date.fromisoformat(day_text)
        signal_recorded[(day, int(bar_close))] = int(recorded_at)
        recv = received_at(receipts[day], int(bar_close) + grace_ns)
        if recv is None:
            unclosed_signals += 1
            continue
        signal_lat.append((int(recorded_at) - recv) / 1e9)

    bar_lat: list[float] = []
    by_hour: dict[int, list[float]] = {}
    worst: list[tuple[float, date, int]] = []
    report_lag: list[float] = []
    opens = {day: session_bounds(spy, day)[0] for day, _ in frames}
    unclosed_bars = 0
    observed = 0
    try:
        bar_times = dagster_bar_times(home, [d for d, _ in frames])
    except Exception as exc:  # optional figure: the Dagster API may change
        print(f"  Dagster observations not read: {type(exc).__name__}: {exc}", flush=True)
        bar_times = {}
    for (day, bar_close), wall_s in bar_times.items():
        observed += 1
        recv = received_at(receipts[day], bar_close + grace_ns)
        if recv is None:
            unclosed_bars += 1
            continue
        bar_lat.append(wall_s - recv / 1e9)
        worst.append((wall_s - recv / 1e9, day, bar_close))
        hour = (bar_close - opens[day] - 1) // (3600 * NS_PER_S) + 1
        by_hour.setdefault(int(hour), []).append(wall_s - recv / 1e9)
        if (day, bar_close) in signal_recorded:
            report_lag.append(wall_s - signal_recorded[(day, bar_close)] / 1e9)

    stages = {}
    for stage in STAGES:
        total, count = hist(metrics, "fbe_live_stage_seconds", stage=stage)
        stages[stage] = {"sum_s": total, "count": count, "mean_s": total / count if count else 0}
    evaluations = stages[STAGES[0]]["count"]
    detector_mean = sum(float(s["mean_s"]) for s in stages.values())
    req_sum, req_count = hist(metrics, "fbe_ingest_request_seconds", endpoint="/v1/ticks")
    return {
        "speed": args.speed,
        "grace_ms": args.grace_ms,
        "bar_budget_s": 60 / args.speed if args.speed > 0 else 0.0,
        "replays": replays,
        "signals": len(signal_rows),
        "signals_closed_by_watermark": unclosed_signals,
        "signal_latency_s": quantiles(signal_lat, (50, 95)),
        "bars_observed": observed,
        "bars_closed_by_watermark": unclosed_bars,
        "bar_latency_s": quantiles(bar_lat, (50, 95)),
        "bar_latency_by_session_hour_s": {
            h: quantiles(v, (50, 95)) for h, v in sorted(by_hour.items())
        },
        "record_to_dagster_report_s": quantiles(report_lag, (50, 95)),
        "worst_bars": [
            {
                "bar_close": pd.Timestamp(close, unit="ns", tz="UTC").isoformat(),
                "latency_s": lat,
            }
            for lat, _, close in sorted(worst, reverse=True)[:5]
        ],
        "bars_closed_metric": int(sample(metrics, "fbe_live_bars_closed_total", symbol="SPY")),
        "evaluations": evaluations,
        "stages": stages,
        "detector_mean_s": detector_mean,
        "ticks_request_mean_s": req_sum / req_count if req_count else 0.0,
        "ticks_requests": req_count,
        "client_batch_latency_s": quantiles(batch_latencies, (50, 95, 99)),
        "server_peak_rss_mb": rss,
    }


def print_latency(r: dict[str, Any]) -> None:
    """Print part 1's figures."""
    print(
        f"  signals: {r['signals']} ({r['signals_closed_by_watermark']} closed by the "
        "end-of-replay watermark, left out)"
    )
    print(f"  closing tick received -> signal recorded:   {fmt_q(r['signal_latency_s'])}")
    print(
        f"  closing tick received -> bar reported ({r['bars_observed']} Dagster observations, "
        f"{r['bars_closed_by_watermark']} closed by the watermark left out):"
    )
    print(f"                                              {fmt_q(r['bar_latency_s'])}")
    hours = r["bar_latency_by_session_hour_s"]
    if hours:
        text = ", ".join(
            f"{h}: {q['p50'] * 1e3:,.0f}/{q['p95'] * 1e3:,.0f}" for h, q in hours.items()
        )
        print(f"  bar latency p50/p95 ms by session hour: {text}")
    if r["worst_bars"]:
        text = ", ".join(
            f"{w['bar_close'][:16]} {w['latency_s'] * 1e3:,.0f} ms" for w in r["worst_bars"]
        )
        print(f"  slowest bars (close UTC): {text}")
    lag = fmt_q(r["record_to_dagster_report_s"])
    print(f"  signal recorded -> its bar's Dagster report: {lag}")
    print(
        f"  baseline: grace {r['grace_ms']} ms; per-bar wall budget at speed {r['speed']:g} "
        f"{r['bar_budget_s'] * 1e3:,.0f} ms; bare detector per evaluation "
        f"{r['detector_mean_s'] * 1e3:,.1f} ms ({r['evaluations']} evaluations, "
        f"{r['bars_closed_metric']} bars closed)"
    )
    parts = ", ".join(
        f"{name} {s['mean_s'] * 1e3:,.1f} ms (sum {s['sum_s']:,.1f} s)"
        for name, s in r["stages"].items()
    )
    print(f"  detector stages, mean per evaluation: {parts}")
    print(
        f"  /v1/ticks handling (server): mean {r['ticks_request_mean_s'] * 1e3:,.2f} ms over "
        f"{r['ticks_requests']:,} requests; client batch ack {fmt_q(r['client_batch_latency_s'])}"
    )
    print(f"  fbe serve peak RSS {r['server_peak_rss_mb']:,.0f} MB")


# --------------------------------------------------------------------------------------------
# 2. sustained ingest, batched


def landed_ticks(ticks: pd.DataFrame, i: int, k: int, ts_recv: int) -> list[LandedTick]:
    """Rows ``[i, k)`` of a raw ticks frame as the service would land them from a replay."""
    part = ticks.iloc[i:k]
    rows = zip(
        part["symbol"].tolist(),
        part["ts_event"].tolist(),
        part["price"].tolist(),
        part["size"].tolist(),
        part["side"].tolist(),
        part["source"].tolist(),
        part["seq"].tolist(),
        part["exchange"].fillna("").tolist(),
        part["condition"].fillna("").tolist(),
        part["ohlc_eligible"].tolist(),
        part["volume_eligible"].tolist(),
        strict=True,
    )
    return [
        LandedTick(
            symbol=sym,
            ts_event=ts,
            ts_recv=ts_recv,
            drift_ms=(ts_recv - ts) / 1e6,
            price=price,
            size=size,
            side=side,
            source=source,
            trade_id=f"{ts}-{seq}",
            seq=seq,
            exchange=str(exch),
            condition=str(cond),
            ohlc_eligible=bool(ohlc),
            volume_eligible=bool(vol),
        )
        for sym, ts, price, size, side, source, seq, exch, cond, ohlc, vol in rows
    ]


def storage_floor(ticks: pd.DataFrame, root: Path, batch: int) -> tuple[float, int]:
    """Seconds of :meth:`LandingLog.append` alone for ``ticks`` in batches of ``batch``
    (building the tick objects untimed); returns ``(seconds, accepted)``."""
    home = root / "floor"
    log = LandingLog(home / "landing", load_instruments(home / "instruments.yaml"))
    seconds, accepted = 0.0, 0
    try:
        for i in range(0, len(ticks), batch):
            objs = landed_ticks(ticks, i, min(i + batch, len(ticks)), time.time_ns())
            start = time.perf_counter()
            accepted += log.append(objs).accepted
            seconds += time.perf_counter() - start
    finally:
        log.close()
    return seconds, accepted


def run_ingest(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """Part 2; returns the figures."""
    ticks = spy_day(args.ingest_day)
    day = pd.Timestamp(args.ingest_day).date()
    print(f"[2] sustained ingest: SPY {day} full day, {len(ticks):,} ticks at speed 0", flush=True)
    home = root / "ingest"
    with serving(home, args.grace_ms) as server:
        report = replay_frame(ticks, server.url, KEY, speed=0.0)
        _, close_ns = session_bounds(get_instrument("SPY"), day)
        caught_up = wait_closed(home, "SPY", day, close_ns, timeout_s=600)
        metrics = server.metrics()
        rss = server.peak_rss_mb()
    lines, rows = landing_lines(home), landed_rows(home)
    http_tps = report.sent / report.elapsed_s
    batch = max(1, round(report.sent / report.batches))
    print(
        f"  HTTP: {report.sent:,} ticks in {report.batches} batches, {report.elapsed_s:.2f} s "
        f"= {http_tps:,.0f} ticks/s; storage floor next (batches of {batch:,})",
        flush=True,
    )
    floor_s, floor_accepted = storage_floor(ticks, root, batch)
    req_sum, req_count = hist(metrics, "fbe_ingest_request_seconds", endpoint="/v1/ticks")
    return {
        "day": day.isoformat(),
        "sent": report.sent,
        "accepted": report.accepted,
        "duplicates": report.duplicates,
        "retries": report.retries,
        "batches": report.batches,
        "elapsed_s": report.elapsed_s,
        "ticks_per_s": http_tps,
        "landing_lines": lines,
        "landed_rows": rows,
        "lossless": report.accepted == report.sent == lines == rows == len(ticks),
        "batch_ack_s": quantiles(report.latencies_s, (50, 95, 99)),
        "server_request_mean_s": req_sum / req_count if req_count else 0.0,
        "detector_done_after_s": caught_up,
        "floor_s": floor_s,
        "floor_accepted": floor_accepted,
        "floor_ticks_per_s": floor_accepted / floor_s if floor_s else 0.0,
        "http_over_floor": report.elapsed_s / floor_s if floor_s else 0.0,
        "server_peak_rss_mb": rss,
    }


def print_ingest(r: dict[str, Any]) -> None:
    """Print part 2's figures."""
    print(
        f"  sent {r['sent']:,}, accepted {r['accepted']:,}, duplicates {r['duplicates']}, "
        f"retries {r['retries']}; landing lines {r['landing_lines']:,}, landed rows "
        f"{r['landed_rows']:,} -> {'no loss' if r['lossless'] else 'LOSS'}"
    )
    print(
        f"  HTTP {r['ticks_per_s']:,.0f} ticks/s ({r['elapsed_s']:.2f} s, {r['batches']} "
        f"batches); batch ack {fmt_q(r['batch_ack_s'])}; server handling mean "
        f"{r['server_request_mean_s'] * 1e3:,.1f} ms"
    )
    print(
        f"  in-process LandingLog.append (floor): {r['floor_ticks_per_s']:,.0f} ticks/s "
        f"({r['floor_s']:.2f} s); HTTP / in-process time {r['http_over_floor']:.2f}x"
    )
    print(
        f"  detector finished the session {r['detector_done_after_s']:.1f} s after the last ack"
        " (0.0: already done)"
    )
    print(f"  fbe serve peak RSS {r['server_peak_rss_mb']:,.0f} MB")


# --------------------------------------------------------------------------------------------
# 3. single TradingView posts


def btc_trades(n: int) -> pd.DataFrame:
    """The first ``n`` Tardis BTCUSDT trades (raw ticks layout, trade order)."""
    path = sample_data_dir() / "tardis" / "tardis_binance-futures_BTCUSDT_trades_2020-02-22.csv"
    return read_tardis_trades(path, "BTCUSDT").iloc[:n].reset_index(drop=True)


def alert_bodies(trades: pd.DataFrame) -> list[bytes]:
    """One-alert webhook bodies (SPEC: symbol, price, volume, ISO timestamp, passphrase,
    trade_id) of ``trades``, in order."""
    stamps = pd.to_datetime(trades["ts_event"], unit="ns", utc=True)
    iso = stamps.dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ").tolist()
    return [
        json.dumps(
            {
                "symbol": "BTCUSDT",
                "price": price,
                "volume": size,
                "timestamp": stamp,
                "passphrase": PASSPHRASE,
                "trade_id": str(seq),
            }
        ).encode()
        for price, size, stamp, seq in zip(
            trades["price"].tolist(),
            trades["size"].tolist(),
            iso,
            trades["seq"].tolist(),
            strict=True,
        )
    ]


def single_append_floor(trades: pd.DataFrame, root: Path) -> float:
    """Seconds of one :meth:`LandingLog.append` per alert, sequential, in process (the alerts
    built as the webhook lands them, untimed)."""
    home = root / "floor-posts"
    log = LandingLog(home / "landing", load_instruments(home / "instruments.yaml"))
    seconds = 0.0
    try:
        for price, size, ts, seq in zip(
            trades["price"].tolist(),
            trades["size"].tolist(),
            trades["ts_event"].tolist(),
            trades["seq"].tolist(),
            strict=True,
        ):
            now = time.time_ns()
            tick = LandedTick(
                symbol="BTCUSDT",
                ts_event=ts,
                ts_recv=now,
                drift_ms=(now - ts) / 1e6,
                price=price,
                size=size,
                side="unknown",
                source="tradingview",
                trade_id=str(seq),
            )
            start = time.perf_counter()
            log.append([tick])
            seconds += time.perf_counter() - start
    finally:
        log.close()
    return seconds


def run_posts(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """Part 3; returns the figures."""
    trades = btc_trades(args.posts)
    bodies = alert_bodies(trades)
    n = len(bodies)
    print(f"[3] TradingView posts: {n:,} single alerts from {args.clients} clients", flush=True)
    home = root / "posts"
    latencies: list[list[float]] = [[] for _ in range(args.clients)]
    statuses: list[dict[int, int]] = [{} for _ in range(args.clients)]
    accepted = [0] * args.clients
    errors: list[str] = []
    barrier = threading.Barrier(args.clients + 1, timeout=120)
    headers = {"Content-Type": "application/json"}

    def client(c: int, url: str) -> None:
        with httpx.Client(base_url=url, timeout=30) as http:
            http.get("/healthz")  # open the keep-alive connection before the clock starts
            barrier.wait()
            for body in bodies[c :: args.clients]:
                start = time.perf_counter()
                try:
                    response = http.post(WEBHOOK, content=body, headers=headers)
                except httpx.HTTPError as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                latencies[c].append(time.perf_counter() - start)
                statuses[c][response.status_code] = statuses[c].get(response.status_code, 0) + 1
                if response.status_code == 200:
                    accepted[c] += int(response.json()["accepted"])

    with serving(home, args.grace_ms) as server:
        threads = [
            threading.Thread(target=client, args=(c, server.url)) for c in range(args.clients)
        ]
        for thread in threads:
            thread.start()
        barrier.wait()
        start = time.perf_counter()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - start
        metrics = server.metrics()
        rss = server.peak_rss_mb()
    status: dict[int, int] = {}
    for per in statuses:
        for code, count in per.items():
            status[code] = status.get(code, 0) + count
    lines, rows = landing_lines(home), landed_rows(home)
    req_sum, req_count = hist(metrics, "fbe_ingest_request_seconds", endpoint=WEBHOOK)
    flat = [x for per in latencies for x in per]
    floor_s = single_append_floor(trades, root)
    return {
        "posts": n,
        "clients": args.clients,
        "wall_s": wall,
        "posts_per_s": n / wall,
        "ack_s": quantiles(flat, (50, 95, 99)),
        "status": {str(k): v for k, v in sorted(status.items())},
        "errors": len(errors),
        "first_error": errors[0] if errors else "",
        "accepted": sum(accepted),
        "landing_lines": lines,
        "landed_rows": rows,
        "lossless": status.get(200, 0) == n and sum(accepted) == lines == rows == n,
        "server_request_mean_s": req_sum / req_count if req_count else 0.0,
        "floor_s": floor_s,
        "floor_appends_per_s": n / floor_s if floor_s else 0.0,
        "http_over_floor": wall / floor_s if floor_s else 0.0,
        "server_peak_rss_mb": rss,
    }


def print_posts(r: dict[str, Any]) -> None:
    """Print part 3's figures."""
    print(
        f"  {r['posts']:,} posts in {r['wall_s']:.2f} s = {r['posts_per_s']:,.0f} posts/s "
        f"({r['clients']} clients); statuses {r['status']}, transport errors {r['errors']}"
    )
    print(f"  acknowledgement (client): {fmt_q(r['ack_s'])}")
    print(
        f"  server handling mean {r['server_request_mean_s'] * 1e3:,.2f} ms; fbe serve peak RSS "
        f"{r['server_peak_rss_mb']:,.0f} MB"
    )
    print(
        f"  in-process LandingLog.append of one alert, sequential (floor): "
        f"{r['floor_appends_per_s']:,.0f} appends/s ({r['floor_s']:.2f} s, "
        f"{r['floor_s'] / r['posts'] * 1e3:.2f} ms each); HTTP / in-process time "
        f"{r['http_over_floor']:.2f}x"
    )
    print(
        f"  accepted {r['accepted']:,}, landing lines {r['landing_lines']:,}, landed rows "
        f"{r['landed_rows']:,} -> {'no loss' if r['lossless'] else 'LOSS'}"
    )


# --------------------------------------------------------------------------------------------


def table(results: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """Rows ``(figure, value, target, verdict)`` of the final table."""
    rows: list[tuple[str, str, str, str]] = []

    def verdict(ok: bool) -> str:
        return "ok" if ok else "MISSED"

    lat = results.get("latency")
    if lat:
        q = lat["signal_latency_s"]
        if q:
            rows.append(
                (
                    f"signal latency p50/p95/max (n={int(q['n'])})",
                    f"{q['p50'] * 1e3:,.0f} / {q['p95'] * 1e3:,.0f} / {q['max'] * 1e3:,.0f} ms",
                    "p95 <= 1,000 ms",
                    verdict(q["p95"] <= TARGET_SIGNAL_P95_S),
                )
            )
        b = lat["bar_latency_s"]
        if b:
            rows.append(
                (
                    f"bar latency p50/p95/max (n={int(b['n'])})",
                    f"{b['p50'] * 1e3:,.0f} / {b['p95'] * 1e3:,.0f} / {b['max'] * 1e3:,.0f} ms",
                    "",
                    "",
                )
            )
        rows.append(
            (
                "bare detector / evaluation (mean)",
                f"{lat['detector_mean_s'] * 1e3:,.1f} ms",
                f"budget {lat['bar_budget_s'] * 1e3:,.0f} ms",
                "",
            )
        )
    ing = results.get("ingest")
    if ing:
        rows.append(
            (
                "batched ingest (HTTP)",
                f"{ing['ticks_per_s']:,.0f} ticks/s",
                ">= 5,000 ticks/s",
                verdict(ing["ticks_per_s"] >= TARGET_INGEST_TPS),
            )
        )
        rows.append(
            (
                "LandingLog.append in process",
                f"{ing['floor_ticks_per_s']:,.0f} ticks/s",
                f"HTTP/floor {ing['http_over_floor']:.2f}x",
                "",
            )
        )
        rows.append(("ingest loss", "none" if ing["lossless"] else "LOSS", "none", ""))
    posts = results.get("posts")
    if posts:
        rows.append(
            (
                "TradingView posts",
                f"{posts['posts_per_s']:,.0f} posts/s",
                ">= 300 posts/s",
                verdict(posts["posts_per_s"] >= TARGET_POSTS_PS),
            )
        )
        q = posts["ack_s"]
        rows.append(
            (
                "post ack p50/p99/max",
                f"{q['p50'] * 1e3:,.1f} / {q['p99'] * 1e3:,.1f} / {q['max'] * 1e3:,.1f} ms",
                "p99 <= 250 ms",
                verdict(q["p99"] <= TARGET_POST_P99_S),
            )
        )
        rows.append(
            (
                "LandingLog.append 1 alert in process",
                f"{posts['floor_appends_per_s']:,.0f} appends/s",
                f"HTTP/floor {posts['http_over_floor']:.2f}x",
                "",
            )
        )
        rows.append(("posts loss", "none" if posts["lossless"] else "LOSS", "none", ""))
    return rows


def main() -> int:
    """Run the parts, print the figures and the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--speed", type=float, default=60.0, help="latency replay pace (x real)")
    parser.add_argument("--grace-ms", type=int, default=2000, help="FBE_LIVE_GRACE_MS")
    parser.add_argument(
        "--latency-days", nargs="+", default=["20131007"], help="SPY sessions, YYYYMMDD"
    )
    parser.add_argument(
        "--minutes", type=int, default=390, help="minutes of each session from 13:30 UTC"
    )
    parser.add_argument("--ingest-day", default="20131008", help="SPY day for the ingest run")
    parser.add_argument("--posts", type=int, default=3000, help="TradingView posts")
    parser.add_argument("--clients", type=int, default=4, help="concurrent webhook clients")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--skip-ingest", action="store_true")
    parser.add_argument("--skip-posts", action="store_true")
    parser.add_argument("--json", type=Path, help="write the figures to this JSON file")
    parser.add_argument("--keep", action="store_true", help="keep the temporary FBE_HOMEs")
    args = parser.parse_args()
    if args.speed <= 0:
        parser.error("--speed must be > 0 (the latency replay is paced)")
    if not (sample_data_dir() / "lean" / "spy" / "tick").is_dir():
        print(f"sample data not found in {sample_data_dir()} (set FBE_SAMPLE_DATA)")
        return 2

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # SIGTERM cleans up like Ctrl-C: servers stopped, dirs removed

    signal.signal(signal.SIGTERM, interrupt)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"machine: {os.cpu_count()} CPUs, load average {load}; python {sys.version.split()[0]}")
    root = Path(tempfile.mkdtemp(prefix="fbe-bench-live-"))
    results: dict[str, Any] = {}
    failed: list[str] = []
    parts = [
        ("ingest", args.skip_ingest, run_ingest, print_ingest),
        ("posts", args.skip_posts, run_posts, print_posts),
        ("latency", args.skip_latency, run_latency, print_latency),
    ]
    try:
        for name, skip, run, show in parts:
            if skip:
                continue
            start = time.perf_counter()
            try:
                results[name] = run(args, root)
            except Exception as exc:
                failed.append(name)
                print(f"  {name} FAILED: {type(exc).__name__}: {exc}", flush=True)
                continue
            show(results[name])
            print(f"  ({name} took {time.perf_counter() - start:.0f} s)", flush=True)
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)

    rows = table(results)
    if rows:
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
    lossy = [n for n in ("ingest", "posts") if n in results and not results[n]["lossless"]]
    return 1 if failed or lossy else 0


if __name__ == "__main__":
    sys.exit(main())
