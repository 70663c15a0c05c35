"""Sending domains and their DKIM keys in SQL (private keys sealed by :mod:`relay.secrets`, never in clear)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from relay.clock import Clock
from relay.domains import VERIFIED, DkimKey, Domain
from relay.store.changes import DOMAINS_CHANGED
from relay.store.dialect import Connection, SqlDatabase, notify

_COLUMNS = "id, name, created_at, checks, checked_at, verified_at"


def _keys(conn: Connection, domain_id: str) -> tuple[DkimKey, ...]:
    rows = conn.execute(
        "SELECT selector, state, created_at, public_key, private_key, key_path FROM dkim_keys WHERE domain_id = ?"
        " ORDER BY CASE state WHEN 'active' THEN 0 WHEN 'pending' THEN 1 ELSE 2 END, created_at",
        (domain_id,),
    ).fetchall()
    return tuple(_key(*row) for row in rows)


def _key(selector: str, state: str, at: float, public: str | None, sealed: bytes | None, path: str) -> DkimKey:
    """key_path is '' for a key made in the store; private_key NULL for a key still in its file."""
    return DkimKey(
        selector, state, at, public or "", bytes(sealed) if sealed is not None else None, Path(path) if path else None
    )


def _domain(conn: Connection, row: tuple) -> Domain:  # type: ignore[type-arg]
    did, name, created, checks, checked_at, verified_at = row
    return Domain(did, name, created, _keys(conn, did), json.loads(checks) if checks else None, checked_at, verified_at)


def create(conn: Connection, domain_id: str, name: str, key: DkimKey, now: float) -> Domain:
    conn.execute("INSERT INTO domains (id, name, created_at) VALUES (?, ?, ?)", (domain_id, name, now))
    add_key(conn, domain_id, key)  # (which tells the other processes)
    found = get(conn, domain_id)
    assert found is not None
    return found


def add_key(conn: Connection, domain_id: str, key: DkimKey) -> None:
    conn.execute(
        "INSERT INTO dkim_keys (domain_id, selector, key_path, state, created_at, public_key, private_key)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            domain_id,
            key.selector,
            str(key.path) if key.path else "",
            key.state,
            key.created_at,
            key.public_key or None,
            key.sealed,
        ),
    )
    notify(conn, DOMAINS_CHANGED)


def store_file_key(conn: Connection, domain_id: str, selector: str, sealed: bytes, public_key: str) -> bool:
    """A key still in its file, sealed into its row; False if it was there already (another process moved it)."""
    cur = conn.execute(
        "UPDATE dkim_keys SET private_key = ?, public_key = ? WHERE domain_id = ? AND selector = ?"
        " AND private_key IS NULL",
        (sealed, public_key, domain_id, selector),
    )
    if cur.rowcount > 0:
        notify(conn, DOMAINS_CHANGED)
    return cur.rowcount > 0


def get(conn: Connection, ident: str) -> Domain | None:
    """By id or by name."""
    row = conn.execute(f"SELECT {_COLUMNS} FROM domains WHERE id = ? OR name = ?", (ident, ident.lower())).fetchone()
    return _domain(conn, row) if row else None


def list_all(conn: Connection) -> list[Domain]:
    return [_domain(conn, row) for row in conn.execute(f"SELECT {_COLUMNS} FROM domains ORDER BY name").fetchall()]


def page(conn: Connection, limit: int, after: str | None = None) -> list[Domain]:
    """At most ``limit`` domains by name, those after the name ``after``."""
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM domains WHERE name > ? ORDER BY name LIMIT ?", (after or "", limit)
    ).fetchall()
    return [_domain(conn, row) for row in rows]


def delete(conn: Connection, ident: str) -> Domain | None:
    found = get(conn, ident)
    if found is not None:
        conn.execute("DELETE FROM domains WHERE id = ?", (found.id,))
        notify(conn, DOMAINS_CHANGED)
    return found


def record_checks(
    conn: Connection, domain: Domain, checks: dict[str, dict[str, str]], now: float, promote: str | None
) -> Domain:
    """Store a verification; ``promote``: a pending selector found published, which now signs."""
    if promote is not None:
        conn.execute("UPDATE dkim_keys SET state = 'retired' WHERE domain_id = ? AND state = 'active'", (domain.id,))
        conn.execute("UPDATE dkim_keys SET state = 'active' WHERE domain_id = ? AND selector = ?", (domain.id, promote))
    verified = all(checks.get(name, {}).get("status") == VERIFIED for name in ("dkim", "spf"))
    conn.execute(
        "UPDATE domains SET checks = ?, checked_at = ?, verified_at = CASE WHEN ? = 1 THEN ? ELSE verified_at END"
        " WHERE id = ?",
        (json.dumps(checks), now, verified, now, domain.id),
    )
    notify(conn, DOMAINS_CHANGED)
    found = get(conn, domain.id)
    assert found is not None
    return found


class SqlDomains:
    """:class:`relay.store.protocols.DomainStore` over the shared database."""

    def __init__(self, db: SqlDatabase, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    def changes(self) -> Callable[[], int]:
        return self.db.changes(DOMAINS_CHANGED)

    async def create_domain(self, domain_id: str, name: str, key: DkimKey) -> Domain:
        now = self.clock.now()
        return await self.db.write(lambda c: create(c, domain_id, name, key, now))

    async def domain(self, ident: str) -> Domain | None:
        return await self.db.read(lambda c: get(c, ident))

    async def list_all(self) -> list[Domain]:
        return await self.db.read(list_all)

    async def domain_page(self, limit: int, after: str | None = None) -> list[Domain]:
        return await self.db.read(lambda c: page(c, limit, after))

    async def delete_domain(self, ident: str) -> Domain | None:
        return await self.db.write(lambda c: delete(c, ident))

    async def add_dkim_key(self, domain_id: str, key: DkimKey) -> None:
        await self.db.write(lambda c: add_key(c, domain_id, key))

    async def store_file_key(self, domain_id: str, selector: str, sealed: bytes, public_key: str) -> bool:
        return await self.db.write(lambda c: store_file_key(c, domain_id, selector, sealed, public_key))

    async def record_domain_checks(
        self, domain: Domain, checks: dict[str, dict[str, str]], promote: str | None
    ) -> Domain:
        now = self.clock.now()
        return await self.db.write(lambda c: record_checks(c, domain, checks, now, promote))
