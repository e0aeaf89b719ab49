"""``backtest_trades`` and ``backtest_summary`` (walk-forward)."""

from collections.abc import Iterator

import pandas as pd
from dagster import AssetCheckSpec, AssetExecutionContext, AssetIn, Output, asset
from dagster_pandera import pandera_schema_to_dagster_type

from assets.common import check_result, from_store, partition, rounded, table_asset
from assets.partitions import SUMMARY_DAYS, day_symbol_partitions, lookback
from fbe_pipeline import schemas
from fbe_pipeline.backtest import trade_metrics
from fbe_pipeline.checks import check_entry_timing
from fbe_pipeline.pipeline import data_version, session_backtest, session_summary
from resources.fbe import RawStoreResource, ScoringConfigResource


@asset(
    partitions_def=day_symbol_partitions,
    dagster_type=pandera_schema_to_dagster_type(schemas.BACKTEST_TRADES),
    **table_asset(schemas.BACKTEST_TRADES, "backtest"),
    check_specs=[
        AssetCheckSpec(
            "entry_after_decision",
            asset="backtest_trades",
            partitions_def=day_symbol_partitions,
            blocking=True,
            description="Every backtest entry is strictly after its signal's decision time.",
        )
    ],
    group_name="backtest",
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


@asset(
    partitions_def=day_symbol_partitions,
    ins={"backtest_trades": AssetIn(partition_mapping=lookback(SUMMARY_DAYS))},
    dagster_type=pandera_schema_to_dagster_type(schemas.BACKTEST_SUMMARY),
    **table_asset(schemas.BACKTEST_SUMMARY, "backtest"),
    group_name="backtest",
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
