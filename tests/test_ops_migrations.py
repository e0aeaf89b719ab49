"""The Alembic migrations of the operational store create exactly the schema of the SQLAlchemy
models, on SQLite and on a real PostgreSQL server, and downgrade cleanly."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from fbe_pipeline.ops.db import alembic_config, engine_for, upgrade
from fbe_pipeline.ops.models import Base


def test_migrations_match_the_models_and_downgrade(ops_database_url: str) -> None:
    engine = engine_for(ops_database_url)
    try:
        upgrade(engine)
        with engine.connect() as connection:
            assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
        tables = set(inspect(engine).get_table_names())
        assert {"config_versions", "alert_outbox", "users", "audit"} <= tables
        with engine.begin() as connection:
            config = alembic_config(connection)
            command.downgrade(config, "0001")
        assert not {"config_versions", "alert_outbox"} & set(inspect(engine).get_table_names())
        upgrade(engine)
        assert "password_hash" in {c["name"] for c in inspect(engine).get_columns("users")}
    finally:
        engine.dispose()
