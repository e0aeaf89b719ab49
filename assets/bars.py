"""``bars_1m``: 1-minute OHLCV bars with their blocking invariants and reports."""

from collections.abc import Iterator

import pandas as pd
from dagster import AssetExecutionContext, AssetsDefinition, DataVersion, Output, asset

from assets.common import Lane, check_result, partition
from fbe_pipeline.pipeline import data_version, session_bars, session_bounds
from fbe_pipeline.quality import schemas
from fbe_pipeline.quality.checks import (
    CheckOutcome,
    check_bar_times,
    check_ohlc_invariants,
    gap_report,
    vendor_match,
)
from fbe_pipeline.quality.expectations import validate
from resources.fbe import RawStoreResource


def build_bars_1m(lane: Lane) -> AssetsDefinition:
    """The ``bars_1m`` asset of one instrument, with its blocking invariants and monitors."""

    @asset(
        **lane.asset_args("bars_1m", schemas.BARS_1M, "bars"),
        ins={"raw_ticks": lane.upstream("raw_ticks")},
        check_specs=[
            lane.check(
                "ohlc_invariants",
                "bars_1m",
                "low <= open, close <= high; prices > 0; volume >= 0; buy + sell <= volume; "
                "low <= VWAP <= high.",
                blocking=True,
            ),
            lane.check(
                "bar_times_strictly_ordered_unique",
                "bars_1m",
                "Bar open times strictly increasing, unique, on the minute, inside the session.",
                blocking=True,
            ),
            lane.check(
                "bars_expectations",
                "bars_1m",
                "Great Expectations suite on bars_1m.",
                blocking=True,
            ),
            lane.check(
                "gap_report", "bars_1m", "Monitor: gaps longer than 2 minutes that stay gaps."
            ),
            lane.check(
                "vendor_reference_match",
                "bars_1m",
                "Monitor: share of regular-session bars equal to the vendor's minute bars "
                "(volume, OHLC).",
            ),
        ],
    )
    def bars_1m(
        context: AssetExecutionContext, raw_ticks: pd.DataFrame, raw_store: RawStoreResource
    ) -> Iterator[object]:
        """1-minute bars of the session, labelled by open time (UTC), visible at close; short
        gaps (<= 2 min) filled flat at the previous close, longer gaps reported."""
        day, instrument = partition(context)
        bars = session_bars(raw_ticks, instrument, day)
        open_ns, close_ns = session_bounds(instrument, day)
        store = raw_store.get_store()
        # Bars are a pure function of the raw objects: their digest is the bar revision, so a
        # late file yields a new revision on re-materialization instead of an in-place edit.
        revision = data_version(store, instrument.symbol, day)
        yield Output(
            bars,
            data_version=DataVersion(revision),
            metadata={
                "data_version": revision,
                "bars": len(bars),
                "filled_bars": int(bars["is_filled"].sum()),
                "volume": float(bars["volume"].sum()),
            },
        )
        yield check_result("ohlc_invariants", check_ohlc_invariants(bars))
        yield check_result(
            "bar_times_strictly_ordered_unique", check_bar_times(bars, open_ns, close_ns)
        )
        yield check_result("bars_expectations", validate(bars, "bars_1m"))
        yield check_result("gap_report", gap_report(bars, open_ns, close_ns), warn=True)
        reference = store.read_partition("refbars", instrument.symbol, day)
        if reference is None:
            outcome = CheckOutcome(
                passed=True, metadata={"reference_bars": 0, "note": "no vendor bars"}
            )
        else:
            outcome = vendor_match(bars, reference, open_ns, close_ns)
        yield check_result("vendor_reference_match", outcome, warn=True)

    return bars_1m
