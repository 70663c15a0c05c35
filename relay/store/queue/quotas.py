"""API key quotas in SQL: messages counted per UTC day and month."""

from __future__ import annotations

import time

from relay.errors import QuotaExhausted
from relay.store.dialect import Connection
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


def take(conn: Connection, quota: Quota, now: float, count: int) -> None:
    """Count ``count`` messages against the key's quota, in its day and its month, or none: raises
    QuotaExhausted if that takes either over its limit.

    One statement adds to both rows (in the same order for every writer: two never wait on each other in
    a cycle) and reads the counts it made; a count over the limit is taken back before raising. Two
    nodes taking the last message at once can both be refused (each sees the other's count): never both
    let through. Run alone (``write_alone``), not inside a group transaction, whose COMMIT it would wait for.
    """
    day, month = _periods(now)
    counts = dict(
        conn.execute(
            "INSERT INTO key_usage (api_key_id, period, count) VALUES (?, ?, ?), (?, ?, ?)"
            " ON CONFLICT (api_key_id, period) DO UPDATE SET count = key_usage.count + excluded.count"
            " RETURNING period, count",
            (quota.api_key_id, day, count, quota.api_key_id, month, count),
        ).fetchall()
    )
    for period, limit in ((day, quota.daily), (month, quota.monthly)):
        if limit is not None and counts[period] > limit:
            give_back(conn, quota, now, count)
            raise QuotaExhausted(period[0], limit)


def give_back(conn: Connection, quota: Quota, now: float, count: int) -> None:
    """Take back what :func:`take` counted (the messages were not queued after all)."""
    conn.execute(
        "UPDATE key_usage SET count = CASE WHEN count > ? THEN count - ? ELSE 0 END"
        " WHERE api_key_id = ? AND period IN (?, ?)",
        (count, count, quota.api_key_id, *_periods(now)),
    )
