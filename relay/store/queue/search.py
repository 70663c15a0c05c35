"""Searching messages in SQL (``GET /v1/messages``, the dashboard's Messages page), newest first.

A search walks one index in message id order (ids are time-ordered, so newest first is ``id DESC``) and
checks the other filters on each row it meets, stopping after a page. Which index: the first filter given in
:func:`_driver`'s order, most selective first (a message id, a recipient, a sender address, a tag, a sender
domain, a status; none: the primary key). Each has an index that yields message ids in order for one value
(schema migration 18), so a first page costs about a page of rows whatever the table's size, and a rare value
costs no more than a common one. SQLite, which keeps no statistics of values, joins in the order written
(CROSS JOIN); PostgreSQL's planner may choose another plan from its statistics (bench/RESULTS.md).

A subject ("contains") has no index: a search with one examines at most :data:`SUBJECT_SCAN` messages (of
those the other filters select, from the cursor down) and, when that cuts a page short, answers the id to
continue from, so that every request is bounded and following ``next_cursor`` still finds every match.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from relay.store.dialect import Connection
from relay.store.events import load_metadata
from relay.store.queue.records import MessageFilter, MessagePage, MessageRecord, RecipientStatus

MAX_SEARCH_TEXT = 200  # the longest subject, sender or Message-ID searched for (characters)
SUBJECT_SCAN = 20_000  # messages a subject search examines per request (20-45 ms at most: bench/RESULTS.md)

# The sender's domain, as the messages_sender_domain index has it (the same expression, or no index is used).
SENDER_DOMAIN = "lower(substr(m.sender, instr(m.sender, '@') + 1))"
_LOWER = "lower(CAST(? AS TEXT))"  # the database's lower() on a parameter, as on the column it is compared to


@dataclasses.dataclass(frozen=True)
class _Query:
    source: str  # FROM ... (the driving index first: SQLite joins in the order written with CROSS JOIN)
    order: str  # the message id column of the driving table
    clauses: list[str]
    params: list[Any]


# The filters that can drive a search from an index of their own on another table: (FROM, id column, clause).
_JOINED_DRIVERS = {
    "recipient": ("recipients d CROSS JOIN messages m", "d.message_id", "d.address = ?"),
    "tag": ("message_tags d CROSS JOIN messages m", "d.message_id", "d.tag = ?"),
    "status": ("recipients d CROSS JOIN messages m", "d.message_id", "d.state = ?"),
}


def _driver(f: MessageFilter) -> str | None:
    """Which filter drives the search: the first given, most selective first. Those on the messages table
    (message_id, sender) drive it through their own index on it, found by the database."""
    has_address = f.sender is not None and "@" in f.sender
    for name, given in (
        ("message_id", f.message_id is not None),
        ("recipient", f.recipient is not None),
        ("sender", has_address),
        ("tag", f.tag is not None),
        ("sender", f.sender is not None),
        ("status", f.status is not None),
    ):
        if given:
            return name
    return None


_RECIPIENT = "SELECT 1 FROM recipients r WHERE r.message_id = m.id"


def _probes(f: MessageFilter) -> list[tuple[str, str, tuple[Any, ...]]]:
    """(filter, clause, values) of every filter given, as checked on a row of messages m."""
    address = f.sender if f.sender is not None and "@" in f.sender else None
    domain = f.sender if f.sender is not None and "@" not in f.sender else None
    header_id = None if f.message_id is None else f.message_id.strip().strip("<>")
    probes = [
        ("message_id", "m.id = ? OR m.header_id = ?", (f.message_id, header_id)),
        (
            "recipient",
            "EXISTS (SELECT 1 FROM recipients r WHERE r.message_id = m.id AND r.address = ?)",
            (f.recipient,),
        ),
        ("tag", "EXISTS (SELECT 1 FROM message_tags t WHERE t.message_id = m.id AND t.tag = ?)", (f.tag,)),
        ("status", "EXISTS (SELECT 1 FROM recipients r WHERE r.message_id = m.id AND r.state = ?)", (f.status,)),
        ("sender", f"lower(m.sender) = {_LOWER}", (address,)),
        ("sender", f"{SENDER_DOMAIN} = {_LOWER}", (domain,)),
        ("since", "m.created_at >= ?", (f.since,)),
        ("until", "m.created_at < ?", (f.until,)),
        ("api_key_id", "m.api_key_id = ?", (f.api_key_id,)),
    ]
    return [(name, sql, values) for name, sql, values in probes if values[0] is not None]


def _query(f: MessageFilter) -> _Query:
    driver = _driver(f)
    source, order, clauses, params = "messages m", "m.id", list[str](), list[Any]()
    if driver in _JOINED_DRIVERS:
        source, order, driving = _JOINED_DRIVERS[driver]
        clauses, params = [driving, f"m.id = {order}"], [getattr(f, driver)]
    if f.before is not None:
        clauses.append(f"{order} < ?")
        params.append(f.before)
    for name, sql, values in _probes(f):
        if name != driver or driver not in _JOINED_DRIVERS:
            clauses.append(f"({sql})")
            params.extend(values)
    return _Query(source, order, clauses, params)


def _where(clauses: list[str]) -> str:
    return " WHERE " + " AND ".join(clauses) if clauses else ""


def like_pattern(text: str) -> str:
    """A LIKE pattern for "contains ``text``": its own %, _ and \\ match themselves (ESCAPE '\\')."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def search_ids(conn: Connection, f: MessageFilter, limit: int) -> tuple[list[str], str | None]:
    """Up to ``limit`` ids, newest first, and where to continue when a bounded subject search stopped short."""
    q = _query(f)
    select = f"SELECT DISTINCT {q.order} AS id FROM {q.source}"
    if f.subject is None:
        rows = conn.execute(f"{select}{_where(q.clauses)} ORDER BY id DESC LIMIT ?", [*q.params, limit]).fetchall()
        return [row[0] for row in rows], None
    # The lowest id of the SUBJECT_SCAN messages the other filters select (None: there are fewer): the
    # subject is looked for in those only, on the index that drives the search, walked from the cursor down.
    floor = conn.execute(
        f"{select}{_where(q.clauses)} ORDER BY id DESC LIMIT 1 OFFSET {SUBJECT_SCAN - 1}", q.params
    ).fetchone()
    clauses, params = [*q.clauses, f"lower(m.subject) LIKE {_LOWER} ESCAPE '\\'"], [*q.params, like_pattern(f.subject)]
    if floor is not None:
        clauses.append(f"{q.order} >= ?")
        params.append(floor[0])
    rows = conn.execute(f"{select}{_where(clauses)} ORDER BY id DESC LIMIT ?", [*params, limit]).fetchall()
    ids = [row[0] for row in rows]
    return ids, floor[0] if floor is not None and len(ids) < limit else None


def search(conn: Connection, f: MessageFilter, limit: int) -> MessagePage:
    """A page of messages matching every filter given, newest first (see the module's docstring)."""
    ids, stopped_at = search_ids(conn, f, limit + 1)
    records = records_of(conn, ids[:limit])
    if len(ids) > limit:
        return MessagePage(records, records[-1].id)
    return MessagePage(records, stopped_at)


_STATUS = "message_id, address, state, attempts, next_attempt_at, last_code, last_response, updated_at"


def records_of(conn: Connection, ids: list[str]) -> list[MessageRecord]:
    """The messages of ``ids``, in that order, each with its recipients: two queries whatever the page size."""
    if not ids:
        return []
    marks = ", ".join("?" * len(ids))
    recipients: dict[str, list[RecipientStatus]] = {i: [] for i in ids}
    for message_id, *status in conn.execute(
        f"SELECT {_STATUS} FROM recipients WHERE message_id IN ({marks}) ORDER BY id", ids
    ):
        recipients[message_id].append(RecipientStatus(*status))
    rows = {row[0]: row for row in conn.execute(f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE id IN ({marks})", ids)}
    return [record_of_row(rows[i], recipients[i]) for i in ids if i in rows]


MESSAGE_COLUMNS = "id, created_at, sender, size, source, subject, tags, metadata, api_key_id, send_at, sandbox"


def record_of_row(row: tuple[Any, ...], recipients: list[RecipientStatus]) -> MessageRecord:
    """A row of ``MESSAGE_COLUMNS`` and its recipients' statuses as a record."""
    mid, created, sender, size, source, subject, tags, metadata, key_id, send_at, sandbox = row
    return MessageRecord(
        mid,
        created,
        sender,
        size,
        source,
        subject,
        json.loads(tags),
        load_metadata(metadata),
        key_id,
        recipients,
        send_at,
        bool(sandbox),
    )
