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

The direct computation (:func:`common.compute_all`, shared with ``bench_scale.py``) does, per
partition in date order, what the asset bodies of
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
import io
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
import warnings
from datetime import UTC, datetime

from common import Stopwatch, compute_all, mismatches, timed


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
    mismatched = mismatches(produced)

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
