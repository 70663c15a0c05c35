"""The HTTP front door: a JSON request (one message, a batch, a template) becomes ``NewMessage``s
for the :class:`~relay.submission.accept.Acceptor`.

The views in ``relay.api.messages`` read the request and write the response;
everything between is here, and nothing here knows about aiohttp. Refusals are
:class:`relay.errors.Refused` (``Invalid`` for a bad field, naming it: ``to[1]``,
``messages[3].from``), which the API's error middleware turns into JSON.

The path of ``POST /v1/messages``: :meth:`HttpSubmission.once` (the
Idempotency-Key: replay, or claim and hold a lease) → :meth:`HttpSubmission.send`
→ ``prepare`` (``draft``: schedule, template, fields, suppression; ``finish``:
the built MIME message read back and checked by the Acceptor) → ``Acceptor.submit_many``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from relay import strictjson
from relay.clock import Clock, iso
from relay.compose import Composition, FieldError, Limits, build, build_common, build_many, parse_request
from relay.errors import Invalid, RecipientsSuppressed, Refused
from relay.events import State
from relay.keys import ApiKey
from relay.message import NewMessage, UnreadableFrom, from_addresses
from relay.renderer import Job, Renderer, RendererBusy, Source
from relay.store.idempotency import ClaimLost, Completion, IdempotencyRecord
from relay.store.protocols import Storage
from relay.store.queue import Quota
from relay.submission.accept import Acceptor
from relay.templates import PARTS, RenderError, check_syntax

log = logging.getLogger(__name__)

_IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")
BULK_BUILD = 32  # batches at least this big build their MIME messages in worker processes


@dataclasses.dataclass(frozen=True)
class Answer:
    """What the request gets: a status and its JSON body (``replayed``: the first answer to this
    Idempotency-Key, given again)."""

    status: int
    text: str
    replayed: bool = False


def parse_time(field: str, text: str) -> float:
    """An ISO 8601 time from a request (UTC when it names no zone) as seconds since the epoch."""
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise Invalid("invalid_field", f"'{field}' must be an ISO 8601 time", field) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def check_from_header(raw: bytes, sender: str, where: str = "") -> None:
    """The From: header relay wrote must read back, by the rule every sender check uses, as exactly the
    one address that was checked; Invalid naming ``from`` otherwise (nothing a receiver could read as
    another sender is queued)."""
    try:
        found = from_addresses(raw)
    except UnreadableFrom:
        found = []
    if found != [sender]:
        raise Invalid(
            "invalid_field", f"the From: header made of 'from' does not read back as exactly <{sender}>", where + "from"
        )


def error_json(exc: Refused) -> dict[str, Any]:
    """A refusal as one item of a batch's results."""
    return {"error": {"code": exc.code, "message": exc.http_message(), **({"field": exc.field} if exc.field else {})}}


# -- templates ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ToRender:
    """A message body waiting for its subject, html and text to be rendered."""

    data: dict[str, Any]
    source: Source
    variables: dict[str, Any]
    where: str


def variables_of(data: dict[str, Any], field: str = "variables") -> dict[str, Any]:
    variables = data.get(field, {})
    if variables is None:
        return {}
    if not isinstance(variables, dict):
        raise Invalid("invalid_field", f"'{field}' must be an object", field)
    return variables


async def to_render(
    store: Storage, data: dict[str, Any], variables: dict[str, Any] | None = None, where: str = ""
) -> ToRender | None:
    """A message body that names ``template_id``: its template and variables (None without template_id)."""
    if data.get("template_id") is None:
        return None
    template_id = data["template_id"]
    if any(data.get(p) is not None for p in PARTS):
        raise Invalid("invalid_field", "give either template_id or subject/html/text", f"{where}template_id")
    if not isinstance(template_id, str):
        raise Invalid("invalid_field", "'template_id' must be a string", f"{where}template_id")
    number = data.get("template_version")
    if number is not None and (not isinstance(number, int) or isinstance(number, bool)):
        raise Invalid("invalid_field", "'template_version' must be an integer", f"{where}template_version")
    template = await store.templates.template(template_id)
    if template is None:
        raise Invalid("invalid_field", f"no template {template_id}", f"{where}template_id")
    version = template.current if number is None else await store.templates.template_version(template_id, number)
    if version is None:
        raise Invalid("invalid_field", f"template {template_id} has no version {number}", f"{where}template_version")
    values = variables if variables is not None else variables_of(data)
    return ToRender(data, Source(version.subject, version.html, version.text), values, where)


def inline_to_render(data: dict[str, Any], variables: dict[str, Any], where: str = "") -> ToRender:
    """A personalised batch without a stored template: the subject, html and text are themselves templates."""
    problems = check_syntax({p: data.get(p) if isinstance(data.get(p), str) else None for p in PARTS})
    if problems:
        p = problems[0]
        where = f" (line {p.line})" if p.line is not None else ""
        raise Invalid("template_syntax_error", f"{p.part}{where}: {p.message}", f"message.{p.part}")
    subject, html, text = (data.get(p) for p in PARTS)
    source = Source(
        subject if isinstance(subject, str) else "",
        html if isinstance(html, str) else None,
        text if isinstance(text, str) else None,
    )
    return ToRender(data, source, variables, where)


async def render_bodies(renderer: Renderer, todo: list[ToRender]) -> list[dict[str, Any] | Refused]:
    """Every body rendered, in one task for the render processes (each distinct template sent once); a render
    that fails is that body's ``template_render_failed``. Raises Invalid 503 when no render process is free."""
    index: dict[Source, int] = {}
    jobs = [Job(index.setdefault(t.source, len(index)), t.variables) for t in todo]
    try:
        results = await renderer.render_many(list(index), jobs)
    except RendererBusy as exc:
        raise Invalid("service_unavailable", str(exc), http_status=503, retry_after=5) from None
    out: list[dict[str, Any] | Refused] = []
    for t, r in zip(todo, results, strict=True):
        if isinstance(r, RenderError):
            out.append(Invalid("template_render_failed", str(r), f"{t.where}variables"))
        else:
            out.append({**t.data, "template_id": None, "subject": r.subject, "html": r.html, "text": r.text})
    return out


async def render_message_fields(
    renderer: Renderer, store: Storage, data: dict[str, Any], variables: dict[str, Any] | None = None, where: str = ""
) -> dict[str, Any]:
    """A message body that names ``template_id``: the same body with subject, html and text rendered."""
    todo = await to_render(store, data, variables, where)
    if todo is None:
        return data
    (body,) = await render_bodies(renderer, [todo])
    if isinstance(body, Refused):
        raise body
    return body


BatchItem = tuple[dict[str, Any], dict[str, Any] | None, str]  # body, personal variables, field prefix


async def render_batch(renderer: Renderer, store: Storage, items: list[BatchItem]) -> list[dict[str, Any] | Refused]:
    """Each item's body with its templates rendered (items without one unchanged), or that item's error."""
    todo: list[ToRender | dict[str, Any] | Refused] = []
    for item, variables, where in items:
        try:
            if variables is not None and item.get("template_id") is None:
                todo.append(inline_to_render(item, variables, where))
            else:
                todo.append(await to_render(store, item, variables, where) or item)
        except Refused as exc:
            todo.append(exc)
    rendered = iter(await render_bodies(renderer, [t for t in todo if isinstance(t, ToRender)]))
    return [next(rendered) if isinstance(t, ToRender) else t for t in todo]


# -- messages -------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Draft:
    composition: Composition
    send_at: float | None
    suppressed: dict[str, str]
    where: str


def accepted_json(
    message: NewMessage, recipients: tuple[str, ...], suppressed: dict[str, str], send_at: float | None, sandbox: bool
) -> dict[str, Any]:
    """The 202's body for one message: each recipient queued (or scheduled) or suppressed."""
    waiting = (State.SCHEDULED if send_at is not None else State.QUEUED).value  # as GET /v1/messages/{id} shows
    return {
        "id": message.id,
        "status": waiting,
        "sandbox": sandbox,
        **({"send_at": iso(send_at)} if send_at is not None else {}),
        "recipients": [
            {"email": r, "status": "suppressed", "reason": suppressed[r]}
            if r in suppressed
            else {"email": r, "status": waiting}
            for r in recipients
        ],
    }


def quota_of(key: ApiKey) -> Quota | None:
    return Quota(key.id, key.daily_quota, key.monthly_quota) if key.daily_quota or key.monthly_quota else None


class HttpSubmission:
    """``POST /v1/messages`` and ``/v1/messages/batch`` without HTTP: JSON in, an :class:`Answer` out."""

    def __init__(
        self,
        acceptor: Acceptor,
        store: Storage,
        hostname: str,
        clock: Clock,
        limits: Limits,
        idempotency_ttl: float,
        max_schedule_ahead: float = 30 * 86400.0,
        max_batch: int = 500,
    ) -> None:
        self.acceptor = acceptor
        self.store = store  # templates and Idempotency-Key records
        self.hostname = hostname
        self.clock = clock
        self.limits = limits
        self.idempotency_ttl = idempotency_ttl
        self.max_schedule_ahead = max_schedule_ahead
        self.max_batch = max_batch
        self.builders: concurrent.futures.Executor | None = None  # set by the app: worker processes for batches
        self.renderer: Renderer | None = None  # set by the app: the template render processes

    # -- Idempotency-Key ----------------------------------------------------------------------------

    async def once(
        self, key: ApiKey, idempotency_key: str | None, request_hash: str, create: Callable[[], Awaitable[Answer]]
    ) -> Answer:
        """``create()`` run at most once per (key, Idempotency-Key); a retry gets the first answer again."""
        if idempotency_key is None:
            return await create()
        if not _IDEMPOTENCY_KEY.fullmatch(idempotency_key):
            raise Invalid("invalid_idempotency_key", "Idempotency-Key must be 1-255 printable ASCII characters")
        held = await self.store.idempotency.claim_idempotency_key(
            key.id, idempotency_key, request_hash, self.idempotency_ttl
        )
        if held is not None:
            return _replay(held, request_hash)
        try:
            async with self.store.idempotency.idempotency_lease(
                key.id, idempotency_key
            ):  # renewed; released on failure
                return await create()
        except ClaimLost:
            raise Invalid(
                "idempotency_in_progress",
                "this request outlived its claim on the Idempotency-Key"
                " and a retry took it over; this one queued nothing",
                http_status=409,
                retry_after=1,
            ) from None

    # -- one message --------------------------------------------------------------------------------

    async def send(self, data: dict[str, Any], key: ApiKey, idempotency_key: str | None) -> Answer:
        """Queue one message; its 202 answer is stored with it under the Idempotency-Key."""
        message, body = await self.prepare(data, key)
        text = strictjson.dumps(body)
        completion = Completion(key.id, idempotency_key, 202, text, message.id) if idempotency_key else None
        await self.acceptor.submit_many([message], quota_of(key), completion)
        log.info(
            "queued %s from=<%s> rcpts=%d size=%d via http key=%s",
            message.id,
            message.sender,
            len(message.recipients),
            len(message.raw),
            key.id,
        )
        return Answer(202, text)

    async def prepare(
        self, data: dict[str, Any], key: ApiKey, variables: dict[str, Any] | None = None, where: str = ""
    ) -> tuple[NewMessage, dict[str, Any]]:
        """A request body → the message to queue and its part of the answer. Raises Refused naming the field
        (prefixed with ``where``, e.g. ``messages[3].``)."""
        d = await self.draft(data, variables, where)
        return self.finish(d, key, build(d.composition, self.hostname, self.clock.now()))

    async def draft(self, data: dict[str, Any], variables: dict[str, Any] | None = None, where: str = "") -> Draft:
        """Everything but building the MIME message (which a batch does in bulk)."""
        send_at = self.send_at(data.get("send_at"))
        assert self.renderer is not None
        data = await render_message_fields(self.renderer, self.store, data, variables, where)
        try:
            composition = parse_request(data, self.limits)
        except FieldError as exc:
            raise Invalid(exc.code, str(exc), where + exc.field) from None
        recipients = composition.envelope_recipients
        suppressed = await self.acceptor.suppressed(recipients)
        if len(suppressed) == len(recipients):
            raise RecipientsSuppressed(suppressed).within(where)
        return Draft(composition, send_at, suppressed, where)

    def finish(self, d: Draft, key: ApiKey, raw: bytes) -> tuple[NewMessage, dict[str, Any]]:
        composition, recipients, suppressed, send_at, where = (
            d.composition,
            d.composition.envelope_recipients,
            d.suppressed,
            d.send_at,
            d.where,
        )
        check_from_header(raw, composition.sender.addr_spec, where)
        message = NewMessage(
            composition.sender.addr_spec,
            recipients,
            raw,
            "http",
            subject=composition.subject,
            tags=composition.tags,
            metadata=composition.metadata,
            api_key_id=key.id,
            suppressed={a: f"suppressed ({r}) at submission" for a, r in suppressed.items()},
            send_at=send_at,
            sandbox=key.test,
        )
        try:
            self.acceptor.check(message)
        except Refused as exc:
            raise exc.within(where) from None
        return message, accepted_json(message, recipients, suppressed, send_at, self.acceptor.sandboxed(message))

    def send_at(self, value: Any, field: str = "send_at", future_only: bool = False) -> float | None:
        """An ISO 8601 time (or unix seconds) within [server] max_schedule_ahead; a past time sends now."""
        if value is None:
            return None
        if isinstance(value, int | float) and not isinstance(value, bool):
            try:
                when = float(value)
            except OverflowError:  # an integer of hundreds of digits
                raise Invalid("invalid_field", f"'{field}' is out of range", field) from None
        elif isinstance(value, str):
            when = parse_time(field, value)
        else:
            raise Invalid("invalid_field", f"'{field}' must be an ISO 8601 time", field)
        now = self.clock.now()
        if when > now + self.max_schedule_ahead:
            days = self.max_schedule_ahead / 86400
            raise Invalid("invalid_field", f"'{field}' may be at most {days:g} days ahead", field)
        if when <= now:
            if future_only:
                raise Invalid("invalid_field", f"'{field}' must be in the future", field)
            return None
        return when

    # -- a batch ------------------------------------------------------------------------------------

    async def send_batch(self, data: dict[str, Any], key: ApiKey, idempotency_key: str | None) -> Answer:
        """Queue the valid messages of a batch in one transaction (all or none with ``atomic``)."""
        atomic = data.get("atomic", False)
        if not isinstance(atomic, bool):
            raise Invalid("invalid_field", "'atomic' must be true or false", "atomic")
        outcomes: list[Draft | dict[str, Any]] = []
        items = self.batch_items(data)
        assert self.renderer is not None
        bodies = await render_batch(self.renderer, self.store, items)  # all of the batch's renders in one task
        for (_, variables, where), body in zip(items, bodies, strict=True):
            try:
                if isinstance(body, Refused):
                    raise body
                outcomes.append(await self.draft(body, variables, where))
            except Refused as exc:
                outcomes.append(error_json(exc))
        drafts = [d for d in outcomes if isinstance(d, Draft)]
        raws = iter(await self.build_all([d.composition for d in drafts]))
        results: list[dict[str, Any]] = []
        prepared: list[NewMessage] = []
        for index, outcome in enumerate(outcomes):
            if isinstance(outcome, Draft):
                try:
                    message, body = self.finish(outcome, key, next(raws))
                except Refused as exc:
                    results.append({"index": index, **error_json(exc)})
                    continue
                prepared.append(message)
                results.append({"index": index, **body})
            else:
                results.append({"index": index, **outcome})
        failed = [r for r in results if "error" in r]
        if atomic and failed:
            first = failed[0]["error"]
            raise Invalid(
                "batch_rejected",
                f"{len(failed)} of {len(results)} messages are invalid (atomic); the first: {first['message']}",
                first.get("field"),
            )
        if not prepared:
            raise Invalid(
                "batch_rejected",
                f"none of the {len(results)} messages is valid; the first: {failed[0]['error']['message']}",
                failed[0]["error"].get("field"),
            )
        text = strictjson.dumps({"queued": len(prepared), "failed": len(failed), "results": results})
        completion = Completion(key.id, idempotency_key, 202, text, None) if idempotency_key else None
        await self.acceptor.submit_many(prepared, quota_of(key), completion)
        log.info("queued a batch of %d messages (%d refused) via http key=%s", len(prepared), len(failed), key.id)
        return Answer(202, text)

    def batch_items(self, data: dict[str, Any]) -> list[BatchItem]:
        """(message body, personal variables, field prefix) per item: ``messages`` or ``message`` + ``recipients``."""
        if "messages" in data:
            items = data["messages"]
            if not isinstance(items, list) or not items or len(items) > self.max_batch:
                raise Invalid(
                    "invalid_field", f"'messages' must be a list of 1 to {self.max_batch} messages", "messages"
                )
            for i, item in enumerate(items):
                if not isinstance(item, dict):
                    raise Invalid("invalid_field", "each message is an object", f"messages[{i}]")
            return [(item, None, f"messages[{i}].") for i, item in enumerate(items)]
        base, people = data.get("message"), data.get("recipients")
        if not isinstance(base, dict) or not isinstance(people, list):
            raise Invalid("missing_field", "give 'messages', or 'message' with 'recipients'", "messages")
        if not people or len(people) > self.max_batch:
            raise Invalid("invalid_field", f"'recipients' must be a list of 1 to {self.max_batch}", "recipients")
        out: list[BatchItem] = []
        for i, person in enumerate(people):
            if not isinstance(person, dict) or "to" not in person:
                raise Invalid("invalid_field", "each recipient is an object with 'to'", f"recipients[{i}]")
            variables = person.get("variables", {})
            if not isinstance(variables, dict):
                raise Invalid("invalid_field", "'variables' must be an object", f"recipients[{i}].variables")
            item = {**base, **{k: person[k] for k in ("to", "cc", "bcc", "metadata") if k in person}}
            out.append((item, variables, f"recipients[{i}]."))
        return out

    async def build_all(self, compositions: list[Composition]) -> list[bytes]:
        """MIME building with the email package is the costly part of a batch: in a big batch, the messages that
        need it are built in worker processes, the common ones right here (relay.compose_direct writes them
        ~20x faster than the email package: cheaper than sending them to a worker)."""
        now = self.clock.now()
        if len(compositions) < BULK_BUILD or self.builders is None:
            return build_many(compositions, self.hostname, now)
        raws = [build_common(c, self.hostname, now) for c in compositions]
        rest = [c for c, raw in zip(compositions, raws, strict=True) if raw is None]
        built = iter(
            await self.build_in_workers(rest, now) if len(rest) >= BULK_BUILD else build_many(rest, self.hostname, now)
        )
        return [raw if raw is not None else next(built) for raw in raws]

    async def build_in_workers(self, compositions: list[Composition], now: float) -> list[bytes]:
        """``build_many`` in the worker processes, half each."""
        assert self.builders is not None
        loop = asyncio.get_running_loop()
        half = (len(compositions) + 1) // 2
        parts = await asyncio.gather(
            *(
                loop.run_in_executor(self.builders, build_many, chunk, self.hostname, now)
                for chunk in (compositions[:half], compositions[half:])
            )
        )
        return [raw for part in parts for raw in part]


def _replay(held: IdempotencyRecord, request_hash: str) -> Answer:
    if held.request_hash != request_hash:
        raise Invalid(
            "idempotency_key_reused", "this Idempotency-Key was used with a different request body", http_status=422
        )
    if held.state != "done" or held.status is None or held.body is None:
        raise Invalid(
            "idempotency_in_progress",
            "a request with this Idempotency-Key is still in progress",
            http_status=409,
            retry_after=1,
        )
    return Answer(held.status, held.body, replayed=True)
