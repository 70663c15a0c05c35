"""Events, stats and retention in SQL.

Event rows are written by relay.store.queue (every state change); triggers in
the schema count them per hour, kind and tag (``event_counts``) and queue them
for webhooks. Functions here read them, and prune old rows.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from typing import Any

from relay.message import lowest_message_id
from relay.store.dialect import PLAN_EACH_TIME, Connection, SqlDatabase, is_postgres, try_lock
from relay.store.spool import BodySpool, sweep

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Event:
    id: int
    at: float
    type: str
    message_id: str
    recipient: str | None
    code: int | None
    detail: str | None
    details: dict[str, Any]
    tags: list[str]
    metadata: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class EventFilter:
    types: tuple[str, ...] = ()
    recipient: str | None = None
    tag: str | None = None
    message_id: str | None = None
    since: float | None = None
    until: float | None = None
    before: int | None = None  # cursor: the last id of the previous page (newest first)
    api_key_id: str | None = None  # events of messages submitted with this key


_COLUMNS = "e.id, e.at, e.kind, e.message_id, e.recipient, e.code, e.detail, e.details, m.tags, m.metadata"


def load_metadata(text: str) -> dict[str, Any]:
    """Stored message metadata. Rows written before non-finite numbers were refused may hold Infinity or
    NaN: read as null, so that relay never serves a number JSON cannot carry."""
    data: dict[str, Any] = json.loads(text, parse_constant=lambda _: None)
    return data


def _event(row: tuple[Any, ...]) -> Event:
    event_id, at, kind, message_id, recipient, code, detail, details, tags, metadata = row
    return Event(
        event_id,
        at,
        kind,
        message_id,
        recipient,
        code,
        detail,
        json.loads(details) if details else {},
        json.loads(tags) if tags else [],
        load_metadata(metadata) if metadata else {},
    )


# Probed per event while walking newest first: stops after a page of matches.
_TAGGED = "EXISTS (SELECT 1 FROM message_tags t WHERE t.tag = ? AND t.message_id = e.message_id)"


def list_events(conn: Connection, f: EventFilter, limit: int) -> list[Event]:
    """Newest first."""
    clauses, params = ["TRUE"], list[object]()
    if f.types:
        clauses.append(f"e.kind IN ({', '.join('?' * len(f.types))})")
        params.extend(f.types)
    for value, clause in (
        (f.recipient, "e.recipient = ?"),
        (f.message_id, "e.message_id = ?"),
        (f.since, "e.at >= ?"),
        (f.until, "e.at < ?"),
        (f.before, "e.id < ?"),
        (f.tag, _TAGGED),
        (f.api_key_id, "m.api_key_id = ?"),
    ):
        if value is not None:
            clauses.append(clause)
            params.append(value)
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM events e LEFT JOIN messages m ON m.id = e.message_id"
        f" WHERE {' AND '.join(clauses)} ORDER BY e.id DESC LIMIT ?",
        [*params, limit],
    ).fetchall()
    return [_event(row) for row in rows]


def message_events(conn: Connection, message_id: str) -> list[Event]:
    """In the order they happened."""
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM events e LEFT JOIN messages m ON m.id = e.message_id"
        " WHERE e.message_id = ? ORDER BY e.id",
        (message_id,),
    ).fetchall()
    return [_event(row) for row in rows]


def get_event(conn: Connection, event_id: int) -> Event | None:
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM events e LEFT JOIN messages m ON m.id = e.message_id WHERE e.id = ?", (event_id,)
    ).fetchone()
    return _event(row) if row else None


def events_by_id(conn: Connection, event_ids: Sequence[int]) -> dict[int, Event]:
    """The events of ``event_ids`` that still exist, by id."""
    found: dict[int, Event] = {}
    for start in range(0, len(event_ids), 500):  # under SQLite's and psycopg's limits on parameters
        chunk = event_ids[start : start + 500]
        marks = ", ".join("?" * len(chunk))
        for row in conn.execute(
            f"{PLAN_EACH_TIME}SELECT {_COLUMNS} FROM events e LEFT JOIN messages m ON m.id = e.message_id"
            f" WHERE e.id IN ({marks})",
            tuple(chunk),
        ):
            found[row[0]] = _event(row)
    return found


# -- stats ------------------------------------------------------------------------------------


def event_counts(
    conn: Connection, since: float, until: float, interval: int, tag: str | None
) -> list[tuple[int, str, int]]:
    """(interval start, event type, count), from the hourly counts: cost grows with hours, not events."""
    rows = conn.execute(
        "SELECT (hour / ?) * ? AS bucket, kind, sum(n) FROM event_counts"
        " WHERE tag = ? AND hour >= ? AND hour < ? GROUP BY bucket, kind ORDER BY bucket, kind",
        (interval, interval, tag or "", int(since // 3600 * 3600), until),
    ).fetchall()
    return [(int(b), k, int(n)) for b, k, n in rows]


def totals(conn: Connection) -> dict[str, int]:
    """Every event ever counted, by type (for the metrics endpoint)."""
    return dict(conn.execute("SELECT kind, sum(n) FROM event_counts WHERE tag = '' GROUP BY kind").fetchall())


@dataclasses.dataclass(frozen=True)
class BounceStats:
    total: int
    by_classification: list[tuple[str, str, int]]  # (kind, reason, count)
    by_domain: list[tuple[str, str, int]]  # (recipient domain, kind, count)


def bounce_stats(conn: Connection, since: float, until: float, limit: int = 100) -> BounceStats:
    where = "at >= ? AND at < ?"
    total = conn.execute(f"SELECT count(*) FROM bounces WHERE {where}", (since, until)).fetchone()[0]
    by_reason = conn.execute(
        f"SELECT kind, reason, count(*) AS n FROM bounces WHERE {where} GROUP BY kind, reason ORDER BY n DESC, kind",
        (since, until),
    ).fetchall()
    by_domain = conn.execute(
        "SELECT substr(recipient, instr(recipient, '@') + 1) AS domain, kind, count(*) AS n FROM bounces"
        f" WHERE {where} GROUP BY domain, kind ORDER BY n DESC, domain LIMIT ?",
        (since, until, limit),
    ).fetchall()
    return BounceStats(total, by_reason, by_domain)


@dataclasses.dataclass(frozen=True)
class DeferralReason:
    """Deferrals that gave the same reason (:func:`relay.bounces.reasons.deferral_reason`) over a window."""

    reason: str
    count: int
    example: str  # one of the replies as received, code included
    last_at: float  # the latest of them


def deferral_reasons(conn: Connection, since: float, until: float, limit: int) -> list[DeferralReason]:
    """The most frequent reasons of the deferrals in the hours from ``since`` (its hour included) to ``until``,
    most first, from the hourly counts: cost grows with hours and reasons, not deferrals."""
    rows = conn.execute(
        "SELECT reason, sum(n) AS total, min(example), max(last_at) FROM deferral_counts"
        " WHERE hour >= ? AND hour < ? GROUP BY reason ORDER BY total DESC, reason LIMIT ?",
        (int(since // 3600 * 3600), until, limit),
    ).fetchall()
    return [DeferralReason(reason, int(n), example, last_at) for reason, n, example, last_at in rows]


# -- retention ---------------------------------------------------------------------------------

PRUNE_BATCH = 5000


HOUSEKEEPING_LOCK = "relay:housekeeping"


def prune_events(conn: Connection, before: float) -> int:
    """Delete a batch of events older than ``before`` (the hourly counts stay). Returns how many."""
    return conn.execute(
        "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE at < ? ORDER BY at LIMIT ?)", (before, PRUNE_BATCH)
    ).rowcount


def prune_deferral_counts(conn: Connection, before: float) -> None:
    """Deferral counts of the hours before ``before`` go with the events they counted."""
    conn.execute("DELETE FROM deferral_counts WHERE hour < ?", (int(before // 3600 * 3600),))


def prune_bodies(conn: Connection, before: float) -> int:
    """Delete a batch of bodies of messages made before ``before`` that nothing will send any more (on SQLite,
    the rows of spooled ones too: their segments go once no row points at them, :func:`sweep_spool`)."""
    tables = ["message_bodies"] if is_postgres(conn) else ["message_bodies", "spooled_bodies"]
    return sum(
        conn.execute(
            f"DELETE FROM {table} WHERE message_id IN (SELECT b.message_id FROM {table} b"
            " WHERE b.message_id < ? AND NOT EXISTS (SELECT 1 FROM recipients r WHERE r.message_id = b.message_id"
            " AND r.state IN ('queued', 'scheduled', 'deferred', 'sending')) LIMIT ?)",
            (lowest_message_id(before), PRUNE_BATCH),
        ).rowcount
        for table in tables
    )


def sweep_spool(conn: Connection, spool: BodySpool) -> int:
    """Remove the spool's segments that no body is in any more (after their rows' deletion has committed)."""
    used = [segment for (segment,) in conn.execute("SELECT DISTINCT segment FROM spooled_bodies")]
    return sweep(spool.directory, used, keep=spool.segment)


def prune_webhook_log(conn: Connection, before: float) -> int:
    deleted = conn.execute(
        "DELETE FROM webhook_attempts WHERE id IN (SELECT id FROM webhook_attempts WHERE at < ? LIMIT ?)",
        (before, PRUNE_BATCH),
    ).rowcount
    return (
        deleted
        + conn.execute(
            "DELETE FROM webhook_deliveries WHERE id IN (SELECT id FROM webhook_deliveries WHERE state != 'pending'"
            " AND updated_at < ? LIMIT ?)",
            (before, PRUNE_BATCH),
        ).rowcount
    )


class SqlEvents:
    """:class:`relay.store.protocols.EventStore` over the shared database."""

    def __init__(self, db: SqlDatabase) -> None:
        self.db = db

    async def query(self, filter: EventFilter, limit: int) -> list[Event]:
        return await self.db.read(lambda c: list_events(c, filter, limit))

    async def message_events(self, message_id: str) -> list[Event]:
        return await self.db.read(lambda c: message_events(c, message_id))

    async def event(self, event_id: int) -> Event | None:
        return await self.db.read(lambda c: get_event(c, event_id))

    async def event_counts(
        self, since: float, until: float, interval: int, tag: str | None
    ) -> list[tuple[int, str, int]]:
        return await self.db.read(lambda c: event_counts(c, since, until, interval, tag))

    async def event_totals(self) -> dict[str, int]:
        return await self.db.read(totals)

    async def bounce_stats(self, since: float, until: float) -> BounceStats:
        return await self.db.read(lambda c: bounce_stats(c, since, until))

    async def deferral_reasons(self, since: float, until: float, limit: int) -> list[DeferralReason]:
        return await self.db.read(lambda c: deferral_reasons(c, since, until, limit))

    async def prune_history(self, events_before: float, bodies_before: float) -> tuple[int, int]:
        """One batch of old events (and webhook logs) and of bodies nothing will send again; repeat while > 0.

        One node at a time on a shared database: while another node's batch holds the housekeeping lock,
        this returns (0, 0) and the caller stops until its next round. SQLite: the call that finds nothing
        more to prune also removes the spool's segments no body is in any more (:func:`sweep_spool`).
        """

        def op(c: Connection) -> tuple[int, int]:
            if not try_lock(c, HOUSEKEEPING_LOCK):
                return 0, 0
            prune_deferral_counts(c, events_before)
            return prune_events(c, events_before) + prune_webhook_log(c, events_before), prune_bodies(c, bodies_before)

        pruned = await self.db.write(op)
        spool = self.db.spool
        if spool is not None and pruned == (0, 0):  # once a round, after its last batch
            swept = await self.db.read(lambda c: sweep_spool(c, spool))
            if swept:
                log.info("retention: removed %d spool segments no body is in any more", swept)
        return pruned
