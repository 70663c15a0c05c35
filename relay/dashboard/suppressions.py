"""Suppressions and bounces: search, add and remove suppressions, the allowlist, the bounce log.

Everything goes through ``/v1/suppressions``, ``/v1/allowlist`` and ``/v1/bounces``' code
(relay/api/suppressions.py): its filters (``suppression_filter``, ``bounce_filter``), its parsers
(``parse_emails``, ``parse_note``, ``parse_entry``), its shapes (``suppression_json``, ``bounce_json``) and
the same ``SuppressionStore`` calls. Removing a suppression (it is reactivated: mail to it goes out again)
or an allowlist entry asks first: the form posts without ``confirm`` and gets a confirmation page.
A bounce's raw report is shown as text, never as HTML.
"""

from __future__ import annotations

from typing import Any, NoReturn
from urllib.parse import urlencode

from aiohttp import web

from relay.api.app import ROW_ID_LIMIT, ApiError
from relay.api.suppressions import (
    KINDS,
    bounce_filter,
    bounce_json,
    parse_bounce_id,
    parse_emails,
    parse_entry,
    parse_note,
    suppression_filter,
    suppression_json,
)
from relay.dashboard.access import admin, signed_in
from relay.dashboard.deps import deps
from relay.dashboard.pages import Page
from relay.dashboard.render import FormErrors, render
from relay.suppression import REASONS

PAGE_SIZE = 50
SEARCH_FIELDS = ("search", "reason", "cursor")
BOUNCE_FIELDS = ("kind", "recipient", "message_id", "cursor")


def _url(path: str, **query: str) -> str:
    kept = {k: v for k, v in query.items() if v}
    return path + (f"?{urlencode(kept)}" if kept else "")


def _done(path: str, done: str) -> NoReturn:
    """POST/redirect/GET: the next page shows what was done."""
    raise web.HTTPSeeOther(_url(path, done=done))


async def _form(request: web.Request) -> dict[str, str]:
    posted = await request.post()
    return {k: v for k, v in posted.items() if isinstance(v, str) and k != "csrf_token"}


async def _suppressions_page(request: web.Request, status: int = 200, **context: Any) -> web.StreamResponse:
    store = deps(request).store.suppressions
    query = {k: request.query.get(k, "") for k in SEARCH_FIELDS}
    errors = context.pop("errors", FormErrors())
    try:
        rows = await store.query(suppression_filter(query), PAGE_SIZE + 1)
    except ApiError as exc:
        rows, errors, status = [], FormErrors.of(exc), 400
    page = [suppression_json(s) for s in rows[:PAGE_SIZE]]
    next_cursor = page[-1]["email"] if len(rows) > PAGE_SIZE else None
    allowlist = [{"entry": e, "note": n, "created_at": t} for e, n, t in await store.allowlist()]
    return render(
        request,
        "suppressions.html",
        status=status,
        errors=errors,
        query=query,
        reasons=REASONS,
        suppressions=page,
        next_url=_url("/dashboard/suppressions", **{**query, "cursor": next_cursor or ""}) if next_cursor else "",
        allowlist=allowlist,
        form={"email": "", "note": "", "entry": "", "allow_note": "", **context.pop("form", {})},
        failed=context.pop("failed", ""),
        done=request.query.get("done", ""),
    )


@signed_in
async def suppressions_page(request: web.Request) -> web.StreamResponse:
    return await _suppressions_page(request)


@admin
async def add_suppression(request: web.Request) -> web.StreamResponse:
    form = await _form(request)
    try:
        emails = parse_emails({"email": form.get("email", "")})
        note = parse_note(form, "note")
    except ApiError as exc:
        return await _suppressions_page(request, 400, errors=FormErrors.of(exc), form=form, failed="add")
    created = await deps(request).store.suppressions.suppress(emails, "manual", note)
    _done("/dashboard/suppressions", f"{', '.join(s.address for s in created)} is suppressed")


@admin
async def remove_suppression(request: web.Request) -> web.StreamResponse:
    form = await _form(request)
    email = form.get("email", "")
    store = deps(request).store.suppressions
    if form.get("confirm") != "yes":
        found = await store.suppression(email) if email else None
        if found is None:
            raise web.HTTPNotFound(reason=f"{email} is not suppressed")
        return render(request, "suppressions_confirm.html", action="remove", item=suppression_json(found))
    if not await store.unsuppress(email):
        raise web.HTTPNotFound(reason=f"{email} is not suppressed")
    _done("/dashboard/suppressions", f"{email.lower()} is no longer suppressed")


@admin
async def allow(request: web.Request) -> web.StreamResponse:
    form = await _form(request)
    try:
        entry = parse_entry(form)
        note = parse_note({"note": form.get("allow_note", "")}, "note")
    except ApiError as exc:
        errors = FormErrors({"allow_note" if exc.field == "note" else "entry": exc.http_message()})
        return await _suppressions_page(request, 400, errors=errors, form=form, failed="allow")
    normal = await deps(request).store.suppressions.allow(entry, note)
    _done("/dashboard/suppressions", f"{normal} is on the allowlist")


@admin
async def disallow(request: web.Request) -> web.StreamResponse:
    form = await _form(request)
    entry = form.get("entry", "")
    if form.get("confirm") != "yes":
        return render(request, "suppressions_confirm.html", action="disallow", item={"entry": entry})
    if not entry or not await deps(request).store.suppressions.disallow(entry):
        raise web.HTTPNotFound(reason=f"{entry} is not on the allowlist")
    _done("/dashboard/suppressions", f"{entry.lower()} is off the allowlist")


@signed_in
async def bounces_page(request: web.Request) -> web.StreamResponse:
    query = {k: request.query.get(k, "") for k in BOUNCE_FIELDS}
    errors, status, rows = FormErrors(), 200, []
    try:
        rows = await deps(request).store.suppressions.bounces(bounce_filter(query), PAGE_SIZE + 1)
    except ApiError as exc:
        errors, status = FormErrors.of(exc), 400
    page = [bounce_json(b) for b in rows[:PAGE_SIZE]]
    next_cursor = str(page[-1]["id"]) if len(rows) > PAGE_SIZE else ""
    return render(
        request,
        "bounces.html",
        status=status,
        errors=errors,
        query=query,
        kinds=KINDS,
        bounces=page,
        next_url=_url("/dashboard/bounces", **{**query, "cursor": next_cursor}) if next_cursor else "",
    )


@signed_in
async def bounce_page(request: web.Request) -> web.StreamResponse:
    bounce_id = parse_bounce_id(request.match_info["id"])
    found = (
        await deps(request).store.suppressions.bounce(bounce_id) if bounce_id and 0 < bounce_id < ROW_ID_LIMIT else None
    )
    if found is None:
        raise web.HTTPNotFound(reason="no such bounce")
    return render(request, "bounce.html", b=bounce_json(found, with_report=True))


PAGE = Page(
    "Suppressions",
    "/suppressions",
    [
        web.get("/suppressions", suppressions_page),
        web.post("/suppressions", add_suppression),
        web.post("/suppressions/remove", remove_suppression),
        web.post("/allowlist", allow),
        web.post("/allowlist/remove", disallow),
        web.get("/bounces", bounces_page),
        web.get("/bounces/{id}", bounce_page),
    ],
)
