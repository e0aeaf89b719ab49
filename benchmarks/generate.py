"""Deterministic synthetic market data for the scale benchmarks: trades of any number of XNYS
sessions of made-up instruments, written as the generic Parquet trades layout that ``fbe load
parquet`` reads (one file per instrument and session), or vendor 1-minute candles of any number
of sessions on XNYS or XBOM (NSE-like: Asia/Kolkata, 09:15-15:30), written as the CSV layout
``fbe load bars-csv`` reads (one file per instrument and session).

Trades: the price follows a random walk with a U-shaped intraday activity profile (busy open
and close, quiet midday), trades arrive as a Poisson process with that profile, sizes are
log-normal in whole shares, prices sit on a 0.01 tick, and each trade's aggressor side follows
its price move.

Candles: a random walk of one step a minute whose volatility follows the same U-shaped profile
(sd about 1 % a session), each minute opening at the previous close, its high and low beyond
the body by a further half-normal excursion of half a step's sd (rounded outwards); volumes are
whole units, U-shaped with log-normal noise. Prices are whole ticks of the calendar's
instrument (:data:`CANDLE_MARKETS`: 0.01 on XNYS, 0.05 on XBOM), written with the tick's
decimals. Each file has ``date`` (``YYYYMMDD``), ``time`` (``HH:MM``, naive exchange-local
time, the bar's open), ``open``, ``high``, ``low``, ``close`` and ``volume`` columns, one row
per session minute.

Every session is seeded from ``(symbol, date)`` and opens at the previous session's last price,
so the same arguments always give the same bytes, whatever else is generated.

Usage (from the repository root, with the project's virtualenv)::

    python benchmarks/generate.py OUT_DIR [--kind trades] [--symbols SYN1,SYN2]
        [--sessions 100] [--first 2024-01-02] [--ticks 20000]
    python benchmarks/generate.py OUT_DIR --kind candles [--calendar XBOM]
        [--symbols NSE1,NSE2] [--sessions 250] [--first 2024-01-02]

then ``fbe load parquet OUT_DIR/SYN1/*.parquet --symbol SYN1 --calendar XNYS --tick-size 0.01
--lot-size 1`` (trades), or ``fbe load bars-csv OUT_DIR/NSE1/*.csv --symbol NSE1 --calendar XBOM
--tick-size 0.05 --lot-size 1`` (candles; candles carry no trade sizes, so a new symbol needs
``--lot-size``). Exit status 0.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

TICK = 0.01


@dataclass(frozen=True)
class CandleMarket:
    """How candles of one exchange calendar look: the zone of the ``date``/``time`` columns,
    the price tick (quote currency), the first session's opening price and the mean volume of
    a minute (whole units)."""

    tz: str
    tick: float
    price: float
    volume: float


CANDLE_MARKETS: dict[str, CandleMarket] = {
    "XNYS": CandleMarket("America/New_York", 0.01, 100.0, 20_000.0),
    # NSE index futures (NIFTY-like): 0.05 tick, 09:15-15:30 IST on the XBOM calendar.
    "XBOM": CandleMarket("Asia/Kolkata", 0.05, 22_000.0, 5_000.0),
}


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


def session_candles(
    symbol: str,
    day: date,
    open_ns: int,
    close_ns: int,
    market: CandleMarket,
    start_price: float,
) -> pd.DataFrame:
    """One session of synthetic vendor 1-minute candles.

    Parameters
    ----------
    open_ns, close_ns : int
        Session bounds, ns since the epoch UTC, whole minutes apart.
    market : CandleMarket
        Zone of the written times, price tick and typical volume.
    start_price : float
        Opening price of the first minute, quote currency (moved onto the tick).

    Returns
    -------
    pandas.DataFrame
        One row per session minute, in time order: ``date`` (int64 ``YYYYMMDD``) and ``time``
        (str ``HH:MM``) of the minute's open in ``market.tz`` wall-clock time, ``open``,
        ``high``, ``low``, ``close`` (float64, whole ticks, ``low <= open, close <= high``,
        each minute opening at the previous close) and ``volume`` (int64, >= 1).
    """
    rng = _rng(symbol, day)
    minutes = (close_ns - open_ns) // 60_000_000_000
    x = np.linspace(-1.0, 1.0, minutes)
    weight = 1.0 + x**2
    # Per-minute sd in ticks: about 1 % a session in all, more when busy (variance ~ activity).
    sd = start_price * 0.01 * np.sqrt(weight / weight.sum()) / market.tick
    first = max(round(start_price / market.tick), 1)
    close = np.maximum(first + np.cumsum(np.round(rng.standard_normal(minutes) * sd)), 1)
    open_ = np.concatenate([[first], close[:-1]])
    up = np.ceil(np.abs(rng.standard_normal(minutes)) * sd / 2)
    down = np.ceil(np.abs(rng.standard_normal(minutes)) * sd / 2)
    high = np.maximum(open_, close) + up
    low = np.maximum(np.minimum(open_, close) - down, 1)
    volume = np.maximum(
        np.round(market.volume * weight / weight.mean() * rng.lognormal(-0.125, 0.5, minutes)), 1
    )
    local = pd.to_datetime(
        open_ns + np.arange(minutes, dtype=np.int64) * 60_000_000_000, utc=True
    ).tz_convert(market.tz)
    decimals = _decimals(market.tick)
    return pd.DataFrame(
        {
            "date": np.asarray(local.strftime("%Y%m%d"), dtype=np.int64),
            "time": np.asarray(local.strftime("%H:%M"), dtype=object),
            **{
                name: np.round(ticks * market.tick, decimals)
                for name, ticks in (("open", open_), ("high", high), ("low", low), ("close", close))
            },
            "volume": volume.astype(np.int64),
        }
    )


def _decimals(tick: float) -> int:
    """Decimal places that write every multiple of ``tick`` exactly (0.05 -> 2)."""
    for places in range(10):
        if abs(round(tick, places) - tick) < 1e-12:
            return places
    return 10


def generate_candles(
    out: Path, symbols: list[str], sessions: int, first: date, calendar: str = "XNYS"
) -> int:
    """Write ``sessions`` sessions of ``calendar`` from ``first`` of each symbol as vendor
    candle CSV files ``out/<SYMBOL>/<YYYYMMDD>.csv``; returns the number of files written.
    Each session opens at the previous one's last close.

    Raises
    ------
    ValueError
        If ``calendar`` is not one of :data:`CANDLE_MARKETS`.
    """
    from fbe_pipeline.market.instruments import Instrument
    from fbe_pipeline.market.sessions import session_table

    if calendar not in CANDLE_MARKETS:
        raise ValueError(f"no candle market for {calendar!r}; one of {sorted(CANDLE_MARKETS)}")
    market = CANDLE_MARKETS[calendar]
    decimals = _decimals(market.tick)
    written = 0
    for symbol in symbols:
        instrument = Instrument(
            symbol=symbol, calendar=calendar, tz=market.tz, tick_size=market.tick
        )
        table = session_table(instrument, first, first + timedelta(days=sessions * 2 + 10))
        price = market.price
        (out / symbol).mkdir(parents=True, exist_ok=True)
        for row in table.head(sessions).itertuples(index=False):
            day = row.trading_date.date()
            frame = session_candles(symbol, day, int(row.open_ns), int(row.close_ns), market, price)
            price = float(frame["close"].iloc[-1])
            frame.to_csv(
                out / symbol / f"{day:%Y%m%d}.csv",
                index=False,
                float_format=f"%.{decimals}f",
                lineterminator="\n",
            )
            written += 1
    return written


def main() -> int:
    """Parse the arguments and generate; exit status 0."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("out", type=Path)
    parser.add_argument(
        "--kind",
        choices=("trades", "candles"),
        default="trades",
        help="Parquet trades (XNYS) or CSV 1-minute candles (default trades)",
    )
    parser.add_argument("--symbols", default="SYN1,SYN2")
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--first", type=date.fromisoformat, default=date(2024, 1, 2))
    parser.add_argument("--ticks", type=int, default=20_000, help="expected trades per session")
    parser.add_argument(
        "--calendar",
        choices=sorted(CANDLE_MARKETS),
        default="XNYS",
        help="candles: exchange calendar of the symbols (default XNYS)",
    )
    args = parser.parse_args()
    symbols = args.symbols.split(",")
    if args.kind == "candles":
        count = generate_candles(args.out, symbols, args.sessions, args.first, args.calendar)
    else:
        count = generate(args.out, symbols, args.sessions, args.first, args.ticks)
    print(f"wrote {count} session files under {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
