"""Named secrets in SQL (the VERP secret, the key check): values sealed by :mod:`relay.secrets`, never in clear.

Also every sealed value the store keeps (these and the sending domains' DKIM keys) for ``relay store
rekey``: listed, replaced all at once under a new key, or forgotten when the key is lost.
"""

from __future__ import annotations

import dataclasses

from relay.clock import Clock
from relay.errors import StoreError
from relay.store.changes import DOMAINS_CHANGED
from relay.store.dialect import Connection, SqlDatabase, notify


@dataclasses.dataclass(frozen=True)
class SealedValue:
    """A sealed value and where it lives: a named secret (``domain_id`` empty) or a DKIM key's private key."""

    name: str  # the secret's name, or the DKIM key's selector
    value: bytes = dataclasses.field(repr=False)
    domain_id: str = ""

    @property
    def is_dkim_key(self) -> bool:
        return bool(self.domain_id)


class SealedValuesChanged(StoreError):
    """A sealed value changed between reading and replacing it (a relay is still running on the store)."""


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


def sealed_values(conn: Connection) -> list[SealedValue]:
    secrets = conn.execute("SELECT name, value FROM secrets ORDER BY name").fetchall()
    keys = conn.execute(
        "SELECT selector, private_key, domain_id FROM dkim_keys WHERE private_key IS NOT NULL"
        " ORDER BY domain_id, selector"
    ).fetchall()
    return [SealedValue(n, bytes(v)) for n, v in secrets] + [SealedValue(n, bytes(v), d) for n, v, d in keys]


def replace_sealed(conn: Connection, changes: list[tuple[SealedValue, bytes]]) -> int:
    """Each value replaced by its new sealing, all or none: SealedValuesChanged if one is not as it was read."""
    for old, new in changes:
        if old.is_dkim_key:
            cur = conn.execute(
                "UPDATE dkim_keys SET private_key = ? WHERE domain_id = ? AND selector = ? AND private_key = ?",
                (new, old.domain_id, old.name, old.value),
            )
        else:
            cur = conn.execute("UPDATE secrets SET value = ? WHERE name = ? AND value = ?", (new, old.name, old.value))
        if cur.rowcount != 1:
            where = f"the DKIM key {old.name} of {old.domain_id}" if old.is_dkim_key else f"the secret {old.name}"
            raise SealedValuesChanged(f"{where} changed while it was being sealed again: stop every relay first")
    return len(changes)


def forget_sealed(conn: Connection) -> list[tuple[str, str]]:
    """Delete every sealed value (the key that opens them is lost): the secrets, and the DKIM keys kept in
    the store (keys still in their files stay). The (domain id, selector) of the keys deleted."""
    conn.execute("DELETE FROM secrets")
    rows = conn.execute("DELETE FROM dkim_keys WHERE private_key IS NOT NULL RETURNING domain_id, selector").fetchall()
    if rows:
        notify(conn, DOMAINS_CHANGED)  # a running relay stops signing with them
    return sorted((d, s) for d, s in rows)


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

    async def sealed_values(self) -> list[SealedValue]:
        return await self.db.read(sealed_values)

    async def replace_sealed(self, changes: list[tuple[SealedValue, bytes]]) -> int:
        return await self.db.write(lambda c: replace_sealed(c, changes))

    async def forget_sealed(self) -> list[tuple[str, str]]:
        return await self.db.write(forget_sealed)
