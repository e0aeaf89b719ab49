"""``raw_ticks``: one session's ticks from the immutable raw store, verified before use."""

from collections.abc import Iterator
from dataclasses import asdict
from datetime import date

import pandas as pd
from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    AutomationCondition,
    DataVersionsByPartition,
    Failure,
    MetadataValue,
    SourceAsset,
    asset,
    observable_source_asset,
)

from assets.common import (
    Lane,
    SessionResult,
    check_result,
    combine,
    emit,
    instrument_of,
    log_session_checks,
    sessions,
)
from assets.partitions import partition_key
from fbe_pipeline.pipeline import data_version, data_versions, prepare_raw_ticks, session_bounds
from fbe_pipeline.quality import schemas
from fbe_pipeline.quality.checks import (
    CheckOutcome,
    check_raw_objects,
    check_ticks_in_session,
    clock_drift,
)
from fbe_pipeline.quality.expectations import validate
from fbe_pipeline.storage.integrity import verify_partition
from resources.fbe import RawStoreResource


def build_raw_objects(lane: Lane) -> SourceAsset:
    """The raw store as an observable source of one instrument: each session's data version
    (a digest of its objects' keys and SHA-256s, :func:`fbe_pipeline.pipeline.data_versions`)
    changes with any new object, ticks, quotes, books or reference bars."""

    @observable_source_asset(
        key=lane.key("raw_objects"),
        group_name=lane.symbol,
        partitions_def=lane.partitions_def,
        description=f"Raw objects of {lane.symbol} in the write-once raw store, by session.",
        tags={"layer": "ingest"},
        # One observation run a minute, of the latest session: it records every session's
        # data version, so older sessions need no runs of their own.
        automation_condition=(
            AutomationCondition.cron_tick_passed("* * * * *")
            & AutomationCondition.in_latest_time_window()
        ).with_label("observe every minute"),
    )
    def raw_objects(raw_store: RawStoreResource) -> DataVersionsByPartition:
        versions = data_versions(raw_store.get_store(), lane.symbol)
        return DataVersionsByPartition(
            {
                partition_key(day): version
                for day, version in versions.items()
                if lane.partitions_def.has_partition_key(partition_key(day))
            }
        )

    return raw_objects


def build_raw_ticks(lane: Lane) -> AssetsDefinition:
    """The ``raw_ticks`` asset of one instrument, with its blocking raw checks."""

    @asset(
        **lane.asset_args("raw_ticks", schemas.RAW_TICKS, "ingest"),
        deps=[lane.key("raw_objects")],
        check_specs=[
            lane.check(
                "raw_objects_verified",
                "raw_ticks",
                "Every raw object of the session matches its manifest entry (size, SHA-256, "
                "first version) and none is missing from the manifest.",
                blocking=True,
            ),
            lane.check(
                "ticks_within_session",
                "raw_ticks",
                "Every kept tick lies inside the instrument's session [open, close).",
                blocking=True,
            ),
            lane.check(
                "raw_ticks_expectations",
                "raw_ticks",
                "Great Expectations suite on raw_ticks: prices > 0 and finite, sizes >= 0, "
                "valid sides, ordered times.",
                blocking=True,
            ),
            lane.check(
                "clock_drift",
                "raw_ticks",
                "Monitor: receive minus event time above 100 ms (p50, p99, max, count).",
            ),
        ],
    )
    def raw_ticks(context: AssetExecutionContext, raw_store: RawStoreResource) -> Iterator[object]:
        """Session ticks of each trading day, read from the write-once raw objects, with the
        aggressor side resolved (source, Lee-Ready, or tick rule) and clock drift in ms.

        The raw objects are verified first: when one differs from its manifest entry, is
        missing from it, or a session has no tick object left, the ``raw_objects_verified``
        check fails and the step fails, so nothing is materialized from untrusted bytes."""
        instrument = instrument_of(context)
        store = raw_store.get_store()
        symbol = instrument.symbol
        days = sessions(context)
        findings = {d: verify_partition(store, symbol, d) for d in days}
        verified = [check_raw_objects(findings[d], symbol, d) for d in days]
        refused = combine(verified, days)
        if not refused.passed:
            log_session_checks(context, "raw_objects_verified", days, verified)
            yield check_result("raw_objects_verified", refused)
            bad = [(d, f) for d in days for f in findings[d]]
            summary = "; ".join(f"{d} {f.problem}: {f.key}" for d, f in bad[:5])
            raise Failure(
                description=f"raw data of {symbol} refused: {summary}",
                metadata={"objects": MetadataValue.json([asdict(f) for _, f in bad[:50]])},
            )

        def one(day: date, outcome: CheckOutcome) -> SessionResult:
            ticks, counts = prepare_raw_ticks(store, instrument, day)
            open_ns, close_ns = session_bounds(instrument, day)
            return SessionResult(
                ticks,
                {
                    **counts,
                    "data_version": data_version(store, symbol, day),
                    "side_methods": ticks["side_method"].value_counts().to_dict(),
                    "session_open": str(pd.Timestamp(open_ns, tz="UTC")),
                    "session_close": str(pd.Timestamp(close_ns, tz="UTC")),
                },
                {
                    "raw_objects_verified": (outcome, False),
                    "ticks_within_session": (
                        check_ticks_in_session(ticks, open_ns, close_ns),
                        False,
                    ),
                    "raw_ticks_expectations": (validate(ticks, "raw_ticks"), False),
                    "clock_drift": (clock_drift(ticks), True),
                },
            )

        results = [one(d, o) for d, o in zip(days, verified, strict=True)]
        yield from emit(context, days, results)

    return raw_ticks
