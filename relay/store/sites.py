"""Per-destination-site limits for a whole cluster: connection slots leased as rows, and push-back shared.

One node keeps its sites' limits in memory (relay.delivery.engine); when several nodes share a
database, ``max_connections`` must hold for all of them together, and a receiver that said "slow
down" to one node must slow them all. Both live here:

* A connection slot is a row ``(site, slot)`` with ``slot < max_connections``, leased to the node that
  holds the connection (``owner``) until ``lease_until``. A node takes the lowest free or expired slot
  before it connects and deletes its row when the connection closes; a live node renews its slots'
  leases (a short lease, so a node killed with -9 holds its slots for at most SLOT_LEASE seconds).
  Why rows and not advisory locks: a session advisory lock would need a database connection held
  open for each SMTP connection; a row needs one short write when a connection opens and one when it
  closes, and connections are reused for many messages.
* Push-back: the share of its limits a site allows (``factor``) until ``until``; a node that sees a
  421 writes it (keeping the lower share), every node reads the table every few seconds.
* The last error of a destination domain: the newest reply among its deferred recipients, for the
  operators' queue page.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from relay.clock import Clock
from relay.store.dialect import Connection, SqlDatabase

SLOT_LEASE = 60.0  # seconds a connection slot is held without renewal


def acquire_slot(conn: Connection, site: str, limit: int, owner: str, now: float, until: float) -> int | None:
    """The lowest slot of ``site`` below ``limit`` that is free or expired, now ``owner``'s; None if all are held."""
    held = {
        row[0] for row in conn.execute("SELECT slot FROM site_slots WHERE site = ? AND lease_until >= ?", (site, now))
    }
    for slot in range(limit):
        if slot in held:
            continue
        taken = conn.execute(
            "INSERT INTO site_slots (site, slot, owner, lease_until) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (site, slot) DO UPDATE SET owner = excluded.owner, lease_until = excluded.lease_until"
            " WHERE site_slots.lease_until < ? RETURNING slot",
            (site, slot, owner, until, now),
        ).fetchone()
        if taken is not None:
            return slot
    return None


def release_slot(conn: Connection, site: str, slot: int, owner: str) -> None:
    conn.execute("DELETE FROM site_slots WHERE site = ? AND slot = ? AND owner = ?", (site, slot, owner))


def renew_slots(conn: Connection, owner: str, slots: Sequence[tuple[str, int]], now: float, until: float) -> int:
    """Extend ``owner``'s unexpired leases of ``slots`` (those only: a slot it failed to give back expires)."""
    renewed = 0
    for site, slot in slots:
        renewed += conn.execute(
            "UPDATE site_slots SET lease_until = ? WHERE site = ? AND slot = ? AND owner = ? AND lease_until >= ?",
            (until, site, slot, owner, now),
        ).rowcount
    return renewed


def release_all(conn: Connection, owner: str) -> int:
    return conn.execute("DELETE FROM site_slots WHERE owner = ?", (owner,)).rowcount


def record_pushback(conn: Connection, site: str, factor: float, until: float, now: float) -> None:
    """``site`` allows ``factor`` of its limits until ``until``: the lower share and the later end win, over
    a push-back still in force."""
    conn.execute(
        "INSERT INTO site_pushback (site, factor, until) VALUES (?, ?, ?) ON CONFLICT (site) DO UPDATE SET"
        " factor = CASE WHEN site_pushback.until <= ? OR excluded.factor < site_pushback.factor"
        " THEN excluded.factor ELSE site_pushback.factor END,"
        " until = CASE WHEN excluded.until > site_pushback.until THEN excluded.until ELSE site_pushback.until END",
        (site, factor, until, now),
    )


def pushbacks(conn: Connection, now: float) -> dict[str, tuple[float, float]]:
    rows = conn.execute("SELECT site, factor, until FROM site_pushback WHERE until > ?", (now,)).fetchall()
    return {site: (float(factor), float(until)) for site, factor, until in rows}


@dataclasses.dataclass(frozen=True)
class LastError:
    """The newest reply that deferred a recipient of a destination domain still waiting."""

    code: int | None
    response: str
    at: float


def last_errors(conn: Connection, domains: Sequence[str]) -> dict[str, LastError]:
    """Each of ``domains``' last error (domains without a deferred recipient are left out): one indexed look-up
    per domain, so callers pass a page of domains, not all of them."""
    found: dict[str, LastError] = {}
    for domain in dict.fromkeys(d.lower() for d in domains):
        row = conn.execute(
            "SELECT last_code, last_response, updated_at FROM recipients"
            " WHERE state = 'deferred' AND domain = ? AND last_response IS NOT NULL"
            " ORDER BY updated_at DESC, id DESC LIMIT 1",
            (domain,),
        ).fetchone()
        if row is not None:
            found[domain] = LastError(None if row[0] is None else int(row[0]), str(row[1]), float(row[2]))
    return found


def prune_pushbacks(conn: Connection, now: float) -> int:
    return conn.execute("DELETE FROM site_pushback WHERE until <= ?", (now,)).rowcount


class SqlSites:
    """:class:`relay.store.protocols.SiteStore` over the shared database."""

    def __init__(self, db: SqlDatabase, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    async def acquire_slot(self, site: str, limit: int, owner: str) -> int | None:
        now = self.clock.now()
        return await self.db.write(lambda c: acquire_slot(c, site, limit, owner, now, now + SLOT_LEASE))

    async def release_slot(self, site: str, slot: int, owner: str) -> None:
        await self.db.write(lambda c: release_slot(c, site, slot, owner))

    async def renew_slots(self, owner: str, slots: Sequence[tuple[str, int]]) -> int:
        now = self.clock.now()
        return await self.db.write(lambda c: renew_slots(c, owner, slots, now, now + SLOT_LEASE))

    async def release_all_slots(self, owner: str) -> int:
        return await self.db.write(lambda c: release_all(c, owner))

    async def record_pushback(self, site: str, factor: float, until: float) -> None:
        now = self.clock.now()
        await self.db.write(lambda c: record_pushback(c, site, factor, until, now))

    async def pushbacks(self) -> dict[str, tuple[float, float]]:
        now = self.clock.now()
        return await self.db.read(lambda c: pushbacks(c, now))

    async def last_errors(self, domains: Sequence[str]) -> dict[str, LastError]:
        return await self.db.read(lambda c: last_errors(c, domains))
