"""API key quotas in SQL: messages counted per UTC day and month."""

from __future__ import annotations

import time

from relay.errors import QuotaExhausted
from relay.store.dialect import Connection, lock
from relay.store.queue.records import Quota


def _periods(now: float) -> tuple[str, str]:
    """The key_usage periods ``now`` falls in: the UTC day and month."""
    return time.strftime("d:%Y-%m-%d", time.gmtime(now)), time.strftime("m:%Y-%m", time.gmtime(now))


def key_usage(conn: Connection, api_key_id: str, now: float) -> tuple[int, int]:
    """Messages counted against a key's quota this UTC day and month (counted only for keys with a quota)."""
    day, month = _periods(now)
    counts = dict(
        conn.execute(
            "SELECT period, count FROM key_usage WHERE api_key_id = ? AND period IN (?, ?)", (api_key_id, day, month)
        ).fetchall()
    )
    return counts.get(day, 0), counts.get(month, 0)


def check_quota(conn: Connection, quota: Quota, now: float) -> None:
    """Raise QuotaExhausted if the key has no message left in the day or month; counts nothing."""
    day, month = _periods(now)
    for period, limit in ((day, quota.daily), (month, quota.monthly)):
        if limit is None:
            continue
        row = conn.execute(
            "SELECT count FROM key_usage WHERE api_key_id = ? AND period = ?", (quota.api_key_id, period)
        ).fetchone()
        if row is not None and row[0] >= limit:
            raise QuotaExhausted(period[0], limit)


def _count_against_quota(conn: Connection, quota: Quota, now: float) -> None:
    # Check-then-count must not interleave with another node's: without the lock, a node could read the
    # count from before a transaction of another node commits the last message of the quota.
    lock(conn, f"quota:{quota.api_key_id}")
    check_quota(conn, quota, now)
    for period in _periods(now):
        conn.execute(
            "INSERT INTO key_usage (api_key_id, period, count) VALUES (?, ?, 1)"
            " ON CONFLICT (api_key_id, period) DO UPDATE SET count = key_usage.count + 1",
            (quota.api_key_id, period),
        )
