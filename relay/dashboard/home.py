"""The dashboard's home: this relay at a glance, and the pages there are."""

from __future__ import annotations

from aiohttp import web

from relay.dashboard.access import signed_in
from relay.dashboard.deps import deps
from relay.dashboard.pages import Page
from relay.dashboard.render import render


@signed_in
async def home(request: web.Request) -> web.StreamResponse:
    d = deps(request)
    waiting = await d.store.queue.pending_count()
    return render(
        request,
        "home.html",
        hostname=d.config.server.hostname,
        mode=d.config.delivery.mode,
        waiting=waiting,
    )


PAGE = Page("Home", "/", [web.get("/", home)])
