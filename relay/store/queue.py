"""The mail queue in SQL: enqueue, lease due recipients, record attempts, release leases.

Functions here take a ``sqlite3.Connection`` and run inside a transaction the
caller owns (the group-commit writer or a CLI connection). Nothing outside
``relay.store`` writes SQL.
"""

from __future__ import annotations

import dataclasses
import json
import re
import sqlite3
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from relay.bounces.classify import Classification, Kind
from relay.clock import Clock
from relay.events import PENDING_STATES, EventKind, State
from relay.message import NewMessage, domain_of
from relay.store import idempotency as idem
from relay.store import suppressions
from relay.store.db import Database
from relay.store.events import load_metadata
from relay.store.suppressions import NewBounce, Suppression
from relay.suppression import SuppressionPolicy

# Invariant kept by every function here: next_attempt_at is NOT NULL exactly
# when the recipient is pending (queued or deferred). The partial index
# recipients_due covers those rows only, so "what is due" never scans the queue.
_DUE_SQL = "next_attempt_at IS NOT NULL"
_ENHANCED = re.compile(r"([245]\.\d{1,3}\.\d{1,3})\b")


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
    sandbox: bool = False  # captured, never delivered


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
    mx_host: str | None = None  # where the attempt went (None: no connection was made)
    ip: str | None = None
    tls: str | None = None  # TLS version, None for plain text or no connection
    bounce: NewBounce | None = None  # a refusal to keep in the bounce log (and maybe suppress)
    classification: Classification | None = None  # what a refusal means (every outcome but delivered)
    sandbox: bool = False  # captured in the sandbox: no connection was made


class QuotaExhausted(Exception):
    """The API key has sent its quota of messages for the period."""

    def __init__(self, period: str, limit: int) -> None:
        super().__init__(f"the {'daily' if period == 'd' else 'monthly'} quota of {limit} messages is used up")
        self.period = period
        self.limit = limit


@dataclasses.dataclass(frozen=True)
class Quota:
    api_key_id: str
    daily: int | None
    monthly: int | None


def enqueue(conn: sqlite3.Connection, message: NewMessage, now: float, quota: Quota | None = None) -> None:
    """Insert the message, its body, tags, recipients and QUEUED events; count it against the quota."""
    if quota is not None:
        _count_against_quota(conn, quota, now)
    scheduled = message.send_at if message.send_at is not None and message.send_at > now else None
    state, due = ("scheduled", scheduled) if scheduled is not None else ("queued", now)
    conn.execute(
        "INSERT INTO messages (id, created_at, sender, size, source, subject, tags, metadata, api_key_id, header_id,"
        " send_at, sandbox) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            message.id, now, message.sender, len(message.raw), message.source, message.subject,
            json.dumps(list(message.tags)), json.dumps(message.metadata, allow_nan=False), message.api_key_id,
            message.header_id,
            scheduled, int(message.sandbox),
        ),
    )  # fmt: skip
    conn.executemany(
        "INSERT INTO message_tags (tag, message_id) VALUES (?, ?)", [(t, message.id) for t in message.tags]
    )
    conn.execute("INSERT INTO message_bodies (message_id, raw) VALUES (?, ?)", (message.id, message.raw))
    for address in message.recipients:
        why = message.suppressed.get(address)
        if why is not None:  # kept for the record (activity, events), never attempted
            cur = conn.execute(
                "INSERT INTO recipients (message_id, address, domain, state, last_response, updated_at)"
                " VALUES (?, ?, ?, 'suppressed', ?, ?)",
                (message.id, address, domain_of(address), why, now),
            )
            _event(conn, now, EventKind.SUPPRESSED, message.id, cur.lastrowid, address, None, why)
            continue
        cur = conn.execute(
            "INSERT INTO recipients (message_id, address, domain, state, next_attempt_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (message.id, address, domain_of(address), state, due, now),
        )
        _event(conn, now, EventKind.QUEUED, message.id, cur.lastrowid, address, None, None,
               {"send_at": scheduled} if scheduled is not None else None)  # fmt: skip


def _periods(now: float) -> tuple[str, str]:
    """The key_usage periods ``now`` falls in: the UTC day and month."""
    return time.strftime("d:%Y-%m-%d", time.gmtime(now)), time.strftime("m:%Y-%m", time.gmtime(now))


def key_usage(conn: sqlite3.Connection, api_key_id: str, now: float) -> tuple[int, int]:
    """Messages counted against a key's quota this UTC day and month (counted only for keys with a quota)."""
    day, month = _periods(now)
    counts = dict(conn.execute(
        "SELECT period, count FROM key_usage WHERE api_key_id = ? AND period IN (?, ?)", (api_key_id, day, month)
    ).fetchall())  # fmt: skip
    return counts.get(day, 0), counts.get(month, 0)


def check_quota(conn: sqlite3.Connection, quota: Quota, now: float) -> None:
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


def _count_against_quota(conn: sqlite3.Connection, quota: Quota, now: float) -> None:
    check_quota(conn, quota, now)
    for period in _periods(now):
        conn.execute(
            "INSERT INTO key_usage (api_key_id, period, count) VALUES (?, ?, 1)"
            " ON CONFLICT (api_key_id, period) DO UPDATE SET count = count + 1",
            (quota.api_key_id, period),
        )


def claim_due(
    conn: sqlite3.Connection,
    now: float,
    limit: int,
    owner: str,
    lease_until: float,
    max_bytes: int | None = None,
    first_fits: bool = True,
) -> list[LeasedMessage]:
    """Lease up to ``limit`` due recipients to ``owner`` and return them grouped by message.

    With ``max_bytes``, the messages whose recipients are leased add up to at most that many bytes of
    body (with ``first_fits``, at least one message is taken, however large). Walks the partial index
    ``recipients_due`` in due order; never scans the queue.
    """
    due = conn.execute(
        "SELECT r.id, r.message_id, m.size FROM recipients r JOIN messages m ON m.id = r.message_id"
        " WHERE r.next_attempt_at <= ? AND r.domain NOT IN (SELECT domain FROM suspended_domains WHERE until > ?)"
        " ORDER BY r.next_attempt_at LIMIT ?",
        (now, now, limit),
    ).fetchall()
    ids = within_bytes(due, max_bytes, first_fits)
    if not ids:
        return []
    rows = conn.execute(
        "UPDATE recipients SET state = 'sending', next_attempt_at = NULL,"
        " lease_owner = ?, lease_until = ?, updated_at = ? WHERE id IN (SELECT value FROM json_each(?))"
        " RETURNING id, message_id, address, domain, attempts",
        (owner, lease_until, now, json.dumps(ids)),
    ).fetchall()
    if not rows:
        return []
    rows = _drop_suppressed(conn, rows, now)
    by_message: dict[str, list[LeasedRecipient]] = defaultdict(list)
    for rid, message_id, address, domain, attempts in rows:
        by_message[message_id].append(LeasedRecipient(rid, address, domain, attempts))
    if not by_message:
        return []
    marks = ",".join("?" * len(by_message))
    messages = conn.execute(
        "SELECT m.id, m.sender, coalesce(m.send_at, m.created_at), b.raw, m.sandbox FROM messages m"
        f" JOIN message_bodies b ON b.message_id = m.id WHERE m.id IN ({marks})",
        list(by_message),
    ).fetchall()
    return [
        LeasedMessage(mid, sender, created_at, raw, tuple(sorted(by_message[mid], key=lambda r: r.id)), bool(sandbox))
        for mid, sender, created_at, raw, sandbox in messages
    ]


def within_bytes(due: list[tuple[int, str, int]], max_bytes: int | None, first_fits: bool = True) -> list[int]:
    """The ids of due (recipient id, message id, message size) rows, in order, up to the first recipient whose
    message would take the bodies past ``max_bytes`` (a message counts once; with ``first_fits`` the first
    message is taken whatever its size)."""
    if max_bytes is None:
        return [rid for rid, _, _ in due]
    taken: list[int] = []
    messages: set[str] = set()
    total = 0
    for rid, message_id, size in due:
        if message_id not in messages:
            if (messages or not first_fits) and total + size > max_bytes:
                break
            messages.add(message_id)
            total += size
        taken.append(rid)
    return taken


def _drop_suppressed(conn: sqlite3.Connection, rows: list[Any], now: float) -> list[Any]:
    """Recipients suppressed while their mail waited are not mailed: state suppressed, with an event."""
    found = suppressions.suppressed(conn, {row[2] for row in rows}, now)
    if not found:
        return rows
    kept = []
    for row in rows:
        rid, message_id, address = row[0], row[1], row[2]
        s = found.get(address)
        if s is None:
            kept.append(row)
            continue
        detail = f"suppressed ({s.reason}) before delivery"
        conn.execute(
            "UPDATE recipients SET state = 'suppressed', lease_owner = NULL, lease_until = NULL, last_code = NULL,"
            " last_response = ?, updated_at = ? WHERE id = ?",
            (detail, now, rid),
        )
        _event(conn, now, EventKind.SUPPRESSED, message_id, rid, address, None, detail)
    return kept


def record_attempts(
    conn: sqlite3.Connection, results: list[AttemptResult], now: float, policy: SuppressionPolicy
) -> None:
    """Store each outcome and its event, and bounces with the suppressions they cause; the lease is released."""
    for r in results:
        if r.bounce is not None:
            suppressions.record_bounce(conn, r.bounce, now, policy)
        assert (r.next_attempt_at is not None) == (r.state in PENDING_STATES), r
        row = conn.execute(
            "UPDATE recipients SET state = ?, attempts = attempts + 1, next_attempt_at = ?,"
            " lease_owner = NULL, lease_until = NULL, last_code = ?, last_response = ?, updated_at = ?"
            " WHERE id = ? RETURNING attempts",
            (r.state.value, r.next_attempt_at, r.code, r.response, now, r.recipient_id),
        ).fetchone()
        enhanced = _ENHANCED.match(r.response)
        _event(conn, now, r.event, r.message_id, r.recipient_id, r.address, r.code, r.response,
               _attempt_details(r, row[0] if row else None, enhanced.group(1) if enhanced else None))  # fmt: skip
        conn.execute(
            "INSERT INTO attempts (recipient_id, message_id, at, mx_host, ip, tls, code, enhanced, text)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (r.recipient_id, r.message_id, now, r.mx_host, r.ip, r.tls, r.code,
             enhanced.group(1) if enhanced else None, r.response),
        )  # fmt: skip


def _attempt_details(r: AttemptResult, attempt: int | None, enhanced: str | None) -> dict[str, Any]:
    details: dict[str, Any] = {"attempt": attempt, "mx_host": r.mx_host, "ip": r.ip, "tls": r.tls,
                               "smtp_code": r.code, "enhanced_status": enhanced, "response": r.response}  # fmt: skip
    if r.classification is not None:
        details["classification"] = r.classification.kind.value
        details["reason"] = r.classification.reason
    if r.next_attempt_at is not None:
        details["next_attempt_at"] = r.next_attempt_at
    if r.sandbox:
        details["sandbox"] = True
    return details


def postpone(conn: sqlite3.Connection, recipient_ids: list[int], until: float, now: float) -> None:
    """Put leased recipients back, due at ``until``, without counting an attempt (throttling, suspension)."""
    conn.executemany(
        "UPDATE recipients SET state = CASE WHEN attempts = 0 THEN 'queued' ELSE 'deferred' END,"
        " next_attempt_at = ?, lease_owner = NULL, lease_until = NULL, updated_at = ? WHERE id = ?",
        [(until, now, rid) for rid in recipient_ids],
    )


@dataclasses.dataclass(frozen=True)
class Attempt:
    at: float
    mx_host: str | None
    ip: str | None
    tls: str | None
    code: int | None
    enhanced: str | None
    text: str | None


def attempts_of(conn: sqlite3.Connection, message_id: str, address: str) -> list[Attempt]:
    return [
        Attempt(*row)
        for row in conn.execute(
            "SELECT a.at, a.mx_host, a.ip, a.tls, a.code, a.enhanced, a.text FROM attempts a"
            " JOIN recipients r ON r.id = a.recipient_id WHERE r.message_id = ? AND r.address = ? ORDER BY a.id",
            (message_id, address),
        )
    ]


def release_leases(conn: sqlite3.Connection, now: float, owner: str | None = None) -> int:
    """Return leased recipients to the queue, due now: all of ``owner``'s, or every expired lease.

    An attempt that was in flight when its worker died may have reached the
    receiving server; delivering again is the at-least-once price of never losing mail.
    """
    which, value = ("lease_owner = ?", owner) if owner is not None else ("lease_until < ?", now)
    cur = conn.execute(
        "UPDATE recipients SET state = CASE WHEN attempts = 0 THEN 'queued' ELSE 'deferred' END,"
        " next_attempt_at = ?, lease_owner = NULL, lease_until = NULL, updated_at = ?"
        f" WHERE state = 'sending' AND {which}",
        (now, now, value),
    )
    return cur.rowcount


def pending_count(conn: sqlite3.Connection) -> int:
    """Recipients not yet done with (waiting or in flight), counted on indexes."""
    row = conn.execute(
        f"SELECT (SELECT count(*) FROM recipients WHERE {_DUE_SQL})"
        " + (SELECT count(*) FROM recipients WHERE state = 'sending')"
    ).fetchone()
    return int(row[0])


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
    updated_at: float


_STATUS_COLUMNS = "address, state, attempts, next_attempt_at, last_code, last_response, updated_at"


def message_status(conn: sqlite3.Connection, message_id: str) -> list[RecipientStatus]:
    return [
        RecipientStatus(*row)
        for row in conn.execute(
            f"SELECT {_STATUS_COLUMNS} FROM recipients WHERE message_id = ? ORDER BY id", (message_id,)
        )
    ]


@dataclasses.dataclass(frozen=True)
class MessageRecord:
    id: str
    created_at: float
    sender: str
    size: int
    source: str
    subject: str
    tags: list[str]
    metadata: dict[str, Any]
    api_key_id: str | None
    recipients: list[RecipientStatus]
    send_at: float | None = None
    sandbox: bool = False


_MESSAGE_COLUMNS = "id, created_at, sender, size, source, subject, tags, metadata, api_key_id, send_at, sandbox"


def _message_record(conn: sqlite3.Connection, row: tuple[Any, ...]) -> MessageRecord:
    mid, created, sender, size, source, subject, tags, metadata, key_id, send_at, sandbox = row
    return MessageRecord(
        mid, created, sender, size, source, subject, json.loads(tags), load_metadata(metadata), key_id,
        message_status(conn, mid), send_at, bool(sandbox),
    )  # fmt: skip


def message_record(conn: sqlite3.Connection, message_id: str) -> MessageRecord | None:
    row = conn.execute(f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE id = ?", (message_id,)).fetchone()
    return None if row is None else _message_record(conn, row)


@dataclasses.dataclass(frozen=True)
class MessageFilter:
    before: str | None = None  # cursor: the last id of the previous page
    status: str | None = None  # messages with at least one recipient in this state
    recipient: str | None = None
    tag: str | None = None
    since: float | None = None
    until: float | None = None
    api_key_id: str | None = None  # submitted with this key


_FILTERS = (
    ("before", "m.id < ?"),
    ("status", "EXISTS (SELECT 1 FROM recipients r WHERE r.message_id = m.id AND r.state = ?)"),
    ("recipient", "m.id IN (SELECT message_id FROM recipients WHERE address = ?)"),
    ("tag", "m.id IN (SELECT message_id FROM message_tags WHERE tag = ?)"),
    ("since", "m.created_at >= ?"),
    ("until", "m.created_at < ?"),
    ("api_key_id", "m.api_key_id = ?"),
)


def list_messages(conn: sqlite3.Connection, f: MessageFilter, limit: int) -> list[MessageRecord]:
    """Newest first, walking the primary key (ids are time-ordered) from the cursor."""
    active = [(sql, getattr(f, name)) for name, sql in _FILTERS if getattr(f, name) is not None]
    sql = f"SELECT {_MESSAGE_COLUMNS} FROM messages m"
    if active:
        sql += " WHERE " + " AND ".join(clause for clause, _ in active)
    sql += " ORDER BY m.id DESC LIMIT ?"
    rows = conn.execute(sql, [*(value for _, value in active), limit]).fetchall()
    return [_message_record(conn, row) for row in rows]


def sandbox_messages(conn: sqlite3.Connection, before: str | None, limit: int,
                     api_key_id: str | None = None) -> list[MessageRecord]:  # fmt: skip
    """Sandboxed messages, newest first (cursor: the last id of the previous page), on the messages_sandbox index."""
    after_cursor, params = ("AND id < ?", [before]) if before else ("", [])
    if api_key_id is not None:
        after_cursor, params = after_cursor + " AND api_key_id = ?", [*params, api_key_id]
    rows = conn.execute(
        f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE sandbox = 1 {after_cursor} ORDER BY id DESC LIMIT ?",
        [*params, limit],
    ).fetchall()
    return [_message_record(conn, row) for row in rows]


def sandbox_message(conn: sqlite3.Connection, message_id: str) -> tuple[MessageRecord, bytes | None] | None:
    row = conn.execute(
        f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE id = ? AND sandbox = 1", (message_id,)
    ).fetchone()
    if row is None:
        return None
    body = conn.execute("SELECT raw FROM message_bodies WHERE message_id = ?", (message_id,)).fetchone()
    return _message_record(conn, row), None if body is None else bytes(body[0])


def cancel_message(conn: sqlite3.Connection, message_id: str, now: float) -> list[str]:
    """Cancel every recipient still waiting (queued or deferred); returns their addresses."""
    rows = conn.execute(
        "UPDATE recipients SET state = 'cancelled', next_attempt_at = NULL, updated_at = ?"
        " WHERE message_id = ? AND state IN ('queued', 'scheduled', 'deferred') RETURNING id, address",
        (now, message_id),
    ).fetchall()
    for rid, address in rows:
        _event(conn, now, EventKind.CANCELLED, message_id, rid, address, None, "cancelled through the API")
    return [address for _, address in rows]


def _event(
    conn: sqlite3.Connection,
    now: float,
    kind: EventKind,
    message_id: str,
    recipient_id: int | None,
    recipient: str | None,
    code: int | None,
    detail: str | None,
    details: dict[str, Any] | None = None,
) -> None:
    """One event row. Triggers count it (event_counts) and queue it for each matching webhook."""
    conn.execute(
        "INSERT INTO events (at, kind, message_id, recipient_id, recipient, code, detail, details)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (now, kind.value, message_id, recipient_id, recipient, code, detail,
         json.dumps(details) if details else None),
    )  # fmt: skip


# -- queue control -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DomainQueue:
    domain: str
    queued: int
    deferred: int
    sending: int
    scheduled: int  # deferred and due later than now
    oldest: float | None  # creation time of the oldest message still waiting
    suspended_until: float | None


def domain_queues(conn: sqlite3.Connection, now: float) -> list[DomainQueue]:
    """Pending recipients per destination domain, busiest first."""
    suspended = dict(conn.execute("SELECT domain, until FROM suspended_domains WHERE until > ?", (now,)).fetchall())
    rows = conn.execute(
        "SELECT r.domain,"
        " sum(r.state = 'queued'), sum(r.state = 'deferred'), sum(r.state = 'sending'),"
        " sum(r.state = 'deferred' AND r.next_attempt_at > ?), min(m.created_at)"
        " FROM recipients r JOIN messages m ON m.id = r.message_id"
        " WHERE r.state IN ('queued', 'deferred', 'sending') GROUP BY r.domain",
        (now,),
    ).fetchall()
    queues = [DomainQueue(d, q, df, s, sc, oldest, suspended.pop(d, None)) for d, q, df, s, sc, oldest in rows]
    queues += [DomainQueue(d, 0, 0, 0, 0, None, until) for d, until in suspended.items()]
    return sorted(queues, key=lambda x: (-(x.queued + x.deferred + x.sending), x.domain))


@dataclasses.dataclass(frozen=True)
class Selection:
    """Which waiting recipients an operator command applies to; no field set means all of them."""

    message_id: str | None = None
    domain: str | None = None
    sender: str | None = None
    recipient: str | None = None
    created_before: float | None = None  # messages accepted before this time

    @property
    def is_everything(self) -> bool:
        return all(getattr(self, f.name) is None for f in dataclasses.fields(self))

    def sql(self) -> tuple[str, list[Any]]:
        """A WHERE clause over ``recipients`` and its parameters."""
        clauses = ["1"]
        params: list[Any] = []
        for value, clause in (
            (self.message_id, "message_id = ?"),
            (self.domain and self.domain.lower(), "domain = ?"),
            (self.recipient, "address = ?"),
            (self.sender, "message_id IN (SELECT id FROM messages WHERE sender = ?)"),
            (self.created_before, "message_id IN (SELECT id FROM messages WHERE created_at < ?)"),
        ):
            if value is not None:
                clauses.append(clause)
                params.append(value)
        return " AND ".join(clauses), params


def retry_now(conn: sqlite3.Connection, now: float, selection: Selection) -> int:
    """Make the selected waiting recipients due now."""
    where, params = selection.sql()
    return conn.execute(
        f"UPDATE recipients SET next_attempt_at = ?, updated_at = ? WHERE {_DUE_SQL} AND {where}",
        [now, now, *params],
    ).rowcount


def purge(conn: sqlite3.Connection, now: float, selection: Selection) -> int:
    """Take the selected waiting recipients out of the queue (cancelled, no bounce); like ``postsuper -d``."""
    where, params = selection.sql()
    rows = conn.execute(
        "UPDATE recipients SET state = 'cancelled', next_attempt_at = NULL, updated_at = ?"
        f" WHERE {_DUE_SQL} AND {where} RETURNING id, message_id, address",
        [now, *params],
    ).fetchall()
    for rid, mid, address in rows:
        _event(conn, now, EventKind.CANCELLED, mid, rid, address, None, "purged from the queue by the operator")
    return len(rows)


def suspend_domain(conn: sqlite3.Connection, domain: str, until: float, reason: str) -> None:
    conn.execute(
        "INSERT INTO suspended_domains (domain, until, reason) VALUES (?, ?, ?)"
        " ON CONFLICT (domain) DO UPDATE SET until = excluded.until, reason = excluded.reason",
        (domain.lower(), until, reason),
    )


def resume_domain(conn: sqlite3.Connection, domain: str) -> bool:
    return conn.execute("DELETE FROM suspended_domains WHERE domain = ?", (domain.lower(),)).rowcount == 1


def admin_bounce(conn: sqlite3.Connection, now: float, reason: str, selection: Selection) -> int:
    """Give up on the selected waiting recipients as bounced by the operator."""
    where, params = selection.sql()
    rows = conn.execute(
        "UPDATE recipients SET state = 'bounced', next_attempt_at = NULL, last_code = NULL, last_response = ?,"
        f" updated_at = ? WHERE {_DUE_SQL} AND {where} RETURNING id, message_id, address",
        [f"5.0.0 bounced by the operator: {reason}", now, *params],
    ).fetchall()
    for rid, mid, address in rows:
        _event(conn, now, EventKind.BOUNCED, mid, rid, address, None, f"bounced by the operator: {reason}")
    return len(rows)


def cancel_scheduled(conn: sqlite3.Connection, now: float) -> tuple[int, int]:
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


class BodyDeleted(Exception):
    """The message's body is gone (``[retention] bodies``): it cannot be sent again."""


@dataclasses.dataclass(frozen=True)
class Resent:
    """What a resend did to one recipient: ``queued`` again, left ``suppressed``, or ``unchanged``
    (not bounced or failed)."""

    address: str
    previous: str
    result: str
    reason: str | None = None


_RESENDABLE = ("bounced", "failed")


def resend(conn: sqlite3.Connection, message_id: str, now: float) -> list[Resent] | None:
    """Queue a message's bounced and failed recipients again, due now, unless suppressed now (those keep
    their state). None: no such message. Raises BodyDeleted when retention has removed the body."""
    if conn.execute("SELECT 1 FROM messages WHERE id = ?", (message_id,)).fetchone() is None:
        return None
    rows = conn.execute("SELECT id, address, state FROM recipients WHERE message_id = ? ORDER BY id",
                        (message_id,)).fetchall()  # fmt: skip
    targets = [address for _, address, state in rows if state in _RESENDABLE]
    if targets and conn.execute("SELECT 1 FROM message_bodies WHERE message_id = ?", (message_id,)).fetchone() is None:
        raise BodyDeleted(f"the body of message {message_id} has been deleted ([retention] bodies)")
    found = suppressions.suppressed(conn, targets, now)
    out = []
    for rid, address, state in rows:
        if state not in _RESENDABLE:
            out.append(Resent(address, state, "unchanged"))
        elif address in found:
            out.append(Resent(address, state, "suppressed", f"suppressed ({found[address].reason})"))
        else:
            conn.execute(
                "UPDATE recipients SET state = 'queued', next_attempt_at = ?, updated_at = ? WHERE id = ?",
                (now, now, rid),
            )
            _event(conn, now, EventKind.QUEUED, message_id, rid, address, None, "resent through the API",
                   {"resent": True, "previous_status": state})  # fmt: skip
            out.append(Resent(address, state, "queued"))
    return out


# -- returned mail (asynchronous bounces and complaints) ------------------------------------


@dataclasses.dataclass(frozen=True)
class ReturnedTarget:
    """The recipient of one of our messages that a returned report is about."""

    message_id: str
    recipient_id: int
    address: str
    state: str


_TARGET_COLUMNS = "r.message_id, r.id, r.address, r.state"


def returned_target(conn: sqlite3.Connection, message_id: str, recipient_id: int) -> ReturnedTarget | None:
    row = conn.execute(
        f"SELECT {_TARGET_COLUMNS} FROM recipients r WHERE r.id = ? AND r.message_id = ?", (recipient_id, message_id)
    ).fetchone()
    return ReturnedTarget(*row) if row else None


def targets_by_header_id(conn: sqlite3.Connection, header_id: str, limit: int = 1000) -> list[ReturnedTarget]:
    rows = conn.execute(
        f"SELECT {_TARGET_COLUMNS} FROM messages m JOIN recipients r ON r.message_id = m.id"
        " WHERE m.header_id = ? ORDER BY r.id LIMIT ?",
        (header_id, limit),
    ).fetchall()
    return [ReturnedTarget(*row) for row in rows]


def record_returned(conn: sqlite3.Connection, bounce: NewBounce, target: ReturnedTarget, now: float,
                    policy: SuppressionPolicy) -> tuple[int, suppressions.Suppression | None]:  # fmt: skip
    """A returned report about ``target``: the bounce (and any suppression), an event, and a recipient
    the receiver had accepted marked bounced after all. A complaint leaves the state alone."""
    bounce = dataclasses.replace(bounce, message_id=target.message_id)
    bounce_id, suppression = suppressions.record_bounce(conn, bounce, now, policy)
    c = bounce.classification
    complaint = c.kind is Kind.COMPLAINT
    detail = f"{bounce.source}: {c.kind.value} ({c.reason}){': ' + bounce.diagnostic if bounce.diagnostic else ''}"
    kind = EventKind.COMPLAINED if complaint else EventKind.BOUNCED
    _event(conn, now, kind, target.message_id, target.recipient_id, target.address, bounce.code, detail[:1000],
           {"source": bounce.source, "classification": c.kind.value, "reason": c.reason, "enhanced_status": c.status,
            "response": bounce.diagnostic, "remote_mta": bounce.remote_mta, "bounce_id": bounce_id})  # fmt: skip
    if not complaint:
        conn.execute(
            "UPDATE recipients SET state = 'bounced', last_code = ?, last_response = ?, updated_at = ?"
            " WHERE id = ? AND state = 'delivered'",
            (bounce.code, detail[:1000], now, target.recipient_id),
        )
    return bounce_id, suppression


# -- scheduled messages ----------------------------------------------------------------------------


def scheduled_messages(conn: sqlite3.Connection, before: str | None, limit: int,
                       api_key_id: str | None = None) -> list[MessageRecord]:  # fmt: skip
    """Messages with recipients waiting for their send_at, soonest first (cursor: message id)."""
    rows = conn.execute(
        f"SELECT {_MESSAGE_COLUMNS} FROM messages m WHERE m.send_at IS NOT NULL"
        " AND (? IS NULL OR m.api_key_id = ?)"
        " AND EXISTS (SELECT 1 FROM recipients r WHERE r.message_id = m.id AND r.state = 'scheduled')"
        " AND (? IS NULL OR (m.send_at, m.id) > ((SELECT send_at FROM messages WHERE id = ?), ?))"
        " ORDER BY m.send_at, m.id LIMIT ?",
        (api_key_id, api_key_id, before, before, before, limit),
    ).fetchall()
    return [_message_record(conn, row) for row in rows]


def reschedule(conn: sqlite3.Connection, message_id: str, send_at: float, now: float) -> int:
    """Move a scheduled message; returns how many recipients still waited for it (0: nothing to move)."""
    moved = conn.execute(
        "UPDATE recipients SET next_attempt_at = ?, updated_at = ? WHERE message_id = ? AND state = 'scheduled'",
        (send_at, now, message_id),
    ).rowcount
    if moved:
        conn.execute("UPDATE messages SET send_at = ? WHERE id = ?", (send_at, message_id))
    return moved


class SqliteQueue:
    """:class:`relay.store.protocols.QueueStore` over the shared database."""

    def __init__(self, db: Database, clock: Clock, suppression_policy: SuppressionPolicy,
                 redact_subjects: bool = False) -> None:  # fmt: skip
        self.db = db
        self.clock = clock
        self.suppression_policy = suppression_policy
        self.redact_subjects = redact_subjects

    async def enqueue_many(self, messages: Sequence[NewMessage], quota: Quota | None = None,
                           completion: idem.Completion | None = None) -> None:  # fmt: skip
        """Durably queue several messages in one transaction: all of them or, on an error, none."""
        now = self.clock.now()
        if self.redact_subjects:
            messages = [dataclasses.replace(m, subject="") for m in messages]

        def op(conn: sqlite3.Connection) -> None:
            for message in messages:
                enqueue(conn, message, now, quota)
            if completion is not None:
                idem.complete(conn, completion)

        await self.db.write(op)

    async def enqueue(
        self, message: NewMessage, quota: Quota | None = None, completion: idem.Completion | None = None
    ) -> None:
        """Durably queue a message; returns once it is committed to disk.

        ``quota``: count it against an API key's quota (raises QuotaExhausted).
        ``completion``: store the Idempotency-Key outcome in the same transaction.
        """
        now = self.clock.now()
        if self.redact_subjects and message.subject:
            message = dataclasses.replace(message, subject="")

        def op(conn: sqlite3.Connection) -> None:
            enqueue(conn, message, now, quota)
            if completion is not None:
                idem.complete(conn, completion)

        await self.db.write(op)

    async def claim_due(
        self, limit: int, owner: str, lease: float, max_bytes: int | None = None, first_fits: bool = True
    ) -> list[LeasedMessage]:
        now = self.clock.now()
        return await self.db.write(lambda c: claim_due(c, now, limit, owner, now + lease, max_bytes, first_fits))

    async def record_attempts(self, results: list[AttemptResult]) -> None:
        now = self.clock.now()
        policy = self.suppression_policy
        await self.db.write(lambda c: record_attempts(c, results, now, policy))

    async def postpone(self, recipient_ids: list[int], until: float) -> None:
        now = self.clock.now()
        await self.db.write(lambda c: postpone(c, recipient_ids, until, now))

    async def attempts(self, message_id: str, address: str) -> list[Attempt]:
        return await self.db.read(lambda c: attempts_of(c, message_id, address))

    async def domain_queues(self) -> list[DomainQueue]:
        now = self.clock.now()
        return await self.db.read(lambda c: domain_queues(c, now))

    async def retry_now(self, selection: Selection) -> int:
        now = self.clock.now()
        return await self.db.write(lambda c: retry_now(c, now, selection))

    async def purge(self, selection: Selection) -> int:
        now = self.clock.now()
        return await self.db.write(lambda c: purge(c, now, selection))

    async def cancel_scheduled(self) -> tuple[int, int]:
        """Cancel every scheduled message not yet due: (messages, recipients)."""
        now = self.clock.now()
        return await self.db.write(lambda c: cancel_scheduled(c, now))

    async def resend(self, message_id: str) -> list[Resent] | None:
        """Queue a message's bounced and failed recipients again unless suppressed now (None: no such message)."""
        now = self.clock.now()
        return await self.db.write(lambda c: resend(c, message_id, now))

    async def suspend_domain(self, domain: str, duration: float, reason: str = "") -> float:
        until = self.clock.now() + duration
        await self.db.write(lambda c: suspend_domain(c, domain, until, reason))
        return until

    async def resume_domain(self, domain: str) -> bool:
        return await self.db.write(lambda c: resume_domain(c, domain))

    async def admin_bounce(self, reason: str, selection: Selection) -> int:
        now = self.clock.now()
        return await self.db.write(lambda c: admin_bounce(c, now, reason, selection))

    async def release_leases(self, owner: str | None = None) -> int:
        """Release ``owner``'s leases, or (owner None) every expired lease."""
        now = self.clock.now()
        return await self.db.write(lambda c: release_leases(c, now, owner))

    async def next_due_at(self) -> float | None:
        return await self.db.read(next_due_at)

    async def summary(self) -> QueueSummary:
        return await self.db.read(summary)

    async def message_status(self, message_id: str) -> list[RecipientStatus]:
        return await self.db.read(lambda c: message_status(c, message_id))

    async def message(self, message_id: str) -> MessageRecord | None:
        return await self.db.read(lambda c: message_record(c, message_id))

    async def messages(self, filter: MessageFilter, limit: int) -> list[MessageRecord]:
        return await self.db.read(lambda c: list_messages(c, filter, limit))

    async def scheduled_messages(self, after: str | None, limit: int,
                                 api_key_id: str | None = None) -> list[MessageRecord]:  # fmt: skip
        return await self.db.read(lambda c: scheduled_messages(c, after, limit, api_key_id))

    async def reschedule(self, message_id: str, send_at: float) -> int:
        now = self.clock.now()
        return await self.db.write(lambda c: reschedule(c, message_id, send_at, now))

    async def cancel_message(self, message_id: str) -> list[str]:
        now = self.clock.now()
        return await self.db.write(lambda c: cancel_message(c, message_id, now))

    async def pending_count(self) -> int:
        return await self.db.read(pending_count)

    async def check_quota(self, quota: Quota) -> None:
        """Raise QuotaExhausted if one more message would go over the quota; counts nothing (dry runs)."""
        now = self.clock.now()
        await self.db.read(lambda c: check_quota(c, quota, now))

    async def key_usage(self, api_key_id: str) -> tuple[int, int]:
        """Messages counted against the key's quotas this UTC day and month."""
        now = self.clock.now()
        return await self.db.read(lambda c: key_usage(c, api_key_id, now))

    async def sandbox_messages(self, before: str | None, limit: int,
                               api_key_id: str | None = None) -> list[MessageRecord]:  # fmt: skip
        return await self.db.read(lambda c: sandbox_messages(c, before, limit, api_key_id))

    async def sandbox_message(self, message_id: str) -> tuple[MessageRecord, bytes | None] | None:
        """A sandboxed message and its body (None once [retention] bodies has deleted it)."""
        return await self.db.read(lambda c: sandbox_message(c, message_id))

    async def returned_target(self, message_id: str, recipient_id: int) -> ReturnedTarget | None:
        """The recipient an authenticated return path names, if the message is still known."""
        return await self.db.read(lambda c: returned_target(c, message_id, recipient_id))

    async def targets_by_header_id(self, header_id: str) -> list[ReturnedTarget]:
        """The recipients of the message(s) with this Message-ID header."""
        return await self.db.read(lambda c: targets_by_header_id(c, header_id))

    async def record_returned(self, bounce: NewBounce, target: ReturnedTarget
                              ) -> tuple[int, Suppression | None]:  # fmt: skip
        """A returned report (DSN or complaint) about one recipient: bounce, suppression, event, state."""
        now, policy = self.clock.now(), self.suppression_policy
        return await self.db.write(lambda c: record_returned(c, bounce, target, now, policy))
