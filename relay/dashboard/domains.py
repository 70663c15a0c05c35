"""The Domains page: sending domains with their status; a domain's DNS records to publish (a copy button
each), its checks with their hints, verify now, DKIM rotation and removal. Everything goes through the
API's code (relay.api.domains and relay.domains.Domains), so the page and the API cannot disagree."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

from aiohttp import web

from relay.api.app import ApiError
from relay.api.domains import add_domain, call_domains, domain_json
from relay.dashboard.access import admin, signed_in
from relay.dashboard.deps import deps
from relay.dashboard.pages import Page
from relay.dashboard.render import FormErrors, render
from relay.domains import CHECKS, Domain, Domains

LIST_PAGE = 50  # domains per page of the list

CHECK_TITLES = {
    "dkim": "DKIM key published",
    "dkim_next": "Next DKIM key published",
    "spf": "SPF authorises relay",
    "dmarc": "DMARC policy",
    "return_path": "Return path (bounces)",
}


def page_path(*parts: str) -> str:
    """A dashboard path from its parts, each quoted (ids come from the store, never trusted as paths)."""
    return "/".join(["/dashboard", *(quote(p, safe="") for p in parts)])


def done(path: str, notice: str) -> web.HTTPSeeOther:
    """POST/redirect/GET: back to ``path`` with a short notice the page shows (``?done=``, escaped)."""
    return web.HTTPSeeOther(f"{path}?done={quote(notice, safe='')}")


def not_found(exc: ApiError) -> ApiError | web.HTTPNotFound:
    """A 404 of the API as a 404 page; other refusals as they are (a handler shows them)."""
    return web.HTTPNotFound(reason=exc.message) if exc.http_status == 404 else exc


def _domains(request: web.Request) -> Domains:
    found = deps(request).domains
    if found is None:
        raise web.HTTPServiceUnavailable(reason="sending domains are not available in this process")
    return found


def check_rows(checks: dict[str, dict[str, str]] | None) -> list[dict[str, str]]:
    """Each check in a fixed order (never-run ones as pending), with its title, status and hint."""
    checks = checks or {}
    names = [*CHECKS, *(["dkim_next"] if "dkim_next" in checks else [])]
    never = {"status": "pending", "hint": "not checked yet: publish the records, then verify"}
    return [{"name": n, "title": CHECK_TITLES.get(n, n), **checks.get(n, never)} for n in names]


@signed_in
async def index(request: web.Request) -> web.StreamResponse:
    return await _index(request, 200, "", FormErrors())


async def _index(request: web.Request, status: int, name: str, errors: FormErrors) -> web.StreamResponse:
    """A page of domains by name; ``?after=<name>`` the next one."""
    after = request.query.get("after") or None
    found = await _domains(request).store.domain_page(LIST_PAGE + 1, after)
    more = found[LIST_PAGE - 1].name if len(found) > LIST_PAGE else ""
    return render(
        request,
        "domains.html",
        status=status,
        domains=[(d, page_path("domains", d.id)) for d in found[:LIST_PAGE]],
        next_page=f"/dashboard/domains?after={quote(more, safe='')}" if more else "",
        first_page="/dashboard/domains" if after else "",
        name=name,
        errors=errors,
        done=request.query.get("done", ""),
    )


@admin
async def create(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    name = str(form.get("domain", ""))
    try:
        domain = await add_domain(_domains(request), {"domain": name})
    except ApiError as exc:
        return await _index(request, exc.http_status, name, FormErrors.of(exc))
    raise done(page_path("domains", domain.id), f"{domain.name} added: publish its records, then verify")


async def _domain(request: web.Request, fn: Callable[[str], Awaitable[Domain]]) -> Domain:
    try:
        return await call_domains(fn, request.match_info["id"])
    except ApiError as exc:
        raise not_found(exc) from None


@signed_in
async def show(request: web.Request) -> web.StreamResponse:
    domain = await _domain(request, _domains(request).get)
    return await _show(request, domain, 200, FormErrors())


async def _show(request: web.Request, domain: Domain, status: int, errors: FormErrors) -> web.StreamResponse:
    shown: dict[str, Any] = domain_json(domain, await _domains(request).policy())
    return render(
        request,
        "domain.html",
        status=status,
        domain=shown,
        checks=check_rows(domain.checks),
        path_of=page_path("domains", domain.id),
        errors=errors,
        done=request.query.get("done", ""),
    )


async def _act(request: web.Request, fn: Callable[[str], Awaitable[Domain]], notice: str) -> web.StreamResponse:
    """Run an action on the domain; a refusal (409: a key already waiting) is shown on its page."""
    domains = _domains(request)
    try:
        domain = await call_domains(fn, request.match_info["id"])
    except ApiError as exc:
        if exc.http_status == 404:
            raise web.HTTPNotFound(reason=exc.message) from None
        return await _show(request, await _domain(request, domains.get), exc.http_status, FormErrors.of(exc))
    raise done(page_path("domains", domain.id), notice.format(name=domain.name, status=domain.status))


@admin
async def verify(request: web.Request) -> web.StreamResponse:
    return await _act(request, _domains(request).verify, "{name} checked: {status}")


@admin
async def rotate(request: web.Request) -> web.StreamResponse:
    return await _act(request, _domains(request).rotate, "a new DKIM key for {name}: publish it, then verify")


@admin
async def confirm_remove(request: web.Request) -> web.StreamResponse:
    domain = await _domain(request, _domains(request).get)
    return render(request, "domain_remove.html", domain=domain, path_of=page_path("domains", domain.id))


@admin
async def remove(request: web.Request) -> web.StreamResponse:
    domain = await _domain(request, _domains(request).remove)
    raise done(page_path("domains"), f"{domain.name} removed, with its DKIM keys")


PAGE = Page(
    "Domains",
    "/domains",
    [
        web.get("/domains", index),
        web.post("/domains", create),
        web.get("/domains/{id}", show),
        web.post("/domains/{id}/verify", verify),
        web.post("/domains/{id}/rotate", rotate),
        web.get("/domains/{id}/remove", confirm_remove),
        web.post("/domains/{id}/remove", remove),
    ],
)
