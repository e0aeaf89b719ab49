"""``features`` -> ``scores`` -> ``signals``, each with a blocking prefix-invariance check."""

from collections.abc import Iterator
from datetime import date

import pandas as pd
from dagster import AssetExecutionContext, AssetsDefinition, asset

from assets.common import Lane, SessionResult, emit, from_store, instrument_of, sessions
from assets.partitions import WARMUP_SESSIONS
from fbe_pipeline.live.signal_store import LiveSignalStore, signals_path
from fbe_pipeline.pipeline import (
    session_features,
    session_scores,
    session_signals,
    warmup_window,
)
from fbe_pipeline.quality import schemas
from fbe_pipeline.quality.checks import (
    CheckOutcome,
    check_live_parity,
    check_prefix_invariance,
    check_signal_timing,
    sample_cut_times,
)
from fbe_pipeline.settings import paths
from resources.fbe import RawStoreResource, ScoringConfigResource


def build_features(lane: Lane) -> AssetsDefinition:
    """The ``features`` asset of one instrument (warm-up on the previous session's bars)."""

    @asset(
        **lane.asset_args("features", schemas.FEATURES, "signals"),
        ins={"bars_1m": lane.upstream("bars_1m", WARMUP_SESSIONS)},
        check_specs=[
            lane.check(
                "features_prefix_invariance",
                "features",
                "No look-ahead: features recomputed on data truncated at sampled bars equal "
                "the full run's.",
                blocking=True,
            )
        ],
    )
    def features(
        context: AssetExecutionContext, bars_1m: pd.DataFrame, raw_store: RawStoreResource
    ) -> Iterator[object]:
        """ATR14 (Wilder), 20-bar range, poke, wick, volume and delta ratios and book churn of
        each bar, warmed up on the previous session's bars."""
        symbol = instrument_of(context).symbol
        store = raw_store.get_store()
        bars = from_store(bars_1m)
        days = sessions(context)

        def one(day: date) -> SessionResult:
            books = store.read_partition("books", symbol, day)
            window = warmup_window(lane.window(bars, day, WARMUP_SESSIONS), day)
            feats = session_features(window, day, books)
            cuts = sample_cut_times(feats["ts"])
            invariance = check_prefix_invariance(
                window, lambda b: session_features(b, day, books), cuts, feats
            )
            return SessionResult(
                feats,
                {
                    "bars": len(feats),
                    "warmup_bars": len(window) - len(feats),
                    "pokes": int((feats["poke"] != "none").sum()),
                    "has_l2": bool(feats["has_l2"].any()) if len(feats) else False,
                },
                {"features_prefix_invariance": (invariance, False)},
            )

        yield from emit(context, days, [one(d) for d in days])

    return features


def build_scores(lane: Lane) -> AssetsDefinition:
    """The ``scores`` asset of one instrument."""

    @asset(
        **lane.asset_args("scores", schemas.SCORES, "signals"),
        ins={"features": lane.upstream("features")},
        check_specs=[
            lane.check(
                "scores_prefix_invariance",
                "scores",
                "No look-ahead: scores recomputed on truncated features equal the full run's.",
                blocking=True,
            )
        ],
    )
    def scores(
        context: AssetExecutionContext, features: pd.DataFrame, scoring: ScoringConfigResource
    ) -> Iterator[object]:
        """False-breakout score (0-100) of every bar; 0 off poke bars."""
        config = scoring.get_config()
        all_feats = from_store(features)
        days = sessions(context)

        def one(day: date) -> SessionResult:
            feats = lane.window(all_feats, day)
            out = session_scores(feats, config)
            cuts = sample_cut_times(out["ts"])
            invariance = check_prefix_invariance(
                feats, lambda f: session_scores(f, config), cuts, out
            )
            return SessionResult(
                out,
                {
                    "config_version": config.version,
                    "max_score": round(float(out["score"].max() or 0), 2),
                },
                {"scores_prefix_invariance": (invariance, False)},
            )

        yield from emit(context, days, [one(d) for d in days])

    return scores


def live_parity(symbol: str, day: date, batch: pd.DataFrame) -> CheckOutcome:
    """:func:`check_live_parity` of the session against ``$FBE_HOME``'s live signal store
    (a session that was never live passes)."""
    path = signals_path(paths().home)
    if not path.exists():
        return check_live_parity(batch, batch.iloc[:0], None)
    store = LiveSignalStore(path)
    try:
        live = store.signals(symbol, day, day)
        closed_through = store.progress(symbol, day)
    finally:
        store.close()
    return check_live_parity(batch, live, closed_through)


def build_signals(lane: Lane) -> AssetsDefinition:
    """The ``signals`` asset of one instrument, with its no-look-ahead and timing checks."""

    @asset(
        **lane.asset_args("signals", schemas.SIGNALS, "signals"),
        ins={"scores": lane.upstream("scores")},
        check_specs=[
            lane.check(
                "signals_prefix_invariance",
                "signals",
                "No look-ahead: signals recomputed on truncated scores equal the full run's.",
                blocking=True,
            ),
            lane.check(
                "decision_after_bar_close",
                "signals",
                "Every signal's decision_time is at or after its bar's close.",
                blocking=True,
            ),
            lane.check(
                "live_batch_parity",
                "signals",
                "The live detector's signals of the session equal these: same signal_id, "
                "direction and score, none missing among the bars it closed.",
            ),
        ],
    )
    def signals(
        context: AssetExecutionContext, scores: pd.DataFrame, scoring: ScoringConfigResource
    ) -> Iterator[object]:
        """Fade signals where the score reaches the trigger; deterministic ids, decision at or
        after the bar close."""
        config = scoring.get_config()
        all_scores = from_store(scores)
        days = sessions(context)

        def one(day: date) -> SessionResult:
            sc = lane.window(all_scores, day)
            out = session_signals(sc, config)
            cuts = sample_cut_times(sc["ts"])
            invariance = check_prefix_invariance(
                sc, lambda s: session_signals(s, config), cuts, out
            )
            return SessionResult(
                out,
                {"signals": len(out), "config_version": config.version},
                {
                    "signals_prefix_invariance": (invariance, False),
                    "decision_after_bar_close": (check_signal_timing(out), False),
                    "live_batch_parity": (live_parity(lane.symbol, day, out), False),
                },
            )

        yield from emit(context, days, [one(d) for d in days])

    return signals
