"""Scale-out benchmarks (issue 12): a year of candles, a month of ticks, two instruments at once.

What is measured
----------------
Every scenario generates deterministic synthetic data with ``benchmarks/generate.py`` into a
fresh temporary directory (untimed against the targets), loads it into a fresh ``FBE_HOME``
with ``fbe load`` and materializes it with ``fbe materialize``, both run as a user runs them
(subprocesses of the CLI: process start-up, Dagster definitions and instance included), with
the demo scoring config (trigger score 30) so the backtest trades:

``candles-year``
    ``--instruments`` (default 4; NSE-like index futures on XBOM, Asia/Kolkata 09:15-15:30,
    tick 0.05, alternating with XNYS stocks, tick 0.01) x ``--sessions`` (default 250) sessions
    of vendor 1-minute candles, one CSV file per session (``date``/``time`` columns, naive local
    time, labelled by the open) -> ``fbe load bars-csv`` -> ``fbe materialize --through
    backtest_summary --batch SESSIONS --parallel 2`` (no daily/weekly reviews). Target: load +
    materialize <= 300 s.
``tick-month``
    XNYS trades: ``--instruments`` (4) x ``--sessions`` (21) x ``--ticks`` (expected trades per
    session, default 102,000, so that every session has >= 100,000) -> ``fbe load parquet`` ->
    ``fbe materialize --batch SESSIONS --parallel 2`` (every asset, the daily review's charts
    included). Target: load + materialize <= 180 s.
``parallel``
    Two candle instruments (one XBOM, one XNYS) x ``--sessions`` (default 60), loaded into two
    homes; ``fbe materialize --through backtest_summary --batch SESSIONS`` runs them one at a
    time (one process, one run after the other) on the first and with ``--parallel 2`` on the
    second. Prints the speed-up (target >= 1.6x) and checks that the two homes' pipeline tables
    are identical, row for row.

For each, it prints the sessions, the wall time of the load and of the materialize, partitions
per minute, the ratio to the target (for a smaller run the target is scaled pro rata to the
partitions, which fixed costs make look worse) and the Dagster share. As in
``bench_pipeline.py``, the share compares the Dagster wall time with the same work done by
calling the domain functions directly (:func:`common.compute_all`, in this process, after an
untimed warm-up partition of each instrument): ``share = overhead / process time``, ``overhead
= process time - compute``, where the process time is the materialize wall time times the
materializing processes (``min(--parallel, instruments)``; the cores are shared, so contention
is charged to the overhead, and so is the parent's start-up before its workers exist).
Start-up, definitions, run creation, the I/O manager, the pandera type checks and event logging
are all in the overhead. The process time is also split into asset steps, the rest of the runs
and outside the runs (from the SQLite Dagster instance), with the CPU seconds of the CLI's
processes; a per-asset table sets each step's time in the Dagster runs (event log,
``STEP_START`` to its end) against its direct compute time, per partition.

Run from the repository root with the project's virtualenv (all three at full size: about half
an hour on 2 cores, the direct pass included; a small run such as ``--sessions 5
--instruments 2`` takes a minute or two)::

    python benchmarks/bench_scale.py [--scenario all|candles-year|tick-month|parallel]
        [--sessions N] [--instruments N] [--ticks N] [--batch N] [--parallel N]
        [--through backtest_summary|all] [--keep]

``--keep`` leaves the temporary directory (data and homes; its path is printed). No figure is
asserted. Exit status: 0 on success, 1 when a load or materialize run fails or the parallel
homes' tables differ.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

from bench_ui_backfill import env_for, fbe, tables
from common import Stopwatch, compute_all, mismatches, timed
from generate import CANDLE_MARKETS, TICK, generate, generate_candles

from assets import PIPELINE_TABLES

SCENARIOS = ("candles-year", "tick-month", "parallel")
FIRST = date(2024, 1, 2)
# Target wall times (load + materialize, s) and the size they are set for (instruments,
# sessions); the parallel speed-up target.
TARGETS = {"candles-year": (300.0, 4, 250), "tick-month": (180.0, 4, 21)}
SPEEDUP_TARGET = 1.6
DEFAULTS = {"candles-year": (4, 250), "tick-month": (4, 21), "parallel": (2, 60)}
ASSET_ORDER = (*PIPELINE_TABLES, "daily_review")


@dataclass
class Materialized:
    """One ``fbe materialize`` of a home: wall time, processes and the runs it made."""

    wall: float
    processes: int
    through: bool
    cpu: float = 0.0
    runs: int = 0
    in_runs: float = 0.0
    steps: dict[str, float] = field(default_factory=dict)

    @property
    def process_time(self) -> float:
        """Wall time times the processes that materialized, s."""
        return self.wall * self.processes


@dataclass
class Direct:
    """The same work through the domain functions (:func:`common.compute_all`)."""

    compute: float
    watch: Stopwatch
    types: Stopwatch
    partitions: int
    ticks: list[int]
    mismatched: list[tuple[str, str]]


def instruments(kind: str, count: int) -> list[tuple[str, str]]:
    """``(symbol, calendar)`` of ``count`` generated instruments: trades all on XNYS (``SYN1``,
    ...); candles alternately NSE-like on XBOM (``NSE1``, ...) and on XNYS (``NYS1``, ...)."""
    if kind == "trades":
        return [(f"SYN{i + 1}", "XNYS") for i in range(count)]
    return [
        (f"NSE{i // 2 + 1}", "XBOM") if i % 2 == 0 else (f"NYS{i // 2 + 1}", "XNYS")
        for i in range(count)
    ]


def generate_data(
    data: Path, kind: str, symbols: list[tuple[str, str]], sessions: int, ticks: int
) -> float:
    """Write the scenario's files under ``data/<SYMBOL>/``; returns the seconds it took."""
    start = time.perf_counter()
    for symbol, calendar in symbols:
        if kind == "trades":
            generate(data, [symbol], sessions, FIRST, ticks)
        else:
            generate_candles(data, [symbol], sessions, FIRST, calendar)
    return time.perf_counter() - start


def load(home: Path, data: Path, kind: str, symbols: list[tuple[str, str]]) -> tuple[float, int]:
    """``fbe load`` every generated file, one command per instrument; ``(seconds, files)``."""
    fmt, pattern = ("parquet", "*.parquet") if kind == "trades" else ("bars-csv", "*.csv")
    wall, files = 0.0, 0
    for symbol, calendar in symbols:
        paths = [str(p) for p in sorted((data / symbol).glob(pattern))]
        tick = TICK if kind == "trades" else CANDLE_MARKETS[calendar].tick
        wall += fbe(
            home,
            "load",
            fmt,
            *paths,
            "--symbol",
            symbol,
            "--calendar",
            calendar,
            "--tick-size",
            f"{tick:g}",
            "--lot-size",
            "1",
        )
        files += len(paths)
    return wall, files


def materialize(home: Path, batch: int, parallel: int, through: bool, symbols: int) -> Materialized:
    """``fbe materialize`` of everything loaded in ``home``; reads the runs and step times back
    from the Dagster instance."""
    args = ["materialize", "--batch", str(batch)]
    if through:
        args += ["--through", "backtest_summary"]
    if parallel > 1:
        args += ["--parallel", str(parallel)]
    processes = min(parallel, symbols)
    before = children_cpu()
    done = Materialized(fbe(home, *args), processes, through)
    done.cpu = children_cpu() - before
    done.runs, done.in_runs, done.steps = run_steps(home)
    return done


def children_cpu() -> float:
    """User + system CPU seconds of this process's finished child processes (and theirs)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_steps(home: Path) -> tuple[int, float, dict[str, float]]:
    """From the SQLite Dagster instance of ``home``: the pipeline runs, their summed duration
    (start to end, s) and the summed step durations per asset (``STEP_START`` to
    ``STEP_SUCCESS``/``STEP_FAILURE``, s)."""
    history = home / "dagster" / "history"
    with contextlib.closing(sqlite3.connect(f"file:{history / 'runs.db'}?mode=ro", uri=True)) as c:
        runs = c.execute(
            "select run_id, start_time, end_time from runs where pipeline_name like "
            "'fbe_pipeline_%'"
        ).fetchall()
    steps: dict[str, float] = defaultdict(float)
    for run_id, _, _ in runs:
        path = history / "runs" / f"{run_id}.db"
        if not path.exists():
            continue
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as c:
            events = c.execute(
                "select step_key, dagster_event_type, timestamp from event_logs where "
                "dagster_event_type in ('STEP_START', 'STEP_SUCCESS', 'STEP_FAILURE') order by id"
            ).fetchall()
        started: dict[str, datetime] = {}
        for key, kind, stamp in events:
            at = datetime.fromisoformat(str(stamp)).replace(tzinfo=UTC)
            if kind == "STEP_START":
                started[key] = at
            elif key in started:
                asset = str(key).split("__", 1)[-1]
                steps[asset] += (at - started.pop(key)).total_seconds()
    in_runs = sum(end - start for _, start, end in runs if start and end)
    return len(runs), in_runs, dict(steps)


def direct(home: Path, reviews: bool) -> Direct:
    """Every partition of ``home`` through the domain functions, in this process: an untimed
    warm-up partition of each instrument, then the timed pass over all of them."""
    from fbe_pipeline.pipeline import loaded_sessions
    from fbe_pipeline.settings import paths
    from fbe_pipeline.storage.store import LocalRawStore

    os.environ["FBE_HOME"] = str(home)
    os.environ["FBE_SCORING_CONFIG"] = env_for(home)["FBE_SCORING_CONFIG"]
    store = LocalRawStore(paths().raw)
    parts = sorted((day, symbol) for symbol, day in loaded_sessions(store))
    firsts = {symbol: day for day, symbol in reversed(parts)}
    warm = sorted((day, symbol) for symbol, day in firsts.items())
    compute_all(store, warm, Stopwatch(), Stopwatch(), reviews)
    watch, types = Stopwatch(), Stopwatch()
    _, (_, produced) = timed(lambda: compute_all(store, parts, watch, types, reviews))
    return Direct(
        compute=watch.total,
        watch=watch,
        types=types,
        partitions=len(parts),
        ticks=[counts[0] for counts in produced.values()],
        mismatched=mismatches(produced),
    )


def asset_of(label: str) -> str:
    """The asset whose step does the work a :class:`common.Stopwatch` label times."""
    return "raw_ticks" if label == "raw verification" else label.removesuffix(" checks")


def report_share(runs: Materialized, work: Direct, table: bool = True) -> None:
    """Print the Dagster share of one materialize and, with ``table``, the per-asset table."""
    n = work.partitions
    total = runs.process_time
    overhead = total - work.compute
    in_steps = sum(runs.steps.values())
    print(
        f"  Dagster share: {100 * overhead / total:.1f} % (process time {runs.processes} x "
        f"{runs.wall:.1f} s = {total:.1f} s; direct compute {work.compute:.1f} s in one process; "
        f"the pandera type checks, {work.types.total:.1f} s there, count as overhead)"
    )
    print(
        f"  process time: {in_steps:.1f} s in asset steps, {runs.in_runs - in_steps:.1f} s in "
        f"the {runs.runs} runs outside steps, {total - runs.in_runs:.1f} s outside runs "
        f"(start-up, definitions, instance); CPU {runs.cpu:.1f} s = "
        f"{100 * runs.cpu / total:.0f} % of the process time"
    )
    if work.mismatched:
        print(f"  WARNING: direct path differs from the Dagster outputs on {work.mismatched[:5]}")
    if not table:
        return
    computed: dict[str, float] = defaultdict(float)
    for label, seconds in work.watch.seconds.items():
        computed[asset_of(label)] += seconds
    names = [a for a in ASSET_ORDER if a in runs.steps or a in computed]
    names += sorted(set(runs.steps) - set(names))
    print(f"  {'ms per partition':18} {'Dagster step':>13} {'direct':>8} {'difference':>11}")
    for asset in names:
        step, own = runs.steps.get(asset, 0.0), computed.get(asset, 0.0)
        step, own = 1e3 * step / n, 1e3 * own / n
        print(f"  {asset:18} {step:>13.1f} {own:>8.1f} {step - own:>11.1f}")
    print(
        f"  {'all':18} {1e3 * in_steps / n:>13.1f} {1e3 * work.compute / n:>8.1f} "
        f"{1e3 * (in_steps - work.compute) / n:>11.1f}"
    )


def report_target(name: str, seconds: float, partitions: int) -> None:
    """Print ``seconds`` against the scenario's target (pro rata below full size)."""
    target, count, sessions = TARGETS[name]
    full = count * sessions
    if partitions == full:
        print(f"{name}: {seconds:.0f} s (target {target:.0f} s, {seconds / target:.2f}x)")
        return
    scaled = target * partitions / full
    print(
        f"{name}: {seconds:.1f} s for {partitions} partitions (target {target:.0f} s for "
        f"{full}; pro rata {scaled:.1f} s, {seconds / scaled:.2f}x)"
    )


def scale_run(name: str, root: Path, args: argparse.Namespace, through: bool) -> None:
    """The ``candles-year`` or ``tick-month`` scenario."""
    kind = "candles" if name == "candles-year" else "trades"
    count, sessions = DEFAULTS[name]
    count, sessions = args.instruments or count, args.sessions or sessions
    symbols = instruments(kind, count)
    data, home = root / name / "data", root / name / "home"
    t_gen = generate_data(data, kind, symbols, sessions, args.ticks)
    t_load, files = load(home, data, kind, symbols)
    runs = materialize(home, args.batch or sessions, args.parallel, through, count)
    work = direct(home, reviews=not runs.through)
    n = work.partitions
    end_to_end = t_load + runs.wall
    print(
        f"\n{name}: {len(symbols)} instruments ({', '.join(f'{s} {c}' for s, c in symbols)}) x "
        f"{sessions} sessions of {kind} = {n} partitions"
    )
    if work.ticks and kind == "trades":
        print(f"  ticks per session: min {min(work.ticks):,}, mean {sum(work.ticks) / n:,.0f}")
    print(f"  generate     {t_gen:7.1f} s (not counted)")
    print(
        f"  load         {t_load:7.1f} s ({len(symbols)} fbe load runs, {files} files, "
        f"{1e3 * t_load / max(files, 1):.0f} ms a file)"
    )
    print(
        f"  materialize  {runs.wall:7.1f} s (batch {args.batch or sessions}, "
        f"{runs.processes} process(es), {runs.runs} runs"
        f"{', through backtest_summary' if runs.through else ', every asset'})"
    )
    print(
        f"  partitions per minute: {60 * n / end_to_end:.1f} end to end, "
        f"{60 * n / runs.wall:.1f} materialize alone"
    )
    report_share(runs, work)
    report_target(name, end_to_end, n)


def parallel_run(root: Path, args: argparse.Namespace) -> bool:
    """The ``parallel`` scenario; returns whether the two homes' tables are identical."""
    count, sessions = DEFAULTS["parallel"]
    count, sessions = args.instruments or count, args.sessions or sessions
    symbols = instruments("candles", count)
    data = root / "parallel" / "data"
    one, both = root / "parallel" / "one-at-a-time", root / "parallel" / "parallel"
    t_gen = generate_data(data, "candles", symbols, sessions, args.ticks)
    t_load, files = load(one, data, "candles", symbols)
    load(both, data, "candles", symbols)
    through = args.through != "all"
    batch = args.batch or sessions
    seq = materialize(one, batch, 1, through, count)
    par = materialize(both, batch, max(args.parallel, 2), through, count)
    work = direct(one, reviews=not seq.through)
    same = all(
        a.equals(b) for a, b in zip(tables(one).values(), tables(both).values(), strict=True)
    )
    n = work.partitions
    print(
        f"\nparallel: {len(symbols)} instruments ({', '.join(f'{s} {c}' for s, c in symbols)}) "
        f"x {sessions} sessions of candles = {n} partitions (generate {t_gen:.1f} s, load "
        f"{t_load:.1f} s for {files} files)"
    )
    legs = (("one at a time", seq), (f"--parallel {max(args.parallel, 2)}", par))
    for label, runs in legs:
        print(
            f"  {label:14} materialize {runs.wall:7.1f} s, {60 * n / runs.wall:.1f} partitions "
            f"per minute, {runs.runs} runs, {runs.processes} process(es)"
        )
        report_share(runs, work, table=runs is seq)
    speedup = seq.wall / par.wall
    print(f"  tables identical: {same}")
    print(
        f"parallel: {speedup:.2f}x speed-up (target >= {SPEEDUP_TARGET:.1f}x, "
        f"{speedup / SPEEDUP_TARGET:.2f}x of it)"
    )
    return same


def main() -> int:
    """Run the chosen scenarios; return the process exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--scenario", choices=(*SCENARIOS, "all"), default="all")
    parser.add_argument(
        "--sessions", type=int, help="sessions per instrument (default 250, 21, 60)"
    )
    parser.add_argument("--instruments", type=int, help="instruments (default 4, 4, 2)")
    parser.add_argument(
        "--ticks", type=int, default=102_000, help="tick-month: expected trades per session"
    )
    parser.add_argument(
        "--batch", type=int, help="sessions per run (default: all of them, one run each)"
    )
    parser.add_argument(
        "--parallel", type=int, default=2, help="materializing processes (default 2)"
    )
    parser.add_argument(
        "--through",
        choices=("backtest_summary", "all"),
        help="assets to materialize (default: backtest_summary for the candles, all for ticks)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the data and homes")
    args = parser.parse_args()
    # The CLI runs get env_for()'s environment; the direct path here must see the same.
    for key in [k for k in os.environ if k.startswith(("FBE_", "DAGSTER_"))]:
        if key != "FBE_SAMPLE_DATA":
            del os.environ[key]
    chosen = SCENARIOS if args.scenario == "all" else (args.scenario,)
    root = Path(tempfile.mkdtemp(prefix="fbe-bench-scale-"))
    print(f"python {platform.python_version()}  cpus {os.cpu_count()}")
    status = 0
    try:
        for name in chosen:
            if name == "parallel":
                if not parallel_run(root, args):
                    status = 1
            else:
                default_through = name == "candles-year"
                through = default_through if args.through is None else args.through != "all"
                scale_run(name, root, args, through)
    except subprocess.CalledProcessError as exc:
        command = " ".join(str(a) for a in exc.cmd[3:])
        output = (exc.stderr or b"").decode(errors="replace") or (exc.stdout or b"").decode(
            errors="replace"
        )
        print(f"\nFAILED (exit {exc.returncode}): fbe {command[:300]}", file=sys.stderr)
        print(output[-3000:], file=sys.stderr)
        status = 1
    finally:
        if args.keep:
            print(f"\ndata and homes kept under {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
