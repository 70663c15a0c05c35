"""A message's life in the queue, in SQL: enqueue, lease due recipients, record attempts, release leases."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from relay.bounces.reasons import deferral_reason
from relay.events import PENDING_STATES, EventKind
from relay.message import NewMessage, domain_key, domain_of
from relay.store import suppressions
from relay.store.bodies import bodies_of
from relay.store.db import spool_of
from relay.store.dialect import PLAN_EACH_TIME, Connection, is_postgres, notify
from relay.store.queue.records import AttemptResult, LeasedMessage, LeasedRecipient
from relay.store.spool import SPOOL_MIN_BYTES
from relay.suppression import SuppressionPolicy

# Invariant kept by every function here: next_attempt_at is NOT NULL exactly
# when the recipient is pending (queued or deferred). The partial index
# recipients_due covers those rows only, so "what is due" never scans the queue.
_DUE_SQL = "next_attempt_at IS NOT NULL"


# The channel that new due work is announced on (PostgreSQL: every node's engine listens; see watch()).
NEW_WORK = "relay_new_work"

_ENHANCED = re.compile(r"([245]\.\d{1,3}\.\d{1,3})\b")


def enqueue(conn: Connection, message: NewMessage, now: float) -> None:
    """Insert the message, its body, tags, recipients and QUEUED events."""
    scheduled = message.send_at if message.send_at is not None and message.send_at > now else None
    state, due = ("scheduled", scheduled) if scheduled is not None else ("queued", now)
    if scheduled is None:
        notify(conn, NEW_WORK)
    row = (
        message.id,
        now,
        message.sender,
        len(message.raw),
        message.source,
        message.subject,
        json.dumps(list(message.tags)) if message.tags else "[]",
        json.dumps(message.metadata, allow_nan=False) if message.metadata else "{}",
        message.api_key_id,
        message.header_id,
        scheduled,
        int(message.sandbox),
    )
    if is_postgres(conn) and message.recipients:
        _enqueue_in_one_statement(conn, message, row, now, state, due, scheduled)
        return
    conn.execute(_INSERT_MESSAGE, row)
    if message.tags:
        conn.executemany(
            "INSERT INTO message_tags (tag, message_id) VALUES (?, ?)", [(t, message.id) for t in message.tags]
        )
    _store_body(conn, message)
    for address in message.recipients:
        why = message.suppressed.get(address)
        if why is not None:  # kept for the record (activity, events), never attempted
            cur = conn.execute(
                "INSERT INTO recipients (message_id, address, domain, state, last_response, updated_at)"
                " VALUES (?, ?, ?, 'suppressed', ?, ?) RETURNING id",
                (message.id, address, domain_key(domain_of(address)), why, now),
            )
            _event(conn, now, EventKind.SUPPRESSED, message.id, cur.fetchone()[0], address, None, why)
            continue
        cur = conn.execute(
            "INSERT INTO recipients (message_id, address, domain, state, next_attempt_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
            (message.id, address, domain_key(domain_of(address)), state, due, now),
        )
        _event(
            conn,
            now,
            EventKind.QUEUED,
            message.id,
            cur.fetchone()[0],
            address,
            None,
            None,
            {"send_at": scheduled} if scheduled is not None else None,
        )


def _store_body(conn: Connection, message: NewMessage) -> None:
    """The body in the database, or a big one in the spool beside it (relay.store.spool), written before
    this transaction commits."""
    spool = spool_of(conn)
    if spool is None or len(message.raw) < SPOOL_MIN_BYTES:
        conn.execute("INSERT INTO message_bodies (message_id, raw) VALUES (?, ?)", (message.id, message.raw))
        return
    segment, start = spool.stage(message.raw)
    conn.execute(
        "INSERT INTO spooled_bodies (message_id, segment, start, length) VALUES (?, ?, ?, ?)",
        (message.id, segment, start, len(message.raw)),
    )


_INSERT_MESSAGE = (
    "INSERT INTO messages (id, created_at, sender, size, source, subject, tags, metadata, api_key_id, header_id,"
    " send_at, sandbox) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _enqueue_in_one_statement(
    conn: Connection,
    message: NewMessage,
    row: tuple[Any, ...],
    now: float,
    state: str,
    due: float | None,
    scheduled: float | None,
) -> None:
    """PostgreSQL: what :func:`enqueue` writes, as one statement (data-modifying CTEs; foreign keys and the
    events' triggers are checked and run at its end), instead of 3 + 2 per recipient: on a server each
    statement costs a round trip and a parse-bind-execute of its own."""
    recipients: list[tuple[Any, ...]] = []
    for address in message.recipients:
        why = message.suppressed.get(address)
        if why is not None:  # kept for the record (activity, events), never attempted
            recipients.append((message.id, address, domain_key(domain_of(address)), "suppressed", None, why, now))
        else:
            recipients.append((message.id, address, domain_key(domain_of(address)), state, due, None, now))
    queued_details = json.dumps({"send_at": scheduled}) if scheduled is not None else None
    values = ", ".join(["(?, ?, ?, ?, ?, ?, ?)"] * len(recipients))
    conn.execute(
        f"WITH m AS ({_INSERT_MESSAGE}),"
        " t AS (INSERT INTO message_tags (tag, message_id) SELECT unnest(CAST(? AS text[])), ?),"
        " b AS (INSERT INTO message_bodies (message_id, raw) VALUES (?, ?)),"
        " r AS (INSERT INTO recipients (message_id, address, domain, state, next_attempt_at, last_response,"
        f" updated_at) VALUES {values} RETURNING id, address, state, last_response)"
        " INSERT INTO events (at, kind, message_id, recipient_id, recipient, code, detail, details)"
        " SELECT ?, CASE WHEN r.state = 'suppressed' THEN CAST(? AS text) ELSE CAST(? AS text) END, ?, r.id,"
        " r.address, NULL, r.last_response, CASE WHEN r.state = 'suppressed' THEN NULL ELSE CAST(? AS text) END"
        " FROM r ORDER BY r.id",
        (
            *row,
            list(message.tags),
            message.id,
            message.id,
            message.raw,
            *(value for recipient in recipients for value in recipient),
            now,
            EventKind.SUPPRESSED.value,
            EventKind.QUEUED.value,
            message.id,
            queued_details,
        ),
    )


def claim_due(
    conn: Connection,
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
    ``recipients_due`` in due order; never scans the queue. A due recipient of a suspended domain
    met on the way is given the suspension's end as its next attempt (``relay queue resume`` brings it
    back): so a held backlog is walked past once, not by every claim.

    On PostgreSQL several nodes claim at once: the due rows are locked as they are read, skipping the
    rows another node's claim holds (``FOR UPDATE ... SKIP LOCKED``), so no two nodes lease a recipient
    and none waits for another.
    """
    postgres = is_postgres(conn)
    while True:
        rows = conn.execute(
            PLAN_EACH_TIME + "SELECT r.id, r.message_id, m.size, s.until FROM recipients r"
            " JOIN messages m ON m.id = r.message_id"
            " LEFT JOIN suspended_domains s ON s.domain = r.domain AND s.until > ?"
            " WHERE r.next_attempt_at <= ? ORDER BY r.next_attempt_at LIMIT ?"
            + (" FOR UPDATE OF r SKIP LOCKED" if postgres else ""),
            (now, now, limit),
        ).fetchall()
        held = [(until, rid) for rid, _, _, until in rows if until is not None]
        if held:  # out of the way until the suspension ends
            conn.executemany("UPDATE recipients SET next_attempt_at = ? WHERE id = ?", held)
        due = [(rid, mid, size) for rid, mid, size, until in rows if until is None]
        if due or len(held) < limit:
            break
    ids = within_bytes(due, max_bytes, first_fits)
    if not ids:
        return []
    chosen = "= ANY(?)" if postgres else "IN (SELECT value FROM json_each(?))"
    rows = conn.execute(
        "UPDATE recipients SET state = 'sending', next_attempt_at = NULL,"
        f" lease_owner = ?, lease_until = ?, updated_at = ? WHERE id {chosen}"
        " RETURNING id, message_id, address, domain, attempts",
        (owner, lease_until, now, ids if postgres else json.dumps(ids)),
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
        f"SELECT id, sender, coalesce(send_at, created_at), sandbox FROM messages WHERE id IN ({marks})",
        list(by_message),
    ).fetchall()
    bodies = bodies_of(conn, list(by_message))
    return [
        LeasedMessage(
            mid, sender, created_at, bodies[mid], tuple(sorted(by_message[mid], key=lambda r: r.id)), bool(sandbox)
        )
        for mid, sender, created_at, sandbox in messages
        if mid in bodies
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


def _drop_suppressed(conn: Connection, rows: list[Any], now: float) -> list[Any]:
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


def record_attempts(conn: Connection, results: list[AttemptResult], now: float, policy: SuppressionPolicy) -> None:
    """Store each outcome and its event, and bounces with the suppressions they cause; the lease is released.
    Deferrals are counted by reason too (the overview's top deferral reasons)."""
    _count_deferrals(conn, results, now)
    together = []
    for r in results:
        if r.bounce is not None:
            suppressions.record_bounce(conn, r.bounce, now, policy)
        assert (r.next_attempt_at is not None) == (r.state in PENDING_STATES), r
        enhanced_match = _ENHANCED.match(r.response)
        enhanced = enhanced_match.group(1) if enhanced_match else None
        if r.attempt is not None and is_postgres(conn):
            together.append((r, enhanced))
            continue
        outcome = (r.state.value, r.next_attempt_at, r.code, r.response, now, r.recipient_id)
        row = conn.execute(_RECORD_OUTCOME + " RETURNING attempts", outcome).fetchone()
        number = r.attempt if r.attempt is not None else (row[0] if row else None)
        _event(
            conn,
            now,
            r.event,
            r.message_id,
            r.recipient_id,
            r.address,
            r.code,
            r.response,
            _attempt_details(r, number, enhanced),
        )
        attempt = (r.recipient_id, r.message_id, now, r.mx_host, r.ip, r.tls, r.code, enhanced, r.response)
        conn.execute(_RECORD_ATTEMPT, attempt)
    for start in range(0, len(together), _OUTCOMES_PER_STATEMENT):
        _record_together(conn, together[start : start + _OUTCOMES_PER_STATEMENT], now)


def _record_together(conn: Connection, outcomes: list[tuple[AttemptResult, str | None]], now: float) -> None:
    """PostgreSQL: several outcomes (their attempt numbers known from the lease) in one statement: the
    recipients updated, the attempts and the events inserted (a round trip, and a sync of the writer's
    pipeline, saved three times over per outcome)."""
    values, params = [], []
    for r, enhanced in outcomes:
        values.append(_TOGETHER_ROW)
        details = json.dumps(_attempt_details(r, r.attempt, enhanced))
        params += [r.state.value, r.next_attempt_at, r.code, r.response, r.recipient_id, r.message_id]
        params += [r.mx_host, r.ip, r.tls, enhanced, r.event.value, r.address, details, now]
    conn.execute(_RECORD_TOGETHER.format(values=", ".join(values)), params)


_OUTCOMES_PER_STATEMENT = 200
# The first row's casts type the columns of v (parameters alone would be text).
_TOGETHER_ROW = "(?::text, ?::float8, ?::bigint, ?::text, ?::bigint, ?::text, ?::text, ?::text, ?::text, ?::text,"
_TOGETHER_ROW += " ?::text, ?::text, ?::text, ?::float8)"
_RECORD_TOGETHER = (
    "WITH v (state, next_at, code, response, rid, mid, mx, ip, tls, enhanced, kind, address, details, at)"
    " AS (VALUES {values}),"
    " outcome AS (UPDATE recipients SET state = v.state, attempts = recipients.attempts + 1,"
    " next_attempt_at = v.next_at, lease_owner = NULL, lease_until = NULL, last_code = v.code,"
    " last_response = v.response, updated_at = v.at FROM v WHERE recipients.id = v.rid),"
    " attempt AS (INSERT INTO attempts (recipient_id, message_id, at, mx_host, ip, tls, code, enhanced, text)"
    " SELECT rid, mid, at, mx, ip, tls, code, enhanced, response FROM v)"
    " INSERT INTO events (at, kind, message_id, recipient_id, recipient, code, detail, details)"
    " SELECT at, kind, mid, rid, address, code, response, details FROM v"
)


def _count_deferrals(conn: Connection, results: list[AttemptResult], now: float) -> None:
    """Add this batch's deferrals to deferral_counts: one row per hour and reason, with a first example."""
    counted: dict[str, list[Any]] = {}
    for r in results:
        if r.event == EventKind.DEFERRED:
            reason = deferral_reason(r.code, r.response)
            found = counted.setdefault(
                reason, [0, " ".join(str(p) for p in (r.code, r.response) if p not in (None, ""))]
            )
            found[0] += 1
    if not counted:  # most batches: nothing deferred, no statement
        return
    hour = int(now // 3600 * 3600)
    conn.executemany(
        "INSERT INTO deferral_counts (hour, reason, n, example, last_at) VALUES (?, ?, ?, ?, ?)"
        " ON CONFLICT (hour, reason) DO UPDATE SET n = deferral_counts.n + excluded.n, last_at = excluded.last_at",
        [(hour, reason, n, example, now) for reason, (n, example) in counted.items()],
    )


_RECORD_OUTCOME = (
    "UPDATE recipients SET state = ?, attempts = attempts + 1, next_attempt_at = ?,"
    " lease_owner = NULL, lease_until = NULL, last_code = ?, last_response = ?, updated_at = ? WHERE id = ?"
)
_RECORD_ATTEMPT = (
    "INSERT INTO attempts (recipient_id, message_id, at, mx_host, ip, tls, code, enhanced, text)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _attempt_details(r: AttemptResult, attempt: int | None, enhanced: str | None) -> dict[str, Any]:
    details: dict[str, Any] = {
        "attempt": attempt,
        "mx_host": r.mx_host,
        "ip": r.ip,
        "tls": r.tls,
        "smtp_code": r.code,
        "enhanced_status": enhanced,
        "response": r.response,
    }
    if r.classification is not None:
        details["classification"] = r.classification.kind.value
        details["reason"] = r.classification.reason
    if r.next_attempt_at is not None:
        details["next_attempt_at"] = r.next_attempt_at
    if r.sandbox:
        details["sandbox"] = True
    return details


def postpone(conn: Connection, recipient_ids: list[int], until: float, now: float) -> None:
    """Put leased recipients back, due at ``until``, without counting an attempt (throttling, suspension)."""
    postpone_each(conn, [(rid, until) for rid in recipient_ids], now)


def postpone_each(conn: Connection, returns: Sequence[tuple[int, float]], now: float) -> None:
    """Put leased recipients back, each due at its own time ((id, due) pairs), without counting an attempt."""
    conn.executemany(
        "UPDATE recipients SET state = CASE WHEN attempts = 0 THEN 'queued' ELSE 'deferred' END,"
        " next_attempt_at = ?, lease_owner = NULL, lease_until = NULL, updated_at = ? WHERE id = ?",
        [(until, now, rid) for rid, until in returns],
    )


def bring_forward(conn: Connection, recipient_ids: list[int], now: float) -> int:
    """Make recipients that wait for a later time due now: those of ``recipient_ids`` still waiting (not
    leased, delivered or bounced since: their next_attempt_at is then NULL) and not already due."""
    postgres = is_postgres(conn)
    chosen = "= ANY(?)" if postgres else "IN (SELECT value FROM json_each(?))"
    cur = conn.execute(
        f"UPDATE recipients SET next_attempt_at = ?, updated_at = ? WHERE id {chosen} AND next_attempt_at > ?",
        (now, now, recipient_ids if postgres else json.dumps(recipient_ids), now),
    )
    return cur.rowcount


def release_leases(conn: Connection, now: float, owner: str | None = None) -> int:
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


def renew_leases(conn: Connection, now: float, owner: str, lease_until: float, recipient_ids: Sequence[int]) -> int:
    """Extend ``owner``'s unexpired leases of ``recipient_ids`` to ``lease_until``: it is alive and still
    working on them (and on those only: a recipient whose outcome could not be recorded must expire)."""
    renewed = 0
    for start in range(0, len(recipient_ids), 500):
        chunk = list(recipient_ids[start : start + 500])
        marks = ", ".join("?" * len(chunk))
        renewed += conn.execute(
            "UPDATE recipients SET lease_until = ? WHERE state = 'sending' AND lease_owner = ? AND lease_until >= ?"
            f" AND id IN ({marks})",
            (lease_until, owner, now, *chunk),
        ).rowcount
    return renewed


def pending_count(conn: Connection) -> int:
    """Recipients not yet done with (waiting or in flight), counted on indexes."""
    row = conn.execute(
        f"SELECT (SELECT count(*) FROM recipients WHERE {_DUE_SQL})"
        " + (SELECT count(*) FROM recipients WHERE state = 'sending')"
    ).fetchone()
    return int(row[0])


def next_due_at(conn: Connection) -> float | None:
    row = conn.execute(f"SELECT min(next_attempt_at) FROM recipients WHERE {_DUE_SQL}").fetchone()
    return None if row[0] is None else float(row[0])


def _event(
    conn: Connection,
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
        (now, kind.value, message_id, recipient_id, recipient, code, detail, json.dumps(details) if details else None),
    )
