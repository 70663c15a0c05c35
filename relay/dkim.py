"""DKIM signing (RFC 6376): relay's own signer (relay/dkim_sign.py), dkimpy for what it does not take.

relay/dkim_sign.py makes the signature dkimpy's ``dkim.sign`` makes, byte for byte, in a fraction of
the time (bench/dkim_sign.py, CPU per rsa-2048 signature): ~0.25 ms against ~0.6 ms for 5 KB, of which
OpenSSL's RSA is ~0.21 ms; ~0.54 ms against ~4.4 ms for 100 KB.
It takes CRLF messages whose header lines are all fields, and RSA keys; for anything else (a bare LF,
an mbox ``From`` line, ...) :meth:`Signer.sign` falls back to dkimpy, which signs or refuses as before.

dkimpy's own RSA is pure Python (~7-9 ms a signature); the same signature
through OpenSSL (the ``cryptography`` package) takes ~0.3 ms. dkimpy calls
one module-level function for the RSA step; ``_openssl_rsa_sign`` takes its
place for the keys dkimpy parses (and leaves any other input to dkimpy). dkimpy (and the DNS library it
loads, ~4 MB a process) is imported the first time it is needed: :func:`dkimpy`.

A message is signed as it leaves, with the key its From: domain has then (relay.delivery.engine signs
each message it claims, once for every recipient of that claim): a client's session does not wait for
the signature, t= is when it was sent, and a key rotated while mail waits signs that mail. A message
captured in the sandbox is signed when it is accepted instead (it is shown, never sent), and so is every
message with ``[dkim] sign_at = "acceptance"`` (the default on a machine with two acceptor processes or
more: they share the signing, where at delivery one process would do all of it). A message that already
begins with a signature by the same key (made at acceptance, or by a relay that signed there) is not
signed twice.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import functools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

from relay.dkim_sign import sign_relaxed
from relay.message import UnreadableFrom, domain_key, from_domain

log = logging.getLogger(__name__)

# Headers to sign, when present (RFC 6376 §5.4.1 recommends these).
# fmt: off
SIGNED_HEADERS = (
    b"from", b"reply-to", b"subject", b"date", b"to", b"cc", b"message-id", b"in-reply-to", b"references",
    b"mime-version", b"content-type", b"content-transfer-encoding", b"list-unsubscribe", b"list-unsubscribe-post",
)
# fmt: on

_HASHES = {"sha256": hashes.SHA256, "sha1": hashes.SHA1}


@functools.lru_cache(maxsize=64)
def _openssl_key(modulus: int, public_exponent: int, private_exponent: int, p: int, q: int) -> rsa.RSAPrivateKey:
    numbers = rsa.RSAPrivateNumbers(
        p=p,
        q=q,
        d=private_exponent,
        dmp1=rsa.rsa_crt_dmp1(private_exponent, p),
        dmq1=rsa.rsa_crt_dmq1(private_exponent, q),
        iqmp=rsa.rsa_crt_iqmp(p, q),
        public_numbers=rsa.RSAPublicNumbers(public_exponent, modulus),
    )
    return numbers.private_key()


def _openssl_rsa_sign(hash_obj: Any, private_key: Any) -> bytes:
    algorithm = _HASHES.get(getattr(hash_obj, "name", "").lower())
    if not isinstance(private_key, dict) or algorithm is None:
        return _dkimpy_rsa_sign(hash_obj, private_key)
    key = _openssl_key(
        private_key["modulus"],
        private_key["publicExponent"],
        private_key["privateExponent"],
        private_key["prime1"],
        private_key["prime2"],
    )
    return key.sign(hash_obj.digest(), padding.PKCS1v15(), utils.Prehashed(algorithm()))


def _dkimpy_rsa_sign(hash_obj: Any, private_key: Any) -> bytes:
    """dkimpy's own (pure Python) RSA step."""
    dkimpy()
    sign: Callable[[Any, Any], bytes] = _DKIMPY_RSA_SIGN[0]
    return sign(hash_obj, private_key)


_DKIMPY_RSA_SIGN: list[Callable[[Any, Any], bytes]] = []  # set by dkimpy()


@functools.cache
def dkimpy() -> ModuleType:
    """The ``dkim`` module (dkimpy), imported on first use, its RSA step done by OpenSSL."""
    import dkim

    _DKIMPY_RSA_SIGN.append(dkim.RSASSA_PKCS1_v1_5_sign)
    dkim.RSASSA_PKCS1_v1_5_sign = _openssl_rsa_sign
    module: ModuleType = dkim
    return module


@dataclasses.dataclass(frozen=True)
class DomainKey:
    domain: str
    selector: str
    private_key: bytes  # PEM


def load_key(domain: str, selector: str, path: Path) -> DomainKey:
    """Read and check a PEM RSA key. Raises ValueError with the reason."""
    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path} is not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, rsa.RSAPrivateKey) or key.key_size < 1024:
        raise ValueError(f"{path}: DKIM signing needs an RSA key of 1024 bits or more")
    if path.stat().st_mode & 0o077:
        log.warning("DKIM key %s is readable by group or others; chmod 600 it", path)
    return DomainKey(domain_key(domain), selector, pem)  # d= in A-labels, as From: is looked up


class Signer:
    """Signs messages with the key of their From: domain, when one is configured.

    ``now`` gives the signing time (the t= tag), in seconds since the epoch."""

    def __init__(self, keys: Mapping[str, DomainKey], now: Callable[[], float] = time.time) -> None:
        self.keys = {domain_key(domain): key for domain, key in keys.items()}
        self.now = now

    def key_for(self, raw: bytes) -> DomainKey | None:
        if not self.keys:
            return None
        try:
            return self.keys.get(from_domain(raw))
        except UnreadableFrom:
            return None

    def sign(self, raw: bytes) -> bytes:
        """``raw`` with a DKIM-Signature header on top, or unchanged if there is no key or it cannot be signed.

        relay's signer signs it; what that one does not take, dkimpy signs (or refuses: the message
        then goes unsigned, the reason in the log)."""
        key = self.key_for(raw)
        if key is None or signed_by(raw, key):
            return raw
        domain, selector, timestamp = key.domain.encode(), key.selector.encode(), int(self.now())
        signature = sign_relaxed(raw, domain, selector, key.private_key, SIGNED_HEADERS, timestamp)
        if signature is None:
            signature = dkimpy_sign(raw, key)
        return raw if signature is None else signature + raw


SIGNED_AT_ONCE = 4  # messages signed in one turn of the event loop
SIGNED_IN_A_THREAD = 1_000_000  # bytes: a message this big or bigger is signed in a thread (3.7 ms a MB)


async def sign_each(signer: Signer, raws: Sequence[bytes]) -> list[bytes | None]:
    """Each of ``raws`` as :meth:`Signer.sign` leaves it, or None where signing failed unexpectedly (logged).

    A signature is ~0.3 ms of CPU for 5 KB: :data:`SIGNED_AT_ONCE` are signed a turn of the event loop, so
    that a claim of a thousand messages lets the loop's other work go between; on the loop's thread rather
    than in another, whose hand-overs cost more CPU than the RSA step it would take off the loop
    (bench/RESULTS.md, twenty-fifth session). A big message goes to a thread (25 MB: 121 ms of CPU, of
    which the loop then waits at most ~37 ms at a time: hashing and RSA let go of the GIL)."""
    signed: list[bytes | None] = []
    in_this_turn = 0
    for raw in raws:
        if len(raw) >= SIGNED_IN_A_THREAD:
            signed.append(await asyncio.to_thread(_sign_or_none, signer, raw))
            in_this_turn = 0
            continue
        if in_this_turn == SIGNED_AT_ONCE:
            await asyncio.sleep(0)
            in_this_turn = 0
        signed.append(_sign_or_none(signer, raw))
        in_this_turn += 1
    return signed


def _sign_or_none(signer: Signer, raw: bytes) -> bytes | None:
    try:
        return signer.sign(raw)
    except Exception:
        log.exception("could not DKIM-sign a message")
        return None


def signed_by(raw: bytes, key: DomainKey) -> bool:
    """Whether the first field of ``raw`` is a DKIM-Signature with ``key``'s d= and s= (relay's own, made
    when it was accepted: relay puts its signature on top)."""
    if not raw[:15].lower() == b"dkim-signature:":
        return False
    end = 15
    while (end := raw.find(b"\r\n", end)) != -1 and raw[end + 2 : end + 3] in (b" ", b"\t"):
        end += 2
    field = raw[15 : None if end == -1 else end].replace(b"\r\n", b"")
    tags = {}
    for tag in field.split(b";"):
        name, equals, value = tag.partition(b"=")
        if equals:
            tags[name.strip()] = b"".join(value.split())
    return tags.get(b"d", b"").lower() == key.domain.encode() and tags.get(b"s") == key.selector.encode()


def dkimpy_sign(raw: bytes, key: DomainKey) -> bytes | None:
    """The DKIM-Signature field dkimpy makes for ``raw`` (its t= from the system clock, as dkimpy reads
    it); None if dkimpy cannot sign it."""
    dkim = dkimpy()
    try:
        signature: bytes = dkim.sign(
            raw,
            key.selector.encode(),
            key.domain.encode(),
            key.private_key,
            canonicalize=(b"relaxed", b"relaxed"),
            include_headers=list(SIGNED_HEADERS),
            linesep=b"\r\n",
        )
    except dkim.DKIMException as exc:
        # A message dkimpy cannot parse still goes, unsigned, with the reason in the log.
        log.warning("could not DKIM-sign a message from %s: %s", key.domain, exc)
        return None
    return signature


def public_key_record(pem: bytes) -> str:
    """The TXT record value that publishes a key: ``v=DKIM1; k=rsa; p=...``."""
    key = serialization.load_pem_private_key(pem, password=None)
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"
