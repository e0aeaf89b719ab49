"""Deterministic synthetic market data for the scale benchmarks: trades of any number of XNYS
sessions of made-up instruments, written as the generic Parquet trades layout that ``fbe load
parquet`` reads (one file per instrument and session).

The price follows a random walk with a U-shaped intraday activity profile (busy open and close,
quiet midday), trades arrive as a Poisson process with that profile, sizes are log-normal in
whole shares, prices sit on a 0.01 tick, and each trade's aggressor side follows its price
move. Every session is seeded from ``(symbol, date)``, so the same arguments always give the
same bytes, whatever else is generated.

Usage (from the repository root, with the project's virtualenv)::

    python benchmarks/generate.py OUT_DIR [--symbols SYN1,SYN2] [--sessions 100]
        [--first 2024-01-02] [--ticks 20000]

then ``fbe load parquet OUT_DIR/SYN1/*.parquet --symbol SYN1 --calendar XNYS`` (the symbols are
registered on XNYS with a 0.01 tick and 1-share lots).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

TICK = 0.01


def _rng(symbol: str, day: date) -> np.random.Generator:
    seed = int.from_bytes(hashlib.sha256(f"{symbol} {day}".encode()).digest()[:8], "big")
    return np.random.default_rng(seed)


def session_trades(
    symbol: str, day: date, open_ns: int, close_ns: int, ticks: int, start_price: float
) -> pd.DataFrame:
    """One session of synthetic trades.

    Parameters
    ----------
    open_ns, close_ns : int
        Session bounds, ns since the epoch UTC.
    ticks : int
        Expected number of trades (the actual count is Poisson around it).
    start_price : float
        Opening price, quote currency.

    Returns
    -------
    pandas.DataFrame
        Columns ``timestamp`` (``datetime64[ns, UTC]``), ``price`` (float64, on the 0.01
        tick), ``size`` (float64, whole shares >= 1), ``side`` (``buy``/``sell``), in time
        order.
    """
    rng = _rng(symbol, day)
    minutes = (close_ns - open_ns) // 60_000_000_000
    # U-shaped activity: twice as busy at the open and close as at midday.
    x = np.linspace(-1.0, 1.0, minutes)
    weight = 1.0 + x**2
    per_minute = rng.poisson(ticks * weight / weight.sum())
    n = int(per_minute.sum())
    minute = np.repeat(np.arange(minutes), per_minute)
    offset = np.sort(rng.integers(0, 60_000_000_000, n))
    ts = open_ns + minute.astype(np.int64) * 60_000_000_000 + offset
    ts.sort()
    # Per-trade volatility scaled so that a session moves about 1 % (sd), more when busy.
    steps = rng.standard_normal(n) * start_price * 0.01 / np.sqrt(max(n, 1))
    price = np.maximum(np.round((start_price + np.cumsum(steps)) / TICK) * TICK, TICK)
    move = np.diff(price, prepend=price[0])
    side = np.where(move > 0, "buy", np.where(move < 0, "sell", rng.choice(["buy", "sell"], n)))
    size = np.maximum(np.round(rng.lognormal(4.0, 1.0, n)), 1.0)
    return pd.DataFrame(
        {
            "timestamp": pd.to_datetime(ts, utc=True),
            "price": price.astype(np.float64),
            "size": size.astype(np.float64),
            "side": side,
        }
    )


def generate(out: Path, symbols: list[str], sessions: int, first: date, ticks: int) -> int:
    """Write ``sessions`` XNYS sessions from ``first`` of each symbol under ``out/<SYMBOL>/``;
    returns the number of files written. Each session opens at the previous one's last
    price."""
    from fbe_pipeline.market.instruments import Instrument
    from fbe_pipeline.market.sessions import session_table

    written = 0
    for symbol in symbols:
        instrument = Instrument(
            symbol=symbol, calendar="XNYS", tz="America/New_York", tick_size=TICK
        )
        table = session_table(instrument, first, first + timedelta(days=sessions * 2 + 10))
        price = 100.0
        (out / symbol).mkdir(parents=True, exist_ok=True)
        for row in table.head(sessions).itertuples(index=False):
            day = row.trading_date.date()
            frame = session_trades(symbol, day, int(row.open_ns), int(row.close_ns), ticks, price)
            price = float(frame["price"].iloc[-1]) if len(frame) else price
            frame.to_parquet(out / symbol / f"{day:%Y%m%d}.parquet", index=False)
            written += 1
    return written


def main() -> int:
    """Parse the arguments and generate; exit status 0."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--symbols", default="SYN1,SYN2")
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--first", type=date.fromisoformat, default=date(2024, 1, 2))
    parser.add_argument("--ticks", type=int, default=20_000, help="expected trades per session")
    args = parser.parse_args()
    count = generate(args.out, args.symbols.split(","), args.sessions, args.first, args.ticks)
    print(f"wrote {count} session files under {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
