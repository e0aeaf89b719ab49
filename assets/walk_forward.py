"""``walk_forward``: the walk-forward parameter search of one instrument over its sessions in the
raw store (:mod:`fbe_pipeline.research.walk_forward`), materialized on demand.

Unpartitioned: one run covers every session of the lane. Its result lives in the
materialization's metadata (a Markdown summary, the per-window table, the JSON report and the
proposed config) rather than in a DuckDB table, so each lane's run keeps its own history in the
UI and nothing replaces another instrument's rows.
"""

import hashlib
import json
import math
from datetime import date

import pandas as pd
from dagster import (
    AssetsDefinition,
    Config,
    DataVersion,
    Failure,
    MaterializeResult,
    MetadataValue,
    TableColumn,
    TableRecord,
    TableSchema,
    asset,
)
from pydantic import Field

from assets.common import OWNERS, Lane
from fbe_pipeline.research.walk_forward import (
    DEFAULT_GRID,
    DEFAULT_IN_SAMPLE,
    DEFAULT_MIN_TRADES,
    DEFAULT_OUT_OF_SAMPLE,
    TABLE_COLUMNS,
    load_sessions,
    report_json,
    report_markdown,
    report_table,
    stored_sessions,
    walk_forward,
    window_count,
)
from resources.fbe import RawStoreResource, ScoringConfigResource

_COLUMN_TYPES = {
    "window": "int",
    "qualified": "bool",
    "trades": "int",
    **dict.fromkeys(("win_rate", "total_r", "mean_r", "pnl_bps", "max_drawdown_r"), "float"),
}


class WalkForwardConfig(Config):
    """Run settings of the ``walk_forward`` asset (the launchpad shows them)."""

    in_sample: int = Field(default=DEFAULT_IN_SAMPLE, ge=1, description="In-sample sessions.")
    out_of_sample: int = Field(
        default=DEFAULT_OUT_OF_SAMPLE, ge=1, description="Out-of-sample sessions per window."
    )
    min_trades: int = Field(
        default=DEFAULT_MIN_TRADES, ge=0, description="Minimum in-sample trades of a choice."
    )


def table_metadata(table: pd.DataFrame) -> MetadataValue:
    """The per-window table (:func:`fbe_pipeline.research.walk_forward.report_table`) as a
    Dagster table: floats rounded to 4 decimal places, NaN (no trades) shown empty."""
    schema = TableSchema(
        columns=[TableColumn(name, _COLUMN_TYPES.get(name, "string")) for name in TABLE_COLUMNS]
    )
    records = []
    for row in table.to_dict("records"):
        data: dict[str, str | int | float | bool | None] = {}
        for name in TABLE_COLUMNS:
            value = row[name]
            if _COLUMN_TYPES.get(name) == "float":
                data[name] = None if math.isnan(value) else round(float(value), 4)
            elif name == "qualified":
                data[name] = bool(value)
            elif _COLUMN_TYPES.get(name) == "int":
                data[name] = int(value)
            else:
                data[name] = str(value)
        records.append(TableRecord(data))
    return MetadataValue.table(records, schema=schema)


def build_walk_forward(lane: Lane) -> AssetsDefinition:
    """The ``walk_forward`` asset of one instrument: key ``[<symbol>, "walk_forward"]`` in the
    lane's group, reading the lane's sessions from the raw store (after ``raw_objects``)."""

    @asset(
        key=lane.key("walk_forward"),
        group_name=lane.symbol,
        deps=[lane.key("raw_objects")],
        kinds={"pandas"},
        owners=OWNERS,
        tags={"layer": "research"},
        description=(
            f"Walk-forward search of {lane.symbol}'s score thresholds and trigger: chosen on each "
            "in-sample window, evaluated on the next out-of-sample window; the last choice is "
            "proposed as a new config version (approval needed)."
        ),
    )
    def walk_forward_asset(
        config: WalkForwardConfig,
        raw_store: RawStoreResource,
        scoring: ScoringConfigResource,
    ) -> MaterializeResult:
        """Per-window in-sample choice and in-/out-of-sample metrics, by regime and session."""
        base = scoring.get_config()
        store = raw_store.get_store()
        lane_days = [date.fromisoformat(k) for k in lane.partitions_def.get_partition_keys()]
        days = stored_sessions(store, lane.instrument, lane_days)
        try:
            # Checked before any tick is read; the UI shows the message, not a traceback.
            window_count(lane.symbol, len(days), config.in_sample, config.out_of_sample)
        except ValueError as exc:
            raise Failure(description=str(exc)) from exc
        sessions = load_sessions(store, lane.instrument, days)
        report = walk_forward(
            sessions,
            base,
            DEFAULT_GRID,
            config.in_sample,
            config.out_of_sample,
            config.min_trades,
        )
        doc = report_json(report)
        # The result changes with the sessions' raw data, the base config and the run settings.
        inputs = {
            "sessions": {s.trading_date.isoformat(): s.data_version for s in sessions},
            "base": base.version,
            "windows": [config.in_sample, config.out_of_sample, config.min_trades],
            "grid": doc["grid"],
        }
        version = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]
        return MaterializeResult(
            metadata={
                "summary": MetadataValue.md(report_markdown(report)),
                "windows": len(report.windows),
                "sessions": len(sessions),
                "base_version": base.version,
                "proposal_version": report.proposal.version,
                "proposal_changes": MetadataValue.json(report.changes(report.proposal)),
                "table": table_metadata(report_table(report)),
                "report": MetadataValue.json(doc),
            },
            data_version=DataVersion(version),
        )

    return walk_forward_asset
