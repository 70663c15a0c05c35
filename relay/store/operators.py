"""Dashboard operators and their sessions: rows, and :class:`SqlOperators`, the repository (both databases).

An operator has a unique name, a role (``admin`` or ``viewer``) and an argon2id password hash (made by
:mod:`relay.dashboard.accounts`, never here). A session is stored under the SHA-256 of its token (the
cookie's value), with the CSRF token its forms carry; it ends at ``expires_at`` on the store's clock, on
logout, and when its operator is removed or given a new password.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from relay.clock import Clock
from relay.store.dialect import Connection, SqlDatabase

ROLES = ("admin", "viewer")
SEEN_EVERY = 60.0  # seconds: a session's last_seen_at is written at most this often


@dataclasses.dataclass(frozen=True)
class Operator:
    id: str
    name: str
    role: str  # one of ROLES
    created_at: float
    last_login_at: float | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def public(self) -> dict[str, object]:
        """As the CLI shows it: never the password hash."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class OperatorSession:
    """A signed-in operator: who, the CSRF token of its forms, and when the session ends."""

    operator: Operator
    csrf_token: str
    created_at: float
    expires_at: float
    last_seen_at: float


_COLUMNS = "o.id, o.name, o.role, o.created_at, o.last_login_at"


def _operator(row: tuple[Any, ...]) -> Operator:
    oid, name, role, created, last_login = row
    return Operator(oid, name, role, created, last_login)


def create(conn: Connection, operator: Operator, password_hash: str) -> bool:
    cur = conn.execute(
        "INSERT INTO operators (id, name, role, password_hash, created_at) VALUES (?, ?, ?, ?, ?)"
        " ON CONFLICT (name) DO NOTHING",
        (operator.id, operator.name, operator.role, password_hash, operator.created_at),
    )
    return cur.rowcount == 1


def get(conn: Connection, name: str) -> Operator | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM operators o WHERE o.name = ?", (name,)).fetchone()
    return None if row is None else _operator(row)


def for_login(conn: Connection, name: str) -> tuple[Operator, str] | None:
    row = conn.execute(f"SELECT {_COLUMNS}, o.password_hash FROM operators o WHERE o.name = ?", (name,)).fetchone()
    return None if row is None else (_operator(row[:-1]), row[-1])


def list_all(conn: Connection) -> list[Operator]:
    return [_operator(r) for r in conn.execute(f"SELECT {_COLUMNS} FROM operators o ORDER BY o.name")]


def _end_sessions_of(conn: Connection, name: str) -> None:
    conn.execute(
        "DELETE FROM operator_sessions WHERE operator_id IN (SELECT id FROM operators WHERE name = ?)", (name,)
    )


def remove(conn: Connection, name: str) -> bool:
    _end_sessions_of(conn, name)
    return conn.execute("DELETE FROM operators WHERE name = ?", (name,)).rowcount == 1


def set_password(conn: Connection, name: str, password_hash: str) -> bool:
    _end_sessions_of(conn, name)
    cur = conn.execute("UPDATE operators SET password_hash = ? WHERE name = ?", (password_hash, name))
    return cur.rowcount == 1


def start_session(conn: Connection, operator_id: str, token_hash: str, csrf: str, now: float, until: float) -> None:
    conn.execute(
        "INSERT INTO operator_sessions (token_hash, operator_id, csrf_token, created_at, expires_at, last_seen_at)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (token_hash, operator_id, csrf, now, until, now),
    )
    conn.execute("UPDATE operators SET last_login_at = ? WHERE id = ?", (now, operator_id))


def find_session(conn: Connection, token_hash: str, now: float) -> OperatorSession | None:
    row = conn.execute(
        f"SELECT {_COLUMNS}, s.csrf_token, s.created_at, s.expires_at, s.last_seen_at"
        " FROM operator_sessions s JOIN operators o ON o.id = s.operator_id"
        " WHERE s.token_hash = ? AND s.expires_at > ?",
        (token_hash, now),
    ).fetchone()
    if row is None:
        return None
    csrf, created, expires, seen = row[5:]
    return OperatorSession(_operator(row[:5]), csrf, created, expires, seen)


def touch_session(conn: Connection, token_hash: str, now: float) -> None:
    conn.execute("UPDATE operator_sessions SET last_seen_at = ? WHERE token_hash = ?", (now, token_hash))


def end_session(conn: Connection, token_hash: str) -> bool:
    return conn.execute("DELETE FROM operator_sessions WHERE token_hash = ?", (token_hash,)).rowcount == 1


def prune_sessions(conn: Connection, now: float) -> int:
    return conn.execute("DELETE FROM operator_sessions WHERE expires_at <= ?", (now,)).rowcount


class SqlOperators:
    """:class:`relay.store.protocols.OperatorStore` over the shared database."""

    def __init__(self, db: SqlDatabase, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    async def add_operator(self, operator: Operator, password_hash: str) -> bool:
        """Store a new operator and its password hash; False if the name is taken (nothing stored)."""
        return await self.db.write(lambda c: create(c, operator, password_hash))

    async def operator(self, name: str) -> Operator | None:
        return await self.db.lookup(lambda c: get(c, name))

    async def operator_for_login(self, name: str) -> tuple[Operator, str] | None:
        """The operator called ``name`` and its password hash."""
        return await self.db.lookup(lambda c: for_login(c, name))

    async def list_operators(self) -> list[Operator]:
        """By name."""
        return await self.db.read(list_all)

    async def remove_operator(self, name: str) -> bool:
        """Remove the operator and end its sessions; False if there is none by that name."""
        return await self.db.write(lambda c: remove(c, name))

    async def set_operator_password(self, name: str, password_hash: str) -> bool:
        """Replace the password hash and end the operator's sessions; False if there is none by that name."""
        return await self.db.write(lambda c: set_password(c, name, password_hash))

    async def start_session(self, operator_id: str, token_hash: str, csrf_token: str, lifetime: float) -> None:
        """A session of ``operator_id`` for ``lifetime`` seconds from now; records the login."""
        now = self.clock.now()
        await self.db.write(lambda c: start_session(c, operator_id, token_hash, csrf_token, now, now + lifetime))

    async def session(self, token_hash: str) -> OperatorSession | None:
        """The session stored under ``token_hash`` if it has not expired; notes that it was seen (at most
        once a minute)."""
        now = self.clock.now()
        found = await self.db.lookup(lambda c: find_session(c, token_hash, now))
        if found is not None and now - found.last_seen_at >= SEEN_EVERY:
            await self.db.write(lambda c: touch_session(c, token_hash, now))
            return dataclasses.replace(found, last_seen_at=now)
        return found

    async def end_session(self, token_hash: str) -> bool:
        return await self.db.write(lambda c: end_session(c, token_hash))

    async def prune_sessions(self) -> int:
        """Delete the sessions that have expired; how many."""
        now = self.clock.now()
        return await self.db.write(lambda c: prune_sessions(c, now))
