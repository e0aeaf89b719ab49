"""Read-only queries over the DuckDB analytical store (``$FBE_HOME/fbe.duckdb``)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path

import duckdb
import pandas as pd

from fbe_pipeline.settings import paths

# DuckDB admits one writer process per file; concurrent runs wait for the lock this long.
LOCK_TIMEOUT_S = 300.0

_SUMMARY_SQL = """
with t as (select symbol, trading_date, count(*) n from raw_ticks group by all),
     b as (select symbol, trading_date, count(*) n from bars_1m group by all),
     f as (select symbol, trading_date, count(*) n, count(*) filter (poke <> 'none') pokes
           from features group by all),
     s as (select symbol, trading_date, count(*) n from signals group by all),
     x as (select symbol, trading_date, count(*) n, sum(pnl) pnl, sum(r_multiple) r,
                  sum(return_bps) bps from backtest_trades group by all)
select b.symbol, strftime(b.trading_date, '%Y-%m-%d') as day,
       coalesce(t.n, 0), b.n, coalesce(f.n, 0), coalesce(f.pokes, 0), coalesce(s.n, 0),
       coalesce(x.n, 0), coalesce(x.pnl, 0.0), coalesce(x.r, 0.0), coalesce(x.bps, 0.0)
from b
left join t using (symbol, trading_date)
left join f using (symbol, trading_date)
left join s using (symbol, trading_date)
left join x using (symbol, trading_date)
order by b.symbol, day
"""


@contextmanager
def connect(
    database: str, read_only: bool = False, timeout_s: float = LOCK_TIMEOUT_S
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection to ``database``, waiting (with backoff) while another process holds
    DuckDB's file lock (one writer process per file; readers wait for it too).

    Raises
    ------
    duckdb.IOException
        If the lock is still held after ``timeout_s`` seconds, or on any other I/O error.
    """
    if not read_only:
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout_s
    delay = 0.05
    while True:
        try:
            con = duckdb.connect(database, read_only=read_only)
            break
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
    try:
        yield con
    finally:
        con.close()


def table_names(db: Path | None = None) -> set[str]:
    """Names of the tables in the DuckDB file (empty set when the file does not exist)."""
    db = db or paths().duckdb
    if not db.exists():
        return set()
    with connect(str(db), read_only=True) as con:
        return {
            r[0] for r in con.execute("select table_name from information_schema.tables").fetchall()
        }


def partition_summary(db: Path | None = None) -> list[dict[str, object]]:
    """Per symbol and trading day: ``ticks``, ``bars``, ``features`` (feature rows), ``pokes``
    (bars poking out of their range), ``signals``, ``trades``, ``pnl`` (sum of backtest
    trade PnL, price currency per unit), ``pnl_r`` (sum of R multiples) and ``pnl_bps`` (sum
    of trade returns, bps of entry). Empty before the first run."""
    db = db or paths().duckdb
    needed = {"raw_ticks", "bars_1m", "features", "signals", "backtest_trades"}
    if not needed <= table_names(db):
        return []
    with connect(str(db), read_only=True) as con:
        rows = con.execute(_SUMMARY_SQL).fetchall()
    return [
        {
            "symbol": r[0],
            "date": r[1],
            "ticks": r[2],
            "bars": r[3],
            "features": r[4],
            "pokes": r[5],
            "signals": r[6],
            "trades": r[7],
            "pnl": float(r[8]),
            "pnl_r": float(r[9]),
            "pnl_bps": float(r[10]),
        }
        for r in rows
    ]


def batch_signals(
    symbol: str | None = None,
    start: date | None = None,
    end: date | None = None,
    db: Path | None = None,
) -> pd.DataFrame:
    """Rows of the ``signals`` table, ordered by ``ts`` then ``symbol``.

    Parameters
    ----------
    symbol : str, optional
    start, end : datetime.date, optional
        Inclusive trading-date bounds.

    Returns
    -------
    pandas.DataFrame
        :data:`fbe_pipeline.research.scoring.SIGNAL_COLUMNS` (times ``datetime64[ns, UTC]``,
        ``trading_date`` ``datetime64[ns]``); empty before the first run.
    """
    from fbe_pipeline.research.scoring import SIGNAL_COLUMNS

    db = db or paths().duckdb
    if "signals" not in table_names(db):
        return pd.DataFrame(columns=list(SIGNAL_COLUMNS))
    where: list[str] = ["true"]
    args: list[object] = []
    if symbol:
        where.append("symbol = ?")
        args.append(symbol)
    if start:
        where.append("trading_date >= ?")
        args.append(start)
    if end:
        where.append("trading_date <= ?")
        args.append(end)
    columns = ", ".join(f'"{c}"' for c in SIGNAL_COLUMNS)
    with connect(str(db), read_only=True) as con:
        frame = con.execute(
            f"select {columns} from signals where {' and '.join(where)} order by ts, symbol", args
        ).df()
    for col in ("ts", "bar_close", "decision_time"):
        frame[col] = pd.to_datetime(frame[col], utc=True).astype("datetime64[ns, UTC]")
    frame["trading_date"] = pd.to_datetime(frame["trading_date"]).astype("datetime64[ns]")
    return frame
