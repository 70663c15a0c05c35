"""The suppression list's rules: how addresses compare, when bounces suppress. Pure.

Addresses are compared case-insensitively, domain and local part alike (RFC 5321
lets a server treat local parts case-sensitively; no public mailbox provider does,
and a list that told ``Bob@x`` from ``bob@x`` would let the same dead address be
mailed again). Internationalised domains are compared in their ASCII (IDNA) form.

Suppression is global (one list for the whole relay); a per-API-key or per-domain
scope can be added as a column without changing these rules.
"""

from __future__ import annotations

import dataclasses

from relay.bounces.classify import Classification, Kind
from relay.message import address_fault, domain_name_fault, normalize_address, split_address


def allowlist_keys(address: str) -> tuple[str, str]:
    """The two allowlist entries that cover ``address``: itself and its domain."""
    normal = normalize_address(address)
    return normal, normal.rpartition("@")[2]


@dataclasses.dataclass(frozen=True)
class SuppressionPolicy:
    """Which bounces suppress, and for how long."""

    soft_bounce_limit: int = 3  # soft bounces within the window that suppress temporarily (0: never)
    soft_bounce_window: float = 7 * 86400.0
    soft_bounce_suppression: float = 7 * 86400.0


# Why an address is suppressed: the three reasons :func:`decide` gives, and an operator's.
REASONS = ("hard_bounce", "complaint", "soft_bounces", "manual")
# Where a bounce record comes from: a refusal during delivery, a returned report (RFC 3464), a complaint (ARF).
BOUNCE_SOURCES = ("smtp", "dsn", "arf")


@dataclasses.dataclass(frozen=True)
class Decision:
    reason: str  # hard_bounce, complaint, soft_bounces
    expires_at: float | None  # None: until removed


def decide(
    classification: Classification, recent_soft_bounces: int, now: float, policy: SuppressionPolicy
) -> Decision | None:
    """Whether a bounce suppresses its address. ``recent_soft_bounces`` counts this one."""
    if classification.kind is Kind.HARD:
        return Decision("hard_bounce", None)
    if classification.kind is Kind.COMPLAINT:
        return Decision("complaint", None)
    if (
        classification.kind is Kind.SOFT
        and policy.soft_bounce_limit
        and (recent_soft_bounces >= policy.soft_bounce_limit)
    ):
        return Decision("soft_bounces", now + policy.soft_bounce_suppression)
    return None


def entry_fault(entry: str) -> str | None:
    """Why ``entry`` cannot be on the allowlist, or None: an address or a domain as mail goes to, by the rules
    of submission (a NUL or a control character was kept)."""
    if "@" in entry:
        return "is not an email address" if split_address(entry) is None else address_fault(entry)
    return domain_name_fault(entry)
