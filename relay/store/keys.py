"""API keys in SQLite: rows (create, find by digest, list, revoke) and :class:`SqlKeys`, the repository."""

from __future__ import annotations

from typing import Any

from relay.clock import Clock
from relay.keys import ApiKey, digest
from relay.store.dialect import Connection, SqlDatabase
from relay.store.lastuse import LastUse

_COLUMNS = (
    "id, name, scopes, created_at, last_used_at, revoked_at, allowed_ips, rate_limit, daily_quota, monthly_quota, test,"
    " own_messages"
)


def _row(row: tuple[Any, ...]) -> ApiKey:
    kid, name, scopes, created, used, revoked, ips, rate, daily, monthly, test, own = row
    return ApiKey(
        kid,
        name,
        tuple(scopes.split()),
        created,
        used,
        revoked,
        tuple(ips.split()),
        rate,
        daily,
        monthly,
        bool(test),
        bool(own),
    )


def create(conn: Connection, key: ApiKey, key_hash: str) -> None:
    conn.execute(
        "INSERT INTO api_keys (id, name, key_hash, scopes, created_at, allowed_ips, rate_limit, daily_quota,"
        " monthly_quota, test, own_messages) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            key.id,
            key.name,
            key_hash,
            " ".join(key.scopes),
            key.created_at,
            " ".join(key.allowed_ips),
            key.rate_limit,
            key.daily_quota,
            key.monthly_quota,
            int(key.test),
            int(key.own_messages),
        ),
    )


def find_active(conn: Connection, key_hash: str) -> ApiKey | None:
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM api_keys WHERE key_hash = ? AND revoked_at IS NULL", (key_hash,)
    ).fetchone()
    return _row(row) if row else None


def get(conn: Connection, key_id: str) -> ApiKey | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM api_keys WHERE id = ?", (key_id,)).fetchone()
    return _row(row) if row else None


def list_all(conn: Connection) -> list[ApiKey]:
    return [_row(r) for r in conn.execute(f"SELECT {_COLUMNS} FROM api_keys ORDER BY created_at, id")]


def revoke(conn: Connection, key_id: str, now: float) -> bool:
    cur = conn.execute("UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (now, key_id))
    return cur.rowcount == 1


def touch(conn: Connection, key_id: str, now: float) -> None:
    conn.execute("UPDATE api_keys SET last_used_at = ? WHERE id = ?", (now, key_id))


class SqlKeys:
    """:class:`relay.store.protocols.KeyStore` over the shared database."""

    def __init__(self, db: SqlDatabase, clock: Clock, last_use: LastUse) -> None:
        self.db = db
        self.clock = clock
        self.last_use = last_use

    async def add_api_key(self, key: ApiKey, key_hash: str) -> None:
        """Store a key made by :func:`relay.keys.create_api_key`: its record and the digest of its secret."""
        await self.db.write(lambda c: create(c, key, key_hash))

    async def api_key(self, key_id: str) -> ApiKey | None:
        return await self.db.lookup(lambda c: get(c, key_id))

    async def authenticate(self, secret: str) -> ApiKey | None:
        """The active key with this secret, or None. Records last use at most once a minute."""
        key = await self.db.lookup(lambda c: find_active(c, digest(secret)))
        if key is not None:
            now = self.clock.now()
            if self.last_use.due(key.id, now):
                self.last_use.write(lambda c: touch(c, key.id, now))
        return key

    async def list_api_keys(self) -> list[ApiKey]:
        return await self.db.read(list_all)

    async def revoke_api_key(self, key_id: str) -> bool:
        now = self.clock.now()
        return await self.db.write(lambda c: revoke(c, key_id, now))
