"""Rate-limit counters in the database: N per period holds for every process and node sharing it.

One row per counted key (``api:<key id>``, ``smtp:<credential id>``, ``auth:<client address>``) holds
the current fixed window (aligned to the clock, as :class:`relay.ratelimit.RateLimiter`'s) and its
count. :func:`hit` counts with ONE statement, an upsert that only adds while the window has room::

    INSERT ... ON CONFLICT (key) DO UPDATE SET count = <count + 1, or 1 in a newer window>
        WHERE <a newer window> OR count < limit
    RETURNING count, window_start

PostgreSQL locks the row for the upsert, so two nodes hitting one key at once are counted one after
the other, and the limit-th + 1 gets no row back (refused, nothing written). A node whose clock is
a little behind counts in the newer window already stored rather than going back to its own. Rows
whose window has ended are pruned by the housekeeping (:func:`prune`).
"""

from __future__ import annotations

from relay.config import Rate
from relay.ratelimit import Decision, counted, window_start
from relay.store.dialect import Connection, SqlDatabase

_HIT = """
INSERT INTO rate_counters (key, window_start, count, expires_at) VALUES (?, ?, 1, ?)
ON CONFLICT (key) DO UPDATE SET
    count = CASE WHEN rate_counters.window_start < excluded.window_start THEN 1 ELSE rate_counters.count + 1 END,
    expires_at = CASE WHEN rate_counters.window_start < excluded.window_start
        THEN excluded.expires_at ELSE rate_counters.expires_at END,
    window_start = CASE WHEN rate_counters.window_start < excluded.window_start
        THEN excluded.window_start ELSE rate_counters.window_start END
WHERE rate_counters.window_start < excluded.window_start OR rate_counters.count < ?
RETURNING count, window_start
"""


def hit(conn: Connection, key: str, rate: Rate, now: float) -> tuple[int, float] | None:
    """Count one for ``key`` in the window of ``now``: (the count now, the window's start), or None if the
    window already holds ``rate.limit`` (nothing counted)."""
    start = window_start(now, rate.period)
    row = conn.execute(_HIT, (key, start, start + rate.period, rate.limit)).fetchone()
    return None if row is None else (int(row[0]), float(row[1]))


def give_back(conn: Connection, key: str, rate: Rate, now: float) -> None:
    """Take back one counted for ``key`` in the window of ``now`` (none if that window has ended)."""
    conn.execute(
        "UPDATE rate_counters SET count = count - 1 WHERE key = ? AND window_start = ? AND count > 0",
        (key, window_start(now, rate.period)),
    )


def stored(conn: Connection, key: str, now: float) -> int:
    """What ``key`` has counted in its window that has not ended at ``now``."""
    row = conn.execute("SELECT count FROM rate_counters WHERE key = ? AND expires_at > ?", (key, now)).fetchone()
    return 0 if row is None else int(row[0])


def prune(conn: Connection, now: float) -> int:
    return conn.execute("DELETE FROM rate_counters WHERE expires_at <= ?", (now,)).rowcount


class SqlRateCounters:
    """:class:`relay.store.protocols.RateCounters` over the shared database."""

    def __init__(self, db: SqlDatabase) -> None:
        self.db = db

    async def hit(self, key: str, rate: Rate, now: float) -> Decision:
        """Count one request of ``key`` at ``now`` and say whether it may proceed (durable before it returns)."""
        result = await self.db.write_alone(lambda c: hit(c, key, rate, now))  # a hot row: not in the group
        return counted(rate, now, result)

    async def give_back(self, key: str, rate: Rate, now: float) -> None:
        await self.db.write_alone(lambda c: give_back(c, key, rate, now))

    async def count(self, key: str, now: float) -> int:
        return await self.db.lookup(lambda c: stored(c, key, now))

    async def prune(self, now: float) -> int:
        """Drop the counters whose window has ended."""
        return await self.db.write(lambda c: prune(c, now))
