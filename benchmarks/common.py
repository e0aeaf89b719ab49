"""Shared parts of the pipeline benchmarks: the direct computation of every partition through
the domain functions (the work the Dagster assets do, without Dagster), against which
``bench_pipeline.py`` and ``bench_scale.py`` measure the Dagster share of a job's wall time
(``overhead = Dagster wall - compute``, ``share = overhead / wall``).

Not a benchmark itself: import it from a script in ``benchmarks/`` (the script's directory is
on ``sys.path``).
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date
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
    store: Any,
    parts: list[tuple[date, str]],
    watch: Stopwatch,
    types: Stopwatch,
    reviews: bool = True,
) -> tuple[dict[str, int], dict[tuple[str, str], tuple[int, int, int, int, float]]]:
    """Run every partition through the domain functions and checks, in the order of ``parts``
    (``(trading date, symbol)``, date order within each symbol).

    ``watch`` gets the compute time per step, ``types`` the pandera validation of each output
    (the check Dagster's ``dagster_type`` does; not part of compute). A session without ticks
    gets its bars from its vendor candles, as the ``bars_1m`` asset does. ``reviews=False``
    stops each partition after ``backtest_summary`` (``fbe materialize --through
    backtest_summary``). Only the look-back windows' sessions are kept in memory.

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

    keep = max(WARMUP_SESSIONS, REGIME_SESSIONS, SUMMARY_SESSIONS) + 1
    for day, symbol in parts:
        outcome["partitions"] += 1
        instrument = get_instrument(symbol)
        mem = memory[symbol]
        for by_day in mem.values():
            for old in sorted(by_day)[:-keep]:
                del by_day[old]

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
            candles = None if len(ticks) else store.read_partition("candles", symbol, day)
            bars = session_bars(ticks, instrument, day, candles)
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

        produced[(symbol, day.isoformat())] = (
            len(ticks),
            len(bars),
            len(signals),
            len(trades),
            float(trades["pnl"].sum()),
        )
        if not reviews:
            continue
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
    return outcome, produced


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """``(seconds, result)`` of one call."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def mismatches(
    produced: dict[tuple[str, str], tuple[int, int, int, int, float]],
) -> list[tuple[str, str]]:
    """``(symbol, "YYYY-MM-DD")`` of the partitions where what the direct path produced
    (:func:`compute_all`: ticks, bars, signals, trades, PnL) differs from what the Dagster runs
    wrote to the warehouse of ``$FBE_HOME``, or that only one of them has; sorted."""
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
    return sorted(
        key
        for key in set(written) | set(produced)
        if key not in written
        or key not in produced
        or written[key][:4] != produced[key][:4]
        or abs(float(written[key][4]) - produced[key][4]) > 1e-9  # type: ignore[arg-type]
    )
