"""API keys: ``rly_live_<random>``, shown once, stored only as a SHA-256 digest.

A key carries 192 random bits, so a fast digest is enough: unlike passwords,
it cannot be guessed from a dictionary, and a slow hash would cost every request.
"""

from __future__ import annotations

import dataclasses
import hashlib
import secrets

PREFIX = "rly"
SCOPES = ("send", "read", "domains", "suppressions", "templates", "webhooks", "admin")


def generate() -> str:
    return f"{PREFIX}_live_{secrets.token_urlsafe(24)}"


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
    last_used_at: float | None
    revoked_at: float | None

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes
