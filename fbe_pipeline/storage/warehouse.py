"""Read-only queries over the pipeline's tables (:mod:`fbe_pipeline.storage.tables`), and the
warehouse of the environment: ``FBE_WAREHOUSE_BACKEND`` ``local`` (default,
``$FBE_HOME/warehouse``) or ``s3`` (bucket ``FBE_WAREHOUSE_BUCKET``, default the raw store's
``FBE_S3_BUCKET``; keys under ``FBE_S3_PREFIX`` + ``warehouse/``; endpoint and region
``FBE_S3_ENDPOINT_URL`` / ``FBE_S3_REGION``; credentials from the usual AWS environment)."""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from fbe_pipeline.settings import Paths, fbe_home
from fbe_pipeline.storage.store_s3 import quiet_aws_loggers
from fbe_pipeline.storage.tables import S3TableFiles, Warehouse

WAREHOUSE_PREFIX = "warehouse/"
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


def warehouse_from_env(home: Path | None = None) -> Warehouse:
    """The warehouse configured by the environment (see the module docstring) for ``home``
    (default ``$FBE_HOME``).

    Raises
    ------
    ValueError
        As :func:`build_warehouse`.
    """
    env = os.environ.get
    return build_warehouse(
        env("FBE_WAREHOUSE_BACKEND", "") or "local",
        Paths(home or fbe_home()).warehouse,
        env("FBE_WAREHOUSE_BUCKET") or env("FBE_S3_BUCKET", "") or "",
        env("FBE_S3_PREFIX", "") or "",
        env("FBE_S3_ENDPOINT_URL", "") or "",
        env("FBE_S3_REGION", "") or "us-east-1",
    )


def build_warehouse(
    backend: str, root: Path, bucket: str, prefix: str, endpoint_url: str, region: str
) -> Warehouse:
    """A warehouse: ``local`` in the directory ``root``, or ``s3`` in ``bucket`` under
    ``prefix`` + ``warehouse/`` (``endpoint_url`` empty for AWS).

    Raises
    ------
    ValueError
        On a backend other than ``local`` or ``s3``, or ``s3`` without a bucket.
    """
    if backend == "local":
        return Warehouse.local(root.expanduser().resolve())
    if backend == "s3":
        if not bucket:
            raise ValueError("the s3 warehouse needs FBE_WAREHOUSE_BUCKET or FBE_S3_BUCKET")
        client = s3_client(endpoint_url, region)
        return Warehouse(S3TableFiles(client, bucket, prefix + WAREHOUSE_PREFIX))
    raise ValueError(f"unknown FBE_WAREHOUSE_BACKEND {backend!r}; expected 'local' or 's3'")


@functools.lru_cache(maxsize=8)
def s3_client(endpoint_url: str, region: str) -> Any:
    """A boto3 S3 client, one per endpoint and region in a process (clients are thread-safe
    and slow to make), with the AWS loggers held at WARNING first
    (:func:`fbe_pipeline.storage.store_s3.quiet_aws_loggers`)."""
    import boto3

    quiet_aws_loggers()
    return boto3.client("s3", endpoint_url=endpoint_url or None, region_name=region)


def _warehouse(source: Warehouse | Path | None) -> Warehouse:
    """A warehouse as given, or the environment's for the FBE home ``source``."""
    return source if isinstance(source, Warehouse) else warehouse_from_env(source)


@contextmanager
def open_tables(source: Warehouse | Path | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
    """A DuckDB connection where each pipeline table is queryable by name (see
    :meth:`fbe_pipeline.storage.tables.Warehouse.query`).

    Parameters
    ----------
    source : Warehouse or Path or None
        A warehouse, or an FBE home whose warehouse the environment configures (None:
        ``$FBE_HOME``).
    """
    with _warehouse(source).query() as con:
        yield con


def table_names(source: Warehouse | Path | None = None) -> set[str]:
    """Names of the tables with at least one materialized session (empty before any run)."""
    return _warehouse(source).tables()


def partition_summary(source: Warehouse | Path | None = None) -> list[dict[str, object]]:
    """Per symbol and trading day: ``ticks``, ``bars``, ``features`` (feature rows), ``pokes``
    (bars poking out of their range), ``signals``, ``trades``, ``pnl`` (sum of backtest
    trade PnL, price currency per unit), ``pnl_r`` (sum of R multiples) and ``pnl_bps`` (sum
    of trade returns, bps of entry). Empty before the first run. ``source`` as
    :func:`open_tables`."""
    warehouse = _warehouse(source)
    if "bars_1m" not in warehouse.tables():
        return []
    with warehouse.query() as con:
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
    source: Warehouse | Path | None = None,
) -> pd.DataFrame:
    """Rows of the ``signals`` table, ordered by ``ts`` then ``symbol``.

    Parameters
    ----------
    symbol : str, optional
    start, end : datetime.date, optional
        Inclusive trading-date bounds.
    source : Warehouse or Path or None
        As :func:`open_tables`.

    Returns
    -------
    pandas.DataFrame
        :data:`fbe_pipeline.research.scoring.SIGNAL_COLUMNS` (times ``datetime64[ns, UTC]``,
        ``trading_date`` ``datetime64[ns]``); empty before the first run.
    """
    from fbe_pipeline.research.scoring import SIGNAL_COLUMNS

    warehouse = _warehouse(source)
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
    with warehouse.query() as con:
        frame = con.execute(
            f"select {columns} from signals where {' and '.join(where)} order by ts, symbol", args
        ).df()
    for col in ("ts", "bar_close", "decision_time"):
        frame[col] = pd.to_datetime(frame[col], utc=True).astype("datetime64[ns, UTC]")
    frame["trading_date"] = pd.to_datetime(frame["trading_date"]).astype("datetime64[ns]")
    return frame
