"""Declarative automation over the observable raw store: a late file for an earlier session
re-materializes that session and the later sessions whose look-back covers it, nothing else."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from dagster import (
    AssetKey,
    AssetSelection,
    DagsterInstance,
    Definitions,
    define_asset_job,
    evaluate_automation_conditions,
)

from fbe_pipeline.definitions import build_definitions, build_lanes, materialize_partitions
from fbe_pipeline.market.ingest import load_file
from fbe_pipeline.market.instruments import get_instrument
from fbe_pipeline.storage.store import LocalRawStore

DAYS = (date(2013, 10, 7), date(2013, 10, 8), date(2013, 10, 9))


def _observe(defs: Definitions, instance: DagsterInstance, symbol: str) -> set[str]:
    """Run the observation of the lane's ``raw_objects`` as the automation launches it (one run,
    for the latest session); returns the sessions whose data version it recorded."""
    key = AssetKey([symbol, "raw_objects"])
    job = define_asset_job("observe_raw_objects", selection=AssetSelection.keys(key))
    merged = Definitions.merge(defs, Definitions(jobs=[job]))
    latest = defs.resolve_assets_def(AssetKey([symbol, "raw_ticks"])).partitions_def
    assert latest is not None
    result = merged.resolve_job_def(job.name).execute_in_process(
        instance=instance, partition_key=latest.get_last_partition_key()
    )
    return {
        str(e.event_specific_data.asset_observation.partition)  # type: ignore[union-attr]
        for e in result.all_events
        if e.event_type_value == "ASSET_OBSERVATION"
    }


def _requested(result: object, defs: object) -> dict[str, list[str]]:
    """Requested partitions by asset (observations of the raw store left out)."""
    out: dict[str, list[str]] = {}
    for key in defs.resolve_asset_graph().get_all_asset_keys():  # type: ignore[attr-defined]
        parts = result.get_requested_partitions(key)  # type: ignore[attr-defined]
        if parts and key.path[-1] != "raw_objects":
            out[key.to_user_string()] = sorted(str(p) for p in parts)
    return out


def test_late_file_refreshes_its_session_and_the_later_lookbacks_only(
    fbe_home: Path, monkeypatch: pytest.MonkeyPatch, sample_data: Path, tmp_path: Path
) -> None:
    monkeypatch.setenv("DAGSTER_HOME", str(fbe_home / "dagster"))
    (fbe_home / "dagster").mkdir(parents=True)
    store = LocalRawStore(fbe_home / "raw")
    bac = get_instrument("BAC")
    for day in DAYS:
        load_file(store, "lean-trades", sample_data / f"lean/bac/tick/{day:%Y%m%d}_trade.zip", bac)
    assert materialize_partitions(store) == 0
    instance = DagsterInstance.get()
    defs = build_definitions(build_lanes(store.partitions("ticks")))

    d1, d2, d3 = (d.isoformat() for d in DAYS)
    assert _observe(defs, instance, "BAC") == {d1, d2, d3}
    first = evaluate_automation_conditions(defs, instance)
    later = datetime.now(UTC) + timedelta(minutes=2)
    settled = evaluate_automation_conditions(
        defs, instance, cursor=first.cursor, evaluation_time=later
    )
    assert _requested(settled, defs) == {}
    # Observing the raw store takes one run a minute, for the latest session only.
    assert settled.get_requested_partitions(AssetKey(["BAC", "raw_objects"])) == {d3}

    late = tmp_path / "late_prints.csv"
    late.write_text("timestamp,price,size,side\n2013-10-07T15:00:00.5Z,14.05,300,buy\n")
    load_file(store, "csv", late, bac)
    _observe(defs, instance, "BAC")
    result = evaluate_automation_conditions(
        defs, instance, cursor=settled.cursor, evaluation_time=later + timedelta(seconds=10)
    )

    assert _requested(result, defs) == {
        "BAC/raw_ticks": [d1],
        "BAC/bars_1m": [d1],
        "BAC/features": [d1, d2],
        "BAC/scores": [d1, d2],
        "BAC/signals": [d1, d2],
        "BAC/regime_tags": [d1, d2, d3],
        "BAC/backtest_trades": [d1, d2, d3],
        "BAC/backtest_summary": [d1, d2, d3],
    }
