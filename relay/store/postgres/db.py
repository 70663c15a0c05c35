"""PostgreSQL plumbing: the group-commit writer, pooled reads, and the translation of driver errors.

The callables are ``async def fn(conn: AsyncConnection) -> T``: the same one-argument shape as the
SQLite ``Database``'s (a repository keeps its SQL in plain functions of a connection and hands them
over as ``lambda c: enqueue(c, ...)``), but async, since every statement is a round trip to the
server that the event loop must not block on. They get the connection rather than a cursor so that
one operation can open its own cursors, use ``executemany`` or a pipeline (several statements in one
round trip), and ``RETURNING`` rows; they must not commit, roll back or open transactions themselves.
Rows are tuples, as sqlite3's default.

Writes: one writer task owns one connection. It takes every operation waiting (up to MAX_BATCH),
runs them one after another in ONE transaction and commits with ``synchronous_commit = on`` (set on
the connection, whatever the server's default), and only then resolves the callers' futures: many
concurrent writers share one commit and its WAL flush; nothing is acknowledged before it is durable.
Operations that arrive while a commit is in flight wait for the next batch.

Each statement is a round trip, and the writer's connection does nothing else meanwhile: with 50
writers inserting two rows each, one statement at a time gives 3,400-5,900 writes/s (bench/pg_commit.py;
SQLite 42,000-45,000 on the same disk). ``write(fn, pipelined=True)`` lets the batch send such operations'
statements in one pipeline without waiting for each result (9,800-17,500 writes/s measured). The
price is that in a pipeline ``cursor.rowcount`` is -1 until a result is fetched, so only an operation
that reads its results by fetching rows (``RETURNING`` ... ``fetchone()``), or none, may be pipelined;
the others run one statement at a time between the pipelined runs of the same batch.

A failing operation does not sink its neighbours. Savepoints would cost two extra round trips for
every operation; instead the batch runs without them, and when one operation raises, the transaction
is rolled back, that operation gets its error, and the batch runs again without it (the others run
again from the start: their effects of the first run were rolled back, so an operation must do
nothing outside the database that it cannot do twice). In a pipeline the failing statement's
operation is not known: the batch is rolled back and run again one statement at a time, which finds
it. An error that is the
database's, not the operation's (connection lost, server shutting down, disk full), fails every
operation of the batch with the same error and writes nothing.

Errors are translated as the SQLite ``Database`` does: disk full (SQLSTATE 53100) raises
:class:`relay.errors.StoreFull`; a server that cannot be reached, a lost connection, an admin
shutdown, a cancelled statement or any other ``OperationalError`` raises
:class:`relay.errors.StoreUnavailable`; the driver's error is the ``__cause__``. Other errors (a
constraint violated, a bug in an operation) reach the caller as they are.

Reconnecting: a connection found broken is dropped and the next batch connects again, so the
database recovers by itself when the server is back. A batch that failed on a connection error before
its COMMIT was sent cannot have committed (the server rolls back a transaction whose session is gone),
so if it ran on a connection kept from before, it is retried once on a new connection: the first
writes after a server restart succeed instead of failing on the stale connection. A batch whose
COMMIT was sent and whose answer was lost fails with StoreUnavailable, though it may have committed.
Reads come from a pool; a read that fails on a broken connection is retried once (reads change
nothing).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import psycopg
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from relay.errors import StoreError, StoreFull, StoreUnavailable
from relay.store.postgres.schema import migrate

log = logging.getLogger(__name__)

T = TypeVar("T")
Op = Callable[[AsyncConnection[Any]], Awaitable[Any]]

MAX_BATCH = 512
CONNECT_TIMEOUT = 5  # seconds to reach the server before a write or read fails as unavailable
POOL_SIZE = 4  # read connections; writes have their own


def translate(exc: BaseException) -> BaseException:
    """The relay error for a driver error (disk full, server unreachable, connection lost); any other as it is."""
    error: StoreError
    if isinstance(exc, psycopg.errors.DiskFull):
        error = StoreFull(str(exc))
    elif isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        error = StoreUnavailable(str(exc) or type(exc).__name__)
    else:
        return exc
    error.__cause__ = exc
    return error


class _Pending:
    __slots__ = ("fn", "future", "pipelined")

    def __init__(self, fn: Op, future: asyncio.Future[Any], pipelined: bool) -> None:
        self.fn = fn
        self.future = future
        self.pipelined = pipelined


class _PipelineFailed(Exception):
    """Something failed in a pipelined run: run the batch again one operation after another."""


class _OpFailed(Exception):
    """One operation of a batch raised ``error`` (not the database's fault): run the batch without it."""

    def __init__(self, index: int, error: BaseException) -> None:
        self.index = index
        self.error = error


class _BeforeCommit(Exception):
    """The connection failed before COMMIT was sent: nothing of the batch can have been committed."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


_STOP = object()


class PgDatabase:
    """Async access to one PostgreSQL database: group-committed writes on one connection, pooled reads.

    ``await open()`` (or ``async with``) migrates the schema and starts the writer; ``close()`` finishes
    the queued writes and closes every connection.
    """

    def __init__(self, url: str, pool_size: int = POOL_SIZE) -> None:
        self.url = url
        self._pool = AsyncConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            open=False,
            timeout=CONNECT_TIMEOUT,
            kwargs={"connect_timeout": CONNECT_TIMEOUT},
            name="relay-read",
        )
        self._conn: AsyncConnection[Any] | None = None
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self._closed = False
        self.commits = 0  # transactions committed (for stats and benchmarks)
        self.writes = 0  # operations committed
        self.reruns = 0  # batches run again without an operation that raised
        self.commit_time = 0.0  # seconds spent waiting for COMMIT (the WAL flush)

    async def __aenter__(self) -> PgDatabase:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> None:
        """Bring the schema up to date and start the writer. StoreUnavailable if the server cannot be reached
        or its schema is newer than this code."""
        try:
            self._conn = await self._connect()
            await migrate(self._conn)
        except StoreUnavailable:
            await self._drop_connection()
            raise
        except psycopg.Error as exc:
            await self._drop_connection()
            raise translate(exc) from exc
        await self._pool.open(wait=False)
        self._writer = asyncio.create_task(self._write_loop(), name="relay-pg-writer")

    async def write(self, fn: Callable[[AsyncConnection[Any]], Awaitable[T]], *, pipelined: bool = False) -> T:
        """Run ``fn`` inside the next group transaction; return once that transaction is durably committed.

        ``pipelined=True``: ``fn``'s statements may be sent in one pipeline with its neighbours' (a round
        trip for many statements). Only for an operation that reads results by fetching rows
        (``RETURNING`` ... ``fetchone()``): in a pipeline ``cursor.rowcount`` is -1 until a fetch.
        """
        if self._closed or self._writer is None:
            raise RuntimeError("database is closed" if self._closed else "database is not open")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Pending(fn, future, pipelined))
        return await future

    async def read(self, fn: Callable[[AsyncConnection[Any]], Awaitable[T]]) -> T:
        """Run ``fn`` on a pooled connection, in a transaction of its own."""
        try:
            return await self._read_once(fn)
        except psycopg.Error as exc:
            if isinstance(exc, PoolTimeout) or not isinstance(translate(exc), StoreUnavailable):
                raise translate(exc) from exc
            log.debug("read failed (%s); checking the pool and reading again", exc)
        try:
            await self._pool.check()  # drops the idle connections that the same outage broke
            return await self._read_once(fn)
        except psycopg.Error as exc:
            raise translate(exc) from exc

    async def _read_once(self, fn: Callable[[AsyncConnection[Any]], Awaitable[T]]) -> T:
        async with self._pool.connection() as conn:
            return await fn(conn)

    async def lookup(self, fn: Callable[[AsyncConnection[Any]], Awaitable[T]]) -> T:
        """A short indexed read: the same as :meth:`read` here (SQLite runs these inline; a server cannot)."""
        return await self.read(fn)

    async def close(self) -> None:
        """Finish every queued write, then close the connections."""
        if self._closed:
            return
        self._closed = True
        if self._writer is not None:
            self._queue.put_nowait(_STOP)
            await self._writer
        log.info("database: %d writes in %d commits; %.1fs committing", self.writes, self.commits, self.commit_time)
        if self._conn is not None:
            await self._conn.close()
        await self._pool.close()

    # -- writer task -------------------------------------------------------

    async def _connect(self) -> AsyncConnection[Any]:
        conn = await AsyncConnection.connect(self.url, connect_timeout=CONNECT_TIMEOUT)
        await conn.execute("SET synchronous_commit = on")
        await conn.commit()
        return conn

    async def _write_loop(self) -> None:
        stopping = False
        while not stopping:
            item = await self._queue.get()
            if item is _STOP:
                break
            batch = [item]
            while len(batch) < MAX_BATCH and not self._queue.empty():
                item = self._queue.get_nowait()
                if item is _STOP:
                    stopping = True
                    break
                batch.append(item)
            await self._commit_batch(batch)

    async def _commit_batch(self, batch: list[_Pending]) -> None:
        """Commit what can be of ``batch``, resolving every future: a value, its own error, or the batch's."""
        pending = [p for p in batch if not p.future.cancelled()]
        retried = False
        pipelined = True  # until something fails: then one statement at a time, to know which operation it was
        while pending:
            try:
                fresh = self._conn is None or self._conn.closed
                if fresh:
                    self._conn = None
                    self._conn = await self._connect()
                values = await self._run(pending, pipelined)
            except _PipelineFailed:
                pipelined = False
                continue
            except _OpFailed as failed:
                _settle(pending.pop(failed.index), error=failed.error)
                self.reruns += 1
                continue
            except _BeforeCommit as lost:
                await self._drop_connection()
                if not fresh and not retried:
                    retried = True
                    log.info("database connection lost (%s); retrying the batch on a new one", lost.error)
                    continue
                _fail_all(pending, translate(lost.error))
                return
            except Exception as exc:  # connecting or committing failed: nothing durable that we know of
                log.error("database commit failed: %s", exc)
                if self._conn is not None and (self._conn.broken or self._conn.closed):
                    await self._drop_connection()
                _fail_all(pending, translate(exc))
                return
            for item, value in zip(pending, values, strict=True):
                _settle(item, value=value)
            return

    async def _run(self, batch: list[_Pending], pipelined: bool) -> list[Any]:
        """Run ``batch`` in one transaction and commit it; its values. The exceptions say what to do next."""
        conn = self._conn
        assert conn is not None
        try:
            values = await (_run_pipelined(conn, batch) if pipelined else _run_each(conn, batch))
        except (_OpFailed, _PipelineFailed):
            await conn.rollback()
            raise
        except psycopg.Error as exc:
            if conn.broken or conn.closed:
                raise _BeforeCommit(exc) from exc
            await conn.rollback()  # the server said no (disk full...): the session is still good
            raise
        t0 = time.perf_counter()
        await conn.commit()
        self.commit_time += time.perf_counter() - t0
        self.commits += 1
        self.writes += len(batch)
        return values

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await conn.close()
            except psycopg.Error:
                pass


async def _run_each(conn: AsyncConnection[Any], batch: list[_Pending]) -> list[Any]:
    """One operation after another, each statement waiting for its result: a failure names its operation."""
    values = []
    for index, item in enumerate(batch):
        try:
            values.append(await item.fn(conn))
        except psycopg.Error as exc:
            if isinstance(translate(exc), StoreError):
                raise
            raise _OpFailed(index, exc) from exc
        except Exception as exc:
            raise _OpFailed(index, exc) from exc
    return values


async def _run_pipelined(conn: AsyncConnection[Any], batch: list[_Pending]) -> list[Any]:
    """The pipelined operations' statements sent without waiting for each result, the others one by one."""
    values: list[Any] = []
    try:
        index = 0
        while index < len(batch):
            if not batch[index].pipelined:
                values.append(await batch[index].fn(conn))
                index += 1
                continue
            async with conn.pipeline():
                while index < len(batch) and batch[index].pipelined:
                    values.append(await batch[index].fn(conn))
                    index += 1
    except Exception as exc:
        if isinstance(exc, psycopg.Error) and (conn.broken or conn.closed):
            raise
        raise _PipelineFailed() from exc  # which operation failed is not known here: run them one by one
    return values


def _settle(item: _Pending, value: Any = None, error: BaseException | None = None) -> None:
    if item.future.done():
        return
    if error is not None:
        item.future.set_exception(error)
    else:
        item.future.set_result(value)


def _fail_all(batch: list[_Pending], error: BaseException) -> None:
    for item in batch:
        _settle(item, error=error)
