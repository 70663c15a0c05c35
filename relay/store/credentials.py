"""SMTP credential rows."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from relay.credentials import SmtpCredential

_COLUMNS = "id, username, allowed_from, rate_limit, tags, created_at, last_used_at, revoked_at, test"


def _row(row: tuple[Any, ...]) -> SmtpCredential:
    cid, username, allowed, rate, tags, created, used, revoked, test = row
    return SmtpCredential(cid, username, tuple(allowed.split()), rate, tuple(json.loads(tags)), created, used, revoked,
                          bool(test))  # fmt: skip


def create(conn: sqlite3.Connection, cred: SmtpCredential, password_hash: str) -> None:
    conn.execute(
        "INSERT INTO smtp_credentials (id, username, password_hash, allowed_from, rate_limit, tags, created_at, test)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (cred.id, cred.username, password_hash, " ".join(cred.allowed_from), cred.rate_limit,
         json.dumps(list(cred.tags)), cred.created_at, int(cred.test)),
    )  # fmt: skip


def find_active(conn: sqlite3.Connection, username: str) -> tuple[SmtpCredential, str] | None:
    """The active credential for ``username`` and its password hash."""
    row = conn.execute(
        f"SELECT {_COLUMNS}, password_hash FROM smtp_credentials WHERE username = ? AND revoked_at IS NULL",
        (username,),
    ).fetchone()
    return None if row is None else (_row(row[:-1]), row[-1])


def get(conn: sqlite3.Connection, cred_id: str) -> SmtpCredential | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM smtp_credentials WHERE id = ?", (cred_id,)).fetchone()
    return None if row is None else _row(row)


def list_all(conn: sqlite3.Connection) -> list[SmtpCredential]:
    return [_row(r) for r in conn.execute(f"SELECT {_COLUMNS} FROM smtp_credentials ORDER BY created_at, id")]


def revoke(conn: sqlite3.Connection, cred_id: str, now: float) -> bool:
    cur = conn.execute("UPDATE smtp_credentials SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (now, cred_id))
    return cur.rowcount == 1


def touch(conn: sqlite3.Connection, cred_id: str, now: float) -> None:
    conn.execute("UPDATE smtp_credentials SET last_used_at = ? WHERE id = ?", (now, cred_id))
