"""Assets materialized through Dagster on real data, and a blocking check stopping the graph."""

from __future__ import annotations

import importlib
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
from dagster import DagsterInstance, materialize

from assets import lane_assets, make_lane
from assets.partitions import partition_key
from fbe_pipeline.market.ingest import load_file
from fbe_pipeline.market.instruments import get_instrument
from fbe_pipeline.storage.store import LocalRawStore
from fbe_pipeline.storage.tables import Warehouse
from fbe_pipeline.storage.warehouse import open_tables
from resources.fbe import RawStoreResource, ScoringConfigResource
from resources.warehouse_io import FbeWarehouseIOManager
from tests.realdata import require_data

D1, D2 = date(2013, 10, 7), date(2013, 10, 8)
LANE = make_lane(get_instrument("SPY"), D1, D2)
PIPELINE_ASSETS = lane_assets(LANE)
# The package re-exports the `signals` asset under the module's name, so fetch the module itself.
signal_assets = importlib.import_module("assets.signals")


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = require_data()
    root = tmp_path_factory.mktemp("fbe_home")
    store = LocalRawStore(root / "raw")
    spy = get_instrument("SPY")
    for day in (D1, D2):
        load_file(store, "lean-trades", data / f"lean/spy/tick/{day:%Y%m%d}_trade.zip", spy)
        load_file(store, "lean-minute", data / f"lean/spy/minute/{day:%Y%m%d}_trade.zip", spy)
    return root


def _resources(home: Path, db: str = "warehouse") -> dict[str, object]:
    return {
        "io_manager": FbeWarehouseIOManager(root=str(home / db)),
        "raw_store": RawStoreResource(home=str(home)),
        "scoring": ScoringConfigResource(config_json='{"trigger_score": 40}'),
    }


def _checks(result: object) -> dict[str, object]:
    evals = result.get_asset_check_evaluations()  # type: ignore[attr-defined]
    return {e.check_name: e for e in evals}


@pytest.fixture(scope="module")
def materialized(home: Path) -> tuple[Path, list[object]]:
    instance = DagsterInstance.ephemeral()
    results = [
        materialize(
            PIPELINE_ASSETS,
            partition_key=partition_key(day),
            resources=_resources(home),
            instance=instance,
        )
        for day in (D1, D2)
    ]
    return home, results


def test_every_asset_and_check_succeeds_on_real_spy_days(
    materialized: tuple[Path, list[object]],
) -> None:
    _, results = materialized
    for result in results:
        assert result.success  # type: ignore[attr-defined]
        checks = _checks(result)
        blocking = [
            "ticks_within_session",
            "raw_ticks_expectations",
            "ohlc_invariants",
            "bar_times_strictly_ordered_unique",
            "bars_expectations",
            "features_prefix_invariance",
            "scores_prefix_invariance",
            "signals_prefix_invariance",
            "decision_after_bar_close",
            "entry_after_decision",
        ]
        for name in blocking:
            assert checks[name].passed, name
        vendor = checks["vendor_reference_match"]
        assert vendor.passed
        assert vendor.metadata["volume_match_pct"].value >= 99.0
        assert vendor.metadata["ohlc_match_pct"].value >= 98.0


def test_tables_hold_both_partitions_with_spec_columns(
    materialized: tuple[Path, list[object]],
) -> None:
    home, _ = materialized
    with open_tables(home) as con:
        bars = con.execute(
            "select strftime(trading_date, '%Y-%m-%d'), count(*) from bars_1m group by 1 order by 1"
        ).fetchall()
        assert bars == [("2013-10-07", 390), ("2013-10-08", 390)]
        cols = [r[0] for r in con.execute("describe bars_1m").fetchall()]
        assert cols[:8] == [
            "symbol",
            "trading_date",
            "ts",
            "open",
            "high",
            "low",
            "close",
            "volume",
        ]
        first_ts = con.execute("select min(ts) from bars_1m").fetchone()[0]
        assert pd.Timestamp(first_ts).tz_convert("UTC") == pd.Timestamp("2013-10-07 13:30Z")
        # Day 2's first features are warmed up on day 1: no NaN ATR after the open.
        atr_nan = con.execute(
            "select count(*) from features where trading_date = '2013-10-08' and atr14 is null"
        ).fetchone()[0]
        assert atr_nan == 0
        n_trades = con.execute("select count(*) from backtest_trades").fetchone()[0]
        n_signals = con.execute("select count(*) from signals").fetchone()[0]
        assert 0 < n_trades <= n_signals
        periods = con.execute(
            "select period, trades from backtest_summary where trading_date = '2013-10-08' "
            "and group_by = 'all' order by period"
        ).fetchall()
        assert [p for p, _ in periods] == ["in_sample", "out_of_sample"]


def test_rematerializing_a_partition_replaces_it(materialized: tuple[Path, list[object]]) -> None:
    home, _ = materialized
    result = materialize(
        PIPELINE_ASSETS,
        partition_key=partition_key(D1),
        resources=_resources(home),
        instance=DagsterInstance.ephemeral(),
        selection=["SPY/raw_ticks", "SPY/bars_1m"],
    )
    assert result.success
    with open_tables(home) as con:
        n = con.execute("select count(*) from bars_1m where trading_date='2013-10-07'").fetchone()
    assert n == (390,)


def test_failed_blocking_check_stops_downstream_assets(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    honest = signal_assets.session_features

    def peeking(bars: pd.DataFrame, day: date, books: object) -> pd.DataFrame:
        feats = honest(bars, day, books)  # type: ignore[arg-type]
        feats["vol_ratio"] = feats["vol_ratio"].shift(-1).fillna(1.0)
        return feats

    monkeypatch.setattr(signal_assets, "session_features", peeking)
    result = materialize(
        PIPELINE_ASSETS,
        partition_key=partition_key(D1),
        resources=_resources(home, db="broken"),
        instance=DagsterInstance.ephemeral(),
        raise_on_error=False,
    )
    assert not result.success
    assert not _checks(result)["features_prefix_invariance"].passed
    done = {
        m.asset_key.path[-1]
        for m in result.get_asset_materialization_events()
        for m in [m.event_specific_data.materialization]
    }
    assert {"raw_ticks", "bars_1m", "features"} <= done
    assert not done & {"scores", "signals", "backtest_trades", "backtest_summary"}


def test_partition_summary_counts_each_table(materialized: tuple[Path, list[object]]) -> None:
    from fbe_pipeline.storage.warehouse import partition_summary

    home, _ = materialized
    rows = {r["date"]: r for r in partition_summary(home)}
    assert set(rows) >= {"2013-10-07", "2013-10-08"}
    day = rows["2013-10-08"]
    assert day["symbol"] == "SPY"
    assert day["ticks"] == 440_353
    assert day["bars"] == day["features"] == 390
    assert 0 < day["pokes"] < 390
    assert day["signals"] >= day["trades"] > 0
    with open_tables(home) as con:
        pnl, r, bps = con.execute(
            "select sum(pnl), sum(r_multiple), sum(return_bps) from backtest_trades "
            "where trading_date = '2013-10-08'"
        ).fetchone()
    assert day["pnl"] == pytest.approx(pnl)
    assert (day["pnl_r"], day["pnl_bps"]) == (pytest.approx(r), pytest.approx(bps))
    assert day["pnl_r"] != day["pnl"]


def test_a_batched_run_writes_the_same_tables_as_one_run_per_session(
    materialized: tuple[Path, list[object]],
) -> None:
    from dagster import Definitions, define_asset_job

    home, _ = materialized
    job = define_asset_job("batched", selection=PIPELINE_ASSETS)
    batched = Definitions(assets=PIPELINE_ASSETS, jobs=[job], resources=_resources(home, "b"))
    instance = DagsterInstance.ephemeral()
    result = batched.resolve_job_def("batched").execute_in_process(
        instance=instance,
        tags={
            "dagster/asset_partition_range_start": partition_key(D1),
            "dagster/asset_partition_range_end": partition_key(D2),
        },
    )
    assert result.success
    assert {e.check_name for e in result.get_asset_check_evaluations() if not e.passed} == set()
    # Each session keeps its own check status, the same as when it ran alone.
    alone = {
        (e.asset_check_key, e.partition): "SUCCEEDED" if e.passed else "FAILED"
        for r in materialized[1]
        for e in r.get_asset_check_evaluations()  # type: ignore[attr-defined]
    }
    assert {p for _, p in alone} == {partition_key(D1), partition_key(D2)}
    infos = instance.event_log_storage.get_asset_check_partition_info(
        sorted({k for k, _ in alone}, key=str)
    )
    together = {
        (i.check_key, i.partition_key): i.latest_execution_status.value
        for i in infos
        if i.partition_key is not None
    }
    assert together == alone
    tables = ["raw_ticks", "bars_1m", "features", "scores", "signals", "regime_tags"]
    tables += ["backtest_trades", "backtest_summary"]
    for table in tables:
        frames = []
        for db in ("warehouse", "b"):
            with open_tables(Warehouse.local(home / db)) as con:
                frames.append(con.execute(f"select * from {table} order by all").fetchdf())
        assert len(frames[0]) > 0, table
        pd.testing.assert_frame_equal(frames[0], frames[1], obj=table)
