"""PostgreSQL plumbing: the group-commit writer, pooled reads, and the translation of driver errors.

:class:`PgDatabase` has the SQLite ``Database``'s contract and methods (``write``, ``read``,
``lookup``, ``close``) and runs the same operations: plain functions of a connection, handed over as
``lambda c: revoke(c, key_id, now)``, whose SQL (``?`` placeholders) :class:`PgConnection` passes to
psycopg. Like SQLite's, the connections are synchronous and live in threads of their own: one writer
thread, and a small pool of reader threads, each blocking on its round trips to the server while the
event loop goes on. Operations must not commit, roll back or open transactions themselves.

Writes: the writer thread owns one connection. It takes every operation waiting (up to batches.MAX_BATCH),
runs them one after another in ONE transaction and commits with ``synchronous_commit = on`` (set on
the connection, whatever the server's default), and only then resolves the callers' futures: many
concurrent writers share one commit and its WAL flush; nothing is acknowledged before it is durable.
Each statement is a round trip (tens of microseconds on loopback), so a statement saved in a hot
operation is worth more here than on SQLite.

A failing operation does not sink its neighbours. Savepoints would cost two extra round trips for
every operation; instead the batch runs without them, and when one operation raises, the transaction
is rolled back, that operation gets its error, and the batch runs again without it (the others run
again from the start: their effects of the first run were rolled back, so an operation must do
nothing outside the database that it cannot do twice). A batch that another node's transaction
deadlocked with, or that lost a serialization race, runs again whole (up to RERUNS times). An error
that is the database's, not the operation's (connection lost, server shutting down, disk full), fails
every operation of the batch with the same error and writes nothing.

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
Reads come from a pool (autocommit: each statement sees what is committed when it runs); a read that
fails on a broken connection is retried once (reads change nothing).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool, PoolTimeout

from relay.config import masked_url
from relay.errors import StoreError, StoreFull, StoreUnavailable
from relay.store.batches import STOP, Pending, settle, take_batch
from relay.store.postgres.connection import PgConnection
from relay.store.postgres.schema import migrate
from relay.threads import run_as_batch

log = logging.getLogger(__name__)

T = TypeVar("T")
Op = Callable[[PgConnection], Any]

CONNECT_TIMEOUT = 5  # seconds to reach the server before a write or read fails as unavailable
POOL_SIZE = 4  # read connections; writes have their own
LISTEN_POLL = 0.5  # seconds a listener waits for a notification before checking whether to stop
RERUNS = 5  # times a batch runs again after a deadlock or a serialization failure with another node


def translate(exc: BaseException) -> BaseException:
    """The relay error for a driver error (disk full, server unreachable, connection lost); any other as it is."""
    error: StoreError
    if isinstance(exc, psycopg.errors.DiskFull):
        error = StoreFull(str(exc))
    elif isinstance(exc, PoolTimeout):
        error = StoreUnavailable(f"no database connection: {exc}")
    elif isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        error = StoreUnavailable(str(exc) or type(exc).__name__)
    else:
        return exc
    error.__cause__ = exc
    return error


def _contended(exc: BaseException) -> bool:
    """A deadlock or serialization failure: another transaction's fault, not the operation's; run again."""
    return isinstance(exc, psycopg.errors.DeadlockDetected | psycopg.errors.SerializationFailure)


class _OpFailed(Exception):
    """One operation of a batch raised ``error`` (not the database's fault): run the batch without it."""

    def __init__(self, index: int, error: BaseException) -> None:
        self.index = index
        self.error = error


class _BeforeCommit(Exception):
    """The connection failed before COMMIT was sent: nothing of the batch can have been committed."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


class _PipelineFailed(Exception):
    """Something failed in a pipelined run: run the batch again one statement at a time."""


# The writer's statements take rows by key or walk an index in order up to a LIMIT (the queue's and the
# webhooks' claims: the first due rows). A burst makes a due backlog much bigger than the statistics
# from the last ANALYZE say (autovacuum analyzes a table after 10% of it changed, a minute at the
# soonest), and on such an estimate the planner reads every due row with a bitmap scan of the partial
# due index and sorts them to return the first 24: a webhook claim took 14 ms at 6,000 due, 0.5 ms
# walking the index. Bitmap scans read a whole set before the first row, so the writer's session does
# without them, and the claims are planned each time they run (relay.store.dialect.PLAN_EACH_TIME).
# (Sequential scans stay allowed: the planner picks one only where a table is small, and
# disabling them makes every statement that needs one cost 10^10, which switches on JIT compiling.)
WALK_INDEXES = "SET enable_bitmapscan = off"

# The hourly event counts of a group (event_counts, see relay.store.postgres.schema's migration 10): the
# events' trigger adds to this session's table, and the group adds them up just before its COMMIT, in one
# statement taking the rows in key order: two writers never hold two of them in opposite orders, and a
# row stays locked only from this statement to the COMMIT.
PENDING_COUNTS = (
    "CREATE TEMPORARY TABLE IF NOT EXISTS pending_event_counts (hour BIGINT, kind TEXT, tag TEXT, n BIGINT)"
)
COUNT_AT_COMMIT = (
    "WITH done AS (DELETE FROM pending_event_counts RETURNING hour, kind, tag, n)"
    " INSERT INTO event_counts SELECT hour, kind, tag, sum(n) FROM done GROUP BY hour, kind, tag"
    " ORDER BY hour, kind, tag ON CONFLICT (hour, kind, tag) DO UPDATE SET n = event_counts.n + excluded.n"
)


class _Contended(Exception):
    """Another node's transaction deadlocked with this batch or won a serialization race: run it again."""


class PgDatabase:
    """Access to one PostgreSQL database: group-committed writes on one connection, pooled reads.

    Constructing it connects, brings the schema up to date (StoreUnavailable if the server cannot be
    reached or its schema is newer than this code) and starts the writer; ``close()`` finishes the
    queued writes and closes every connection.
    """

    in_process = False  # a server: every statement is a round trip (see relay.store.coalesce)
    spool = None  # every body is in the database: the nodes share no file system

    def __init__(
        self, url: str, pool_size: int = POOL_SIZE, statement_timeout: float = 0.0, pipelined: bool = True
    ) -> None:
        self.url = url
        self.pipelined = pipelined  # send a batch's statements without waiting for each result
        self.name = masked_url(url)
        self.statement_timeout = statement_timeout
        self._conn: psycopg.Connection[Any] | None = None
        try:
            self._conn = self._connect()
            migrate(self._conn)
        except StoreUnavailable:
            self._drop_connection()
            raise
        except psycopg.Error as exc:
            self._drop_connection()
            raise translate(exc) from exc
        self._pool = ConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            open=False,
            timeout=CONNECT_TIMEOUT,
            kwargs={"connect_timeout": CONNECT_TIMEOUT, "autocommit": True, **self._options()},
            name="relay-read",
        )
        self._pool.open(wait=False)
        self._reader = ThreadPoolExecutor(max_workers=pool_size, thread_name_prefix="relay-pg-reader")
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._writer = threading.Thread(target=self._write_loop, name="relay-pg-writer", daemon=True)
        self._listeners: list[threading.Thread] = []
        self._change_counts: dict[str, int] = {}  # the channels asked about by changes(), and their counts
        self._change_lock = threading.Lock()  # bumped by the writer thread and on the event loop
        self._closed = False
        self.commits = 0  # transactions committed (for stats and benchmarks)
        self.writes = 0  # operations committed
        self.reruns = 0  # batches run again without an operation that raised, or after a deadlock
        self.commit_time = 0.0  # seconds spent waiting for COMMIT (the WAL flush)
        self._writer.start()

    def _options(self) -> dict[str, str]:
        if self.statement_timeout <= 0:
            return {}
        return {"options": f"-c statement_timeout={int(self.statement_timeout * 1000)}"}

    async def write(self, fn: Callable[[PgConnection], T], light: bool = False, durable: bool = True) -> T:
        """Run ``fn`` inside the next group transaction; return once that transaction is durably committed
        (every group is, ``durable`` or not)."""
        if self._closed:
            raise RuntimeError("database is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put(Pending(fn, future, loop))
        return await future

    async def write_alone(self, fn: Callable[[PgConnection], T]) -> T:
        """Run ``fn`` on a pooled connection (autocommit: committed when it returns), not in
        the writer's group transaction (see SqlDatabase.write_alone). Not run again after a lost connection:
        it may have committed."""
        if self._closed:
            raise RuntimeError("database is closed")
        return await asyncio.get_running_loop().run_in_executor(self._reader, self._write_alone, fn)

    def _write_alone(self, fn: Callable[[PgConnection], T]) -> T:
        try:
            return self._read_once(fn)
        except (psycopg.Error, PoolTimeout) as exc:
            raise translate(exc) from exc

    async def read(self, fn: Callable[[PgConnection], T]) -> T:
        """Run ``fn`` on a pooled connection (autocommit) in a reader thread."""
        return await asyncio.get_running_loop().run_in_executor(self._reader, self._read, fn)

    async def lookup(self, fn: Callable[[PgConnection], T]) -> T:
        """A short indexed read: the same as :meth:`read` here (SQLite runs these inline; a server cannot)."""
        return await self.read(fn)

    def _read(self, fn: Callable[[PgConnection], T]) -> T:
        try:
            return self._read_once(fn)
        except psycopg.Error as exc:
            if not isinstance(translate(exc), StoreUnavailable):
                raise translate(exc) from exc
            log.debug("read failed (%s); checking the pool and reading again", exc)
        except PoolTimeout as exc:
            raise translate(exc) from exc
        try:
            self._pool.check()  # drops the idle connections that the same outage broke
            return self._read_once(fn)
        except (psycopg.Error, PoolTimeout) as exc:
            raise translate(exc) from exc

    def _read_once(self, fn: Callable[[PgConnection], T]) -> T:
        with self._pool.connection() as conn:
            return fn(PgConnection(conn))

    def listen(self, channel: str, callback: Callable[[], None]) -> None:
        """Call ``callback`` on this event loop after each commit that notified ``channel`` (any node's).

        A thread of its own LISTENs on a connection of its own (autocommit, outside the pool and the
        writer); when the connection breaks it connects again, and calls ``callback`` once then (a
        notification sent meanwhile was missed).
        """
        loop = asyncio.get_running_loop()
        thread = threading.Thread(
            target=self._listen_loop, args=(channel, loop, callback), name=f"relay-pg-listen-{channel}", daemon=True
        )
        self._listeners.append(thread)
        thread.start()

    def changes(self, channel: str) -> Callable[[], int]:
        """A count of the commits that notified ``channel``: this process's counted by its writer before their
        writes return, any other's (other nodes') when their NOTIFY comes, and one more whenever the
        listening connection was lost (what came meanwhile was missed). The first call must be on the
        event loop that is to hear the other nodes."""
        with self._change_lock:
            first = channel not in self._change_counts
            self._change_counts.setdefault(channel, 0)
        if first:
            self.listen(channel, lambda: self._bump_changes({channel}))
        return lambda: self._change_counts[channel]

    def _bump_changes(self, channels: set[str]) -> None:
        with self._change_lock:
            for channel in [c for c in channels if c in self._change_counts]:
                self._change_counts[channel] += 1

    def _listen_loop(self, channel: str, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
        missed = False
        while not self._closed:
            try:
                with psycopg.connect(self.url, connect_timeout=CONNECT_TIMEOUT, autocommit=True) as conn:
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                    if missed:
                        loop.call_soon_threadsafe(callback)
                    while not self._closed:
                        for _ in conn.notifies(timeout=LISTEN_POLL):
                            loop.call_soon_threadsafe(callback)
            except psycopg.Error as exc:
                missed = True
                log.debug("listening on %s failed (%s); connecting again", channel, exc)
                time.sleep(LISTEN_POLL)
            except RuntimeError:  # the event loop closed: nobody to tell
                return

    async def close(self) -> None:
        """Finish every queued write, then close the connections."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(STOP)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._writer.join)
        for listener in self._listeners:
            await loop.run_in_executor(None, listener.join)
        log.info("database: %d writes in %d commits; %.1fs committing", self.writes, self.commits, self.commit_time)
        self._drop_connection()
        self._reader.shutdown(wait=True)
        await loop.run_in_executor(None, self._pool.close)

    # -- writer thread -----------------------------------------------------

    def _connect(self) -> psycopg.Connection[Any]:
        conn = psycopg.connect(self.url, connect_timeout=CONNECT_TIMEOUT, **self._options())  # type: ignore[arg-type]
        conn.execute("SET synchronous_commit = on")
        conn.execute(WALK_INDEXES)
        conn.execute(PENDING_COUNTS)
        conn.execute("SET relay.count_at_commit = on")
        conn.commit()
        return conn

    def _write_loop(self) -> None:
        run_as_batch()  # its wake-ups do not preempt the event loop (relay.threads)
        stopping = False
        while not stopping:
            batch, stopping = take_batch(self._queue)
            if batch:
                self._commit_batch(batch)

    def _commit_batch(self, batch: list[Pending]) -> None:
        """Commit what can be of ``batch``, resolving every future: a value, its own error, or the batch's."""
        pending = [p for p in batch if not p.future.cancelled()]
        retried = False
        contended = 0
        pipelined = self.pipelined  # until something fails: then one statement at a time, to know whose
        while pending:
            fresh = False
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = None
                    self._conn = self._connect()
                    fresh = True
                values = self._run_pipelined(pending) if pipelined else self._run(pending)
            except _PipelineFailed:
                pipelined = False
                continue
            except _OpFailed as failed:
                settle([(pending.pop(failed.index), False, failed.error)])
                self.reruns += 1
                continue
            except _Contended:
                contended += 1
                self.reruns += 1
                if contended <= RERUNS:
                    continue
                settle([(p, False, StoreUnavailable("the database stayed too contended to commit")) for p in pending])
                return
            except _BeforeCommit as lost:
                self._drop_connection()
                if not fresh and not retried:
                    retried = True
                    log.info("database connection lost (%s); retrying the batch on a new one", lost.error)
                    continue
                error = translate(lost.error)
                settle([(p, False, error) for p in pending])
                return
            except Exception as exc:  # connecting or committing failed: nothing durable that we know of
                log.error("database commit failed: %s", exc)
                if self._conn is not None and (self._conn.broken or self._conn.closed):
                    self._drop_connection()
                error = translate(exc)
                settle([(p, False, error) for p in pending])
                return
            settle([(p, True, v) for p, v in zip(pending, values, strict=True)])
            return

    def _run_pipelined(self, batch: list[Pending]) -> list[Any]:
        """Run ``batch`` in one transaction, its statements pipelined, and commit it; its values.

        Any failure (an operation's, or a statement's that surfaces in a later operation) raises
        _PipelineFailed after rolling back: the batch then runs one statement at a time, which tells
        whose failure it was. A lost connection raises _BeforeCommit as in :meth:`_run`.
        """
        conn = self._conn
        assert conn is not None
        try:
            with conn.pipeline() as pipeline:
                adapter = PgConnection(conn, pipeline)
                values = [item.fn(adapter) for item in batch]
                conn.execute(COUNT_AT_COMMIT)
                for channel in sorted(adapter.notifications):
                    conn.execute("SELECT pg_notify(%s, '')", (channel,))
        except Exception as exc:
            if conn.broken or conn.closed:
                raise _BeforeCommit(exc) from exc
            try:
                conn.rollback()
            except psycopg.Error as again:
                raise _BeforeCommit(again) from again
            if isinstance(exc, psycopg.Error) and _contended(exc):
                raise _Contended() from exc
            if isinstance(exc, psycopg.Error) and isinstance(translate(exc), StoreError):
                raise
            raise _PipelineFailed() from exc
        self._commit(conn)
        self._bump_changes(adapter.notifications)
        self.writes += len(batch)
        return values

    def _commit(self, conn: psycopg.Connection[Any]) -> None:
        t0 = time.perf_counter()
        try:
            conn.commit()
        except psycopg.Error as exc:
            if _contended(exc):  # a deferred check lost a race: nothing was committed
                raise _Contended() from exc
            raise
        self.commit_time += time.perf_counter() - t0
        self.commits += 1

    def _run(self, batch: list[Pending]) -> list[Any]:
        """Run ``batch`` in one transaction and commit it; its values. The exceptions say what to do next."""
        conn = self._conn
        assert conn is not None
        adapter = PgConnection(conn)
        values = []
        try:
            for index, item in enumerate(batch):
                try:
                    values.append(item.fn(adapter))
                except psycopg.Error as exc:
                    if conn.broken or conn.closed:
                        raise _BeforeCommit(exc) from exc
                    if _contended(exc):
                        raise _Contended() from exc
                    if isinstance(translate(exc), StoreError):
                        raise
                    raise _OpFailed(index, exc) from exc
                except Exception as exc:
                    raise _OpFailed(index, exc) from exc
        except (_OpFailed, _Contended):
            conn.rollback()
            raise
        except psycopg.Error:
            if not (conn.broken or conn.closed):
                conn.rollback()  # the server said no (disk full...): the session is still good
            raise
        try:
            conn.execute(COUNT_AT_COMMIT)
            for channel in sorted(adapter.notifications):
                conn.execute("SELECT pg_notify(%s, '')", (channel,))
        except psycopg.Error as exc:
            if conn.broken or conn.closed:
                raise _BeforeCommit(exc) from exc
            conn.rollback()
            if _contended(exc):
                raise _Contended() from exc
            raise
        self._commit(conn)
        self._bump_changes(adapter.notifications)
        self.writes += len(batch)
        return values

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except psycopg.Error:
                pass
