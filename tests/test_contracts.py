"""The contracts' vectorized ``str`` check accepts what pandera's ``str`` accepts and refuses
what it refuses, naming the offending rows."""

from __future__ import annotations

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
