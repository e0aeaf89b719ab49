"""Helpers shared by the asset modules: one instrument's lane of assets, context to domain
arguments, check results, catalog metadata."""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
import pandas as pd
from dagster import (
    AssetCheckEvaluation,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    AssetRecordsFilter,
    AutomationCondition,
    BackfillPolicy,
    DagsterEventType,
    DagsterType,
    DataVersion,
    MetadataValue,
    Output,
    TableColumn,
    TableColumnConstraints,
    TableSchema,
    TimeWindowPartitionsDefinition,
)
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData,
)
from dagster_pandera import pandera_schema_to_dagster_type
from pandera.api.pandas.container import DataFrameSchema

from assets.partitions import lookback
from fbe_pipeline.market.instruments import Instrument, get_instrument
from fbe_pipeline.quality.checks import CheckOutcome
from fbe_pipeline.settings import SESSIONS_PER_RUN

OWNERS = ["team:fbe-quant-data"]

# Declarative automation of every lane asset: re-materialize a session when one of its inputs
# was updated (a new raw data version, or an upstream session inside its look-back window), once
# no input is missing or in progress and the inputs' blocking checks passed. Unlike ``eager()``
# it is not limited to the latest session, so a late file for an earlier day refreshes that day
# and the later sessions whose look-back covers it.
REFRESH = (
    AutomationCondition.eager()
    .without(AutomationCondition.in_latest_time_window())
    .with_label("refresh when inputs change")
    & AutomationCondition.all_deps_blocking_checks_passed()
)


# id(partitions definition) -> (that definition, minute, its keys); the definition is held so
# that its id cannot be reused by another one while cached.
_SESSION_KEYS: dict[int, tuple[Any, int, list[str]]] = {}


@dataclass(frozen=True)
class Lane:
    """One instrument's assets: keys ``[<symbol>, <table>]`` in group ``<symbol>``,
    partitioned by the instrument's sessions.

    Attributes
    ----------
    instrument : Instrument
        The instrument.
    partitions_def : TimeWindowPartitionsDefinition
        Its sessions (:func:`assets.partitions.session_partitions`).
    """

    instrument: Instrument
    partitions_def: TimeWindowPartitionsDefinition

    @property
    def symbol(self) -> str:
        """The instrument's symbol, the key prefix and group of its assets."""
        return self.instrument.symbol

    def key(self, table: str) -> AssetKey:
        """The asset key of one of this lane's tables."""
        return AssetKey([self.symbol, table])

    def upstream(
        self, table: str, sessions: int = 0, columns: Sequence[str] | None = None
    ) -> AssetIn:
        """An input reading ``table`` of this lane: the same session, or with ``sessions`` > 0
        the look-back window of that many earlier sessions too; only ``columns`` when given
        (the I/O manager reads the ``columns`` input metadata)."""
        mapping = lookback(sessions) if sessions else None
        metadata = {"columns": list(columns)} if columns else None
        return AssetIn(key=self.key(table), partition_mapping=mapping, metadata=metadata)

    def check(
        self, name: str, table: str, description: str, blocking: bool = False
    ) -> AssetCheckSpec:
        """A per-partition check on ``table`` (blocking: a failure stops downstream assets)."""
        return AssetCheckSpec(
            name,
            asset=self.key(table),
            partitions_def=self.partitions_def,
            blocking=blocking,
            description=description,
        )

    def asset_args(self, table: str, schema: DataFrameSchema, layer: str) -> dict[str, Any]:
        """``@asset`` arguments of a table: name, key prefix, group, partitions, the pandera
        contract as Dagster type and column schema, kinds, owners and a ``layer`` tag.

        Backfill policy: at most :data:`SESSIONS_PER_RUN` consecutive sessions per run, so a
        UI backfill pays the run overhead once per batch; each session's checks are still
        recorded on its own partition (:func:`log_session_checks`)."""
        return {
            "name": table,
            "key_prefix": [self.symbol],
            "group_name": self.symbol,
            "partitions_def": self.partitions_def,
            "dagster_type": contract_type(schema),
            "automation_condition": REFRESH,
            "backfill_policy": BackfillPolicy.multi_run(SESSIONS_PER_RUN),
            **table_asset(schema, layer),
        }

    def window(self, frame: pd.DataFrame, day: date, sessions: int = 0) -> pd.DataFrame:
        """The rows of ``frame`` that a one-session run of ``day`` reads: its own session and,
        with ``sessions`` > 0, that many earlier sessions of the lane (by partition, as the
        look-back mapping counts them). In a batched run the input holds the whole range."""
        keys = self.session_keys()
        at = keys.index(day.isoformat())
        wanted = np.array(keys[max(0, at - sessions) : at + 1], dtype="datetime64[ns]")
        dates = frame["trading_date"].to_numpy().astype("datetime64[ns]")
        return frame.loc[np.isin(dates, wanted)].reset_index(drop=True)

    def session_keys(self) -> list[str]:
        """The lane's partition keys (``YYYY-MM-DD``, in order), computed at most once a
        minute: a batched step slices every session's look-back window out of its input, and
        listing the calendar's sessions each time cost more than the slicing."""
        minute = int(time.time() // 60)
        cached = _SESSION_KEYS.get(id(self.partitions_def))
        if cached is None or cached[0] is not self.partitions_def or cached[1] != minute:
            keys = list(self.partitions_def.get_partition_keys())
            _SESSION_KEYS[id(self.partitions_def)] = (self.partitions_def, minute, keys)
            return keys
        return cached[2]


@dataclass
class SessionResult:
    """What one session contributes to a (possibly batched) materialization.

    Attributes
    ----------
    frame : pandas.DataFrame
        The session's rows of the asset.
    metadata : dict
        Figures of the session.
    checks : dict
        ``{check name: (outcome, warn)}`` of the session.
    """

    frame: pd.DataFrame
    metadata: dict[str, Any]
    checks: dict[str, tuple[CheckOutcome, bool]]


def sessions(context: AssetExecutionContext) -> list[date]:
    """The trading dates a run materializes: one, or a range in a batched backfill."""
    return [date.fromisoformat(k) for k in context.partition_keys]


def combine(outcomes: list[CheckOutcome], days: list[date]) -> CheckOutcome:
    """One check outcome over several sessions: passed when every session passed; metadata of
    the first failing session (else the first) plus ``failed_sessions``."""
    if len(outcomes) == 1:
        return outcomes[0]
    failed = [d.isoformat() for d, o in zip(days, outcomes, strict=True) if not o.passed]
    shown = next((o for o in outcomes if not o.passed), outcomes[0])
    return CheckOutcome(
        passed=not failed,
        metadata={"sessions": len(days), "failed_sessions": failed, **shown.metadata},
    )


def emit(
    context: AssetExecutionContext,
    days: list[date],
    results: list[SessionResult],
    data_version: str | None = None,
) -> Iterator[object]:
    """The output (sessions concatenated) and one result per check of a materialization.

    A one-session run keeps the session's metadata and ``data_version``; a batched run reports
    the session count and, per check, which sessions failed. In a batched run each session's
    own evaluation is also recorded on its partition (see :func:`log_session_checks`), so the
    UI, ``fbe summary`` and the automation see every session's check status.
    """
    frames = [r.frame for r in results if len(r.frame)]
    frame = pd.concat(frames, ignore_index=True) if frames else results[0].frame
    if len(results) == 1:
        version = DataVersion(data_version) if data_version else None
        yield Output(frame, metadata=results[0].metadata, data_version=version)
    else:
        first, last = days[0].isoformat(), days[-1].isoformat()
        yield Output(frame, metadata={"sessions": len(days), "first": first, "last": last})
    # Every check of the asset targets the same materializations: look each up once.
    targets: dict[tuple[AssetKey, str], AssetCheckEvaluationTargetMaterializationData | None] = {}
    for name, (_, warn) in results[0].checks.items():
        outcomes = [r.checks[name][0] for r in results]
        log_session_checks(context, name, days, outcomes, warn=warn, targets=targets)
        yield check_result(name, combine(outcomes, days), warn=warn)


def log_session_checks(
    context: AssetExecutionContext,
    name: str,
    days: list[date],
    outcomes: list[CheckOutcome],
    warn: bool = False,
    targets: dict[tuple[AssetKey, str], AssetCheckEvaluationTargetMaterializationData | None]
    | None = None,
) -> None:
    """Record one check's evaluation of every session of a batched run on its own partition.

    ``targets`` caches each ``(asset key, partition)``'s latest materialization across the
    checks of one step (looked up for all its sessions at once, by the first check).

    Dagster 1.13 records the ``AssetCheckResult`` of a run over a partition range without a
    partition, which would leave each session's check "planned"; an ``AssetCheckEvaluation``
    logged with its partition resolves that session's planned row instead. The combined result
    the caller still yields is what blocks downstream steps inside the run (any failing session
    stops the whole batch; ``fbe materialize`` then re-runs that batch session by session). A
    one-session run records nothing here: its ``AssetCheckResult`` carries the partition.
    """
    if len(days) < 2:
        return
    spec = next(s for s in context.assets_def.check_specs if s.name == name)
    targets = {} if targets is None else targets
    missing = [d.isoformat() for d in days if (spec.asset_key, d.isoformat()) not in targets]
    if missing:
        found = _latest_materializations(context, spec.asset_key, missing)
        targets.update({(spec.asset_key, p): found.get(p) for p in missing})
    for day, outcome in zip(days, outcomes, strict=True):
        where = (spec.asset_key, day.isoformat())
        context.log_event(
            AssetCheckEvaluation(
                asset_key=spec.asset_key,
                check_name=name,
                passed=outcome.passed,
                metadata={k: _meta(v) for k, v in outcome.metadata.items()},
                target_materialization_data=targets[where],
                severity=AssetCheckSeverity.WARN if warn else AssetCheckSeverity.ERROR,
                blocking=spec.blocking,
                partition=day.isoformat(),
            )
        )


def _latest_materializations(
    context: AssetExecutionContext, key: AssetKey, partitions: list[str]
) -> dict[str, AssetCheckEvaluationTargetMaterializationData]:
    """Each partition's latest materialization (the one the batch just wrote, when it got that
    far), as Dagster's own ``AssetCheckResult`` targets it: the automation counts a check as
    passed only while it targets the latest materialization. Two event-log queries whatever
    the number of partitions (a year of candles is 250 sessions in one run)."""
    latest = context.instance.event_log_storage.get_latest_storage_id_by_partition(
        key, DagsterEventType.ASSET_MATERIALIZATION, set(partitions)
    )
    if not latest:
        return {}
    records = context.instance.fetch_materializations(
        AssetRecordsFilter(asset_key=key, storage_ids=list(latest.values())), limit=len(latest)
    ).records
    by_id = {r.storage_id: r for r in records}
    return {
        partition: AssetCheckEvaluationTargetMaterializationData(
            storage_id=by_id[storage_id].storage_id,
            run_id=by_id[storage_id].run_id,
            timestamp=by_id[storage_id].timestamp,
        )
        for partition, storage_id in latest.items()
        if storage_id in by_id
    }


_CONTRACT_TYPES: dict[str, DagsterType] = {}


def contract_type(schema: DataFrameSchema) -> DagsterType:
    """The Dagster type of a pandera contract, one per contract: every lane's ``bars_1m`` has
    the same type, and a code location refuses two types of one name."""
    name = str(schema.name)
    if name not in _CONTRACT_TYPES:
        checked = copy.copy(schema)
        checked.__class__ = _CheckedInPlace
        _CONTRACT_TYPES[name] = pandera_schema_to_dagster_type(checked)
    return _CONTRACT_TYPES[name]


class _CheckedInPlace(DataFrameSchema):
    """A contract that validates the output itself instead of a copy: the contracts only check
    (no coercion, no parsers), and copying every output (a session of ticks is 440,000 rows)
    was half of the type checks' time."""

    def validate(self, check_obj: Any, *args: Any, **kwargs: Any) -> Any:
        """pandera's ``validate`` with ``inplace=True``."""
        kwargs["inplace"] = True
        return super().validate(check_obj, *args, **kwargs)

    @classmethod
    def get_backend(cls, check_obj: Any = None, check_type: Any = None) -> Any:
        """pandera's pandas backend, registered for ``DataFrameSchema`` itself."""
        return DataFrameSchema.get_backend(check_obj, check_type)


def instrument_of(context: AssetExecutionContext) -> Instrument:
    """The instrument whose lane the asset being materialized belongs to."""
    return get_instrument(context.asset_key.path[0])


def _meta(value: object) -> Any:
    if isinstance(value, str) and "\n" in value:
        return MetadataValue.md(f"```\n{value}\n```")
    if isinstance(value, list | dict):
        return MetadataValue.json(value)
    return value


def check_result(name: str, outcome: CheckOutcome, warn: bool = False) -> AssetCheckResult:
    """Turn a domain :class:`CheckOutcome` into an ``AssetCheckResult`` with metadata
    (severity WARN for monitors, ERROR otherwise)."""
    return AssetCheckResult(
        check_name=name,
        passed=outcome.passed,
        severity=AssetCheckSeverity.WARN if warn else AssetCheckSeverity.ERROR,
        metadata={k: _meta(v) for k, v in outcome.metadata.items()},
    )


def from_store(frame: pd.DataFrame) -> pd.DataFrame:
    """An input as the domain functions take it: timestamps in UTC, ``trading_date`` naive,
    rows in ``ts`` order (a look-back window spans several sessions' files)."""
    out = frame.copy()
    for col in out.columns:
        if isinstance(out[col].dtype, pd.DatetimeTZDtype):
            out[col] = out[col].dt.tz_convert("UTC").astype("datetime64[ns, UTC]")
    if "trading_date" in out:
        out["trading_date"] = pd.to_datetime(out["trading_date"]).astype("datetime64[ns]")
    return out.sort_values("ts").reset_index(drop=True) if "ts" in out else out


def column_schema(schema: DataFrameSchema) -> TableSchema:
    """The Dagster table schema of a pandera contract: each column's dtype, nullability and
    checks (e.g. ``greater_than(0)``), so the catalog shows what the contract enforces."""

    def rule(check: Any) -> str:
        args = ", ".join(str(v) for v in (check.statistics or {}).values())
        return f"{check.name}({args})"

    return TableSchema(
        columns=[
            TableColumn(
                name,
                str(col.dtype),
                constraints=TableColumnConstraints(
                    nullable=bool(col.nullable), other=[rule(c) for c in col.checks]
                ),
            )
            for name, col in schema.columns.items()
        ]
    )


def table_asset(schema: DataFrameSchema, layer: str) -> dict[str, Any]:
    """Catalog arguments shared by the DuckDB-backed assets: kinds, owners, a ``layer`` tag
    and the column schema from the pandera contract."""
    return {
        "kinds": {"pandas", "parquet"},
        "owners": OWNERS,
        "tags": {"layer": layer},
        "metadata": {"dagster/column_schema": column_schema(schema)},
    }


def rounded(figures: dict[str, Any], digits: int = 4) -> dict[str, Any]:
    """Metadata figures rounded for people: floats to ``digits`` decimal places, the rest as is."""
    return {k: round(v, digits) if isinstance(v, float) else v for k, v in figures.items()}
