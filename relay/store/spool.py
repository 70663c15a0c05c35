"""Big message bodies kept beside a SQLite database, in segment files: written once, not twice.

A body stored in the database is written twice: into the write-ahead log at its commit, then into the
database file by the checkpoint that follows (and read back in between). A 100 KB message was a quarter
disk time so (bench/RESULTS.md, "eleventh session"). A body of SPOOL_MIN_BYTES or more goes instead into
a segment file in ``<database>-bodies/`` (beside ``-wal`` and ``-shm``), and the table ``spooled_bodies``
says where: segment, start, length. Smaller bodies stay in ``message_bodies``, where the extra fsync of a
segment would cost more than the copy saves. PostgreSQL keeps every body in the database: its nodes share
no file system.

Order of writes (nothing acknowledged that is not on disk):

1. an operation queueing a message stages its body (:meth:`BodySpool.stage`): the body is kept in memory
   and given its place at the end of this process's open segment; the row saying so is written in the
   same transaction;
2. before that transaction commits, :meth:`BodySpool.flush` writes the staged bodies and ``fdatasync``-s
   the segment (and the directory, for a segment it has just created);
3. then COMMIT. A crash between 2 and 3 leaves bytes no row points at, swept later with their segment.

Segments are appended to by one process each (a name of its own), for at most SEGMENT_SECONDS and up to
SEGMENT_BYTES; then it starts another. Retention deletes ``spooled_bodies`` rows as it deletes
``message_bodies`` rows; :func:`sweep` then unlinks every segment that no row points at and that nobody
has written for SWEEP_AFTER_SECONDS (so never one a process still appends to, whose rows may not have
committed yet), orphans of a crash included.
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
import time
from collections.abc import Iterable
from pathlib import Path

from relay.errors import StoreError, StoreFull, StoreUnavailable

log = logging.getLogger(__name__)

SPOOL_MIN_BYTES = 16 * 1024  # bodies this big or bigger go into segments
SEGMENT_BYTES = 64 * 1024 * 1024  # a process starts a new segment past this size ...
SEGMENT_SECONDS = 300.0  # ... or this long after it created the one it writes
SWEEP_AFTER_SECONDS = 3600.0  # an unreferenced segment untouched this long is removed
SUFFIX = ".seg"
IOV_MAX = 1024  # buffers a pwritev takes at once (Linux's limit)


def spool_directory(database: Path | str) -> Path:
    """Where the segments of the SQLite database at ``database`` live."""
    return Path(f"{database}-bodies")


class BodySpool:
    """One process's writer of segments in ``directory`` (used by one thread at a time: the group commit's)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._segment: str | None = None  # the name of the segment being appended to
        self._created = 0.0  # when it was created (monotonic)
        self._fd = -1
        self._end = 0  # its length once the staged bodies are written
        self._written_end = 0  # its length on disk (after the last flush)
        self._new = False  # created since the last flush: the directory needs an fsync
        self._staged: list[tuple[str, int, bytes]] = []  # segment, start, body

    @property
    def pending(self) -> bool:
        return bool(self._staged)

    @property
    def segment(self) -> str | None:
        return self._segment

    def stage(self, body: bytes) -> tuple[str, int]:
        """Give ``body`` its place (segment name, start) in the next :meth:`flush`."""
        if self._segment is None or self._end + len(body) > SEGMENT_BYTES and self._end > 0 or self._old():
            self._start_segment()
        assert self._segment is not None
        start = self._end
        self._staged.append((self._segment, start, body))
        self._end += len(body)
        return self._segment, start

    def staged_body(self, segment: str, start: int) -> bytes | None:
        """A body staged but not yet written: one its own transaction reads back (a claim in the same group
        commit as the message's queueing)."""
        for where, at, body in self._staged:
            if at == start and where == segment:
                return body
        return None

    def mark(self) -> int:
        """How many bodies are staged: :meth:`unstage` goes back to this (an operation that failed)."""
        return len(self._staged)

    def unstage(self, mark: int) -> None:
        del self._staged[mark:]
        self._end = self._staged[-1][1] + len(self._staged[-1][2]) if self._staged else self._written_end

    def flush(self) -> None:
        """Write the staged bodies and make them durable (StoreFull, StoreUnavailable: none of them is)."""
        if not self._staged:
            return
        staged, self._staged = self._staged, []
        try:
            self._write(staged)
        except OSError as exc:
            self._close()  # start afresh: what this segment holds past its last flush is unknown
            self._segment = None
            raise _store_error(exc) from exc

    def discard(self) -> None:
        """Forget the staged bodies (their transaction was rolled back)."""
        self._staged = []
        self._end = self._written_end

    def close(self) -> None:
        self._close()
        self._segment = None

    # -- inside -------------------------------------------------------------------------------------

    def _old(self) -> bool:
        return time.monotonic() - self._created > SEGMENT_SECONDS

    def _start_segment(self) -> None:
        if self._staged:  # a segment is only left between flushes: staged bodies are written to theirs
            return
        self._close()
        self._segment = f"{time.time_ns():x}-{os.getpid()}-{secrets.token_hex(3)}{SUFFIX}"
        self._created = time.monotonic()
        self._end = self._written_end = 0

    def _write(self, staged: list[tuple[str, int, bytes]]) -> None:
        if self._fd < 0:
            assert self._segment is not None
            self.directory.mkdir(mode=0o700, exist_ok=True)
            self._fd = os.open(self.directory / self._segment, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
            self._new = True
        start = staged[0][1]  # the bodies are staged one after the other from here
        bodies = [body for _, _, body in staged]
        for first in range(0, len(bodies), IOV_MAX):
            start = _write_at(self._fd, bodies[first : first + IOV_MAX], start)
        os.fdatasync(self._fd)
        if self._new:  # the segment's name must be on disk too
            _fsync_directory(self.directory)
            self._new = False
        self._written_end = staged[-1][1] + len(staged[-1][2])

    def _close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _write_at(fd: int, bodies: list[bytes], start: int) -> int:
    """Write ``bodies`` one after the other from ``start`` (one system call, no copy of them); where they end."""
    total = sum(len(body) for body in bodies)
    written = os.pwritev(fd, bodies, start)
    if written < total:  # a short write (rare with a regular file): the rest, as one buffer
        rest = memoryview(b"".join(bodies))[written:]
        at = start + written
        while rest:
            n = os.pwrite(fd, rest, at)
            rest, at = rest[n:], at + n
    return start + total


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _store_error(exc: OSError) -> StoreError:
    return StoreFull(str(exc)) if exc.errno in (errno.ENOSPC, errno.EDQUOT) else StoreUnavailable(str(exc))


def read_body(directory: Path, segment: str, start: int, length: int) -> bytes | None:
    """A spooled body, or None if its segment is gone or short (logged: the spool was tampered with)."""
    if "/" in segment or not segment.endswith(SUFFIX):
        log.error("a spooled body names the segment %r, which is not one", segment)
        return None
    try:
        fd = os.open(directory / segment, os.O_RDONLY)
    except FileNotFoundError:
        log.error("the segment %s of a spooled body is missing from %s", segment, directory)
        return None
    try:
        body = os.pread(fd, length, start)
    finally:
        os.close(fd)
    if len(body) != length:
        log.error("the segment %s in %s is shorter than a body it holds", segment, directory)
        return None
    return body


def sweep(directory: Path, referenced: Iterable[str], keep: str | None = None) -> int:
    """Unlink the segments no row points at that nobody has written for SWEEP_AFTER_SECONDS (``keep``, this
    process's open segment, never). Returns how many."""
    try:
        names = [n for n in os.listdir(directory) if n.endswith(SUFFIX)]
    except FileNotFoundError:
        return 0
    used = set(referenced)
    before = time.time() - SWEEP_AFTER_SECONDS
    removed = 0
    for name in names:
        if name in used or name == keep:
            continue
        try:
            if os.stat(directory / name).st_mtime > before:
                continue
            os.unlink(directory / name)
            removed += 1
        except FileNotFoundError:  # another process swept it
            continue
    return removed
