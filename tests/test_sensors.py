"""The raw-data sensor requests one run per partition with new ticks, once."""

from __future__ import annotations

from pathlib import Path

from dagster import DagsterInstance, build_sensor_context

from fbe_pipeline.ingest import load_file
from fbe_pipeline.instruments import get_instrument
from fbe_pipeline.store import LocalRawStore
from resources.fbe import RawStoreResource
from sensors.raw_data import build_new_raw_data_sensor, build_pipeline_job


def _csv(path: Path, rows: list[str]) -> Path:
    path.write_text("timestamp,price,size,side\n" + "\n".join(rows) + "\n")
    return path


def _evaluate(home: Path, cursor: str | None) -> tuple[list[str], list[str], str]:
    context = build_sensor_context(
        instance=DagsterInstance.ephemeral(),
        cursor=cursor,
        resources={"raw_store": RawStoreResource(home=str(home))},
    )
    from fbe_pipeline.definitions import build_lanes

    lanes = build_lanes(LocalRawStore(home / "raw").partitions("ticks"))
    sensor = build_new_raw_data_sensor(lanes, [build_pipeline_job(lane) for lane in lanes])
    result = sensor(context)
    requests = result.run_requests or []
    return (
        [str(r.partition_key) for r in requests],
        [str(r.run_key) for r in requests],
        str(result.cursor),
    )


def test_sensor_requests_new_partitions_once(tmp_path: Path) -> None:
    store = LocalRawStore(tmp_path / "raw")
    spy = get_instrument("SPY")
    load_file(
        store,
        "csv",
        _csv(
            tmp_path / "a.csv",
            ["2013-10-07T14:00:00Z,167.0,100,buy", "2013-10-08T14:00:00Z,168.0,100,sell"],
        ),
        spy,
    )
    keys, run_keys, cursor = _evaluate(tmp_path, None)
    assert keys == ["2013-10-07", "2013-10-08"]
    assert run_keys == ["SPY:2013-10-07:2", "SPY:2013-10-08:2"]

    assert _evaluate(tmp_path, cursor)[0] == []

    load_file(store, "csv", _csv(tmp_path / "b.csv", ["2013-10-08T15:00:00Z,168.5,5,buy"]), spy)
    keys, run_keys, _ = _evaluate(tmp_path, cursor)
    assert keys == ["2013-10-08"]
    assert run_keys == ["SPY:2013-10-08:3"]
