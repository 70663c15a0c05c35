"""SMTP AUTH checks: argon2 off the event loop, a cache of good logins, and brute-force throttling.

Verifying an argon2 hash costs ~90 ms of CPU, and applications often open one
connection per message. A successful login is therefore remembered as an
HMAC of the password under a key that lives only in this process's memory;
the credential row is still looked up on every login, so a revoked credential
stops working at once. Failed logins are counted per client address: past
``max_failures`` within ``window`` seconds, AUTH from that address is refused
until the window passes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
from collections import deque

from relay.clock import Clock
from relay.credentials import SmtpCredential, verify_password
from relay.errors import RelayError
from relay.store.protocols import CredentialStore

log = logging.getLogger(__name__)

CACHE_LIMIT = 10_000


class Throttled(RelayError):
    """Too many failed logins from this address recently."""


class SmtpAuthenticator:
    def __init__(self, store: CredentialStore, clock: Clock, max_failures: int, window: float) -> None:
        self.store = store
        self.clock = clock
        self.max_failures = max_failures
        self.window = window
        self._failures: dict[str, deque[float]] = {}
        self._cache: dict[str, bytes] = {}  # credential id → HMAC of its password
        self._secret = os.urandom(32)

    def _recent_failures(self, ip: str) -> deque[float]:
        failures = self._failures.get(ip)
        if failures is None:
            return deque()
        cutoff = self.clock.now() - self.window
        while failures and failures[0] <= cutoff:
            failures.popleft()
        if not failures:
            del self._failures[ip]
        return failures

    def throttled(self, ip: str) -> bool:
        return len(self._recent_failures(ip)) >= self.max_failures

    async def login(self, ip: str, username: str, password: str) -> SmtpCredential | None:
        """The credential if the login is good. Raises Throttled when ``ip`` has failed too often."""
        if self.throttled(ip):
            log.warning("AUTH refused for %s: too many failed attempts", ip)
            raise Throttled(ip)
        # The attempt counts as a failure from before the check (which waits for argon2): parallel
        # attempts cannot all pass the limit while none has failed yet. A good login takes it back.
        failures = self._failures.setdefault(ip, deque())
        attempt = self.clock.now()
        failures.append(attempt)
        found = await self.store.smtp_credential_for_login(username)
        if found is not None and await self._password_matches(found[0], found[1], password):
            self.store.touch_smtp_credential(found[0].id)
            with contextlib.suppress(ValueError):
                failures.remove(attempt)
            return found[0]
        log.warning("AUTH failed for %r from %s (%d recent failures)", username[:64], ip, len(failures))
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
