"""Returned mail in SQL: find the recipient a DSN or complaint is about, and record it."""

from __future__ import annotations

import dataclasses

from relay.bounces.classify import Kind
from relay.events import EventKind
from relay.store import suppressions
from relay.store.dialect import Connection
from relay.store.queue.lifecycle import _event
from relay.store.queue.records import ReturnedTarget
from relay.store.suppressions import NewBounce
from relay.suppression import SuppressionPolicy

_TARGET_COLUMNS = "r.message_id, r.id, r.address, r.state"


def returned_target(conn: Connection, message_id: str, recipient_id: int) -> ReturnedTarget | None:
    row = conn.execute(
        f"SELECT {_TARGET_COLUMNS} FROM recipients r WHERE r.id = ? AND r.message_id = ?", (recipient_id, message_id)
    ).fetchone()
    return ReturnedTarget(*row) if row else None


def targets_by_header_id(conn: Connection, header_id: str, limit: int = 1000) -> list[ReturnedTarget]:
    rows = conn.execute(
        f"SELECT {_TARGET_COLUMNS} FROM messages m JOIN recipients r ON r.message_id = m.id"
        " WHERE m.header_id = ? ORDER BY r.id LIMIT ?",
        (header_id, limit),
    ).fetchall()
    return [ReturnedTarget(*row) for row in rows]


def record_returned(
    conn: Connection, bounce: NewBounce, target: ReturnedTarget, now: float, policy: SuppressionPolicy
) -> tuple[int, suppressions.Suppression | None]:
    """A returned report about ``target``: the bounce (and any suppression), an event, and a recipient
    the receiver had accepted marked bounced after all. A complaint leaves the state alone."""
    bounce = dataclasses.replace(bounce, message_id=target.message_id)
    bounce_id, suppression = suppressions.record_bounce(conn, bounce, now, policy)
    c = bounce.classification
    complaint = c.kind is Kind.COMPLAINT
    detail = f"{bounce.source}: {c.kind.value} ({c.reason}){': ' + bounce.diagnostic if bounce.diagnostic else ''}"
    kind = EventKind.COMPLAINED if complaint else EventKind.BOUNCED
    _event(
        conn,
        now,
        kind,
        target.message_id,
        target.recipient_id,
        target.address,
        bounce.code,
        detail[:1000],
        {
            "source": bounce.source,
            "classification": c.kind.value,
            "reason": c.reason,
            "enhanced_status": c.status,
            "response": bounce.diagnostic,
            "remote_mta": bounce.remote_mta,
            "bounce_id": bounce_id,
        },
    )
    if not complaint:
        conn.execute(
            "UPDATE recipients SET state = 'bounced', last_code = ?, last_response = ?, updated_at = ?"
            " WHERE id = ? AND state = 'delivered'",
            (bounce.code, detail[:1000], now, target.recipient_id),
        )
    return bounce_id, suppression
