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
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    from relay.store.spool import BodySpool

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


# A statement that begins with this is planned anew every time it runs on PostgreSQL, with its own
# parameters and the tables' sizes of the moment, never from a prepared statement's cached plan. For the
# claims, which walk a due index to a LIMIT: psycopg prepares a statement run five times, and the plan
# PostgreSQL then keeps for every later run was the one that suited the first runs, on a table of a few
# rows (read it all and sort it); after a burst that plan read every due row to return 24 (a webhook
# claim 30 us a message one run, 1,937 us the next). SQLite reads it as a comment.
PLAN_EACH_TIME = "/* planned each time */ "

# A statement that begins with this (after PLAN_EACH_TIME, if both) has its rows sent by PostgreSQL in
# binary form. For message bodies: in text form a BYTEA travels as hex, twice its size, which the server
# writes and the client parses again (a 100 KB body cost 440 us of the server's CPU and 360 of relay's,
# 170-240 and 140-165 in binary; 5 KB bodies 25-30 and 24-26 us, 10-15 and 9-10). Only where every
# column's type has a binary form psycopg reads as the text one (text, numbers, bytea). SQLite reads it
# as a comment.
BINARY_ROWS = "/* binary rows */ "


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


def try_lock(conn: Connection, name: str) -> bool:
    """Take the lock named ``name`` until the transaction ends if no one holds it; False if someone does.

    For work one node at a time is enough for (housekeeping): the others skip it instead of waiting.
    SQLite: always True (one writer at a time already).
    """
    if not is_postgres(conn):
        return True
    row = conn.execute("SELECT pg_try_advisory_xact_lock(hashtextextended(?, 0))", (name,)).fetchone()
    return bool(row[0])


def notify(conn: Connection, channel: str) -> None:
    """Tell the other processes of ``channel`` (:meth:`SqlDatabase.listen`, :meth:`SqlDatabase.changes`)
    once this transaction commits.

    PostgreSQL: a NOTIFY sent once per transaction, however many operations ask (every node hears it,
    and only once the work is durable). SQLite: the channel's count in memory shared by the machine's
    processes goes up by one (relay.store.changes; a channel without a count: nothing, as one machine's
    processes wake each other for new work by a socket of their own, relay.workers).
    """
    notifications = getattr(conn, "notifications", None)
    if notifications is not None:
        notifications.add(channel)


class SqlDatabase(Protocol):
    """A database the repositories run their SQL functions on: SQLite's ``Database`` or ``PgDatabase``.

    ``write`` runs ``fn`` in the next group transaction and returns once it is durable; ``read`` runs
    it on a reader's connection; ``lookup`` is a read of a few indexed rows (SQLite runs it inline).
    """

    @property
    def name(self) -> str:
        """Which database this is (a path, or a URL without its password), the same in every process."""
        ...

    @property
    def spool(self) -> BodySpool | None:
        """Where this process writes big bodies (SQLite's spool beside its file); PostgreSQL: None."""
        ...

    @property
    def in_process(self) -> bool:
        """Whether the database runs in this process (SQLite: ``lookup`` answers inline) or is a server."""
        ...

    async def write(self, fn: Callable[[Connection], T], light: bool = False, durable: bool = True) -> T:
        """``light``: ``fn`` is a few indexed statements on the hot path (SQLite runs those on the event
        loop's thread, see relay.store.db; PostgreSQL's writer thread waits on the server anyway).

        ``durable=False``: the write must survive relay's crash but may be lost with the machine's power,
        as a delivery's outcome may (the recipient is delivered again, at least once, as Postfix does after
        a power loss). SQLite then commits a group made only of such writes without an fsync; PostgreSQL
        commits every group synchronously."""
        ...

    async def write_alone(self, fn: Callable[[Connection], T]) -> T:
        """A short write to a row many writers update (a rate counter), committed on its own before it
        returns. PostgreSQL runs it on a pooled connection, outside the group transaction: there, the row
        would stay locked until the group commits, so the writers of two processes or nodes waited for
        each other's whole group on it, and deadlocked with the other rows their groups update (each
        costing the server's deadlock_timeout). SQLite, one writer at a time, runs it in the group commit."""
        ...

    async def read(self, fn: Callable[[Connection], T]) -> T: ...

    async def lookup(self, fn: Callable[[Connection], T]) -> T: ...

    def listen(self, channel: str, callback: Callable[[], None]) -> None:
        """Call ``callback`` on this event loop whenever a transaction that :func:`notify`-ed ``channel``
        commits, in this process or another (PostgreSQL); SQLite never calls it."""
        ...

    def changes(self, channel: str) -> Callable[[], int]:
        """A function giving a count that changes whenever a transaction that :func:`notify`-ed ``channel``
        commits: this process's at once (before its write returns), another's or another node's as soon
        as it is heard of. For what a process keeps in memory to know when to read again; ask it on the
        event loop's thread. ``channel`` is one of relay.store.changes.CHANNELS."""
        ...

    async def close(self) -> None: ...
