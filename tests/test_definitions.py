"""The Definitions load, and no dependency can reach a later partition (SPEC §4.1)."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest
from dagster import AssetKey, Definitions, PartitionMapping, TimeWindowPartitionMapping

from assets import PIPELINE_TABLES, Lane, lane_assets, make_lane
from assets.reviews import build_daily_review, lane_checks
from fbe_pipeline.definitions import build_definitions
from fbe_pipeline.market.instruments import get_instrument
from tests.realdata import sample_lanes

LANES: list[Lane] = sample_lanes()  # type: ignore[assignment]
defs = build_definitions(LANES)


def _upstream_keys(lane: Lane, mapping: PartitionMapping | None, key: str) -> list[str]:
    pdef = lane.partitions_def
    if mapping is None:
        return [key]
    result = mapping.get_upstream_mapped_partitions_result_for_partitions(
        pdef.subset_with_partition_keys([key]), pdef, pdef
    )
    return list(result.partitions_subset.get_partition_keys())


def later_partition_violations(
    lane: Lane, deps: list[tuple[AssetKey, AssetKey, PartitionMapping | None]]
) -> list[str]:
    """Every (asset, upstream, partition) whose mapping reaches a later session or another
    instrument's assets."""
    bad = []
    for asset_key, upstream, mapping in deps:
        if upstream.path[0] != asset_key.path[0]:
            bad.append(f"{asset_key.to_user_string()} <- {upstream.to_user_string()}")
        for key in lane.partitions_def.get_partition_keys():
            for up in _upstream_keys(lane, mapping, key):
                if up > key:
                    edge = f"{asset_key.to_user_string()} <- {upstream.to_user_string()}"
                    bad.append(f"{edge}: {key} -> {up}")
    return bad


def _deps(lane: Lane) -> list[tuple[AssetKey, AssetKey, PartitionMapping | None]]:
    deps = []
    tables = lane_assets(lane)
    for asset_def in [*tables, build_daily_review(lane, lane_checks(tables))]:
        for upstream in asset_def.dependency_keys:
            deps.append((asset_def.key, upstream, asset_def.get_partition_mapping(upstream)))
    return deps


def test_definitions_load_with_a_lane_of_assets_per_instrument() -> None:
    graph = defs.resolve_asset_graph()
    names = {k.to_user_string() for k in graph.get_all_asset_keys()}
    tables = (*PIPELINE_TABLES, "raw_objects", "live_session", "walk_forward")
    tables += ("daily_review", "weekly_review")
    expected = {f"{lane.symbol}/{t}" for lane in LANES for t in tables}
    assert names == expected | {"raw_integrity", "monitors"}
    assert defs.resolve_job_def("fbe_pipeline_SPY") is not None
    assert defs.resolve_job_def("raw_integrity_job") is not None
    schedule = defs.resolve_schedule_def("raw_integrity_hourly")
    assert schedule.cron_schedule == "0 * * * *"
    # Each lane's reviews: the daily one at its calendar's close, the weekly one after a week.
    for lane in LANES:
        assert defs.resolve_schedule_def(f"{lane.symbol}_daily_review") is not None
        assert defs.resolve_schedule_def(f"{lane.symbol}_weekly_review") is not None
    pipeline = defs.resolve_job_def("fbe_pipeline_SPY")
    keys = {k.path[-1] for k in pipeline.asset_layer.executable_asset_keys}
    assert "daily_review" in keys and "weekly_review" not in keys


def test_partitions_are_the_instruments_sessions() -> None:
    spy = make_lane(get_instrument("SPY"), date(2013, 12, 20), date(2013, 12, 31))
    assert spy.partitions_def.get_partition_keys() == [
        "2013-12-20",
        "2013-12-23",
        "2013-12-24",
        "2013-12-26",
        "2013-12-27",
        "2013-12-30",
        "2013-12-31",
    ]
    btc = make_lane(get_instrument("BTCUSDT"), date(2020, 2, 21), date(2020, 2, 24))
    assert btc.partitions_def.get_partition_keys() == [
        "2020-02-21",
        "2020-02-22",
        "2020-02-23",
        "2020-02-24",
    ]
    nifty = make_lane(get_instrument("NIFTY_FUT"), date(2024, 1, 24), date(2024, 1, 29))
    # 26 January (Republic Day) and the weekend are not NSE sessions.
    assert nifty.partitions_def.get_partition_keys() == ["2024-01-24", "2024-01-25", "2024-01-29"]


def test_a_live_instruments_partitions_run_to_today() -> None:
    import exchange_calendars as xcals
    import pandas as pd

    btc = make_lane(get_instrument("BTCUSDT"), date(2026, 1, 1), date(2026, 1, 2), live=True)
    today = pd.Timestamp.now(tz="UTC").date().isoformat()
    keys = btc.partitions_def.get_partition_keys()
    assert keys[0] == "2026-01-01" and keys[-1] == today
    spy = make_lane(get_instrument("SPY"), date(2026, 1, 2), date(2026, 1, 2), live=True)
    # Up to today's session, or on a day without one (a weekend, a holiday) the next session.
    local_today = pd.Timestamp.now(tz="America/New_York").date()
    sessions = xcals.get_calendar("XNYS").sessions_in_range("2026-01-02", "2027-06-30")
    upcoming = sessions[sessions.date >= local_today][0]
    expected = [d.date().isoformat() for d in sessions[sessions <= upcoming]]
    assert spy.partitions_def.get_partition_keys() == expected


def test_no_dependency_reaches_a_later_partition_or_another_instrument() -> None:
    for lane in LANES:
        deps = _deps(lane)
        assert len(deps) >= 10
        assert later_partition_violations(lane, deps) == []


def test_lookbacks_count_sessions_not_calendar_days() -> None:
    spy = next(lane for lane in LANES if lane.symbol == "SPY")
    features = next(a for a in lane_assets(spy) if a.key == spy.key("features"))
    mapping = features.get_partition_mapping(spy.key("bars_1m"))
    # The warm-up of the first session after the sample's first reaches back one session.
    assert _upstream_keys(spy, mapping, "2013-10-08") == ["2013-10-07", "2013-10-08"]
    long = make_lane(get_instrument("SPY"), date(2013, 9, 1), date(2013, 10, 31))
    regimes = next(a for a in lane_assets(long) if a.key == long.key("regime_tags"))
    ups = _upstream_keys(long, regimes.get_partition_mapping(long.key("features")), "2013-10-31")
    assert len(ups) == 21 and ups[0] == "2013-10-03" and ups[-1] == "2013-10-31"


def test_lineage_check_catches_a_mapping_into_the_future() -> None:
    spy = next(lane for lane in LANES if lane.symbol == "SPY")
    peeking = TimeWindowPartitionMapping(start_offset=0, end_offset=1)
    deps = [(spy.key("features"), spy.key("bars_1m"), peeking)]
    violations = later_partition_violations(spy, deps)
    assert violations[0] == "SPY/features <- SPY/bars_1m: 2013-10-07 -> 2013-10-08"


@pytest.mark.parametrize("module", ["fbe_pipeline"])
def test_domain_core_has_no_dagster_import(module: str) -> None:
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parents[1] / module
    entry_points = {
        "definitions.py",
        "execution_definitions.py",
        "executor.py",
        "event_log_storage.py",
        "cli.py",
    }
    offenders = [
        str(p.relative_to(root))
        for p in root.rglob("*.py")
        if p.name not in entry_points
        and re.search(r"^\s*(import|from)\s+dagster", p.read_text(), re.M)
    ]
    assert offenders == []


def test_every_table_asset_carries_kinds_owner_and_its_contract_columns() -> None:
    from fbe_pipeline.quality.schemas import ALL

    graph = defs.resolve_asset_graph()
    for node in graph.asset_nodes:
        name = node.key.path[-1]
        if name in ("daily_review", "weekly_review"):  # pages under $FBE_HOME/reports
            assert node.kinds >= {"html"} and node.owners == ["team:fbe-quant-data"], name
            continue
        if name in ("raw_objects", "live_session", "monitors", "walk_forward"):  # not tables:
            continue  # the raw store, live reports, the monitors' checks, a metadata report
        assert node.kinds >= {"pandas", "parquet"}, name
        assert node.owners == ["team:fbe-quant-data"], name
        columns = node.metadata["dagster/column_schema"].columns
        assert [c.name for c in columns] == list(ALL[name].columns), name
    bars = graph.get(AssetKey(["SPY", "bars_1m"])).metadata["dagster/column_schema"]
    [open_col] = [c for c in bars.columns if c.name == "open"]
    assert (open_col.type, open_col.constraints.other) == ("float64", ["greater_than(0)"])


def test_every_asset_check_has_a_description() -> None:
    specs = [spec for asset in defs.assets or [] for spec in getattr(asset, "check_specs", [])]
    assert len(specs) == 15 * len(LANES) + 5  # 15 per lane, 5 on raw_integrity
    assert [s.name for s in specs if not s.description] == []


def test_loading_the_code_location_prints_no_warning(tmp_path: Path) -> None:
    env = {**os.environ, "FBE_HOME": str(tmp_path)}
    done = subprocess.run(
        [
            sys.executable,
            "-W",
            "default",
            "-c",
            "from fbe_pipeline.definitions import defs; defs()",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert "Warning" not in done.stderr, done.stderr[-2000:]


def test_the_code_location_with_several_lanes_validates() -> None:
    # Every lane's assets share one Dagster type per contract; two of one name would not load.
    types = {lane.symbol: lane_assets(lane)[1].op.outs["result"].dagster_type for lane in LANES}
    assert len({id(t) for t in types.values()}) == 1
    assert next(iter(types.values())).unique_name == "bars_1m"
    Definitions.validate_loadable(defs)


def test_detection_never_imports_the_execution_gateway() -> None:
    """SPEC §5: the gateway (the only code that reads broker credentials) is imported by no
    detection module: not the domain core outside ``execution/``, not the detection location's
    definitions, assets, resources or sensors."""
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parents[1]
    detection = [
        *root.joinpath("fbe_pipeline").rglob("*.py"),
        *root.joinpath("assets").rglob("*.py"),
        *root.joinpath("resources").rglob("*.py"),
        *root.joinpath("sensors").rglob("*.py"),
    ]
    # The execution code location and its broker resource, and the CLI that starts both; the
    # operator console acts through the gateway like the CLI (`fbe` scrubs the credentials).
    outside = {"cli.py", "execution_definitions.py", "broker.py", "paper.py"}
    offenders = [
        str(p.relative_to(root))
        for p in detection
        if not {"execution", "console"} & set(p.relative_to(root).parts)
        and p.name not in outside
        and re.search(r"^\s*(from|import)\s+fbe_pipeline\.execution", p.read_text(), re.M)
    ]
    assert offenders == []
    assert re.search(r"fbe_pipeline\.execution", root.joinpath("sensors", "paper.py").read_text())


def test_session_batches_split_at_missing_sessions_and_at_the_size() -> None:
    from fbe_pipeline.definitions import session_batches

    lane = make_lane(get_instrument("SPY"), date(2013, 10, 1), date(2013, 10, 31))
    keys = lane.partitions_def.get_partition_keys()
    days = [date(2013, 10, d) for d in (1, 2, 3, 4, 7, 9, 10, 11, 14, 15, 16, 17)]
    batches = session_batches(keys, days, 3)
    assert [[d.day for d in b] for b in batches] == [
        [1, 2, 3],
        [4, 7],  # Friday then Monday: consecutive sessions; 8 is missing from `days`
        [9, 10, 11],
        [14, 15, 16],
        [17],
    ]
    assert session_batches(keys, days[:2], 1) == [[days[0]], [days[1]]]
    assert session_batches(keys, [], 10) == []
