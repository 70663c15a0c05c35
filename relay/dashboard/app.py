"""The dashboard application, mounted at /dashboard/ on the API's aiohttp application.

:data:`PAGES` is the one list of pages: the nav shows them in this order. A page helper adds its module's
``PAGE`` here, and nothing else.
"""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Middleware

from relay.dashboard import (
    access,
    credentials,
    domains,
    home,
    login,
    message_templates,
    messages,
    queue,
    settings,
    suppressions,
    webhooks,
)
from relay.dashboard.deps import DEPS, DashboardDeps
from relay.dashboard.pages import Page
from relay.dashboard.render import NAV, render
from relay.errors import StoreError
from relay.ratelimit import shared_counters
from relay.store.protocols import RateCounters
from relay.submission.auth import Failures, LocalFailures, SharedFailures

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"

PAGES: list[Page] = [
    home.PAGE,
    messages.PAGE,
    queue.PAGE,
    domains.PAGE,
    suppressions.PAGE,
    webhooks.PAGE,
    credentials.PAGE,
    message_templates.PAGE,
    settings.PAGE,
]


def failures_for(backend: str, counters: RateCounters, max_failures: int, window: float) -> Failures:
    """Failed logins counted as SMTP AUTH counts them: in memory, or in the store's counters when shared."""
    if shared_counters(backend):
        return SharedFailures(counters, max_failures, window)
    return LocalFailures(max_failures, window)


def mount(app: web.Application, deps: DashboardDeps) -> None:
    """Serve the dashboard on ``app``: /dashboard/..., and redirects from / and /dashboard."""
    app.add_subapp(access.PREFIX, make_dashboard(deps))
    app.router.add_get("/", _to_dashboard)


async def _to_dashboard(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound(access.HOME)


def make_dashboard(deps: DashboardDeps) -> web.Application:
    dashboard = web.Application(middlewares=_middlewares())
    dashboard[DEPS] = deps
    dashboard[NAV] = [(page.title, access.PREFIX + page.path) for page in PAGES]
    dashboard.on_response_prepare.append(_headers)
    dashboard.router.add_get("/static/{name}", _static)
    dashboard.add_routes(login.routes())
    for page in PAGES:
        dashboard.add_routes(page.routes)
    dashboard.router.add_route("*", "/{tail:.*}", _not_found)  # so every /dashboard/ path answers as a page
    return dashboard


# Static files by name, with types fixed here (not the machine's mime.types): CSS, JS and images only.
STATIC_TYPES = {".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml", ".png": "image/png"}
_STATIC_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]*")


async def _static(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    path = STATIC / name
    content_type = STATIC_TYPES.get(path.suffix)
    if not _STATIC_NAME.fullmatch(name) or content_type is None or not path.is_file():
        raise web.HTTPNotFound(reason="no such file")
    body = await asyncio.to_thread(path.read_bytes)
    return web.Response(body=body, content_type=content_type, headers={"Cache-Control": "no-cache"})


async def _not_found(request: web.Request) -> web.StreamResponse:
    raise web.HTTPNotFound(reason="no such page")


async def _headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.update(access.SECURITY_HEADERS)
    if not request.path.startswith(f"{access.PREFIX}/static/"):
        response.headers["Cache-Control"] = "no-store"


def _middlewares() -> list[Middleware]:
    return [_errors, _session, _csrf]


@web.middleware
async def _errors(request: web.Request, handler: access.Handler) -> web.StreamResponse:
    """Errors as pages (the API's are JSON): the status and what went wrong, never a traceback."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        if request.path == access.PREFIX and exc.status == 404:  # no route can be "/dashboard" in the sub-app
            raise web.HTTPFound(access.HOME) from None
        return render(request, "error.html", status=exc.status, message=exc.reason)
    except StoreError as exc:
        log.warning("the store could not serve %s %s: %s", request.method, request.path, exc)
        return render(request, "error.html", status=503, message="the database is unavailable; try again shortly")
    except Exception:
        log.exception("dashboard error on %s %s", request.method, request.path)
        return render(request, "error.html", status=500, message="internal error; the server log has details")


@web.middleware
async def _session(request: web.Request, handler: access.Handler) -> web.StreamResponse:
    request[access.SESSION] = None
    if not request.path.startswith(f"{access.PREFIX}/static/"):
        request[access.SESSION] = await access.load_session(request)
    return await handler(request)


@web.middleware
async def _csrf(request: web.Request, handler: access.Handler) -> web.StreamResponse:
    if request.method not in access.SAFE_METHODS:
        if not await access.csrf_ok(request):
            raise web.HTTPForbidden(reason="the form is missing its CSRF token or it is stale: reload the page")
        if not access.viewer_may(request):
            raise web.HTTPForbidden(reason="a viewer cannot change anything")
    return await handler(request)
