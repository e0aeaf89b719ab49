"""Walk-forward search (issue 10 item 5) on the real SPY and BAC sample sessions: rolling
windows, choices read in-sample data only, metrics equal a direct backtest, the asset."""

from __future__ import annotations

import json
import math
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from dagster import DagsterInstance, Definitions, TableMetadataValue, materialize

from assets import PIPELINE_TABLES, lane_assets, lane_sources, make_lane
from assets.partitions import partition_key
from assets.walk_forward import build_walk_forward
from fbe_pipeline.market.ingest import load_file
from fbe_pipeline.market.instruments import get_instrument
from fbe_pipeline.market.sample import sample_files
from fbe_pipeline.pipeline import (
    session_backtest,
    session_scores,
    session_signals,
)
from fbe_pipeline.research.config import ScoringConfig
from fbe_pipeline.research.walk_forward import (
    DEFAULT_GRID,
    TABLE_COLUMNS,
    SessionData,
    WalkForwardReport,
    build_sessions,
    candidates,
    load_sessions,
    proposal_command,
    report_json,
    report_markdown,
    report_table,
    walk_forward,
)
from fbe_pipeline.storage.store import LocalRawStore
from fbe_pipeline.storage.warehouse import open_tables
from resources.fbe import RawStoreResource, ScoringConfigResource
from resources.warehouse_io import FbeWarehouseIOManager

SYMBOLS = ("SPY", "BAC")
DAYS = [date(2013, 10, d) for d in (7, 8, 9, 10, 11)]
BASE = ScoringConfig()
IN_SAMPLE, OUT_OF_SAMPLE, MIN_TRADES = 3, 1, 5


@pytest.fixture(scope="module")
def home(sample_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ``FBE_HOME`` whose raw store holds the SPY and BAC sample ticks (and BAC quotes)."""
    root = tmp_path_factory.mktemp("walk_forward")
    store = LocalRawStore(root / "raw")
    for f in sample_files(sample_data):
        if f.symbol in SYMBOLS and f.fmt != "lean-minute":
            load_file(store, f.fmt, f.path, get_instrument(f.symbol))
    return root


@pytest.fixture(scope="module")
def sessions(home: Path) -> dict[str, list[SessionData]]:
    store = LocalRawStore(home / "raw")
    return {s: load_sessions(store, get_instrument(s)) for s in SYMBOLS}


@pytest.fixture(scope="module")
def reports(sessions: dict[str, list[SessionData]]) -> dict[str, WalkForwardReport]:
    return {
        s: walk_forward(sessions[s], BASE, DEFAULT_GRID, IN_SAMPLE, OUT_OF_SAMPLE, MIN_TRADES)
        for s in SYMBOLS
    }


def direct_trades(chunk: list[SessionData], config: ScoringConfig) -> pd.DataFrame:
    """Trades of ``config`` on ``chunk`` from the pipeline's step functions, one session at a
    time, as the ``backtest_trades`` asset computes them."""
    frames = []
    for s in chunk:
        signals = session_signals(session_scores(s.features, config), config)
        frames.append(
            session_backtest(s.bars, s.features, signals, s.regimes, config, s.data_version)
        )
    return pd.concat(frames, ignore_index=True)


def test_sessions_give_the_trades_of_the_pipeline_assets(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The backtest_trades asset of a SPY session and the walk-forward's session agree trade
    # for trade under the same config (one session keeps the run short).
    monkeypatch.setenv("FBE_HOME", str(home))  # the signals asset reads its live store
    lane = make_lane(get_instrument("SPY"), DAYS[0], DAYS[0])
    result = materialize(
        lane_assets(lane),
        partition_key=partition_key(DAYS[0]),
        resources={
            "io_manager": FbeWarehouseIOManager(home=str(tmp_path)),
            "raw_store": RawStoreResource(home=str(home)),
            "scoring": ScoringConfigResource(config_json='{"trigger_score": 30}'),
        },
        instance=DagsterInstance.ephemeral(),
        selection=[lane.key(t) for t in PIPELINE_TABLES[:-1]],
    )
    assert result.success
    with open_tables(tmp_path) as con:
        stored = con.execute("select * from backtest_trades order by entry_time").fetchdf()
    spy = load_sessions(LocalRawStore(home / "raw"), get_instrument("SPY"), DAYS[:1])
    ours = direct_trades(spy, ScoringConfig.from_dict({"trigger_score": 30}))
    assert len(ours) > 10
    assert stored["trade_id"].tolist() == ours["trade_id"].tolist()
    for col in ("r_multiple", "return_bps", "pnl"):
        np.testing.assert_array_equal(stored[col].to_numpy(), ours[col].to_numpy())
    for col in ("vol_regime", "session_tag", "data_version"):
        assert stored[col].tolist() == ours[col].tolist()


def test_windows_roll_forward_by_the_out_of_sample_length(
    reports: dict[str, WalkForwardReport],
) -> None:
    for report in reports.values():
        assert [(w.is_dates, w.oos_dates) for w in report.windows] == [
            (tuple(DAYS[0:3]), (DAYS[3],)),
            (tuple(DAYS[1:4]), (DAYS[4],)),
        ]


# (changes from the base config, IS trades, IS total R, OOS trades, OOS total R) per window.
# The R figures move with any change of the config's content hash: it keys the slippage draws.
EXPECTED = {
    "SPY": [
        ({"trigger_score": 50.0}, 5, -6.8674, 1, -0.5273),
        (
            {"trigger_score": 50.0, "wick_ratio_threshold": 0.8, "vol_ratio_threshold": 0.7},
            5,
            -4.9340,
            3,
            -4.5352,
        ),
    ],
    "BAC": [
        ({"trigger_score": 30.0, "vol_ratio_threshold": 0.5}, 10, -8.2626, 0, 0.0),
        ({"trigger_score": 30.0, "vol_ratio_threshold": 0.5}, 9, -7.6322, 1, 0.7943),
    ],
}


@pytest.mark.parametrize("symbol", SYMBOLS)
def test_choices_and_metrics_on_the_sample_sessions(
    symbol: str, reports: dict[str, WalkForwardReport]
) -> None:
    report = reports[symbol]
    got = [
        (
            report.changes(w.chosen),
            w.is_metrics["trades"],
            round(w.is_metrics["total_r"], 4),
            w.oos_metrics["trades"],
            round(w.oos_metrics["total_r"], 4),
        )
        for w in report.windows
    ]
    assert got == EXPECTED[symbol]
    assert all(w.qualified for w in report.windows)
    assert report.proposal == report.windows[-1].chosen


@pytest.mark.parametrize("symbol", SYMBOLS)
def test_window_metrics_equal_a_direct_backtest_of_the_chosen_config(
    symbol: str,
    sessions: dict[str, list[SessionData]],
    reports: dict[str, WalkForwardReport],
) -> None:
    by_date = {s.trading_date: s for s in sessions[symbol]}
    for w in reports[symbol].windows:
        for dates, metrics, kept in (
            (w.is_dates, w.is_metrics, w.is_trades),
            (w.oos_dates, w.oos_metrics, w.oos_trades),
        ):
            trades = direct_trades([by_date[d] for d in dates], w.chosen)
            assert sorted(kept["trade_id"]) == sorted(trades["trade_id"])
            assert metrics["trades"] == len(trades)
            r = trades.sort_values("entry_time")["r_multiple"].to_numpy(np.float64)
            assert metrics["total_r"] == pytest.approx(r.sum(), abs=1e-12)
            assert metrics["pnl_bps"] == pytest.approx(trades["return_bps"].sum(), abs=1e-9)
            if len(trades):
                assert metrics["win_rate"] == pytest.approx((trades["pnl"] > 0).mean())
                assert metrics["mean_r"] == pytest.approx(r.mean())
                peak = equity = drawdown = 0.0
                for x in r:
                    equity += x
                    peak = max(peak, equity)
                    drawdown = max(drawdown, peak - equity)
                assert metrics["max_drawdown_r"] == pytest.approx(drawdown)
            else:
                assert math.isnan(metrics["win_rate"]) and metrics["max_drawdown_r"] == 0.0
            for by in ("vol_regime", "session_tag"):
                groups = metrics[f"by_{by}"]
                assert {g: m["trades"] for g, m in groups.items()} == (
                    trades[by].value_counts().sort_index().to_dict()
                )


@pytest.mark.parametrize("symbol", SYMBOLS)
def test_the_choice_maximises_in_sample_total_r_among_qualified_candidates(
    symbol: str,
    sessions: dict[str, list[SessionData]],
    reports: dict[str, WalkForwardReport],
) -> None:
    by_date = {s.trading_date: s for s in sessions[symbol]}
    for w in reports[symbol].windows:
        chunk = [by_date[d] for d in w.is_dates]
        seen: set[tuple[object, ...]] = set()
        best: tuple[float, ScoringConfig] | None = None
        for config in candidates(BASE, DEFAULT_GRID):
            trades = direct_trades(chunk, config)
            keys = tuple(zip(trades["signal_ts"], trades["direction"], strict=True))
            if keys in seen:  # same trades as a candidate nearer the base: slippage noise only
                continue
            seen.add(keys)
            total = float(trades["r_multiple"].sum())
            if len(trades) >= MIN_TRADES and (best is None or total > best[0]):
                best = (total, config)
        assert best is not None and w.chosen == best[1]


def _mirrored(session: SessionData) -> pd.DataFrame:
    """The session's bars reflected about its first open: every rise a fall of the same size,
    buyers and sellers swapped (a valid session, with different pokes)."""
    bars = session.bars.copy()
    pivot = 2.0 * float(bars["open"].iloc[0])
    for col in ("open", "close", "vwap"):
        bars[col] = pivot - session.bars[col]
    bars["high"], bars["low"] = pivot - session.bars["low"], pivot - session.bars["high"]
    bars["buy_volume"], bars["sell_volume"] = (
        session.bars["sell_volume"],
        session.bars["buy_volume"],
    )
    bars["delta"] = -session.bars["delta"]
    return bars


@pytest.mark.parametrize("symbol", SYMBOLS)
def test_out_of_sample_data_never_changes_a_choice(
    symbol: str,
    sessions: dict[str, list[SessionData]],
    reports: dict[str, WalkForwardReport],
) -> None:
    original = sessions[symbol]
    report = reports[symbol]
    instrument = get_instrument(symbol)
    versions = {s.trading_date: s.data_version for s in original}
    for k, window in enumerate(report.windows):
        # Change window k's out-of-sample session and every later one.
        cut = IN_SAMPLE + k * OUT_OF_SAMPLE
        bars = {
            s.trading_date: (_mirrored(s) if i >= cut else s.bars) for i, s in enumerate(original)
        }
        # No books: the SPY and BAC samples have no L2 data.
        changed = walk_forward(
            build_sessions(instrument, bars, None, versions),
            BASE,
            DEFAULT_GRID,
            IN_SAMPLE,
            OUT_OF_SAMPLE,
            MIN_TRADES,
        )
        for before, after in zip(report.windows[: k + 1], changed.windows[: k + 1], strict=True):
            assert after.chosen == before.chosen
            assert after.is_metrics == before.is_metrics
        assert changed.windows[k].oos_metrics != window.oos_metrics


def test_rebuilding_sessions_from_the_same_bars_reproduces_the_report(
    sessions: dict[str, list[SessionData]], reports: dict[str, WalkForwardReport]
) -> None:
    spy = sessions["SPY"]
    rebuilt = build_sessions(
        get_instrument("SPY"),
        {s.trading_date: s.bars for s in spy},
        None,
        {s.trading_date: s.data_version for s in spy},
    )
    again = walk_forward(rebuilt, BASE, DEFAULT_GRID, IN_SAMPLE, OUT_OF_SAMPLE, MIN_TRADES)
    assert report_json(again) == report_json(reports["SPY"])


def test_too_few_sessions_or_bad_settings_raise_clear_errors(
    sessions: dict[str, list[SessionData]],
) -> None:
    spy = sessions["SPY"]
    with pytest.raises(ValueError, match=r"SPY needs at least 4 sessions \(3 in-sample \+ 1 "):
        walk_forward(spy[:3], BASE, DEFAULT_GRID, 3, 1)
    with pytest.raises(ValueError, match=r"needs at least 6 sessions.*got 5"):
        walk_forward(spy, BASE, DEFAULT_GRID, 4, 2)
    with pytest.raises(ValueError, match="windows need >= 1 session each"):
        walk_forward(spy, BASE, DEFAULT_GRID, 0, 1)
    with pytest.raises(ValueError, match="one symbol"):
        walk_forward([*spy[:2], *sessions["BAC"][2:]], BASE, DEFAULT_GRID, 3, 1)
    with pytest.raises(ValueError, match="strictly ascending"):
        walk_forward(spy[::-1], BASE, DEFAULT_GRID, 3, 1)
    with pytest.raises(ValueError, match=r"\['weight_wick'\] are not searchable"):
        walk_forward(spy, BASE, {"weight_wick": [10.0]}, 3, 1)


def test_candidates_start_at_the_base_and_keep_its_version() -> None:
    configs = candidates(BASE, DEFAULT_GRID)
    # 27 grid points, one of which (70, 0.7, 0.6) is the base itself.
    assert len(configs) == 27
    assert configs[0] == BASE and configs[0].version == BASE.version
    assert [c.version for c in configs].count(BASE.version) == 1


def test_report_json_has_the_documented_layout(reports: dict[str, WalkForwardReport]) -> None:
    report = reports["SPY"]
    doc = report_json(report)
    text = json.dumps(doc, allow_nan=False)  # NaN metrics are null, the rest plain JSON
    assert json.loads(text) == doc
    first = doc["windows"][0]
    assert {"is_start", "is_end", "oos_start", "oos_end", "chosen"} <= set(first)
    assert (first["is_start"], first["is_end"]) == ("2013-10-07", "2013-10-09")
    assert (first["oos_start"], first["oos_end"]) == ("2013-10-10", "2013-10-10")
    for w, window in zip(doc["windows"], report.windows, strict=True):
        assert ScoringConfig.from_dict(w["chosen"]).version == w["chosen_version"]
        assert w["chosen_version"] == window.chosen.version
        assert w["is_metrics"]["trades"] == window.is_metrics["trades"]
        assert set(w["oos_metrics"]) >= {"total_r", "by_vol_regime", "by_session_tag"}
    assert doc["proposal"]["version"] == report.proposal.version
    assert doc["proposal"]["changes"] == EXPECTED["SPY"][-1][0]
    bac = report_json(reports["BAC"])["windows"][0]["oos_metrics"]
    assert bac["trades"] == 0 and bac["win_rate"] is None and bac["mean_r"] is None


def test_report_table_shows_both_periods_by_regime_and_session(
    reports: dict[str, WalkForwardReport],
) -> None:
    report = reports["SPY"]
    table = report_table(report)
    assert list(table.columns) == list(TABLE_COLUMNS)
    overall = table[table["group_by"] == "all"]
    assert list(zip(overall["window"], overall["period"], strict=True)) == [
        (0, "in_sample"),
        (0, "out_of_sample"),
        (1, "in_sample"),
        (1, "out_of_sample"),
    ]
    assert overall["trades"].tolist() == [5, 1, 5, 3]
    for by in ("vol_regime", "session_tag"):
        parts = table[table["group_by"] == by].groupby(["window", "period"])["trades"].sum()
        assert parts.tolist() == [5, 1, 5, 3]
    assert table["chosen"].iloc[0] == (
        "trigger_score=50, wick_ratio_threshold=0.7, vol_ratio_threshold=0.6"
    )
    summary = report_markdown(report)
    assert "| 1 | 2013-10-08..2013-10-10 | 2013-10-11..2013-10-11 |" in summary
    command = proposal_command(report)
    assert command == (
        "fbe config set trigger_score=50.0 wick_ratio_threshold=0.8 vol_ratio_threshold=0.7 "
        "--reason 'walk-forward SPY, in-sample 2013-10-08..2013-10-10, config "
        f"{report.proposal.version}' --user USER"
    )
    assert command in summary


def test_the_asset_loads_and_materializes_with_its_summary(
    home: Path, reports: dict[str, WalkForwardReport]
) -> None:
    lane = make_lane(get_instrument("SPY"), DAYS[0], DAYS[-1])
    asset = build_walk_forward(lane)
    resources = {
        "raw_store": RawStoreResource(home=str(home)),
        "scoring": ScoringConfigResource(config_json="{}"),
    }
    Definitions.validate_loadable(
        Definitions(assets=[*lane_sources(lane), asset], resources=resources)
    )
    assert asset.key.path == ["SPY", "walk_forward"]
    assert asset.group_names_by_key[asset.key] == "SPY"
    result = materialize([asset], resources=resources, instance=DagsterInstance.ephemeral())
    assert result.success
    [event] = result.get_asset_materialization_events()
    meta = event.materialization.metadata
    report = reports["SPY"]
    assert meta["windows"].value == 2 and meta["sessions"].value == 5
    assert meta["proposal_version"].value == report.proposal.version
    assert meta["proposal_changes"].value == EXPECTED["SPY"][-1][0]
    assert meta["summary"].value == report_markdown(report)
    assert meta["report"].value == report_json(report)
    table = meta["table"]
    assert isinstance(table, TableMetadataValue)
    rows = table.value.records
    assert len(rows) == len(report_table(report))
    assert rows[0].data["trades"] == 5 and rows[0].data["total_r"] == -6.8674


def test_the_asset_fails_with_the_reason_when_sessions_are_too_few(home: Path) -> None:
    lane = make_lane(get_instrument("SPY"), DAYS[0], DAYS[-1])
    result = materialize(
        [build_walk_forward(lane)],
        resources={
            "raw_store": RawStoreResource(home=str(home)),
            "scoring": ScoringConfigResource(config_json="{}"),
        },
        run_config={"ops": {"SPY__walk_forward": {"config": {"in_sample": 5}}}},
        instance=DagsterInstance.ephemeral(),
        raise_on_error=False,
    )
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    error = failure.step_failure_data.error
    assert error is not None
    assert "needs at least 6 sessions (5 in-sample + 1 out-of-sample), got 5" in error.message
