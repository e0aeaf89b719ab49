"""Materialize partitions whose raw data arrived since the last tick (cursor = manifest size)."""

import json
from datetime import date

from dagster import RunRequest, SensorEvaluationContext, SensorResult, define_asset_job, sensor

from assets import PIPELINE_ASSETS
from assets.partitions import partition_key
from resources.fbe import RawStoreResource

pipeline_job = define_asset_job("fbe_pipeline_job", selection=PIPELINE_ASSETS)


@sensor(job=pipeline_job, minimum_interval_seconds=60)
def new_raw_data_sensor(
    context: SensorEvaluationContext, raw_store: RawStoreResource
) -> SensorResult:
    """Request one run per partition that received new tick objects.

    The cursor is the number of manifest entries already seen; the ``run_key`` is the partition
    plus its object count, so a duplicate tick of the sensor never launches the same run twice.
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
        pk = partition_key(date.fromisoformat(day), symbol)
        requests.append(RunRequest(run_key=f"{pk}:{len(entries)}", partition_key=pk))
    return SensorResult(run_requests=requests, cursor=json.dumps({"entries": len(entries)}))
