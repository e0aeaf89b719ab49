"""The Dagster asset layer: thin wrappers around :mod:`fbe_pipeline` domain functions.

Every instrument with raw ticks gets its lane of assets, keyed ``[<symbol>, <table>]`` and
partitioned by its sessions (:mod:`assets.partitions`).
"""

import warnings
from datetime import date

from dagster import AssetsDefinition, BetaWarning, PreviewWarning, SourceAsset

# The layer relies on Dagster APIs marked beta or preview (partitioned asset checks, look-backs
# that allow non-existent upstream partitions, dagster-pandera types), chosen on purpose; their
# warnings would fill the screen every time the code location loads.
warnings.filterwarnings("ignore", category=BetaWarning)
warnings.filterwarnings("ignore", category=PreviewWarning)

from assets.backtest import build_backtest_summary, build_backtest_trades  # noqa: E402
from assets.bars import build_bars_1m  # noqa: E402
from assets.common import Lane  # noqa: E402
from assets.partitions import session_partitions  # noqa: E402
from assets.raw import build_raw_objects, build_raw_ticks  # noqa: E402
from assets.regimes import build_regime_tags  # noqa: E402
from assets.signals import build_features, build_scores, build_signals  # noqa: E402
from fbe_pipeline.market.instruments import Instrument  # noqa: E402

PIPELINE_TABLES = (
    "raw_ticks",
    "bars_1m",
    "features",
    "scores",
    "signals",
    "regime_tags",
    "backtest_trades",
    "backtest_summary",
)
_BUILDERS = (
    build_raw_ticks,
    build_bars_1m,
    build_features,
    build_scores,
    build_signals,
    build_regime_tags,
    build_backtest_trades,
    build_backtest_summary,
)


def make_lane(instrument: Instrument, first: date, last: date, live: bool = False) -> Lane:
    """The lane of ``instrument`` over its sessions from ``first`` to ``last`` (inclusive);
    a ``live`` lane's sessions go on to today and beyond (:func:`session_partitions`)."""
    return Lane(instrument, session_partitions(instrument, first, last, live))


def lane_assets(lane: Lane) -> list[AssetsDefinition]:
    """The pipeline's assets of one lane, in :data:`PIPELINE_TABLES` order."""
    return [build(lane) for build in _BUILDERS]


def lane_sources(lane: Lane) -> list[SourceAsset]:
    """The observable sources of one lane: its raw objects in the raw store."""
    return [build_raw_objects(lane)]


__all__ = ["PIPELINE_TABLES", "Lane", "lane_assets", "lane_sources", "make_lane"]
