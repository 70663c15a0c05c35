"""``/v1/sandbox/messages`` (scope read): messages captured instead of delivered, newest first, and each one
rendered (envelope, headers, text, html, attachments) or raw."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from relay.api.app import ApiError, own_filter, page_limit, readable, require
from relay.api.messages import MAX_PAGE, message_json
from relay.sandbox import FORMATS, render
from relay.store.protocols import QueueStore
from relay.store.queue import MessageRecord


def sandbox_json(message: MessageRecord, raw: bytes | None) -> dict[str, Any]:
    """One captured message as the API and ``relay sandbox show --json`` give it."""
    rendered = (
        render(raw).as_json() if raw is not None else {"headers": [], "text": None, "html": None, "attachments": []}
    )
    return {
        **message_json(message),
        "envelope": {"from": message.sender, "to": [r.address for r in message.recipients]},
        **rendered,
        "body_deleted": raw is None,
    }


class SandboxView:
    def __init__(self, store: QueueStore) -> None:
        self.store = store

    def routes(self) -> list[web.RouteDef]:
        read = require("read")
        return [
            web.get("/v1/sandbox/messages", read(self.index)),
            web.get("/v1/sandbox/messages/{id}", read(self.show)),
            web.get("/v1/sandbox/messages/{id}/raw", read(self.raw)),
        ]

    async def index(self, request: web.Request) -> web.Response:
        limit = page_limit(request.query, 20, MAX_PAGE)
        rows = await self.store.sandbox_messages(request.query.get("cursor") or None, limit + 1, own_filter(request))
        page = rows[:limit]
        return web.json_response(
            {"data": [message_json(m) for m in page], "next_cursor": page[-1].id if len(rows) > limit else None}
        )

    async def _find(self, request: web.Request) -> tuple[MessageRecord, bytes | None]:
        found = await self.store.sandbox_message(request.match_info["id"])
        readable(request, found[0] if found else None, "sandboxed message")
        assert found is not None
        return found

    async def show(self, request: web.Request) -> web.Response:
        """The message rendered; ``?format=raw`` gives the RFC 5322 bytes (like ``/raw``)."""
        fmt = request.query.get("format", "json")
        if fmt not in FORMATS:
            raise ApiError(400, "invalid_field", "'format' must be json or raw", "format")
        if fmt == "raw":
            return await self.raw(request)
        message, raw = await self._find(request)
        return web.json_response(sandbox_json(message, raw))

    async def raw(self, request: web.Request) -> web.Response:
        message, raw = await self._find(request)
        if raw is None:
            raise ApiError(404, "not_found", f"the body of {message.id} was deleted ([retention] bodies)")
        return web.Response(body=raw, content_type="message/rfc822")
