"""Every address of the suppression list in memory, as a Bloom filter: "not suppressed" without a statement.

RCPT asks whether its address is suppressed, and nearly always it is not. Asked of the database, that is a
statement for every recipient: on SQLite a read that starts by re-reading its pages, since any commit of
another process empties a connection's page cache (~33 us where an undisturbed one takes ~7); on
PostgreSQL a round trip. A Bloom filter of every suppressed address (16 bits an address, 4 probes: about
one address in 400 not on the list is taken for one that may be) answers most of them from memory; the
addresses it may hold are asked of the database as before, which has the last word (expiry, allowlist).

The filter is used only while it is current: each commit that adds to the list notifies
:data:`~relay.store.changes.SUPPRESSIONS_CHANGED` (relay.store.suppressions), and the filter is current
for the count :meth:`SqlDatabase.changes` gave before it was last brought up to date. When the count has
moved, look-ups go to the database, and the filter reads the addresses added since its last reading
(those created from ``OVERLAP`` seconds before it, a margin for the commits that were in flight then),
in the reader thread, at most once every ``REFRESH_INTERVAL``. Every ``REBUILD_EVERY`` seconds, and when
it holds more addresses than it was sized for, it is built anew from the whole list (which also forgets
addresses taken off it, and anything written without relay's notification).

A look-up is never less strict than the database because of this: one that raced with a new suppression
could have gone either way before, and a recipient suppressed after its RCPT is not mailed anyway (the
queue checks the list again when it claims the recipient, relay.store.queue.lifecycle).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from relay.clock import Clock
from relay.message import normalize_address
from relay.store.changes import SUPPRESSIONS_CHANGED
from relay.store.dialect import Connection, SqlDatabase

log = logging.getLogger(__name__)

BITS_PER_ADDRESS = 16
PROBES = 4
MIN_BITS = 1 << 16  # 8 KB: a list of up to 4,096 addresses
REFRESH_INTERVAL = 1.0  # seconds: at most one reading of the new addresses a second
REBUILD_EVERY = 600.0  # seconds between two builds from the whole list
OVERLAP = 60.0  # seconds before the last reading from which the next one reads
PAGE = 10_000  # addresses read at a time when building from the whole list
_HASH_MASK = (1 << 64) - 1


class BloomFilter:
    """A set of strings that may answer "present" for one it does not hold, never "absent" for one it does.

    Sized for ``capacity`` strings (``BITS_PER_ADDRESS`` bits each, a power of two in all); it holds more,
    less well: ``full`` says when to build a bigger one. Positions come from Python's ``hash`` (different in
    every process, the same within one), split in two for double hashing."""

    __slots__ = ("_bits", "_mask", "capacity", "count")

    def __init__(self, capacity: int) -> None:
        size = MIN_BITS
        while size < capacity * BITS_PER_ADDRESS:
            size <<= 1
        self._bits = bytearray(size // 8)
        self._mask = size - 1
        self.capacity = size // BITS_PER_ADDRESS
        self.count = 0

    @property
    def full(self) -> bool:
        return self.count > self.capacity

    def add(self, key: str) -> None:
        bits, mask = self._bits, self._mask
        h = hash(key) & _HASH_MASK
        position, step = h & 0xFFFFFFFF, (h >> 32) | 1
        for _ in range(PROBES):
            index = position & mask
            bits[index >> 3] |= 1 << (index & 7)
            position += step
        self.count += 1

    def __contains__(self, key: str) -> bool:
        bits, mask = self._bits, self._mask
        h = hash(key) & _HASH_MASK
        position, step = h & 0xFFFFFFFF, (h >> 32) | 1
        for _ in range(PROBES):
            index = position & mask
            if not bits[index >> 3] & (1 << (index & 7)):
                return False
            position += step
        return True


class SuppressionSieve:
    """The suppression list's addresses in a :class:`BloomFilter`, kept current with ``db`` (see the module)."""

    def __init__(self, db: SqlDatabase, clock: Clock) -> None:
        self.db = db
        self.clock = clock
        self._bloom: BloomFilter | None = None
        self._version = -1  # the change count the filter is current for
        self._since = 0.0  # the time (clock.now) of its last reading: the next one reads from OVERLAP before
        self._built = 0.0  # when (clock.monotonic) it was last built from the whole list
        self._last_refresh = float("-inf")  # when (clock.monotonic) the last reading started
        self._changes: Callable[[], int] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the event loop it is kept current on
        self._refreshing: asyncio.Task[None] | None = None
        self.answered = 0  # look-ups the filter answered alone (every address surely not suppressed)

    def may_be_suppressed(self, addresses: Sequence[str]) -> list[str] | None:
        """Those of ``addresses`` that may be on the list (the others surely are not); None when the filter
        is not current, when every one of them must be asked of the database. Call it on the event loop."""
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop, self._changes = loop, self.db.changes(SUPPRESSIONS_CHANGED)
        elif loop is not self._loop:  # another event loop (tests): not the one it hears changes on
            return None
        assert self._changes is not None
        bloom = self._bloom
        current = bloom is not None and self._changes() == self._version
        if not current or bloom is None or bloom.full or self.clock.monotonic() - self._built >= REBUILD_EVERY:
            self._refresh_soon()
        if not current or bloom is None:
            return None
        maybe = [a for a in addresses if normalize_address(a) in bloom]
        if not maybe:
            self.answered += 1
        return maybe

    def _refresh_soon(self) -> None:
        if self._refreshing is not None and not self._refreshing.done():
            return
        now = self.clock.monotonic()
        if now - self._last_refresh < REFRESH_INTERVAL:
            return
        self._last_refresh = now
        self._refreshing = asyncio.get_running_loop().create_task(self._refresh(), name="relay-suppression-sieve")

    async def _refresh(self) -> None:
        assert self._changes is not None
        started = self.clock.now()
        bloom = self._bloom
        try:  # (a refresh that starts as the store closes finds the counts closed: it is given up)
            version = self._changes()  # before reading: a commit after this point moves the count again
            if bloom is None or bloom.full or self.clock.monotonic() - self._built >= REBUILD_EVERY:
                self._bloom = await self.db.read(_whole_list)
                self._built = self.clock.monotonic()
            else:
                since = self._since - OVERLAP
                for address in await self.db.read(lambda c: _added_since(c, since)):
                    bloom.add(address)
        except Exception as exc:  # the look-ups go on asking the database; the next one tries again
            log.warning("could not read the suppression list into memory: %s", exc)
            return
        self._version = version
        self._since = started


def _whole_list(conn: Connection) -> BloomFilter:
    """Every address of the list in a filter sized for twice as many, read a page at a time (in the reader
    thread)."""
    total = conn.execute("SELECT count(*) FROM suppressions").fetchone()[0]
    bloom = BloomFilter(2 * total)
    last = ""
    while True:
        rows = conn.execute(
            "SELECT address FROM suppressions WHERE address > ? ORDER BY address LIMIT ?", (last, PAGE)
        ).fetchall()
        for (address,) in rows:
            bloom.add(address)
        if len(rows) < PAGE:
            return bloom
        last = rows[-1][0]


def _added_since(conn: Connection, since: float) -> list[str]:
    return [row[0] for row in conn.execute("SELECT address FROM suppressions WHERE created_at >= ?", (since,))]
