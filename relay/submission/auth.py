"""SMTP AUTH checks: argon2 off the event loop, a cache of good logins, and brute-force throttling.

Verifying an argon2 hash costs ~90 ms of CPU, and applications often open one
connection per message. A successful login is therefore remembered as an
HMAC of the password under a key that lives only in this process's memory;
the credential row is still looked up on every login, so a revoked credential
stops working at once. Failed logins are counted per client address: past
``max_failures`` within ``window`` seconds, AUTH from that address is refused
until the window passes. They are counted in this process's memory (the last
``window`` seconds, :class:`LocalFailures`) or, when the store is shared by
several nodes (PostgreSQL), in the database's rate counters (a fixed window
aligned to the clock, :class:`SharedFailures`), so that a guesser cannot
multiply its tries by the number of nodes.

A login whose password must still be checked counts as a failure from before the check until it
succeeds, so that parallel guesses cannot all pass the limit while none has failed yet. Such
checks from one address take turns (:class:`Turns`): an application that opens twenty connections at
once and logs in on each is not refused for the nineteen logins still being checked (they were, with
``max_auth_failures`` 5: 454 for a good password). The first check's password is then remembered and
the others pass without argon2. A password remembered from an earlier login is not counted at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
from collections import deque
from collections.abc import AsyncIterator
from typing import Protocol

from relay.clock import Clock
from relay.config import Rate
from relay.credentials import SmtpCredential, verify_password
from relay.errors import RelayError
from relay.store.protocols import CredentialStore, RateCounters

log = logging.getLogger(__name__)

CACHE_LIMIT = 10_000


class Throttled(RelayError):
    """Too many failed logins from this address recently."""


class Failures(Protocol):
    """Failed logins per client address."""

    async def exceeded(self, ip: str, now: float) -> bool:
        """Whether ``ip`` has failed too often already (nothing counted)."""
        ...

    async def attempt(self, ip: str, now: float) -> int | None:
        """Count an attempt from ``ip`` as a failure: the failures counted now, or None if ``ip`` has
        failed too often already (nothing counted)."""
        ...

    async def succeeded(self, ip: str, now: float) -> None:
        """The attempt counted at ``now`` was a good login: take it back."""
        ...


class LocalFailures:
    """In this process's memory: the failures of the last ``window`` seconds."""

    def __init__(self, max_failures: int, window: float) -> None:
        self.max_failures = max_failures
        self.window = window
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, ip: str, now: float) -> deque[float]:
        failures = self._failures.get(ip)
        if failures is None:
            return deque()
        cutoff = now - self.window
        while failures and failures[0] <= cutoff:
            failures.popleft()
        if not failures:
            del self._failures[ip]
        return failures

    async def exceeded(self, ip: str, now: float) -> bool:
        return len(self._recent(ip, now)) >= self.max_failures

    async def attempt(self, ip: str, now: float) -> int | None:
        if await self.exceeded(ip, now):
            return None
        failures = self._failures.setdefault(ip, deque())
        failures.append(now)
        return len(failures)

    async def succeeded(self, ip: str, now: float) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._failures[ip].remove(now)


class SharedFailures:
    """In the database's rate counters (``auth:<address>``): every node counts in the same window."""

    def __init__(self, counters: RateCounters, max_failures: int, window: float) -> None:
        self.counters = counters
        self.rate = Rate(max_failures, window)

    async def exceeded(self, ip: str, now: float) -> bool:
        return await self.counters.count(f"auth:{ip}", now) >= self.rate.limit

    async def attempt(self, ip: str, now: float) -> int | None:
        decision = await self.counters.hit(f"auth:{ip}", self.rate, now)
        return self.rate.limit - decision.remaining if decision.allowed else None

    async def succeeded(self, ip: str, now: float) -> None:
        await self.counters.give_back(f"auth:{ip}", self.rate, now)


def _throttled(ip: str) -> Throttled:
    log.warning("AUTH refused for %s: too many failed attempts", ip)
    return Throttled(ip)


class Turns:
    """One login check at a time per client address, in this process: the others from that address wait
    for it. Only the addresses with a check running or waiting are kept."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}  # address → (its lock, checks holding or waiting)

    @contextlib.asynccontextmanager
    async def turn(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    def __len__(self) -> int:
        return len(self._locks)


class SmtpAuthenticator:
    def __init__(
        self,
        store: CredentialStore,
        clock: Clock,
        max_failures: int,
        window: float,
        failures: Failures | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.failures = failures or LocalFailures(max_failures, window)
        self.turns = Turns()
        self._cache: dict[str, bytes] = {}  # credential id → HMAC of its password
        self._secret = os.urandom(32)

    async def login(self, ip: str, username: str, password: str) -> SmtpCredential | None:
        """The credential if the login is good. Raises Throttled when ``ip`` has failed too often."""
        if await self.failures.exceeded(ip, self.clock.now()):
            raise _throttled(ip)
        found = await self.store.smtp_credential_for_login(username)
        if found is not None and self._remembered(found[0], password):  # checked before: nothing to count
            self.store.touch_smtp_credential(found[0].id)
            return found[0]
        async with self.turns.turn(ip):
            return await self._check(ip, username, password)

    async def _check(self, ip: str, username: str, password: str) -> SmtpCredential | None:
        """A login whose password may need argon2, counted as a failure until it is good (see the module)."""
        attempt = self.clock.now()
        failures = await self.failures.attempt(ip, attempt)
        if failures is None:
            raise _throttled(ip)
        found = await self.store.smtp_credential_for_login(username)  # again: it may be gone since
        if found is not None and await self._password_matches(found[0], found[1], password):
            self.store.touch_smtp_credential(found[0].id)
            await self.failures.succeeded(ip, attempt)
            return found[0]
        log.warning("AUTH failed for %r from %s (%d recent failures)", username[:64], ip, failures)
        return None

    def _mac(self, cred: SmtpCredential, password: str) -> bytes:
        return hmac.new(self._secret, f"{cred.id}\0{password}".encode(), hashlib.sha256).digest()

    def _remembered(self, cred: SmtpCredential, password: str) -> bool:
        """Whether this password of ``cred`` passed argon2 before (a credential's password never changes:
        it is revoked, and then not found)."""
        cached = self._cache.get(cred.id)
        return cached is not None and hmac.compare_digest(cached, self._mac(cred, password))

    async def _password_matches(self, cred: SmtpCredential, password_hash: str, password: str) -> bool:
        if self._remembered(cred, password):  # checked by the login this one waited for
            return True
        if not await asyncio.to_thread(verify_password, password_hash, password):
            return False
        if len(self._cache) >= CACHE_LIMIT:
            self._cache.clear()
        self._cache[cred.id] = self._mac(cred, password)
        return True
