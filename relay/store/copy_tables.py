"""The tables a copy moves, read from this relay's SQLite schema, and the leases it releases on the way.

The list is never written down: :func:`reference_tables` applies :data:`relay.store.schema.MIGRATIONS` to
a database in memory and reads its catalog, so a table a later migration adds is copied without a change
here (its PostgreSQL twin has the same table and column names, tests/test_pg_database.py checks), but
for the tables in :data:`NOT_COPIED`.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Callable, Iterator
from typing import Any

BATCH_ROWS = 1000  # rows per transaction

Row = tuple[Any, ...]

# Tables of SQLite's schema that PostgreSQL has no twin of: where big bodies are in the spool beside a
# SQLite file (relay.store.spool). A copy reads those bodies as rows of ``message_bodies`` (see
# relay.store.copy_sides), which is where any target keeps what it is given.
SQLITE_ONLY = frozenset({"spooled_bodies"})

# Tables whose rows mean nothing in another store: dashboard sessions (their operators, in ``operators``,
# are copied; they sign in again); the SQLite-only ones.
NOT_COPIED = frozenset({"operator_sessions"}) | SQLITE_ONLY


@dataclasses.dataclass(frozen=True)
class Table:
    """A table as the copy sees it: its columns, its primary key, and which columns hold bytes."""

    name: str
    columns: tuple[str, ...]
    key: tuple[str, ...]
    blobs: frozenset[str]

    @property
    def quoted(self) -> str:
        return quote(self.name)


def reference_tables() -> list[Table]:
    """The tables of this relay's SQLite schema, parents first (see the module docstring)."""
    from relay.store import schema

    conn = sqlite3.connect(":memory:", isolation_level=None)
    try:
        schema.migrate(conn)
        return [t for t in tables_of(conn) if t.name not in NOT_COPIED]
    finally:
        conn.close()


def tables_of(conn: sqlite3.Connection) -> list[Table]:
    """The tables of a SQLite database, each after the tables its foreign keys refer to."""
    names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY rowid")]
    names = [n for n in names if not n.startswith("sqlite_")]
    parents = {n: {r[2] for r in conn.execute(f"PRAGMA foreign_key_list({quote(n)})")} - {n} for n in names}
    return [_table(conn, name) for name in _parents_first(names, parents)]


def _table(conn: sqlite3.Connection, name: str) -> Table:
    info = conn.execute(f"PRAGMA table_info({quote(name)})").fetchall()  # cid, name, type, notnull, default, pk
    key = tuple(c[1] for c in sorted((c for c in info if c[5] > 0), key=lambda c: c[5]))
    if not key:
        raise RuntimeError(f"table {name} has no primary key: a copy could not be run again safely")
    blobs = frozenset(c[1] for c in info if str(c[2]).upper() == "BLOB")
    return Table(name, tuple(c[1] for c in info), key, blobs)


def _parents_first(names: list[str], parents: dict[str, set[str]]) -> list[str]:
    ordered: list[str] = []
    placed: set[str] = set()

    def place(name: str, seen: tuple[str, ...]) -> None:
        if name in placed or name not in parents:
            return
        if name in seen:
            raise RuntimeError(f"foreign keys form a cycle through {name}")
        for parent in sorted(parents[name] & set(names), key=names.index):
            place(parent, (*seen, name))
        placed.add(name)
        ordered.append(name)

    for name in names:
        place(name, ())
    return ordered


def quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _release_recipient(row: dict[str, Any], now: float) -> None:
    if row["state"] == "sending":
        row.update(
            state="queued" if row["attempts"] == 0 else "deferred",
            next_attempt_at=now,
            lease_owner=None,
            lease_until=None,
            updated_at=now,
        )


def _release_webhook_delivery(row: dict[str, Any], now: float) -> None:
    if row["state"] == "pending":
        due = row["next_attempt_at"]
        row.update(next_attempt_at=now if due is None else min(due, now), lease_until=None)


RELEASES: dict[str, Callable[[dict[str, Any], float], None]] = {
    "recipients": _release_recipient,
    "webhook_deliveries": _release_webhook_delivery,
}


def released(table: Table, rows: Iterator[Row], now: float) -> Iterator[Row]:
    """The rows of ``table`` with their leases released (as they are for tables without leases)."""
    release = RELEASES.get(table.name)
    if release is None:
        yield from rows
        return
    for row in rows:
        values = dict(zip(table.columns, row, strict=True))
        release(values, now)
        yield tuple(values[c] for c in table.columns)
