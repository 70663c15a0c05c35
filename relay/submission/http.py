"""HTTP submission: ``POST /v1/messages`` builds a MIME message and queues it."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from relay.api import API_KEY, ApiError, read_json_object, require
from relay.clock import Clock
from relay.compose import Composition, FieldError, build, parse_addresses
from relay.message import NewMessage
from relay.submission.accept import Acceptor, MessageTooLarge

log = logging.getLogger(__name__)


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def composition_from_json(data: dict[str, Any]) -> Composition:
    """Validate the request fields (unknown fields are ignored) into a Composition."""
    sender = parse_addresses("from", data.get("from"), required=True)
    if len(sender) != 1:
        raise FieldError("from", "'from' must be a single address")
    subject = data.get("subject", "")
    if not isinstance(subject, str):
        raise FieldError("subject", "'subject' must be a string")
    if "\n" in subject or "\r" in subject:
        raise FieldError("subject", "'subject' contains a line break")
    bodies = {}
    for field in ("text", "html"):
        value = data.get(field)
        if value is not None and not isinstance(value, str):
            raise FieldError(field, f"'{field}' must be a string")
        bodies[field] = value
    if bodies["text"] is None and bodies["html"] is None:
        raise FieldError("text", "give 'text', 'html' or both", "missing_field")
    composition = Composition(
        sender=sender[0],
        to=parse_addresses("to", data.get("to"), required=True),
        cc=parse_addresses("cc", data.get("cc")),
        bcc=parse_addresses("bcc", data.get("bcc")),
        reply_to=parse_addresses("reply_to", data.get("reply_to")),
        subject=subject,
        text=bodies["text"],
        html=bodies["html"],
    )
    return composition


class MessagesView:
    def __init__(self, acceptor: Acceptor, hostname: str, clock: Clock, max_recipients: int) -> None:
        self.acceptor = acceptor
        self.hostname = hostname
        self.clock = clock
        self.max_recipients = max_recipients

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1/messages", require("send")(self.create)),
            web.get("/v1/messages/{id}", require("read")(self.show)),
        ]

    async def show(self, request: web.Request) -> web.Response:
        message_id = request.match_info["id"]
        statuses = await self.acceptor.store.message_status(message_id)
        if not statuses:
            raise ApiError(404, "not_found", f"no message {message_id}")
        recipients = [
            {
                "email": s.address,
                "status": s.state,
                "attempts": s.attempts,
                "next_attempt_at": _iso(s.next_attempt_at),
                "last_response": None if s.last_response is None else f"{s.last_code or ''} {s.last_response}".strip(),
            }
            for s in statuses
        ]
        return web.json_response({"id": message_id, "recipients": recipients})

    async def create(self, request: web.Request) -> web.Response:
        data = await read_json_object(request)
        try:
            composition = composition_from_json(data)
        except FieldError as exc:
            raise ApiError(422, exc.code, str(exc), exc.field) from None
        recipients = composition.envelope_recipients
        if len(recipients) > self.max_recipients:
            raise ApiError(422, "too_many_recipients", f"at most {self.max_recipients} recipients", "to")
        raw = build(composition, self.hostname, self.clock.now())
        message = NewMessage(composition.sender.addr_spec, recipients, raw, "http")
        try:
            await self.acceptor.submit(message)
        except MessageTooLarge as exc:
            raise ApiError(413, "message_too_large", str(exc)) from None
        log.info(
            "queued %s from=<%s> rcpts=%d size=%d via http key=%s",
            message.id,
            message.sender,
            len(recipients),
            len(raw),
            request[API_KEY].id,
        )
        body = {
            "id": message.id,
            "status": "queued",
            "recipients": [{"email": r, "status": "queued"} for r in recipients],
        }
        return web.json_response(body, status=202)
