"""Lifting suppressions that the hard/not-hard rule in force now would not have made, in SQL.

``relay suppressions reclassify`` runs this: every permanent ``hard_bounce``
suppression is checked by reading its bounce again (relay.bounces.reclassify);
a dry run lists what would be lifted, ``apply`` lifts it: the suppression is
deleted, the bounce row takes the new kind and reason, and an ``unsuppressed``
event records the change (the old reading in its details).
"""

from __future__ import annotations

import dataclasses

from relay.bounces.reclassify import StoredBounce, wrongly_hard
from relay.events import EventKind
from relay.store.dialect import Connection
from relay.store.queue.lifecycle import _event


@dataclasses.dataclass(frozen=True)
class Lift:
    address: str
    bounce_id: int
    message_id: str | None
    was: str  # "hard/user_unknown": the reading that suppressed it
    kind: str  # the reading now
    reason: str
    status: str | None


@dataclasses.dataclass(frozen=True)
class Reclassified:
    checked: int  # permanent hard_bounce suppressions with their bounce on record
    lifts: list[Lift]
    applied: bool


def reclassify(conn: Connection, now: float, apply: bool) -> Reclassified:
    """Check every permanent hard-bounce suppression against the rule in force; lift the wrong ones
    when ``apply``. Reads one bounce (with its report) at a time."""
    candidates = conn.execute(
        "SELECT s.address, s.bounce_id, s.message_id FROM suppressions s JOIN bounces b ON b.id = s.bounce_id"
        " WHERE s.reason = 'hard_bounce' AND s.expires_at IS NULL ORDER BY s.address"
    ).fetchall()
    lifts = []
    for address, bounce_id, message_id in candidates:
        row = conn.execute(
            "SELECT recipient, kind, reason, code, status, diagnostic, remote_mta, source, report, phase FROM bounces"
            " WHERE id = ?",
            (bounce_id,),
        ).fetchone()
        stored = StoredBounce(*row)
        now_reading = wrongly_hard(stored)
        if now_reading is None:
            continue
        lift = Lift(
            address,
            bounce_id,
            message_id,
            f"{stored.kind}/{stored.reason}",
            now_reading.kind.value,
            now_reading.reason,
            now_reading.status,
        )
        lifts.append(lift)
        if apply:
            _lift(conn, lift, stored, now)
    return Reclassified(len(candidates), lifts, apply)


def _lift(conn: Connection, lift: Lift, stored: StoredBounce, now: float) -> None:
    conn.execute(
        "DELETE FROM suppressions WHERE address = ? AND bounce_id = ? AND reason = 'hard_bounce'"
        " AND expires_at IS NULL",
        (lift.address, lift.bounce_id),
    )
    conn.execute(
        "UPDATE bounces SET kind = ?, reason = ?, status = coalesce(?, status) WHERE id = ?",
        (lift.kind, lift.reason, lift.status, lift.bounce_id),
    )
    recipient_id = None
    if lift.message_id is not None:
        found = conn.execute(
            "SELECT id FROM recipients WHERE message_id = ? AND lower(address) = ? LIMIT 1",
            (lift.message_id, lift.address),
        ).fetchone()
        recipient_id = found[0] if found else None
    detail = f"suppression lifted: {lift.was} is now {lift.kind}/{lift.reason} (relay suppressions reclassify)"
    _event(
        conn,
        now,
        EventKind.UNSUPPRESSED,
        lift.message_id or "",
        recipient_id,
        lift.address,
        stored.code,
        detail,
        {
            "bounce_id": lift.bounce_id,
            "was": lift.was,
            "classification": lift.kind,
            "reason": lift.reason,
            "enhanced_status": lift.status,
            "source": stored.source,
        },
    )
