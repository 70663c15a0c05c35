"""``/v1/messages``: submit (with Idempotency-Key and quotas), show, list, cancel."""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import hashlib
import logging
import re
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
from relay.api.templates import render_batch, render_message_fields
from relay.clock import Clock, iso
from relay.compose import Composition, FieldError, Limits, build, build_many, parse_request
from relay.events import State
from relay.keys import ApiKey
from relay.message import NewMessage, UnreadableFrom, from_addresses
from relay.renderer import Renderer
from relay.store.idempotency import ClaimLost, Completion, IdempotencyRecord
from relay.store.queue import MessageFilter, MessageRecord, Quota, QuotaExhausted
from relay.submission.accept import Acceptor, DomainNotVerified, MessageTooLarge
from relay.submission.capacity import Overloaded

log = logging.getLogger(__name__)

_IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")
MAX_PAGE = 100


def parse_time(field: str, text: str) -> float:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(400, "invalid_field", f"'{field}' must be an ISO 8601 time", field) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


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
    return {"limit": limit, "used": used, "remaining": remaining, "period": period,
            "resets_at": iso(resets.timestamp())}  # fmt: skip


def idempotency_json(record: IdempotencyRecord) -> dict[str, Any]:
    return {
        "key": record.key,
        "state": record.state,
        "status": record.status,
        "message_id": record.message_id,
        "created_at": iso(record.created_at),
        "expires_at": iso(record.expires_at),
    }


_ONE = "/v1/messages/{id:(?!batch$)[^{}/]+}"
BULK_BUILD = 32  # batches at least this big build their MIME messages in worker processes


@dataclasses.dataclass(frozen=True)
class Draft:
    composition: Composition
    send_at: float | None
    suppressed: dict[str, str]
    where: str


def check_from_header(raw: bytes, sender: str, where: str = "") -> None:
    """The From: header relay wrote must read back, by the rule every sender check uses, as exactly the
    one address that was checked; ApiError naming ``from`` otherwise (nothing a receiver could read as
    another sender is queued)."""
    try:
        found = from_addresses(raw)
    except UnreadableFrom:
        found = []
    if found != [sender]:
        raise ApiError(400, "invalid_field", f"the From: header made of 'from' does not read back as exactly"
                       f" <{sender}>", where + "from")  # fmt: skip


def _error(exc: ApiError) -> dict[str, Any]:
    return {"error": {"code": exc.code, "message": exc.message, **({"field": exc.field} if exc.field else {})}}


class MessagesView:
    def __init__(self, acceptor: Acceptor, hostname: str, clock: Clock, limits: Limits, idempotency_ttl: float,
                 max_schedule_ahead: float = 30 * 86400.0, max_batch: int = 500) -> None:  # fmt: skip
        self.acceptor = acceptor
        self.max_batch = max_batch
        self.builders: concurrent.futures.Executor | None = None  # set by the app: worker processes for batches
        self.renderer: Renderer | None = None  # set by the app: the template render processes
        self.max_schedule_ahead = max_schedule_ahead
        self.store = acceptor.store
        self.hostname = hostname
        self.clock = clock
        self.limits = limits
        self.idempotency_ttl = idempotency_ttl

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
            request.query.get("cursor") or None, limit + 1, own_filter(request)
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
        send_at = self._send_at(data["send_at"], future_only=True)
        assert send_at is not None  # _send_at refuses a past time when future_only
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
            return await dry_run(request, self.prepare, self.acceptor)
        return await self._idempotent(request, self._create)

    async def batch(self, request: web.Request) -> web.Response:
        """Queue up to [http] max_batch messages in one transaction; an Idempotency-Key covers the batch."""
        return await self._idempotent(request, self._batch)

    async def _idempotent(self, request: web.Request, create: Any) -> web.Response:
        key = request[API_KEY]
        data = await read_json_object(request)
        idempotency_key = request.headers.get("Idempotency-Key")
        if idempotency_key is None:
            return await create(data, key, None)
        if not _IDEMPOTENCY_KEY.fullmatch(idempotency_key):
            raise ApiError(400, "invalid_idempotency_key", "Idempotency-Key must be 1-255 printable ASCII characters")
        request_hash = hashlib.sha256(await request.read()).hexdigest()
        held = await self.store.idempotency.claim_idempotency_key(
            key.id, idempotency_key, request_hash, self.idempotency_ttl
        )
        if held is not None:
            return self._replay(held, request_hash)
        try:
            async with self.store.idempotency.idempotency_lease(
                key.id, idempotency_key
            ):  # renewed; released on failure
                return await create(data, key, idempotency_key)
        except ClaimLost:
            raise ApiError(409, "idempotency_in_progress", "this request outlived its claim on the Idempotency-Key"
                           " and a retry took it over; this one queued nothing",
                           headers={"Retry-After": "1"}) from None  # fmt: skip

    def _send_at(self, value: Any, field: str = "send_at", future_only: bool = False) -> float | None:
        """An ISO 8601 time (or unix seconds) within [server] max_schedule_ahead; a past time sends now."""
        if value is None:
            return None
        if isinstance(value, int | float) and not isinstance(value, bool):
            try:
                when = float(value)
            except OverflowError:  # an integer of hundreds of digits
                raise ApiError(400, "invalid_field", f"'{field}' is out of range", field) from None
        elif isinstance(value, str):
            when = parse_time(field, value)
        else:
            raise ApiError(400, "invalid_field", f"'{field}' must be an ISO 8601 time", field)
        now = self.clock.now()
        if when > now + self.max_schedule_ahead:
            days = self.max_schedule_ahead / 86400
            raise ApiError(400, "invalid_field", f"'{field}' may be at most {days:g} days ahead", field)
        if when <= now:
            if future_only:
                raise ApiError(400, "invalid_field", f"'{field}' must be in the future", field)
            return None
        return when

    def _replay(self, held: IdempotencyRecord, request_hash: str) -> web.Response:
        if held.request_hash != request_hash:
            raise ApiError(422, "idempotency_key_reused", "this Idempotency-Key was used with a different request body")
        if held.state != "done" or held.status is None or held.body is None:
            raise ApiError(409, "idempotency_in_progress", "a request with this Idempotency-Key is still in progress",
                           headers={"Retry-After": "1"})  # fmt: skip
        return web.Response(
            status=held.status, text=held.body, content_type="application/json", headers={"Idempotent-Replayed": "true"}
        )

    async def prepare(self, data: dict[str, Any], key: ApiKey, variables: dict[str, Any] | None = None,
                      where: str = "") -> tuple[NewMessage, dict[str, Any]]:  # fmt: skip
        """A request body → the message to queue and its part of the answer. Raises ApiError naming the field
        (prefixed with ``where``, e.g. ``messages[3].``)."""
        d = await self.draft(data, variables, where)
        return self.finish(d, key, build(d.composition, self.hostname, self.clock.now()))

    async def draft(self, data: dict[str, Any], variables: dict[str, Any] | None = None, where: str = "") -> Draft:
        """Everything but building the MIME message (which a batch does in bulk)."""
        send_at = self._send_at(data.get("send_at"))
        assert self.renderer is not None
        data = await render_message_fields(self.renderer, self.store, data, variables, where)
        try:
            composition = parse_request(data, self.limits)
        except FieldError as exc:
            raise ApiError(400, exc.code, str(exc), where + exc.field) from None
        recipients = composition.envelope_recipients
        suppressed = {a: s.reason for a, s in (await self.store.suppressions.suppressed(recipients)).items()}
        if len(suppressed) == len(recipients):
            raise ApiError(422, "recipients_suppressed", "every recipient is on the suppression list ("
                           + ", ".join(f"{a}: {r}" for a, r in suppressed.items()) + ")", where + "to")  # fmt: skip
        return Draft(composition, send_at, suppressed, where)

    def finish(self, d: Draft, key: ApiKey, raw: bytes) -> tuple[NewMessage, dict[str, Any]]:
        composition, recipients, suppressed, send_at, where = (d.composition, d.composition.envelope_recipients,
                                                                d.suppressed, d.send_at, d.where)  # fmt: skip
        check_from_header(raw, composition.sender.addr_spec, where)
        message = NewMessage(
            composition.sender.addr_spec, recipients, raw, "http",
            subject=composition.subject, tags=composition.tags, metadata=composition.metadata, api_key_id=key.id,
            suppressed={a: f"suppressed ({r}) at submission" for a, r in suppressed.items()}, send_at=send_at,
            sandbox=key.test,
        )  # fmt: skip
        try:
            self.acceptor.check(message)
        except MessageTooLarge as exc:
            raise ApiError(413, "message_too_large", str(exc), where or None) from None
        except DomainNotVerified as exc:
            raise ApiError(422, "domain_not_verified", str(exc), where + "from") from None
        return message, self._accepted(message, recipients, suppressed, send_at, self.acceptor.sandboxed(message))

    @staticmethod
    def _accepted(message: NewMessage, recipients: tuple[str, ...], suppressed: dict[str, str],
                  send_at: float | None, sandbox: bool) -> dict[str, Any]:  # fmt: skip
        waiting = "scheduled" if send_at is not None else "queued"  # the state GET /v1/messages/{id} shows
        return {
            "id": message.id,
            "status": waiting,
            "sandbox": sandbox,
            **({"send_at": iso(send_at)} if send_at is not None else {}),
            "recipients": [
                {"email": r, "status": "suppressed", "reason": suppressed[r]} if r in suppressed
                else {"email": r, "status": waiting}
                for r in recipients
            ],
        }  # fmt: skip

    def _batch_items(self, data: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any] | None, str]]:
        """(message body, personal variables, field prefix) per item: ``messages`` or ``message`` + ``recipients``."""
        if "messages" in data:
            items = data["messages"]
            if not isinstance(items, list) or not items or len(items) > self.max_batch:
                raise ApiError(400, "invalid_field", f"'messages' must be a list of 1 to {self.max_batch} messages",
                               "messages")  # fmt: skip
            for i, item in enumerate(items):
                if not isinstance(item, dict):
                    raise ApiError(400, "invalid_field", "each message is an object", f"messages[{i}]")
            return [(item, None, f"messages[{i}].") for i, item in enumerate(items)]
        base, people = data.get("message"), data.get("recipients")
        if not isinstance(base, dict) or not isinstance(people, list):
            raise ApiError(400, "missing_field", "give 'messages', or 'message' with 'recipients'", "messages")
        if not people or len(people) > self.max_batch:
            raise ApiError(400, "invalid_field", f"'recipients' must be a list of 1 to {self.max_batch}", "recipients")
        out = []
        for i, person in enumerate(people):
            if not isinstance(person, dict) or "to" not in person:
                raise ApiError(400, "invalid_field", "each recipient is an object with 'to'", f"recipients[{i}]")
            variables = person.get("variables", {})
            if not isinstance(variables, dict):
                raise ApiError(400, "invalid_field", "'variables' must be an object", f"recipients[{i}].variables")
            item = {**base, **{k: person[k] for k in ("to", "cc", "bcc", "metadata") if k in person}}
            out.append((item, variables, f"recipients[{i}]."))
        return out

    async def _batch(self, data: dict[str, Any], key: ApiKey, idempotency_key: str | None) -> web.Response:
        atomic = data.get("atomic", False)
        if not isinstance(atomic, bool):
            raise ApiError(400, "invalid_field", "'atomic' must be true or false", "atomic")
        outcomes: list[Draft | dict[str, Any]] = []
        items = self._batch_items(data)
        assert self.renderer is not None
        bodies = await render_batch(self.renderer, self.store, items)  # all of the batch's renders in one task
        for (_, variables, where), body in zip(items, bodies, strict=True):
            try:
                if isinstance(body, ApiError):
                    raise body
                outcomes.append(await self.draft(body, variables, where))
            except ApiError as exc:
                outcomes.append(_error(exc))
        drafts = [d for d in outcomes if isinstance(d, Draft)]
        raws = iter(await self._build_all([d.composition for d in drafts]))
        results: list[dict[str, Any]] = []
        prepared: list[NewMessage] = []
        for index, outcome in enumerate(outcomes):
            if isinstance(outcome, Draft):
                try:
                    message, body = self.finish(outcome, key, next(raws))
                except ApiError as exc:
                    results.append({"index": index, **_error(exc)})
                    continue
                prepared.append(message)
                results.append({"index": index, **body})
            else:
                results.append({"index": index, **outcome})
        failed = [r for r in results if "error" in r]
        if atomic and failed:
            first = failed[0]["error"]
            raise ApiError(400, "batch_rejected", f"{len(failed)} of {len(results)} messages are invalid (atomic);"
                           f" the first: {first['message']}", first.get("field"))  # fmt: skip
        if not prepared:
            raise ApiError(400, "batch_rejected", f"none of the {len(results)} messages is valid; the first:"
                           f" {failed[0]['error']['message']}", failed[0]["error"].get("field"))  # fmt: skip
        text = strictjson.dumps({"queued": len(prepared), "failed": len(failed), "results": results})
        completion = Completion(key.id, idempotency_key, 202, text, None) if idempotency_key else None
        await self._queue(prepared, key, completion)
        log.info("queued a batch of %d messages (%d refused) via http key=%s", len(prepared), len(failed), key.id)
        return web.Response(status=202, text=text, content_type="application/json")

    async def _queue(self, messages: list[NewMessage], key: ApiKey, completion: Completion | None) -> None:
        """Checked messages onto the queue in one transaction, counted against the key's quota."""
        quota = Quota(key.id, key.daily_quota, key.monthly_quota) if key.daily_quota or key.monthly_quota else None
        try:
            await self.acceptor.submit_many(messages, quota, completion)
        except QuotaExhausted as exc:
            raise ApiError(402, "quota_exhausted", str(exc)) from None
        except Overloaded as exc:
            raise ApiError(503, "service_unavailable", f"submission is paused: {exc}",
                           headers={"Retry-After": str(exc.retry_after)}) from None  # fmt: skip

    async def _build_all(self, compositions: list[Composition]) -> list[bytes]:
        """MIME building is the costly part of a batch (the email package): big batches use worker processes."""
        now = self.clock.now()
        if len(compositions) < BULK_BUILD or self.builders is None:
            return build_many(compositions, self.hostname, now)
        loop = asyncio.get_running_loop()
        half = (len(compositions) + 1) // 2
        parts = await asyncio.gather(*(loop.run_in_executor(self.builders, build_many, chunk, self.hostname, now)
                                       for chunk in (compositions[:half], compositions[half:])))  # fmt: skip
        return [raw for part in parts for raw in part]

    async def _create(self, data: dict[str, Any], key: ApiKey, idempotency_key: str | None) -> web.Response:
        message, body = await self.prepare(data, key)
        recipients, raw = message.recipients, message.raw
        text = strictjson.dumps(body)
        completion = Completion(key.id, idempotency_key, 202, text, message.id) if idempotency_key else None
        await self._queue([message], key, completion)
        log.info(
            "queued %s from=<%s> rcpts=%d size=%d via http key=%s",
            message.id, message.sender, len(recipients), len(raw), key.id,
        )  # fmt: skip
        return web.Response(status=202, text=text, content_type="application/json")

    async def show(self, request: web.Request) -> web.Response:
        message = readable(request, await self.store.queue.message(request.match_info["id"]))
        return web.json_response(message_json(message), dumps=strictjson.dumps)

    async def index(self, request: web.Request) -> web.Response:
        """Newest first; ``next_cursor`` continues the listing."""
        query = request.query
        limit = page_limit(query, 20, MAX_PAGE)
        status = query.get("status")
        if status is not None and status not in {s.value for s in State}:
            raise ApiError(
                400, "invalid_field", f"'status' must be one of {', '.join(s.value for s in State)}", "status"
            )
        f = MessageFilter(
            before=query.get("cursor") or None,
            status=status,
            recipient=query.get("recipient") or None,
            tag=query.get("tag") or None,
            since=parse_time("since", query["since"]) if "since" in query else None,
            until=parse_time("until", query["until"]) if "until" in query else None,
            api_key_id=own_filter(request),
        )
        rows = await self.store.queue.messages(f, limit + 1)
        page = rows[:limit]
        next_cursor = page[-1].id if len(rows) > limit else None
        body = {"data": [message_json(m) for m in page], "next_cursor": next_cursor}
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
            raise ApiError(409, "idempotency_in_progress", "a request with this Idempotency-Key is still in progress",
                           headers={"Retry-After": "1"})  # fmt: skip
        return web.json_response({**idempotency_json(record), "deleted": True})

    async def quotas(self, request: web.Request) -> web.Response:
        """The calling key's sending quotas: limits and what is used this UTC day and month (any scope)."""
        key = await authorize(request, None)
        counted = key.daily_quota is not None or key.monthly_quota is not None
        day, month = await self.store.queue.key_usage(key.id) if counted else (None, None)
        now = datetime.fromtimestamp(self.clock.now(), UTC)
        tomorrow = now.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
        next_month = (now.replace(day=1, hour=0, minute=0, second=0, microsecond=0) + timedelta(days=32)).replace(day=1)
        return web.json_response({
            "api_key_id": key.id,
            "daily": _quota_json(key.daily_quota, day, now.strftime("%Y-%m-%d"), tomorrow),
            "monthly": _quota_json(key.monthly_quota, month, now.strftime("%Y-%m"), next_month),
        })  # fmt: skip

    async def idempotency_record(self, request: web.Request) -> web.Response:
        record = await self.store.idempotency.idempotency_record(request[API_KEY].id, request.match_info["key"])
        if record is None:
            raise ApiError(404, "not_found", "no such Idempotency-Key for this API key (or it has expired)")
        return web.json_response(idempotency_json(record))
