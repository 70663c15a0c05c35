"""API key rows: create, find by digest, list, revoke."""

from __future__ import annotations

import sqlite3

from relay.keys import ApiKey

_COLUMNS = "id, name, scopes, created_at, last_used_at, revoked_at"


def _row(row: tuple[object, ...]) -> ApiKey:
    kid, name, scopes, created, used, revoked = row
    return ApiKey(str(kid), str(name), tuple(str(scopes).split()), float(created), used, revoked)  # type: ignore[arg-type]


def create(
    conn: sqlite3.Connection, key_id: str, name: str, key_hash: str, scopes: tuple[str, ...], now: float
) -> None:
    conn.execute(
        "INSERT INTO api_keys (id, name, key_hash, scopes, created_at) VALUES (?, ?, ?, ?, ?)",
        (key_id, name, key_hash, " ".join(scopes), now),
    )


def find_active(conn: sqlite3.Connection, key_hash: str) -> ApiKey | None:
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM api_keys WHERE key_hash = ? AND revoked_at IS NULL", (key_hash,)
    ).fetchone()
    return _row(row) if row else None


def list_all(conn: sqlite3.Connection) -> list[ApiKey]:
    return [_row(r) for r in conn.execute(f"SELECT {_COLUMNS} FROM api_keys ORDER BY created_at")]


def revoke(conn: sqlite3.Connection, key_id: str, now: float) -> bool:
    cur = conn.execute("UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (now, key_id))
    return cur.rowcount == 1


def touch(conn: sqlite3.Connection, key_id: str, now: float) -> None:
    conn.execute("UPDATE api_keys SET last_used_at = ? WHERE id = ?", (now, key_id))
