"""API keys: ``rly_live_<random>`` (``rly_test_<random>`` for test keys), shown once, stored only as a SHA-256 digest.

A key carries 192 random bits, so a fast digest is enough: unlike passwords,
it cannot be guessed from a dictionary, and a slow hash would cost every request.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import secrets
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from relay.clock import Clock
    from relay.store.protocols import KeyStore

PREFIX = "rly"
SCOPES = ("send", "read", "domains", "suppressions", "templates", "webhooks", "admin")


def generate(test: bool = False) -> str:
    """A new secret; a test key's mail is captured in the sandbox, never delivered."""
    return f"{PREFIX}_{'test' if test else 'live'}_{secrets.token_urlsafe(24)}"


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key_id() -> str:
    return f"key_{secrets.token_hex(8)}"


def looks_like_key(text: str) -> bool:
    return text.startswith(f"{PREFIX}_") and len(text) < 200


@dataclasses.dataclass(frozen=True)
class ApiKey:
    id: str
    name: str
    scopes: tuple[str, ...]
    created_at: float
    last_used_at: float | None = None
    revoked_at: float | None = None
    allowed_ips: tuple[str, ...] = ()  # CIDRs; empty = from anywhere
    rate_limit: int | None = None  # requests per hour; None = the configured default
    daily_quota: int | None = None  # messages per UTC day
    monthly_quota: int | None = None  # messages per UTC month
    test: bool = False  # rly_test_...: what it sends is sandboxed (captured, not delivered)
    own_messages: bool = False  # reads only the messages it submitted (and their events)

    # Who may do what with a message (README, "Keys and tenancy"): an admin key with any message; other
    # keys change (cancel, reschedule) only the messages they submitted, and a key made with
    # own_messages also reads only those. Instance-wide figures (stats) are not for such a key.

    @property
    def is_admin(self) -> bool:
        return "admin" in self.scopes

    def may_change(self, submitted_by: str | None) -> bool:
        return self.is_admin or submitted_by == self.id

    def may_read(self, submitted_by: str | None) -> bool:
        return self.is_admin or not self.own_messages or submitted_by == self.id

    @property
    def reads_only_own(self) -> bool:
        return self.own_messages and not self.is_admin

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes

    def allows_ip(self, ip: str) -> bool:
        if not self.allowed_ips:
            return True
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        return any(address in ipaddress.ip_network(net, strict=False) for net in self.allowed_ips)

    def public(self) -> dict[str, object]:
        """The key as the API and CLI show it: never the secret."""
        data = dataclasses.asdict(self)
        data["scopes"] = list(self.scopes)
        data["allowed_ips"] = list(self.allowed_ips)
        return data


def new_api_key(
    name: str,
    scopes: tuple[str, ...],
    now: float,
    *,
    allowed_ips: tuple[str, ...] = (),
    rate_limit: int | None = None,
    daily_quota: int | None = None,
    monthly_quota: int | None = None,
    test: bool = False,
    own_messages: bool = False,
) -> tuple[ApiKey, str]:
    """A new key's record and its secret (pure: nothing is stored)."""
    key = ApiKey(
        new_key_id(),
        name,
        scopes,
        now,
        allowed_ips=allowed_ips,
        rate_limit=rate_limit,
        daily_quota=daily_quota,
        monthly_quota=monthly_quota,
        test=test,
        own_messages=own_messages,
    )
    return key, generate(test)


async def create_api_key(
    keys: KeyStore, clock: Clock, name: str, scopes: tuple[str, ...], **options: Any
) -> tuple[ApiKey, str]:
    """Make a key and store it (only the digest of its secret); returns the record and the secret, shown once.

    ``options``: those of :func:`new_api_key` (allowed_ips, rate_limit, quotas, test, own_messages)."""
    key, secret = new_api_key(name, scopes, clock.now(), **options)
    await keys.add_api_key(key, digest(secret))
    return key, secret
