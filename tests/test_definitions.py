"""The Definitions load, and no dependency can reach a later partition (SPEC §4.1)."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest
from dagster import (
    AssetKey,
    DimensionPartitionMapping,
    IdentityPartitionMapping,
    MultiPartitionMapping,
    PartitionMapping,
    TimeWindowPartitionMapping,
)

from assets import PIPELINE_ASSETS
from assets.partitions import day_symbol_partitions, partition_key, split_key
from fbe_pipeline.definitions import defs

SAMPLE_KEYS = [
    partition_key(date(2013, 10, 7), "SPY"),
    partition_key(date(2013, 10, 9), "GC"),
    partition_key(date(2020, 2, 22), "BTCUSDT"),
    partition_key(date(2023, 12, 26), "ES"),
]


def _upstream_keys(mapping: PartitionMapping | None, key: str) -> list[str]:
    mapping = mapping or IdentityPartitionMapping()
    subset = day_symbol_partitions.subset_with_partition_keys([key])
    result = mapping.get_upstream_mapped_partitions_result_for_partitions(
        subset, day_symbol_partitions, day_symbol_partitions
    )
    return list(result.partitions_subset.get_partition_keys())


def later_partition_violations(
    deps: list[tuple[AssetKey, AssetKey, PartitionMapping | None]], keys: list[str]
) -> list[str]:
    """Every (asset, upstream, partition) whose mapping reaches a later date or another symbol."""
    bad = []
    for asset_key, upstream, mapping in deps:
        for key in keys:
            day, symbol = split_key(key)
            for up in _upstream_keys(mapping, key):
                up_day, up_symbol = split_key(up)
                if up_day > day or up_symbol != symbol:
                    edge = f"{asset_key.to_user_string()} <- {upstream.to_user_string()}"
                    bad.append(f"{edge}: {key} -> {up}")
    return bad


def _pipeline_deps() -> list[tuple[AssetKey, AssetKey, PartitionMapping | None]]:
    deps = []
    for asset_def in PIPELINE_ASSETS:
        for upstream in asset_def.dependency_keys:
            deps.append((asset_def.key, upstream, asset_def.get_partition_mapping(upstream)))
    return deps


def test_definitions_load_with_all_pipeline_assets() -> None:
    graph = defs.resolve_asset_graph()
    names = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert names == {
        "raw_ticks",
        "bars_1m",
        "features",
        "scores",
        "signals",
        "regime_tags",
        "backtest_trades",
        "backtest_summary",
        "raw_integrity",
    }
    assert defs.resolve_job_def("fbe_pipeline_job") is not None
    assert defs.resolve_job_def("raw_integrity_job") is not None
    schedule = defs.resolve_schedule_def("raw_integrity_hourly")
    assert schedule.cron_schedule == "0 * * * *"


def test_no_dependency_reaches_a_later_partition() -> None:
    deps = _pipeline_deps()
    assert len(deps) >= 10
    assert later_partition_violations(deps, SAMPLE_KEYS) == []


def test_lookbacks_reach_earlier_partitions_of_the_same_symbol() -> None:
    features = next(a for a in PIPELINE_ASSETS if a.key == AssetKey("features"))
    ups = _upstream_keys(features.get_partition_mapping(AssetKey("bars_1m")), SAMPLE_KEYS[0])
    days = sorted(split_key(u)[0] for u in ups)
    assert days[0] < date(2013, 10, 7) and days[-1] == date(2013, 10, 7)
    assert {split_key(u)[1] for u in ups} == {"SPY"}


def test_lineage_check_catches_a_mapping_into_the_future() -> None:
    peeking = MultiPartitionMapping(
        {
            "date": DimensionPartitionMapping(
                "date", TimeWindowPartitionMapping(start_offset=0, end_offset=1)
            ),
            "symbol": DimensionPartitionMapping("symbol", IdentityPartitionMapping()),
        }
    )
    deps = [(AssetKey("features"), AssetKey("bars_1m"), peeking)]
    violations = later_partition_violations(deps, SAMPLE_KEYS[:1])
    assert violations == ["features <- bars_1m: 2013-10-07|SPY -> 2013-10-08|SPY"]


@pytest.mark.parametrize("module", ["fbe_pipeline"])
def test_domain_core_has_no_dagster_import(module: str) -> None:
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parents[1] / module
    entry_points = {"definitions.py", "cli.py"}
    offenders = [
        str(p.relative_to(root))
        for p in root.rglob("*.py")
        if p.name not in entry_points
        and re.search(r"^\s*(import|from)\s+dagster", p.read_text(), re.M)
    ]
    assert offenders == []


def test_every_table_asset_carries_kinds_owner_and_its_contract_columns() -> None:
    from fbe_pipeline.schemas import ALL

    graph = defs.resolve_asset_graph()
    for node in graph.asset_nodes:
        name = node.key.to_user_string()
        assert node.kinds >= {"pandas", "duckdb"}, name
        assert node.owners == ["team:fbe-quant-data"], name
        columns = node.metadata["dagster/column_schema"].columns
        assert [c.name for c in columns] == list(ALL[name].columns), name
    bars = graph.get(AssetKey("bars_1m")).metadata["dagster/column_schema"]
    [open_col] = [c for c in bars.columns if c.name == "open"]
    assert (open_col.type, open_col.constraints.other) == ("float64", ["greater_than(0)"])


def test_every_asset_check_has_a_description() -> None:
    specs = [spec for asset in defs.assets or [] for spec in getattr(asset, "check_specs", [])]
    assert len(specs) >= 19
    assert [s.name for s in specs if not s.description] == []


def test_loading_the_code_location_prints_no_warning(tmp_path: Path) -> None:
    env = {**os.environ, "FBE_HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-W", "default", "-c", "import fbe_pipeline.definitions"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert "Warning" not in done.stderr, done.stderr[-2000:]
