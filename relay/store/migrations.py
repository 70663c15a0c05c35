"""``relay migrate``: bring a store's schema up to date on purpose, and say from which version to which.

Opening a store migrates it too (``relay serve`` does, so one node upgraded and restarted is enough);
this is for operators who want to apply an upgrade's migrations before starting the new version, or to
check where a database stands. Both backends migrate under a lock (SQLite's write lock, a PostgreSQL
advisory lock), so nodes starting at once apply each migration once, and both refuse a schema newer
than the code (StoreUnavailable).
"""

from __future__ import annotations

import contextlib
import sqlite3
from dataclasses import dataclass

from relay.config import StoreUrl
from relay.errors import StoreUnavailable


@dataclass(frozen=True)
class Migrated:
    """The schema version before and after; ``latest``: the version this relay knows."""

    before: int
    after: int
    latest: int


def migrate(where: StoreUrl) -> Migrated:
    """Apply the pending migrations of the store at ``where``."""
    if where.backend == "postgresql":
        return _migrate_postgres(where.url)
    assert where.path is not None
    return _migrate_sqlite(where)


def _migrate_sqlite(where: StoreUrl) -> Migrated:
    from relay.store import schema
    from relay.store.db import open_database

    assert where.path is not None
    try:
        before = 0
        if where.path.exists():
            with contextlib.closing(sqlite3.connect(where.path)) as probe:
                before = schema.schema_version(probe)
        conn = open_database(where.path)
        after = schema.schema_version(conn)
        conn.close()
    except sqlite3.DatabaseError as exc:
        raise StoreUnavailable(str(exc)) from exc
    return Migrated(before, after, len(schema.MIGRATIONS))


def _migrate_postgres(url: str) -> Migrated:
    import psycopg

    from relay.store.postgres import schema
    from relay.store.postgres.db import CONNECT_TIMEOUT, translate

    try:
        with psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT, autocommit=True) as conn:
            before = schema.schema_version(conn)
            after = schema.migrate(conn)
    except psycopg.Error as exc:
        raise translate(exc) from exc
    return Migrated(before, after, len(schema.MIGRATIONS))
