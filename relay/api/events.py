"""/v1/events, /v1/messages/{id}/events and /v1/stats, /v1/stats/bounces, /v1/stats/overview (scope ``read``)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from relay.api.app import ApiError, instance_wide, own_filter, page_limit, readable, require, row_cursor
from relay.clock import Clock, iso
from relay.events import EVENT_TYPES
from relay.events import STATS_INTERVALS as INTERVALS
from relay.store.events import EventFilter
from relay.store.protocols import Storage
from relay.submission.http import parse_time
from relay.webhooks import event_json

MAX_PAGE = 500
MAX_BUCKETS = 24 * 400
# What the overview charts: the outcomes an operator watches, per hour over a day and per day over a month.
OVERVIEW_KINDS = ("delivered", "deferred", "bounced", "complained")
OVERVIEW_SPANS = (("last_24_hours", 3600, 24), ("last_30_days", 86400, 30))
WAITING_STATES = ("queued", "scheduled", "deferred", "sending")


def _types(query: Any) -> tuple[str, ...]:
    types = tuple(t.strip() for value in query.getall("type", []) for t in value.split(",") if t.strip())
    for t in types:
        if t not in EVENT_TYPES:
            raise ApiError(400, "invalid_field", f"unknown event type {t!r} (known: {', '.join(EVENT_TYPES)})", "type")
    return types


def _cursor(query: Any) -> int | None:
    text = query.get("cursor")
    if not text:
        return None
    return row_cursor(text.removeprefix("evt_"), "cursor", "'cursor' must be the next_cursor of a previous page")


class EventsView:
    def __init__(self, store: Storage, clock: Clock) -> None:
        self.store = store
        self.clock = clock

    def routes(self) -> list[web.RouteDef]:
        read = require("read")
        return [
            web.get("/v1/events", read(self.index)),
            web.get("/v1/messages/{id}/events", read(self.for_message)),
            web.get("/v1/stats", read(self.stats)),
            web.get("/v1/stats/bounces", read(self.bounce_stats)),
            web.get("/v1/stats/overview", read(self.overview)),
        ]

    async def index(self, request: web.Request) -> web.Response:
        """Newest first, filtered by type (repeat or comma-separate), recipient, tag, message_id, since, until."""
        q = request.query
        limit = page_limit(q, 100, MAX_PAGE)
        f = EventFilter(
            types=_types(q),
            recipient=q.get("recipient") or None,
            tag=q.get("tag") or None,
            message_id=q.get("message_id") or None,
            before=_cursor(q),
            since=parse_time("since", q["since"]) if "since" in q else None,
            until=parse_time("until", q["until"]) if "until" in q else None,
            api_key_id=own_filter(request),
        )
        rows = await self.store.events.query(f, limit + 1)
        page = rows[:limit]
        return web.json_response(
            {
                "data": [event_json(e) for e in page],
                "next_cursor": f"evt_{page[-1].id}" if len(rows) > limit else None,
            }
        )

    async def for_message(self, request: web.Request) -> web.Response:
        message_id = request.match_info["id"]
        readable(request, await self.store.queue.message(message_id))
        events = await self.store.events.message_events(message_id)
        return web.json_response({"data": [event_json(e) for e in events]})

    def _range(self, query: Any, default_span: float) -> tuple[float, float]:
        until = parse_time("to", query["to"]) if "to" in query else self.clock.now()
        since = parse_time("from", query["from"]) if "from" in query else until - default_span
        if since >= until:
            raise ApiError(400, "invalid_field", "'from' must be before 'to'", "from")
        return since, until

    async def stats(self, request: web.Request) -> web.Response:
        """Counts per event type per hour or day (UTC), from hourly counts kept as events are written."""
        instance_wide(request)
        q = request.query
        name = q.get("interval", "day")
        if name not in INTERVALS:
            raise ApiError(400, "invalid_field", "'interval' must be hour or day", "interval")
        interval = INTERVALS[name]
        since, until = self._range(q, 7 * 86400 if name == "day" else 86400)
        if (until - since) / interval > MAX_BUCKETS:
            raise ApiError(400, "invalid_field", f"at most {MAX_BUCKETS} intervals per request", "from")
        rows = await self.store.events.event_counts(since, until, interval, q.get("tag") or None)
        buckets: dict[int, dict[str, int]] = {}
        for start, kind, n in rows:
            buckets.setdefault(start, {})[kind] = n
        totals: dict[str, int] = {}
        for counts in buckets.values():
            for kind, n in counts.items():
                totals[kind] = totals.get(kind, 0) + n
        return web.json_response(
            {
                "from": iso(since),
                "to": iso(until),
                "interval": name,
                "tag": q.get("tag") or None,
                "totals": totals,
                "data": [{"start": iso(start), "counts": counts} for start, counts in sorted(buckets.items())],
            }
        )

    async def bounce_stats(self, request: web.Request) -> web.Response:
        """Bounces by classification and reason, and by recipient domain."""
        instance_wide(request)
        since, until = self._range(request.query, 7 * 86400)
        s = await self.store.events.bounce_stats(since, until)
        return web.json_response(
            {
                "from": iso(since),
                "to": iso(until),
                "total": s.total,
                "by_classification": [
                    {"classification": k, "reason": r, "count": n} for k, r, n in s.by_classification
                ],
                "by_domain": [{"domain": d, "classification": k, "count": n} for d, k, n in s.by_domain],
            }
        )

    async def overview(self, request: web.Request) -> web.Response:
        """The dashboard's overview: recipients by state now, outcomes per hour (24 h) and per day (30 days),
        the top deferral reasons over ``from``/``to`` (default the last 24 h) and the destinations with the
        most waiting mail; ``limit`` (default 10) of each top list."""
        instance_wide(request)
        q = request.query
        limit = page_limit(q, 10, 100)
        now = self.clock.now()
        since, until = self._range(q, 86400)
        if until - since > MAX_BUCKETS * 3600:
            raise ApiError(400, "invalid_field", f"at most {MAX_BUCKETS} hours of deferral reasons", "from")
        states = await self.store.queue.state_counts()
        series = {name: await self._series(now, interval, count) for name, interval, count in OVERVIEW_SPANS}
        reasons = await self.store.events.deferral_reasons(since, until, limit)
        destinations = (await self.store.queue.domain_queues())[:limit]
        return web.json_response(
            {
                "at": iso(now),
                "recipients": states,
                "waiting": sum(states.get(state, 0) for state in WAITING_STATES),
                **series,
                "deferral_reasons": {
                    "from": iso(since),
                    "to": iso(until),
                    "data": [
                        {"reason": r.reason, "count": r.count, "example": r.example, "last_at": iso(r.last_at)}
                        for r in reasons
                    ],
                },
                "destinations": [
                    {
                        "domain": d.domain,
                        "waiting": d.queued + d.deferred + d.sending,
                        "queued": d.queued,
                        "deferred": d.deferred,
                        "sending": d.sending,
                        "oldest": iso(d.oldest),
                        "suspended_until": iso(d.suspended_until),
                    }
                    for d in destinations
                ],
            }
        )

    async def _series(self, now: float, interval: int, count: int) -> dict[str, Any]:
        """``count`` buckets of ``interval`` seconds (UTC) up to the current one, every kind of OVERVIEW_KINDS
        in each (0 when none)."""
        first = (int(now) // interval - count + 1) * interval
        rows = await self.store.events.event_counts(first, now, interval, None)
        counts = {start: dict.fromkeys(OVERVIEW_KINDS, 0) for start in range(first, first + count * interval, interval)}
        for start, kind, n in rows:
            if kind in OVERVIEW_KINDS and start in counts:
                counts[start][kind] = n
        return {
            "interval": "hour" if interval == 3600 else "day",
            "data": [{"start": iso(start), "counts": c} for start, c in counts.items()],
        }
