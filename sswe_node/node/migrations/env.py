"""Alembic environment of the case store: runs on the connection handed in by ``migrate``."""

from __future__ import annotations

from alembic import context

from sswe_node.node.schema import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
