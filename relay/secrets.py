"""Secrets at rest: the store's key-encryption key, and sealing what the store keeps secret with it.

DKIM private keys and the VERP secret live in the store (so every node sharing a
database signs with the same keys), encrypted with AES-256-GCM under a key kept
in a file: ``[store] secret_key_file``, by default ``store.key`` in data_dir,
made 0600 on first start. Every node must hold a copy of the same file (copy it
once, like a TLS key); losing it loses the stored keys. A file that group or
others can read is refused.

A sealed value is a version byte, a 12-byte nonce, then the ciphertext and its
tag. The associated data names the row it belongs to (``dkim_keys:<domain
id>:<selector>``, ``secrets:<name>``), so a value moved to another row does not
open. The first start stores a known value (``key_check``); every later start
opens it, so a node given the wrong key file stops at once with a clear reason
instead of failing to sign.
"""

from __future__ import annotations

import os
import secrets as random_source
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from relay.errors import RelayError

if TYPE_CHECKING:
    from relay.store.protocols import SecretStore

VERSION = b"\x01"
KEY_BYTES = 32
NONCE_BYTES = 12
KEY_CHECK = "key_check"  # a secrets row holding a known value: opening it proves the key file is the right one
_KNOWN = b"relay store key check"


class SecretsError(RelayError, ValueError):
    """The key file cannot be used, or a sealed value does not open with it (another key, or tampered)."""


def dkim_context(domain_id: str, selector: str) -> str:
    return f"dkim_keys:{domain_id}:{selector}"


def secret_context(name: str) -> str:
    return f"secrets:{name}"


class Sealer:
    """Seals and opens values with the key-encryption key; ``path`` names the file in errors (never the key)."""

    def __init__(self, key: bytes, path: Path) -> None:
        if len(key) != KEY_BYTES:
            raise SecretsError(f"{path}: a store key has {KEY_BYTES} bytes")
        self._aead = AESGCM(key)
        self.path = path

    def __repr__(self) -> str:
        return f"Sealer({str(self.path)!r})"

    def seal(self, plaintext: bytes, context: str) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return VERSION + nonce + self._aead.encrypt(nonce, plaintext, context.encode())

    def open(self, sealed: bytes, context: str) -> bytes:
        if sealed[:1] != VERSION or len(sealed) < 1 + NONCE_BYTES + 16:
            raise SecretsError(f"{context}: not a sealed value this relay knows")
        nonce, ciphertext = sealed[1 : 1 + NONCE_BYTES], sealed[1 + NONCE_BYTES :]
        try:
            return self._aead.decrypt(nonce, ciphertext, context.encode())
        except InvalidTag:
            raise SecretsError(
                f"the store key file {self.path} is not the key the store's secrets were sealed with ({context}"
                " does not open): every node sharing the database needs a copy of the same file"
            ) from None


def load_key_file(path: Path, create: bool) -> Sealer:
    """The sealer for the key in ``path``, made there first (0600) when missing and ``create``.
    SecretsError when the file is missing, readable by group or others, or not a key."""
    if create:
        _create_key_file(path)
    try:
        mode = path.stat().st_mode
        text = path.read_text().strip()
    except FileNotFoundError:
        raise SecretsError(
            f"the store key file {path} ([store] secret_key_file) does not exist: copy it from the node that made it"
        ) from None
    except OSError as exc:
        raise SecretsError(f"cannot read the store key file {path}: {exc.strerror}") from None
    if mode & 0o077:
        raise SecretsError(f"the store key file {path} is readable by group or others: chmod 600 it")
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != KEY_BYTES:
        raise SecretsError(f"{path} is not a store key file ({KEY_BYTES * 2} hexadecimal digits)")
    return Sealer(key, path)


def _create_key_file(path: Path) -> None:
    """A new random key in ``path`` unless there is one. Written to a temporary name and linked into place,
    so processes starting at once end with one key and never read a half-written file."""
    if path.exists():
        return
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(temporary, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(random_source.token_bytes(KEY_BYTES).hex() + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass  # another process made it first: its key is the key
    except OSError as exc:
        raise SecretsError(f"cannot create the store key file {path}: {exc.strerror}") from None
    finally:
        temporary.unlink(missing_ok=True)


async def reseal(store: SecretStore, old: Sealer, new: Sealer) -> int:
    """Seal every value the store keeps again, under ``new`` instead of ``old``, in one transaction: how
    many. SecretsError (nothing changed) if one does not open with ``old``."""
    changes = []
    for value in await store.sealed_values():
        context = dkim_context(value.domain_id, value.name) if value.is_dkim_key else secret_context(value.name)
        changes.append((value, new.seal(old.open(value.value, context), context)))
    return await store.replace_sealed(changes)


def make_key_file(path: Path) -> Sealer:
    """A new key in ``path``, which must not exist yet (SecretsError)."""
    if path.exists() or path.is_symlink():
        raise SecretsError(f"{path} exists already: name a new file for the new key")
    return load_key_file(path, create=True)


class Keyring:
    """The sealer and the store's secrets table: checked once, then shared secrets made or read."""

    def __init__(self, sealer: Sealer, store: SecretStore) -> None:
        self.sealer = sealer
        self.store = store
        self._checked = False

    async def check(self) -> None:
        """Store the known value on the first start; open it on every later one (SecretsError: wrong key)."""
        if not self._checked:
            await self.shared(KEY_CHECK, lambda: _KNOWN)
            self._checked = True

    async def shared(self, name: str, initial: Callable[[], bytes]) -> bytes:
        """The secret ``name``; when the store has none, ``initial()`` is stored unless another node stored
        one first (then that one is the secret): nodes starting at once end with the same value."""
        context = secret_context(name)
        sealed = await self.store.secret(name)
        if sealed is None:
            sealed = await self.store.add_secret(name, self.sealer.seal(initial(), context))
        return self.sealer.open(sealed, context)
