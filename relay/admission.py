"""Whether a new connection is let in: at most so many from one client address, and so many in all.

Each door (SMTP submission, the HTTP API, the inbound port for returned mail) counts its open connections
in this process with one :class:`ConnectionCounts`. The cap per address keeps one client from taking the
door for itself (Postfix's anvil: 50 by default); the cap in all keeps many addresses together from
taking every file descriptor and the memory of as many sessions (Postfix: 100 smtpd processes, Exim:
``smtp_accept_max``). A refused connection is told so (421, or 503 over HTTP) and closed before it costs
a session. Connections from a reserved address (SMTP's trusted networks, as Exim's
``smtp_reserve_hosts``) count, but are never refused for the total: the applications relay serves get
in while strangers fill the door.
"""

from __future__ import annotations

from collections import Counter
from enum import Enum


class Refusal(Enum):
    ADDRESS = "too many connections from this address"
    TOTAL = "too many connections"


class ConnectionCounts:
    """The open connections of one door in this process."""

    def __init__(self, per_address: int, total: int) -> None:
        self.per_address = per_address
        self.total = total
        self.by_address: Counter[str] = Counter()
        self.open = 0

    def admit(self, address: str, reserved: bool = False) -> Refusal | None:
        """Count a new connection from ``address`` and return None, or say why it is refused (not counted)."""
        if self.by_address[address] >= self.per_address:
            return Refusal.ADDRESS
        if self.open >= self.total and not reserved:
            return Refusal.TOTAL
        self.by_address[address] += 1
        self.open += 1
        return None

    def release(self, address: str) -> None:
        """A connection ``admit`` counted has closed."""
        self.open -= 1
        self.by_address[address] -= 1
        if self.by_address[address] <= 0:
            del self.by_address[address]
