"""Webhook endpoints and their durable delivery queue in SQL.

A trigger on ``events`` inserts one ``webhook_deliveries`` row per matching
enabled endpoint in the same transaction as the event; the sender leases due
rows by pushing their due time forward (a crash leaves them due again later),
and records every attempt.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

from relay.clock import Clock
from relay.store.dialect import PLAN_EACH_TIME, Connection, SqlDatabase, is_postgres
from relay.store.events import Event, events_by_id


@dataclasses.dataclass(frozen=True)
class Webhook:
    id: str
    url: str
    events: list[str]  # [] = every event type
    enabled: bool
    description: str
    secret: str
    created_at: float
    updated_at: float
    failing_since: float | None = None
    disabled_reason: str | None = None


_COLUMNS = "id, url, events, enabled, description, secret, created_at, updated_at, failing_since, disabled_reason"


def _webhook(row: tuple[Any, ...]) -> Webhook:
    hid, url, events, enabled, *rest = row
    return Webhook(hid, url, json.loads(events), bool(enabled), *rest)


def create(conn: Connection, hook: Webhook) -> None:
    conn.execute(
        f"INSERT INTO webhooks ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            hook.id,
            hook.url,
            json.dumps(hook.events),
            int(hook.enabled),
            hook.description,
            hook.secret,
            hook.created_at,
            hook.updated_at,
            hook.failing_since,
            hook.disabled_reason,
        ),
    )


def get(conn: Connection, hook_id: str) -> Webhook | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM webhooks WHERE id = ?", (hook_id,)).fetchone()
    return _webhook(row) if row else None


def list_all(conn: Connection) -> list[Webhook]:
    return [_webhook(r) for r in conn.execute(f"SELECT {_COLUMNS} FROM webhooks ORDER BY created_at, id")]


def update(conn: Connection, hook_id: str, changes: dict[str, Any], now: float) -> Webhook | None:
    """Change url, events, enabled, description or secret. Enabling again clears the failure record."""
    allowed = {"url", "events", "enabled", "description", "secret"}
    sets, params = ["updated_at = ?"], list[object]([now])
    for key, value in changes.items():
        assert key in allowed, key
        sets.append(f"{key} = ?")
        params.append(json.dumps(value) if key == "events" else int(value) if key == "enabled" else value)
    if changes.get("enabled"):
        sets.append("failing_since = NULL, disabled_reason = NULL")
    cur = conn.execute(f"UPDATE webhooks SET {', '.join(sets)} WHERE id = ?", [*params, hook_id])
    return get(conn, hook_id) if cur.rowcount else None


def delete(conn: Connection, hook_id: str) -> bool:
    return conn.execute("DELETE FROM webhooks WHERE id = ?", (hook_id,)).rowcount > 0


# -- the delivery queue ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DueDelivery:
    id: int
    webhook_id: str
    event_id: int
    attempts: int
    payload: bytes | None  # made at the first attempt that failed, the same for every retry after it
    event: Event | None = None  # the event, loaded with the claim while there is no payload (None: pruned)


# An endpoint's first ``limit`` due deliveries (parameters: the endpoint's id, now, limit), walking the
# index webhook_deliveries_due in due order.
DUE_FOR_ENDPOINT = (
    PLAN_EACH_TIME + "SELECT d.id, d.webhook_id, d.event_id, d.attempts, d.payload FROM webhook_deliveries d"
    " JOIN webhooks w ON w.id = d.webhook_id"
    " WHERE d.webhook_id = ? AND d.next_attempt_at IS NOT NULL AND d.next_attempt_at <= ? AND w.enabled = 1"
    # In order per message: not while an earlier event of the same message waits for this endpoint.
    " AND NOT EXISTS (SELECT 1 FROM webhook_deliveries e WHERE e.webhook_id = d.webhook_id"
    " AND e.message_id = d.message_id AND e.event_id < d.event_id AND e.next_attempt_at IS NOT NULL)"
    " ORDER BY d.next_attempt_at LIMIT ?"
)


def claim_due(conn: Connection, now: float, limit: int, lease: float, webhook_id: str) -> list[DueDelivery]:
    """The endpoint's due deliveries (if it is enabled), oldest first, at most one per message (the
    earliest waiting: events of a message arrive in order); each is pushed ``lease`` seconds ahead. A
    delivery without a payload comes with its event."""
    rows = conn.execute(
        DUE_FOR_ENDPOINT + (" FOR UPDATE OF d SKIP LOCKED" if is_postgres(conn) else ""),
        # Several nodes: each locks what it takes and skips what another holds (see queue claim_due).
        (webhook_id, now, limit),
    ).fetchall()
    conn.executemany(
        "UPDATE webhook_deliveries SET next_attempt_at = ?, updated_at = ? WHERE id = ?",
        [(now + lease, now, row[0]) for row in rows],
    )
    events = events_by_id(conn, [row[2] for row in rows if row[4] is None])
    return [DueDelivery(r[0], r[1], r[2], r[3], r[4], events.get(r[2]) if r[4] is None else None) for r in rows]


@dataclasses.dataclass(frozen=True)
class AttemptOutcome:
    delivery_id: int | None  # None: a test send
    webhook_id: str
    event_id: int | None
    status: int | None
    error: str | None
    latency_ms: float
    next_attempt_at: float | None  # None: no retry (delivered, or given up)
    payload: bytes | None = None  # what was sent: kept for the retries (when there will be one)

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def record_attempts(
    conn: Connection, outcomes: Sequence[AttemptOutcome], now: float, disable_after: float
) -> dict[str, str]:
    """Log the attempts, move their deliveries on, keep the endpoints' health. Returns why an endpoint
    was disabled, by id, for those these attempts disabled."""
    conn.executemany(
        "INSERT INTO webhook_attempts (webhook_id, delivery_id, event_id, at, status, error, latency_ms)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        [(o.webhook_id, o.delivery_id, o.event_id, now, o.status, o.error, o.latency_ms) for o in outcomes],
    )
    moved = [o for o in outcomes if o.delivery_id is not None]
    conn.executemany(
        "UPDATE webhook_deliveries SET state = ?, attempts = attempts + 1, next_attempt_at = ?, last_status = ?,"
        " last_error = ?, updated_at = ? WHERE id = ?",
        [
            (_state(o), o.next_attempt_at if _state(o) == "pending" else None, o.status, o.error, now, o.delivery_id)
            for o in moved
        ],
    )
    conn.executemany(
        "UPDATE webhook_deliveries SET payload = ? WHERE id = ? AND payload IS NULL",
        [(o.payload, o.delivery_id) for o in moved if _state(o) == "pending" and o.payload is not None],
    )
    disabled: dict[str, str] = {}
    for hook_id in sorted({o.webhook_id for o in outcomes}):  # in key order: nodes never wait on each other in a cycle
        mine = [o for o in outcomes if o.webhook_id == hook_id]
        reason = _endpoint_health(conn, hook_id, next((o for o in mine if o.ok), mine[-1]), now, disable_after)
        if reason is not None:
            disabled[hook_id] = reason
    return disabled


def _state(o: AttemptOutcome) -> str:
    return "delivered" if o.ok else ("pending" if o.next_attempt_at is not None else "failed")


def _endpoint_health(conn: Connection, hook_id: str, o: AttemptOutcome, now: float, disable_after: float) -> str | None:
    """An endpoint is failing from a failed attempt until one succeeds (``o``: a success among the
    attempts recorded together, else the last of them); failing for ``disable_after``, it is disabled
    (the reason returned)."""
    if o.ok:
        conn.execute("UPDATE webhooks SET failing_since = NULL WHERE id = ? AND failing_since IS NOT NULL", (hook_id,))
        return None
    conn.execute("UPDATE webhooks SET failing_since = ? WHERE id = ? AND failing_since IS NULL", (now, hook_id))
    since = conn.execute("SELECT failing_since FROM webhooks WHERE id = ? AND enabled = 1", (hook_id,)).fetchone()
    if since is None or now - since[0] < disable_after:
        return None
    reason = f"disabled after failing for {int((now - since[0]) // 3600)}h; last error: {o.error or o.status}"
    conn.execute("UPDATE webhooks SET enabled = 0, disabled_reason = ? WHERE id = ?", (reason[:500], hook_id))
    return reason


@dataclasses.dataclass(frozen=True)
class AttemptRecord:
    id: int
    delivery_id: int | None
    event_id: int | None
    at: float
    status: int | None
    error: str | None
    latency_ms: float


def recent_attempts(conn: Connection, hook_id: str, limit: int, before: int | None = None) -> list[AttemptRecord]:
    rows = conn.execute(
        "SELECT id, delivery_id, event_id, at, status, error, latency_ms FROM webhook_attempts"
        " WHERE webhook_id = ? AND id < ? ORDER BY id DESC LIMIT ?",
        (hook_id, before if before is not None else 2**62, limit),
    ).fetchall()
    return [AttemptRecord(*row) for row in rows]


@dataclasses.dataclass(frozen=True)
class MessageDelivery:
    """One delivery an event of a message caused to one endpoint, as it stands now."""

    id: int
    webhook_id: str
    url: str
    event_id: int
    state: str  # pending, delivered, failed
    attempts: int
    next_attempt_at: float | None
    last_status: int | None
    last_error: str | None
    created_at: float
    updated_at: float


def message_deliveries(conn: Connection, message_id: str, limit: int) -> list[MessageDelivery]:
    """Oldest first, on the webhook_deliveries_message index."""
    rows = conn.execute(
        "SELECT d.id, d.webhook_id, w.url, d.event_id, d.state, d.attempts, d.next_attempt_at, d.last_status,"
        " d.last_error, d.created_at, d.updated_at FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id"
        " WHERE d.message_id = ? ORDER BY d.id LIMIT ?",
        (message_id, limit),
    ).fetchall()
    return [MessageDelivery(*row) for row in rows]


def backlog(conn: Connection) -> dict[str, int]:
    """Pending deliveries per endpoint."""
    return dict(
        conn.execute(
            "SELECT webhook_id, count(*) FROM webhook_deliveries WHERE next_attempt_at IS NOT NULL GROUP BY webhook_id"
        ).fetchall()
    )


def pending_for(conn: Connection, hook_ids: Sequence[str]) -> dict[str, int]:
    counts = backlog(conn)
    return {h: counts.get(h, 0) for h in hook_ids}


class SqlWebhooks:
    """:class:`relay.store.protocols.WebhookStore` over the shared database."""

    def __init__(self, db: SqlDatabase, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    async def create_webhook(self, hook: Webhook) -> None:
        await self.db.write(lambda c: create(c, hook))

    async def webhook(self, hook_id: str) -> Webhook | None:
        return await self.db.read(lambda c: get(c, hook_id))

    async def list_all(self) -> list[Webhook]:
        return await self.db.read(list_all)

    async def update_webhook(self, hook_id: str, changes: dict[str, object]) -> Webhook | None:
        now = self.clock.now()
        return await self.db.write(lambda c: update(c, hook_id, changes, now))

    async def delete_webhook(self, hook_id: str) -> bool:
        return await self.db.write(lambda c: delete(c, hook_id))

    # The sender's lease and its outcomes are a few indexed statements (light), and need not wait for the disk
    # (durable=False): lost with the power, a delivery is posted again, as a message is delivered again when
    # its recipient's outcome is lost (receivers tell repeats by webhook-id).

    async def claim_webhook_deliveries(self, webhook_id: str, limit: int, lease: float) -> list[DueDelivery]:
        now = self.clock.now()
        return await self.db.write(lambda c: claim_due(c, now, limit, lease, webhook_id), light=True, durable=False)

    async def record_webhook_attempts(self, outcomes: Sequence[AttemptOutcome], disable_after: float) -> dict[str, str]:
        now = self.clock.now()
        op = lambda c: record_attempts(c, outcomes, now, disable_after)  # noqa: E731
        return await self.db.write(op, light=True, durable=False)

    async def webhook_attempts(self, hook_id: str, limit: int, before: int | None = None) -> list[AttemptRecord]:
        return await self.db.read(lambda c: recent_attempts(c, hook_id, limit, before))

    async def webhook_backlog(self) -> dict[str, int]:
        return await self.db.read(backlog)

    async def message_deliveries(self, message_id: str, limit: int) -> list[MessageDelivery]:
        return await self.db.read(lambda c: message_deliveries(c, message_id, limit))
