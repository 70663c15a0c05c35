"""Reading the queue in SQL: a message's recipients and attempts, message listings, per-domain queues, the sandbox."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from relay.events import State
from relay.store.bodies import raw_message
from relay.store.dialect import Connection
from relay.store.queue.records import Attempt, DomainQueue, MessageFilter, MessageRecord, QueueSummary, RecipientStatus
from relay.store.queue.search import MESSAGE_COLUMNS, record_of_row, records_of, search_ids


def attempts_of(conn: Connection, message_id: str, address: str) -> list[Attempt]:
    return [
        Attempt(*row)
        for row in conn.execute(
            "SELECT a.at, a.mx_host, a.ip, a.tls, a.code, a.enhanced, a.text FROM attempts a"
            " JOIN recipients r ON r.id = a.recipient_id WHERE r.message_id = ? AND r.address = ? ORDER BY a.id",
            (message_id, address),
        )
    ]


def summary(conn: Connection) -> QueueSummary:
    by_state: dict[str, int] = {s.value: 0 for s in State}
    by_domain: dict[str, dict[str, int]] = defaultdict(dict)
    for state, domain, count in conn.execute("SELECT state, domain, count(*) FROM recipients GROUP BY state, domain"):
        by_state[state] = by_state.get(state, 0) + count
        if state in ("queued", "deferred", "sending"):
            by_domain[domain][state] = count
    return QueueSummary(by_state, dict(by_domain))


def state_counts(conn: Connection) -> dict[str, int]:
    """Recipients by state (every state, 0 included), counted on the recipients_state_domain index."""
    counts = {s.value: 0 for s in State}
    counts.update((state, int(n)) for state, n in conn.execute("SELECT state, count(*) FROM recipients GROUP BY state"))
    return counts


_STATUS_COLUMNS = "address, state, attempts, next_attempt_at, last_code, last_response, updated_at"


def message_status(conn: Connection, message_id: str) -> list[RecipientStatus]:
    return [
        RecipientStatus(*row)
        for row in conn.execute(
            f"SELECT {_STATUS_COLUMNS} FROM recipients WHERE message_id = ? ORDER BY id", (message_id,)
        )
    ]


_MESSAGE_COLUMNS = MESSAGE_COLUMNS


def _message_record(conn: Connection, row: tuple[Any, ...]) -> MessageRecord:
    return record_of_row(row, message_status(conn, row[0]))


def message_record(conn: Connection, message_id: str) -> MessageRecord | None:
    row = conn.execute(f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE id = ?", (message_id,)).fetchone()
    return None if row is None else _message_record(conn, row)


def list_messages(conn: Connection, f: MessageFilter, limit: int) -> list[MessageRecord]:
    """Newest first (:mod:`relay.store.queue.search`); a subject search may answer fewer than a page."""
    return records_of(conn, search_ids(conn, f, limit)[0])


def sandbox_messages(
    conn: Connection, before: str | None, limit: int, api_key_id: str | None = None
) -> list[MessageRecord]:
    """Sandboxed messages, newest first (cursor: the last id of the previous page), on the messages_sandbox index."""
    after_cursor, params = ("AND id < ?", [before]) if before else ("", [])
    if api_key_id is not None:
        after_cursor, params = after_cursor + " AND api_key_id = ?", [*params, api_key_id]
    rows = conn.execute(
        f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE sandbox = 1 {after_cursor} ORDER BY id DESC LIMIT ?",
        [*params, limit],
    ).fetchall()
    return [_message_record(conn, row) for row in rows]


def sandbox_message(conn: Connection, message_id: str) -> tuple[MessageRecord, bytes | None] | None:
    row = conn.execute(
        f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE id = ? AND sandbox = 1", (message_id,)
    ).fetchone()
    if row is None:
        return None
    return _message_record(conn, row), raw_message(conn, message_id)


def domain_queues(conn: Connection, now: float) -> list[DomainQueue]:
    """Pending recipients per destination domain, busiest first."""
    suspended = dict(conn.execute("SELECT domain, until FROM suspended_domains WHERE until > ?", (now,)).fetchall())
    rows = conn.execute(
        "SELECT r.domain,"
        " count(*) FILTER (WHERE r.state = 'queued'), count(*) FILTER (WHERE r.state = 'deferred'),"
        " count(*) FILTER (WHERE r.state = 'sending'),"
        " count(*) FILTER (WHERE r.state = 'deferred' AND r.next_attempt_at > ?), min(m.created_at)"
        " FROM recipients r JOIN messages m ON m.id = r.message_id"
        " WHERE r.state IN ('queued', 'deferred', 'sending') GROUP BY r.domain",
        (now,),
    ).fetchall()
    queues = [DomainQueue(d, q, df, s, sc, oldest, suspended.pop(d, None)) for d, q, df, s, sc, oldest in rows]
    queues += [DomainQueue(d, 0, 0, 0, 0, None, until) for d, until in suspended.items()]
    return sorted(queues, key=lambda x: (-(x.queued + x.deferred + x.sending), x.domain))
