"""/v1/webhooks (scope ``webhooks``): endpoints, secrets, test sends and the delivery log."""

from __future__ import annotations

import secrets
from typing import Any

from aiohttp import web

from relay.api.app import ApiError, page_limit, read_json_object, require, row_cursor
from relay.clock import Clock, iso
from relay.events import EVENT_TYPES
from relay.message import control_fault
from relay.store.protocols import WebhookStore
from relay.store.webhooks import AttemptOutcome, AttemptRecord, Webhook
from relay.webhooks import TargetError, WebhookSender, check_target, new_secret

MAX_WEBHOOKS = 50


def webhook_json(h: Webhook, backlog: int | None = None, secret: bool = False) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": h.id,
        "url": h.url,
        "events": h.events,
        "enabled": h.enabled,
        "description": h.description,
        "created_at": iso(h.created_at),
        "updated_at": iso(h.updated_at),
        "failing_since": iso(h.failing_since),
        "disabled_reason": h.disabled_reason,
    }
    if backlog is not None:
        data["pending_deliveries"] = backlog
    if secret:
        data["secret"] = h.secret
    return data


def attempt_json(a: AttemptRecord) -> dict[str, Any]:
    return {
        "id": a.id,
        "at": iso(a.at),
        "event_id": f"evt_{a.event_id}" if a.event_id is not None else None,
        "test": a.delivery_id is None,
        "status_code": a.status,
        "ok": a.status is not None and 200 <= a.status < 300,
        "error": a.error,
        "latency_ms": round(a.latency_ms, 1),
    }


async def parse_webhook_fields(data: dict[str, Any], partial: bool, allow_private: bool) -> dict[str, Any]:
    """The fields of a request to create (``partial`` False) or change a webhook, checked (the URL's target
    too, unless ``allow_private``: [webhooks] allow_private_targets)."""
    out: dict[str, Any] = {}
    if "url" in data or not partial:
        url = data.get("url")
        if not isinstance(url, str) or len(url) > 2000:
            raise ApiError(400, "missing_field" if url is None else "invalid_field", "give 'url' as a string", "url")
        out["url"] = url
    if "events" in data:
        events = data["events"] if data["events"] is not None else []
        if not isinstance(events, list) or any(e not in EVENT_TYPES for e in events):
            raise ApiError(400, "invalid_field", f"'events' must be a list of: {', '.join(EVENT_TYPES)}", "events")
        out["events"] = sorted(set(events))
    if "enabled" in data:
        if not isinstance(data["enabled"], bool):
            raise ApiError(400, "invalid_field", "'enabled' must be true or false", "enabled")
        out["enabled"] = data["enabled"]
    if "description" in data:
        description = data["description"]
        if not isinstance(description, str) or len(description) > 500 or control_fault(description, lines=True):
            raise ApiError(400, "invalid_field", "'description' must be text of at most 500 characters", "description")
        out["description"] = description
    if "url" in out:  # last: it may ask DNS, and a request that another field refuses need not
        try:
            await check_target(out["url"], allow_private)
        except TargetError as exc:
            raise ApiError(400, "invalid_field", str(exc), "url") from None
    return out


async def create_webhook(store: WebhookStore, clock: Clock, fields: dict[str, Any]) -> Webhook:
    """A new endpoint from parsed fields, with a new secret (at most MAX_WEBHOOKS)."""
    if len(await store.list_all()) >= MAX_WEBHOOKS:
        raise ApiError(400, "invalid_field", f"at most {MAX_WEBHOOKS} webhooks", "url")
    now = clock.now()
    hook = Webhook(
        f"wh_{secrets.token_hex(8)}",
        fields["url"],
        fields.get("events", []),
        fields.get("enabled", True),
        fields.get("description", ""),
        new_secret(),
        now,
        now,
    )
    await store.create_webhook(hook)
    return hook


async def change_webhook(
    store: WebhookStore, sender: WebhookSender, hook_id: str, fields: dict[str, Any]
) -> Webhook | None:
    """Apply parsed fields; an endpoint enabled gets its backlog sent now. None if there is no such webhook."""
    hook = await store.update_webhook(hook_id, fields)
    if hook is not None and hook.enabled:
        sender.wake()
    return hook


async def rotate_secret(store: WebhookStore, hook_id: str) -> Webhook | None:
    """A new signing secret, in force at once; None if there is no such webhook."""
    return await store.update_webhook(hook_id, {"secret": new_secret()})


def outcome_json(outcome: AttemptOutcome) -> dict[str, Any]:
    """What a test send answers: the receiver's status and the latency."""
    return {
        "ok": outcome.ok,
        "status_code": outcome.status,
        "error": outcome.error,
        "latency_ms": round(outcome.latency_ms, 1),
    }


def attempts_cursor(query: Any) -> int | None:
    """``?cursor=`` of the delivery log: the next_cursor of a previous page."""
    if not query.get("cursor"):
        return None
    return row_cursor(query["cursor"], "cursor", "'cursor' must be the next_cursor of a previous page")


async def attempts_page(
    store: WebhookStore, hook_id: str, limit: int, before: int | None
) -> tuple[list[AttemptRecord], str | None]:
    """One page of an endpoint's delivery log, newest first, and the cursor of the next (None: the last)."""
    rows = await store.webhook_attempts(hook_id, limit + 1, before)
    page = rows[:limit]
    return page, str(page[-1].id) if len(rows) > limit else None


class WebhooksView:
    def __init__(self, store: WebhookStore, clock: Clock, sender: WebhookSender) -> None:
        self.store = store
        self.clock = clock
        self.sender = sender

    def routes(self) -> list[web.RouteDef]:
        scope = require("webhooks")
        return [
            web.post("/v1/webhooks", scope(self.create)),
            web.get("/v1/webhooks", scope(self.index)),
            web.get("/v1/webhooks/{id}", scope(self.show)),
            web.put("/v1/webhooks/{id}", scope(self.update)),
            web.patch("/v1/webhooks/{id}", scope(self.update)),
            web.delete("/v1/webhooks/{id}", scope(self.delete)),
            web.post("/v1/webhooks/{id}/rotate-secret", scope(self.rotate)),
            web.post("/v1/webhooks/{id}/test", scope(self.test)),
            web.get("/v1/webhooks/{id}/deliveries", scope(self.deliveries)),
        ]

    async def _fields(self, data: dict[str, Any], partial: bool) -> dict[str, Any]:
        return await parse_webhook_fields(data, partial, self.sender.settings.allow_private_targets)

    async def _get(self, request: web.Request) -> Webhook:
        hook = await self.store.webhook(request.match_info["id"])
        if hook is None:
            raise ApiError(404, "not_found", f"no webhook {request.match_info['id']}")
        return hook

    async def create(self, request: web.Request) -> web.Response:
        fields = await self._fields(await read_json_object(request), partial=False)
        hook = await create_webhook(self.store, self.clock, fields)
        return web.json_response(webhook_json(hook, 0, secret=True), status=201)

    async def index(self, request: web.Request) -> web.Response:
        hooks = await self.store.list_all()
        backlog = await self.store.webhook_backlog()
        return web.json_response({"data": [webhook_json(h, backlog.get(h.id, 0)) for h in hooks]})

    async def show(self, request: web.Request) -> web.Response:
        hook = await self._get(request)
        backlog = await self.store.webhook_backlog()
        return web.json_response(webhook_json(hook, backlog.get(hook.id, 0)))

    async def update(self, request: web.Request) -> web.Response:
        await self._get(request)
        fields = await self._fields(await read_json_object(request), partial=True)
        hook = await change_webhook(self.store, self.sender, request.match_info["id"], fields)
        if hook is None:
            raise ApiError(404, "not_found", f"no webhook {request.match_info['id']}")
        return web.json_response(webhook_json(hook))

    async def delete(self, request: web.Request) -> web.Response:
        if not await self.store.delete_webhook(request.match_info["id"]):
            raise ApiError(404, "not_found", f"no webhook {request.match_info['id']}")
        return web.json_response({"id": request.match_info["id"], "deleted": True})

    async def rotate(self, request: web.Request) -> web.Response:
        """A new signing secret, in force at once (receivers should accept both while they switch)."""
        await self._get(request)
        hook = await rotate_secret(self.store, request.match_info["id"])
        assert hook is not None
        return web.json_response(webhook_json(hook, secret=True))

    async def test(self, request: web.Request) -> web.Response:
        hook = await self._get(request)
        outcome = await self.sender.send_test(hook)
        return web.json_response(outcome_json(outcome))

    async def deliveries(self, request: web.Request) -> web.Response:
        await self._get(request)
        limit = page_limit(request.query, 50, 500)
        page, cursor = await attempts_page(self.store, request.match_info["id"], limit, attempts_cursor(request.query))
        return web.json_response({"data": [attempt_json(a) for a in page], "next_cursor": cursor})
