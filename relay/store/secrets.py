"""Named secrets in SQL (the VERP secret, the key check): values sealed by :mod:`relay.secrets`, never in clear."""

from __future__ import annotations

from relay.clock import Clock
from relay.store.dialect import Connection, SqlDatabase


def get(conn: Connection, name: str) -> bytes | None:
    row = conn.execute("SELECT value FROM secrets WHERE name = ?", (name,)).fetchone()
    return bytes(row[0]) if row else None


def add(conn: Connection, name: str, value: bytes, now: float) -> bytes:
    """Store ``value`` unless the secret exists already; the value stored either way (the first one wins)."""
    conn.execute(
        "INSERT INTO secrets (name, value, created_at) VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING",
        (name, value, now),
    )
    stored = get(conn, name)
    assert stored is not None
    return stored


class SqlSecrets:
    """:class:`relay.store.protocols.SecretStore` over the shared database."""

    def __init__(self, db: SqlDatabase, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    async def secret(self, name: str) -> bytes | None:
        return await self.db.read(lambda c: get(c, name))

    async def add_secret(self, name: str, value: bytes) -> bytes:
        now = self.clock.now()
        return await self.db.write(lambda c: add(c, name, value, now))
