"""The Dagster asset layer: thin wrappers around :mod:`fbe_pipeline` domain functions."""

import warnings

from dagster import BetaWarning, PreviewWarning

# The layer relies on Dagster APIs marked beta or preview (MultiPartitionMapping, look-backs that
# allow non-existent upstream partitions, dagster-pandera types), chosen on purpose; their
# warnings would fill the screen every time the code location loads.
warnings.filterwarnings("ignore", category=BetaWarning)
warnings.filterwarnings("ignore", category=PreviewWarning)

from assets.backtest import backtest_summary, backtest_trades  # noqa: E402
from assets.bars import bars_1m  # noqa: E402
from assets.raw import raw_ticks  # noqa: E402
from assets.regimes import regime_tags  # noqa: E402
from assets.signals import features, scores, signals  # noqa: E402

PIPELINE_ASSETS = [
    raw_ticks,
    bars_1m,
    features,
    scores,
    signals,
    regime_tags,
    backtest_trades,
    backtest_summary,
]

__all__ = ["PIPELINE_ASSETS"]
