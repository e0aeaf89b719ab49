"""The contracts' vectorized ``str`` check accepts what pandera's ``str`` accepts and refuses
what it refuses, naming the offending rows."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd
import pandera.errors
import pandera.pandas as pa
import pytest

from fbe_pipeline.quality.schemas import ALL, TEXT


def _schema() -> pa.DataFrameSchema:
    return pa.DataFrameSchema({"a": pa.Column(TEXT), "b": pa.Column(TEXT, nullable=True)})


def test_strings_and_nulls_pass_like_pandera_str() -> None:
    frame = pd.DataFrame({"a": ["x", "y"], "b": ["z", None]})
    pd.testing.assert_frame_equal(_schema().validate(frame), frame)
    reference = pa.DataFrameSchema({"a": pa.Column(str), "b": pa.Column(str, nullable=True)})
    pd.testing.assert_frame_equal(reference.validate(frame), frame)
    assert _schema().validate(frame.iloc[0:0]).empty


@pytest.mark.parametrize("bad", [3, 2.5, b"bytes"])
def test_a_non_string_is_refused_with_its_row(bad: object) -> None:
    frame = pd.DataFrame({"a": ["x", "y", bad], "b": ["z", None, "w"]})
    with pytest.raises(
        pandera.errors.SchemaError, match="expected series 'a' to have type str"
    ) as e:
        _schema().validate(frame)
    assert e.value.failure_cases is not None
    assert list(e.value.failure_cases["index"]) == [2]


def test_a_null_in_a_non_nullable_text_column_is_refused() -> None:
    with pytest.raises(pandera.errors.SchemaError, match="non-nullable"):
        _schema().validate(pd.DataFrame({"a": ["x", None], "b": ["z", None]}))


def test_every_text_column_of_the_contracts_maps_to_str() -> None:
    texts = [
        (table, name)
        for table, schema in ALL.items()
        for name, column in schema.columns.items()
        if isinstance(column.dtype, type(TEXT))
    ]
    assert ("raw_ticks", "side") in texts and ("signals", "symbol") in texts
    assert all(str(ALL[t].columns[c].dtype) == "str" for t, c in texts)


def test_the_dagster_type_checks_the_output_in_place_and_still_refuses_bad_frames(
    sample_data: Path,
) -> None:
    from dagster import check_dagster_type

    from assets.common import contract_type
    from fbe_pipeline.quality.schemas import BARS_1M

    bars = _spy_bars(sample_data)
    before = bars.copy()
    dagster_type = contract_type(BARS_1M)
    assert dagster_type is contract_type(BARS_1M)
    assert check_dagster_type(dagster_type, bars).success
    pd.testing.assert_frame_equal(bars, before)
    broken = bars.assign(volume=-bars["volume"])
    result = check_dagster_type(dagster_type, broken)
    assert not result.success
    assert "volume" in str(result.metadata) + str(result.description)


def _spy_bars(sample_data: Path) -> pd.DataFrame:
    from fbe_pipeline.market.instruments import get_instrument
    from fbe_pipeline.market.sources.lean import read_lean_trades
    from fbe_pipeline.pipeline import session_bars, session_ticks

    spy, day = get_instrument("SPY"), date(2013, 10, 7)
    raw = read_lean_trades(
        sample_data / f"lean/spy/tick/{day:%Y%m%d}_trade.zip", "SPY", spy.tz, 10_000.0
    )
    ticks, _ = session_ticks(raw, None, spy, day)
    return session_bars(ticks, spy, day)
