"""Great Expectations suites with the richer data-quality rules for raw ticks and bars.

The suites run on an ephemeral GX context against in-memory pandas frames; the Dagster layer
wraps each run in an asset check.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any

import pandas as pd

from fbe_pipeline.quality.checks import CheckOutcome

log = logging.getLogger(__name__)


@lru_cache(maxsize=4)
def _suite(name: str) -> Any:
    import great_expectations as gx
    import great_expectations.expectations as gxe

    _context()  # suites need an active GX context
    suite = gx.ExpectationSuite(name=name)
    if name == "raw_ticks":
        rules: list[Any] = [
            gxe.ExpectColumnValuesToNotBeNull(column="ts_event"),
            gxe.ExpectColumnValuesToNotBeNull(column="price"),
            gxe.ExpectColumnValuesToBeBetween(column="price", min_value=0, strict_min=True),
            gxe.ExpectColumnValuesToBeBetween(column="size", min_value=0),
            gxe.ExpectColumnValuesToBeInSet(column="side", value_set=["buy", "sell", "unknown"]),
            gxe.ExpectColumnValuesToBeIncreasing(column="ts_event", strictly=False),
            gxe.ExpectCompoundColumnsToBeUnique(column_list=["source", "seq", "ts_event"]),
            # Most prints must carry an aggressor side once inference has run.
            gxe.ExpectColumnValuesToBeInSet(column="side", value_set=["buy", "sell"], mostly=0.95),
        ]
    elif name == "bars_1m":
        rules = [
            gxe.ExpectColumnValuesToBeUnique(column="ts"),
            gxe.ExpectColumnValuesToBeIncreasing(column="ts", strictly=True),
            gxe.ExpectColumnValuesToNotBeNull(column="close"),
            gxe.ExpectColumnValuesToBeBetween(column="volume", min_value=0),
            gxe.ExpectColumnPairValuesAToBeGreaterThanB(
                column_A="high", column_B="low", or_equal=True
            ),
            # Bars from vendor candles have no buy volume (NaN): nothing to compare.
            gxe.ExpectColumnPairValuesAToBeGreaterThanB(
                column_A="volume",
                column_B="buy_volume",
                or_equal=True,
                ignore_row_if="either_value_is_missing",
            ),
            # A session mostly of filled bars means the feed was dead, not quiet.
            gxe.ExpectColumnValuesToBeInSet(column="is_filled", value_set=[False], mostly=0.5),
        ]
    else:
        raise ValueError(f"no expectation suite named {name!r}")
    for rule in rules:
        suite.add_expectation(rule)
    return suite


@lru_cache(maxsize=1)
def _context() -> Any:
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    for name in ("great_expectations", "great_expectations.data_context.types.base"):
        logging.getLogger(name).setLevel(logging.WARNING)
    ctx = gx.get_context(mode="ephemeral")
    # GX draws a tqdm bar per validation on stderr, which would flood the pipeline's logs.
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    return ctx


@lru_cache(maxsize=4)
def _batch_definition(suite_name: str) -> Any:
    # One in-memory pandas source per suite for the life of the process.
    source = _context().data_sources.add_pandas(f"fbe_{suite_name}")
    asset = source.add_dataframe_asset(name=suite_name)
    return asset.add_batch_definition_whole_dataframe("whole")


def validate(frame: pd.DataFrame, suite_name: str) -> CheckOutcome:
    """Validate ``frame`` against the named suite (``raw_ticks`` or ``bars_1m``).

    Returns
    -------
    CheckOutcome
        Passed when every expectation succeeds; metadata lists the failed expectations with
        their unexpected counts.

    Raises
    ------
    ValueError
        On an unknown suite name.
    """
    suite = _suite(suite_name)
    if frame.empty:
        return CheckOutcome(
            passed=True, metadata={"rows": 0, "expectations": len(suite.expectations)}
        )
    batch_def = _batch_definition(suite_name)
    frame = frame.copy()
    for col in frame.columns:
        if isinstance(frame[col].dtype, pd.DatetimeTZDtype):
            frame[col] = frame[col].dt.tz_convert("UTC").dt.tz_localize(None)
    result = batch_def.get_batch(batch_parameters={"dataframe": frame}).validate(suite)
    failed = [
        {
            "expectation": r.expectation_config.type,
            "kwargs": {k: v for k, v in r.expectation_config.kwargs.items() if k != "batch_id"},
            "unexpected_count": (r.result or {}).get("unexpected_count"),
        }
        for r in result.results
        if not r.success
    ]
    return CheckOutcome(
        passed=bool(result.success),
        metadata={
            "rows": len(frame),
            "expectations": len(result.results),
            "failed": len(failed),
            "failures": str(failed[:5]),
        },
    )
