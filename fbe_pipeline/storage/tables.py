"""The pipeline's tables as per-partition Parquet files, with DuckDB as the query engine.

Every table with a pandera contract (:data:`fbe_pipeline.quality.schemas.ALL`) keeps one file
per instrument and session: ``<table>/<SYMBOL>/<YYYY-MM-DD>.parquet`` (an unpartitioned table:
``<table>/all.parquet``), typed by the contract. A session written with no rows still gets its
(empty) file, so a re-run that found nothing replaces what was there. Writing a file replaces it
whole and atomically (a temporary file renamed over it, or one S3 PUT), so a run killed half-way
leaves each session either as it was or as it is now, never a mix, and two runs of different
instruments never touch the same file: there is no store-wide writer lock.

Files live on the local disk (``$FBE_HOME/warehouse``) or on S3 (the raw store's bucket or its
own, under ``warehouse/``). :meth:`Warehouse.query` gives a DuckDB connection where each table is
a view over its files, so every reader (``fbe summary``, the console, the reviews, the tests)
queries the same SQL whichever backend holds them.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any, Protocol

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fbe_pipeline.quality.schemas import ALL

WHOLE_TABLE = "all"

_ARROW_TYPES: dict[str, pa.DataType] = {
    "str": pa.string(),
    "float64": pa.float64(),
    "int64": pa.int64(),
    "Int64": pa.int64(),
    "int8": pa.int8(),
    "bool": pa.bool_(),
    "datetime64[ns, UTC]": pa.timestamp("ns", tz="UTC"),
    "datetime64[ns]": pa.timestamp("ns"),
}
_SQL_TYPES: dict[str, str] = {
    "str": "VARCHAR",
    "float64": "DOUBLE",
    "int64": "BIGINT",
    "Int64": "BIGINT",
    "int8": "TINYINT",
    "bool": "BOOLEAN",
    "datetime64[ns, UTC]": "TIMESTAMPTZ",
    "datetime64[ns]": "TIMESTAMP",
}


def contract_dtypes(table: str) -> dict[str, str]:
    """``{column: pandas dtype name}`` of a table's contract, in contract order.

    Raises
    ------
    KeyError
        If the table has no contract in :data:`fbe_pipeline.quality.schemas.ALL`.
    """
    return {name: str(col.dtype) for name, col in ALL[table].columns.items()}


def arrow_schema(table: str) -> pa.Schema:
    """The Arrow schema the table's files are written with (from its contract)."""
    return pa.schema([(name, _ARROW_TYPES[dt]) for name, dt in contract_dtypes(table).items()])


def _key(table: str, symbol: str | None, day: date | None) -> str:
    if symbol is None or day is None:
        return f"{table}/{WHOLE_TABLE}.parquet"
    return f"{table}/{symbol}/{day.isoformat()}.parquet"


class TableFiles(Protocol):
    """Where a warehouse's files are kept (keys are ``/``-separated relative paths)."""

    def put(self, key: str, data: bytes) -> None:
        """Store ``data`` as ``key``, replacing any earlier file atomically."""

    def get(self, key: str) -> bytes | None:
        """The file's bytes, or None when there is no such file."""

    def keys(self, prefix: str) -> list[str]:
        """The keys under ``prefix``, sorted."""

    def local_path(self, key: str) -> str | None:
        """A path DuckDB can read the file from directly, or None (read through bytes)."""

    def describe(self) -> str:
        """Where the files are, for messages."""


class LocalTableFiles:
    """Files under a local directory (created on the first write)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def put(self, key: str, data: bytes) -> None:
        """Write to a temporary file in the same directory, then rename it over ``key``."""
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get(self, key: str) -> bytes | None:
        """The file's bytes, or None."""
        try:
            return (self.root / key).read_bytes()
        except FileNotFoundError:
            return None

    def keys(self, prefix: str) -> list[str]:
        """Keys of the ``.parquet`` files under ``prefix`` (temporary files excluded)."""
        base = self.root / prefix
        if not base.is_dir():
            return []
        return sorted(
            p.relative_to(self.root).as_posix()
            for p in base.rglob("*.parquet")
            if not p.name.startswith(".")
        )

    def local_path(self, key: str) -> str | None:
        """The file's path."""
        return str(self.root / key)

    def describe(self) -> str:
        """The directory."""
        return str(self.root)


class S3TableFiles:
    """Files as objects of an S3 bucket under a key prefix (one PUT per file is atomic).

    Parameters
    ----------
    client : botocore S3 client
    bucket : str
    prefix : str
        Key prefix, ``""`` or ending in ``/`` (one is added).
    """

    def __init__(self, client: Any, bucket: str, prefix: str = "") -> None:
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        self.client = client
        self.bucket = bucket
        self.prefix = prefix

    def put(self, key: str, data: bytes) -> None:
        """PUT the object."""
        self.client.put_object(Bucket=self.bucket, Key=self.prefix + key, Body=data)

    def get(self, key: str) -> bytes | None:
        """GET the object, or None when it does not exist."""
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self.prefix + key)["Body"]
        except self.client.exceptions.NoSuchKey:
            return None
        return bytes(body.read())

    def keys(self, prefix: str) -> list[str]:
        """Keys of the ``.parquet`` objects under ``prefix`` (LIST, paginated)."""
        out: list[str] = []
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix + prefix
        )
        for page in pages:
            for item in page.get("Contents", []):
                key = item["Key"][len(self.prefix) :]
                if key.endswith(".parquet"):
                    out.append(key)
        return sorted(out)

    def local_path(self, key: str) -> str | None:
        """None: DuckDB reads these through Arrow (its S3 extension is not assumed)."""
        return None

    def describe(self) -> str:
        """``s3://bucket/prefix``."""
        return f"s3://{self.bucket}/{self.prefix}"


class Warehouse:
    """The pipeline's tables over a :class:`TableFiles` backend.

    Parameters
    ----------
    files : TableFiles
        :class:`LocalTableFiles` or :class:`S3TableFiles`.
    """

    def __init__(self, files: TableFiles) -> None:
        self.files = files

    @classmethod
    def local(cls, root: Path) -> Warehouse:
        """A warehouse in the local directory ``root``."""
        return cls(LocalTableFiles(root))

    def write(
        self,
        table: str,
        frame: pd.DataFrame,
        symbol: str | None = None,
        days: Sequence[date] | None = None,
    ) -> None:
        """Replace the files of ``symbol``'s sessions ``days`` with ``frame``'s rows (one file
        per session, empty when it has no rows), or the whole table when ``symbol`` is None.

        Parameters
        ----------
        frame : pandas.DataFrame
            The table's contract columns (missing ones are written as nulls); partitioned
            tables carry ``trading_date`` (``datetime64[ns]``, midnight).

        Raises
        ------
        KeyError
            If the table has no contract.
        ValueError
            If a row's ``trading_date`` is not one of ``days``, or a value does not fit its
            contract type.
        """
        arrow = _arrow_table(frame, arrow_schema(table))
        if symbol is None or days is None:
            self.files.put(_key(table, None, None), _parquet(arrow))
            return
        wanted = set(days)
        stamps = (
            frame["trading_date"].to_numpy().astype("datetime64[D]")
            if not frame.empty
            else np.array([], dtype="datetime64[D]")
        )
        present = {d.astype(date): d for d in np.unique(stamps)}
        outside = sorted(set(present) - wanted)
        if outside:
            raise ValueError(
                f"{table}: rows of {symbol} dated {', '.join(map(str, outside[:3]))} are "
                f"outside the sessions being written ({min(wanted)}..{max(wanted)})"
            )
        for day in sorted(wanted):
            if day not in present:
                part = arrow.slice(0, 0)
            elif len(present) == 1:
                part = arrow
            else:
                part = arrow.filter(pa.array(stamps == present[day]))
            self.files.put(_key(table, symbol, day), _parquet(part))

    def read(
        self,
        table: str,
        symbol: str | None = None,
        days: Sequence[date] | None = None,
        columns: Sequence[str] | None = None,
    ) -> pd.DataFrame:
        """The rows of ``symbol``'s sessions ``days`` in session order (all sessions of every
        symbol when both are None), typed by the contract; sessions never written are absent.

        Returns
        -------
        pandas.DataFrame
            The contract's columns (or ``columns``) with its dtypes (timestamps
            ``datetime64[ns, UTC]``, ``trading_date`` ``datetime64[ns]``); columns an older
            file lacks are null.

        Raises
        ------
        KeyError
            If the table has no contract, or ``columns`` names a column it lacks.
        """
        schema = arrow_schema(table)
        if columns is not None:
            schema = pa.schema([schema.field(c) for c in columns])
        if symbol is not None and days is not None:
            keys = [_key(table, symbol, d) for d in sorted(set(days))]
        else:
            keys = self.files.keys(f"{table}/")
            if symbol is not None:
                keys = [k for k in keys if k.split("/")[1] == symbol]
        parts = [t for t in (self._arrow(k, schema) for k in keys) if t is not None]
        merged = pa.concat_tables(parts) if parts else schema.empty_table()
        return _conform(merged.to_pandas(), table)

    def _arrow(self, key: str, schema: pa.Schema) -> pa.Table | None:
        path = self.files.local_path(key)
        if path is not None:
            if not os.path.exists(path):
                return None
            source: Any = path
        else:
            data = self.files.get(key)
            if data is None:
                return None
            source = io.BytesIO(data)
        with pq.ParquetFile(source) as file:
            present = set(file.schema_arrow.names)
            read = file.read(columns=[c for c in schema.names if c in present])
        # Files written before a contract gained a column lack it: add it as nulls.
        cols = [
            read.column(f.name) if f.name in read.column_names else pa.nulls(len(read), f.type)
            for f in schema
        ]
        return pa.Table.from_arrays(cols, schema=schema)

    def tables(self) -> set[str]:
        """Names of the tables with at least one file."""
        return {t for t in ALL if self.files.keys(f"{t}/")}

    @contextmanager
    def query(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """An in-memory DuckDB connection where every contract table is a view of its files
        (an empty typed table when it has none). Read-only by nature: nothing written through
        it reaches the files. Timestamps come back in UTC."""
        con = duckdb.connect(":memory:")
        try:
            con.execute("set TimeZone = 'UTC'")
            for table in ALL:
                self._register(con, table)
            yield con
        finally:
            con.close()

    def _register(self, con: duckdb.DuckDBPyConnection, table: str) -> None:
        dtypes = contract_dtypes(table)
        keys = self.files.keys(f"{table}/")
        paths = [self.files.local_path(k) for k in keys]
        if keys and all(p is not None for p in paths):
            files = ", ".join("'" + str(p).replace("'", "''") + "'" for p in paths)
            source = f"read_parquet([{files}], union_by_name = true)"
            present = {r[0] for r in con.execute(f"describe select * from {source}").fetchall()}
            con.execute(f"create view {table} as select {_typed(dtypes, present)} from {source}")
            return
        if not keys:
            cols = ", ".join(f'"{c}" {_SQL_TYPES[dt]}' for c, dt in dtypes.items())
            con.execute(f"create table {table} ({cols})")
            return
        schema = arrow_schema(table)
        parts = [t for t in (self._arrow(k, schema) for k in keys) if t is not None]
        con.register(f"_{table}", pa.concat_tables(parts) if parts else schema.empty_table())
        con.execute(f"create view {table} as select {_typed(dtypes, set(dtypes))} from _{table}")

    def describe(self) -> str:
        """Where the files are, for messages."""
        return self.files.describe()


def _typed(dtypes: dict[str, str], present: set[str]) -> str:
    """The select list of a table's view: every contract column cast to its SQL type.

    Timestamps become ``TIMESTAMPTZ`` (microseconds): DuckDB hands ``TIMESTAMPTZ_NS`` to pandas
    without its time zone, and SQL readers (summaries, reviews) need no finer than 1 us; the
    I/O manager reads the files' nanoseconds directly.
    """
    return ", ".join(
        f'cast("{c}" as {_SQL_TYPES[dt]}) as "{c}"'
        if c in present
        else f'cast(null as {_SQL_TYPES[dt]}) as "{c}"'
        for c, dt in dtypes.items()
    )


def _arrow_table(frame: pd.DataFrame, schema: pa.Schema) -> pa.Table:
    """``frame`` as an Arrow table with the contract's schema (columns it lacks are null).

    Raises
    ------
    ValueError
        If a column's values do not fit its contract type.
    """
    if list(frame.columns) != schema.names:
        frame = pd.DataFrame(
            {
                f.name: (
                    frame[f.name]
                    if f.name in frame.columns
                    else pd.Series(None, index=frame.index, dtype=object)
                )
                for f in schema
            },
            index=frame.index,
        )
    try:
        return pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise ValueError(f"a frame does not fit the contract {schema.names}: {exc}") from exc


def _parquet(table: pa.Table) -> bytes:
    """An Arrow table as Parquet bytes."""
    out = io.BytesIO()
    pq.write_table(table, out)
    return out.getvalue()


def _conform(frame: pd.DataFrame, table: str) -> pd.DataFrame:
    """Cast to the contract's dtypes where Arrow's round trip differs (e.g. nullable ints)."""
    for column, dtype in contract_dtypes(table).items():
        if dtype == "str" or column not in frame.columns:
            continue
        if str(frame[column].dtype) != dtype:
            frame[column] = frame[column].astype(dtype)
    return frame
