"""``regime_tags``: volatility regime (trailing 20-session ATR terciles) and session tag."""

from collections.abc import Iterator
from datetime import date

import pandas as pd
from dagster import AssetExecutionContext, AssetsDefinition, asset

from assets.common import Lane, SessionResult, emit, from_store, instrument_of, sessions
from assets.partitions import REGIME_SESSIONS
from fbe_pipeline.pipeline import session_regimes
from fbe_pipeline.quality import schemas


def build_regime_tags(lane: Lane) -> AssetsDefinition:
    """The ``regime_tags`` asset of one instrument (features of 20 earlier sessions read)."""

    @asset(
        **lane.asset_args("regime_tags", schemas.REGIME_TAGS, "signals"),
        ins={"features": lane.upstream("features", REGIME_SESSIONS)},
    )
    def regime_tags(context: AssetExecutionContext, features: pd.DataFrame) -> Iterator[object]:
        """Per-bar ``vol_regime`` (low/normal/high/unknown) and ``session_tag``."""
        instrument = instrument_of(context)
        feats = from_store(features)
        days = sessions(context)

        def one(day: date) -> SessionResult:
            window = lane.window(feats, day, REGIME_SESSIONS)
            out = session_regimes(window, instrument, day)
            return SessionResult(out, {"regimes": out["vol_regime"].value_counts().to_dict()}, {})

        yield from emit(context, days, [one(d) for d in days])

    return regime_tags
