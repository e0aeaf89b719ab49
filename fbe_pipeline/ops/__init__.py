"""The operational store: the transactional database that several processes write at once
(orders, approvals, audit, automations, users, config versions), through SQLAlchemy 2 with
Alembic migrations; SQLite by default, PostgreSQL by URL. Neutral ground: detection,
governance and execution all read it, and it imports none of them."""
