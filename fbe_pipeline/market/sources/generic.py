"""Reader for generic historical trade files (CSV or Parquet) in FBE's own simple layout.

Required columns: ``timestamp`` (ISO-8601 with zone, or integer ns since the epoch UTC),
``price`` and ``size``. Optional: ``side`` (buy/sell/unknown), ``ts_recv`` (same forms as
``timestamp``), ``seq`` (integer; row number when absent), ``exchange``, ``condition``
(empty cells read as ``""``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd

from fbe_pipeline.market.frames import TICK_COLUMNS
from fbe_pipeline.market.sources.checks import (
    check_non_negative,
    check_positive,
    check_timestamps,
    float_column,
    int_column,
    read_csv_file,
)


def _to_ns(values: pd.Series, column: str, name: str) -> npt.NDArray[np.int64]:
    if pd.api.types.is_bool_dtype(values):
        raise ValueError(f"{name}: column {column!r} is boolean, expected timestamps")
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        if values.isna().any():
            n_empty = int(values.isna().sum())
            raise ValueError(f"{name}: column {column!r} has {n_empty} empty values")
        try:
            # Parquet may store µs or ms: a far date fits there but not in int64 ns.
            ns = np.asarray(pd.DatetimeIndex(values).as_unit("ns").asi8, dtype=np.int64)
        except (ValueError, OverflowError) as exc:
            raise ValueError(f"{name}: column {column!r} has absurd timestamps: {exc}") from exc
    elif pd.api.types.is_datetime64_dtype(values):
        raise ValueError(
            f"{name}: column {column!r} holds timestamps without a zone; store them in UTC"
        )
    elif pd.api.types.is_numeric_dtype(values):
        ns = int_column(values, column, name)
    else:
        ns = _iso_to_ns(values, column, name)
    check_timestamps(ns, column, name)
    return ns


def _iso_to_ns(values: pd.Series, column: str, name: str) -> npt.NDArray[np.int64]:
    try:
        parsed = pd.to_datetime(values, utc=True, format="ISO8601")
        # A zone-less time would silently be taken as UTC; a file in exchange-local time would
        # then land on wrong times and partitions, so every value must carry its offset.
        zoned = values.astype(str).str.contains(r"(?:Z|[+-]\d{2}:?\d{2})$", regex=True)
    except (ValueError, TypeError, OverflowError) as exc:
        raise ValueError(
            f"{name}: column {column!r} is not ISO-8601 with zone or int ns: {exc}"
        ) from exc
    if not zoned.all():
        first = values[~zoned].iloc[0]
        raise ValueError(
            f"{name}: column {column!r} has {int((~zoned).sum())} timestamps without a zone "
            f"(first: {first!r:.80}); add 'Z' or an offset such as '-04:00'"
        )
    if parsed.isna().any():
        raise ValueError(f"{name}: column {column!r} has {int(parsed.isna().sum())} empty values")
    return np.asarray(pd.DatetimeIndex(parsed).as_unit("ns").asi8, dtype=np.int64)


def _read_parquet(path: Path) -> pd.DataFrame:
    import pyarrow as pa

    try:
        return pd.read_parquet(path)
    except (
        pa.ArrowException,
        OSError,
        ValueError,
        TypeError,
        KeyError,
        IndexError,
        NotImplementedError,
        EOFError,
    ) as exc:
        raise ValueError(f"{path.name}: not a readable Parquet file: {exc}") from exc


def _text_column(raw: pd.DataFrame, column: str) -> npt.NDArray[np.object_] | str:
    if column not in raw:
        return ""
    # via object: a categorical column (Parquet dictionary) cannot take a new "" category
    values = raw[column].astype(object)
    return np.asarray(values.where(values.notna(), "").astype(str).to_numpy(), dtype=object)


def read_generic_trades(path: Path | str, symbol: str, fmt: str) -> pd.DataFrame:
    """Read a generic trades file into raw ticks.

    Parameters
    ----------
    path : Path or str
        The file.
    symbol : str
        FBE symbol written to the ``symbol`` column.
    fmt : {"csv", "parquet"}
        File format.

    Returns
    -------
    pandas.DataFrame
        :data:`~fbe_pipeline.market.frames.TICK_COLUMNS` ordered by ``(ts_event, seq)``; ``source``
        is
        ``fmt``; every print is OHLC- and volume-eligible.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        Message starting with the file's name: unreadable file (not UTF-8, malformed CSV,
        corrupt Parquet), missing or duplicated columns, unparsable, zone-less or absurd
        timestamps (before 1990 or after now + 1 day), a price not finite and > 0, a size not
        finite and >= 0, a non-integer ``seq``, or an unknown side. A file without rows is
        returned as an empty frame; :func:`fbe_pipeline.market.ingest.load_file` refuses it.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"trades file not found: {path}")
    name = path.name
    if fmt == "csv":
        # Text columns stay verbatim: a condition such as "0020" must not become the number 20.
        raw = read_csv_file(path, dtype={c: str for c in ("side", "exchange", "condition")})
    elif fmt == "parquet":
        raw = _read_parquet(path)
    else:
        raise ValueError(f"unknown generic format {fmt!r}; use csv or parquet")
    columns = [str(c) for c in raw.columns]
    duplicated = sorted({c for c in columns if columns.count(c) > 1})
    if duplicated:
        raise ValueError(f"{name}: duplicated columns {duplicated}")
    raw.columns = pd.Index(columns)
    missing = [c for c in ("timestamp", "price", "size") if c not in raw.columns]
    if missing:
        raise ValueError(f"{name}: missing required columns {missing}")
    side = (
        pd.Series(_text_column(raw, "side"), index=raw.index).str.lower()
        if "side" in raw
        else pd.Series("unknown", raw.index)
    )
    bad_side = ~side.isin(["buy", "sell", "unknown"])
    if bad_side.any():
        shown = [f"{v:.40}" for v in sorted(side[bad_side].unique())[:5]]
        raise ValueError(f"{name}: unknown side values {shown}")
    ts_recv = (
        pd.array(_to_ns(raw["ts_recv"], "ts_recv", name), dtype="Int64")
        if "ts_recv" in raw
        else pd.array([pd.NA] * len(raw), dtype="Int64")
    )
    price = float_column(raw["price"], "price", name)
    size = float_column(raw["size"], "size", name)
    check_positive(price, "price", name)
    check_non_negative(size, "size", name)
    frame = pd.DataFrame(
        {
            "symbol": symbol,
            "ts_event": _to_ns(raw["timestamp"], "timestamp", name),
            "ts_recv": ts_recv,
            "price": price,
            "size": size,
            "side": side.to_numpy(),
            "source": fmt,
            "seq": (
                int_column(raw["seq"], "seq", name)
                if "seq" in raw
                else np.arange(len(raw), dtype=np.int64)
            ),
            "exchange": _text_column(raw, "exchange"),
            "condition": _text_column(raw, "condition"),
            "ohlc_eligible": True,
            "volume_eligible": True,
        },
        columns=list(TICK_COLUMNS),
    )
    return frame.sort_values(["ts_event", "seq"], kind="stable").reset_index(drop=True)
