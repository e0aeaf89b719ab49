"""``bars_1m``: 1-minute OHLCV bars with their blocking invariants and reports."""

from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pandas as pd
from dagster import AssetExecutionContext, AssetsDefinition, asset

from assets.common import Lane, SessionResult, emit, instrument_of, sessions
from fbe_pipeline.live.feeds.status import feed_gaps
from fbe_pipeline.market.bars import BAR_INPUT_COLUMNS
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
        ins={"raw_ticks": lane.upstream("raw_ticks", columns=BAR_INPUT_COLUMNS)},
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
        """1-minute bars of each session, labelled by open time (UTC), visible at close; short
        gaps (<= 2 min) filled flat at the previous close, longer gaps reported."""
        instrument = instrument_of(context)
        store = raw_store.get_store()
        days = sessions(context)

        def one(day: date) -> SessionResult:
            ticks = lane.window(raw_ticks, day)
            # A session without ticks is built from its vendor candles, if any were loaded.
            candles = None if len(ticks) else store.read_partition("candles", lane.symbol, day)
            bars = session_bars(ticks, instrument, day, candles)
            open_ns, close_ns = session_bounds(instrument, day)
            reference = store.read_partition("refbars", instrument.symbol, day)
            vendor = (
                CheckOutcome(passed=True, metadata={"reference_bars": 0, "note": "no vendor bars"})
                if reference is None
                else vendor_match(bars, reference, open_ns, close_ns)
            )
            return SessionResult(
                bars,
                {
                    "data_version": data_version(store, instrument.symbol, day),
                    "bars": len(bars),
                    "filled_bars": int(bars["is_filled"].sum()),
                    "volume": float(bars["volume"].sum()),
                },
                {
                    "ohlc_invariants": (check_ohlc_invariants(bars), False),
                    "bar_times_strictly_ordered_unique": (
                        check_bar_times(bars, open_ns, close_ns),
                        False,
                    ),
                    "bars_expectations": (validate(bars, "bars_1m"), False),
                    "gap_report": (
                        gap_report(
                            bars,
                            open_ns,
                            close_ns,
                            feed_gaps(Path(raw_store.home), instrument.symbol, open_ns, close_ns),
                        ),
                        True,
                    ),
                    "vendor_reference_match": (vendor, True),
                },
            )

        results = [one(d) for d in days]
        # Bars are a pure function of the raw objects: their digest is the bar revision, so a
        # late file yields a new revision on re-materialization instead of an in-place edit.
        yield from emit(context, days, results, str(results[0].metadata["data_version"]))

    return bars_1m
