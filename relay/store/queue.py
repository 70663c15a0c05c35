"""The mail queue in SQL: enqueue, lease due recipients, record attempts, release leases.

Functions here take a ``sqlite3.Connection`` and run inside a transaction the
caller owns (the group-commit writer or a CLI connection). Nothing outside
``relay.store`` writes SQL.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from collections import defaultdict

from relay.events import PENDING_STATES, EventKind, State
from relay.message import NewMessage, domain_of

# Invariant kept by every function here: next_attempt_at is NOT NULL exactly
# when the recipient is pending (queued or deferred). The partial index
# recipients_due covers those rows only, so "what is due" never scans the queue.
_DUE_SQL = "next_attempt_at IS NOT NULL"


@dataclasses.dataclass(frozen=True)
class LeasedRecipient:
    id: int
    address: str
    domain: str
    attempts: int


@dataclasses.dataclass(frozen=True)
class LeasedMessage:
    """A message with the recipients a worker has leased for one attempt."""

    id: str
    sender: str
    created_at: float
    raw: bytes
    recipients: tuple[LeasedRecipient, ...]


@dataclasses.dataclass(frozen=True)
class AttemptResult:
    """The outcome of one attempt for one recipient, as the queue records it."""

    recipient_id: int
    message_id: str
    address: str
    state: State
    event: EventKind
    next_attempt_at: float | None
    code: int | None
    response: str


def enqueue(conn: sqlite3.Connection, message: NewMessage, now: float) -> None:
    conn.execute(
        "INSERT INTO messages (id, created_at, sender, size, source) VALUES (?, ?, ?, ?, ?)",
        (message.id, now, message.sender, len(message.raw), message.source),
    )
    conn.execute("INSERT INTO message_bodies (message_id, raw) VALUES (?, ?)", (message.id, message.raw))
    for address in message.recipients:
        cur = conn.execute(
            "INSERT INTO recipients (message_id, address, domain, state, next_attempt_at, updated_at)"
            " VALUES (?, ?, ?, 'queued', ?, ?)",
            (message.id, address, domain_of(address), now, now),
        )
        _event(conn, now, EventKind.QUEUED, message.id, cur.lastrowid, address, None, None)


def claim_due(conn: sqlite3.Connection, now: float, limit: int, owner: str, lease_until: float) -> list[LeasedMessage]:
    """Lease up to ``limit`` due recipients to ``owner`` and return them grouped by message.

    Walks the partial index ``recipients_due`` in due order; never scans the queue.
    """
    rows = conn.execute(
        "UPDATE recipients SET state = 'sending', next_attempt_at = NULL,"
        " lease_owner = ?, lease_until = ?, updated_at = ?"
        " WHERE id IN (SELECT id FROM recipients WHERE next_attempt_at <= ?"
        "  ORDER BY next_attempt_at LIMIT ?)"
        " RETURNING id, message_id, address, domain, attempts",
        (owner, lease_until, now, now, limit),
    ).fetchall()
    if not rows:
        return []
    by_message: dict[str, list[LeasedRecipient]] = defaultdict(list)
    for rid, message_id, address, domain, attempts in rows:
        by_message[message_id].append(LeasedRecipient(rid, address, domain, attempts))
    marks = ",".join("?" * len(by_message))
    messages = conn.execute(
        "SELECT m.id, m.sender, m.created_at, b.raw FROM messages m"
        f" JOIN message_bodies b ON b.message_id = m.id WHERE m.id IN ({marks})",
        list(by_message),
    ).fetchall()
    return [
        LeasedMessage(mid, sender, created_at, raw, tuple(sorted(by_message[mid], key=lambda r: r.id)))
        for mid, sender, created_at, raw in messages
    ]


def record_attempts(conn: sqlite3.Connection, results: list[AttemptResult], now: float) -> None:
    """Store each outcome and its event; the lease is released."""
    for r in results:
        assert (r.next_attempt_at is not None) == (r.state in PENDING_STATES), r
        conn.execute(
            "UPDATE recipients SET state = ?, attempts = attempts + 1, next_attempt_at = ?,"
            " lease_owner = NULL, lease_until = NULL, last_code = ?, last_response = ?, updated_at = ?"
            " WHERE id = ?",
            (r.state.value, r.next_attempt_at, r.code, r.response, now, r.recipient_id),
        )
        _event(conn, now, r.event, r.message_id, r.recipient_id, r.address, r.code, r.response)


def release_leases(conn: sqlite3.Connection, now: float, owner: str | None = None) -> int:
    """Return leased recipients to the queue, due now: all of ``owner``'s, or every expired lease.

    An attempt that was in flight when its worker died may have reached the
    receiving server; delivering again is the at-least-once price of never losing mail.
    """
    if owner is not None:
        cur = conn.execute(
            "UPDATE recipients SET state = CASE WHEN attempts = 0 THEN 'queued' ELSE 'deferred' END,"
            " next_attempt_at = ?, lease_owner = NULL, lease_until = NULL, updated_at = ?"
            " WHERE state = 'sending' AND lease_owner = ?",
            (now, now, owner),
        )
    else:
        cur = conn.execute(
            "UPDATE recipients SET state = CASE WHEN attempts = 0 THEN 'queued' ELSE 'deferred' END,"
            " next_attempt_at = ?, lease_owner = NULL, lease_until = NULL, updated_at = ?"
            " WHERE state = 'sending' AND lease_until < ?",
            (now, now, now),
        )
    return cur.rowcount


def next_due_at(conn: sqlite3.Connection) -> float | None:
    row = conn.execute(f"SELECT min(next_attempt_at) FROM recipients WHERE {_DUE_SQL}").fetchone()
    return None if row[0] is None else float(row[0])


@dataclasses.dataclass(frozen=True)
class QueueSummary:
    by_state: dict[str, int]
    by_domain: dict[str, dict[str, int]]  # domain → state → count, for recipients not yet final


def summary(conn: sqlite3.Connection) -> QueueSummary:
    by_state: dict[str, int] = {s.value: 0 for s in State}
    by_domain: dict[str, dict[str, int]] = defaultdict(dict)
    for state, domain, count in conn.execute("SELECT state, domain, count(*) FROM recipients GROUP BY state, domain"):
        by_state[state] = by_state.get(state, 0) + count
        if state in ("queued", "deferred", "sending"):
            by_domain[domain][state] = count
    return QueueSummary(by_state, dict(by_domain))


@dataclasses.dataclass(frozen=True)
class RecipientStatus:
    address: str
    state: str
    attempts: int
    next_attempt_at: float | None
    last_code: int | None
    last_response: str | None


def message_status(conn: sqlite3.Connection, message_id: str) -> list[RecipientStatus]:
    return [
        RecipientStatus(*row)
        for row in conn.execute(
            "SELECT address, state, attempts, next_attempt_at, last_code, last_response"
            " FROM recipients WHERE message_id = ? ORDER BY id",
            (message_id,),
        )
    ]


def _event(
    conn: sqlite3.Connection,
    now: float,
    kind: EventKind,
    message_id: str,
    recipient_id: int | None,
    recipient: str | None,
    code: int | None,
    detail: str | None,
) -> None:
    conn.execute(
        "INSERT INTO events (at, kind, message_id, recipient_id, recipient, code, detail) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (now, kind.value, message_id, recipient_id, recipient, code, detail),
    )
