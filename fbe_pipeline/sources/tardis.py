"""Readers for Tardis.dev CSV exports (trades and top-of-book quotes).

Tardis timestamps are µs since the Unix epoch, UTC: ``timestamp`` is the exchange's and
``local_timestamp`` Tardis' receive time, so ``local_timestamp - timestamp`` is a real receive
delay (clock drift plus network latency). Reference: Tardis.dev "CSV data types" documentation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from fbe_pipeline.frames import QUOTE_COLUMNS, TICK_COLUMNS

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
    frame = pd.read_csv(path)
    missing = [c for c in header if c not in frame.columns]
    if missing:
        raise ValueError(f"{path.name}: not a Tardis file of this type, missing columns {missing}")
    return frame


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
        :data:`~fbe_pipeline.frames.TICK_COLUMNS`, one row per trade, ordered by
        ``(ts_event, seq)``; ``ts_event``/``ts_recv`` in ns UTC, ``side`` the taker side
        (``unknown`` where Tardis gives none), ``seq`` the exchange trade id.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If columns are missing, or a price is not finite and > 0, or a size is negative.
    """
    raw = _read(path, _TRADE_HEADER)
    side = raw["side"].astype(str).str.lower()
    side = side.where(side.isin(["buy", "sell"]), "unknown")
    frame = pd.DataFrame(
        {
            "symbol": symbol,
            "ts_event": raw["timestamp"].astype(np.int64) * 1000,
            "ts_recv": (raw["local_timestamp"].astype(np.int64) * 1000).astype("Int64"),
            "price": raw["price"].astype(np.float64),
            "size": raw["amount"].astype(np.float64),
            "side": side,
            "source": "tardis",
            "seq": raw["id"].astype(np.int64),
            "exchange": raw["exchange"].astype(str),
            "condition": "",
            "ohlc_eligible": True,
            "volume_eligible": True,
        },
        columns=list(TICK_COLUMNS),
    )
    _validate_prices(frame["price"].to_numpy(), frame["size"].to_numpy(), Path(path).name)
    return frame.sort_values(["ts_event", "seq"], kind="stable").reset_index(drop=True)


def read_tardis_quotes(path: Path | str, symbol: str) -> pd.DataFrame:
    """Read a Tardis ``quotes`` (top of book) CSV into L1 quotes.

    Returns
    -------
    pandas.DataFrame
        :data:`~fbe_pipeline.frames.QUOTE_COLUMNS`, ordered by ``ts_event``; ``seq`` is the row
        number in the file.

    Raises
    ------
    FileNotFoundError, ValueError
        As :func:`read_tardis_trades`.
    """
    raw = _read(path, _QUOTE_HEADER)
    frame = pd.DataFrame(
        {
            "symbol": symbol,
            "ts_event": raw["timestamp"].astype(np.int64) * 1000,
            "ts_recv": (raw["local_timestamp"].astype(np.int64) * 1000).astype("Int64"),
            "bid_px": raw["bid_price"].astype(np.float64),
            "bid_sz": raw["bid_amount"].astype(np.float64),
            "ask_px": raw["ask_price"].astype(np.float64),
            "ask_sz": raw["ask_amount"].astype(np.float64),
            "source": "tardis",
            "seq": np.arange(len(raw), dtype=np.int64),
            "exchange": raw["exchange"].astype(str),
        },
        columns=list(QUOTE_COLUMNS),
    )
    return frame.sort_values(["ts_event", "seq"], kind="stable").reset_index(drop=True)


def _validate_prices(price: np.ndarray, size: np.ndarray, name: str) -> None:
    bad = ~(np.isfinite(price) & (price > 0))
    if bad.any():
        raise ValueError(f"{name}: {int(bad.sum())} rows with a non-finite or non-positive price")
    if (size < 0).any() or not np.isfinite(size).all():
        raise ValueError(f"{name}: rows with a negative or non-finite size")
