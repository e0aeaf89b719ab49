"""Alembic environment of the operational store: runs on the connection given by
:func:`fbe_pipeline.ops.db.upgrade` (``config.attributes["connection"]``)."""

from alembic import context

from fbe_pipeline.ops.models import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
