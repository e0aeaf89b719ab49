"""Readers for Tardis.dev CSV exports (trades and top-of-book quotes).

Tardis timestamps are µs since the Unix epoch, UTC: ``timestamp`` is the exchange's and
``local_timestamp`` Tardis' receive time, so ``local_timestamp - timestamp`` is a real receive
delay (clock drift plus network latency). Reference: Tardis.dev "CSV data types" documentation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd

from fbe_pipeline.market.frames import QUOTE_COLUMNS, TICK_COLUMNS
from fbe_pipeline.market.sources.checks import (
    check_non_negative,
    check_positive,
    check_timestamps,
    float_column,
    int_column,
    read_csv_file,
)

_NS_PER_US = 1000

_TRADE_HEADER = [
    "exchange",
    "symbol",
    "timestamp",
    "local_timestamp",
    "id",
    "side",
    "price",
    "amount",
]
_QUOTE_HEADER = [
    "exchange",
    "symbol",
    "timestamp",
    "local_timestamp",
    "ask_amount",
    "ask_price",
    "bid_price",
    "bid_amount",
]


def _read(path: Path | str, header: list[str]) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Tardis file not found: {path}")
    frame = read_csv_file(path, dtype={c: str for c in ("exchange", "symbol", "side")})
    missing = [c for c in header if c not in frame.columns]
    if missing:
        raise ValueError(f"{path.name}: not a Tardis file of this type, missing columns {missing}")
    return frame


def _us_to_ns(raw: pd.DataFrame, column: str, name: str) -> npt.NDArray[np.int64]:
    # Check the range in µs, before the multiplication could wrap around int64.
    us = int_column(raw[column], column, name)
    check_timestamps(us, column, name, unit="us")
    return us * _NS_PER_US


def _text(raw: pd.DataFrame, column: str) -> npt.NDArray[np.object_]:
    # via object: a categorical column (Parquet dictionary) cannot take a new "" category
    values = raw[column].astype(object)
    return np.asarray(values.where(values.notna(), "").astype(str).to_numpy(), dtype=object)


def read_tardis_trades(path: Path | str, symbol: str) -> pd.DataFrame:
    """Read a Tardis ``trades`` CSV into raw ticks.

    Parameters
    ----------
    path : Path or str
        CSV with header ``exchange,symbol,timestamp,local_timestamp,id,side,price,amount``.
    symbol : str
        FBE symbol written to the ``symbol`` column.

    Returns
    -------
    pandas.DataFrame
        :data:`~fbe_pipeline.market.frames.TICK_COLUMNS`, one row per trade, ordered by
        ``(ts_event, seq)``; ``ts_event``/``ts_recv`` in ns UTC, ``side`` the taker side
        (``unknown`` where Tardis gives none), ``seq`` the exchange trade id.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        Message starting with the file's name: empty or not UTF-8 or malformed CSV, missing
        columns, a price not finite and > 0, a size not finite and >= 0, a timestamp or id
        that is not an integer, or a timestamp before 1990 or after now + 1 day. A header
        without rows gives an empty frame (:func:`fbe_pipeline.market.ingest.load_file` refuses it).
    """
    raw = _read(path, _TRADE_HEADER)
    name = Path(path).name
    side = raw["side"].astype(str).str.lower()
    side = side.where(side.isin(["buy", "sell"]), "unknown")
    price = float_column(raw["price"], "price", name)
    size = float_column(raw["amount"], "amount", name)
    check_positive(price, "price", name)
    check_non_negative(size, "amount", name)
    frame = pd.DataFrame(
        {
            "symbol": symbol,
            "ts_event": _us_to_ns(raw, "timestamp", name),
            "ts_recv": pd.array(_us_to_ns(raw, "local_timestamp", name), dtype="Int64"),
            "price": price,
            "size": size,
            "side": side.to_numpy(dtype=object),
            "source": "tardis",
            "seq": int_column(raw["id"], "id", name),
            "exchange": _text(raw, "exchange"),
            "condition": "",
            "ohlc_eligible": True,
            "volume_eligible": True,
        },
        columns=list(TICK_COLUMNS),
    )
    return frame.sort_values(["ts_event", "seq"], kind="stable").reset_index(drop=True)


def read_tardis_quotes(path: Path | str, symbol: str) -> pd.DataFrame:
    """Read a Tardis ``quotes`` (top of book) CSV into L1 quotes.

    Parameters
    ----------
    path : Path or str
        CSV with header ``exchange,symbol,timestamp,local_timestamp,ask_amount,ask_price,
        bid_price,bid_amount``.
    symbol : str
        FBE symbol written to the ``symbol`` column.

    Returns
    -------
    pandas.DataFrame
        :data:`~fbe_pipeline.market.frames.QUOTE_COLUMNS`, ordered by ``ts_event``; ``seq`` is the
        row
        number in the file; prices float64 in quote currency, amounts float64 in base units,
        both NaN for a side left empty in the file.

    Raises
    ------
    FileNotFoundError, ValueError
        As :func:`read_tardis_trades`; also a side with only one of price and amount.
    """
    raw = _read(path, _QUOTE_HEADER)
    name = Path(path).name
    sides: dict[str, tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]] = {}
    for side in ("bid", "ask"):
        px = float_column(raw[f"{side}_price"], f"{side}_price", name)
        sz = float_column(raw[f"{side}_amount"], f"{side}_amount", name)
        # An empty cell (NaN) is a side without a quote; a present value must be valid.
        check_positive(px, f"{side}_price", name, allow_nan=True)
        check_non_negative(sz, f"{side}_amount", name, allow_nan=True)
        half = np.isnan(px) != np.isnan(sz)
        if half.any():
            row = int(np.flatnonzero(half)[0])
            raise ValueError(
                f"{name}: row {row}: {side}_price and {side}_amount must both be given or both "
                f"be empty"
            )
        sides[side] = (px, sz)
    frame = pd.DataFrame(
        {
            "symbol": symbol,
            "ts_event": _us_to_ns(raw, "timestamp", name),
            "ts_recv": pd.array(_us_to_ns(raw, "local_timestamp", name), dtype="Int64"),
            "bid_px": sides["bid"][0],
            "bid_sz": sides["bid"][1],
            "ask_px": sides["ask"][0],
            "ask_sz": sides["ask"][1],
            "source": "tardis",
            "seq": np.arange(len(raw), dtype=np.int64),
            "exchange": _text(raw, "exchange"),
        },
        columns=list(QUOTE_COLUMNS),
    )
    return frame.sort_values(["ts_event", "seq"], kind="stable").reset_index(drop=True)
