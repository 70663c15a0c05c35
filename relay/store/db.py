"""SQLite plumbing: connections, pragmas, migrations, and the group-commit writer.

Every write goes through one group commit at a time. It takes all the operations
that are waiting, runs them in ONE transaction (each inside its own savepoint, so
a failing operation does not undo its neighbours), commits with a full fsync,
and only then resolves the callers' futures. Many concurrent submissions thus
share one fsync; an acknowledgement is never sent for data not on disk.

Where the statements run: the hot path's small operations (``write(fn,
light=True)``: queueing a message, claiming due work, recording outcomes) run on
the event loop's own thread; any other operation and the wait for another
process's write lock run in the writer thread. So does the COMMIT (the
fsync), which lets the event loop serve other clients meanwhile: COMMITs on the
loop's thread were tried and cost more than the hop (one process: 500-760
against 1,030-1,320 messages/s, bench/throughput.py --acceptors 0,
alternating; with acceptors, within the noise). The
sqlite3 module lets go of the GIL around every statement, and a thread that
wants it back while the event loop runs waits for the loop to give it up (up to
the 5 ms switch interval): a writer thread running ~7 statements a message
spent 4 of every 5 seconds of its transactions waiting so, holding the write
lock that the other processes wait for (measured with acceptors = 1). The writer
thread itself runs under SCHED_BATCH (relay.threads), so that its wake-ups do not
preempt the event loop's thread and pass the GIL back and forth with it.

What may skip the fsync: a write made with ``durable=False`` (claiming due work,
recording a delivery's outcome, and the same two for webhooks) must survive relay's crash but may be lost with the
machine's power; redone then, it delivers a recipient again (at least once, as
Postfix may after a power loss). A group made only of such writes commits with
``synchronous=NORMAL`` (WAL mode: the commit writes the log and does not wait
for the disk; a later full commit's fsync covers it) on the event loop's own
thread, with no hop to the writer thread: a delivering process's claims and
outcomes no longer wait for the disk nor hold the write lock meanwhile. A group
with any durable write (queueing a message) is fsynced as before.

Checkpoints (copying the log into the database file, with an fsync): a durable
commit runs SQLite's own when the log passes 1,000 pages, in the writer thread as
before; a quick commit, on the event loop's thread, never does. After
QUICK_COMMITS_PER_CHECKPOINT quick commits in a row (a process that only
delivers), a passive checkpoint runs in the reader thread.

Big bodies (relay.store.spool): the operations of a group stage them in the process's spool segment;
the commit writes and ``fdatasync``-s them just before its COMMIT, so no row ever points at bytes not on
disk; an operation that fails unstages its bodies, a group that fails discards them.

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
import functools
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar, cast

from relay.errors import StoreError, StoreFull, StoreUnavailable
from relay.store.batches import MAX_BATCH, Pending, settle
from relay.store.changes import ChangeCounts
from relay.store.schema import migrate
from relay.store.spool import BodySpool, spool_directory
from relay.threads import run_as_batch

log = logging.getLogger(__name__)

T = TypeVar("T")
Op = Callable[[sqlite3.Connection], Any]

BUSY_SECONDS = 10.0  # how long a connection waits for another's lock before "database is locked"
AUTOCHECKPOINT_PAGES = 1000  # SQLite's default wal_autocheckpoint, kept for durable commits
QUICK_COMMITS_PER_CHECKPOINT = 200  # quick commits in a row before a checkpoint in the reader thread


class SpoolingConnection(sqlite3.Connection):
    """A connection whose writes may put big bodies in a :class:`BodySpool` (relay.store.spool): the group
    commit's. Any other connection (``spool`` None) keeps every body in the database."""

    spool: BodySpool | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.notifications: set[str] = set()  # channels notify()-ed in this transaction (relay.store.changes)


def spool_of(conn: object) -> BodySpool | None:
    """The spool the queue's writes on ``conn`` put big bodies in (None: keep them in the database)."""
    return conn.spool if isinstance(conn, SpoolingConnection) else None


def connect(path: Path) -> sqlite3.Connection:
    """A connection with relay's pragmas. Durability: WAL + synchronous=FULL fsyncs every commit."""
    conn = sqlite3.connect(
        path, isolation_level=None, check_same_thread=False, timeout=BUSY_SECONDS, factory=SpoolingConnection
    )
    _write_ahead_log(conn)
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute(f"PRAGMA busy_timeout={int(BUSY_SECONDS * 1000)}")
    # Each operation of a group commit runs in a savepoint, so SQLite keeps a statement journal of the pages
    # it changes: in a temporary file by default (a create, ~45 small writes per message and an unlink per
    # commit, measured with strace), in memory with this.
    conn.execute("PRAGMA temp_store=MEMORY")
    return conn


def _write_ahead_log(conn: sqlite3.Connection) -> None:
    """Put the file in WAL mode (it stays so). Connections switching a new file at the same moment (relay serve
    and relay migrate started together) get "database is locked" at once, without SQLite's busy handler: the
    one that lost waits for the one that won, as the busy timeout would."""
    deadline = time.monotonic() + BUSY_SECONDS
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.005)


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
        self.spool: BodySpool | None = BodySpool(spool_directory(path))
        cast(SpoolingConnection, self._write_conn).spool = self.spool
        self._synchronous_full = True  # the write connection's mode: FULL with checkpoints, or NORMAL without
        self._quick_streak = 0  # quick commits since the last durable one or checkpoint
        self._checkpointing = False
        self._lock_fd = os.open(f"{path}.lock", os.O_CREAT | os.O_RDWR, 0o600)
        self._changes = ChangeCounts(path)
        self._waiting: list[Write] = []  # operations for the next group commit
        self._waiting_lock = threading.Lock()
        self._committer: asyncio.Task[None] | None = None  # runs group commits while operations wait
        self._writer = WriterThread()
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
        self.quick_commits = 0  # of those, commits without an fsync (durable=False writes only)
        self.checkpoints = 0  # passive checkpoints run in the reader thread (after many quick commits)

    async def write(self, fn: Callable[[sqlite3.Connection], T], light: bool = False, durable: bool = True) -> T:
        """Run ``fn`` inside the next group transaction; return once it is committed to disk.

        ``light``: ``fn`` is a few indexed statements (it runs on the event loop's thread; see above) and
        nothing else: a group of light writes runs without a savepoint each, and all of it again, one
        savepoint each, if one of them raises (:meth:`_run_together`).
        ``durable=False``: it may be lost with the power, not with a crash of relay (see above)."""
        if self._closed:
            raise RuntimeError("database is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        with self._waiting_lock:
            self._waiting.append(Write(fn, future, loop, light, durable))
            if self._committer is None:
                self._committer = loop.create_task(self._commit_while_waiting(), name="relay-db-commit")
        return await future

    async def write_alone(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """In the next group commit: SQLite has one writer at a time anyway (see SqlDatabase.write_alone)."""
        return await self.write(fn, light=True)

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

    def changes(self, channel: str) -> Callable[[], int]:
        """The count of commits that notified ``channel`` (one of relay.store.changes.CHANNELS), every
        process's: read from memory shared with them."""
        return functools.partial(self._changes.count, channel)

    async def close(self) -> None:
        """Finish every queued write, then close both connections."""
        if self._closed:
            return
        self._closed = True
        committer = self._committer
        if committer is not None and committer.get_loop() is asyncio.get_running_loop():
            await asyncio.shield(committer)  # what was asked is written (even if this close is cancelled)
        self._writer.stop()
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
        if self.spool is not None:
            self.spool.close()
        self._changes.close()
        os.close(self._lock_fd)

    # -- group commits ----------------------------------------------------

    async def _commit_while_waiting(self) -> None:
        """Commit the waiting operations in groups until none wait (new ones gather during each commit)."""
        loop = asyncio.get_running_loop()
        finished = False
        try:
            while True:
                with self._waiting_lock:
                    batch, self._waiting = self._waiting[:MAX_BATCH], self._waiting[MAX_BATCH:]
                    if not batch:
                        self._committer = None
                        finished = True
                        return
                hops = _Hops(self._writer)
                try:
                    await self._commit_batch(batch, hops, loop)
                except Exception as exc:  # the write lock could not be taken: nothing was written
                    log.error("database commit failed: %s", exc)
                    _settle(batch, [(False, translate(exc))] * len(batch), loop)
                if hops.cancelled:  # the event loop is shutting down (the batch was finished regardless)
                    return
        finally:
            if not finished:
                with self._waiting_lock:
                    self._committer = None
                    left, self._waiting = self._waiting, []
                closing = StoreUnavailable("the database is closing")
                settle([(write, False, closing) for write in left])  # nobody would commit these: tell their callers

    async def _commit_batch(self, batch: list[Write], hops: _Hops, loop: asyncio.AbstractEventLoop) -> None:
        conn = self._write_conn
        results: list[tuple[bool, Any]] = []
        t0 = time.perf_counter()
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # another process is committing: wait for it in the writer thread
            await hops.run(fcntl.flock, self._lock_fd, fcntl.LOCK_EX)
        self.lock_wait += time.perf_counter() - t0
        durable = any(write.durable for write in batch)
        try:
            if durable != self._synchronous_full:  # outside any transaction, as SQLite requires
                conn.execute("PRAGMA synchronous=FULL" if durable else "PRAGMA synchronous=NORMAL")
                conn.execute(f"PRAGMA wal_autocheckpoint={AUTOCHECKPOINT_PAGES if durable else 0}")
                self._synchronous_full = durable
            conn.execute("BEGIN IMMEDIATE")  # at once: this process holds the write lock now
            together = self._run_together(conn, batch) if all(write.light for write in batch) else None
            if together is not None:
                results = together
            else:
                for write in batch:
                    if write.light and not hops.cancelled:
                        results.append(self._run_one(conn, write.fn))
                    else:
                        results.append(await hops.run(self._run_one, conn, write.fn))
            if durable:
                await hops.run(self._commit_and_unlock, conn, len(batch))
                self._quick_streak = 0
            else:  # no fsync: a few writes to the log, here rather than a hop to the writer thread and back
                self._commit_and_unlock(conn, len(batch))
                self.quick_commits += 1
                self._quick_streak += 1
        except Exception as exc:  # the commit itself failed: nothing in the batch is durable
            log.error("database commit failed: %s", exc)
            if self.spool is not None:
                self.spool.discard()
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            cast(SpoolingConnection, conn).notifications.clear()
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            results = [(False, translate(exc))] * len(batch)
        _settle(batch, results, loop)
        if self._quick_streak >= QUICK_COMMITS_PER_CHECKPOINT and not self._checkpointing:
            self._quick_streak = 0
            self._checkpointing = True
            loop.run_in_executor(self._reader, self._checkpoint).add_done_callback(self._checkpointed)

    def _checkpoint(self) -> None:
        """Copy the log into the database file (passive: it waits for nobody), in the reader thread."""
        self._read_conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def _checkpointed(self, done: asyncio.Future[None]) -> None:
        self._checkpointing = False
        if done.cancelled():
            return
        if done.exception() is not None:  # the next streak of quick commits tries again
            log.warning("database checkpoint failed: %s", done.exception())
            return
        self.checkpoints += 1

    def _commit_and_unlock(self, conn: sqlite3.Connection, operations: int) -> None:
        """COMMIT and let the other processes write: in the writer thread for a durable group (the fsync),
        on the event loop's thread for a quick one."""
        t1 = time.perf_counter()
        if self.spool is not None and self.spool.pending:
            self.spool.flush()  # the bodies the transaction's rows point at, on disk before them
        conn.execute("COMMIT")
        notifications = cast(SpoolingConnection, conn).notifications
        if notifications:  # while the write lock is held: see relay.store.changes
            self._changes.bump(notifications)
            notifications.clear()
        fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
        self.commit_time += time.perf_counter() - t1
        self.commits += 1
        self.writes += operations

    def _run_together(self, conn: sqlite3.Connection, batch: list[Write]) -> list[tuple[bool, Any]] | None:
        """Run a group of light operations without a savepoint each (two statements an operation saved);
        if one raises, roll them all back, begin again and return None: the caller then runs them one
        savepoint each, so that only the failing one fails. A light operation is SQL alone, so running
        it again after a rollback does again what it did (a big body it staged is staged again)."""
        results: list[tuple[bool, Any]] = []
        try:
            for write in batch:
                results.append((True, write.fn(conn)))
        except Exception:
            if self.spool is not None:
                self.spool.discard()
            conn.execute("ROLLBACK")
            cast(SpoolingConnection, conn).notifications.clear()
            conn.execute("BEGIN IMMEDIATE")
            return None
        return results

    def _run_one(self, conn: sqlite3.Connection, fn: Op) -> tuple[bool, Any]:
        conn.execute("SAVEPOINT op")
        staged = self.spool.mark() if self.spool is not None else 0
        try:
            value = fn(conn)
        except Exception as exc:
            if self.spool is not None:
                self.spool.unstage(staged)
            conn.execute("ROLLBACK TO op")
            conn.execute("RELEASE op")
            return False, translate(exc)
        conn.execute("RELEASE op")
        return True, value


class Write(Pending):
    """An operation waiting for a group commit; ``light`` ones run on the event loop's thread; a group of
    writes none of which is ``durable`` commits without an fsync."""

    __slots__ = ("light", "durable")

    def __init__(
        self, fn: Op, future: asyncio.Future[Any], loop: asyncio.AbstractEventLoop, light: bool, durable: bool = True
    ) -> None:
        super().__init__(fn, future, loop)
        self.light = light
        self.durable = durable


class WriterThread:
    """The thread that waits for the write lock, runs the heavier operations and COMMITs. One call at a
    time, in order; a call's outcome goes back to its event loop with ``call_soon_threadsafe``.
    (A ThreadPoolExecutor with asyncio.wrap_future cost the delivering process ~12% of its CPU in
    ``submit`` and future chaining, for one call per commit.)"""

    def __init__(self) -> None:
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name="relay-db-writer", daemon=True)
        self._thread.start()

    def call(self, fn: Callable[..., Any], args: tuple[Any, ...], loop: asyncio.AbstractEventLoop) -> _Call:
        call = _Call(fn, args, loop)
        self._calls.put(call)
        return call

    def stop(self) -> None:
        self._calls.put(None)
        self._thread.join()

    def _serve(self) -> None:
        run_as_batch()  # its wake-ups do not preempt the event loop (relay.threads)
        while (call := self._calls.get()) is not None:
            call.run()


class _Call:
    """A call for the writer thread: ``done`` is held until it has run; ``future`` (on ``loop``) gets its outcome."""

    __slots__ = ("fn", "args", "loop", "future", "done", "ok", "value")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...], loop: asyncio.AbstractEventLoop) -> None:
        self.fn, self.args, self.loop = fn, args, loop
        self.future: asyncio.Future[Any] = loop.create_future()
        self.done = threading.Lock()
        self.done.acquire()
        self.ok = False
        self.value: Any = None

    def run(self) -> None:
        try:
            self.ok, self.value = True, self.fn(*self.args)
        except BaseException as exc:  # handed to the caller, whatever it is
            self.ok, self.value = False, exc
        self.done.release()
        try:
            self.loop.call_soon_threadsafe(self._settle)
        except RuntimeError:  # that event loop has closed: a caller waiting on ``done`` has the outcome
            pass

    def _settle(self) -> None:
        if not self.future.done():
            self.future.set_result(self.value) if self.ok else self.future.set_exception(self.value)

    def result(self) -> Any:
        """Wait here (blocking) for the call to have run, and give its outcome."""
        with self.done:
            pass
        if not self.ok:
            raise self.value
        return self.value


class _Hops:
    """Calls run in the writer thread for one group commit. If the event loop cancels the commit (it is
    shutting down), the rest of the commit runs here, blocking: a transaction is never left open."""

    def __init__(self, writer: WriterThread) -> None:
        self.writer = writer
        self.cancelled = False

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        if self.cancelled:
            return fn(*args)
        call = self.writer.call(fn, args, asyncio.get_running_loop())
        try:
            return cast(T, await call.future)
        except asyncio.CancelledError:
            self.cancelled = True
            return cast(T, call.result())


def _settle(batch: list[Write], results: list[tuple[bool, Any]], loop: asyncio.AbstractEventLoop) -> None:
    """Resolve the callers' futures: those of this event loop at once, any other's on its own loop."""
    here = [(w.future, ok, value) for w, (ok, value) in zip(batch, results, strict=True) if w.loop is loop]
    for future, ok, value in here:
        if not future.done():
            future.set_result(value) if ok else future.set_exception(value)
    settle([(w, ok, value) for w, (ok, value) in zip(batch, results, strict=True) if w.loop is not loop])
