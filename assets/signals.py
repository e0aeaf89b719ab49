"""``features`` -> ``scores`` -> ``signals``, each with a blocking prefix-invariance check."""

from collections.abc import Iterator

import pandas as pd
from dagster import AssetExecutionContext, AssetsDefinition, Output, asset

from assets.common import Lane, check_result, from_store, partition
from assets.partitions import WARMUP_SESSIONS
from fbe_pipeline.pipeline import (
    session_features,
    session_scores,
    session_signals,
    warmup_window,
)
from fbe_pipeline.quality import schemas
from fbe_pipeline.quality.checks import (
    check_prefix_invariance,
    check_signal_timing,
    sample_cut_times,
)
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
        day, instrument = partition(context)
        books = raw_store.get_store().read_partition("books", instrument.symbol, day)
        window = warmup_window(from_store(bars_1m), day)
        feats = session_features(window, day, books)
        yield Output(
            feats,
            metadata={
                "bars": len(feats),
                "warmup_bars": len(window) - len(feats),
                "pokes": int((feats["poke"] != "none").sum()),
                "has_l2": bool(feats["has_l2"].any()) if len(feats) else False,
            },
        )
        cuts = sample_cut_times(feats["ts"])
        yield check_result(
            "features_prefix_invariance",
            check_prefix_invariance(window, lambda b: session_features(b, day, books), cuts, feats),
        )

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
        feats = from_store(features)
        out = session_scores(feats, config)
        yield Output(
            out,
            metadata={
                "config_version": config.version,
                "max_score": round(float(out["score"].max() or 0), 2),
            },
        )
        cuts = sample_cut_times(out["ts"])
        yield check_result(
            "scores_prefix_invariance",
            check_prefix_invariance(feats, lambda f: session_scores(f, config), cuts, out),
        )

    return scores


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
        ],
    )
    def signals(
        context: AssetExecutionContext, scores: pd.DataFrame, scoring: ScoringConfigResource
    ) -> Iterator[object]:
        """Fade signals where the score reaches the trigger; deterministic ids, decision at or
        after the bar close."""
        config = scoring.get_config()
        sc = from_store(scores)
        out = session_signals(sc, config)
        yield Output(out, metadata={"signals": len(out), "config_version": config.version})
        cuts = sample_cut_times(sc["ts"])
        yield check_result(
            "signals_prefix_invariance",
            check_prefix_invariance(sc, lambda s: session_signals(s, config), cuts, out),
        )
        yield check_result("decision_after_bar_close", check_signal_timing(out))

    return signals
