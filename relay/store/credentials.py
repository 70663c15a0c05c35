"""SMTP credentials in SQLite: rows and :class:`SqlCredentials`, the repository."""

from __future__ import annotations

import json
from typing import Any

from relay.clock import Clock
from relay.credentials import SmtpCredential
from relay.store.dialect import Connection, SqlDatabase
from relay.store.lastuse import LastUse

_COLUMNS = "id, username, allowed_from, rate_limit, tags, created_at, last_used_at, revoked_at, test"


def _row(row: tuple[Any, ...]) -> SmtpCredential:
    cid, username, allowed, rate, tags, created, used, revoked, test = row
    return SmtpCredential(
        cid, username, tuple(allowed.split()), rate, tuple(json.loads(tags)), created, used, revoked, bool(test)
    )


def create(conn: Connection, cred: SmtpCredential, password_hash: str) -> None:
    conn.execute(
        "INSERT INTO smtp_credentials (id, username, password_hash, allowed_from, rate_limit, tags, created_at, test)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            cred.id,
            cred.username,
            password_hash,
            " ".join(cred.allowed_from),
            cred.rate_limit,
            json.dumps(list(cred.tags)),
            cred.created_at,
            int(cred.test),
        ),
    )


def find_active(conn: Connection, username: str) -> tuple[SmtpCredential, str] | None:
    """The active credential for ``username`` and its password hash."""
    row = conn.execute(
        f"SELECT {_COLUMNS}, password_hash FROM smtp_credentials WHERE username = ? AND revoked_at IS NULL",
        (username,),
    ).fetchone()
    return None if row is None else (_row(row[:-1]), row[-1])


def get(conn: Connection, cred_id: str) -> SmtpCredential | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM smtp_credentials WHERE id = ?", (cred_id,)).fetchone()
    return None if row is None else _row(row)


def list_all(conn: Connection) -> list[SmtpCredential]:
    return [_row(r) for r in conn.execute(f"SELECT {_COLUMNS} FROM smtp_credentials ORDER BY created_at, id")]


def revoke(conn: Connection, cred_id: str, now: float) -> bool:
    cur = conn.execute("UPDATE smtp_credentials SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (now, cred_id))
    return cur.rowcount == 1


def touch(conn: Connection, cred_id: str, now: float) -> None:
    conn.execute("UPDATE smtp_credentials SET last_used_at = ? WHERE id = ?", (now, cred_id))


class SqlCredentials:
    """:class:`relay.store.protocols.CredentialStore` over the shared database."""

    def __init__(self, db: SqlDatabase, clock: Clock, last_use: LastUse) -> None:
        self.db = db
        self.clock = clock
        self.last_use = last_use

    async def add_smtp_credential(self, cred: SmtpCredential, password_hash: str) -> None:
        """Store a credential made by :func:`relay.credentials.create_smtp_credential` and its password hash."""
        await self.db.write(lambda c: create(c, cred, password_hash))

    async def smtp_credential_for_login(self, username: str) -> tuple[SmtpCredential, str] | None:
        return await self.db.lookup(lambda c: find_active(c, username))

    async def smtp_credential(self, cred_id: str) -> SmtpCredential | None:
        return await self.db.read(lambda c: get(c, cred_id))

    async def list_smtp_credentials(self) -> list[SmtpCredential]:
        return await self.db.read(list_all)

    async def revoke_smtp_credential(self, cred_id: str) -> bool:
        now = self.clock.now()
        return await self.db.write(lambda c: revoke(c, cred_id, now))

    def touch_smtp_credential(self, cred_id: str) -> None:
        """Record use, at most once a minute per credential, without waiting for it."""
        now = self.clock.now()
        if self.last_use.due(cred_id, now):
            self.last_use.write(lambda c: touch(c, cred_id, now))
