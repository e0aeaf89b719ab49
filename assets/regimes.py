"""``regime_tags``: volatility regime (trailing 20-session ATR terciles) and session tag."""

import pandas as pd
from dagster import AssetExecutionContext, AssetsDefinition, Output, asset

from assets.common import Lane, from_store, partition
from assets.partitions import REGIME_SESSIONS
from fbe_pipeline.pipeline import session_regimes
from fbe_pipeline.quality import schemas


def build_regime_tags(lane: Lane) -> AssetsDefinition:
    """The ``regime_tags`` asset of one instrument (features of 20 earlier sessions read)."""

    @asset(
        **lane.asset_args("regime_tags", schemas.REGIME_TAGS, "signals"),
        ins={"features": lane.upstream("features", REGIME_SESSIONS)},
    )
    def regime_tags(context: AssetExecutionContext, features: pd.DataFrame) -> Output[pd.DataFrame]:
        """Per-bar ``vol_regime`` (low/normal/high/unknown) and ``session_tag``."""
        day, instrument = partition(context)
        out = session_regimes(from_store(features), instrument, day)
        return Output(out, metadata={"regimes": out["vol_regime"].value_counts().to_dict()})

    return regime_tags
