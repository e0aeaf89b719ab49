"""The one place that assembles FBE's Dagster ``Definitions``, and runs them for the CLI."""

from __future__ import annotations

import fcntl
import io
import multiprocessing
import os
import re
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pandas as pd
from dagster import (
    AssetKey,
    AssetsDefinition,
    AssetSelection,
    AssetSpec,
    DagsterInstance,
    Definitions,
    ExecuteInProcessResult,
    JobDefinition,
    SourceAsset,
    definitions,
)
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from assets import Lane, lane_assets, lane_sources, make_lane
from assets.integrity import integrity_job, raw_integrity
from assets.live import build_live_session
from assets.partitions import partition_key
from assets.reviews import (
    build_daily_review,
    build_review_schedules,
    build_weekly_review,
    lane_checks,
)
from assets.walk_forward import build_walk_forward
from fbe_pipeline.executor import executor_from_env
from fbe_pipeline.live.tail import landing_days
from fbe_pipeline.market.instruments import load_instruments
from fbe_pipeline.pipeline import loaded_sessions
from fbe_pipeline.settings import SESSIONS_PER_RUN, paths
from fbe_pipeline.storage.store import RawStore
from resources.fbe import raw_store_from_env, scoring_from_env
from resources.warehouse_io import warehouse_io_from_env
from sensors import automation_sensor, build_pipeline_job, integrity_schedule, pipeline_job_name
from sensors.feeds import build_feed_status_sensor
from sensors.monitors import monitors_asset, monitors_check, monitors_sensor

# Run events still go to the instance (and the UI, with tracebacks); the console shows only
# critical events, and a failed run is reported in one line by its first step failure.
_QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


def build_lanes(
    days: Iterable[tuple[str, date]], live: Iterable[tuple[str, date]] = ()
) -> list[Lane]:
    """One lane per configured instrument among ``days`` and ``live`` (``(symbol,
    trading_date)`` pairs: the store's tick partitions and the landing log's days), over its
    sessions from its first date to its last; an instrument in ``live`` gets open-ended
    partitions that include today."""
    by_symbol: dict[str, list[date]] = {}
    instruments = load_instruments()
    live = list(live)
    for symbol, day in [*days, *live]:
        if symbol in instruments:
            by_symbol.setdefault(symbol, []).append(day)
    live_symbols = {symbol for symbol, _ in live}
    return [
        make_lane(instruments[s], min(d), max(d), live=s in live_symbols)
        for s, d in sorted(by_symbol.items())
    ]


def build_definitions(lanes: list[Lane] | None = None) -> Definitions:
    """Assets, checks, jobs, sensor, schedule and resources of the batch pipeline.

    Parameters
    ----------
    lanes : list[Lane], optional
        The instruments and their sessions; by default :func:`build_lanes` of the raw store's
        tick partitions.

    Settings come from the environment: ``FBE_HOME`` (state directory), ``FBE_RAW_BACKEND``
    and the S3 settings, and ``FBE_SCORING_CONFIG`` (JSON overrides of SPEC §8).
    """
    home = paths().home
    raw_store = raw_store_from_env()
    if lanes is None:
        lanes = build_lanes(
            loaded_sessions(raw_store_from_env(deferred=False).get_store()),
            live=landing_days(home / "landing"),
        )
    jobs = [build_pipeline_job(lane) for lane in lanes]
    assets: list[AssetsDefinition | SourceAsset | AssetSpec] = [raw_integrity, monitors_asset]
    for lane in lanes:
        tables = lane_assets(lane)
        checks = lane_checks(tables)
        assets += [
            *lane_sources(lane),
            *tables,
            build_live_session(lane),
            build_walk_forward(lane),
            build_daily_review(lane, checks),
            build_weekly_review(lane, checks),
        ]
    return Definitions(
        assets=assets,
        jobs=[*jobs, integrity_job],
        asset_checks=[monitors_check],
        sensors=[
            automation_sensor,
            monitors_sensor,
            build_feed_status_sensor({lane.symbol: lane.partitions_def for lane in lanes}),
        ],
        schedules=[
            integrity_schedule,
            *(s for lane in lanes for s in build_review_schedules(lane)),
        ],
        # One process per run unless FBE_EXECUTOR scales out: a session's steps are small, and a
        # subprocess per step cost more than the steps (UI runs took 34-48 s for 12 s of work).
        executor=executor_from_env(),
        resources={
            "io_manager": warehouse_io_from_env(),
            "raw_store": raw_store,
            "scoring": scoring_from_env(),
        },
    )


@definitions
def defs() -> Definitions:
    """The code location's definitions, built when Dagster loads them (not at import), from
    the raw store of the current environment."""
    return build_definitions()


def known_partitions(store: RawStore, instance: DagsterInstance) -> set[tuple[str, date]]:
    """``(symbol, trading_date)`` of every session with raw ticks in the store, plus every
    session whose ``raw_ticks`` was materialized before (its raw data may have vanished)."""
    known = set(loaded_sessions(store))
    for symbol in load_instruments():
        for key in instance.get_materialized_partitions(AssetKey([symbol, "raw_ticks"])):
            known.add((symbol, date.fromisoformat(key)))
    return known


def dagster_instance() -> DagsterInstance:
    """The Dagster instance in ``DAGSTER_HOME``, opened under a file lock there: the first open
    creates its SQLite tables, and two processes doing that at once fail
    (``table alembic_version already exists``)."""
    home = Path(os.environ["DAGSTER_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    with (home / ".instance.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return DagsterInstance.get()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


class NothingToMaterializeError(LookupError):
    """No partition with raw data matches the requested symbols and dates."""


def materialize_partitions(
    store: RawStore,
    symbols: list[str] | None = None,
    start: date | None = None,
    end: date | None = None,
    console: Console | None = None,
    batch: int = SESSIONS_PER_RUN,
    through: str | None = None,
    parallel: int = 1,
) -> int:
    """Run each instrument's pipeline job for every session with raw ticks, in date order.

    Consecutive sessions of one instrument run together, up to ``batch`` per run (a run over a
    partition range, as a UI backfill with the assets' backfill policy launches it), so the
    run overhead is paid once per batch; each session still gets its own materializations and
    check results on its partition. When a batched run fails (a blocking check failed or raw
    data was refused in one of its sessions), its sessions are run again one per run, so the
    sessions that pass are materialized exactly as in one-session runs and the failing ones
    are named. Runs go to the instance in ``DAGSTER_HOME`` (the UI shows them). Days with ticks
    but no session in the instrument's calendar are skipped with a message. Sessions
    materialized before stay in scope even when their raw objects vanished from the manifest:
    they fail loudly instead of leaving the old results unchallenged.

    Parameters
    ----------
    batch : int
        Most sessions per run (>= 1; 1 runs every session on its own).
    through : str, optional
        Materialize only this asset of each lane (e.g. ``backtest_summary``) and the assets
        upstream of it, with their checks; None: the whole pipeline job (reviews included).
    parallel : int
        Most instruments whose runs go at once, each in its own process (>= 1). Instruments
        write different warehouse files, so the tables are the same as one at a time.

    Returns
    -------
    int
        Number of failed sessions (a failed blocking check stops its run's downstream assets).

    Raises
    ------
    NothingToMaterializeError
        When no session with raw ticks matches the symbols and dates.
    ValueError
        When ``batch`` or ``parallel`` < 1, or ``through`` is not an asset of the pipeline.
    """
    if batch < 1:
        raise ValueError(f"batch must be at least 1 session per run, got {batch}")
    if parallel < 1:
        raise ValueError(f"parallel must be at least 1 instrument at a time, got {parallel}")
    instance = dagster_instance()
    known = known_partitions(store, instance)
    lanes = {lane.symbol: lane for lane in build_lanes(known)}
    definitions = build_definitions(list(lanes.values()))
    parts = sorted(
        (day, sym)
        for sym, day in known
        if (not symbols or sym in symbols)
        and (start is None or day >= start)
        and (end is None or day <= end)
    )
    if not parts:
        raise NothingToMaterializeError(
            f"no raw ticks for {', '.join(symbols or ['any symbol'])} "
            f"from {start or 'the first'} to {end or 'the last'} trading date"
        )
    out = console or Console()
    runnable: dict[str, list[date]] = {}
    for day, sym in parts:
        if sym not in lanes:
            out.print(f"skipped {sym} {day}: {sym} is not a configured instrument")
        elif lanes[sym].partitions_def.has_partition_key(partition_key(day)):
            runnable.setdefault(sym, []).append(day)
        else:
            # Ticks stored on a day without a session (e.g. a holiday's pre-market prints)
            # have no bars to build; say so instead of failing a run.
            out.print(f"skipped {sym} {day}: no {sym} session that day")
    batches = sorted(
        (days[0], sym, days)
        for sym, wanted in runnable.items()
        for days in session_batches(lanes[sym].partitions_def.get_partition_keys(), wanted, batch)
    )
    selections = {sym: _selection(definitions, sym, through) for sym in runnable}
    jobs = {sym: definitions.resolve_job_def(pipeline_job_name(sym)) for sym in runnable}
    plan = _Plan(jobs, selections, batches)
    if parallel > 1 and len(runnable) > 1:
        return _materialize_in_parallel(plan, parallel, out)
    return _run_batches(instance, plan, out)


@dataclass(frozen=True)
class _Plan:
    """The runs of one ``fbe materialize``: each lane's job, its asset selection (None: the
    whole job) and the batches ``(first day, symbol, days)`` in order."""

    jobs: dict[str, JobDefinition]
    selections: dict[str, list[AssetKey] | None]
    batches: list[tuple[date, str, list[date]]]

    def of(self, symbol: str) -> _Plan:
        """The part of the plan for one instrument."""
        return _Plan(self.jobs, self.selections, [b for b in self.batches if b[1] == symbol])


def _run_batches(instance: DagsterInstance, plan: _Plan, out: Console) -> int:
    """Run the plan's batches one after the other on ``instance``; a failed batch is run again
    session by session. Returns the number of failed sessions."""
    failures = 0
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=out,
    ) as progress:
        task = progress.add_task("materializing", total=sum(len(d) for _, _, d in plan.batches))

        def run(sym: str, days: list[date]) -> ExecuteInProcessResult:
            first, last = partition_key(days[0]), partition_key(days[-1])
            progress.update(task, description=f"{sym} {first}" + (f"..{last}" if days[1:] else ""))
            ranged = {
                "dagster/asset_partition_range_start": first,
                "dagster/asset_partition_range_end": last,
            }
            return plan.jobs[sym].execute_in_process(
                partition_key=None if days[1:] else first,
                tags=ranged if days[1:] else None,
                instance=instance,
                raise_on_error=False,
                run_config=_QUIET,
                asset_selection=plan.selections[sym],
            )

        for _, sym, days in plan.batches:
            result = run(sym, days)
            outcomes = [(days[0], result)]
            if not result.success and days[1:]:
                progress.console.print(
                    f"[yellow]run of {sym} {days[0]}..{days[-1]} failed ({_failure(result)}); "
                    "running its sessions one by one[/yellow]"
                )
                outcomes = [(day, run(sym, [day])) for day in days]
            for day, single in outcomes:
                if not single.success:
                    failures += 1
                    progress.console.print(
                        f"[red]run failed: {sym} {day} ({single.run_id}): {_failure(single)}[/red]"
                    )
            progress.advance(task, len(days))
    return failures


def _selection(definitions: Definitions, symbol: str, through: str | None) -> list[AssetKey] | None:
    """The lane's assets up to and including ``through`` (None: the whole job).

    Raises
    ------
    ValueError
        When ``through`` names no materializable asset of the lane.
    """
    if through is None:
        return None
    graph = definitions.resolve_asset_graph()
    target = AssetKey([symbol, through])
    lane_keys = {k for k in graph.materializable_asset_keys if k.path[0] == symbol}
    if target not in lane_keys:
        names = ", ".join(sorted(k.path[-1] for k in lane_keys))
        raise ValueError(f"no asset {through!r} in {symbol}'s pipeline; its assets: {names}")
    upstream = AssetSelection.assets(target).upstream().resolve(graph)
    return sorted(upstream & lane_keys, key=str)


# The plan a forked worker runs: set by the parent just before its workers fork, so that they
# inherit the definitions, jobs and imports instead of building them again (a spawned worker
# spent ~8 s starting, a quarter of a two-instrument run of 60 candle sessions each).
_FORKED_PLAN: list[_Plan] = []


def _materialize_lane(symbol: str) -> tuple[int, str]:
    """One instrument's runs in a forked worker, on an instance of its own: its failures and
    its console output (shown by the parent when the instrument is done)."""
    text = io.StringIO()
    failures = _run_batches(dagster_instance(), _FORKED_PLAN[0].of(symbol), Console(file=text))
    return failures, text.getvalue()


def _materialize_in_parallel(plan: _Plan, parallel: int, out: Console) -> int:
    """Each instrument's runs in a process of its own, ``parallel`` at a time; the total of
    failed sessions. The workers are forked: they share nothing the parent has open (each
    opens its own Dagster instance, and each instrument writes its own warehouse files)."""
    failures = 0
    symbols = sorted({sym for _, sym, _ in plan.batches})
    _FORKED_PLAN[:] = [plan]
    try:
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(max_workers=parallel, mp_context=context) as pool:
            started = time.perf_counter()
            futures = {pool.submit(_materialize_lane, sym): sym for sym in symbols}
            for future in as_completed(futures):
                lane_failures, text = future.result()
                failures += lane_failures
                out.print(text, end="")
                out.print(
                    f"{futures[future]} done in {time.perf_counter() - started:.1f} s"
                    + (f", [red]{lane_failures} sessions failed[/red]" if lane_failures else "")
                )
    finally:
        _FORKED_PLAN.clear()
    return failures


def session_batches(keys: Sequence[str], days: list[date], size: int) -> list[list[date]]:
    """Split ``days`` into runs of at most ``size`` consecutive sessions.

    Parameters
    ----------
    keys : list of str
        Every partition key of the lane, in session order (``YYYY-MM-DD``).
    days : list of date
        The sessions to materialize (a subset of ``keys``).
    size : int
        Most sessions per batch.

    Returns
    -------
    list of list of date
        In session order; a batch never spans a session missing from ``days``, because a
        ranged run materializes every partition between its ends.
    """
    position = {key: i for i, key in enumerate(keys)}
    batches: list[list[date]] = []
    for day in sorted(days, key=lambda d: position[partition_key(d)]):
        at = position[partition_key(day)]
        previous = batches[-1][-1] if batches else None
        if (
            previous is not None
            and position[partition_key(previous)] == at - 1
            and len(batches[-1]) < size
        ):
            batches[-1].append(day)
        else:
            batches.append([day])
    return batches


def _failure(result: ExecuteInProcessResult) -> str:
    """The first step failure's message of a failed in-process run (one line)."""
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data.error is not None:
            error = event.step_failure_data.error
            message = error.message.strip().splitlines()[-1]
            # A user-facing Failure carries its own description; drop the class path.
            return re.sub(r"^[\w.]*Failure: ", "", message)
    return "see the Dagster UI"


def failed_checks(store: RawStore) -> dict[tuple[str, str], list[str]]:
    """Failed asset checks and failed materializations of each partition, read through
    Dagster's per-partition check and asset status: ``{(symbol, date): [names]}``.

    A check counts when its latest evaluation for that partition failed (``(error)`` for a
    blocking check, ``(warn)`` for a monitor); an asset counts (``failed: <asset>``) when its
    latest materialization attempt of that partition failed.
    """
    from dagster import AssetPartitionStatus
    from dagster._core.storage.asset_check_execution_record import (
        AssetCheckExecutionRecordStatus,
    )

    instance = dagster_instance()
    graph = build_definitions(build_lanes(known_partitions(store, instance))).resolve_asset_graph()
    blocking = {
        c.key: c.blocking
        for c in graph.asset_check_nodes
        if c.key.asset_key.path[-1] != "raw_integrity"
    }
    out: dict[tuple[str, str], list[str]] = {}
    keys: dict[str, set[str]] = {}
    for info in instance.event_log_storage.get_asset_check_partition_info(list(blocking)):
        if info.partition_key is None:
            continue
        symbol = info.check_key.asset_key.path[0]
        keys.setdefault(symbol, set()).add(info.partition_key)
        if info.latest_execution_status == AssetCheckExecutionRecordStatus.FAILED:
            severity = "error" if blocking[info.check_key] else "warn"
            name = f"{info.check_key.name} ({severity})"
            out.setdefault((symbol, info.partition_key), []).append(name)
    for node in graph.asset_nodes:
        symbol = node.key.path[0]
        if node.partitions_def is None or symbol not in keys:
            continue
        status = instance.get_status_by_partition(
            node.key, sorted(keys[symbol]), node.partitions_def
        )
        for key, state in (status or {}).items():
            if state == AssetPartitionStatus.FAILED:
                out.setdefault((symbol, key), []).append(f"failed: {node.key.path[-1]}")
    return {k: sorted(v) for k, v in out.items()}


def fail_orphaned_runs(wait_s: float = 8.0) -> list[str]:
    """Record as failed the started runs whose run worker process is gone.

    Stopping the UI (``scripts/ui.sh``) interrupts the run workers its code servers launched;
    one killed before it could record its own failure would stay "started" for ever. Only runs
    launched through a code server are considered (``fbe materialize``'s in-process runs are
    their own process), and only once the process that logged their ``RUN_START`` is dead:
    each is waited for up to ``wait_s`` seconds, so a worker still recording its interruption
    gets to finish.

    Returns
    -------
    list[str]
        Ids of the runs marked failed.
    """
    from dagster import DagsterEventType, DagsterRunStatus, RunsFilter

    instance = dagster_instance()
    started = instance.get_runs(RunsFilter(statuses=[DagsterRunStatus.STARTED]))
    deadline = time.monotonic() + wait_s
    failed = []
    for run in started:
        if run.remote_job_origin is None:
            continue
        starts = instance.all_logs(run.run_id, of_type=DagsterEventType.RUN_START)
        pids = {e.dagster_event.pid for e in starts if e.dagster_event and e.dagster_event.pid}
        while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        current = instance.get_run_by_id(run.run_id)
        if pids and not any(_alive(p) for p in pids) and current and not current.is_finished:
            instance.report_run_failed(
                current, "its run worker stopped with the UI before recording the interruption"
            )
            failed.append(run.run_id)
    return failed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_integrity() -> tuple[bool, pd.DataFrame]:
    """Run the integrity job on the instance in ``DAGSTER_HOME`` (results show in the UI).

    Returns
    -------
    (bool, pandas.DataFrame)
        Whether every integrity check passed, and the findings (``problem``, ``key``).
    """

    result = (
        build_definitions(lanes=[])
        .resolve_job_def(integrity_job.name)
        .execute_in_process(instance=dagster_instance(), run_config=_QUIET, raise_on_error=False)
    )
    if not result.success:
        raise RuntimeError(f"integrity run {result.run_id} failed: {_failure(result)}")
    findings = result.output_for_node("raw_integrity")
    passed = all(e.passed for e in result.get_asset_check_evaluations())
    return passed, findings
