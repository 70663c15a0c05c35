"""Scheduled messages (send_at) in SQL: list, reschedule, cancel."""

from __future__ import annotations

from relay.events import EventKind
from relay.store.dialect import Connection
from relay.store.queue.lifecycle import _event
from relay.store.queue.listings import _MESSAGE_COLUMNS, _message_record
from relay.store.queue.records import MessageRecord


def cancel_scheduled(conn: Connection, now: float) -> tuple[int, int]:
    """Cancel every recipient still waiting for a send_at later than now, with an event each;
    returns (messages, recipients) cancelled."""
    rows = conn.execute(
        "UPDATE recipients SET state = 'cancelled', next_attempt_at = NULL, updated_at = ?"
        " WHERE state = 'scheduled' AND next_attempt_at > ? RETURNING id, message_id, address",
        (now, now),
    ).fetchall()
    for rid, mid, address in rows:
        _event(conn, now, EventKind.CANCELLED, mid, rid, address, None, "scheduled messages purged by the operator")
    return len({mid for _, mid, _ in rows}), len(rows)


def scheduled_messages(
    conn: Connection, before: str | None, limit: int, api_key_id: str | None = None
) -> list[MessageRecord]:
    """Messages with recipients waiting for their send_at, soonest first (cursor: message id)."""
    rows = conn.execute(
        f"SELECT {_MESSAGE_COLUMNS} FROM messages m WHERE m.send_at IS NOT NULL"
        " AND (CAST(? AS TEXT) IS NULL OR m.api_key_id = ?)"
        " AND EXISTS (SELECT 1 FROM recipients r WHERE r.message_id = m.id AND r.state = 'scheduled')"
        " AND (CAST(? AS TEXT) IS NULL OR (m.send_at, m.id) > ((SELECT send_at FROM messages WHERE id = ?), ?))"
        " ORDER BY m.send_at, m.id LIMIT ?",
        (api_key_id, api_key_id, before, before, before, limit),
    ).fetchall()
    return [_message_record(conn, row) for row in rows]


def reschedule(conn: Connection, message_id: str, send_at: float, now: float) -> int:
    """Move a scheduled message; returns how many recipients still waited for it (0: nothing to move)."""
    moved = conn.execute(
        "UPDATE recipients SET next_attempt_at = ?, updated_at = ? WHERE message_id = ? AND state = 'scheduled'",
        (send_at, now, message_id),
    ).rowcount
    if moved:
        conn.execute("UPDATE messages SET send_at = ? WHERE id = ?", (send_at, message_id))
    return moved
