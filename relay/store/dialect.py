"""The connection the repositories' SQL functions take, whichever database runs them.

Every repository keeps its SQL in plain functions of a connection (``def revoke(conn, key_id, now)``)
written once, in the subset of SQL that SQLite and PostgreSQL read alike: ``?`` placeholders,
``INSERT ... ON CONFLICT``, ``RETURNING``, ``count(*) FILTER (WHERE ...)``, flags compared with
``TRUE``/``FALSE`` and written as Python bools. SQLite runs them on a ``sqlite3.Connection``;
PostgreSQL on :class:`relay.store.postgres.connection.PgConnection`, which turns the placeholders into
psycopg's. Where the two must differ (claiming due work across nodes, a cluster-wide lock), a function
asks :func:`is_postgres` and says why.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Protocol, TypeVar

Params = Sequence[Any]
T = TypeVar("T")


class Cursor(Protocol):
    """What the SQL functions use of a cursor (sqlite3's and psycopg's both have it)."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Connection(Protocol):
    """What the SQL functions use of a connection."""

    def execute(self, sql: str, parameters: Params = ..., /) -> Cursor: ...

    def executemany(self, sql: str, seq_of_parameters: Iterable[Params], /) -> Cursor: ...


def is_postgres(conn: Connection) -> bool:
    """Whether ``conn`` is PostgreSQL's (for the few statements that cannot be written for both)."""
    return not isinstance(conn, sqlite3.Connection)


def lock(conn: Connection, name: str) -> None:
    """Hold a lock named ``name`` until the transaction ends, for a read-then-write that must not interleave.

    SQLite has one writer at a time already: nothing to do. On PostgreSQL several nodes write at once,
    so this takes a transaction-level advisory lock (released by the commit or rollback).
    """
    if is_postgres(conn):
        conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(?, 0))", (name,)).fetchone()


class SqlDatabase(Protocol):
    """A database the repositories run their SQL functions on: SQLite's ``Database`` or ``PgDatabase``.

    ``write`` runs ``fn`` in the next group transaction and returns once it is durable; ``read`` runs
    it on a reader's connection; ``lookup`` is a read of a few indexed rows (SQLite runs it inline).
    """

    @property
    def name(self) -> str:
        """Which database this is (a path, or a URL without its password), the same in every process."""
        ...

    async def write(self, fn: Callable[[Connection], T]) -> T: ...

    async def read(self, fn: Callable[[Connection], T]) -> T: ...

    async def lookup(self, fn: Callable[[Connection], T]) -> T: ...

    async def close(self) -> None: ...
