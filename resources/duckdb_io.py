"""DuckDB I/O manager whose tables are created from the pandera contracts.

dagster-duckdb-pandas skips the write of an empty DataFrame and so never creates the table of
an asset whose first partition is empty (a day without signals), and infers column types from
the first frame. Here every table is created up front from its pandera schema
(:data:`fbe_pipeline.schemas.ALL`), so an empty partition still leaves a typed, queryable table.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from dagster import InputContext, OutputContext
from dagster._core.storage.db_io_manager import DbTypeHandler, TableSlice
from dagster_duckdb_pandas import DuckDBPandasIOManager
from dagster_duckdb_pandas.duckdb_pandas_type_handler import DuckDBPandasTypeHandler

from fbe_pipeline.schemas import ALL

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


def create_table_sql(schema: str, table: str) -> str:
    """``CREATE TABLE IF NOT EXISTS`` statement for a table with a pandera contract.

    Raises
    ------
    KeyError
        If the table has no contract in :data:`fbe_pipeline.schemas.ALL`.
    """
    contract = ALL[table]
    cols = ", ".join(
        f'"{name}" {_SQL_TYPES[str(col.dtype)]}' for name, col in contract.columns.items()
    )
    return f"create table if not exists {schema}.{table} ({cols})"


class ContractTypeHandler(DuckDBPandasTypeHandler):
    """Pandas handler that creates the table from its contract, then inserts by column name."""

    def handle_output(
        self, context: OutputContext, table_slice: TableSlice, obj: pd.DataFrame, connection: Any
    ) -> None:
        """Create the table if needed and insert ``obj`` (nothing to insert when empty)."""
        connection.execute(create_table_sql(table_slice.schema, table_slice.table))
        if not obj.empty:
            names = ", ".join(f'"{c}"' for c in obj.columns)
            connection.execute(
                f"insert into {table_slice.schema}.{table_slice.table} ({names}) "
                f"select {names} from obj"
            )
        context.add_output_metadata({"dagster/row_count": len(obj)})

    def load_input(
        self, context: InputContext, table_slice: TableSlice, connection: Any
    ) -> pd.DataFrame:
        """Load the slice; creates the (empty) table first so a never-written one reads empty."""
        connection.execute(create_table_sql(table_slice.schema, table_slice.table))
        return super().load_input(context, table_slice, connection)


class FbeDuckDBIOManager(DuckDBPandasIOManager):
    """``DuckDBPandasIOManager`` with :class:`ContractTypeHandler`; creates the database's
    directory (a fresh ``FBE_HOME``) before connecting."""

    def create_io_manager(self, context: Any) -> Any:
        """Make sure the DuckDB file's directory exists, then build the I/O manager."""
        Path(self.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        return super().create_io_manager(context)

    @staticmethod
    def type_handlers() -> Sequence[DbTypeHandler]:
        """The contract-aware pandas handler."""
        return [ContractTypeHandler()]
