"""DuckDB I/O manager: one table per pipeline step, every instrument's sessions in it.

Each instrument's assets are keyed ``[<symbol>, <table>]`` and partitioned by its sessions
(:mod:`assets.partitions`); they all write the table ``main.<table>``, whose rows carry
``symbol`` and ``trading_date``. Writing a partition range deletes exactly that symbol's rows
of those trading dates and inserts the new ones in one transaction, so a re-run (or a run
killed half-way) never leaves duplicates; reading an input selects the symbol's rows of the
upstream partitions' dates (the look-back window). Unpartitioned assets (``raw_integrity``)
replace their whole table. Tables are created up front from their pandera contracts
(:data:`fbe_pipeline.quality.schemas.ALL`), so an empty partition still leaves a typed, queryable
table.
"""

from __future__ import annotations

from datetime import date

import pandas as pd
from dagster import ConfigurableIOManager, InputContext, OutputContext
from duckdb import DuckDBPyConnection

from fbe_pipeline.quality.schemas import ALL
from fbe_pipeline.storage.warehouse import connect

SCHEMA = "main"
_SQL_TYPES = {
    "str": "VARCHAR",
    "float64": "DOUBLE",
    "int64": "BIGINT",
    "Int64": "BIGINT",
    "int8": "TINYINT",
    "bool": "BOOLEAN",
    "datetime64[ns, UTC]": "TIMESTAMPTZ",
    "datetime64[ns]": "TIMESTAMP",
}


def _columns(table: str) -> list[tuple[str, str]]:
    """``(name, SQL type)`` of a table's contract columns, in contract order."""
    return [(name, _SQL_TYPES[str(col.dtype)]) for name, col in ALL[table].columns.items()]


def create_table_sql(schema: str, table: str) -> str:
    """``CREATE TABLE IF NOT EXISTS`` statement for a table with a pandera contract.

    Raises
    ------
    KeyError
        If the table has no contract in :data:`fbe_pipeline.quality.schemas.ALL`.
    """
    cols = ", ".join(f'"{name}" {sql}' for name, sql in _columns(table))
    return f"create table if not exists {schema}.{table} ({cols})"


def ensure_table(con: DuckDBPyConnection, schema: str, table: str) -> None:
    """Create ``table`` from its contract, or add the contract columns an older version of
    the table lacks (e.g. ``scores.unavailable``; NULL in the rows written before), so a
    store made by an earlier FBE keeps working."""
    con.execute(create_table_sql(schema, table))
    present = {
        row[0]
        for row in con.execute(
            "select column_name from information_schema.columns "
            "where table_schema = ? and table_name = ?",
            [schema, table],
        ).fetchall()
    }
    for name, sql in _columns(table):
        if name not in present:
            con.execute(f'alter table {schema}.{table} add column "{name}" {sql}')


def _where(context: InputContext | OutputContext) -> tuple[str, list[object]]:
    """SQL filter and parameters of the symbol and trading dates a context covers."""
    if not context.has_asset_partitions:
        return "true", []
    window = context.asset_partitions_time_window
    first: date = window.start.date()
    end: date = window.end.date()
    return "symbol = ? and trading_date >= ? and trading_date < ?", [
        context.asset_key.path[0],
        first,
        end,
    ]


class FbeDuckDBIOManager(ConfigurableIOManager):
    """Stores each asset's frames in ``main.<table>`` of one DuckDB file.

    Attributes
    ----------
    database : str
        Path of the DuckDB file (``$FBE_HOME/fbe.duckdb``); its directory is created.
    """

    database: str

    def handle_output(self, context: OutputContext, obj: pd.DataFrame) -> None:
        """Replace the rows of the partitions being written (all rows when unpartitioned)."""
        table = context.asset_key.path[-1]
        where, params = _where(context)
        with connect(self.database) as con:
            ensure_table(con, SCHEMA, table)
            con.execute("begin transaction")
            con.execute(f"delete from {SCHEMA}.{table} where {where}", params)
            if not obj.empty:
                names = ", ".join(f'"{c}"' for c in obj.columns)
                con.register("frame", obj)
                con.execute(f"insert into {SCHEMA}.{table} ({names}) select {names} from frame")
                con.unregister("frame")
            con.execute("commit")
        context.add_output_metadata({"dagster/row_count": len(obj)})

    def load_input(self, context: InputContext) -> pd.DataFrame:
        """The rows of the upstream partitions this input maps to (its look-back window),
        typed as the table stores them (timestamps in UTC)."""
        table = context.asset_key.path[-1]
        where, params = _where(context)
        with connect(self.database) as con:
            ensure_table(con, SCHEMA, table)
            return con.execute(f"select * from {SCHEMA}.{table} where {where}", params).fetchdf()
