"""Case-store schema migrations (Alembic): bring any database up to the current schema."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, Engine

LOGGER = logging.getLogger(__name__)

#: The revision of the schema that sswe-node 0.1.0 created without Alembic.
BASELINE = "0001"
_SCRIPTS = "sswe_node.node:migrations"
_PG_LOCK_KEY = 0x55_57_45_4E  # any constant: one migrating process at a time per database


def _config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", _SCRIPTS)
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@functools.cache
def heads() -> tuple[str, ...]:
    """Return the head revision(s) of the migration scripts (one, unless branches diverge)."""
    return tuple(ScriptDirectory.from_config(_config()).get_heads())


def current_revision(connection: Connection) -> str | None:
    """Return the database's schema revision (``None``: empty, or made before Alembic)."""
    return MigrationContext.configure(connection).get_current_revision()


@contextlib.contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    """Hold a lock so that processes starting together do not migrate the same database twice."""
    database = engine.url.database
    if engine.dialect.name == "sqlite" and database and database != ":memory:":
        with open(Path(database).with_name(Path(database).name + ".migrate-lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
    elif engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _PG_LOCK_KEY})
            try:
                yield
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_LOCK_KEY})
                connection.commit()
    else:
        yield


def upgrade(engine: Engine) -> None:
    """Upgrade the database behind ``engine`` to the newest schema.

    An empty database is created from the first revision on; a database made by sswe-node
    0.1.0 (tables but no ``alembic_version``) is stamped as :data:`BASELINE` first.
    """
    with engine.connect() as connection:
        if current_revision(connection) in heads():
            return
    with _migration_lock(engine), engine.begin() as connection:
        revision = current_revision(connection)
        if revision in heads():
            return
        config = _config(connection)
        if revision is None and inspect(connection).has_table("cases"):
            LOGGER.info("event=store-stamped revision=%s (made by 0.1.0)", BASELINE)
            command.stamp(config, BASELINE)
        command.upgrade(config, "head")
        LOGGER.info("event=store-migrated from=%s to=%s", revision, ",".join(heads()))
