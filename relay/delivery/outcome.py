"""Permanent or temporary: the one place an SMTP reply becomes a delivery outcome. Pure.

RFC 5321 §4.2.1: 2yz is success, 4yz a transient failure, 5yz a permanent one.
Anything that is not a reply (a refused connection, a timeout) is transient.
"""

from __future__ import annotations

import dataclasses
from enum import Enum

from relay.bounces.classify import Phase


class Verdict(Enum):
    DELIVERED = "delivered"
    DEFERRED = "deferred"
    BOUNCED = "bounced"


@dataclasses.dataclass(frozen=True)
class Reply:
    """What the receiving side said about one recipient (code None: no SMTP reply at all), and to
    which command (``phase``): only a refusal at RCPT can say the address is dead."""

    code: int | None
    text: str
    phase: Phase = dataclasses.field(default=Phase.UNKNOWN, compare=False)

    def __str__(self) -> str:
        return f"{self.code} {self.text}" if self.code is not None else self.text


def classify(reply: Reply) -> Verdict:
    if reply.code is None:
        return Verdict.DEFERRED
    if 200 <= reply.code < 300:
        return Verdict.DELIVERED
    if 500 <= reply.code < 600:
        return Verdict.BOUNCED
    return Verdict.DEFERRED
