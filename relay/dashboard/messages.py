"""The Messages page: the message log searched and paged newest first, as ``GET /v1/messages`` lists it.

The search form is :data:`FILTERS`: one :class:`FilterField` per :class:`relay.store.queue.MessageFilter`
field an operator may set, each parsed by the API's rule for that query parameter. Adding a filter the
store has learnt is one line there. The message page itself is :mod:`relay.dashboard.message_page`.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote, urlencode

from aiohttp import web

from relay.api.app import page_limit
from relay.api.messages import parse_search_text, parse_sender, parse_status
from relay.dashboard import message_page
from relay.dashboard.access import signed_in
from relay.dashboard.deps import deps
from relay.dashboard.pages import Page
from relay.dashboard.render import FormErrors, render
from relay.errors import Refused
from relay.events import State
from relay.message import is_message_id
from relay.store.queue import MessageFilter, MessageRecord
from relay.submission.http import parse_time

PAGE_SIZE = 50
MAX_PAGE = 100  # as GET /v1/messages
SHOWN_RECIPIENTS = 2  # per row; the rest as "+N"
STATES = tuple(s.value for s in State)


def status(field: str, text: str) -> str | None:
    return parse_status(text)


def sender(field: str, text: str) -> str | None:
    return parse_sender(text)


def search_text(field: str, text: str) -> str | None:
    return parse_search_text(field, text, spaces=field != "message_id")


def as_text(field: str, text: str) -> str:
    return text


@dataclasses.dataclass(frozen=True)
class FilterField:
    """One search field: the MessageFilter field and query parameter ``name``, and how its text is read."""

    name: str
    label: str
    parse: Callable[[str, str], Any] = as_text
    choices: tuple[str, ...] = ()  # a select of these (and "any") instead of a text box
    placeholder: str = ""


FILTERS = (
    FilterField("recipient", "Recipient", placeholder="someone@example.org"),
    FilterField("sender", "Sender", sender, placeholder="app@example.com or example.com"),
    FilterField("subject", "Subject contains", search_text),
    FilterField("message_id", "Message id", search_text, placeholder="relay's id or the Message-ID header"),
    FilterField("tag", "Tag"),
    FilterField("status", "Status", status, choices=STATES),
    FilterField("since", "Since (UTC)", parse_time, placeholder="2026-01-31 08:00"),
    FilterField("until", "Until (UTC)", parse_time, placeholder="2026-01-31 18:00"),
)


def message_filter(query: Mapping[str, str]) -> tuple[MessageFilter, FormErrors]:
    """The filter the search form asks for; a field the API would refuse is left out and its error kept."""
    values: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for f in FILTERS:
        text = query.get(f.name, "").strip()
        if not text:
            continue
        try:
            values[f.name] = f.parse(f.name, text)
        except Refused as exc:
            errors[f.name] = exc.http_message()
    cursor = query.get("cursor", "")
    before = cursor if is_message_id(cursor) else None  # only a link of the page before makes one: else the first page
    return MessageFilter(before=before, **values), FormErrors(errors)


def state_counts(m: MessageRecord) -> list[tuple[str, int]]:
    """How many recipients are in each state, in the order of the life cycle (State)."""
    counts = Counter(r.state for r in m.recipients)
    return [(state, counts[state]) for state in STATES if counts[state]]


def row(m: MessageRecord) -> dict[str, Any]:
    addresses = [r.address for r in m.recipients]
    return {
        "id": m.id,
        "href": message_page.href(m.id),
        "created_at": m.created_at,
        "sender": m.sender,
        "to": addresses[:SHOWN_RECIPIENTS],
        "more": max(0, len(addresses) - SHOWN_RECIPIENTS),
        "subject": m.subject,
        "states": state_counts(m),
        "tags": m.tags,
    }


def page_url(query: Mapping[str, str], cursor: str | None) -> str:
    """This search again, from ``cursor`` (None: the first page)."""
    kept = {f.name: query[f.name] for f in FILTERS if query.get(f.name)}
    if query.get("limit"):
        kept["limit"] = query["limit"]
    if cursor:
        kept["cursor"] = cursor
    return "/dashboard/messages" + ("?" + urlencode(kept, quote_via=quote) if kept else "")


@signed_in
async def index(request: web.Request) -> web.StreamResponse:
    query = request.query
    search, errors = message_filter(query)
    try:
        limit = page_limit(query, PAGE_SIZE, MAX_PAGE)
    except Refused as exc:
        limit, errors = PAGE_SIZE, FormErrors({**errors.fields, "limit": exc.http_message()})
    found = None if errors else await deps(request).store.queue.search(search, limit)
    page = found.messages if found is not None else []
    return render(
        request,
        "messages.html",
        status=400 if errors else 200,
        errors=errors,
        filters=FILTERS,
        values={field.name: query.get(field.name, "") for field in FILTERS},
        rows=[row(m) for m in page],
        first_page=page_url(query, None) if search.before else None,
        next_page=page_url(query, found.next_cursor) if found is not None and found.next_cursor else None,
    )


PAGE = Page("Messages", "/messages", [web.get("/messages", index), *message_page.routes()])
