"""SQLite plumbing: connections, pragmas, migrations, and the group-commit writer.

Every write goes through one writer thread. It takes all the operations that
are waiting, runs them in ONE transaction (each inside its own savepoint, so a
failing operation does not undo its neighbours), commits with a full fsync,
and only then resolves the callers' futures. Many concurrent submissions thus
share one fsync; an acknowledgement is never sent for data not on disk.

Reads run on a separate connection in a reader thread (WAL lets readers
proceed while the writer commits). Point lookups that the SMTP dialogue waits
on (is this recipient suppressed?) run on the caller's thread instead: the
read is ~5 µs, the hop to a thread and back ~60 µs of CPU.

When several processes share the file (``[server] acceptors``), writers take
turns through an flock on ``<db>.lock`` before ``BEGIN IMMEDIATE``: a blocked
writer wakes the moment the lock is free, where SQLite's own busy handler
would sleep and poll (measured: 5.7 of 8.6 seconds lost waiting).

Driver errors stay here: an operation that fails because the disk is full
raises :class:`relay.errors.StoreFull`, one that cannot read or write the file
(locked past its timeout, an I/O error) :class:`relay.errors.StoreUnavailable`;
the sqlite3 error is their ``__cause__``.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from relay.errors import StoreError, StoreFull, StoreUnavailable
from relay.store.batches import STOP, Pending, settle, take_batch
from relay.store.schema import migrate

log = logging.getLogger(__name__)

T = TypeVar("T")
Op = Callable[[sqlite3.Connection], Any]


def connect(path: Path) -> sqlite3.Connection:
    """A connection with relay's pragmas. Durability: WAL + synchronous=FULL fsyncs every commit."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10.0)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=10000")
    # Each operation of a group commit runs in a savepoint, so SQLite keeps a statement journal of the pages
    # it changes: in a temporary file by default (a create, ~45 small writes per message and an unlink per
    # commit, measured with strace), in memory with this.
    conn.execute("PRAGMA temp_store=MEMORY")
    return conn


def open_database(path: Path) -> sqlite3.Connection:
    """Create the data directory and file (owner-only) and bring the schema up to date."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not path.exists():
        fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
        os.close(fd)
    conn = connect(path)
    migrate(conn)
    return conn


SQLITE_FULL = 13


def translate(exc: BaseException) -> BaseException:
    """The relay error for a driver error (disk full, locked, I/O); any other exception as it is."""
    if not isinstance(exc, sqlite3.OperationalError):
        return exc
    full = getattr(exc, "sqlite_errorcode", None) == SQLITE_FULL or "full" in str(exc)
    error: StoreError = StoreFull(str(exc)) if full else StoreUnavailable(str(exc))
    error.__cause__ = exc
    return error


class Database:
    """Async access to one SQLite file: batched writes, threaded reads."""

    in_process = True  # look-ups run inline, writes in this process

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = str(path)
        try:
            self._write_conn = open_database(path)
        except sqlite3.DatabaseError as exc:  # not a database, cannot open the file, corrupt, locked
            raise StoreUnavailable(str(exc)) from exc
        self._lock_fd = os.open(f"{path}.lock", os.O_CREAT | os.O_RDWR, 0o600)
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._writer = threading.Thread(target=self._write_loop, name="relay-db-writer", daemon=True)
        self._read_conn = connect(path)
        self._lookup_conn = connect(path)
        self._lookup_conn.execute("PRAGMA busy_timeout=50")  # never hold the event loop for long
        self._lookup_lock = threading.Lock()
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="relay-db-reader")
        self._closed = False
        self.commits = 0  # transactions committed (for stats and benchmarks)
        self.writes = 0  # operations committed
        self.lock_wait = 0.0  # seconds spent waiting for the write lock (other processes)
        self.commit_time = 0.0  # seconds spent committing (fsync)
        self._writer.start()

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` inside the next group transaction; return once it is committed to disk."""
        if self._closed:
            raise RuntimeError("database is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put(Pending(fn, future, loop))
        return await future

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._reader, fn, self._read_conn)
        except sqlite3.OperationalError as exc:
            raise translate(exc) from exc

    async def lookup(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """A short indexed read, run right here (not in the reader thread). Only for reads that touch
        a few rows by index; if the file is busy (rare in WAL mode) it goes to the reader thread."""
        if self._lookup_lock.acquire(blocking=False):
            try:
                return fn(self._lookup_conn)
            except sqlite3.OperationalError as exc:
                log.debug("inline read failed (%s); reading in the reader thread", exc)
            finally:
                self._lookup_lock.release()
        return await self.read(fn)

    def listen(self, channel: str, callback: Callable[[], None]) -> None:
        """Nothing to listen to: SQLite serves one machine, whose processes wake each other by a socket."""

    async def close(self) -> None:
        """Finish every queued write, then close both connections."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(STOP)
        await asyncio.get_running_loop().run_in_executor(None, self._writer.join)
        log.info(
            "database: %d writes in %d commits; %.1fs waiting for the write lock, %.1fs committing",
            self.writes,
            self.commits,
            self.lock_wait,
            self.commit_time,
        )
        self._reader.shutdown(wait=True)
        self._read_conn.close()
        self._lookup_conn.close()
        self._write_conn.close()
        os.close(self._lock_fd)

    # -- writer thread -----------------------------------------------------

    def _write_loop(self) -> None:
        stopping = False
        while not stopping:
            batch, stopping = take_batch(self._queue)
            if batch:
                self._commit_batch(batch)

    def _commit_batch(self, batch: list[Pending]) -> None:
        conn = self._write_conn
        results: list[tuple[bool, Any]] = []
        t0 = time.perf_counter()
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        self.lock_wait += time.perf_counter() - t0
        try:
            conn.execute("BEGIN IMMEDIATE")
            for pending in batch:
                results.append(self._run_one(conn, pending.fn))
            t1 = time.perf_counter()
            conn.execute("COMMIT")
            self.commit_time += time.perf_counter() - t1
            self.commits += 1
            self.writes += len(batch)
        except Exception as exc:  # the commit itself failed: nothing in the batch is durable
            log.error("database commit failed: %s", exc)
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            results = [(False, translate(exc))] * len(batch)
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
        settle([(pending, ok, value) for pending, (ok, value) in zip(batch, results, strict=True)])

    @staticmethod
    def _run_one(conn: sqlite3.Connection, fn: Op) -> tuple[bool, Any]:
        conn.execute("SAVEPOINT op")
        try:
            value = fn(conn)
        except Exception as exc:
            conn.execute("ROLLBACK TO op")
            conn.execute("RELEASE op")
            return False, translate(exc)
        conn.execute("RELEASE op")
        return True, value
