"""``backtest_trades`` and ``backtest_summary`` (walk-forward)."""

from collections.abc import Iterator

import pandas as pd
from dagster import AssetExecutionContext, AssetsDefinition, Output, asset

from assets.common import Lane, check_result, from_store, partition, rounded
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
        """Simulated trades of the session's signals, with slippage and costs."""
        day, instrument = partition(context)
        config = scoring.get_config()
        version = data_version(raw_store.get_store(), instrument.symbol, day)
        trades = session_backtest(
            from_store(bars_1m),
            from_store(features),
            from_store(signals),
            from_store(regime_tags),
            config,
            version,
        )
        yield Output(
            trades,
            metadata={
                **rounded({k: float(v) for k, v in trade_metrics(trades).items()}),
                "config_version": config.version,
                "data_version": version,
            },
        )
        yield check_result("entry_after_decision", check_entry_timing(trades))

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
    ) -> Output[pd.DataFrame]:
        """Walk-forward metrics: the earlier sessions of the look-back in-sample, this session
        out-of-sample; overall and by volatility regime and session tag."""
        day, instrument = partition(context)
        config = scoring.get_config()
        version = data_version(raw_store.get_store(), instrument.symbol, day)
        out = session_summary(from_store(backtest_trades), instrument.symbol, day, config, version)
        return Output(out, metadata={"config_version": config.version, "data_version": version})

    return backtest_summary
