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
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
from collections import deque
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

    async def attempt(self, ip: str, now: float) -> int | None:
        if len(self._recent(ip, now)) >= self.max_failures:
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

    async def attempt(self, ip: str, now: float) -> int | None:
        decision = await self.counters.hit(f"auth:{ip}", self.rate, now)
        return self.rate.limit - decision.remaining if decision.allowed else None

    async def succeeded(self, ip: str, now: float) -> None:
        await self.counters.give_back(f"auth:{ip}", self.rate, now)


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
        self._cache: dict[str, bytes] = {}  # credential id → HMAC of its password
        self._secret = os.urandom(32)

    async def login(self, ip: str, username: str, password: str) -> SmtpCredential | None:
        """The credential if the login is good. Raises Throttled when ``ip`` has failed too often."""
        # The attempt counts as a failure from before the check (which waits for argon2): parallel
        # attempts cannot all pass the limit while none has failed yet. A good login takes it back.
        attempt = self.clock.now()
        failures = await self.failures.attempt(ip, attempt)
        if failures is None:
            log.warning("AUTH refused for %s: too many failed attempts", ip)
            raise Throttled(ip)
        found = await self.store.smtp_credential_for_login(username)
        if found is not None and await self._password_matches(found[0], found[1], password):
            self.store.touch_smtp_credential(found[0].id)
            await self.failures.succeeded(ip, attempt)
            return found[0]
        log.warning("AUTH failed for %r from %s (%d recent failures)", username[:64], ip, failures)
        return None

    async def _password_matches(self, cred: SmtpCredential, password_hash: str, password: str) -> bool:
        mac = hmac.new(self._secret, f"{cred.id}\0{password}".encode(), hashlib.sha256).digest()
        cached = self._cache.get(cred.id)
        if cached is not None and hmac.compare_digest(cached, mac):
            return True
        if not await asyncio.to_thread(verify_password, password_hash, password):
            return False
        if len(self._cache) >= CACHE_LIMIT:
            self._cache.clear()
        self._cache[cred.id] = mac
        return True
