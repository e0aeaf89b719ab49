"""The local Dagster instance's event log: Dagster's SQLite event log storage, with its
connections kept open between events.

Dagster's ``SqliteEventLogStorage`` builds a SQLAlchemy engine, opens a connection, commits
and closes it again for every event it stores; closing the last connection to a WAL database
checkpoints it to disk. A session's run writes about 60 such events (materializations, planned
materializations and check evaluations, each mirrored into the index shard), and in the
README's benchmark this made Dagster's event log the largest part of its share of the main job.
:class:`PooledSqliteEventLogStorage` keeps one engine per shard (the index and the most
recently used runs), each with a small pool of open connections at ``synchronous=NORMAL``
(see :func:`_wal_normal`), so an event costs one transaction that does not wait for the
disk. Everything else (schema, shards under ``$DAGSTER_HOME/history/runs``, the files' format)
is Dagster's, so a home written by either storage is read by the other. ``dagster.yaml``
selects it; PostgreSQL instances (``dagster.postgres.yaml``) do not use it.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from dagster import Field, StringSource
from dagster._core.storage.event_log.sqlite.sqlite_event_log import (
    INDEX_SHARD_NAME,
    SqliteEventLogStorage,
)
from dagster._core.storage.sqlite import SQLITE_BUSY_TIMEOUT_SECONDS
from dagster._serdes import ConfigurableClassData
from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import QueuePool

logger = logging.getLogger(__name__)

# The index shard plus the shards of the runs a process is writing or showing.
MAX_OPEN_SHARDS = 8


class PooledSqliteEventLogStorage(SqliteEventLogStorage):
    """``SqliteEventLogStorage`` whose connections stay open (see the module docstring).

    Parameters
    ----------
    base_dir : str, optional
        Directory of the shards; default ``$DAGSTER_HOME/history/runs`` (Dagster's default).
    """

    def __init__(self, base_dir: str | None = None, inst_data: ConfigurableClassData | None = None):
        self._engines: OrderedDict[str, Engine] = OrderedDict()
        self._engines_lock = threading.Lock()
        self._tables: set[str] = set()
        super().__init__(base_dir or default_base_dir(), inst_data)

    @classmethod
    def config_type(cls) -> dict[str, Field]:
        """``base_dir`` is optional (default ``$DAGSTER_HOME/history/runs``)."""
        return {"base_dir": Field(StringSource, is_required=False)}

    @classmethod
    def from_config_value(  # type: ignore[override]
        cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]
    ) -> PooledSqliteEventLogStorage:
        """The storage of an instance's ``event_log_storage`` section."""
        return cls(inst_data=inst_data, base_dir=config_value.get("base_dir"))

    def _engine(self, shard: str) -> Engine:
        with self._engines_lock:
            engine = self._engines.get(shard)
            if engine is not None:
                self._engines.move_to_end(shard)
                return engine
            engine = create_engine(
                self.conn_string_for_shard(shard),
                poolclass=QueuePool,
                pool_size=1,
                max_overflow=4,
                # Dagster's own lock serializes the use of a connection across threads.
                connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS, "check_same_thread": False},
            )
            event.listen(engine, "connect", _wal_normal)
            self._engines[shard] = engine
            while len(self._engines) > MAX_OPEN_SHARDS:
                _, evicted = self._engines.popitem(last=False)
                evicted.dispose()
            return engine

    @contextmanager
    def _connect(self, shard: str) -> Iterator[Connection]:
        """A transaction on the shard, on a kept connection (Dagster's contract: the same lock,
        the shard's schema created on first use)."""
        with self._db_lock:
            engine = self._engine(shard)
            if shard not in self._initialized_dbs:
                self._initdb(engine)
                self._initialized_dbs.add(shard)
            with engine.connect() as conn, conn.begin():
                yield conn

    def has_table(self, table_name: str) -> bool:
        """Whether the index shard has the table, on a kept connection; a table once seen is
        not looked up again (Dagster asks before every asset check event it stores)."""
        if table_name in self._tables:
            return True
        engine = self._engine(INDEX_SHARD_NAME)
        with engine.connect() as conn:
            present = bool(engine.dialect.has_table(conn, table_name))
        if present:
            self._tables.add(table_name)
        return present

    def _dispose_engines(self) -> None:
        with self._engines_lock:
            for engine in self._engines.values():
                engine.dispose()
            self._engines.clear()
            self._tables.clear()

    def wipe(self) -> None:
        """Close every kept connection before Dagster deletes the shard files."""
        self._dispose_engines()
        super().wipe()

    def dispose(self) -> None:
        """Close every kept connection, then Dagster's own clean-up."""
        self._dispose_engines()
        super().dispose()


def _wal_normal(dbapi_connection: Any, _record: Any) -> None:
    """``synchronous=NORMAL`` on a kept connection: Dagster keeps these files in WAL mode,
    where SQLite recommends it; a commit then no longer waits for the disk, the database is
    never corrupted, and only a power loss or OS crash (not a crash of FBE) may roll back the
    last events, which the run reaper then records as a failed run."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("pragma synchronous = NORMAL")
    finally:
        cursor.close()


def default_base_dir() -> str:
    """``$DAGSTER_HOME/history/runs``, where Dagster's default SQLite event log lives.

    Without ``DAGSTER_HOME`` (a Dagster command that makes itself a temporary instance from
    this repository's ``dagster.yaml``, such as ``dg check defs``), a temporary directory that
    is removed when the process exits, as Dagster's temporary instance is.
    """
    home = os.environ.get("DAGSTER_HOME")
    if home:
        return os.path.join(home, "history", "runs")
    temporary = tempfile.mkdtemp(prefix="fbe-event-log-")
    atexit.register(shutil.rmtree, temporary, ignore_errors=True)
    logger.info("no DAGSTER_HOME: event log in %s, removed at exit", temporary)
    return temporary
