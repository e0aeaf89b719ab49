"""Reader for generic historical trade files (CSV or Parquet) in FBE's own simple layout.

Required columns: ``timestamp`` (ISO-8601 with zone, or integer ns since the epoch UTC),
``price`` and ``size``. Optional: ``side`` (buy/sell/unknown), ``ts_recv`` (same forms as
``timestamp``), ``seq`` (integer; row number when absent), ``exchange``, ``condition``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from fbe_pipeline.frames import TICK_COLUMNS
from fbe_pipeline.sources.tardis import _validate_prices


def _to_ns(values: pd.Series, column: str, name: str) -> np.ndarray:
    if pd.api.types.is_integer_dtype(values):
        return values.to_numpy(dtype=np.int64)
    try:
        parsed = pd.to_datetime(values, utc=True, format="ISO8601")
        # A zone-less time would silently be taken as UTC; a file in exchange-local time would
        # then land on wrong times and partitions, so every value must carry its offset.
        zoned = values.astype(str).str.contains(r"(?:Z|[+-]\d{2}:?\d{2})$", regex=True)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{name}: column {column!r} is not ISO-8601 with zone or int ns") from exc
    if not zoned.all():
        first = values[~zoned].iloc[0]
        raise ValueError(
            f"{name}: column {column!r} has {int((~zoned).sum())} timestamps without a zone "
            f"(first: {first!r}); add 'Z' or an offset such as '-04:00'"
        )
    if parsed.isna().any():
        raise ValueError(f"{name}: column {column!r} has {int(parsed.isna().sum())} empty values")
    return pd.DatetimeIndex(parsed).as_unit("ns").asi8


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
        :data:`~fbe_pipeline.frames.TICK_COLUMNS` ordered by ``(ts_event, seq)``; ``source`` is
        ``fmt``; every print is OHLC- and volume-eligible.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        On missing columns, unparsable timestamps, bad prices or sizes, or an unknown side.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"trades file not found: {path}")
    if fmt == "csv":
        raw = pd.read_csv(path)
    elif fmt == "parquet":
        raw = pd.read_parquet(path)
    else:
        raise ValueError(f"unknown generic format {fmt!r}; use csv or parquet")
    missing = [c for c in ("timestamp", "price", "size") if c not in raw.columns]
    if missing:
        raise ValueError(f"{path.name}: missing required columns {missing}")
    side = raw["side"].astype(str).str.lower() if "side" in raw else pd.Series("unknown", raw.index)
    bad_side = ~side.isin(["buy", "sell", "unknown"])
    if bad_side.any():
        raise ValueError(f"{path.name}: unknown side values {sorted(side[bad_side].unique())[:5]}")
    ts_recv = (
        pd.array(_to_ns(raw["ts_recv"], "ts_recv", path.name), dtype="Int64")
        if "ts_recv" in raw
        else pd.array([pd.NA] * len(raw), dtype="Int64")
    )
    frame = pd.DataFrame(
        {
            "symbol": symbol,
            "ts_event": _to_ns(raw["timestamp"], "timestamp", path.name),
            "ts_recv": ts_recv,
            "price": pd.to_numeric(raw["price"], errors="coerce").astype(np.float64),
            "size": pd.to_numeric(raw["size"], errors="coerce").astype(np.float64),
            "side": side.to_numpy(),
            "source": fmt,
            "seq": raw["seq"].astype(np.int64) if "seq" in raw else np.arange(len(raw)),
            "exchange": raw["exchange"].astype(str) if "exchange" in raw else "",
            "condition": raw["condition"].astype(str) if "condition" in raw else "",
            "ohlc_eligible": True,
            "volume_eligible": True,
        },
        columns=list(TICK_COLUMNS),
    )
    _validate_prices(frame["price"].to_numpy(), frame["size"].to_numpy(), path.name)
    return frame.sort_values(["ts_event", "seq"], kind="stable").reset_index(drop=True)
