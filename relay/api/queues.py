"""``/v1/sending-queues`` (admin scope): the queue by destination domain, and operator actions."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from relay.api.app import ApiError, read_json_object, require
from relay.clock import iso
from relay.config import parse_duration
from relay.message import domain_key, domain_name_fault
from relay.store.protocols import QueueStore
from relay.store.queue import BodyDeleted, DomainQueue, Resent, Selection

# These name queue operations, never a destination domain.
OPERATIONS = ("scheduled", "resend")
_DOMAIN = "{domain:(?!(?:" + "|".join(OPERATIONS) + ")(?:/|$))[^{}/]+}"


def queue_json(q: DomainQueue) -> dict[str, Any]:
    return {
        "domain": q.domain,
        "pending": q.queued,
        "deferred": q.deferred,
        "in_flight": q.sending,
        "scheduled": q.scheduled,
        "oldest_at": iso(q.oldest),
        "suspended_until": iso(q.suspended_until),
    }


def _resent_json(r: Resent) -> dict[str, Any]:
    return {
        "email": r.address,
        "previous_status": r.previous,
        "result": r.result,
        **({"reason": r.reason} if r.reason else {}),
    }


async def _optional_json(request: web.Request) -> dict[str, Any]:
    return await read_json_object(request) if request.can_read_body else {}


def parse_reason(data: Mapping[str, Any]) -> str:
    """The operator's ``reason`` for a suspension or a bounce ("" if none)."""
    reason = data.get("reason", "")
    if not isinstance(reason, str) or len(reason) > 500:
        raise ApiError(400, "invalid_field", "'reason' must be a string of at most 500 characters", "reason")
    return reason


def _queue_domain(request: web.Request) -> str:
    """The path's domain as the queue keeps it: lower case, a Unicode one in A-labels."""
    return domain_key(request.match_info["domain"])


def parse_queue_domain(domain: str) -> str:
    """The domain of a queue to suspend: a suspension is kept, so it must be one mail can go to (a 3 KB
    name went over PostgreSQL's index row limit: 503)."""
    fault = domain_name_fault(domain)
    if fault is not None:
        raise ApiError(400, "invalid_field", f"{domain[:100]!r} {fault}", "domain")
    return domain_key(domain)  # as the queue keeps it


def parse_suspension(data: Mapping[str, Any]) -> float:
    """How long to suspend a domain, in seconds: ``duration`` like "30m" or "2h" (default 1h), at most 30 days."""
    try:
        duration = parse_duration(data.get("duration", "1h"))
    except (ValueError, TypeError):
        raise ApiError(400, "invalid_field", '\'duration\' must be like "30m" or "2h"', "duration") from None
    if not 0 < duration <= 30 * 86400:
        raise ApiError(400, "invalid_field", "'duration' must be between 1s and 30d", "duration")
    return duration


class QueuesView:
    def __init__(self, store: QueueStore, on_change: Any = None) -> None:
        self.store = store
        self.on_change = on_change or (lambda: None)

    def routes(self) -> list[web.RouteDef]:
        admin = require("admin")
        return [
            web.get("/v1/sending-queues", admin(self.index)),
            web.delete("/v1/sending-queues/scheduled", admin(self.purge_scheduled)),
            web.post("/v1/sending-queues/resend", admin(self.resend)),
            web.post(f"/v1/sending-queues/{_DOMAIN}/retry", admin(self.retry)),
            web.post(f"/v1/sending-queues/{_DOMAIN}/suspend", admin(self.suspend)),
            web.post(f"/v1/sending-queues/{_DOMAIN}/resume", admin(self.resume)),
            web.post(f"/v1/sending-queues/{_DOMAIN}/bounce", admin(self.bounce)),
            web.delete(f"/v1/sending-queues/{_DOMAIN}", admin(self.purge)),
            web.post("/v1/messages/{id}/retry", admin(self.retry_message)),
        ]

    async def purge_scheduled(self, request: web.Request) -> web.Response:
        """Cancel every scheduled message not yet due (recipients end cancelled, with events)."""
        messages, recipients = await self.store.cancel_scheduled()
        return web.json_response(
            {"queue": "scheduled", "cancelled_messages": messages, "cancelled_recipients": recipients}
        )

    async def resend(self, request: web.Request) -> web.Response:
        """``{"message_id"}``: queue the message's bounced and failed recipients again unless suppressed now."""
        data = await read_json_object(request)
        message_id = data.get("message_id")
        if message_id is None or message_id == "":
            raise ApiError(400, "missing_field", "give 'message_id'", "message_id")
        if not isinstance(message_id, str):
            raise ApiError(400, "invalid_field", "'message_id' must be a string", "message_id")
        try:
            outcome = await self.store.resend(message_id)
        except BodyDeleted as exc:
            raise ApiError(409, "body_deleted", f"{exc}; it cannot be sent again", "message_id") from None
        if outcome is None:
            raise ApiError(404, "not_found", f"no message {message_id}")
        queued = sum(r.result == "queued" for r in outcome)
        if queued:
            self.on_change()
        return web.json_response(
            {"message_id": message_id, "queued": queued, "recipients": [_resent_json(r) for r in outcome]}
        )

    async def index(self, request: web.Request) -> web.Response:
        queues = await self.store.domain_queues()
        totals = {
            k: sum(q[k] for q in map(queue_json, queues)) for k in ("pending", "deferred", "in_flight", "scheduled")
        }
        return web.json_response({"data": [queue_json(q) for q in queues], "totals": totals})

    async def retry(self, request: web.Request) -> web.Response:
        retried = await self.store.retry_now(Selection(domain=request.match_info["domain"]))
        self.on_change()
        return web.json_response({"domain": _queue_domain(request), "retried": retried})

    async def retry_message(self, request: web.Request) -> web.Response:
        message_id = request.match_info["id"]
        if await self.store.message(message_id) is None:
            raise ApiError(404, "not_found", f"no message {message_id}")
        retried = await self.store.retry_now(Selection(message_id=message_id))
        self.on_change()
        return web.json_response({"id": message_id, "retried": retried})

    async def suspend(self, request: web.Request) -> web.Response:
        data = await _optional_json(request)
        domain = parse_queue_domain(request.match_info["domain"])
        duration = parse_suspension(data)
        until = await self.store.suspend_domain(domain, duration, parse_reason(data))
        return web.json_response({"domain": domain, "suspended_until": iso(until)})

    async def resume(self, request: web.Request) -> web.Response:
        domain = _queue_domain(request)
        if not await self.store.resume_domain(domain):
            raise ApiError(404, "not_found", f"{domain} is not suspended")
        self.on_change()
        return web.json_response({"domain": domain, "suspended_until": None})

    async def bounce(self, request: web.Request) -> web.Response:
        reason = parse_reason(await _optional_json(request)) or "no reason given"
        bounced = await self.store.admin_bounce(reason, Selection(domain=request.match_info["domain"]))
        return web.json_response({"domain": _queue_domain(request), "bounced": bounced})

    async def purge(self, request: web.Request) -> web.Response:
        purged = await self.store.purge(Selection(domain=request.match_info["domain"]))
        return web.json_response({"domain": _queue_domain(request), "purged": purged})
