"""One message: envelope, headers, tags and metadata, each recipient's timeline, its events and the
webhook deliveries they caused; for admins, retry now, cancel (after a confirmation) and the raw source.

Reads are the store's (``queue.message``, ``queue.attempts``, ``events.message_events``,
``webhooks.message_deliveries``, ``bodies.raw_message``); the actions do what ``POST
/v1/messages/{id}/retry`` (relay.api.queues) and ``DELETE /v1/messages/{id}`` (relay.api.messages) do, with
the same store calls, for an operator that, like an admin key, may change any message.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Sequence
from urllib.parse import quote

from aiohttp import web

from relay.dashboard.access import admin, signed_in
from relay.dashboard.deps import deps
from relay.dashboard.message_source import Source, read_source
from relay.dashboard.render import render
from relay.store.events import Event
from relay.store.protocols import Storage
from relay.store.queue import Attempt, MessageRecord, Selection

TIMELINES = 100  # recipients whose attempts the page shows; a larger message lists the rest by state only
DELIVERIES = 200
NOTICES = {
    "retried": "Retry now: {n} recipient(s) due again.",
    "cancelled": "Cancelled {n} recipient(s).",
    "nothing-to-cancel": "Nothing to cancel: every recipient had already reached a final state.",
}


def href(message_id: str, action: str = "") -> str:
    return f"/dashboard/messages/{quote(message_id, safe='')}" + (f"/{action}" if action else "")


@dataclasses.dataclass(frozen=True)
class Step:
    """One attempt for one recipient, with the outcome and classification its event recorded."""

    at: float
    mx_host: str | None
    ip: str | None
    tls: str | None
    reply: str
    outcome: str | None  # delivered, deferred, bounced …: the event written with the attempt
    classification: str | None
    reason: str | None


def steps(address: str, attempts: Sequence[Attempt], events: Sequence[Event]) -> list[Step]:
    """``attempts`` with what each one's event says: the queue writes both with the same time."""
    by_time = {e.at: e for e in events if e.recipient == address and "attempt" in e.details}
    made = []
    for a in attempts:
        event = by_time.get(a.at)
        details = event.details if event else {}
        made.append(
            Step(
                a.at,
                a.mx_host,
                a.ip,
                a.tls,
                f"{a.code or ''} {a.text or ''}".strip(),
                event.type if event else None,
                details.get("classification"),
                details.get("reason"),
            )
        )
    return made


def event_detail(e: Event) -> str:
    """An event's reply or reason in one line."""
    return " ".join(str(part) for part in (e.code, e.detail) if part not in (None, ""))


async def _timelines(store: Storage, m: MessageRecord, events: list[Event]) -> dict[str, list[Step]]:
    shown = m.recipients[:TIMELINES]
    found = await asyncio.gather(*(store.queue.attempts(m.id, r.address) for r in shown))
    return {r.address: steps(r.address, attempts, events) for r, attempts in zip(shown, found, strict=True)}


async def _message(request: web.Request) -> MessageRecord:
    m = await deps(request).store.queue.message(request.match_info["id"])
    if m is None:
        raise web.HTTPNotFound(reason="no such message")
    return m


def _notice(request: web.Request) -> str:
    """The notice of the action that redirected here: fixed texts only, never text from the URL."""
    template = NOTICES.get(request.query.get("done", ""))
    n = request.query.get("n", "0")
    return template.format(n=int(n) if n.isascii() and n.isdigit() else 0) if template else ""


@signed_in
async def show(request: web.Request) -> web.StreamResponse:
    store = deps(request).store
    m = await _message(request)
    events = await store.events.message_events(m.id)
    raw = await store.bodies.raw_message(m.id)
    source: Source | None = None if raw is None else await asyncio.to_thread(read_source, raw)
    return render(
        request,
        "message.html",
        m=m,
        notice=_notice(request),
        href=href(m.id),
        source=source,
        metadata=json.dumps(m.metadata, indent=2, sort_keys=True, ensure_ascii=False) if m.metadata else "",
        timelines=await _timelines(store, m, events),
        events=events,
        event_detail=event_detail,
        event_types={e.id: e.type for e in events},
        deliveries=await store.webhooks.message_deliveries(m.id, DELIVERIES),
        pending=any(r.state in ("queued", "scheduled", "deferred") for r in m.recipients),
    )


@admin
async def retry(request: web.Request) -> web.StreamResponse:
    """As ``POST /v1/messages/{id}/retry``: the message's waiting recipients due now, the engine woken."""
    d = deps(request)
    m = await _message(request)
    retried = await d.store.queue.retry_now(Selection(message_id=m.id))
    d.on_queue_change()
    raise web.HTTPSeeOther(f"{href(m.id)}?done=retried&n={retried}")


@admin
async def confirm_cancel(request: web.Request) -> web.StreamResponse:
    m = await _message(request)
    return render(request, "message_cancel.html", m=m, href=href(m.id))


@admin
async def cancel(request: web.Request) -> web.StreamResponse:
    """As ``DELETE /v1/messages/{id}``: the recipients not yet delivered are cancelled."""
    m = await _message(request)
    cancelled = await deps(request).store.queue.cancel_message(m.id)
    done = f"done=cancelled&n={len(cancelled)}" if cancelled else "done=nothing-to-cancel"
    raise web.HTTPSeeOther(f"{href(m.id)}?{done}")


@admin
async def raw_source(request: web.Request) -> web.StreamResponse:
    """The message as stored, as a download (admins only: it is the whole mail, every attachment)."""
    m = await _message(request)
    raw = await deps(request).store.bodies.raw_message(m.id)
    if raw is None:
        raise web.HTTPNotFound(reason="the body of this message is no longer stored ([retention] bodies)")
    return web.Response(
        body=raw,
        content_type="message/rfc822",
        headers={"Content-Disposition": f'attachment; filename="{m.id}.eml"'},
    )


def routes() -> list[web.RouteDef]:
    one = "/messages/{id:[^{}/]+}"
    return [
        web.get(one, show),
        web.post(f"{one}/retry", retry),
        web.get(f"{one}/cancel", confirm_cancel),
        web.post(f"{one}/cancel", cancel),
        web.get(f"{one}/raw", raw_source),
    ]
