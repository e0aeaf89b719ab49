"""Materialize sessions whose raw data arrived since the last tick (cursor = manifest size)."""

import json
from datetime import date

from dagster import (
    AssetSelection,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    define_asset_job,
    sensor,
)
from dagster._core.definitions.unresolved_asset_job_definition import (
    UnresolvedAssetJobDefinition,
)

from assets import Lane
from assets.partitions import partition_key
from resources.fbe import RawStoreResource


def pipeline_job_name(symbol: str) -> str:
    """The name of one instrument's pipeline job."""
    return f"fbe_pipeline_{symbol}"


def build_pipeline_job(lane: Lane) -> UnresolvedAssetJobDefinition:
    """The job materializing one instrument's lane (every asset, one session per run)."""
    return define_asset_job(
        pipeline_job_name(lane.symbol),
        selection=AssetSelection.groups(lane.symbol),
        description=f"Raw ticks to backtest summary for {lane.symbol}, one session per run.",
    )


def build_new_raw_data_sensor(
    lanes: list[Lane], jobs: list[UnresolvedAssetJobDefinition]
) -> SensorDefinition:
    """The sensor requesting a run per session that received new tick objects."""
    by_symbol = {lane.symbol: lane for lane in lanes}

    @sensor(jobs=jobs, minimum_interval_seconds=60)
    def new_raw_data_sensor(
        context: SensorEvaluationContext, raw_store: RawStoreResource
    ) -> SensorResult:
        """Request one run per session that received new tick objects.

        The cursor is the number of manifest entries already seen; the ``run_key`` is the
        partition plus its object count, so a duplicate tick of the sensor never launches the
        same run twice. A day outside the lane's partitions (data loaded after the code
        location was loaded) is logged and left for the next reload.
        """
        seen = json.loads(context.cursor)["entries"] if context.cursor else 0
        entries = raw_store.get_store().manifest()
        counts: dict[tuple[str, str], int] = {}
        for entry in entries[seen:]:
            parts = entry.key.split("/")
            if parts[0] == "ticks":
                key = (parts[1], "-".join(parts[2:5]))
                counts[key] = counts.get(key, 0) + 1
        requests = []
        for symbol, day in sorted(counts, key=lambda k: (k[1], k[0])):
            lane = by_symbol.get(symbol)
            pk = partition_key(date.fromisoformat(day))
            if lane is None or not lane.partitions_def.has_partition_key(pk):
                context.log.info(f"{symbol} {day}: not a partition yet; reload the code location")
                continue
            requests.append(
                RunRequest(
                    run_key=f"{symbol}:{pk}:{len(entries)}",
                    job_name=pipeline_job_name(symbol),
                    partition_key=pk,
                )
            )
        return SensorResult(run_requests=requests, cursor=json.dumps({"entries": len(entries)}))

    return new_raw_data_sensor
