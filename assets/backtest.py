"""``backtest_trades`` and ``backtest_summary`` (walk-forward)."""

from collections.abc import Iterator
from datetime import date

import pandas as pd
from dagster import AssetExecutionContext, AssetsDefinition, asset

from assets.common import (
    Lane,
    SessionResult,
    emit,
    from_store,
    instrument_of,
    rounded,
    sessions,
)
from assets.partitions import SUMMARY_SESSIONS
from fbe_pipeline.pipeline import data_version, session_backtest, session_summary
from fbe_pipeline.quality import schemas
from fbe_pipeline.quality.checks import check_entry_timing
from fbe_pipeline.research.backtest import trade_metrics
from resources.fbe import RawStoreResource, ScoringConfigResource


def build_backtest_trades(lane: Lane) -> AssetsDefinition:
    """The ``backtest_trades`` asset of one instrument."""

    @asset(
        **lane.asset_args("backtest_trades", schemas.BACKTEST_TRADES, "backtest"),
        ins={
            name: lane.upstream(name) for name in ("bars_1m", "features", "signals", "regime_tags")
        },
        check_specs=[
            lane.check(
                "entry_after_decision",
                "backtest_trades",
                "Every backtest entry is strictly after its signal's decision time.",
                blocking=True,
            )
        ],
    )
    def backtest_trades(
        context: AssetExecutionContext,
        bars_1m: pd.DataFrame,
        features: pd.DataFrame,
        signals: pd.DataFrame,
        regime_tags: pd.DataFrame,
        scoring: ScoringConfigResource,
        raw_store: RawStoreResource,
    ) -> Iterator[object]:
        """Simulated trades of each session's signals, with slippage and costs."""
        instrument = instrument_of(context)
        config = scoring.get_config()
        store = raw_store.get_store()
        inputs = [from_store(f) for f in (bars_1m, features, signals, regime_tags)]
        days = sessions(context)

        def one(day: date) -> SessionResult:
            version = data_version(store, instrument.symbol, day)
            bars, feats, sigs, regimes = (lane.window(f, day) for f in inputs)
            trades = session_backtest(bars, feats, sigs, regimes, config, version)
            return SessionResult(
                trades,
                {
                    **rounded({k: float(v) for k, v in trade_metrics(trades).items()}),
                    "config_version": config.version,
                    "data_version": version,
                },
                {"entry_after_decision": (check_entry_timing(trades), False)},
            )

        yield from emit(context, days, [one(d) for d in days])

    return backtest_trades


def build_backtest_summary(lane: Lane) -> AssetsDefinition:
    """The ``backtest_summary`` asset of one instrument (trades of 20 earlier sessions read)."""

    @asset(
        **lane.asset_args("backtest_summary", schemas.BACKTEST_SUMMARY, "backtest"),
        ins={"backtest_trades": lane.upstream("backtest_trades", SUMMARY_SESSIONS)},
    )
    def backtest_summary(
        context: AssetExecutionContext,
        backtest_trades: pd.DataFrame,
        scoring: ScoringConfigResource,
        raw_store: RawStoreResource,
    ) -> Iterator[object]:
        """Walk-forward metrics: the earlier sessions of the look-back in-sample, this session
        out-of-sample; overall and by volatility regime and session tag."""
        instrument = instrument_of(context)
        config = scoring.get_config()
        store = raw_store.get_store()
        trades = from_store(backtest_trades)
        days = sessions(context)

        def one(day: date) -> SessionResult:
            version = data_version(store, instrument.symbol, day)
            window = lane.window(trades, day, SUMMARY_SESSIONS)
            out = session_summary(window, instrument.symbol, day, config, version)
            return SessionResult(
                out, {"config_version": config.version, "data_version": version}, {}
            )

        yield from emit(context, days, [one(d) for d in days])

    return backtest_summary
