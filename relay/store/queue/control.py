"""Operator control of the queue in SQL: retry now, purge, bounce, suspend and resume a domain, cancel, resend."""

from __future__ import annotations

from typing import Any

from relay.events import EventKind
from relay.message import domain_key
from relay.store import suppressions
from relay.store.bodies import has_body
from relay.store.dialect import Connection, notify
from relay.store.queue.lifecycle import _DUE_SQL, NEW_WORK, _event
from relay.store.queue.records import BodyDeleted, Resent, Selection


def cancel_message(conn: Connection, message_id: str, now: float) -> list[str]:
    """Cancel every recipient still waiting (queued or deferred); returns their addresses."""
    rows = conn.execute(
        "UPDATE recipients SET state = 'cancelled', next_attempt_at = NULL, updated_at = ?"
        " WHERE message_id = ? AND state IN ('queued', 'scheduled', 'deferred') RETURNING id, address",
        (now, message_id),
    ).fetchall()
    for rid, address in rows:
        _event(conn, now, EventKind.CANCELLED, message_id, rid, address, None, "cancelled through the API")
    return [address for _, address in rows]


def _where(selection: Selection) -> tuple[str, list[Any]]:
    """A WHERE clause over ``recipients`` for the selected recipients, and its parameters."""
    clauses = ["TRUE"]
    params: list[Any] = []
    for value, clause in (
        (selection.message_id, "message_id = ?"),
        (selection.domain and domain_key(selection.domain), "domain = ?"),
        (selection.recipient, "address = ?"),
        (selection.sender, "message_id IN (SELECT id FROM messages WHERE sender = ?)"),
        (selection.created_before, "message_id IN (SELECT id FROM messages WHERE created_at < ?)"),
    ):
        if value is not None:
            clauses.append(clause)
            params.append(value)
    return " AND ".join(clauses), params


def retry_now(conn: Connection, now: float, selection: Selection) -> int:
    """Make the selected waiting recipients due now."""
    notify(conn, NEW_WORK)
    where, params = _where(selection)
    return conn.execute(
        f"UPDATE recipients SET next_attempt_at = ?, updated_at = ? WHERE {_DUE_SQL} AND {where}",
        [now, now, *params],
    ).rowcount


def purge(conn: Connection, now: float, selection: Selection) -> int:
    """Take the selected waiting recipients out of the queue (cancelled, no bounce); like ``postsuper -d``."""
    where, params = _where(selection)
    rows = conn.execute(
        "UPDATE recipients SET state = 'cancelled', next_attempt_at = NULL, updated_at = ?"
        f" WHERE {_DUE_SQL} AND {where} RETURNING id, message_id, address",
        [now, *params],
    ).fetchall()
    for rid, mid, address in rows:
        _event(conn, now, EventKind.CANCELLED, mid, rid, address, None, "purged from the queue by the operator")
    return len(rows)


def suspend_domain(conn: Connection, domain: str, until: float, reason: str) -> None:
    """Hold ``domain`` until ``until``; a suspension already there is moved, and so are the recipients the
    claims put off until its end (relay.store.queue.lifecycle.claim_due)."""
    key = domain_key(domain)
    _move_put_off(conn, key, until)
    conn.execute(
        "INSERT INTO suspended_domains (domain, until, reason) VALUES (?, ?, ?)"
        " ON CONFLICT (domain) DO UPDATE SET until = excluded.until, reason = excluded.reason",
        (key, until, reason),
    )


def resume_domain(conn: Connection, domain: str, now: float) -> bool:
    """End a suspension: the recipients the claims put off until its end are due now."""
    key = domain_key(domain)
    _move_put_off(conn, key, now)
    return conn.execute("DELETE FROM suspended_domains WHERE domain = ?", (key,)).rowcount == 1


def _move_put_off(conn: Connection, domain: str, to: float) -> None:
    """The waiting recipients of ``domain`` due at its suspension's end (the ones the claims put off) due at ``to``."""
    conn.execute(
        "UPDATE recipients SET next_attempt_at = ? WHERE state IN ('queued', 'scheduled', 'deferred') AND domain = ?"
        " AND next_attempt_at = (SELECT until FROM suspended_domains WHERE domain = ?)",
        (to, domain, domain),
    )


def admin_bounce(conn: Connection, now: float, reason: str, selection: Selection) -> int:
    """Give up on the selected waiting recipients as bounced by the operator."""
    where, params = _where(selection)
    rows = conn.execute(
        "UPDATE recipients SET state = 'bounced', next_attempt_at = NULL, last_code = NULL, last_response = ?,"
        f" updated_at = ? WHERE {_DUE_SQL} AND {where} RETURNING id, message_id, address",
        [f"5.0.0 bounced by the operator: {reason}", now, *params],
    ).fetchall()
    for rid, mid, address in rows:
        _event(conn, now, EventKind.BOUNCED, mid, rid, address, None, f"bounced by the operator: {reason}")
    return len(rows)


_RESENDABLE = ("bounced", "failed")


def resend(conn: Connection, message_id: str, now: float) -> list[Resent] | None:
    """Queue a message's bounced and failed recipients again, due now, unless suppressed now (those keep
    their state). None: no such message. Raises BodyDeleted when retention has removed the body."""
    if conn.execute("SELECT 1 FROM messages WHERE id = ?", (message_id,)).fetchone() is None:
        return None
    rows = conn.execute(
        "SELECT id, address, state FROM recipients WHERE message_id = ? ORDER BY id", (message_id,)
    ).fetchall()
    targets = [address for _, address, state in rows if state in _RESENDABLE]
    if targets and not has_body(conn, message_id):
        raise BodyDeleted(f"the body of message {message_id} has been deleted ([retention] bodies)")
    found = suppressions.suppressed(conn, targets, now)
    out = []
    for rid, address, state in rows:
        if state not in _RESENDABLE:
            out.append(Resent(address, state, "unchanged"))
        elif address in found:
            out.append(Resent(address, state, "suppressed", f"suppressed ({found[address].reason})"))
        else:
            conn.execute(
                "UPDATE recipients SET state = 'queued', next_attempt_at = ?, updated_at = ? WHERE id = ?",
                (now, now, rid),
            )
            _event(
                conn,
                now,
                EventKind.QUEUED,
                message_id,
                rid,
                address,
                None,
                "resent through the API",
                {"resent": True, "previous_status": state},
            )
            out.append(Resent(address, state, "queued"))
    return out
