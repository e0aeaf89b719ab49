"""Connection to the operational store: SQLite in WAL mode under ``$FBE_HOME`` by default,
PostgreSQL when ``FBE_DATABASE_URL`` is set; schema migrations with Alembic.

Owns :func:`database_url`, :func:`engine_for` and :func:`upgrade`. Several processes write
this database at once (the live service's paper sensor runs, the CLI's approvals), so every
write is a short transaction and SQLite waits for the lock instead of failing.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url

MIGRATIONS = Path(__file__).with_name("migrations")


def database_url(home: Path, env: Mapping[str, str] | None = None) -> str:
    """``FBE_DATABASE_URL`` when set (e.g. ``postgresql+psycopg://user@host/db``), else
    ``sqlite:///<home>/ops.sqlite``."""
    env = os.environ if env is None else env
    return env.get("FBE_DATABASE_URL") or f"sqlite:///{home / 'ops.sqlite'}"


def engine_for(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL, ``synchronous=FULL``, a 30 s busy timeout and
    foreign keys on every connection.

    Raises
    ------
    sqlalchemy.exc.ArgumentError
        On a malformed URL.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    if parsed.database:
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": 30})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    return engine


def alembic_config(connection: Connection) -> Config:
    """The Alembic configuration of the operational store's migrations, on ``connection``."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


# Any constant shared by every FBE process: the key of the PostgreSQL advisory lock that
# serializes migrations.
_MIGRATION_LOCK = 0x0FBE_0001


def upgrade(engine: Engine) -> None:
    """Bring the schema to the latest Alembic revision (idempotent). Processes that start at
    once (the ingest service, the code servers' sensors, the CLI) migrate one after the other:
    without that, two would both create the first tables and one would fail
    (``table alembic_version already exists``). PostgreSQL: an advisory lock held by the
    migration's transaction; SQLite: an exclusive file lock beside the database."""
    if engine.dialect.name == "postgresql":
        with engine.begin() as connection:
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
            command.upgrade(alembic_config(connection), "head")
        return
    database = engine.url.database
    on_disk = database not in (None, "", ":memory:")
    lock_path = Path(f"{database}.migrate.lock") if on_disk else None
    with contextlib.ExitStack() as stack:
        if lock_path is not None:
            lock = stack.enter_context(lock_path.open("w"))
            fcntl.flock(lock, fcntl.LOCK_EX)
        with engine.begin() as connection:
            command.upgrade(alembic_config(connection), "head")
