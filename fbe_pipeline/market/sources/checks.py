"""Value checks and guarded parsing shared by the vendor readers (SPEC §2 loader rules).

Every function raises :class:`ValueError` with a message that starts with ``where`` (the file's
name, or ``path:member`` for a file inside an archive), so a rejected file is always named with
its reason. Loader rules: a price is finite and > 0, a size is finite and >= 0, a timestamp is a
real instant between :data:`MIN_TS_NS` (1990-01-01 UTC) and one day after the current time; a
timestamp outside any trading session is *not* an error here (ingest assigns trading dates and
the pipeline drops ticks outside the session).
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

__all__ = [
    "MIN_TS_NS",
    "check_non_negative",
    "check_positive",
    "check_timestamps",
    "float_column",
    "int_column",
    "max_ts_ns",
    "read_csv_file",
]

#: 1990-01-01T00:00:00Z in ns since the epoch: no electronic tick data FBE reads is older.
MIN_TS_NS: int = 631_152_000 * 1_000_000_000
_NS_PER_DAY = 86_400 * 1_000_000_000
_NS_PER_UNIT = {"ns": 1, "us": 1_000, "ms": 1_000_000}
_INT64_MAX = np.iinfo(np.int64).max
_INT_RE = re.compile(r"^[+-]?[0-9]{1,20}$")


def max_ts_ns() -> int:
    """Latest acceptable timestamp: now + 1 day, int ns since the epoch UTC.

    Returns
    -------
    int
        ``time.time_ns() + 86_400e9``; one day of slack covers clock skew and vendors that stamp
        a file with the next trading date.
    """
    return time.time_ns() + _NS_PER_DAY


def _first_bad(bad: npt.NDArray[np.bool_]) -> int:
    return int(np.flatnonzero(bad)[0])


def check_timestamps(
    values: npt.NDArray[np.int64], column: str, where: str, unit: str = "ns"
) -> None:
    """Refuse timestamps before 1990-01-01 UTC or after now + 1 day.

    Parameters
    ----------
    values : numpy.ndarray
        int64, shape ``(n,)``, time since the epoch UTC in ``unit``.
    column : str
        Column name used in the message.
    where : str
        The file's name (start of the message).
    unit : {"ns", "us", "ms"}
        Unit of ``values``; checking before a conversion to ns keeps absurd values from
        wrapping around int64.

    Raises
    ------
    ValueError
        ``"<where>: <column> row <i>: timestamp <value> <unit> is outside 1990-01-01 .. now +
        1 day"``.
    """
    per_unit = _NS_PER_UNIT[unit]
    values = np.asarray(values, dtype=np.int64)
    bad = (values < MIN_TS_NS // per_unit) | (values > max_ts_ns() // per_unit)
    if bad.any():
        row = _first_bad(bad)
        raise ValueError(
            f"{where}: {column} row {row}: timestamp {int(values[row])} {unit} is outside "
            f"1990-01-01 .. now + 1 day ({int(bad.sum())} such rows)"
        )


def check_positive(
    values: npt.NDArray[np.float64], column: str, where: str, allow_nan: bool = False
) -> None:
    """Refuse a price that is not finite and > 0.

    Parameters
    ----------
    values : numpy.ndarray
        float64, shape ``(n,)``, prices in the instrument's currency.
    column, where : str
        Column name and file name for the message.
    allow_nan : bool
        Accept NaN as "absent" (e.g. the empty side of a quote).

    Raises
    ------
    ValueError
        ``"<where>: <n> rows with a non-positive <column> or NaN/inf ..."``.
    """
    values = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(values) & (values > 0)
    if allow_nan:
        ok |= np.isnan(values)
    if not ok.all():
        row = _first_bad(~ok)
        raise ValueError(
            f"{where}: {int((~ok).sum())} rows with a non-positive {column} or NaN/inf "
            f"(must be > 0 and finite; first: row {row}, {float(values[row])!r})"
        )


def check_non_negative(
    values: npt.NDArray[np.float64], column: str, where: str, allow_nan: bool = False
) -> None:
    """Refuse a size that is not finite and >= 0.

    Parameters
    ----------
    values : numpy.ndarray
        float64, shape ``(n,)``, sizes in shares, contracts or coins.
    column, where : str
        Column name and file name for the message.
    allow_nan : bool
        Accept NaN as "absent".

    Raises
    ------
    ValueError
        ``"<where>: <n> rows with a negative <column> or NaN/inf ..."``.
    """
    values = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(values) & (values >= 0)
    if allow_nan:
        ok |= np.isnan(values)
    if not ok.all():
        row = _first_bad(~ok)
        raise ValueError(
            f"{where}: {int((~ok).sum())} rows with a negative {column} or NaN/inf "
            f"(must be >= 0 and finite; first: row {row}, {float(values[row])!r})"
        )


def float_column(values: pd.Series, column: str, where: str) -> npt.NDArray[np.float64]:
    """A numeric column as float64, refusing booleans and text that is not a number.

    Parameters
    ----------
    values : pandas.Series
        Column as read (numeric, or text holding numbers).
    column, where : str
        Column name and file name for the message.

    Returns
    -------
    numpy.ndarray
        float64, shape ``(n,)``; empty or ``NaN`` cells stay NaN (the value checks decide).

    Raises
    ------
    ValueError
        Boolean column, or a cell that is neither empty nor a number.
    """
    if pd.api.types.is_bool_dtype(values):
        raise ValueError(f"{where}: column {column!r} is boolean, expected numbers")
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_complex_dtype(values):
        return np.asarray(values.to_numpy(dtype=np.float64, na_value=np.nan), dtype=np.float64)
    try:
        parsed = pd.to_numeric(values, errors="coerce")
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: column {column!r} is not numeric: {exc}") from exc
    not_number = parsed.isna() & values.notna()
    if not_number.any() or not pd.api.types.is_numeric_dtype(parsed):
        row = _first_bad(not_number.to_numpy()) if not_number.any() else 0
        raise ValueError(
            f"{where}: column {column!r} row {row} is not a number: {values.iloc[row]!r:.80}"
        )
    if pd.api.types.is_bool_dtype(parsed):
        raise ValueError(f"{where}: column {column!r} is boolean, expected numbers")
    return np.asarray(parsed.to_numpy(dtype=np.float64, na_value=np.nan), dtype=np.float64)


def int_column(values: pd.Series, column: str, where: str) -> npt.NDArray[np.int64]:
    """An integer column as int64, refusing empty cells, fractions, text and overflow.

    Parameters
    ----------
    values : pandas.Series
        Column as read.
    column, where : str
        Column name and file name for the message.

    Returns
    -------
    numpy.ndarray
        int64, shape ``(n,)``.

    Raises
    ------
    ValueError
        A cell that is empty, not a whole number, or outside the int64 range.
    """
    if pd.api.types.is_bool_dtype(values):
        raise ValueError(f"{where}: column {column!r} is boolean, expected integers")
    if pd.api.types.is_integer_dtype(values) and not values.isna().any():
        arr = values.to_numpy()
        if arr.dtype.kind == "u" and len(arr) and int(arr.max()) > _INT64_MAX:
            raise ValueError(f"{where}: column {column!r} has values beyond the int64 range")
        return arr.astype(np.int64)
    if values.dtype == object:
        # Whole numbers beyond 2**53 must not go through float64: parse them as Python ints.
        out = np.empty(len(values), dtype=np.int64)
        for i, cell in enumerate(values.tolist()):
            if isinstance(cell, int) and not isinstance(cell, bool):
                number: int | None = cell
            else:
                text = str(cell).strip()
                number = int(text) if _INT_RE.match(text) else None
            if number is None or not -_INT64_MAX - 1 <= number <= _INT64_MAX:
                raise ValueError(
                    f"{where}: column {column!r} row {i} is not an integer: {cell!r:.80}"
                )
            out[i] = number
        return out
    floats = float_column(values, column, where)
    bad = ~np.isfinite(floats) | (floats != np.floor(floats)) | (np.abs(floats) >= 2.0**63)
    if bad.any():
        row = _first_bad(bad)
        raise ValueError(
            f"{where}: column {column!r} row {row} is not an integer: {values.iloc[row]!r:.80}"
        )
    return floats.astype(np.int64)


def read_csv_file(path: Path, **kwargs: Any) -> pd.DataFrame:
    """``pandas.read_csv`` with every parse failure turned into a ValueError naming the file.

    Parameters
    ----------
    path : Path
        An existing UTF-8 CSV file with a header line.
    **kwargs
        Passed to :func:`pandas.read_csv`.

    Returns
    -------
    pandas.DataFrame
        The parsed file (possibly with zero rows: the caller decides whether that is an error).

    Raises
    ------
    ValueError
        ``"<name>: no rows (empty file)"`` for a file without any line, ``"<name>: not UTF-8
        text ..."`` for another encoding, ``"<name>: malformed CSV ..."`` otherwise.
    """
    name = path.name
    try:
        return pd.read_csv(path, **kwargs)
    except pd.errors.EmptyDataError as exc:
        raise ValueError(f"{name}: no rows (empty file, not even a header)") from exc
    except UnicodeError as exc:
        raise ValueError(f"{name}: not UTF-8 text: {exc}") from exc
    except (ValueError, pd.errors.ParserError, OverflowError, TypeError) as exc:
        raise ValueError(f"{name}: malformed CSV: {exc}") from exc
