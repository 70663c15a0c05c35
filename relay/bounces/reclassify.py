"""Reading a stored bounce again with the classifier in force now. Pure.

Suppressions made before the hard/not-hard rule was narrowed (issue 18) may
hold live addresses: a disabled account, a refusal after the data, a 4xx
that said "user unknown". ``reread`` gives the classification a stored
bounce would get today: a returned report is parsed again (its recipient's
entry), a reply during delivery is classified again from its code, status,
text and SMTP phase (stored since migration 11; older rows count as unknown).
"""

from __future__ import annotations

import dataclasses

from relay.bounces.classify import Classification, Kind, Phase, classify
from relay.bounces.parse import parse
from relay.message import normalize_address


@dataclasses.dataclass(frozen=True)
class StoredBounce:
    """What relay kept of a bounce (relay.store.suppressions.Bounce has these fields)."""

    recipient: str  # normalised
    kind: str
    reason: str
    code: int | None
    status: str | None
    diagnostic: str
    remote_mta: str | None
    source: str  # smtp, dsn or arf
    report: str | None
    phase: str | None = None  # stored for delivery-time refusals since migration 11; None: unknown


PHASES = frozenset(p.value for p in Phase)


def reread(bounce: StoredBounce) -> Classification:
    """The classification ``bounce`` gets now."""
    if bounce.report:
        parsed = parse(bounce.report.encode("utf-8", "replace"))
        mine = [r for r in parsed.reports if r.recipient and normalize_address(r.recipient) == bounce.recipient]
        if not mine and len(parsed.reports) == 1:  # the report matched by its return path, not by its text
            mine = parsed.reports
        if mine:
            return Classification(mine[0].classification, mine[0].reason, mine[0].status)
    if bounce.kind == Kind.COMPLAINT.value:
        return Classification(Kind.COMPLAINT, bounce.reason, bounce.status)
    phase = Phase(bounce.phase) if bounce.phase in PHASES else Phase.UNKNOWN
    return classify(bounce.code, bounce.status, bounce.diagnostic, bounce.remote_mta, phase)


def wrongly_hard(bounce: StoredBounce) -> Classification | None:
    """The new reading of a bounce stored as ``hard`` that is not hard now, else None."""
    if bounce.kind != Kind.HARD.value:
        return None
    now = reread(bounce)
    return None if now.kind is Kind.HARD else now
