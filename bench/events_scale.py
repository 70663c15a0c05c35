#!/usr/bin/env python3
"""Event queries as the history grows: stats, filtered listing and bounce breakdowns at 100k / 1M events.

Fills a fresh store (its own temp dir) with messages and their events the way
relay writes them (through relay.store.queue, so the counting triggers run),
spread over 30 days, with a tenth of the messages tagged and 2% bounced. At
each size it times, with the real store:

- GET /v1/stats for 7 days by day, and by hour with a tag
- GET /v1/events newest page, and filtered by type, by recipient, by tag
- GET /v1/stats/bounces for 7 days
- the write cost: recording one delivery attempt (one event) with the triggers in place

    python bench/events_scale.py --sizes 100000 1000000
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from relay.bounces.classify import Classification, Kind  # noqa: E402
from relay.clock import FakeClock  # noqa: E402
from relay.events import EventKind, State  # noqa: E402
from relay.message import NewMessage  # noqa: E402
from relay.store import Store  # noqa: E402
from relay.store import queue as q  # noqa: E402
from relay.store.events import EventFilter  # noqa: E402
from relay.store.suppressions import NewBounce  # noqa: E402
from relay.suppression import SuppressionPolicy  # noqa: E402

BODY = b"From: a@example.com\r\nTo: b@example.org\r\nSubject: scale\r\n\r\nx\r\n"
DAY = 86400.0


def fill(conn, start: int, count: int, t0: float, span: float) -> None:
    """``count`` messages with one recipient each: a queued event and a delivered or bounced one."""
    policy = SuppressionPolicy()
    for i in range(start, start + count):
        at = t0 + span * i / 2_000_000
        tags = ("newsletter",) if i % 10 == 0 else ()
        m = NewMessage("a@example.com", (f"user{i}@d{i % 500}.example",), BODY, "http", tags=tags)
        q.enqueue(conn, m, at)
        rid = conn.execute("SELECT id FROM recipients WHERE message_id = ?", (m.id,)).fetchone()[0]
        bounced = i % 50 == 0
        bounce = (
            NewBounce(
                m.recipients[0],
                Classification(Kind.HARD, "user_unknown", "5.1.1"),
                "smtp",
                550,
                "550 5.1.1 no such user",
                "mx.example",
                m.id,
            )
            if bounced
            else None
        )
        result = q.AttemptResult(
            rid,
            m.id,
            m.recipients[0],
            State.BOUNCED if bounced else State.DELIVERED,
            EventKind.BOUNCED if bounced else EventKind.DELIVERED,
            None,
            550 if bounced else 250,
            "550 5.1.1 no such user" if bounced else "250 ok",
            mx_host="mx.example",
            bounce=bounce,
        )
        q.record_attempts(conn, [result], at + 1, policy)


async def timed(fn, samples: int) -> float:
    times = []
    for _ in range(samples):
        started = time.perf_counter()
        await fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000], help="events at each step")
    parser.add_argument("--samples", type=int, default=5)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="relay-events-"))
    t0 = time.time() - 30 * DAY
    clock = FakeClock(t0 + 30 * DAY)
    store = Store(tmp / "relay.sqlite3", clock)
    try:
        messages = 0
        columns = (
            "stats 7d/day",
            "stats 24h/hour+tag",
            "events page",
            "by type",
            "by recipient",
            "by tag",
            "bounce stats",
            "one event",
        )
        print(f"{'events':>9} " + " ".join(f"{c:>{len(c)}}" for c in columns) + "  (ms)")
        for size in sorted(args.sizes):
            target = size // 2  # two events per message
            while messages < target:
                count = min(20_000, target - messages)
                start = messages
                await store.db.write(lambda conn, s=start, n=count: fill(conn, s, n, t0, 30 * DAY))
                messages += count
            now = clock.now()
            figures = [
                await timed(lambda n=now: store.events.event_counts(n - 7 * DAY, n, 86400, None), args.samples),
                await timed(lambda n=now: store.events.event_counts(n - DAY, n, 3600, "newsletter"), args.samples),
                await timed(lambda: store.events.query(EventFilter(), 100), args.samples),
                await timed(lambda: store.events.query(EventFilter(types=("bounced",)), 100), args.samples),
                await timed(
                    lambda: store.events.query(EventFilter(recipient="user1000@d0.example"), 100), args.samples
                ),
                await timed(lambda: store.events.query(EventFilter(tag="newsletter"), 100), args.samples),
                await timed(lambda n=now: store.events.bounce_stats(n - 7 * DAY, n), args.samples),
            ]

            async def one_more() -> None:
                nonlocal messages
                await store.db.write(lambda conn, s=messages: fill(conn, s, 1, t0, 30 * DAY))
                messages += 1

            figures.append(await timed(one_more, args.samples) / 2)  # two events per call
            print(f"{size:>9,} " + " ".join(f"{f:>{len(c)}.2f}" for f, c in zip(figures, columns, strict=True)))
    finally:
        await store.close()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
