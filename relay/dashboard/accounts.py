"""Operator accounts: names, roles, argon2id passwords and session tokens (what ``relay users`` and the
login page share). Hashing runs off the event loop; the store keeps only hashes and digests."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import re
import secrets

from relay.clock import Clock
from relay.credentials import hash_password, new_password, verify_password
from relay.errors import RelayError
from relay.store.operators import ROLES, Operator
from relay.store.protocols import OperatorStore

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
MIN_PASSWORD = 12  # characters of a password an operator chooses (generated ones have 32)


class AccountError(RelayError):
    """A name, role or password that cannot be used; the message says why."""


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise AccountError(f"{name!r} is not a user name: 1 to 64 letters, digits and . _ @ -, starting with one")
    return name


def check_role(role: str) -> str:
    if role not in ROLES:
        raise AccountError(f"the role must be one of {', '.join(ROLES)}, not {role!r}")
    return role


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"the password must have at least {MIN_PASSWORD} characters")
    return password


def new_operator_id() -> str:
    return f"op_{secrets.token_hex(8)}"


async def create_operator(
    operators: OperatorStore, clock: Clock, name: str, role: str, password: str | None = None
) -> tuple[Operator, str] | None:
    """Make an operator (a generated password unless one is given) and store it; the operator and its
    password, or None if the name is taken."""
    check_name(name)
    check_role(role)
    password = new_password() if password is None else check_password(password)
    password_hash = await asyncio.to_thread(hash_password, password)
    operator = Operator(new_operator_id(), name, role, clock.now())
    if not await operators.add_operator(operator, password_hash):
        return None
    return operator, password


async def change_password(operators: OperatorStore, name: str, password: str | None = None) -> str | None:
    """A new password for ``name`` (generated unless given), which ends its sessions; None if no such user."""
    password = new_password() if password is None else check_password(password)
    password_hash = await asyncio.to_thread(hash_password, password)
    return password if await operators.set_operator_password(name, password_hash) else None


@functools.cache
def _unknown_user_hash() -> str:
    """Checked against when the name is unknown, so that a login takes as long whether or not it exists."""
    return hash_password(secrets.token_urlsafe(16))


async def check_login(operators: OperatorStore, name: str, password: str) -> Operator | None:
    """The operator if ``password`` is its password (argon2 off the event loop), else None."""
    found = await operators.operator_for_login(name)
    password_hash = found[1] if found else _unknown_user_hash()
    ok = await asyncio.to_thread(verify_password, password_hash, password)
    return found[0] if found and ok else None


def new_token() -> str:
    """A session token or a CSRF token: 256 random bits."""
    return secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    """What the store keeps of a session token (SHA-256: the token is random, so a fast digest is enough)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()
