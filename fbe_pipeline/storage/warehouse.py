"""Read-only queries over the DuckDB analytical store (``$FBE_HOME/fbe.duckdb``)."""

from __future__ import annotations

from pathlib import Path

import duckdb

from fbe_pipeline.settings import paths

_SUMMARY_SQL = """
with t as (select symbol, trading_date, count(*) n from raw_ticks group by all),
     b as (select symbol, trading_date, count(*) n from bars_1m group by all),
     f as (select symbol, trading_date, count(*) n, count(*) filter (poke <> 'none') pokes
           from features group by all),
     s as (select symbol, trading_date, count(*) n from signals group by all),
     x as (select symbol, trading_date, count(*) n, sum(pnl) pnl from backtest_trades group by all)
select b.symbol, strftime(b.trading_date, '%Y-%m-%d') as day,
       coalesce(t.n, 0), b.n, coalesce(f.n, 0), coalesce(f.pokes, 0), coalesce(s.n, 0),
       coalesce(x.n, 0), coalesce(x.pnl, 0.0)
from b
left join t using (symbol, trading_date)
left join f using (symbol, trading_date)
left join s using (symbol, trading_date)
left join x using (symbol, trading_date)
order by b.symbol, day
"""


def table_names(db: Path | None = None) -> set[str]:
    """Names of the tables in the DuckDB file (empty set when the file does not exist)."""
    db = db or paths().duckdb
    if not db.exists():
        return set()
    with duckdb.connect(str(db), read_only=True) as con:
        return {
            r[0] for r in con.execute("select table_name from information_schema.tables").fetchall()
        }


def partition_summary(db: Path | None = None) -> list[dict[str, object]]:
    """Per symbol and trading day: ``ticks``, ``bars``, ``features`` (feature rows), ``pokes``
    (bars poking out of their range), ``signals``, ``trades`` and ``pnl`` (sum of backtest
    trade PnL, price currency per unit). Empty before the first run."""
    db = db or paths().duckdb
    needed = {"raw_ticks", "bars_1m", "features", "signals", "backtest_trades"}
    if not needed <= table_names(db):
        return []
    with duckdb.connect(str(db), read_only=True) as con:
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
        }
        for r in rows
    ]
