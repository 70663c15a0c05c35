"""The queue page: waiting mail per destination domain, and what an operator can do about a domain.

Reads and actions are those of ``/v1/sending-queues`` (relay/api/queues.py): ``QueueStore.domain_queues``
shaped by ``queue_json``, the last error of each domain on the page (``SiteStore.last_errors``), and
suspend (``parse_suspension`` / ``parse_reason``), resume, retry now, bounce and purge with the store calls
``QueuesView`` makes; resume and retry wake the delivery engine as it does. Bounce and purge ask first:
their form posts without ``confirm`` and gets a confirmation page, whose form posts again with it.
"""

from __future__ import annotations

from typing import Any, NoReturn
from urllib.parse import quote, urlencode

from aiohttp import web

from relay.api.app import ApiError
from relay.api.queues import parse_queue_domain, parse_reason, parse_suspension, queue_json
from relay.dashboard.access import admin, signed_in
from relay.dashboard.deps import DashboardDeps, deps
from relay.dashboard.pages import Page
from relay.dashboard.render import FormErrors, render, when
from relay.message import domain_key
from relay.store.queue import DomainQueue, Selection

PAGE_SIZE = 50
DURATIONS = ("15m", "1h", "4h", "12h", "1d", "7d")


def queue_url(domain: str | None = None, done: str = "") -> str:
    """``/dashboard/queue`` or one domain's page, with a notice to show (``done``)."""
    path = "/dashboard/queue" + (f"/{quote(domain, safe='')}" if domain else "")
    return path + (f"?{urlencode({'done': done})}" if done else "")


def page_offset(query: Any) -> int:
    """``?offset=`` as a non-negative page start (anything else: the first page)."""
    text = query.get("offset", "")
    return int(text) if text.isascii() and text.isdigit() and len(text) < 10 else 0


def _row(q: DomainQueue) -> dict[str, Any]:
    """The API's shape of a destination queue, plus its times as numbers for the page to format and the
    path of its page (the domain quoted here, never in a template)."""
    return {**queue_json(q), "oldest": q.oldest, "until": q.suspended_until, "href": queue_url(q.domain)}


async def _rows(d: DashboardDeps, offset: int) -> tuple[list[dict[str, Any]], int]:
    """A page of destination queues, each with its last error; and how many domains there are."""
    queues = await d.store.queue.domain_queues()
    page = [_row(q) for q in queues[offset : offset + PAGE_SIZE]]
    errors = await d.store.sites.last_errors([q["domain"] for q in page])
    for q in page:
        q["last_error"] = errors.get(q["domain"])
    return page, len(queues)


async def _domain(d: DashboardDeps, domain: str) -> dict[str, Any]:
    """One domain's row (zeros when nothing waits for it)."""
    domain = domain_key(domain)
    found = next((q for q in await d.store.queue.domain_queues() if q.domain == domain), None)
    row = _row(found or DomainQueue(domain, 0, 0, 0, 0, None, None))
    row["last_error"] = (await d.store.sites.last_errors([domain])).get(domain)
    return row


@signed_in
async def queue_page(request: web.Request) -> web.StreamResponse:
    offset = page_offset(request.query)
    rows, total = await _rows(deps(request), offset)
    return render(
        request,
        "queue.html",
        queues=rows,
        total=total,
        offset=offset,
        page_size=PAGE_SIZE,
        done=request.query.get("done", ""),
    )


async def _domain_page(request: web.Request, status: int = 200, **context: Any) -> web.StreamResponse:
    d = deps(request)
    row = await _domain(d, request.match_info["domain"])
    form = {"duration": "1h", "reason": "", "bounce_reason": "", **context.pop("form", {})}
    context.setdefault("failed", "")
    return render(
        request,
        "queue_domain.html",
        status=status,
        q=row,
        form=form,
        durations=DURATIONS,
        done=request.query.get("done", ""),
        **context,
    )


@signed_in
async def domain_page(request: web.Request) -> web.StreamResponse:
    return await _domain_page(request)


async def _form(request: web.Request) -> dict[str, str]:
    posted = await request.post()
    return {k: v for k, v in posted.items() if isinstance(v, str) and k != "csrf_token"}


@admin
async def suspend(request: web.Request) -> web.StreamResponse:
    form = await _form(request)
    try:
        domain = parse_queue_domain(request.match_info["domain"])
        duration = parse_suspension(form)
        reason = parse_reason(form)
    except ApiError as exc:
        return await _domain_page(request, status=400, errors=FormErrors.of(exc), form=form, failed="suspend")
    until = await deps(request).store.queue.suspend_domain(domain, duration, reason)
    _done(queue_url(done=f"{domain} is suspended until {when(until)}"))


@admin
async def resume(request: web.Request) -> web.StreamResponse:
    d = deps(request)
    domain = request.match_info["domain"].lower()
    if not await d.store.queue.resume_domain(domain):
        _done(queue_url(done=f"{domain} was not suspended"))
    d.on_queue_change()
    _done(queue_url(done=f"{domain} is resumed"))


@admin
async def retry(request: web.Request) -> web.StreamResponse:
    d = deps(request)
    domain = request.match_info["domain"].lower()
    retried = await d.store.queue.retry_now(Selection(domain=domain))
    d.on_queue_change()
    _done(queue_url(done=f"{retried} recipient(s) for {domain} will be tried now"))


@admin
async def bounce(request: web.Request) -> web.StreamResponse:
    form = await _form(request)
    try:
        reason = parse_reason(form)
    except ApiError as exc:
        bad = {"bounce_reason": form.get("reason", "")}
        return await _domain_page(request, status=400, errors=FormErrors.of(exc), form=bad, failed="bounce")
    domain = request.match_info["domain"].lower()
    if form.get("confirm") != "yes":
        return await _confirm(request, "bounce", reason)
    bounced = await deps(request).store.queue.admin_bounce(reason or "no reason given", Selection(domain=domain))
    _done(queue_url(done=f"{bounced} recipient(s) for {domain} bounced"))


@admin
async def purge(request: web.Request) -> web.StreamResponse:
    form = await _form(request)
    domain = request.match_info["domain"].lower()
    if form.get("confirm") != "yes":
        return await _confirm(request, "purge", "")
    purged = await deps(request).store.queue.purge(Selection(domain=domain))
    _done(queue_url(done=f"{purged} recipient(s) for {domain} purged from the queue"))


async def _confirm(request: web.Request, action: str, reason: str) -> web.StreamResponse:
    row = await _domain(deps(request), request.match_info["domain"])
    return render(request, "queue_confirm.html", q=row, action=action, reason=reason)


def _done(location: str) -> NoReturn:
    """POST/redirect/GET: the next page shows what was done."""
    raise web.HTTPSeeOther(location)


_D = "/queue/{domain:[^/]+}"
PAGE = Page(
    "Queue",
    "/queue",
    [
        web.get("/queue", queue_page),
        web.get(_D, domain_page),
        web.post(f"{_D}/suspend", suspend),
        web.post(f"{_D}/resume", resume),
        web.post(f"{_D}/retry", retry),
        web.post(f"{_D}/bounce", bounce),
        web.post(f"{_D}/purge", purge),
    ],
)
