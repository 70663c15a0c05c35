"""Bounces, the suppression list and its allowlist in SQL.

Like relay.store.queue, functions take a connection and run in the caller's
transaction. Addresses are normalised here, on the way in and on lookup.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from relay.bounces.classify import Classification, Kind
from relay.clock import Clock
from relay.message import normalize_address
from relay.store.changes import SUPPRESSIONS_CHANGED
from relay.store.coalesce import Coalescer
from relay.store.dialect import Connection, SqlDatabase, notify
from relay.store.suppression_sieve import SuppressionSieve
from relay.suppression import SuppressionPolicy, allowlist_keys, decide

if TYPE_CHECKING:
    from relay.store.reclassify import Reclassified

REPORT_LIMIT = 64 * 1024  # characters of a returned report kept with its bounce


@dataclasses.dataclass(frozen=True)
class NewBounce:
    recipient: str
    classification: Classification
    source: str  # smtp, dsn or arf
    code: int | None = None
    diagnostic: str = ""
    remote_mta: str | None = None
    message_id: str | None = None
    report: str | None = None
    phase: str | None = None  # the SMTP command a delivery-time refusal answered (relay.bounces.classify.Phase)


@dataclasses.dataclass(frozen=True)
class Bounce:
    id: int
    at: float
    message_id: str | None
    recipient: str
    kind: str
    reason: str
    code: int | None
    status: str | None
    diagnostic: str
    remote_mta: str | None
    source: str
    phase: str | None = None
    report: str | None = None


@dataclasses.dataclass(frozen=True)
class Suppression:
    address: str
    reason: str
    detail: str
    bounce_id: int | None
    message_id: str | None
    created_at: float
    expires_at: float | None


_SUPPRESSION_COLUMNS = "address, reason, detail, bounce_id, message_id, created_at, expires_at"
_BOUNCE_COLUMNS = "id, at, message_id, recipient, kind, reason, code, status, diagnostic, remote_mta, source, phase"
_ACTIVE = "(expires_at IS NULL OR expires_at > ?)"


def record_bounce(
    conn: Connection, bounce: NewBounce, now: float, policy: SuppressionPolicy
) -> tuple[int, Suppression | None]:
    """Store a bounce; suppress its address when the policy says so. Returns the bounce id and any suppression."""
    address = normalize_address(bounce.recipient)
    c = bounce.classification
    report = bounce.report[:REPORT_LIMIT] if bounce.report is not None else None
    bounce_id = conn.execute(
        "INSERT INTO bounces (at, message_id, recipient, kind, reason, code, status, diagnostic, remote_mta,"
        " source, report, phase) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
        (
            now,
            bounce.message_id,
            address,
            c.kind.value,
            c.reason,
            bounce.code,
            c.status,
            bounce.diagnostic,
            bounce.remote_mta,
            bounce.source,
            report,
            bounce.phase,
        ),
    ).fetchone()[0]
    soft = 0
    if c.kind is Kind.SOFT:
        soft = conn.execute(
            "SELECT count(*) FROM bounces WHERE recipient = ? AND kind = 'soft' AND at > ?",
            (address, now - policy.soft_bounce_window),
        ).fetchone()[0]
    decision = decide(c, soft, now, policy)
    if decision is None or _allowlisted(conn, address):
        return bounce_id, None
    detail = f"{c.reason}: {bounce.diagnostic}"[:1000] if bounce.diagnostic else c.reason
    suppression = Suppression(address, decision.reason, detail, bounce_id, bounce.message_id, now, decision.expires_at)
    _upsert(conn, suppression)
    return bounce_id, suppression


def _upsert(conn: Connection, s: Suppression) -> None:
    """A permanent entry is never shortened by a temporary one."""
    notify(conn, SUPPRESSIONS_CHANGED)
    conn.execute(
        f"INSERT INTO suppressions ({_SUPPRESSION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (address) DO UPDATE SET reason = excluded.reason, detail = excluded.detail,"
        " bounce_id = excluded.bounce_id, message_id = excluded.message_id, created_at = excluded.created_at,"
        " expires_at = excluded.expires_at"
        " WHERE suppressions.expires_at IS NOT NULL OR excluded.expires_at IS NULL",
        dataclasses.astuple(s),
    )


def _allowlisted(conn: Connection, address: str) -> bool:
    return conn.execute("SELECT 1 FROM allowlist WHERE entry IN (?, ?)", allowlist_keys(address)).fetchone() is not None


def suppressed(conn: Connection, addresses: Iterable[str], now: float) -> dict[str, Suppression]:
    """The active, not allowlisted suppressions among ``addresses``, keyed by the address as given."""
    by_normal: dict[str, list[str]] = {}
    for a in addresses:
        by_normal.setdefault(normalize_address(a), []).append(a)
    if not by_normal:
        return {}
    found: dict[str, Suppression] = {}
    normals = list(by_normal)
    for start in range(0, len(normals), 500):
        chunk = normals[start : start + 500]
        marks = ",".join("?" * len(chunk))
        rows = conn.execute(
            f"SELECT {_SUPPRESSION_COLUMNS} FROM suppressions WHERE address IN ({marks}) AND {_ACTIVE}",
            [*chunk, now],
        ).fetchall()
        for row in rows:
            s = Suppression(*row)
            if not _allowlisted(conn, s.address):
                for original in by_normal[s.address]:
                    found[original] = s
    return found


def add(
    conn: Connection,
    addresses: Sequence[str],
    reason: str,
    detail: str,
    now: float,
    expires_at: float | None = None,
) -> list[Suppression]:
    """Manual entries (replacing what is there for those addresses)."""
    entries = [Suppression(normalize_address(a), reason, detail, None, None, now, expires_at) for a in addresses]
    notify(conn, SUPPRESSIONS_CHANGED)
    conn.executemany(
        f"INSERT INTO suppressions ({_SUPPRESSION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (address)"
        " DO UPDATE SET reason = excluded.reason, detail = excluded.detail, bounce_id = excluded.bounce_id,"
        " message_id = excluded.message_id, created_at = excluded.created_at, expires_at = excluded.expires_at",
        [dataclasses.astuple(s) for s in entries],
    )
    return entries


def remove(conn: Connection, address: str) -> bool:
    return conn.execute("DELETE FROM suppressions WHERE address = ?", (normalize_address(address),)).rowcount > 0


def get(conn: Connection, address: str, now: float) -> Suppression | None:
    row = conn.execute(
        f"SELECT {_SUPPRESSION_COLUMNS} FROM suppressions WHERE address = ? AND {_ACTIVE}",
        (normalize_address(address), now),
    ).fetchone()
    return Suppression(*row) if row else None


@dataclasses.dataclass(frozen=True)
class SuppressionFilter:
    reason: str | None = None
    search: str | None = None  # substring of the address
    since: float | None = None
    until: float | None = None
    after: str | None = None  # cursor: the last address of the previous page (newest first by time, then address)


def list_suppressions(conn: Connection, f: SuppressionFilter, limit: int, now: float) -> list[Suppression]:
    clauses, params = [_ACTIVE], list[object]([now])
    if f.reason:
        clauses.append("reason = ?")
        params.append(f.reason)
    if f.search:
        clauses.append("instr(address, ?) > 0")
        params.append(f.search.lower())
    if f.since is not None:
        clauses.append("created_at >= ?")
        params.append(f.since)
    if f.until is not None:
        clauses.append("created_at < ?")
        params.append(f.until)
    if f.after:
        clauses.append("address > ?")
        params.append(f.after)
    rows = conn.execute(
        f"SELECT {_SUPPRESSION_COLUMNS} FROM suppressions WHERE {' AND '.join(clauses)} ORDER BY address LIMIT ?",
        [*params, limit],
    ).fetchall()
    return [Suppression(*row) for row in rows]


def allow(conn: Connection, entry: str, note: str, now: float) -> str:
    normal = normalize_address(entry) if "@" in entry else allowlist_keys(f"x@{entry}")[1]
    conn.execute(
        "INSERT INTO allowlist (entry, note, created_at) VALUES (?, ?, ?)"
        " ON CONFLICT (entry) DO UPDATE SET note = excluded.note, created_at = excluded.created_at",
        (normal, note, now),
    )
    return normal


def disallow(conn: Connection, entry: str) -> bool:
    normal = normalize_address(entry) if "@" in entry else allowlist_keys(f"x@{entry}")[1]
    return conn.execute("DELETE FROM allowlist WHERE entry = ?", (normal,)).rowcount > 0


def allowlist(conn: Connection) -> list[tuple[str, str, float]]:
    return conn.execute("SELECT entry, note, created_at FROM allowlist ORDER BY entry").fetchall()


@dataclasses.dataclass(frozen=True)
class BounceFilter:
    kind: str | None = None
    recipient: str | None = None
    message_id: str | None = None
    before: int | None = None  # cursor: the last id of the previous page (newest first)


def list_bounces(conn: Connection, f: BounceFilter, limit: int) -> list[Bounce]:
    clauses, params = ["TRUE"], []
    for value, clause in (
        (f.kind, "kind = ?"),
        (f.message_id, "message_id = ?"),
        (f.before, "id < ?"),
        (f.recipient and normalize_address(f.recipient), "recipient = ?"),
    ):
        if value is not None:
            clauses.append(clause)
            params.append(value)
    rows = conn.execute(
        f"SELECT {_BOUNCE_COLUMNS} FROM bounces WHERE {' AND '.join(clauses)} ORDER BY id DESC LIMIT ?",
        [*params, limit],
    ).fetchall()
    return [Bounce(*row) for row in rows]


def get_bounce(conn: Connection, bounce_id: int) -> Bounce | None:
    row = conn.execute(f"SELECT {_BOUNCE_COLUMNS}, report FROM bounces WHERE id = ?", (bounce_id,)).fetchone()
    return Bounce(*row) if row else None


class SqlSuppressions:
    """:class:`relay.store.protocols.SuppressionStore` over the shared database."""

    def __init__(self, db: SqlDatabase, clock: Clock, suppression_policy: SuppressionPolicy) -> None:
        self.db = db
        self.clock = clock
        self.suppression_policy = suppression_policy
        # Over the network, concurrent RCPT checks share one query (SQLite answers each inline).
        self._lookups: Coalescer[str, Suppression] = Coalescer(self._fetch_suppressed)
        self.sieve = SuppressionSieve(db, clock)  # most addresses are not suppressed: known without a statement

    async def record_bounce(self, bounce: NewBounce) -> tuple[int, Suppression | None]:
        now, policy = self.clock.now(), self.suppression_policy
        return await self.db.write(lambda c: record_bounce(c, bounce, now, policy))

    async def suppressed(self, addresses: Iterable[str]) -> dict[str, Suppression]:
        now, wanted = self.clock.now(), list(addresses)
        if len(wanted) > 100:  # a long list waits in the reader thread
            return await self.db.read(lambda c: suppressed(c, wanted, now))
        maybe = self.sieve.may_be_suppressed(wanted)
        if maybe is not None:  # the filter is current: only the addresses it may hold are asked about
            if not maybe:
                return {}
            wanted = maybe
        if self.db.in_process:
            return await self.db.lookup(lambda c: suppressed(c, wanted, now))
        return await self._lookups.get(wanted)

    async def _fetch_suppressed(self, addresses: list[str]) -> dict[str, Suppression]:
        now = self.clock.now()
        return await self.db.lookup(lambda c: suppressed(c, addresses, now))

    async def suppression(self, address: str) -> Suppression | None:
        now = self.clock.now()
        return await self.db.read(lambda c: get(c, address, now))

    async def query(self, filter: SuppressionFilter, limit: int) -> list[Suppression]:
        now = self.clock.now()
        return await self.db.read(lambda c: list_suppressions(c, filter, limit, now))

    async def suppress(
        self, addresses: Sequence[str], reason: str = "manual", detail: str = "", expires_at: float | None = None
    ) -> list[Suppression]:
        now = self.clock.now()
        return await self.db.write(lambda c: add(c, addresses, reason, detail, now, expires_at))

    async def unsuppress(self, address: str) -> bool:
        return await self.db.write(lambda c: remove(c, address))

    async def reclassify_suppressions(self, apply: bool) -> Reclassified:
        """Permanent hard-bounce suppressions the rule in force would not make: listed, or lifted (``apply``)."""
        from relay.store.reclassify import reclassify  # it reads the queue module, which imports this one

        now = self.clock.now()
        run = self.db.write if apply else self.db.read
        return await run(lambda c: reclassify(c, now, apply))

    async def allow(self, entry: str, note: str = "") -> str:
        now = self.clock.now()
        return await self.db.write(lambda c: allow(c, entry, note, now))

    async def disallow(self, entry: str) -> bool:
        return await self.db.write(lambda c: disallow(c, entry))

    async def allowlist(self) -> list[tuple[str, str, float]]:
        return await self.db.read(allowlist)

    async def bounces(self, filter: BounceFilter, limit: int) -> list[Bounce]:
        return await self.db.read(lambda c: list_bounces(c, filter, limit))

    async def bounce(self, bounce_id: int) -> Bounce | None:
        return await self.db.read(lambda c: get_bounce(c, bounce_id))
