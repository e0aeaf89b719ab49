"""Wall time of the main Dagster job, split into compute and Dagster overhead.

What is measured
----------------
The real sample data set (``$FBE_SAMPLE_DATA``, default ``../shared/data``) is loaded into a
fresh, temporary ``FBE_HOME`` with :func:`fbe_pipeline.market.ingest.load_file` (as ``fbe
load-sample``
does). Then, in one process:

1. **compute, warm-up pass** -- every partition computed by calling the domain functions
   directly (see below). Untimed for the split; it loads the numba kernels, the exchange
   calendars and the Great Expectations context and warms the OS file cache, one-off costs that
   would otherwise be charged to whichever path ran first.
2. **Dagster** -- :func:`fbe_pipeline.definitions.materialize_partitions` on the store (after
   :func:`fbe_pipeline.settings.prepare_dagster_home`), twice: the baseline with one
   ``execute_in_process`` run per session, then the measured job with up to ``--batch``
   consecutive sessions of an instrument per run (a partition-range run), exactly as ``fbe
   materialize`` does. Wall time of each; the split below is of the measured job.
3. **compute, timed pass** -- the same direct computation again.

The direct computation does, per partition in date order, what the asset bodies of
``assets/`` do with the domain functions of :mod:`fbe_pipeline.pipeline`: the raw objects'
verification (:func:`fbe_pipeline.storage.integrity.verify_partition`, reported on its own against
the
job wall time), ``prepare_raw_ticks``,
``session_bars``, ``session_features`` (warm-up window from the previous sessions' bars kept in
memory), ``session_scores``, ``session_signals``, ``session_regimes`` (features of the look-back
window in memory), ``session_backtest`` and ``session_summary`` (trades of the look-back window
in memory), the daily review (figures, Markdown, five charts and the HTML page), plus every
in-asset check (:mod:`fbe_pipeline.quality.checks`,
:func:`fbe_pipeline.quality.expectations.validate`, the vendor-bar match with its store read, the
prefix-invariance re-computations) and ``data_version``/``trade_metrics`` for the metadata. A
failing blocking check skips the partition's downstream steps, as in a Dagster run.

``overhead = Dagster wall - compute``: everything the orchestration adds around the same work --
run creation and event logging on the Dagster instance, the DuckDB I/O manager writing every
output and reading the inputs back (including the look-back windows), the pandera type checks
of every output, resource and context setup, step launching. The pandera validation time is
also measured on its own (calling the same schemas on the direct outputs) and shown as a part
of the overhead. Importing the Dagster definitions is a one-off start-up cost and is reported
separately, outside the job wall time.

Run from the repository root with the project's virtualenv (about 2-3 minutes)::

    python benchmarks/bench_pipeline.py [--batch 10] [--keep]

``--keep`` leaves the temporary ``FBE_HOME`` in place (its path is printed) instead of deleting
it. Exit status: 0 on success, 2 when the sample data is missing, 1 when a Dagster run fails.
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from typing import Any


class Stopwatch:
    """Accumulates wall time per label."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def __call__(self, label: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[label] += time.perf_counter() - start

    @property
    def total(self) -> float:
        """Sum over all labels, s."""
        return sum(self.seconds.values())


def window(frames: dict[date, Any], day: date, sessions: int) -> Any:
    """Concatenate the in-memory frames of ``day`` and the ``sessions`` sessions before it
    (the partitions a Dagster look-back of ``sessions`` hands an asset; the DuckDB I/O
    manager returns them as one frame). ``frames`` holds sessions only."""
    import pandas as pd

    earlier = [d for d in sorted(frames) if d <= day][-(sessions + 1) :]
    parts = [frames[d] for d in earlier]
    non_empty = [f for f in parts if len(f)]
    if not non_empty:
        return parts[-1]
    return pd.concat(non_empty, ignore_index=True)


def compute_all(
    store: Any, parts: list[tuple[date, str]], watch: Stopwatch, types: Stopwatch
) -> tuple[dict[str, int], dict[tuple[str, str], tuple[int, int, int, int, float]]]:
    """Run every partition through the domain functions and checks.

    ``watch`` gets the compute time per step, ``types`` the pandera validation of each output
    (the check Dagster's ``dagster_type`` does; not part of compute).

    Returns
    -------
    (dict, dict)
        Outcome counts (``partitions``, ``blocked``, ``warn_failed``), and per
        ``(symbol, "YYYY-MM-DD")`` the ticks, bars, signals, trades and PnL, to compare with
        what the Dagster run wrote to DuckDB.
    """
    from assets.partitions import REGIME_SESSIONS, SUMMARY_SESSIONS, WARMUP_SESSIONS
    from fbe_pipeline.market.instruments import get_instrument
    from fbe_pipeline.pipeline import (
        data_version,
        prepare_raw_ticks,
        session_backtest,
        session_bars,
        session_bounds,
        session_features,
        session_regimes,
        session_scores,
        session_signals,
        session_summary,
        warmup_window,
    )
    from fbe_pipeline.quality import checks, schemas
    from fbe_pipeline.quality.expectations import validate
    from fbe_pipeline.reports.review import (
        ReviewFrames,
        build_review,
        render_review,
        to_markdown,
    )
    from fbe_pipeline.research.backtest import trade_metrics
    from fbe_pipeline.research.config import ScoringConfig
    from fbe_pipeline.settings import paths
    from fbe_pipeline.storage.integrity import verify_partition

    # The direct path's review pages go beside FBE_HOME's, never over them.
    report_dir = paths().home / "bench-reports"
    config = ScoringConfig.from_dict(json.loads(os.environ.get("FBE_SCORING_CONFIG") or "{}"))
    memory: dict[str, dict[str, dict[date, Any]]] = defaultdict(lambda: defaultdict(dict))
    outcome = {"partitions": 0, "blocked": 0, "warn_failed": 0}
    produced: dict[tuple[str, str], tuple[int, int, int, int, float]] = {}

    def typed(schema: Any, frame: Any) -> None:
        with types(schema.name):
            schema.validate(frame)

    def gate(results: list[checks.CheckOutcome], warn: list[checks.CheckOutcome]) -> bool:
        outcome["warn_failed"] += sum(not r.passed for r in warn)
        return all(r.passed for r in results)

    for day, symbol in parts:
        outcome["partitions"] += 1
        instrument = get_instrument(symbol)
        mem = memory[symbol]

        with watch("raw verification"):
            # The raw_objects_verified check: every object of the partition read and hashed.
            if verify_partition(store, symbol, day):
                outcome["blocked"] += 1
                continue
        with watch("raw_ticks"):
            ticks, _ = prepare_raw_ticks(store, instrument, day)
            open_ns, close_ns = session_bounds(instrument, day)
            data_version(store, symbol, day)
        with watch("raw_ticks checks"):
            ok = gate(
                [
                    checks.check_ticks_in_session(ticks, open_ns, close_ns),
                    validate(ticks, "raw_ticks"),
                ],
                [checks.clock_drift(ticks)],
            )
        typed(schemas.RAW_TICKS, ticks)
        if not ok:
            outcome["blocked"] += 1
            continue

        with watch("bars_1m"):
            bars = session_bars(ticks, instrument, day)
            data_version(store, symbol, day)
        with watch("bars_1m checks"):
            reference = store.read_partition("refbars", symbol, day)
            vendor = (
                [checks.vendor_match(bars, reference, open_ns, close_ns)]
                if reference is not None
                else []
            )
            ok = gate(
                [
                    checks.check_ohlc_invariants(bars),
                    checks.check_bar_times(bars, open_ns, close_ns),
                    validate(bars, "bars_1m"),
                ],
                [checks.gap_report(bars, open_ns, close_ns), *vendor],
            )
        typed(schemas.BARS_1M, bars)
        mem["bars"][day] = bars
        if not ok:
            outcome["blocked"] += 1
            continue

        with watch("features"):
            books = store.read_partition("books", symbol, day)
            win = warmup_window(window(mem["bars"], day, WARMUP_SESSIONS), day)
            feats = session_features(win, day, books)
        with watch("features checks"):
            ok = gate(
                [
                    checks.check_prefix_invariance(
                        win,
                        functools.partial(session_features, trading_date=day, books=books),
                        checks.sample_cut_times(feats["ts"]),
                        feats,
                    )
                ],
                [],
            )
        typed(schemas.FEATURES, feats)
        mem["features"][day] = feats
        if not ok:
            outcome["blocked"] += 1
            continue

        with watch("scores"):
            scores = session_scores(feats, config)
        with watch("scores checks"):
            ok = gate(
                [
                    checks.check_prefix_invariance(
                        feats,
                        lambda f: session_scores(f, config),
                        checks.sample_cut_times(scores["ts"]),
                        scores,
                    )
                ],
                [],
            )
        typed(schemas.SCORES, scores)
        if not ok:
            outcome["blocked"] += 1
            continue

        with watch("signals"):
            signals = session_signals(scores, config)
        with watch("signals checks"):
            ok = gate(
                [
                    checks.check_prefix_invariance(
                        scores,
                        lambda s: session_signals(s, config),
                        checks.sample_cut_times(scores["ts"]),
                        signals,
                    ),
                    checks.check_signal_timing(signals),
                ],
                [],
            )
        typed(schemas.SIGNALS, signals)
        if not ok:
            outcome["blocked"] += 1
            continue

        with watch("regime_tags"):
            regimes = session_regimes(
                window(mem["features"], day, REGIME_SESSIONS), instrument, day
            )
        typed(schemas.REGIME_TAGS, regimes)

        with watch("backtest_trades"):
            version = data_version(store, symbol, day)
            trades = session_backtest(bars, feats, signals, regimes, config, version)
            trade_metrics(trades)
        with watch("backtest_trades checks"):
            ok = gate([checks.check_entry_timing(trades)], [])
        typed(schemas.BACKTEST_TRADES, trades)
        mem["trades"][day] = trades
        if not ok:
            outcome["blocked"] += 1
            continue

        with watch("backtest_summary"):
            version = data_version(store, symbol, day)
            summary = session_summary(
                window(mem["trades"], day, SUMMARY_SESSIONS), symbol, day, config, version
            )
        typed(schemas.BACKTEST_SUMMARY, summary)

        with watch("daily_review"):
            frames = ReviewFrames(
                bars=bars,
                scores=scores,
                signals=signals,
                trades=trades,
                regimes=regimes,
                drift_ms=ticks["drift_ms"],
            )
            review = build_review("daily", instrument, day, day, 1, frames)
            to_markdown(review)
            render_review(review, frames, instrument, report_dir / f"{symbol}-{day}.html")
        produced[(symbol, day.isoformat())] = (
            len(ticks),
            len(bars),
            len(signals),
            len(trades),
            float(trades["pnl"].sum()),
        )
    return outcome, produced


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """``(seconds, result)`` of one call."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def main() -> int:
    """Run the benchmark; return the process exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--keep", action="store_true", help="keep the temporary FBE_HOME")
    parser.add_argument(
        "--batch", type=int, default=10, help="sessions per run of the measured job (default 10)"
    )
    args = parser.parse_args()

    # FBE_HOME must point at the scratch directory before fbe_pipeline.definitions (and the
    # asset modules, which read the instrument registry under FBE_HOME) are imported.
    home = tempfile.mkdtemp(prefix="fbe-bench-")
    os.environ["FBE_HOME"] = home
    logging.basicConfig(level=logging.WARNING)
    # Same as the CLI: Dagster's beta/preview warnings are not actionable here.
    warnings.filterwarnings("ignore", message=".*(beta|preview).*", category=Warning)
    try:
        return run(home, args.batch)
    finally:
        if args.keep:
            print(f"\nFBE_HOME kept at {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)


def run(home: str, batch: int) -> int:
    """The benchmark proper, with ``FBE_HOME`` already set to ``home``; ``batch`` sessions
    per run in the measured job."""
    import numpy as np
    import pandas as pd

    from fbe_pipeline.market.ingest import load_file
    from fbe_pipeline.market.instruments import get_instrument
    from fbe_pipeline.market.sample import SampleDataMissingError, sample_files
    from fbe_pipeline.settings import paths, prepare_dagster_home
    from fbe_pipeline.storage.store import LocalRawStore

    try:
        files = sample_files()
    except SampleDataMissingError as exc:
        print(f"sample data missing: {exc}", file=sys.stderr)
        return 2

    print(
        f"python {platform.python_version()}  numpy {np.__version__}  pandas {pd.__version__}  "
        f"cpus {os.cpu_count()}  FBE_HOME={home}"
    )
    store = LocalRawStore(paths().raw)
    t_load, _ = timed(
        lambda: [load_file(store, f.fmt, f.path, get_instrument(f.symbol)) for f in files]
    )
    parts = sorted((day, sym) for sym, day in store.partitions("ticks"))
    print(f"loaded {len(files)} sample files in {t_load:.1f} s: {len(parts)} partitions")

    # Start-up: Dagster, the asset modules and the Definitions (reads FBE_HOME).
    start = time.perf_counter()
    from dagster import DagsterInstance, RunsFilter
    from rich.console import Console

    from fbe_pipeline.definitions import materialize_partitions

    t_import = time.perf_counter() - start

    # 1. Warm-up pass of the direct computation (one-off costs, see the module docstring).
    t_warm, _ = timed(lambda: compute_all(store, parts, Stopwatch(), Stopwatch()))

    # 2. The Dagster job, its progress display sent to a string buffer: first the baseline
    # (one session per run), then batched as `fbe materialize` runs it (the measured figure).
    prepare_dagster_home()
    quiet = Console(file=io.StringIO())
    t_single, failures_single = timed(lambda: materialize_partitions(store, console=quiet, batch=1))
    batched_from = datetime.now(UTC)
    t_dagster, failures = timed(lambda: materialize_partitions(store, console=quiet, batch=batch))
    records = [
        r
        for r in DagsterInstance.get().get_run_records(RunsFilter(created_after=batched_from))
        if r.dagster_run.job_name.startswith("fbe_pipeline_")
    ]
    in_runs = sum(r.end_time - r.start_time for r in records if r.start_time and r.end_time)

    # 3. Timed pass of the direct computation.
    watch, types = Stopwatch(), Stopwatch()
    t_compute, (outcome, produced) = timed(lambda: compute_all(store, parts, watch, types))
    compute = watch.total  # the pandera calls between the steps are timed apart

    # The direct path must have done the same work: compare with what the runs wrote.
    from fbe_pipeline.storage.warehouse import partition_summary

    written = {
        (str(r["symbol"]), str(r["date"])): (
            r["ticks"],
            r["bars"],
            r["signals"],
            r["trades"],
            r["pnl"],
        )
        for r in partition_summary()
    }
    mismatched = sorted(
        key
        for key in set(written) | set(produced)
        if key not in written
        or key not in produced
        or written[key][:4] != produced[key][:4]
        or abs(float(written[key][4]) - produced[key][4]) > 1e-9  # type: ignore[arg-type]
    )

    n = len(parts)
    overhead = t_dagster - compute
    print(
        f"\n{n} partitions ({', '.join(sorted({s for _, s in parts}))}); Dagster runs failed: "
        f"{failures}; direct path: {outcome['blocked']} partitions stopped by a blocking check, "
        f"{outcome['warn_failed']} warning checks failed"
    )
    if mismatched:
        print(f"WARNING: direct path differs from the Dagster outputs on {mismatched}")
    else:
        print(
            f"direct path reproduces the Dagster outputs (ticks, bars, signals, trades, PnL) "
            f"on all {len(produced)} partitions"
        )
    print(f"one-off: import fbe_pipeline.definitions {t_import:.2f} s (not in the job wall time)")
    print(
        f"direct path: warm-up pass {t_warm:.1f} s; timed pass {t_compute:.1f} s, of which "
        f"{compute:.1f} s compute, {types.total:.1f} s pandera type checks\n"
    )
    rows = [
        ("Dagster job wall time (materialize_partitions)", t_dagster),
        ("  of which inside runs (run start -> end)", in_runs),
        ("compute (domain functions + in-asset checks)", compute),
        ("overhead = wall - compute", overhead),
        ("  of which pandera output type checks", types.total),
    ]
    print(f"{'':48} {'total s':>8} {'per partition s':>16} {'% of wall':>10}")
    for label, value in rows:
        print(f"{label:48} {value:>8.2f} {value / n:>16.3f} {100 * value / t_dagster:>9.1f}%")
    print(
        f"\nbatched ({batch} sessions per run, {len(records)} runs): wall {t_dagster:.1f} s, "
        f"Dagster share {100 * overhead / t_dagster:.1f} % (target <= 30 %)\n"
        f"baseline (one session per run, {n} runs, failed {failures_single}): wall "
        f"{t_single:.1f} s, Dagster share {100 * (t_single - compute) / t_single:.1f} %\n"
        f"baseline / batched wall: {t_single / t_dagster:.2f}x"
    )

    verify = watch.seconds.get("raw verification", 0.0)
    print(
        f"\nraw verification (raw_objects_verified check, all objects read and hashed): "
        f"{verify:.2f} s = {100 * verify / t_dagster:.1f} % of the Dagster job wall time "
        f"(target <= 5 %); the SHA-256 of each read in the steps is inside their times"
    )
    print(f"\ncompute by step (timed pass, {n} partitions):")
    for label, value in sorted(watch.seconds.items(), key=lambda kv: -kv[1]):
        print(f"  {label:28} {value:>7.2f} s  {100 * value / compute:>5.1f}%")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
