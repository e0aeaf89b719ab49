"""The Dagster asset layer: thin wrappers around :mod:`fbe_pipeline` domain functions."""

from assets.backtest import backtest_summary, backtest_trades
from assets.bars import bars_1m
from assets.raw import raw_ticks
from assets.regimes import regime_tags
from assets.signals import features, scores, signals

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
