"""Change counts that every process on the machine sees at once: SQLite's side of :func:`notify`.

PostgreSQL tells every node of a commit that notified a channel (NOTIFY). SQLite has no such thing, and
relay's processes on one machine share the database file; for the channels in :data:`CHANNELS` the
process that commits adds one to the channel's count in a small file beside the database, mapped into
memory by every process. Reading a count is a read of memory (no system call, no statement), so a
process can ask before each look-up whether what it keeps in memory is still current.

A count is bumped after the COMMIT, while the committing process still holds the write lock
(relay.store.db): two processes never bump at once, and a reader that sees the old count can only have
asked before the commit was there to be read.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path

SUPPRESSIONS_CHANGED = "relay_suppressions"  # an address was added to the suppression list
DOMAINS_CHANGED = "relay_domains"  # a sending domain or its keys changed (added, verified, rotated, removed)

# The channels with a count, each in its own 8 bytes: a new one goes at the end (a file made by an older
# relay is longer now, and its counts stay where they were).
CHANNELS = (SUPPRESSIONS_CHANGED, DOMAINS_CHANGED)
_SIZE = 8 * len(CHANNELS)


class ChangeCounts:
    """The counts of :data:`CHANNELS` in ``<database>.changes`` (created owner-only, zeros at first)."""

    def __init__(self, database: Path) -> None:
        fd = os.open(f"{database}.changes", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            if os.fstat(fd).st_size < _SIZE:
                os.ftruncate(fd, _SIZE)  # zeros; another process doing the same at once writes the same
            self._map = mmap.mmap(fd, _SIZE)
        finally:
            os.close(fd)  # the mapping keeps the file

    def count(self, channel: str) -> int:
        offset = _offset(channel)
        return int.from_bytes(self._map[offset : offset + 8], "little")

    def bump(self, channels: set[str]) -> None:
        """One more for each of ``channels`` that has a count (the caller holds the database's write lock)."""
        for channel in channels:
            if channel in CHANNELS:
                offset = _offset(channel)
                self._map[offset : offset + 8] = (self.count(channel) + 1 & (1 << 64) - 1).to_bytes(8, "little")

    def close(self) -> None:
        self._map.close()


def _offset(channel: str) -> int:
    return 8 * CHANNELS.index(channel)
