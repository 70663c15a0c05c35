"""The dashboard's overview: this relay at a glance — recipients by state, the queue, event charts.

The counts are those of ``GET /v1/stats`` (``EventStore.event_counts``, shaped by
:func:`relay.dashboard.charts.fill_buckets` as the API shapes them) and of ``GET /v1/sending-queues``
(``QueueStore.domain_queues`` and :func:`relay.api.queues.queue_json`). The live part of the page is also
served alone at ``/overview/live``, which static/overview.js fetches every 10 s and swaps in.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

from aiohttp import web

from relay.api.queues import queue_json
from relay.dashboard import charts
from relay.dashboard.access import signed_in
from relay.dashboard.deps import DashboardDeps, deps
from relay.dashboard.pages import Page
from relay.dashboard.render import render
from relay.events import STATS_INTERVALS, EventKind, State

CHART_SERIES = (EventKind.DELIVERED, EventKind.DEFERRED, EventKind.BOUNCED, EventKind.COMPLAINED)
TOP_REASONS = 10  # deferral reasons shown
TOP_DESTINATIONS = 10
REFRESH_SECONDS = 10


async def event_chart(d: DashboardDeps, name: str, count: int, label: str, title: str) -> dict[str, Any]:
    """The last ``count`` intervals (``name``: hour or day) of events, as a chart and its totals."""
    interval = STATS_INTERVALS[name]
    now = d.clock.now()
    starts = charts.interval_starts(now, interval, count)
    rows = await d.store.events.event_counts(starts[0], now + 1, interval, None)
    buckets = charts.fill_buckets(rows, starts, label)
    series = [str(s) for s in CHART_SERIES]
    every = 3 if name == "hour" else 5
    return {
        "title": title,
        "svg": charts.bar_chart(title, buckets, series, label_every=every),
        "totals": {s: charts.totals(buckets).get(s, 0) for s in series},
    }


async def live_context(d: DashboardDeps) -> dict[str, Any]:
    """Everything the live part of the overview shows (the page and its fragment render the same)."""
    # The reads GET /v1/stats/overview makes, at once (each on a reader of its own: with a million
    # recipients, counting them by state is most of the page's time).
    states, queues, waiting = await asyncio.gather(
        d.store.queue.state_counts(),
        d.store.queue.domain_queues(),  # busiest first
        d.store.queue.pending_count(),
    )
    return {
        "by_state": [(str(s), states.get(str(s), 0)) for s in State],
        "waiting": waiting,
        "destinations": [
            {**queue_json(q), "href": f"/dashboard/queue#{quote(q.domain, safe='')}"} for q in queues[:TOP_DESTINATIONS]
        ],
        "destination_count": len(queues),
        "charts": [
            await event_chart(d, "hour", 24, "%H:00", "Events per hour, last 24 hours (UTC)"),
            await event_chart(d, "day", 30, "%m-%d", "Events per day, last 30 days (UTC)"),
        ],
        "updated_at": d.clock.now(),
        # The same read as GET /v1/stats/overview's deferral_reasons: the last 24 hours.
        "deferral_reasons": [
            (r.reason, r.count)
            for r in await d.store.events.deferral_reasons(d.clock.now() - 86400, d.clock.now() + 1, TOP_REASONS)
        ],
    }


@signed_in
async def overview(request: web.Request) -> web.StreamResponse:
    d = deps(request)
    return render(
        request,
        "home.html",
        hostname=d.config.server.hostname,
        mode=d.config.delivery.mode,
        refresh_seconds=REFRESH_SECONDS,
        **await live_context(d),
    )


@signed_in
async def live(request: web.Request) -> web.StreamResponse:
    """The live part of the overview alone, for static/overview.js to swap in."""
    return render(request, "overview_live.html", **await live_context(deps(request)))


PAGE = Page("Overview", "/", [web.get("/", overview), web.get("/overview/live", live)])
