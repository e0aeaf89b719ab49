"""The one place that assembles FBE's Dagster ``Definitions``, and runs them for the CLI."""

from __future__ import annotations

import re
from datetime import date

import pandas as pd
from dagster import Definitions, ExecuteInProcessResult, in_process_executor
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from assets import PIPELINE_ASSETS
from assets.integrity import integrity_job, raw_integrity
from assets.partitions import day_symbol_partitions, partition_key, split_key
from fbe_pipeline.instruments import get_instrument
from fbe_pipeline.sessions import session_for
from fbe_pipeline.settings import paths
from fbe_pipeline.store import RawStore
from resources.duckdb_io import FbeDuckDBIOManager
from resources.fbe import raw_store_from_env, scoring_from_env
from sensors import integrity_schedule, new_raw_data_sensor, pipeline_job

# Run events still go to the instance (and the UI, with tracebacks); the console shows only
# critical events, and a failed run is reported in one line by its first step failure.
_QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


def build_definitions() -> Definitions:
    """Assets, checks, job, sensor and resources of the batch pipeline.

    Settings come from the environment: ``FBE_HOME`` (state directory), ``FBE_RAW_BACKEND``
    (``local``) and ``FBE_SCORING_CONFIG`` (JSON overrides of SPEC §8).
    """
    home = paths().home
    return Definitions(
        assets=[*PIPELINE_ASSETS, raw_integrity],
        jobs=[pipeline_job, integrity_job],
        sensors=[new_raw_data_sensor],
        schedules=[integrity_schedule],
        # One process per run: a partition's steps are small, and a subprocess per step cost
        # more than the steps themselves (UI-launched runs took 34-48 s for 12 s of work).
        executor=in_process_executor,
        resources={
            "io_manager": FbeDuckDBIOManager(database=str(home / "fbe.duckdb"), schema="main"),
            "raw_store": raw_store_from_env(),
            "scoring": scoring_from_env(),
        },
    )


defs = build_definitions()


class NothingToMaterializeError(LookupError):
    """No partition with raw data matches the requested symbols and dates."""


def materialize_partitions(
    store: RawStore,
    symbols: list[str] | None = None,
    start: date | None = None,
    end: date | None = None,
    console: Console | None = None,
) -> int:
    """Run the pipeline job for every partition with raw ticks, in date order.

    Each partition is one run on the Dagster instance in ``DAGSTER_HOME`` (so runs, asset
    materializations and check results show in the UI). Date order guarantees the earlier
    partitions that look-backs read are already materialized.

    Partitions whose trading date has no session in the instrument's calendar are skipped
    with a message.

    Returns
    -------
    int
        Number of failed runs (a failed blocking check stops its run's downstream assets).

    Raises
    ------
    NothingToMaterializeError
        When no partition with raw ticks matches the symbols and dates.
    """
    from dagster import AssetKey, DagsterInstance

    instance = DagsterInstance.get()
    # Partitions materialized before stay in scope even when their raw objects vanished from
    # the manifest: their run then fails loudly instead of leaving the old results unchallenged.
    known = set(store.partitions("ticks"))
    for key in instance.get_materialized_partitions(AssetKey("raw_ticks")):
        day, sym = split_key(key)
        known.add((sym, day))
    parts = [
        (day, sym)
        for sym, day in known
        if (not symbols or sym in symbols)
        and (start is None or day >= start)
        and (end is None or day <= end)
    ]
    parts.sort()
    if not parts:
        raise NothingToMaterializeError(
            f"no raw ticks for {', '.join(symbols or ['any symbol'])} "
            f"from {start or 'the first'} to {end or 'the last'} trading date"
        )
    # Ticks stored on a day without a session (e.g. a holiday's pre-market prints) have no
    # bars to build; say so instead of failing a run.
    closed = [(d, s) for d, s in parts if session_for(get_instrument(s), d) is None]
    for day, sym in closed:
        (console or Console()).print(f"skipped {sym} {day}: no {sym} session that day")
    parts = [p for p in parts if p not in closed]
    job = defs.resolve_job_def(pipeline_job.name)
    failures = 0
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("materializing", total=len(parts))
        for day, sym in parts:
            progress.update(task, description=f"{sym} {day}")
            result = job.execute_in_process(
                partition_key=partition_key(day, sym),
                instance=instance,
                raise_on_error=False,
                run_config=_QUIET,
            )
            if not result.success:
                failures += 1
                progress.console.print(
                    f"[red]run failed: {sym} {day} ({result.run_id}): {_failure(result)}[/red]"
                )
            progress.advance(task)
    return failures


def _failure(result: ExecuteInProcessResult) -> str:
    """The first step failure's message of a failed in-process run (one line)."""
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data.error is not None:
            error = event.step_failure_data.error
            message = error.message.strip().splitlines()[-1]
            # A user-facing Failure carries its own description; drop the class path.
            return re.sub(r"^[\w.]*Failure: ", "", message)
    return "see the Dagster UI"


def failed_checks() -> dict[tuple[str, str], list[str]]:
    """Failed asset checks and failed materializations of each partition, read through
    Dagster's per-partition check and asset status: ``{(symbol, date): [names]}``.

    A check counts when its latest evaluation for that partition failed (``(error)`` for a
    blocking check, ``(warn)`` for a monitor); an asset counts (``failed: <asset>``) when its
    latest materialization attempt of that partition failed.
    """
    from dagster import AssetPartitionStatus, DagsterInstance
    from dagster._core.storage.asset_check_execution_record import (
        AssetCheckExecutionRecordStatus,
    )

    instance = DagsterInstance.get()
    specs = {spec.key: spec for asset in PIPELINE_ASSETS for spec in asset.check_specs}
    out: dict[tuple[str, str], list[str]] = {}
    keys: set[str] = set()
    for info in instance.event_log_storage.get_asset_check_partition_info(list(specs)):
        if info.partition_key is None:
            continue
        keys.add(info.partition_key)
        if info.latest_execution_status == AssetCheckExecutionRecordStatus.FAILED:
            day, sym = split_key(info.partition_key)
            severity = "error" if specs[info.check_key].blocking else "warn"
            name = f"{info.check_key.name} ({severity})"
            out.setdefault((sym, day.isoformat()), []).append(name)
    for asset in PIPELINE_ASSETS:
        status = (
            instance.get_status_by_partition(asset.key, sorted(keys), day_symbol_partitions) or {}
        )
        for key, state in status.items():
            if state == AssetPartitionStatus.FAILED:
                day, sym = split_key(key)
                out.setdefault((sym, day.isoformat()), []).append(f"failed: {asset.key.path[-1]}")
    return {k: sorted(v) for k, v in out.items()}


def run_integrity() -> tuple[bool, pd.DataFrame]:
    """Run the integrity job on the instance in ``DAGSTER_HOME`` (results show in the UI).

    Returns
    -------
    (bool, pandas.DataFrame)
        Whether every integrity check passed, and the findings (``problem``, ``key``).
    """
    from dagster import DagsterInstance

    result = defs.resolve_job_def(integrity_job.name).execute_in_process(
        instance=DagsterInstance.get(), run_config=_QUIET, raise_on_error=False
    )
    if not result.success:
        raise RuntimeError(f"integrity run {result.run_id} failed: {_failure(result)}")
    findings = result.output_for_node("raw_integrity")
    passed = all(e.passed for e in result.get_asset_check_evaluations())
    return passed, findings
