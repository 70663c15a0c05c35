"""SMTP credentials: generated username and password, argon2 hashes, sender restrictions.

Pure, but for :func:`create_smtp_credential`, which stores what it made through a :class:`CredentialStore`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import string
from typing import TYPE_CHECKING

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from relay.message import address_fault, domain_key, domain_name_fault, split_address

if TYPE_CHECKING:
    from relay.clock import Clock
    from relay.store.protocols import CredentialStore

_hasher = PasswordHasher()  # argon2id, the library's defaults (~90 ms per hash here)


@dataclasses.dataclass(frozen=True)
class SmtpCredential:
    id: str
    username: str
    allowed_from: tuple[str, ...] = ()  # domains ("example.com") or addresses; empty = any sender
    rate_limit: int | None = None  # messages per hour
    tags: tuple[str, ...] = ()
    created_at: float = 0.0
    last_used_at: float | None = None
    revoked_at: float | None = None
    test: bool = False  # what it sends is sandboxed (captured, not delivered)

    def may_send_as(self, address: str) -> bool:
        """Whether MAIL FROM / From: ``address`` is allowed for this credential."""
        if not self.allowed_from:
            return True
        parts = split_address(address)
        if parts is None:
            return False
        local, domain = parts
        domain = domain_key(domain)  # a Unicode domain and its A-label form are one domain
        full = f"{local.lower()}@{domain}"
        return any(_rule_form(rule) in (full, domain) for rule in self.allowed_from)

    def public(self) -> dict[str, object]:
        """As shown by the API and CLI: never the password or its hash."""
        data = dataclasses.asdict(self)
        data["allowed_from"] = list(self.allowed_from)
        data["tags"] = list(self.tags)
        return data


def _rule_form(rule: str) -> str:
    """A sender rule as :meth:`SmtpCredential.may_send_as` compares it: lower case, the domain in A-labels."""
    local, at, domain = rule.rpartition("@")
    return f"{local.lower()}{at}{domain_key(domain)}"


def new_id() -> str:
    return f"cred_{secrets.token_hex(8)}"


def new_username(test: bool = False) -> str:
    return f"relay-{'test-' if test else ''}{secrets.token_hex(6)}"


_PASSWORD_ALPHABET = string.ascii_letters + string.digits


def new_password() -> str:
    """32 letters and digits (~190 bits): no '-' a command line could take for an option, nothing to quote."""
    return "".join(secrets.choice(_PASSWORD_ALPHABET) for _ in range(32))


def hash_password(password: str) -> str:
    return _hasher.hash(password)


async def create_smtp_credential(
    credentials: CredentialStore,
    clock: Clock,
    *,
    username: str | None = None,
    allowed_from: tuple[str, ...] = (),
    rate_limit: int | None = None,
    tags: tuple[str, ...] = (),
    test: bool = False,
) -> tuple[SmtpCredential, str]:
    """Make a credential and store it (only the argon2 hash of its password); returns it and the password."""
    password = new_password()
    password_hash = await asyncio.to_thread(hash_password, password)
    cred = SmtpCredential(
        new_id(), username or new_username(test), allowed_from, rate_limit, tags, clock.now(), test=test
    )
    await credentials.add_smtp_credential(cred, password_hash)
    return cred, password


def verify_password(password_hash: str, password: str) -> bool:
    """Slow on purpose (argon2id); run it off the event loop."""
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def valid_sender_rule(rule: str) -> bool:
    """``example.com`` or ``someone@example.com``, as mail goes to (a NUL or a control character was kept)."""
    if "@" in rule:
        return split_address(rule) is not None and address_fault(rule) is None
    return "." in rule and domain_name_fault(rule) is None
