"""Authenticated return paths (VERP): which message and recipient a bounce is about. Pure.

Each recipient's mail goes out with its own envelope sender,
``b+<message id>.<recipient id>.<tag>@<bounce domain>``. A bounce comes back to
that address, so the address alone says what bounced, whatever the bounce's
format. The tag is a truncated HMAC-SHA256 of the ids under a secret only this
relay knows: nobody can make up a return path that suppresses someone else's
address. Everything is lower case, because some receivers lower-case the
addresses they bounce to. Mail from the null sender (``<>``) keeps its null
return path: it is never rewritten.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Sequence
from pathlib import Path

PREFIX = "b+"
TAG_LENGTH = 12  # base32 characters: 60 bits
_TOKEN = re.compile(r"b\+([0-9a-z]{10,40})\.(\d{1,19})\.([a-z2-7]+)")


def is_null_sender(sender: str) -> bool:
    """The null reverse-path (``MAIL FROM:<>``: DSNs, auto-replies), stored as "" or as "<>"."""
    return sender.strip() in ("", "<>")


@dataclasses.dataclass(frozen=True)
class ReturnPath:
    """What an authentic return path names."""

    message_id: str
    recipient_id: int


class Verp:
    def __init__(self, secret: bytes, domains: Sequence[str]) -> None:
        if len(secret) < 16:
            raise ValueError("a VERP secret needs at least 16 bytes")
        if not domains:
            raise ValueError("VERP needs a bounce domain")
        self._secret = secret
        self.domains = tuple(d.lower().rstrip(".") for d in domains)

    def _tag(self, message_id: str, recipient_id: int) -> str:
        mac = hmac.new(self._secret, f"{message_id}.{recipient_id}".encode(), hashlib.sha256).digest()
        return base64.b32encode(mac).decode("ascii").lower()[:TAG_LENGTH]

    def domain_for(self, sender: str) -> str:
        """The bounce domain aligned with the sender's domain if there is one (DMARC likes
        ``bounces.example.com`` for mail from ``example.com``), else the first."""
        sender_domain = sender.rpartition("@")[2].lower().rstrip(".")
        for domain in self.domains:
            if sender_domain and (domain == sender_domain or domain.endswith("." + sender_domain)):
                return domain
        return self.domains[0]

    def return_path(self, sender: str, message_id: str, recipient_id: int) -> str:
        """The recipient's own return path. Never for the null sender: mail sent with ``MAIL FROM:<>`` must
        keep it, so that nothing answers it and no loop starts (RFC 5321 §4.5.5)."""
        if is_null_sender(sender):
            raise ValueError("the null sender keeps its null return path")
        domain = self.domain_for(sender)
        return f"{PREFIX}{message_id.lower()}.{recipient_id}.{self._tag(message_id.lower(), recipient_id)}@{domain}"

    def is_bounce_address(self, address: str) -> bool:
        return address.rpartition("@")[2].lower().rstrip(".") in self.domains

    def verify(self, address: str) -> ReturnPath | None:
        """The message and recipient an authentic return path names; None if it is not one of ours."""
        local, _, domain = address.strip("<>").rpartition("@")
        if domain.lower().rstrip(".") not in self.domains:
            return None
        match = _TOKEN.fullmatch(local.lower())
        if match is None:
            return None
        message_id, recipient_id, tag = match.group(1), int(match.group(2)), match.group(3)
        if not hmac.compare_digest(tag, self._tag(message_id, recipient_id)):
            return None
        return ReturnPath(message_id, recipient_id)


def load_secret(path: Path) -> bytes:
    """The VERP secret kept in the data dir (mode 0600), made on first use."""
    try:
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        pass
    secret = secrets.token_bytes(32)
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secret.hex() + "\n")
    return secret
