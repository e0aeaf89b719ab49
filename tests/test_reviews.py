"""Daily and weekly reviews on real SPY sessions: the HTML pages and their charts, the Markdown
metadata on the materializations, figures that match the tables, and the schedules that request
them at each instrument's session close."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyotp
import pytest
from dagster import (
    AssetKey,
    AssetRecordsFilter,
    DagsterInstance,
    RunRequest,
    ScheduleDefinition,
    build_schedule_context,
)
from matplotlib.image import imread

from assets import Lane, make_lane
from assets.reviews import build_review_schedules, regular_close
from fbe_pipeline.market.ingest import load_file
from fbe_pipeline.market.instruments import get_instrument
from fbe_pipeline.reports.review import ReviewFrames, build_review, max_drawdown_r, to_markdown
from fbe_pipeline.settings import prepare_dagster_home
from fbe_pipeline.storage.store import LocalRawStore
from fbe_pipeline.storage.warehouse import open_tables
from tests.realdata import require_data

D1, D2 = date(2013, 10, 7), date(2013, 10, 8)
CHARTS = (
    "equity_drawdown",
    "price_with_signals",
    "signals_by_time_of_day",
    "score_distribution",
    "regime_session_bars",
)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Two real SPY sessions materialized by ``fbe materialize``'s function (one batched run,
    the daily reviews included), then the weekly review of their week."""
    data = require_data()
    root = tmp_path_factory.mktemp("fbe_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FBE_HOME", str(root))
        mp.setenv("FBE_SCORING_CONFIG", '{"trigger_score": 30}')
        mp.delenv("DAGSTER_HOME", raising=False)
        store = LocalRawStore(root / "raw")
        spy = get_instrument("SPY")
        for day in (D1, D2):
            load_file(store, "lean-trades", data / f"lean/spy/tick/{day:%Y%m%d}_trade.zip", spy)
        prepare_dagster_home()
        from fbe_pipeline.definitions import build_definitions, build_lanes, materialize_partitions

        assert materialize_partitions(store) == 0
        defs = build_definitions(build_lanes(store.partitions("ticks")))
        weekly = defs.resolve_job_def("fbe_weekly_review_SPY").execute_in_process(
            partition_key="2013-10-07", instance=DagsterInstance.get()
        )
        assert weekly.success
        yield root
        os.environ.pop("DAGSTER_HOME", None)


def _table(root: Path, sql: str) -> pd.DataFrame:
    with open_tables(root) as con:
        return con.execute(sql).fetchdf()


def _assert_chart(path: Path) -> None:
    pixels = imread(io.BytesIO(path.read_bytes()))
    assert pixels.ndim == 3 and pixels.shape[0] >= 200 and pixels.shape[1] >= 400, path
    # A real drawing of data, not a blank canvas: many distinct colours.
    colours = np.unique(pixels.reshape(-1, pixels.shape[2]).round(2), axis=0)
    assert len(colours) > 20, path


def test_each_session_has_its_daily_review_page_with_charts(home: Path) -> None:
    for day in (D1, D2):
        page = home / "reports" / "daily" / "SPY" / f"{day}.html"
        html = page.read_text()
        assert f"SPY daily review, {day}" in html
        for chart in CHARTS:
            png = page.with_suffix("") / f"{chart}.png"
            assert f'src="{day}/{chart}.png"' in html
            _assert_chart(png)
    # The two sessions' price charts draw different data.
    one, two = (
        home / "reports" / "daily" / "SPY" / f"{d}" / "price_with_signals.png" for d in (D1, D2)
    )
    assert one.read_bytes() != two.read_bytes()


def test_daily_review_metadata_is_on_each_partition_and_matches_the_tables(home: Path) -> None:
    instance = DagsterInstance.get()
    for day in (D1, D2):
        [record] = instance.fetch_materializations(
            AssetRecordsFilter(
                asset_key=AssetKey(["SPY", "daily_review"]), asset_partitions=[str(day)]
            ),
            limit=1,
        ).records
        metadata = record.asset_materialization.metadata  # type: ignore[union-attr]
        markdown = metadata["review"].value
        assert markdown.startswith(f"# SPY daily review, {day}\n")
        trades = _table(home, f"select * from backtest_trades where trading_date = '{day}'")
        signals = _table(home, f"select * from signals where trading_date = '{day}'")
        assert len(trades) > 0
        assert metadata["fbe/signals"].value == len(signals)
        assert metadata["fbe/trades"].value == len(trades)
        assert metadata["fbe/pnl_r"].value == pytest.approx(trades["r_multiple"].sum(), abs=1e-4)
        assert metadata["fbe/pnl_bps"].value == pytest.approx(trades["return_bps"].sum(), abs=1e-4)
        assert f"| Trades (wins) | {len(trades)} ({int((trades['pnl'] > 0).sum())}) |" in markdown
        assert metadata["report"].value.endswith(f"reports/daily/SPY/{day}.html")
        assert metadata["charts"].value == len(CHARTS)


def test_weekly_review_covers_the_weeks_sessions(home: Path) -> None:
    page = home / "reports" / "weekly" / "SPY" / f"{D1}_{D2}.html"
    html = page.read_text()
    assert f"SPY weekly review, {D1} to {D2}" in html
    for chart in CHARTS:
        _assert_chart(page.with_suffix("") / f"{chart}.png")
    [record] = (
        DagsterInstance.get()
        .fetch_materializations(
            AssetRecordsFilter(
                asset_key=AssetKey(["SPY", "weekly_review"]), asset_partitions=[str(D1)]
            ),
            limit=1,
        )
        .records
    )
    metadata = record.asset_materialization.metadata  # type: ignore[union-attr]
    trades = _table(home, "select * from backtest_trades")
    assert metadata["fbe/trades"].value == len(trades)
    assert metadata["fbe/max_drawdown_r"].value == pytest.approx(max_drawdown_r(trades), abs=1e-4)


def test_review_of_a_quiet_session_and_the_drawdown_in_r() -> None:
    spy = get_instrument("SPY")
    empty = pd.DataFrame(
        columns=[
            "signal_id",
            "ts",
            "pnl",
            "r_multiple",
            "return_bps",
            "slippage_paid",
            "entry_price",
            "exit_time",
            "vol_regime",
            "session_tag",
        ]
    )
    frames = ReviewFrames(
        bars=pd.DataFrame(),
        scores=pd.DataFrame(),
        signals=empty,
        trades=empty,
        regimes=pd.DataFrame(),
    )
    review = build_review("daily", spy, D1, D1, 1, frames)
    assert review.figures["trades"] == 0 and review.figures["win_rate"] is None
    assert review.figures["slippage_ratio"] is None and review.figures["max_drawdown_r"] == 0.0
    markdown = to_markdown(review)
    assert "| Win rate | n/a |" in markdown and "No trades." in markdown
    trades = pd.DataFrame(
        {
            "exit_time": pd.to_datetime(
                ["2013-10-07 14:00", "2013-10-07 15:00", "2013-10-07 16:00", "2013-10-07 17:00"],
                utc=True,
            ),
            "r_multiple": [1.0, -0.5, -1.0, 2.0],
        }
    )
    # Equity 0, 1, 0.5, -0.5, 1.5: the peak of 1 falls to -0.5.
    assert max_drawdown_r(trades) == pytest.approx(1.5)
    with pytest.raises(ValueError, match="at least one session"):
        build_review("daily", spy, D2, D1, 1, frames)


def _tick(schedule: ScheduleDefinition, lanes: list[Lane], at: datetime) -> object:
    from fbe_pipeline.definitions import build_definitions

    repository = build_definitions(lanes).get_repository_def()
    context = build_schedule_context(scheduled_execution_time=at, repository_def=repository)
    return schedule.evaluate_tick(context)


def test_daily_review_schedule_fires_after_each_calendars_close() -> None:
    # A live lane: its partitions include the session that just closed (end offset 1).
    spy = make_lane(get_instrument("SPY"), D1, D2, live=True)
    assert regular_close(spy.instrument).strftime("%H:%M") == "16:00"
    daily, weekly = build_review_schedules(spy)
    assert daily.cron_schedule == "10 16 * * *"
    assert daily.execution_timezone == "America/New_York"
    at = datetime(2013, 10, 7, 20, 10, tzinfo=UTC)  # 16:10 in New York
    [request] = _tick(daily, [spy], at).run_requests  # type: ignore[attr-defined]
    assert isinstance(request, RunRequest) and request.partition_key == "2013-10-07"
    assert request.run_key == "SPY:daily_review:2013-10-07"
    saturday = datetime(2013, 10, 12, 20, 10, tzinfo=UTC)
    skipped = _tick(daily, [spy], saturday)
    assert not skipped.run_requests  # type: ignore[attr-defined]
    assert "no SPY session on 2013-10-12" in str(skipped.skip_message)  # type: ignore[attr-defined]
    assert weekly.name == "SPY_weekly_review"

    btc = make_lane(get_instrument("BTCUSDT"), date(2020, 2, 22), date(2020, 2, 23), live=True)
    daily_btc, _ = build_review_schedules(btc)
    # A 24/7 venue closes at midnight UTC: the review of the day that just ended.
    assert daily_btc.cron_schedule == "10 0 * * *"
    at = datetime(2020, 2, 23, 0, 10, tzinfo=UTC)
    [request] = _tick(daily_btc, [btc], at).run_requests  # type: ignore[attr-defined]
    assert request.partition_key == "2020-02-22"


def test_review_of_any_date_range_from_the_tables_and_in_the_console(home: Path) -> None:
    from fbe_pipeline.governance.runtime import config_store
    from fbe_pipeline.governance.users import add_user
    from fbe_pipeline.reports.period import NoSessionsError, period_review
    from tests.console_util import PASSWORD, running_console, signed_in

    spy = get_instrument("SPY")
    engine = config_store(home).engine
    review, page = period_review(home, engine, spy, date(2013, 10, 1), date(2013, 10, 31))
    # Trimmed to the sessions found; the same figures as the weekly review of those sessions.
    assert page == home / "reports" / "range" / "SPY" / f"{D1}_{D2}.html"
    assert (review.first, review.last, review.sessions) == (D1, D2, 2)
    trades = _table(home, "select * from backtest_trades")
    assert review.figures["trades"] == len(trades)
    assert review.figures["pnl_r"] == pytest.approx(trades["r_multiple"].sum())
    for chart in CHARTS:
        _assert_chart(page.with_suffix("") / f"{chart}.png")
    with pytest.raises(NoSessionsError, match="no SPY session materialized"):
        period_review(home, engine, spy, date(2014, 1, 1), date(2014, 1, 31))
    with pytest.raises(ValueError, match="starts"):
        period_review(home, engine, spy, D2, D1)

    for name, role in (("root", "admin"), ("vera", "viewer")):
        add_user(engine, name, role, pyotp.random_base32(), password=PASSWORD, actor="root")
    with running_console(home) as url:
        client = signed_in(url, "vera")
        html = client.get(
            "/analytics", params={"symbol": "spy", "from": str(D1), "to": str(D1)}
        ).text
        assert f"SPY review, {D1}</h2>" in html
        one_day = _table(home, f"select * from backtest_trades where trading_date = '{D1}'")
        assert f"<td>{len(one_day)} ({int((one_day['pnl'] > 0).sum())})</td>" in html
        image = client.get(f"/reports/range/SPY/{D1}_{D1}/equity_drawdown.png")
        assert image.status_code == 200 and image.content.startswith(b"\x89PNG")
        refused = client.get(
            "/analytics", params={"symbol": "SPY", "from": "2014-01-01", "to": "2014-01-02"}
        )
        assert "no SPY session materialized from 2014-01-01 to 2014-01-02" in refused.text
