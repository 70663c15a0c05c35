"""Idempotency-Key records: the first request claims the key; its outcome is replayed to retries.

A record is ``pending`` while its request runs and ``done`` once the response
is stored, in the same transaction as the message it queued. A pending record
older than STALE_PENDING (its process died mid-request) may be claimed again.
"""

from __future__ import annotations

import dataclasses
import sqlite3

STALE_PENDING = 60.0  # seconds


@dataclasses.dataclass(frozen=True)
class IdempotencyRecord:
    key: str
    request_hash: str
    state: str  # pending or done
    status: int | None
    body: str | None
    message_id: str | None
    created_at: float
    expires_at: float


@dataclasses.dataclass(frozen=True)
class Completion:
    """What to store for a finished request (written with the message it queued)."""

    api_key_id: str
    key: str
    status: int
    body: str
    message_id: str | None


_COLUMNS = "key, request_hash, state, status, body, message_id, created_at, expires_at"


def get(conn: sqlite3.Connection, api_key_id: str, key: str, now: float) -> IdempotencyRecord | None:
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM idempotency WHERE api_key_id = ? AND key = ? AND expires_at > ?",
        (api_key_id, key, now),
    ).fetchone()
    return None if row is None else IdempotencyRecord(*row)


def claim(
    conn: sqlite3.Connection, api_key_id: str, key: str, request_hash: str, now: float, ttl: float
) -> IdempotencyRecord | None:
    """Claim ``key`` for a new request: None if claimed, else the record that holds it."""
    conn.execute(
        "DELETE FROM idempotency WHERE api_key_id = ? AND key = ?"
        " AND (expires_at <= ? OR (state = 'pending' AND created_at < ?))",
        (api_key_id, key, now, now - STALE_PENDING),
    )
    existing = get(conn, api_key_id, key, now)
    if existing is not None:
        return existing
    conn.execute(
        "INSERT INTO idempotency (api_key_id, key, request_hash, state, created_at, expires_at)"
        " VALUES (?, ?, ?, 'pending', ?, ?)",
        (api_key_id, key, request_hash, now, now + ttl),
    )
    return None


def complete(conn: sqlite3.Connection, c: Completion) -> None:
    conn.execute(
        "UPDATE idempotency SET state = 'done', status = ?, body = ?, message_id = ? WHERE api_key_id = ? AND key = ?",
        (c.status, c.body, c.message_id, c.api_key_id, c.key),
    )


def forget(conn: sqlite3.Connection, api_key_id: str, key: str, now: float) -> tuple[IdempotencyRecord | None, bool]:
    """Delete a record on request: (the record or None, whether it was deleted). A request still
    running under the key keeps it (deleting it would let a retry run the request a second time)."""
    record = get(conn, api_key_id, key, now)
    if record is None or (record.state == "pending" and record.created_at >= now - STALE_PENDING):
        return record, False
    conn.execute("DELETE FROM idempotency WHERE api_key_id = ? AND key = ?", (api_key_id, key))
    return record, True


def release(conn: sqlite3.Connection, api_key_id: str, key: str) -> None:
    """Forget a claim whose request did not succeed, so a corrected retry may run."""
    conn.execute("DELETE FROM idempotency WHERE api_key_id = ? AND key = ? AND state = 'pending'", (api_key_id, key))


def prune(conn: sqlite3.Connection, now: float) -> int:
    return conn.execute("DELETE FROM idempotency WHERE expires_at <= ?", (now,)).rowcount
