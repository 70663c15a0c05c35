"""Idempotency-Key records: the first request claims the key; its outcome is replayed to retries.

A record is ``pending`` while its request runs and ``done`` once the response
is stored, in the same transaction as the message it queued. A pending record
belongs to the process that claimed it (its :class:`Owner`) until that request
ends: the owner renews a lease while it runs (every RENEW_EVERY seconds) and
releases the claim if the request fails. Another request with the same key
gets the record back (409 "in progress") unless the owner has provably
stopped (:func:`holder_gone`): a request of this process that no longer runs,
a process on this machine that is not running (or whose pid this process now
has: a restart), or, anywhere, a lease left to expire without renewal. Only
then is the claim taken over. A request that lost its claim cannot complete
it (:class:`ClaimLost`): the transaction that would queue its messages fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator, Callable

from relay.clock import Clock
from relay.errors import RelayError
from relay.store.dialect import Connection, SqlDatabase, lock

log = logging.getLogger(__name__)

STATES = ("pending", "done")  # a record: its request is running, its response is stored
LEASE = 60.0  # seconds a pending claim holds without renewal
RENEW_EVERY = LEASE / 3  # how often a running request renews its lease


@dataclasses.dataclass(frozen=True)
class IdempotencyRecord:
    key: str
    request_hash: str
    state: str  # pending or done
    status: int | None
    body: str | None
    message_id: str | None
    created_at: float
    expires_at: float
    owner: str | None = None  # the process a pending claim belongs to (str(Owner))
    lease_until: float | None = None  # a pending claim not renewed by then may be taken over


@dataclasses.dataclass(frozen=True)
class Completion:
    """What to store for a finished request (written with the message it queued)."""

    api_key_id: str
    key: str
    status: int
    body: str
    message_id: str | None


class ClaimLost(RelayError):
    """The request's claim was taken over (its lease expired): it must not complete, nor queue anything."""


# -- owners ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Owner:
    """One process: where its pid means something (``node``), the pid, and a token drawn at start."""

    node: str  # host name, boot and pid namespace: another node's pids cannot be checked
    pid: int
    token: str  # random per process: the same pid after a restart is another owner

    def __str__(self) -> str:
        return f"{self.pid}:{self.token}@{self.node}"

    @classmethod
    def parse(cls, text: str) -> Owner | None:
        head, at, node = text.partition("@")
        pid, colon, token = head.partition(":")
        if not at or not colon or not (pid.isascii() and pid.isdigit()):
            return None
        return cls(node, int(pid), token)


def node_identity() -> str:
    """The host name, the boot id and the pid namespace: where two owners' pids can be compared."""
    parts = [socket.gethostname()]
    try:
        with open("/proc/sys/kernel/random/boot_id") as fh:
            parts.append(fh.read().strip())
    except OSError:
        pass
    try:
        parts.append(os.readlink("/proc/self/ns/pid"))
    except OSError:
        pass
    return "/".join(parts).replace("@", "_")


_this: Owner | None = None


def this_process() -> Owner:
    """This process's owner identity (a forked child gets its own)."""
    global _this
    if _this is None or _this.pid != os.getpid():
        _this = Owner(node_identity(), os.getpid(), secrets.token_hex(8))
    return _this


def pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: running
        return True
    return True


# Claims held by requests running in this process: (scope, api key id, key). The scope names the database.
_running: set[tuple[str, str, str]] = set()


def running_here(scope: str, api_key_id: str, key: str) -> bool:
    return (scope, api_key_id, key) in _running


def finished_here(scope: str, api_key_id: str, key: str) -> None:
    """The request holding this claim in this process has ended (completed, released or lost)."""
    _running.discard((scope, api_key_id, key))


def holder_gone(
    holder: str | None,
    lease_until: float | None,
    now: float,
    me: Owner,
    running: bool,
    pid_alive: Callable[[int], bool] = pid_running,
) -> bool:
    """Whether the owner of a pending claim has provably stopped, so that the claim may be taken over.
    ``running``: a request of this process holds the claim now. Pure apart from ``pid_alive``."""
    owner = Owner.parse(holder) if holder else None
    if owner == me:
        return not running  # this process knows its own requests
    if owner is not None and owner.node == me.node:
        if owner.pid == me.pid or not pid_alive(owner.pid):
            return True  # its process is gone (or restarted: the pid is now this process's)
    return lease_until is None or lease_until <= now  # elsewhere: only an unrenewed lease says so


# -- records -------------------------------------------------------------------------------------

_COLUMNS = "key, request_hash, state, status, body, message_id, created_at, expires_at, owner, lease_until"


def get(conn: Connection, api_key_id: str, key: str, now: float) -> IdempotencyRecord | None:
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM idempotency WHERE api_key_id = ? AND key = ? AND expires_at > ?",
        (api_key_id, key, now),
    ).fetchone()
    return None if row is None else IdempotencyRecord(*row)


def claim(
    conn: Connection,
    api_key_id: str,
    key: str,
    request_hash: str,
    now: float,
    ttl: float,
    scope: str = "",
    me: Owner | None = None,
    pid_alive: Callable[[int], bool] = pid_running,
) -> IdempotencyRecord | None:
    """Claim ``key`` for a new request of ``me`` (this process): None if claimed, else the record that
    holds it (done, or pending with a live owner). Runs in the writer: claims are taken one at a time (on
    PostgreSQL, under a lock on the key, for every node)."""
    me = me or this_process()
    # Another node claiming the same key waits here until this transaction ends, then finds the claim.
    lock(conn, f"idempotency:{api_key_id}:{key}")
    conn.execute("DELETE FROM idempotency WHERE api_key_id = ? AND key = ? AND expires_at <= ?", (api_key_id, key, now))
    existing = get(conn, api_key_id, key, now)
    if existing is not None:
        running = running_here(scope, api_key_id, key)
        if existing.state != "pending" or not holder_gone(
            existing.owner, existing.lease_until, now, me, running, pid_alive
        ):
            return existing
        log.warning("Idempotency-Key %r: taking over the claim of %s, which has stopped", key, existing.owner)
        conn.execute("DELETE FROM idempotency WHERE api_key_id = ? AND key = ?", (api_key_id, key))
    conn.execute(
        "INSERT INTO idempotency (api_key_id, key, request_hash, state, created_at, expires_at, owner, lease_until)"
        " VALUES (?, ?, ?, 'pending', ?, ?, ?, ?)",
        (api_key_id, key, request_hash, now, now + ttl, str(me), now + LEASE),
    )
    _running.add((scope, api_key_id, key))
    return None


def renew(conn: Connection, api_key_id: str, key: str, now: float, me: Owner | None = None) -> bool:
    """Extend ``me``'s lease on a pending claim; False if the claim is no longer its own."""
    return (
        conn.execute(
            "UPDATE idempotency SET lease_until = ? WHERE api_key_id = ? AND key = ? AND state = 'pending'"
            " AND owner = ?",
            (now + LEASE, api_key_id, key, str(me or this_process())),
        ).rowcount
        == 1
    )


def forget(
    conn: Connection, api_key_id: str, key: str, now: float, scope: str = "", me: Owner | None = None
) -> tuple[IdempotencyRecord | None, bool]:
    """Delete a record on request: (the record or None, whether it was deleted). A request still
    running under the key keeps it (deleting it would let a retry run the request a second time)."""
    record = get(conn, api_key_id, key, now)
    if record is None or (
        record.state == "pending"
        and not holder_gone(
            record.owner, record.lease_until, now, me or this_process(), running_here(scope, api_key_id, key)
        )
    ):
        return record, False
    conn.execute("DELETE FROM idempotency WHERE api_key_id = ? AND key = ?", (api_key_id, key))
    return record, True


def complete(conn: Connection, c: Completion, me: Owner | None = None) -> None:
    """Store the response of ``me``'s request. Raises ClaimLost if the claim is no longer its own, which
    rolls back the transaction queuing the request's messages: a taken-over request queues nothing."""
    updated = conn.execute(
        "UPDATE idempotency SET state = 'done', status = ?, body = ?, message_id = ?, lease_until = NULL"
        " WHERE api_key_id = ? AND key = ? AND state = 'pending' AND owner = ?",
        (c.status, c.body, c.message_id, c.api_key_id, c.key, str(me or this_process())),
    ).rowcount
    if updated != 1:
        raise ClaimLost(f"the claim on Idempotency-Key {c.key!r} was taken over")


def release(conn: Connection, api_key_id: str, key: str, me: Owner | None = None) -> None:
    """Forget ``me``'s claim whose request did not succeed, so a corrected retry may run."""
    conn.execute(
        "DELETE FROM idempotency WHERE api_key_id = ? AND key = ? AND state = 'pending' AND owner = ?",
        (api_key_id, key, str(me or this_process())),
    )


def prune(conn: Connection, now: float) -> int:
    return conn.execute("DELETE FROM idempotency WHERE expires_at <= ?", (now,)).rowcount


class SqlIdempotency:
    """:class:`relay.store.protocols.IdempotencyStore` over the shared database."""

    def __init__(self, db: SqlDatabase, clock: Clock) -> None:
        self.db = db
        self.clock = clock
        self._held: dict[tuple[str, str], int] = {}  # claims whose requests run here: how many hold each
        self._renewer: asyncio.Task[None] | None = None  # renews them all, while any is held

    async def claim_idempotency_key(
        self, api_key_id: str, key: str, request_hash: str, ttl: float
    ) -> IdempotencyRecord | None:
        """None: claimed for a request of this process (hold it with :meth:`idempotency_lease`); else the
        record that holds the key (done, or pending with an owner that has not stopped)."""
        now = self.clock.now()
        scope = self.db.name
        # Not durable: until the request's answer, which follows a durable commit (and so the claim's log
        # frames are on disk), a claim lost with the power only lets the client's retry claim again.
        op = lambda c: claim(c, api_key_id, key, request_hash, now, ttl, scope)  # noqa: E731
        try:
            return await self.db.write(op, light=True, durable=False)
        except BaseException:
            finished_here(scope, api_key_id, key)  # not committed: not ours
            raise

    @contextlib.asynccontextmanager
    async def idempotency_lease(self, api_key_id: str, key: str) -> AsyncIterator[None]:
        """Hold a claim while its request runs: the lease is renewed every RENEW_EVERY seconds, the claim
        is released if the request fails, and it is no longer this process's running request after.

        One task renews every claim held in this process (a task and a timer per request were ~4% of the
        CPU of an HTTP submission)."""
        claim = (api_key_id, key)
        self._held[claim] = self._held.get(claim, 0) + 1
        renewer = self._renewer
        if renewer is None or renewer.done() or renewer.get_loop() is not asyncio.get_running_loop():
            self._renewer = asyncio.create_task(self._renew_held(), name="idempotency-renewals")
        try:
            yield
        except BaseException:
            await self.release_idempotency_key(api_key_id, key)
            raise
        finally:
            left = self._held.get(claim, 0) - 1
            if left > 0:
                self._held[claim] = left
            else:
                self._held.pop(claim, None)
            finished_here(self.db.name, api_key_id, key)

    async def _renew_held(self) -> None:
        """Every RENEW_EVERY seconds, renew each claim held here; stop when none is (the next lease starts
        another)."""
        while self._held:
            await asyncio.sleep(RENEW_EVERY)
            for api_key_id, key in list(self._held):
                try:
                    if not await self.renew_idempotency_key(api_key_id, key):
                        self._held.pop((api_key_id, key), None)  # no longer ours (completed, released, taken over)
                except Exception as exc:  # e.g. a full disk: the next renewal may work; the lease says the rest
                    log.warning("could not renew the claim on Idempotency-Key %r: %s", key, exc)

    async def renew_idempotency_key(self, api_key_id: str, key: str) -> bool:
        """Extend this process's lease on a pending claim; False if it is no longer this process's."""
        now = self.clock.now()
        return await self.db.write(lambda c: renew(c, api_key_id, key, now), light=True, durable=False)

    async def complete_idempotency_key(self, completion: Completion) -> None:
        await self.db.write(lambda c: complete(c, completion), light=True)

    async def release_idempotency_key(self, api_key_id: str, key: str) -> None:
        try:
            # Not durable: a release lost with the power leaves a claim whose process is gone, which the
            # next request with the key takes over.
            await self.db.write(lambda c: release(c, api_key_id, key), light=True, durable=False)
        finally:
            finished_here(self.db.name, api_key_id, key)

    async def idempotency_record(self, api_key_id: str, key: str) -> IdempotencyRecord | None:
        now = self.clock.now()
        return await self.db.lookup(lambda c: get(c, api_key_id, key, now))

    async def forget_idempotency_record(self, api_key_id: str, key: str) -> tuple[IdempotencyRecord | None, bool]:
        """Delete a finished record: (the record or None, whether it was deleted)."""
        now = self.clock.now()
        return await self.db.write(lambda c: forget(c, api_key_id, key, now, self.db.name))

    async def prune(self) -> int:
        """Drop expired idempotency records."""
        now = self.clock.now()
        return await self.db.write(lambda c: prune(c, now))
