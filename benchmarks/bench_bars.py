"""Throughput of :func:`fbe_pipeline.market.bars.build_bars` against an idiomatic pandas baseline.

What is measured
----------------
For each of the 5 real SPY trade-tick days in ``$FBE_SAMPLE_DATA/lean/spy/tick`` (default
``../shared/data``), the ticks are read with
:func:`fbe_pipeline.market.sources.lean.read_lean_trades`,
given an aggressor side with :func:`fbe_pipeline.market.aggressor.resolve_sides` (reading and side
resolution are *not* timed), and turned into the XNYS regular session's 1-minute bars by

* ``build_bars`` -- the numba kernel used by the pipeline, and
* :func:`pandas_bars` -- the same computation written the usual pandas way
  (``set_index(pd.to_datetime(ts, utc=True))``, ``.resample("1min")`` aggregations,
  ``reindex`` onto the session minutes, ``ffill``/``mask`` for the flat fill). It is kept
  reasonable, not a straw man: it copies only the seven tick columns it needs (not the string
  columns) and calls ``to_datetime`` with ``unit="ns", cache=False``; without these two
  choices it takes ~2.4x as long (~125 ms instead of ~52 ms for a 460k-tick day), which would
  inflate the ratio accordingly.

Before anything is timed the two outputs are asserted equal with
``pandas.testing.assert_frame_equal`` (same columns, dtypes and values, NaN equal to NaN) on every
day, and on a synthetic variant of the first day with gaps of 1, 2 and 3 minutes, a gap at the
session's start and end, minutes with only OHLC- or only volume-ineligible prints, and shuffled
row order -- the real SPY days have no gap, so the fill logic would otherwise go unchecked.
Floats are compared with ``rtol=1e-12``: the baseline's ``resample().sum()`` uses compensated
(Kahan) summation, so ``sum(price * size)`` and hence ``vwap`` can differ from the kernel's plain
running sum in the last bits; the largest relative difference seen is printed.

Each function is called once untimed (for ``build_bars`` this first call is where numba compiles
or loads its kernels from the on-disk cache; it is reported separately, as is a from-scratch
compilation of every kernel without the cache), then timed ``--repeat`` times (default 7) with
the garbage collector off. Throughput is input ticks (the whole 04:00-20:00 file, as passed to
both functions) per second of the median run; "best" uses the fastest run. The overall row is
total ticks over the summed times of all days.

Run from the repository root with the project's virtualenv::

    python benchmarks/bench_bars.py [--repeat 7]

Exit status: 0 on success, 2 when the sample data is missing, 1 when the outputs differ.
"""

from __future__ import annotations

import argparse
import functools
import gc
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

import numba
import numpy as np
import pandas as pd

from fbe_pipeline.market import bars as bars_module
from fbe_pipeline.market.aggressor import resolve_sides
from fbe_pipeline.market.bars import BAR_COLUMNS, MAX_FILL_MINUTES, build_bars
from fbe_pipeline.market.instruments import get_instrument
from fbe_pipeline.market.sessions import NS_PER_MINUTE, session_for
from fbe_pipeline.market.sources.lean import read_lean_trades
from fbe_pipeline.settings import sample_data_dir

SYMBOL = "SPY"
TARGET_RATIO = 20.0
FLOAT_RTOL = 1e-12
# The tick columns build_bars reads; the baseline copies only these, not the string columns.
TICK_INPUTS = ("ts_event", "seq", "price", "size", "side_sign", "ohlc_eligible", "volume_eligible")


def pandas_bars(
    ticks: pd.DataFrame,
    symbol: str,
    trading_date: pd.Timestamp,
    session_open_ns: int,
    session_close_ns: int,
) -> pd.DataFrame:
    """Reference implementation of :func:`fbe_pipeline.market.bars.build_bars` in plain pandas.

    Same parameters, same output (columns, dtypes, values). Written the way the step would be
    written without a kernel: a time index, ``resample("1min")`` aggregations, ``reindex`` onto
    the session minutes and vectorised Series logic for the gap fill.
    """
    ts = ticks["ts_event"]
    t = ticks.loc[(ts >= session_open_ns) & (ts < session_close_ns), list(TICK_INPUTS)]
    # Open/close are the first/last print in (ts_event, seq) order. Like build_bars, sort only
    # when the input is not already in that order (the pipeline's ticks always are).
    dts, dseq = t["ts_event"].diff(), t["seq"].diff()
    if not ((dts > 0) | ((dts == 0) & (dseq >= 0)) | dts.isna()).all():
        t = t.sort_values(["ts_event", "seq"], kind="stable")
    # unit="ns" and cache=False: to_datetime's defaults cost ~40 ms per day here (a generic
    # parse path and a unique-value cache that cannot pay off on distinct timestamps).
    t = t.set_index(pd.to_datetime(t["ts_event"], unit="ns", utc=True, cache=False))

    ohlc_ok, vol_ok = t["ohlc_eligible"], t["volume_eligible"]
    both = ohlc_ok & vol_ok
    size = t["size"].where(vol_ok, 0.0)
    parts = pd.DataFrame(
        {
            "volume": size,
            "buy_volume": size.where(t["side_sign"] > 0, 0.0),
            "sell_volume": size.where(t["side_sign"] < 0, 0.0),
            "tick_count": vol_ok.astype(np.int64),
            "pv": (t["price"] * t["size"]).where(both, 0.0),
            "vv": t["size"].where(both, 0.0),
        }
    )
    minutes = pd.date_range(
        pd.Timestamp(session_open_ns, tz="UTC"),
        pd.Timestamp(session_close_ns, tz="UTC"),
        freq="1min",
        inclusive="left",
    )
    ohlc = t["price"].where(ohlc_ok).resample("1min").ohlc().reindex(minutes)
    sums = parts.resample("1min").sum().reindex(minutes, fill_value=0)

    # Gap fill: untraded minutes after the first traded one, in runs of <= MAX_FILL_MINUTES.
    traded = ohlc["open"].notna() | (sums["tick_count"] > 0)
    gap = ~traded
    run_len = gap.groupby((gap != gap.shift()).cumsum()).transform("size")
    is_filled = gap & traded.cummax() & (run_len <= MAX_FILL_MINUTES)
    present = traded | is_filled

    # Filled minutes and minutes with only OHLC-ineligible prints are flat at the last close.
    prev_close = ohlc["close"].ffill()
    flat = present & ohlc["open"].isna()
    for col in ("open", "high", "low", "close"):
        ohlc[col] = ohlc[col].mask(flat, prev_close)
    keep = present & ohlc["open"].notna()

    out = pd.concat([ohlc, sums], axis=1).loc[keep].rename_axis("ts").reset_index()
    out["vwap"] = (out["pv"] / out["vv"]).where(out["vv"] > 0, out["close"])
    out["delta"] = out["buy_volume"] - out["sell_volume"]
    out["is_filled"] = is_filled.loc[keep].to_numpy()
    out["symbol"] = symbol
    out["trading_date"] = pd.Timestamp(trading_date).normalize()
    out["trading_date"] = out["trading_date"].astype("datetime64[ns]")
    return out[list(BAR_COLUMNS)]


def assert_same(ours: pd.DataFrame, theirs: pd.DataFrame, label: str) -> float:
    """Assert equal frames (NaN-aware, floats to ``FLOAT_RTOL``); return max relative diff."""
    try:
        pd.testing.assert_frame_equal(
            ours, theirs, check_exact=False, rtol=FLOAT_RTOL, atol=0.0, check_dtype=True
        )
    except AssertionError as exc:
        print(f"\nOUTPUTS DIFFER ({label}): build_bars vs pandas baseline\n{exc}", file=sys.stderr)
        raise SystemExit(1) from exc
    worst = 0.0
    for col in ours.columns:
        if ours[col].dtype == np.float64:
            a, b = ours[col].to_numpy(), theirs[col].to_numpy()
            ok = ~np.isnan(a) & (a != b)
            if ok.any():
                worst = max(worst, float(np.max(np.abs(a[ok] - b[ok]) / np.abs(a[ok]))))
    return worst


def gap_variant(ticks: pd.DataFrame, open_ns: int, close_ns: int) -> pd.DataFrame:
    """The first day's ticks edited to exercise every branch of the gap fill, rows shuffled."""
    minute = (ticks["ts_event"].to_numpy() - open_ns) // NS_PER_MINUTE
    n_min = (close_ns - open_ns) // NS_PER_MINUTE
    drop = np.isin(minute, [0, 1, 2, 10, 20, 21, 30, 31, 32, n_min - 2, n_min - 1])
    out = ticks.loc[~drop].copy()
    m = minute[~drop]
    out.loc[m == 40, "ohlc_eligible"] = False  # volume but no OHLC print: flat at last close
    out.loc[m == 50, "volume_eligible"] = False  # OHLC print but no volume
    out.loc[np.isin(m, [60, 61]), ["ohlc_eligible", "volume_eligible"]] = False  # 2-min gap
    out.loc[np.isin(m, [70, 71, 72]), ["ohlc_eligible", "volume_eligible"]] = False
    rng = np.random.default_rng(0)
    return out.iloc[rng.permutation(len(out))].reset_index(drop=True)


def time_runs(fn: Callable[[], object], repeat: int) -> list[float]:
    """Wall times (s) of ``repeat`` calls of ``fn`` with the garbage collector disabled."""
    times = []
    enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(repeat):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    finally:
        if enabled:
            gc.enable()
    return times


def fresh_compile_seconds() -> dict[str, float]:
    """Compile every numba kernel of :mod:`fbe_pipeline.market.bars` again from scratch, no cache.

    Uses the signatures the warm-up calls compiled, so it measures exactly the JIT work a cold
    process without numba's on-disk cache pays.
    """
    out = {}
    for name, obj in vars(bars_module).items():
        # Kernels inlined into others (inline="always") have no signatures of their own.
        if isinstance(obj, numba.core.registry.CPUDispatcher) and obj.signatures:
            fresh = numba.njit(cache=False)(obj.py_func)
            start = time.perf_counter()
            for sig in obj.signatures:
                fresh.compile(sig)
            out[name] = time.perf_counter() - start
    return out


def main() -> int:
    """Run the benchmark; return the process exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repeat", type=int, default=7, help="timed runs per function and day")
    args = parser.parse_args()

    data = sample_data_dir()
    files = sorted((data / "lean" / "spy" / "tick").glob("*_trade.zip"))
    if not files:
        print(
            f"sample data not found: no lean/spy/tick/*_trade.zip under {data}. Put the shared "
            "data at ../shared/data or set FBE_SAMPLE_DATA to its path.",
            file=sys.stderr,
        )
        return 2

    print(
        f"python {platform.python_version()}  numpy {np.__version__}  pandas {pd.__version__}  "
        f"numba {numba.__version__}  cpus {os.cpu_count()}  ({platform.machine()}, "
        f"{platform.system()})"
    )
    print(f"data: {data}; {args.repeat} timed runs after one warm-up call each\n")

    instrument = get_instrument(SYMBOL)
    days: list[tuple[date, pd.DataFrame, int, int]] = []
    for path in files:
        day = date(int(path.name[:4]), int(path.name[4:6]), int(path.name[6:8]))
        bounds = session_for(instrument, day)
        if bounds is None:
            continue
        ticks = resolve_sides(read_lean_trades(Path(path), SYMBOL, "America/New_York", 10_000.0))
        days.append((day, ticks, *bounds))

    # First call: numba compiles the kernels, or loads them from its on-disk cache.
    day0, ticks0, open0, close0 = days[0]
    start = time.perf_counter()
    build_bars(ticks0, SYMBOL, pd.Timestamp(day0), open0, close0)
    first_call = time.perf_counter() - start
    compile_times = fresh_compile_seconds()

    # Equality before timing: every real day, plus the synthetic gap/shuffle variant.
    worst = 0.0
    for day, ticks, open_ns, close_ns in days:
        ours = build_bars(ticks, SYMBOL, pd.Timestamp(day), open_ns, close_ns)
        worst = max(
            worst,
            assert_same(
                ours, pandas_bars(ticks, SYMBOL, pd.Timestamp(day), open_ns, close_ns), str(day)
            ),
        )
    variant = gap_variant(ticks0, open0, close0)
    v_ours = build_bars(variant, SYMBOL, pd.Timestamp(day0), open0, close0)
    v_base = pandas_bars(variant, SYMBOL, pd.Timestamp(day0), open0, close0)
    worst = max(worst, assert_same(v_ours, v_base, f"{day0} gap variant"))
    print(
        f"outputs equal on {len(days)} days + gap variant ({len(v_ours)} bars, "
        f"{int(v_ours['is_filled'].sum())} filled); max relative float difference {worst:.1e}"
    )
    print(
        f"first build_bars call (JIT compile or numba cache load): {first_call * 1e3:.1f} ms; "
        "compiling the kernels from scratch: "
        + ", ".join(f"{k} {v * 1e3:.0f} ms" for k, v in compile_times.items())
        + f" (total {sum(compile_times.values()) * 1e3:.0f} ms)\n"
    )

    header = (
        f"{'day':10} {'ticks':>8} {'in sess':>8} {'bars':>4} | {'ours ms':>7} {'best':>6} "
        f"{'Mticks/s':>8} | {'pandas ms':>9} {'best':>7} {'Mticks/s':>8} | {'ratio':>6} "
        f"{'best':>6}"
    )
    print(header)
    print("-" * len(header))
    totals = {"n": 0, "ours": 0.0, "ours_best": 0.0, "base": 0.0, "base_best": 0.0}
    ratios = []
    for day, ticks, open_ns, close_ns in days:
        call = (ticks, SYMBOL, pd.Timestamp(day), open_ns, close_ns)
        ours = functools.partial(build_bars, *call)
        base = functools.partial(pandas_bars, *call)
        ours()
        base()
        t_ours = time_runs(ours, args.repeat)
        t_base = time_runs(base, args.repeat)
        n = len(ticks)
        ts = ticks["ts_event"].to_numpy()
        in_session = int(((ts >= open_ns) & (ts < close_ns)).sum())
        med_o, med_b = statistics.median(t_ours), statistics.median(t_base)
        ratio = med_b / med_o
        ratios.append(ratio)
        n_bars = len(ours())
        print(
            f"{day!s:10} {n:>8,} {in_session:>8,} {n_bars:>4} | {med_o * 1e3:>7.2f} "
            f"{min(t_ours) * 1e3:>6.2f} {n / med_o / 1e6:>8.1f} | {med_b * 1e3:>9.2f} "
            f"{min(t_base) * 1e3:>7.2f} {n / med_b / 1e6:>8.2f} | {ratio:>5.1f}x "
            f"{min(t_base) / min(t_ours):>5.1f}x"
        )
        totals["n"] += n
        totals["ours"] += med_o
        totals["ours_best"] += min(t_ours)
        totals["base"] += med_b
        totals["base_best"] += min(t_base)
    print("-" * len(header))
    overall = totals["base"] / totals["ours"]
    print(
        f"{'overall':10} {totals['n']:>8,} {'':>8} {'':>4} | {totals['ours'] * 1e3:>7.2f} "
        f"{totals['ours_best'] * 1e3:>6.2f} {totals['n'] / totals['ours'] / 1e6:>8.1f} | "
        f"{totals['base'] * 1e3:>9.2f} {totals['base_best'] * 1e3:>7.2f} "
        f"{totals['n'] / totals['base'] / 1e6:>8.2f} | {overall:>5.1f}x "
        f"{totals['base_best'] / totals['ours_best']:>5.1f}x"
    )
    verdict = "meets" if overall >= TARGET_RATIO else "BELOW"
    print(
        f"\nbuild_bars: {totals['n'] / totals['ours'] / 1e6:.1f} M ticks/s, pandas baseline: "
        f"{totals['n'] / totals['base'] / 1e6:.2f} M ticks/s -> {overall:.1f}x overall "
        f"(median-based; per day {min(ratios):.1f}x-{max(ratios):.1f}x); {verdict} the "
        f"{TARGET_RATIO:.0f}x target"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
