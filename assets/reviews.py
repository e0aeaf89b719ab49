"""``daily_review`` and ``weekly_review``: the one-page reviews of a lane (SPEC §7), as HTML
pages with charts under ``$FBE_HOME/reports`` and Markdown metadata on the materialization.

The daily review is part of the lane's pipeline job (so ``fbe materialize`` leaves one review per
session) and is also requested by a schedule at the instrument's session close, from its
exchange calendar, for the live days. The weekly review has weekly partitions in the
instrument's time zone (weeks from Monday), each reading the sessions of its week, and is
requested by a schedule when a week has ended.
"""

from collections.abc import Iterable, Iterator, Mapping
from datetime import date, datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd
from dagster import (
    AssetCheckKey,
    AssetExecutionContext,
    AssetIn,
    AssetMaterialization,
    AssetsDefinition,
    BackfillPolicy,
    DefaultScheduleStatus,
    MaterializeResult,
    MetadataValue,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    SkipReason,
    TimeWindowPartitionMapping,
    TimeWindowPartitionsDefinition,
    asset,
    build_schedule_from_partitioned_job,
    define_asset_job,
    schedule,
)

from assets.common import OWNERS, Lane, from_store, sessions
from assets.partitions import PARTITION_FMT
from fbe_pipeline.governance.runtime import config_store
from fbe_pipeline.market.instruments import Instrument
from fbe_pipeline.market.sessions import session_table
from fbe_pipeline.ops.fills import entry_fills
from fbe_pipeline.reports.period import tick_drift
from fbe_pipeline.reports.review import (
    ReviewFrames,
    build_review,
    render_review,
    report_path,
    to_markdown,
)
from fbe_pipeline.settings import SESSIONS_PER_RUN, paths

REVIEW_INPUTS = ("bars_1m", "scores", "signals", "backtest_trades", "regime_tags")


def _session_rows(frame: pd.DataFrame, days: list[date]) -> pd.DataFrame:
    dates = pd.to_datetime(frame["trading_date"]).dt.date
    return frame.loc[dates.isin(days)].reset_index(drop=True)


def lane_checks(assets: Iterable[AssetsDefinition]) -> dict[AssetCheckKey, bool]:
    """Every check of a lane's assets, with whether it is blocking."""
    return {spec.key: spec.blocking for a in assets for spec in a.check_specs}


def _failed_checks(
    context: AssetExecutionContext, checks: Mapping[AssetCheckKey, bool], days: list[date]
) -> dict[str, list[str]]:
    """``{date: [failed check names]}`` of the lane's checks on those sessions, from Dagster's
    per-partition check status (``(error)`` for blocking checks, ``(warn)`` for monitors)."""
    from dagster._core.storage.asset_check_execution_record import (
        AssetCheckExecutionRecordStatus,
    )

    infos = context.instance.event_log_storage.get_asset_check_partition_info(
        list(checks), partition_keys=[d.isoformat() for d in days]
    )
    out: dict[str, list[str]] = {}
    for info in infos:
        if info.latest_execution_status == AssetCheckExecutionRecordStatus.FAILED:
            severity = "error" if checks[info.check_key] else "warn"
            name = f"{info.check_key.asset_key.path[-1]}.{info.check_key.name} ({severity})"
            out.setdefault(str(info.partition_key), []).append(name)
    return out


def _frames(
    context: AssetExecutionContext,
    failed: Mapping[str, list[str]],
    instrument: Instrument,
    days: list[date],
    tables: dict[str, pd.DataFrame],
) -> ReviewFrames:
    """The review inputs of ``days``: the tables' rows, paper fills, tick drift, and the failed
    checks (``failed``, as :func:`_failed_checks` gives them) of those days."""
    rows = {name: _session_rows(from_store(frame), days) for name, frame in tables.items()}
    home = paths().home
    fills = entry_fills(config_store(home).engine, instrument.symbol, [d.isoformat() for d in days])
    return ReviewFrames(
        bars=rows["bars_1m"],
        scores=rows["scores"],
        signals=rows["signals"],
        trades=rows["backtest_trades"],
        regimes=rows["regime_tags"],
        fills=fills,
        drift_ms=tick_drift(context.resources.io_manager.warehouse(), instrument.symbol, days),
        failed_checks={d: c for d, c in failed.items() if date.fromisoformat(d) in days},
    )


def _metadata(markdown: str, figures: dict, files: list[Path]) -> dict[str, object]:
    """Materialization metadata: the review as Markdown, its key figures rounded for people,
    and the page's path."""
    shown = {
        f"fbe/{k}": (round(v, 4) if isinstance(v, float) else v)
        for k, v in figures.items()
        if v is not None
    }
    return {
        "review": MetadataValue.md(markdown),
        "report": MetadataValue.path(str(files[0])),
        "charts": len(files) - 1,
        **shown,
    }


def _review_args(
    lane: Lane,
    name: str,
    partitions_def: TimeWindowPartitionsDefinition,
    description: str,
    mapping: TimeWindowPartitionMapping | None = None,
) -> dict[str, Any]:
    """``@asset`` arguments shared by the review assets: the lane's key prefix and group, the
    tables read (with ``mapping`` from the review's partitions to the sessions), the ticks'
    drift read through the I/O manager's database, kinds, owner and a ``report`` layer tag."""
    return {
        "name": name,
        "key_prefix": [lane.symbol],
        "group_name": lane.symbol,
        "partitions_def": partitions_def,
        "ins": {t: AssetIn(key=lane.key(t), partition_mapping=mapping) for t in REVIEW_INPUTS},
        "deps": [lane.key("raw_ticks")],
        "required_resource_keys": {"io_manager"},
        "kinds": {"python", "html"},
        "owners": OWNERS,
        "tags": {"layer": "report"},
        "description": description,
    }


def build_daily_review(lane: Lane, checks: Mapping[AssetCheckKey, bool]) -> AssetsDefinition:
    """The ``daily_review`` asset of one lane: one review per session; ``checks`` are the
    lane's checks (:func:`lane_checks`) whose failures it lists."""
    instrument = lane.instrument

    @asset(
        **_review_args(
            lane,
            "daily_review",
            lane.partitions_def,
            "One-page review of a session: signals, trades, PnL in R and bps, drawdown, "
            "slippage, regime and session breakdown, low-liquidity share, drift, failed checks, "
            "with charts; written to $FBE_HOME/reports/daily/<SYMBOL>/<DATE>.html.",
        ),
        backfill_policy=BackfillPolicy.multi_run(SESSIONS_PER_RUN),
    )
    def daily_review(
        context: AssetExecutionContext,
        bars_1m: pd.DataFrame,
        scores: pd.DataFrame,
        signals: pd.DataFrame,
        backtest_trades: pd.DataFrame,
        regime_tags: pd.DataFrame,
    ) -> Iterator[object]:
        """Render each session's review; a batched run records each session's review on its
        own partition after the run's summary materialization."""
        days = sessions(context)
        inputs = (bars_1m, scores, signals, backtest_trades, regime_tags)
        tables = dict(zip(REVIEW_INPUTS, inputs, strict=True))
        written = []
        # One status query for the batch, not one per session.
        failed = _failed_checks(context, checks, days)
        for day in days:
            frames = _frames(context, failed, instrument, [day], tables)
            review = build_review("daily", instrument, day, day, 1, frames)
            files = render_review(review, frames, instrument, report_path(paths().home, review))
            written.append((day, _metadata(to_markdown(review), review.figures, files)))
        if len(days) == 1:
            yield MaterializeResult(metadata=written[0][1])  # type: ignore[arg-type]
            return
        yield MaterializeResult(
            metadata={"sessions": len(days), "first": str(days[0]), "last": str(days[-1])}
        )
        for day, metadata in written:
            context.log_event(
                AssetMaterialization(
                    asset_key=context.asset_key,
                    partition=day.isoformat(),
                    metadata=metadata,  # type: ignore[arg-type]
                )
            )

    return daily_review


def weekly_partitions(lane: Lane) -> TimeWindowPartitionsDefinition:
    """Weeks from Monday 00:00 in the instrument's time zone, from the week of the lane's
    first session; the last one is the last complete week (a live lane's go on as weeks end),
    or for a historical lane the week of its last session."""
    keys = lane.partitions_def.get_partition_keys()
    first = date.fromisoformat(keys[0])
    monday = first - timedelta(days=first.weekday())
    live = lane.partitions_def.end is None
    last = date.fromisoformat(keys[-1])
    end = None if live else (last - timedelta(days=last.weekday()) + timedelta(days=7))
    return TimeWindowPartitionsDefinition(
        start=monday.strftime(PARTITION_FMT),
        end=None if end is None else end.strftime(PARTITION_FMT),
        fmt=PARTITION_FMT,
        cron_schedule="0 0 * * 1",
        timezone=lane.instrument.tz,
    )


def build_weekly_review(lane: Lane, checks: Mapping[AssetCheckKey, bool]) -> AssetsDefinition:
    """The ``weekly_review`` asset of one lane: one review per week of sessions (``checks`` as
    for :func:`build_daily_review`)."""
    instrument = lane.instrument

    @asset(
        **_review_args(
            lane,
            "weekly_review",
            weekly_partitions(lane),
            "The week's review (Monday to Sunday, local time), as the daily review; written to "
            "$FBE_HOME/reports/weekly/<SYMBOL>/<FIRST>_<LAST>.html.",
            # A week's sessions; a week past the lane's loaded days reads the sessions it has.
            TimeWindowPartitionMapping(allow_nonexistent_upstream_partitions=True),
        )
    )
    def weekly_review(
        context: AssetExecutionContext,
        bars_1m: pd.DataFrame,
        scores: pd.DataFrame,
        signals: pd.DataFrame,
        backtest_trades: pd.DataFrame,
        regime_tags: pd.DataFrame,
    ) -> MaterializeResult:
        """Render the week's review over the sessions it has data for."""
        window = context.partition_time_window
        keys = lane.partitions_def.get_partition_keys()
        days = [
            date.fromisoformat(k)
            for k in keys
            if window.start.date() <= date.fromisoformat(k) < window.end.date()
        ]
        present = set(pd.to_datetime(bars_1m["trading_date"]).dt.date)
        days = [d for d in days if d in present]
        if not days:
            return MaterializeResult(metadata={"sessions": 0, "note": "no sessions this week"})
        inputs = (bars_1m, scores, signals, backtest_trades, regime_tags)
        tables = dict(zip(REVIEW_INPUTS, inputs, strict=True))
        frames = _frames(context, _failed_checks(context, checks, days), instrument, days, tables)
        review = build_review("weekly", instrument, days[0], days[-1], len(days), frames)
        files = render_review(review, frames, instrument, report_path(paths().home, review))
        return MaterializeResult(
            metadata=_metadata(to_markdown(review), review.figures, files)  # type: ignore[arg-type]
        )

    return weekly_review


def regular_close(instrument: Instrument) -> dtime:
    """The instrument's usual session close, local time: the most frequent close of its
    sessions over the last four weeks (early closes are rarer); 00:00 for a 24/7 venue."""
    today = datetime.now(ZoneInfo(instrument.tz)).date()
    table = session_table(instrument, today - timedelta(days=28), today)
    closes = pd.to_datetime(table["close_ns"], utc=True).dt.tz_convert(instrument.tz).dt.time
    return dtime(0, 0) if closes.empty else closes.mode().iloc[0]


def build_review_schedules(lane: Lane) -> list[ScheduleDefinition]:
    """The lane's review schedules: the daily review 10 minutes after each session close (in
    the instrument's time zone, from its exchange calendar; a day without a session is
    skipped), the weekly review when a week has ended."""
    instrument = lane.instrument
    close = regular_close(instrument)
    at = datetime.combine(date(2000, 1, 3), close) + timedelta(minutes=10)
    daily_job = define_asset_job(
        f"fbe_daily_review_{lane.symbol}",
        selection=[lane.key("daily_review")],
        partitions_def=lane.partitions_def,
    )

    @schedule(
        name=f"{lane.symbol}_daily_review",
        cron_schedule=f"{at.minute} {at.hour} * * *",
        execution_timezone=instrument.tz,
        job=daily_job,
        default_status=DefaultScheduleStatus.RUNNING,
        description=f"{lane.symbol}'s daily review, 10 min after its session close "
        f"({close:%H:%M} {instrument.tz}).",
    )
    def daily(context: ScheduleEvaluationContext) -> RunRequest | SkipReason:
        now = context.scheduled_execution_time.astimezone(ZoneInfo(instrument.tz))
        # A close at midnight (24/7 venues) ends the previous day's session.
        day = now.date() - timedelta(days=1) if close == dtime(0, 0) else now.date()
        key = day.isoformat()
        if not lane.partitions_def.has_partition_key(key):
            return SkipReason(f"no {lane.symbol} session on {key}")
        return RunRequest(run_key=f"{lane.symbol}:daily_review:{key}", partition_key=key)

    weekly_job = define_asset_job(
        f"fbe_weekly_review_{lane.symbol}",
        selection=[lane.key("weekly_review")],
        partitions_def=weekly_partitions(lane),
    )
    weekly = build_schedule_from_partitioned_job(
        weekly_job,
        name=f"{lane.symbol}_weekly_review",
        hour_of_day=at.hour,
        minute_of_hour=at.minute,
        default_status=DefaultScheduleStatus.RUNNING,
    )
    return [daily, weekly]  # type: ignore[list-item]
