"""The operational-database fixtures: ``ops_database_url`` on SQLite and on the throwaway
PostgreSQL 15 server of ``tests/pg.py``."""

from __future__ import annotations

import socket
import threading

import pytest
from sqlalchemy import (
    Column,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    func,
    insert,
    select,
    text,
)
from sqlalchemy.exc import IntegrityError

from tests.pg import PostgresServer

ROWS_PER_WORKER = 50


def _items(metadata: MetaData) -> Table:
    return Table(
        "items",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("key", String(64), nullable=False, unique=True),
        Column("worker", Integer, nullable=False),
    )


def test_ops_database_concurrent_writes_and_unique(ops_database_url: str) -> None:
    engine = create_engine(ops_database_url)
    try:
        metadata = MetaData()
        items = _items(metadata)
        metadata.create_all(engine)

        # Two threads insert concurrently, one short transaction per row.
        barrier = threading.Barrier(2)
        errors: list[BaseException] = []

        def write(worker: int) -> None:
            try:
                barrier.wait(timeout=10)
                for i in range(ROWS_PER_WORKER):
                    with engine.begin() as conn:
                        conn.execute(insert(items).values(key=f"w{worker}-{i}", worker=worker))
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=write, args=(w,)) for w in (0, 1)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not any(t.is_alive() for t in threads)
        assert errors == []
        with engine.connect() as conn:
            per_worker = dict(
                conn.execute(select(items.c.worker, func.count()).group_by(items.c.worker)).all()
            )
        assert per_worker == {0: ROWS_PER_WORKER, 1: ROWS_PER_WORKER}

        # UNIQUE: the second insert of a key fails.
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(insert(items).values(key="w0-0", worker=9))

        # ... also when it races the first: B inserts the key while A's insert of it is not yet
        # committed, so B waits on A's lock and then fails.
        a_inserted = threading.Event()
        outcome: dict[str, object] = {}

        def first() -> None:
            try:
                with engine.begin() as conn:
                    conn.execute(insert(items).values(key="contested", worker=0))
                    a_inserted.set()
                    threading.Event().wait(0.3)  # hold the uncommitted row while B tries
                outcome["a"] = "ok"
            except BaseException as exc:
                outcome["a"] = exc
            finally:
                a_inserted.set()

        def second() -> None:
            a_inserted.wait(timeout=10)
            try:
                with engine.begin() as conn:
                    conn.execute(insert(items).values(key="contested", worker=1))
                outcome["b"] = "ok"
            except BaseException as exc:
                outcome["b"] = exc

        racers = [threading.Thread(target=first), threading.Thread(target=second)]
        for thread in racers:
            thread.start()
        for thread in racers:
            thread.join(timeout=60)
        assert outcome["a"] == "ok"
        assert isinstance(outcome["b"], IntegrityError), outcome["b"]

        with engine.connect() as conn:
            assert conn.scalar(select(func.count()).select_from(items)) == 2 * ROWS_PER_WORKER + 1
            assert conn.scalar(select(items.c.worker).where(items.c.key == "contested")) == 0

            if engine.dialect.name == "postgresql":
                assert engine.dialect.driver == "psycopg"
                version = conn.scalar(text("SHOW server_version"))
                assert str(version).startswith("15."), version
                assert int(conn.scalar(text("SHOW server_version_num"))) // 10000 == 15
            else:
                assert engine.dialect.name == "sqlite"
    finally:
        engine.dispose()


def test_postgres_server_retries_a_taken_port() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        taken = blocker.getsockname()[1]
        with PostgresServer(port=taken) as server:
            assert server.port != taken
            root = server.root
            assert root is not None
            engine = create_engine(server.create_database("retry_check"))
            try:
                with engine.connect() as conn:
                    assert conn.scalar(text("SELECT 1")) == 1
            finally:
                engine.dispose()
        assert server.root is None
        assert not root.exists()
