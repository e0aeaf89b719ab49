"""Jobs: one per instrument's lane, materializing its assets one session per run."""

from dagster import AssetSelection, define_asset_job
from dagster._core.definitions.unresolved_asset_job_definition import (
    UnresolvedAssetJobDefinition,
)

from assets import Lane


def pipeline_job_name(symbol: str) -> str:
    """The name of one instrument's pipeline job."""
    return f"fbe_pipeline_{symbol}"


def build_pipeline_job(lane: Lane) -> UnresolvedAssetJobDefinition:
    """The job materializing one instrument's lane (every asset, one session per run)."""
    return define_asset_job(
        pipeline_job_name(lane.symbol),
        # Not the raw store (a source), the walk-forward (all sessions at once, on demand) nor
        # the weekly review (weekly partitions, its own schedule); the daily review is in.
        selection=AssetSelection.groups(lane.symbol)
        - AssetSelection.keys(
            lane.key("raw_objects"), lane.key("walk_forward"), lane.key("weekly_review")
        ),
        description=f"Raw ticks to backtest summary for {lane.symbol}, one session per run.",
    )
