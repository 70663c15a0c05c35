"""``/v1/messages``: submit (through ``relay.submission.http``), show, list, cancel; scheduled messages,
Idempotency-Key records and quotas."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from relay import strictjson
from relay.api.app import (
    API_KEY,
    ApiError,
    authorize,
    changeable,
    own_filter,
    page_limit,
    read_json_object,
    readable,
    require,
)
from relay.api.dryrun import dry_run, wants_dry_run
from relay.clock import Clock, iso
from relay.events import State
from relay.keys import ApiKey
from relay.message import is_message_id, split_address
from relay.store.idempotency import IdempotencyRecord
from relay.store.protocols import Storage
from relay.store.queue import MAX_SEARCH_TEXT, MessageFilter, MessageRecord
from relay.submission.http import Answer, HttpSubmission, parse_time

Send = Callable[[dict[str, Any], ApiKey, str | None], Awaitable[Answer]]
MAX_PAGE = 100


def message_json(m: MessageRecord) -> dict[str, Any]:
    return {
        "id": m.id,
        "created_at": iso(m.created_at),
        "source": m.source,
        "from": m.sender,
        "subject": m.subject,
        "size": m.size,
        "tags": m.tags,
        "metadata": m.metadata,
        "send_at": iso(m.send_at),
        "sandbox": m.sandbox,
        "recipients": [
            {
                "email": r.address,
                "status": r.state,
                "attempts": r.attempts,
                "next_attempt_at": iso(r.next_attempt_at),
                "last_response": None if r.last_response is None else f"{r.last_code or ''} {r.last_response}".strip(),
                "updated_at": iso(r.updated_at),
            }
            for r in m.recipients
        ],
    }


def _quota_json(limit: int | None, used: int | None, period: str, resets: datetime) -> dict[str, Any]:
    """One period of a key's quota; ``used`` is None when relay does not count (the key has no quota)."""
    remaining = None if limit is None or used is None else max(0, limit - used)
    return {
        "limit": limit,
        "used": used,
        "remaining": remaining,
        "period": period,
        "resets_at": iso(resets.timestamp()),
    }


def idempotency_json(record: IdempotencyRecord) -> dict[str, Any]:
    return {
        "key": record.key,
        "state": record.state,
        "status": record.status,
        "message_id": record.message_id,
        "created_at": iso(record.created_at),
        "expires_at": iso(record.expires_at),
    }


def parse_sender(value: str | None) -> str | None:
    """``?sender=``: an address (its messages) or a domain (every address of it)."""
    if value is None:
        return None
    plausible = split_address(value) if "@" in value else split_address(f"x@{value}")
    if plausible is None or len(value) > MAX_SEARCH_TEXT or not value.isprintable():
        raise ApiError(400, "invalid_field", "'sender' must be an address or a domain name", "sender")
    return value


def parse_search_text(field: str, value: str | None, spaces: bool = True) -> str | None:
    """``?subject=``, ``?message_id=`` (``spaces=False``): printable text of a bounded length."""
    if value is None:
        return None
    if len(value) > MAX_SEARCH_TEXT:
        raise ApiError(400, "invalid_field", f"'{field}' must be at most {MAX_SEARCH_TEXT} characters", field)
    if not spaces and any(c.isspace() for c in value):
        raise ApiError(400, "invalid_field", f"'{field}' must not contain spaces", field)
    if not value.isprintable():  # NUL and the like: no text stored in relay holds them
        raise ApiError(400, "invalid_field", f"'{field}' must not contain control characters", field)
    return value


def parse_message_cursor(value: str | None) -> str | None:
    """``?cursor=`` of a message listing: the ``next_cursor`` of a previous page, a message id. Anything else
    was compared with ids as it came (a NUL, a 5 KB string): SQLite and PostgreSQL answered different pages."""
    if not value:
        return None
    if not is_message_id(value):
        raise ApiError(400, "invalid_field", "'cursor' must be the next_cursor of a previous page", "cursor")
    return value


def parse_status(value: str | None) -> str | None:
    """``?status=``: messages with a recipient in this state."""
    if value is not None and value not in {s.value for s in State}:
        raise ApiError(400, "invalid_field", f"'status' must be one of {', '.join(s.value for s in State)}", "status")
    return value


_ONE = "/v1/messages/{id:(?!batch$)[^{}/]+}"


class MessagesView:
    """The views of ``/v1/messages`` and friends: submission goes through the front door
    (``relay.submission.http``), the listings read the queue."""

    def __init__(self, submission: HttpSubmission, store: Storage, clock: Clock) -> None:
        self.submission = submission
        self.store = store
        self.clock = clock

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1/messages", require("send")(self.create)),
            web.get("/v1/messages", require("read")(self.index)),
            web.post("/v1/messages/batch", require("send")(self.batch)),
            # {id} never matches "batch", so that path answers only for POST.
            web.get(_ONE, require("read")(self.show)),
            web.delete(_ONE, require("send")(self.cancel)),
            web.get("/v1/idempotency/records/{key}", require("send")(self.idempotency_record)),
            web.delete("/v1/idempotency/records/{key}", require("send")(self.forget_idempotency_record)),
            web.get("/v1/quotas", self.quotas),
            web.get("/v1/scheduled-messages", require("read")(self.scheduled)),
            web.get("/v1/scheduled-messages/{id}", require("read")(self.scheduled_one)),
            web.patch("/v1/scheduled-messages/{id}", require("send")(self.reschedule)),
            web.delete("/v1/scheduled-messages/{id}", require("send")(self.cancel)),
        ]

    async def scheduled(self, request: web.Request) -> web.Response:
        """Messages waiting for their send_at, soonest first."""
        limit = page_limit(request.query, 20, MAX_PAGE)
        rows = await self.store.queue.scheduled_messages(
            parse_message_cursor(request.query.get("cursor")), limit + 1, own_filter(request)
        )
        page = rows[:limit]
        body = {"data": [message_json(m) for m in page], "next_cursor": page[-1].id if len(rows) > limit else None}
        return web.json_response(body, dumps=strictjson.dumps)

    async def scheduled_one(self, request: web.Request) -> web.Response:
        """A message with recipients still waiting for its send_at; 404 once none is (sent, cancelled)."""
        message_id = request.match_info["id"]
        message = readable(request, await self.store.queue.message(message_id), "scheduled message")
        if not any(r.state == State.SCHEDULED for r in message.recipients):
            raise ApiError(404, "not_found", f"no scheduled message {message_id} (unknown, sent or cancelled)")
        return web.json_response(message_json(message), dumps=strictjson.dumps)

    async def reschedule(self, request: web.Request) -> web.Response:
        """``{"send_at": ...}``: a new time, in the future, for the recipients still waiting."""
        data = await read_json_object(request)
        if data.get("send_at") is None:
            raise ApiError(400, "missing_field", "give 'send_at'", "send_at")
        send_at = self.submission.send_at(data["send_at"], future_only=True)
        assert send_at is not None  # send_at refuses a past time when future_only
        message_id = request.match_info["id"]
        changeable(request, await self.store.queue.message(message_id))
        if not await self.store.queue.reschedule(message_id, send_at):
            raise ApiError(409, "not_scheduled", f"message {message_id} has no recipient waiting for its send_at")
        message = await self.store.queue.message(message_id)
        assert message is not None
        return web.json_response(message_json(message))

    async def create(self, request: web.Request) -> web.Response:
        """Queue a message; retries with the same Idempotency-Key replay the first response.
        ``?dry_run=true``: every check, nothing written (relay.api.dryrun)."""
        if wants_dry_run(request):
            return await dry_run(request, self.submission)
        return await self._submit(request, self.submission.send)

    async def batch(self, request: web.Request) -> web.Response:
        """Queue up to [http] max_batch messages in one transaction; an Idempotency-Key covers the batch."""
        return await self._submit(request, self.submission.send_batch)

    async def _submit(self, request: web.Request, send: Send) -> web.Response:
        key = request[API_KEY]
        data = await read_json_object(request)
        idempotency_key = request.headers.get("Idempotency-Key")
        request_hash = "" if idempotency_key is None else hashlib.sha256(await request.read()).hexdigest()
        answer = await self.submission.once(
            key, idempotency_key, request_hash, lambda: send(data, key, idempotency_key)
        )
        headers = {"Idempotent-Replayed": "true"} if answer.replayed else None
        return web.Response(status=answer.status, text=answer.text, content_type="application/json", headers=headers)

    async def show(self, request: web.Request) -> web.Response:
        message = readable(request, await self.store.queue.message(request.match_info["id"]))
        return web.json_response(message_json(message), dumps=strictjson.dumps)

    async def index(self, request: web.Request) -> web.Response:
        """Newest first; ``next_cursor`` continues the listing (a subject search may answer a short page, or
        an empty one, with a ``next_cursor``: it examines a bounded number of messages per request)."""
        query = request.query
        limit = page_limit(query, 20, MAX_PAGE)
        f = MessageFilter(
            before=parse_message_cursor(query.get("cursor")),
            status=parse_status(query.get("status")),
            recipient=query.get("recipient") or None,
            tag=query.get("tag") or None,
            since=parse_time("since", query["since"]) if "since" in query else None,
            until=parse_time("until", query["until"]) if "until" in query else None,
            api_key_id=own_filter(request),
            sender=parse_sender(query.get("sender") or None),
            subject=parse_search_text("subject", query.get("subject") or None),
            message_id=parse_search_text("message_id", query.get("message_id") or None, spaces=False),
        )
        page = await self.store.queue.search(f, limit)
        body = {"data": [message_json(m) for m in page.messages], "next_cursor": page.next_cursor}
        return web.json_response(body, dumps=strictjson.dumps)

    async def cancel(self, request: web.Request) -> web.Response:
        """Cancel the recipients not yet delivered (those in flight right now finish their attempt)."""
        message_id = request.match_info["id"]
        changeable(request, await self.store.queue.message(message_id))
        cancelled = await self.store.queue.cancel_message(message_id)
        message = await self.store.queue.message(message_id)
        assert message is not None
        return web.json_response({"id": message_id, "cancelled": cancelled, **message_json(message)})

    async def forget_idempotency_record(self, request: web.Request) -> web.Response:
        """Delete the calling key's record, so the key may be used again for a new request."""
        record, deleted = await self.store.idempotency.forget_idempotency_record(
            request[API_KEY].id, request.match_info["key"]
        )
        if record is None:
            raise ApiError(404, "not_found", "no such Idempotency-Key for this API key (or it has expired)")
        if not deleted:
            raise ApiError(
                409,
                "idempotency_in_progress",
                "a request with this Idempotency-Key is still in progress",
                headers={"Retry-After": "1"},
            )
        return web.json_response({**idempotency_json(record), "deleted": True})

    async def quotas(self, request: web.Request) -> web.Response:
        """The calling key's sending quotas: limits and what is used this UTC day and month (any scope)."""
        key = await authorize(request, None)
        counted = key.daily_quota is not None or key.monthly_quota is not None
        day, month = await self.store.queue.key_usage(key.id) if counted else (None, None)
        now = datetime.fromtimestamp(self.clock.now(), UTC)
        tomorrow = now.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
        next_month = (now.replace(day=1, hour=0, minute=0, second=0, microsecond=0) + timedelta(days=32)).replace(day=1)
        return web.json_response(
            {
                "api_key_id": key.id,
                "daily": _quota_json(key.daily_quota, day, now.strftime("%Y-%m-%d"), tomorrow),
                "monthly": _quota_json(key.monthly_quota, month, now.strftime("%Y-%m"), next_month),
            }
        )

    async def idempotency_record(self, request: web.Request) -> web.Response:
        record = await self.store.idempotency.idempotency_record(request[API_KEY].id, request.match_info["key"])
        if record is None:
            raise ApiError(404, "not_found", "no such Idempotency-Key for this API key (or it has expired)")
        return web.json_response(idempotency_json(record))
