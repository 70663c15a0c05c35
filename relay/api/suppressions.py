"""/v1/suppressions, /v1/allowlist and /v1/bounces (scope ``suppressions``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from relay.api.app import ROW_ID_LIMIT, ApiError, page_limit, read_json_object, require, row_cursor
from relay.api.messages import parse_search_text
from relay.clock import iso
from relay.message import MAX_ADDRESS, address_fault, control_fault, split_address
from relay.store.protocols import SuppressionStore
from relay.store.suppressions import Bounce, BounceFilter, Suppression, SuppressionFilter
from relay.submission.http import parse_time
from relay.suppression import entry_fault

MAX_PAGE = 500
MAX_BATCH = 1000
KINDS = ("hard", "soft", "block", "complaint", "auto_reply", "unknown")


def suppression_json(s: Suppression) -> dict[str, Any]:
    return {
        "email": s.address,
        "reason": s.reason,
        "detail": s.detail,
        "bounce_id": s.bounce_id,
        "message_id": s.message_id,
        "created_at": iso(s.created_at),
        "expires_at": iso(s.expires_at),
    }


def bounce_json(b: Bounce, with_report: bool = False) -> dict[str, Any]:
    data = dataclasses.asdict(b)
    data["at"] = iso(b.at)
    data["type"] = data.pop("kind")
    data["email"] = data.pop("recipient")
    if not with_report:
        data.pop("report")
    return data


def parse_emails(data: Mapping[str, Any]) -> list[str]:
    """``{"email": "a@x"}`` or ``{"emails": ["a@x", ...]}``."""
    if "emails" in data:
        emails = data["emails"]
        field = "emails"
        if not isinstance(emails, list) or not emails or len(emails) > MAX_BATCH:
            raise ApiError(400, "invalid_field", f"'emails' must be a list of 1 to {MAX_BATCH} addresses", field)
    elif "email" in data:
        emails, field = [data["email"]], "email"
    else:
        raise ApiError(400, "missing_field", "give 'email' or 'emails'", "email")
    for e in emails:
        if not isinstance(e, str) or split_address(e) is None:
            raise ApiError(400, "invalid_field", f"not an email address: {e!r}", field)
        fault = address_fault(e)  # what no message could be sent to needs no suppression (PostgreSQL: 503)
        if fault is not None:
            raise ApiError(400, "invalid_field", f"the address {fault}", field)
    return emails


def parse_note(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key, "")
    if not isinstance(value, str) or len(value) > 500:
        raise ApiError(400, "invalid_field", f"'{key}' must be a string of at most 500 characters", key)
    return value


def parse_entry(data: Mapping[str, Any]) -> str:
    """An allowlist ``entry``: an address or a domain, as mail goes to (the rules of submission)."""
    entry = data.get("entry")
    if not isinstance(entry, str) or entry_fault(entry) is not None:
        raise ApiError(400, "invalid_field", "'entry' must be an address or a domain", "entry")
    return entry


def suppression_filter(query: Mapping[str, str]) -> SuppressionFilter:
    """``GET /v1/suppressions``'s filters: reason, search (part of the address), since, until, cursor."""
    cursor = query.get("cursor") or None
    if cursor is not None and (control_fault(cursor) or len(cursor.encode("utf-8", "surrogatepass")) > MAX_ADDRESS):
        # The cursor is an address a previous page ended with. A NUL in one gave every suppression on SQLite
        # and none on PostgreSQL (where the NUL became U+FFFD, which sorts after every address).
        raise ApiError(400, "invalid_field", "'cursor' must be the next_cursor of a previous page", "cursor")
    return SuppressionFilter(
        reason=query.get("reason") or None,
        search=parse_search_text("search", query.get("search") or None),
        after=cursor,
        since=parse_time("since", query["since"]) if "since" in query else None,
        until=parse_time("until", query["until"]) if "until" in query else None,
    )


def bounce_filter(query: Mapping[str, str]) -> BounceFilter:
    """``GET /v1/bounces``'s filters: kind (or type), recipient (or email), message_id, cursor."""
    kind = _one_of(query, "kind", "type")
    if kind is not None and kind not in KINDS:
        name = "kind" if "kind" in query else "type"
        raise ApiError(400, "invalid_field", f"'{name}' must be one of {', '.join(KINDS)}", name)
    before = row_cursor(query["cursor"], "cursor", "'cursor' must be a bounce id") if query.get("cursor") else None
    return BounceFilter(
        kind=kind,
        recipient=_one_of(query, "recipient", "email"),
        message_id=query.get("message_id") or None,
        before=before,
    )


def parse_bounce_id(text: str) -> int | None:
    """A bounce id from a path (None: not a number); the store is asked only for ids it can hold."""
    try:
        return int(text)
    except ValueError:
        return None


def _one_of(query: Any, name: str, alias: str) -> str | None:
    """A filter that answers to two names (``kind`` or ``type``): either, or both if they agree."""
    values = {v for v in (query.get(name), query.get(alias)) if v}
    if len(values) > 1:
        raise ApiError(400, "invalid_field", f"'{name}' and '{alias}' are the same filter; give one", name)
    return values.pop() if values else None


class SuppressionsView:
    def __init__(self, store: SuppressionStore) -> None:
        self.store = store

    def routes(self) -> list[web.RouteDef]:
        scope = require("suppressions")
        return [
            web.get("/v1/suppressions", scope(self.index)),
            web.post("/v1/suppressions", scope(self.create)),
            web.get("/v1/suppressions/{email}", scope(self.show)),
            web.delete("/v1/suppressions/{email}", scope(self.delete)),
            web.get("/v1/allowlist", scope(self.allowlist)),
            web.post("/v1/allowlist", scope(self.allow)),
            web.delete("/v1/allowlist/{entry}", scope(self.disallow)),
            web.get("/v1/bounces", scope(self.bounces)),
            web.get("/v1/bounces/{id}", scope(self.bounce)),
        ]

    async def index(self, request: web.Request) -> web.Response:
        q = request.query
        limit = page_limit(q, 50, MAX_PAGE)
        rows = await self.store.query(suppression_filter(q), limit + 1)
        page = rows[:limit]
        return web.json_response(
            {
                "data": [suppression_json(s) for s in page],
                "next_cursor": page[-1].address if len(rows) > limit else None,
            }
        )

    async def create(self, request: web.Request) -> web.Response:
        data = await read_json_object(request)
        emails = parse_emails(data)
        created = await self.store.suppress(emails, "manual", parse_note(data, "note"))
        return web.json_response({"data": [suppression_json(s) for s in created]}, status=201)

    async def show(self, request: web.Request) -> web.Response:
        s = await self.store.suppression(request.match_info["email"])
        if s is None:
            raise ApiError(404, "not_found", f"{request.match_info['email']} is not suppressed")
        return web.json_response(suppression_json(s))

    async def delete(self, request: web.Request) -> web.Response:
        email = request.match_info["email"]
        if not await self.store.unsuppress(email):
            raise ApiError(404, "not_found", f"{email} is not suppressed")
        return web.json_response({"email": email.lower(), "suppressed": False})

    async def allowlist(self, request: web.Request) -> web.Response:
        rows = await self.store.allowlist()
        return web.json_response({"data": [{"entry": e, "note": n, "created_at": iso(t)} for e, n, t in rows]})

    async def allow(self, request: web.Request) -> web.Response:
        data = await read_json_object(request)
        normal = await self.store.allow(parse_entry(data), parse_note(data, "note"))
        return web.json_response({"entry": normal}, status=201)

    async def disallow(self, request: web.Request) -> web.Response:
        if not await self.store.disallow(request.match_info["entry"]):
            raise ApiError(404, "not_found", f"{request.match_info['entry']} is not on the allowlist")
        return web.json_response({"entry": request.match_info["entry"].lower(), "allowed": False})

    async def bounces(self, request: web.Request) -> web.Response:
        q = request.query
        limit = page_limit(q, 50, MAX_PAGE)
        rows = await self.store.bounces(bounce_filter(q), limit + 1)
        page = rows[:limit]
        return web.json_response(
            {
                "data": [bounce_json(b) for b in page],
                "next_cursor": str(page[-1].id) if len(rows) > limit else None,
            }
        )

    async def bounce(self, request: web.Request) -> web.Response:
        bounce_id = parse_bounce_id(request.match_info["id"])
        if bounce_id is None:
            raise ApiError(404, "not_found", f"no bounce {request.match_info['id']}")
        b = await self.store.bounce(bounce_id) if 0 < bounce_id < ROW_ID_LIMIT else None
        if b is None:
            raise ApiError(404, "not_found", f"no bounce {bounce_id}")
        return web.json_response(bounce_json(b, with_report=True))
