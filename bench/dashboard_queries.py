#!/usr/bin/env python3
"""The dashboard's queries with a large history: message search and overview figures, p50/p95 each.

Fills a fresh store (SQLite in a temp dir, or a database of a private PostgreSQL cluster started like the
tests' tests/pg.py) through the store's own methods, as relay's engine does: enqueue_many in batches, then
claim_due and record_attempts for what is due, the clock moving forward over 30 days. Each message has one
recipient (one in twenty has three); a first attempt delivers 88%, defers 8% (replies in the dialects of
Gmail, Outlook, Yahoo and a greylisting Postfix, with their per-message ids), bounces 3% and fails 1%; a
deferred recipient is tried again 30 minutes later. The last batches stay waiting (queued or deferred).
It stops once ``--events`` events are written, then times each query ``--samples`` times:

- the first page (20) of ``GET /v1/messages``: unfiltered, each filter alone, and combinations;
- the overview figures: recipients by state, 24 h by hour, 30 days by day, top deferral reasons over 24 h
  and 7 days, destinations by waiting mail.

``--pages`` then serves that store with a real ``relay serve`` (delivery off, loopback), signs an operator
in and times the dashboard's pages as a browser gets them (the whole HTTP request, HTML rendered):
the overview and its live fragment, the message list (unfiltered and searched), a message's page, the
queue.

    python bench/dashboard_queries.py --events 1000000 --store sqlite [--pages]
    python bench/dashboard_queries.py --events 1000000 --store postgresql
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from relay.bounces.classify import Classification, Kind  # noqa: E402
from relay.clock import FakeClock  # noqa: E402
from relay.events import EventKind, State  # noqa: E402
from relay.message import NewMessage, new_message_id  # noqa: E402
from relay.store import Store  # noqa: E402
from relay.store.queue import AttemptResult, LeasedMessage, MessageFilter  # noqa: E402
from relay.store.repositories import SqlStore  # noqa: E402
from relay.store.suppressions import NewBounce  # noqa: E402

DAY = 86400.0
SPAN = 30 * DAY
BATCH = 4000  # messages per enqueue_many
RETRY = 1800.0
PAGE = 20

DEFERRALS = (
    lambda i: (
        452,
        "4.2.2 The email account that you tried to reach is over quota. Please direct 4.2.2 the recipient to"
        f" 4.2.2 https://support.google.com/mail/?p=OverQuotaTemp {i:x}fcca58-7b0b{i:x}si{i % 997}.{i % 89} - gsmtp",
    ),
    lambda i: (
        451,
        f"4.7.500 Server busy. Please try again later from [203.0.113.{i % 250}]. (S77719)"
        f" [DB{i % 9}EUR0{i % 7}FT{i % 999:03d}.eop-EUR03.prod.protection.outlook.com 2026-11-{1 + i % 28:02d}T10:"
        f"{i % 60:02d}:00.{i % 1000:03d}Z 08DC{i:012X}]",
    ),
    lambda i: (
        421,
        f"4.7.0 [TSS04] Messages from 198.51.100.{i % 250} temporarily deferred due to unexpected volume or user"
        " complaints - 4.16.55.1; see https://postmaster.yahooinc.com/error-codes",
    ),
    lambda i: (450, f"4.2.0 <user{i}@d{i % 1000}.example>: Recipient address rejected: Greylisted, try again later"),
)


def message(i: int, at: float) -> NewMessage:
    brand = i % 10
    sender = f"news{i % 5}@brand{brand}.example" if i % 10_000 else "alerts@rare.example"
    count = 3 if i % 20 == 0 else 1
    recipients = tuple(f"user{(i + k * 7919) % 100_000}@d{(i + k) % 1000}.example" for k in range(count))
    if i % 1000 == 7:
        subject = f"Password reset for account {i}"
    elif i % 10 == 0:
        subject = f"Weekly newsletter #{i // 10_000}"
    else:
        subject = f"Your order {i} has shipped"
    tags = ("newsletter",) if i % 10 == 0 else ("receipts",) if i % 100 == 1 else ("rare",) if i % 20_000 == 3 else ()
    raw = (
        f"From: {sender}\r\nTo: {recipients[0]}\r\nSubject: {subject}\r\nMessage-ID: <{i}.bench@brand{brand}.example>"
        "\r\n\r\nbody\r\n"
    ).encode()
    return NewMessage(sender, recipients, raw, "http", id=new_message_id(at), subject=subject, tags=tags)


def outcome(r_id: int, message_id: str, address: str, attempts: int, n: int, now: float) -> AttemptResult:
    """The ``n``-th attempt overall: on a first attempt 88% delivered, 8% deferred, 3% bounced, 1% failed;
    a retry is delivered 70% of the time and deferred again otherwise."""
    roll = n % 100
    deferred = roll < 30 if attempts else 88 <= roll < 96
    if deferred:
        code, text = DEFERRALS[n % len(DEFERRALS)](n)
        return AttemptResult(r_id, message_id, address, State.DEFERRED, EventKind.DEFERRED, now + RETRY, code, text)
    if attempts or roll < 88:
        return AttemptResult(r_id, message_id, address, State.DELIVERED, EventKind.DELIVERED, None, 250, "2.0.0 ok")
    if roll < 99:
        text = "5.1.1 The email account that you tried to reach does not exist"
        bounce = NewBounce(
            address, Classification(Kind.HARD, "user_unknown", "5.1.1"), "smtp", 550, text, None, message_id
        )
        return AttemptResult(
            r_id, message_id, address, State.BOUNCED, EventKind.BOUNCED, None, 550, text, bounce=bounce
        )
    return AttemptResult(r_id, message_id, address, State.FAILED, EventKind.FAILED, None, None, "no route to host")


async def fill(store: SqlStore, clock: FakeClock, events: int, t0: float) -> tuple[int, int]:
    """Messages and attempts until ``events`` are written: (messages, events)."""
    written = messages = attempts_made = 0
    per_batch = max(1, int(events / 2.3 / BATCH))  # batches over the 30 days (about 2.3 events a message)
    step = SPAN / per_batch
    while written < events:
        clock.advance(t0 + step * (messages // BATCH) - clock.now())
        batch = [message(messages + k, clock.now() + k * step / BATCH) for k in range(BATCH)]
        await store.queue.enqueue_many(batch)
        messages += BATCH
        written += sum(len(m.recipients) for m in batch)
        if written >= events * 0.995:  # the last batch stays queued: waiting mail
            break
        leased: list[LeasedMessage] = await store.queue.claim_due(50_000, "bench", 300)
        results = []
        for m in leased:
            for r in m.recipients:
                results.append(outcome(r.id, m.id, r.address, r.attempts, attempts_made, clock.now()))
                attempts_made += 1
        for k in range(0, len(results), 5000):
            await store.queue.record_attempts(results[k : k + 5000])
        written += len(results)
        print(f"\r{written:>10,} events, {messages:,} messages", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return messages, written


async def timed(fn: Callable[[], Awaitable[Any]], samples: int) -> tuple[float, float, int]:
    """(p50, p95) in ms after one warm-up call, and how many rows the last call gave."""
    result = await fn()
    times = []
    for _ in range(samples):
        started = time.perf_counter()
        result = await fn()
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
    rows = len(result.messages) if hasattr(result, "messages") else len(result)
    return statistics.median(times), p95, rows


def searches(now: float, some_id: str) -> list[tuple[str, MessageFilter]]:
    return [
        ("newest page", MessageFilter()),
        ("status=delivered", MessageFilter(status="delivered")),
        ("status=deferred", MessageFilter(status="deferred")),
        ("status=cancelled (none)", MessageFilter(status="cancelled")),
        ("recipient", MessageFilter(recipient="user4242@d242.example")),
        ("sender address", MessageFilter(sender="news3@brand3.example")),
        ("sender domain", MessageFilter(sender="brand7.example")),
        ("sender domain (rare)", MessageFilter(sender="rare.example")),
        ("tag newsletter", MessageFilter(tag="newsletter")),
        ("tag (rare)", MessageFilter(tag="rare")),
        ("subject (common)", MessageFilter(subject="newsletter")),
        ("subject (rare)", MessageFilter(subject="password reset")),
        ("subject (none)", MessageFilter(subject="no such words")),
        ("message id (relay)", MessageFilter(message_id=some_id)),
        ("message id (header)", MessageFilter(message_id="<4242.bench@brand2.example>")),
        ("since 24 h", MessageFilter(since=now - DAY)),
        ("one day, 2 weeks ago", MessageFilter(since=now - 15 * DAY, until=now - 14 * DAY)),
        ("tag + status=deferred", MessageFilter(tag="newsletter", status="deferred")),
        ("sender domain + 7 days", MessageFilter(sender="brand7.example", since=now - 7 * DAY)),
        ("recipient + status=delivered", MessageFilter(recipient="user4242@d242.example", status="delivered")),
        ("status=deferred + subject", MessageFilter(status="deferred", subject="password")),
    ]


async def measure(store: SqlStore, now: float, samples: int) -> list[tuple[str, tuple[float, float, int]]]:
    newest = await store.queue.search(MessageFilter(), 200)
    some_id = newest.messages[-1].id
    figures = []
    for name, f in searches(now, some_id):
        figures.append((f"messages: {name}", await timed(lambda f=f: store.queue.search(f, PAGE), samples)))
    overview: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
        ("recipients by state", store.queue.state_counts),
        ("24 h by hour", lambda: store.events.event_counts(now - DAY, now, 3600, None)),
        ("30 days by day", lambda: store.events.event_counts(now - SPAN, now, 86400, None)),
        ("deferral reasons 24 h", lambda: store.events.deferral_reasons(now - DAY, now, 10)),
        ("deferral reasons 7 days", lambda: store.events.deferral_reasons(now - 7 * DAY, now, 10)),
        ("destinations by waiting mail", store.queue.domain_queues),
    ]
    for name, fn in overview:
        figures.append((f"overview: {name}", await timed(fn, samples)))
    return figures


async def run(args: argparse.Namespace, tmp: Path) -> None:
    t0 = time.time() - SPAN
    clock = FakeClock(t0)
    cluster = None
    if args.store == "postgresql":
        from relay.store.postgres import PgStore
        from tests.pg import PostgresCluster

        cluster = PostgresCluster(fsync=False)  # reads are measured; the fill need not be durable
        cluster.start()
        try:
            store: SqlStore = PgStore(cluster.create_database("dashboard"), clock)
        except BaseException:
            cluster.stop()
            raise
    else:
        store = Store(tmp / "relay.sqlite3", clock)
    try:
        started = time.perf_counter()
        messages, written = await fill(store, clock, args.events, t0)
        print(f"filled: {messages:,} messages, {written:,} events in {time.perf_counter() - started:.0f} s", flush=True)
        clock.advance(60)  # a minute after the last batch was queued
        print(f"{'query':<48} {'p50 ms':>8} {'p95 ms':>8} {'rows':>6}")
        for name, (p50, p95, rows) in await measure(store, clock.now(), args.samples):
            print(f"{name:<48} {p50:>8.2f} {p95:>8.2f} {rows:>6}", flush=True)
        if args.pages:
            some_id = (await store.queue.search(MessageFilter(status="deferred"), 1)).messages[0].id
            await store.close()
            url = store.db.url if cluster else ""  # type: ignore[attr-defined]
            print(f"{'page (GET, signed in)':<48} {'p50 ms':>8} {'p95 ms':>8} {'bytes':>6}")
            for name, (p50, p95, size) in await measure_pages(tmp, url, some_id, args.samples):
                print(f"{name:<48} {p50:>8.2f} {p95:>8.2f} {size:>6}", flush=True)
            return
        if args.keep:
            print(f"kept: {store.db.url if cluster else tmp / 'relay.sqlite3'} (press Enter to stop)", flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    finally:
        await store.close()
        if cluster is not None:
            cluster.stop()


PAGES = [
    ("overview", "/dashboard/"),
    ("overview, live fragment", "/dashboard/overview/live"),
    ("messages", "/dashboard/messages"),
    ("messages: status=deferred", "/dashboard/messages?status=deferred"),
    ("messages: sender domain", "/dashboard/messages?sender=brand7.example"),
    ("messages: subject (rare)", "/dashboard/messages?subject=password+reset"),
    ("messages: tag + status", "/dashboard/messages?tag=newsletter&status=deferred"),
    ("a message", "/dashboard/messages/{id}"),
    ("queue", "/dashboard/queue"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_relay(tmp: Path, url: str, port: int) -> subprocess.Popen[bytes]:
    """relay serve on the filled store (delivery captured in the sandbox), with an admin "bench"."""
    config = tmp / "relay.toml"
    store = f'[store]\nurl = "{url}"\n' if url else ""
    config.write_text(
        f'[server]\nhostname = "relay.bench"\ndata_dir = "{tmp}"\n[smtp]\nlisten = ["127.0.0.1:{free_port()}"]\n'
        f'[http]\nlisten = "127.0.0.1:{port}"\n[delivery]\nmode = "sandbox"\n{store}'
    )
    relay = [sys.executable, "-m", "relay"]
    made = subprocess.run(
        [*relay, "users", "create", "bench", "--role", "admin", "--password-stdin", "--config", str(config)],
        input=PASSWORD + "\n",
        capture_output=True,
        text=True,
    )
    if made.returncode != 0:
        raise SystemExit(f"relay users create: {made.stderr}")
    with (tmp / "relay.log").open("wb") as log:
        return subprocess.Popen([*relay, "serve", "--config", str(config)], stdout=log, stderr=subprocess.STDOUT)


PASSWORD = "bench password 1234"


async def measure_pages(
    tmp: Path, url: str, message_id: str, samples: int
) -> list[tuple[str, tuple[float, float, int]]]:
    """The dashboard's pages from a relay serving the filled store, signed in as an admin."""
    import aiohttp

    port = free_port()
    proc = await asyncio.to_thread(start_relay, tmp, url, port)
    base = f"http://127.0.0.1:{port}"
    try:
        # unsafe: keep cookies for an IP address (the relay listens on 127.0.0.1)
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
            await _wait_up(session, base, proc)
            async with session.get(f"{base}/dashboard/login") as resp:
                token = re.search(r'name="csrf_token" value="([^"]+)"', await resp.text())
            form = {"username": "bench", "password": PASSWORD, "csrf_token": token.group(1) if token else ""}
            async with session.post(f"{base}/dashboard/login", data=form, allow_redirects=False) as resp:
                if resp.status != 303:
                    raise SystemExit(f"could not sign in: {resp.status}")
            figures = []
            for name, path in PAGES:
                figures.append((name, await _timed_get(session, base + path.format(id=message_id), samples)))
            return figures
    finally:
        proc.terminate()
        await asyncio.to_thread(proc.wait, 30)


async def _wait_up(session: Any, base: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("relay exited while starting (see relay.log)")
        try:
            async with session.get(f"{base}/healthz") as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        await asyncio.sleep(0.2)
    raise SystemExit("relay did not start within 60 s")


async def _timed_get(session: Any, url: str, samples: int) -> tuple[float, float, int]:
    async def get() -> int:
        async with session.get(url, allow_redirects=False) as resp:
            body = await resp.read()
            if resp.status != 200:
                raise SystemExit(f"GET {url}: {resp.status}")
            return len(body)

    await get()  # warm-up
    times, size = [], 0
    for _ in range(samples):
        started = time.perf_counter()
        size = await get()
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, round(0.95 * (len(times) - 1)))], size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="events to write before measuring")
    parser.add_argument("--store", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--samples", type=int, default=20, help="timed calls of each query")
    parser.add_argument("--keep", action="store_true", help="keep the database until Enter (to EXPLAIN by hand)")
    parser.add_argument("--pages", action="store_true", help="then time the dashboard's pages from relay serve")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="relay-dashboard-"))
    try:
        asyncio.run(run(args, tmp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
