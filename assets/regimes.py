"""``regime_tags``: volatility regime (trailing 20-session ATR terciles) and session tag."""

import pandas as pd
from dagster import AssetExecutionContext, AssetIn, Output, asset
from dagster_pandera import pandera_schema_to_dagster_type

from assets.common import from_store, partition, table_asset
from assets.partitions import REGIME_DAYS, day_symbol_partitions, lookback
from fbe_pipeline import schemas
from fbe_pipeline.pipeline import session_regimes


@asset(
    partitions_def=day_symbol_partitions,
    ins={"features": AssetIn(partition_mapping=lookback(REGIME_DAYS))},
    dagster_type=pandera_schema_to_dagster_type(schemas.REGIME_TAGS),
    **table_asset(schemas.REGIME_TAGS, "signals"),
    group_name="signals",
)
def regime_tags(context: AssetExecutionContext, features: pd.DataFrame) -> Output[pd.DataFrame]:
    """Per-bar ``vol_regime`` (low/normal/high/unknown) and ``session_tag``."""
    day, instrument = partition(context)
    out = session_regimes(from_store(features), instrument, day)
    return Output(out, metadata={"regimes": out["vol_regime"].value_counts().to_dict()})
