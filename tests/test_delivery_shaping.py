"""Connection reuse, per-destination limits, isolation of a dead destination, TLS policy, attempts."""

from __future__ import annotations

import asyncio
import collections
import random
import time

import pytest

from relay.clock import FakeClock, SystemClock, VirtualClock
from relay.config import Shaping, parse_rate
from relay.delivery import engine as engine_module
from relay.delivery.booking import Bookings
from relay.delivery.client import SmtpClient
from relay.delivery.engine import (
    BOOK_AHEAD,
    BOOKED_KEPT,
    BOOKED_SLACK,
    FORGET_AFTER,
    SUSPEND_AFTER,
    SUSPEND_MAX,
    THROTTLE_MIN,
    THROTTLE_UNTIMED,
    UNTIMED_PACE,
    Destination,
    Engine,
    EngineSettings,
)
from relay.delivery.mx import Router, make_resolver
from relay.delivery.retry import RetryPolicy
from relay.message import NewMessage
from relay.store import Store
from relay.tls import server_context, write_self_signed
from tests.conftest import start_sink, store_rows

RAW = b"Subject: shaping\r\n\r\nbody\r\n"


def engine_for(store: Store, router: Router, **settings) -> Engine:
    defaults = dict(
        owner="n",
        concurrency=50,
        lease=300,
        poll_interval=0.05,
        retry=RetryPolicy((60,), 3600, jitter=0.0),
        idle_timeout=0.5,
    )
    connect_timeout = settings.pop("connect_timeout", 2)
    client = SmtpClient("relay.test", connect_timeout=connect_timeout, command_timeout=5, clock=store.clock)
    return Engine(store, router, client, store.clock, EngineSettings(**{**defaults, **settings}), random.Random(0))


async def queue(store: Store, *rcpts: str) -> NewMessage:
    m = NewMessage("sender@example.com", rcpts, RAW, "smtp")
    await store.queue.enqueue(m)
    return m


async def test_connections_are_reused_across_messages(store, sink):
    engine = engine_for(store, Router(("127.0.0.1", sink.port), 25, None), shaping={"default": {"max_connections": 2}})
    for i in range(30):
        await queue(store, f"u{i}@one.example")
    assert await engine.run_once() == 30
    assert len(sink.handler.received) == 30
    assert sink.handler.connections <= 2, sink.handler.connections
    await engine.stop(1)


async def test_max_messages_per_connection_opens_new_ones(store, sink):
    shaping = {"default": {"max_connections": 1, "max_messages_per_connection": 5}}
    engine = engine_for(store, Router(("127.0.0.1", sink.port), 25, None), shaping=shaping)
    for i in range(12):
        await queue(store, f"u{i}@one.example")
    await engine.run_once()
    assert len(sink.handler.received) == 12 and sink.handler.connections == 3
    await engine.stop(1)


async def test_a_connection_older_than_max_connection_age_is_replaced(store, sink):
    shaping = {"default": {"max_connections": 1, "max_connection_age": 60.0}}
    engine = engine_for(store, Router(("127.0.0.1", sink.port), 25, None), shaping=shaping, idle_timeout=600)
    connections = []
    for advance in (0, 30, 31):  # sent at 0 s, 30 s (the same connection), 61 s (too old: a new one)
        store.clock.advance(advance)
        await queue(store, f"u{advance}@one.example")
        assert await engine.run_once() == 1
        connections.append(sink.handler.connections)
    assert connections == [1, 1, 2]
    await engine.stop(1)


async def test_max_connections_per_destination_is_never_exceeded(store, sink):
    sink.handler.data_delay = 0.05
    engine = engine_for(store, Router(("127.0.0.1", sink.port), 25, None), shaping={"default": {"max_connections": 3}})
    for i in range(40):
        await queue(store, f"u{i}@one.example")
    await engine.run_once()
    assert len(sink.handler.received) == 40
    assert sink.handler.max_open <= 3
    assert sink.handler.max_open >= 2  # and the limit is used
    await engine.stop(1)


async def test_a_dead_destination_does_not_hold_back_another(store, sink, dns_server):
    release = asyncio.Event()
    held: list[asyncio.StreamWriter] = []

    async def never_greets(reader, writer):
        held.append(writer)
        await release.wait()
        writer.close()

    dead = await asyncio.start_server(never_greets, "127.0.0.2", sink.port)
    try:
        dns_server.zone.update({"live.example": {"A": ["127.0.0.1"]}, "dead.example": {"A": ["127.0.0.2"]}})
        router = Router(None, sink.port, make_resolver([("127.0.0.1", dns_server.port)], 2))
        # A connection for each dead recipient: one wave of connect timeouts (3 s) ends them all; with two
        # connections it took two waves (a worker takes its next job as its connection fails): 6 s.
        engine = engine_for(store, router, connect_timeout=3, shaping={"default": {"max_connections": 10}})
        for i in range(10):
            await queue(store, f"u{i}@dead.example")
        for i in range(10):
            await queue(store, f"u{i}@live.example")
        started = time.monotonic()
        task = asyncio.create_task(engine.run_once())
        await sink.handler.wait_for(10, timeout=10)
        assert time.monotonic() - started < 2.5  # well before the dead site's 3 s connect timeout
        await task
        assert time.monotonic() - started < 5.5  # one wave of timeouts
        states = (await store.queue.summary()).by_state
        assert states["delivered"] == 10 and states["deferred"] + states["queued"] == 10
        await engine.stop(1)
    finally:
        release.set()
        dead.close()
        await asyncio.sleep(0.05)


async def test_repeated_connection_failures_suspend_the_destination(store):
    engine = engine_for(store, Router(("127.0.0.1", 9), 25, None), shaping={"default": {"max_connections": 1}})
    for i in range(10):
        await queue(store, f"u{i}@down.example")
    await engine.run_once()
    (dest,) = engine.destinations.values()
    assert dest.suspended_until > store.clock.now()
    ((attempts,),) = await store_rows(store, "SELECT count(*) FROM attempts")
    ((untouched,),) = await store_rows(store, "SELECT count(*) FROM recipients WHERE attempts = 0 AND state = 'queued'")
    assert attempts == SUSPEND_AFTER  # the rest waits for the suspension to end, without attempts
    assert untouched == 10 - SUSPEND_AFTER
    await queue(store, "late@down.example")  # claimed while suspended: back when the suspension ends
    await engine._claim_and_dispatch()
    await asyncio.gather(*engine._tasks)
    ((due,),) = await store_rows(store, "SELECT next_attempt_at FROM recipients WHERE address = 'late@down.example'")
    assert due == dest.suspended_until
    assert not dest.booked and dest.booked_until == 0.0, "not booked at the site's pace, nor moving its booking"
    await engine.stop(1)


async def attempt_times(store: Store) -> list[float]:
    return [at for (at,) in await store_rows(store, "SELECT at FROM attempts ORDER BY id")]


async def test_a_suspension_doubles_with_each_failure_after_it(store):
    """Connections refused: after SUSPEND_AFTER failures the destination rests 30 s, and each failure on
    coming back doubles the rest (60 s, 120 s, 240 s); nothing is attempted in between, on the engine's
    own poll loop. Twelve virtual minutes, no real sleep."""
    clock = store.clock
    engine = engine_for(
        store, Router(("127.0.0.1", 9), 25, None), poll_interval=1.0, shaping={"default": {"max_connections": 1}}
    )
    for i in range(10):
        await queue(store, f"u{i}@down.example")
    start = clock.now()

    async def attempts(count: int) -> None:
        while len(await attempt_times(store)) < count:  # noqa: ASYNC110 (rows in the database: nothing signals them)
            await asyncio.sleep(0.005)

    running = asyncio.create_task(engine.run())
    try:
        # Time moves once the poll loop and every task the engine spawned (workers, recording) wait on the clock.
        everything_waits = lambda: 1 + len(engine._tasks)  # noqa: E731
        await clock.drive(attempts(SUSPEND_AFTER + 4), sleepers=everything_waits)
        assert [at - start for at in await attempt_times(store)] == [0, 0, 0, 30, 30 + 60, 90 + 120, 210 + 240]
        (dest,) = engine.destinations.values()
        assert dest.suspended_until - start == 450 + 480
        await clock.drive(attempts(SUSPEND_AFTER + 5), sleepers=everything_waits)
        assert (await attempt_times(store))[-1] - start == 930  # 480 s was still under SUSPEND_MAX
        assert dest.suspended_until - start == 930 + SUSPEND_MAX  # 960 s would be over it
    finally:
        await engine.stop(1)
        running.cancel()


@pytest.fixture
async def tls_sink(tmp_path):
    cert, key = tmp_path / "sink.crt", tmp_path / "sink.key"
    write_self_signed(cert, key, "mx.tls.example")
    sink = await start_sink(tls_context=server_context(str(cert), str(key)))
    yield sink
    await sink.stop()


async def test_opportunistic_tls_is_used_and_recorded(store, tls_sink):
    engine = engine_for(store, Router(("127.0.0.1", tls_sink.port), 25, None))
    m = await queue(store, "u@tls.example")
    await engine.run_once()
    (attempt,) = await store.queue.attempts(m.id, "u@tls.example")
    assert attempt.tls in ("TLSv1.3", "TLSv1.2") and attempt.code == 250 and attempt.enhanced == "2.0.0"
    assert attempt.ip == "127.0.0.1"
    await engine.stop(1)


async def test_verify_refuses_a_self_signed_certificate(store, tls_sink):
    engine = engine_for(store, Router(("127.0.0.1", tls_sink.port), 25, None), tls="verify")
    m = await queue(store, "u@tls.example")
    await engine.run_once()
    (s,) = await store.queue.message_status(m.id)
    assert s.state == "deferred" and s.last_code == 451 and s.last_response.startswith("4.7.5")
    assert tls_sink.handler.received == []
    await engine.stop(1)


async def test_required_tls_without_starttls_defers_and_policy_is_per_domain(store, sink):
    router = Router(("127.0.0.1", sink.port), 25, None)
    engine = engine_for(store, router, tls_policy={"secure.example": "required"})
    strict = await queue(store, "u@secure.example")
    relaxed = await queue(store, "u@plain.example")
    await engine.run_once()
    (s,) = await store.queue.message_status(strict.id)
    assert s.state == "deferred" and s.last_response.startswith("4.7.4")
    (s,) = await store.queue.message_status(relaxed.id)
    assert s.state == "delivered"
    (attempt,) = await store.queue.attempts(relaxed.id, "u@plain.example")
    assert attempt.tls is None
    await engine.stop(1)


async def test_a_retry_schedule_survives_a_restart(store_factory, sink):
    clock = FakeClock()
    first = store = store_factory(clock)
    engine = engine_for(store, Router(("127.0.0.1", sink.port), 25, None))
    sink.handler.rcpt_reply = "451 4.3.0 busy"
    m = await queue(store, "u@one.example")
    await engine.run_once()
    await engine.stop(1)
    await store.close()

    store = store_factory(clock, restart=first)  # "restarted"
    engine = engine_for(store, Router(("127.0.0.1", sink.port), 25, None))
    sink.handler.rcpt_reply = None
    assert await engine.run_once() == 0  # not due yet
    clock.advance(61)
    assert await engine.run_once() == 1
    (s,) = await store.queue.message_status(m.id)
    assert (s.state, s.attempts) == ("delivered", 2)
    await engine.stop(1)
    await store.close()


def test_token_bucket_paces_after_a_burst():
    from relay.config import Rate
    from relay.ratelimit import TokenBucket

    bucket = TokenBucket(Rate(10, 1.0), now=0.0)
    waits = [bucket.reserve(0.0) for _ in range(15)]
    assert waits[:10] == [0.0] * 10
    assert waits[10:] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])
    assert bucket.reserve(10.0) == 0.0  # refilled


@pytest.mark.parametrize(
    ("code", "text", "pushback"),
    [
        (421, "4.7.0 Try again later, closing connection", True),
        (451, "4.7.28 Our system has detected an unusual rate of unsolicited mail", True),
        (450, "4.2.1 The user you are trying to contact is receiving mail too quickly", False),
        (451, "4.3.0 Too many connections from your IP", True),
        (452, "4.5.3 Too many recipients", True),
        (451, "4.3.0 Mail server temporarily rejected message", False),
        (550, "5.7.1 rate limit exceeded", False),  # permanent: a bounce, not shaping
        (None, "connection refused", False),
    ],
)
def test_pushback_replies(code, text, pushback):
    from relay.delivery.shaping import is_pushback

    assert is_pushback(code, text) is pushback


async def test_a_receiver_pushing_back_halves_connections_then_recovers(store, sink):
    sink.handler.rcpt_reply = "421 4.7.0 Too many connections, slow down"
    engine = engine_for(store, Router(("127.0.0.1", sink.port), 25, None), shaping={"default": {"max_connections": 8}})
    await queue(store, "u@busy.example")
    await engine.run_once()
    (dest,) = engine.destinations.values()
    assert dest.max_connections == 4
    store.clock.advance(301)
    dest.recover(store.clock.now())
    assert dest.max_connections == 8
    await engine.stop(1)


async def test_a_route_sends_through_a_smarthost_that_requires_auth(store, sink):
    from relay.config import RouteConfig

    relayhost = await start_sink(logins={"relay-user": "s3cret"})
    try:
        routes = {
            "partner.example": RouteConfig(("127.0.0.1", relayhost.port), "relay-user", "s3cret"),
            "wrongpw.example": RouteConfig(("127.0.0.1", relayhost.port), "relay-user", "nope"),
        }
        engine = engine_for(store, Router(("127.0.0.1", sink.port), 25, None, routes=routes))
        routed = await queue(store, "a@partner.example", "b@partner.example")
        refused = await queue(store, "c@wrongpw.example")
        other = await queue(store, "d@elsewhere.example")
        await engine.run_once()
        assert [r.rcpt_tos for r in relayhost.handler.received] == [["a@partner.example", "b@partner.example"]]
        assert relayhost.handler.logins == ["relay-user"]
        assert [r.rcpt_tos for r in sink.handler.received] == [["d@elsewhere.example"]]
        assert {s.state for s in await store.queue.message_status(routed.id)} == {"delivered"}
        assert {s.state for s in await store.queue.message_status(other.id)} == {"delivered"}
        (s,) = await store.queue.message_status(refused.id)  # a refused login defers: it is a configuration problem
        assert s.state == "deferred" and s.last_code == 451 and "AUTH" in s.last_response
        await engine.stop(1)
    finally:
        await relayhost.stop()


def record_virtual_arrivals(sink, clock: VirtualClock) -> list[float]:
    """The clock's monotonic time at each message the sink accepts."""
    times: list[float] = []
    accept = sink.handler.handle_DATA

    async def handle_DATA(server, session, envelope):
        reply = await accept(server, session, envelope)
        times.append(clock.monotonic())
        return reply

    sink.handler.handle_DATA = handle_DATA
    return times


async def test_max_rate_paces_deliveries_to_a_destination(store, sink):
    from relay.config import Rate

    shaping = {"default": {"max_connections": 4, "max_rate": Rate(20, 1.0)}}
    clock = store.clock
    times = record_virtual_arrivals(sink, clock)
    engine = engine_for(store, Router(("127.0.0.1", sink.port), 25, None), shaping=shaping)
    for i in range(40):
        await queue(store, f"u{i}@paced.example")
    started = clock.monotonic()
    await clock.drive(engine.run_once(), sleepers=lambda: engine.connections)  # every worker waits: move on
    assert len(times) == 40
    # a burst of one second's worth (20) at once, then one every 1/20 s: the 40th a second after the first
    assert [t - started for t in times[:20]] == [0.0] * 20
    assert [t - started for t in times[20:]] == pytest.approx([0.05 * (i + 1) for i in range(20)])
    await engine.stop(1)


async def test_reconfigure_changes_the_limits_of_known_destinations(store, sink):
    import dataclasses

    from relay.config import Rate

    engine = engine_for(store, Router(("127.0.0.1", sink.port), 25, None), shaping={"default": {"max_connections": 2}})
    await queue(store, "u@one.example")
    await engine.run_once()
    (dest,) = engine.destinations.values()
    assert dest.max_connections == 2 and dest.bucket is None
    shaping = {"default": {"max_connections": 6}, "one.example": {"max_rate": Rate(5, 1.0)}}
    engine.reconfigure(dataclasses.replace(engine.settings, shaping=shaping))
    assert dest.max_connections == 6 and dest.bucket is not None and dest.bucket.per_second == 5
    await engine.stop(1)


async def test_a_kept_connection_the_server_dropped_is_replaced_at_once(store):
    """A receiver closes an idle kept-open connection: the next message goes on a new connection in
    the same attempt (nothing of it had been sent), not into the retry schedule."""
    from tests.conftest import CountingSMTP, SinkHandler

    handler, sessions = SinkHandler(), []

    class Recorded(CountingSMTP):
        def connection_made(self, transport):
            sessions.append(transport)
            super().connection_made(transport)

    def factory():
        smtp = Recorded(handler, hostname="sink.test")
        smtp.handler = handler
        return smtp

    server = await asyncio.get_running_loop().create_server(factory, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    engine = engine_for(
        store, Router(("127.0.0.1", port), 25, None), idle_timeout=30, shaping={"default": {"max_connections": 1}}
    )
    try:
        await queue(store, "first@one.example")
        assert await engine.run_once() == 1
        for transport in sessions:  # the receiver hangs up on the idle connection
            transport.close()
        await asyncio.sleep(0.05)
        m = await queue(store, "second@one.example")
        assert await engine.run_once() == 1
        assert [(s.state, s.attempts) for s in await store.queue.message_status(m.id)] == [("delivered", 1)]
        assert len(handler.received) == 2 and handler.connections == 2
    finally:
        await engine.stop(1)
        server.close()


async def test_rset_only_after_a_transaction_that_ended_early(store):
    """A transaction answered at the end of its data needs no RSET before the next MAIL; one that
    ended at RCPT (every recipient refused) does. The sink sees every message either way."""
    from tests.conftest import CountingSMTP, SinkHandler

    class Counting(SinkHandler):
        resets = 0

        async def handle_RSET(self, server, session, envelope):
            self.resets += 1
            return "250 2.0.0 Ok"

    handler = Counting()

    def factory():
        smtp = CountingSMTP(handler, hostname="sink.test")
        smtp.handler = handler
        return smtp

    server = await asyncio.get_running_loop().create_server(factory, "127.0.0.1", 0)
    engine = engine_for(
        store,
        Router(("127.0.0.1", server.sockets[0].getsockname()[1]), 25, None),
        shaping={"default": {"max_connections": 1}},
    )
    try:
        for address in ("a@one.example", "b@one.example", "permfail@one.example", "c@one.example"):
            await queue(store, address)
            assert await engine.run_once() == 1
        assert [r.rcpt_tos for r in handler.received] == [["a@one.example"], ["b@one.example"], ["c@one.example"]]
        assert handler.connections == 1 and handler.resets == 1
    finally:
        await engine.stop(1)
        server.close()


async def test_a_new_job_wakes_one_idle_worker_the_latest(store, sink):
    """Every idle worker of a destination waited on one event, so each job woke them all (each to find
    it taken by the first): now one is woken, the one that went idle last."""
    engine = engine_for(store, Router(("127.0.0.1", sink.port), 25, None), shaping={"default": {"max_connections": 3}})
    for i in range(6):
        await queue(store, f"u{i}@one.example")
    assert await engine.run_once() == 6
    (dest,) = engine.destinations.values()
    for _ in range(100):  # the three workers go idle, each with its open connection
        if len(dest.idle) == 3:
            break
        await asyncio.sleep(0.01)
    idle = list(dest.idle)
    assert len(idle) == 3
    await queue(store, "u6@one.example")
    await engine._claim_and_dispatch()
    assert [signal.is_set() for signal in idle] == [False, False, True]
    await engine.run_once()
    assert len(sink.handler.received) == 7
    assert sum(d.connections_opened for d in engine.destinations.values()) == 3  # the job went over a kept one
    await engine.stop(1)


async def test_a_burst_bigger_than_a_site_holds_goes_out_at_the_sites_pace(store_factory, sink):
    """One connection holds 20 jobs; the rest of a burst is put back in the queue. It came back after a fixed
    5 s, 20 at a time, so 120 messages took half a minute to a site that takes hundreds a second (and two
    nodes sharing one connection waited 5 s between deliveries, tests/test_cluster.py). Each job put back
    now comes back when the site's pace says it will have room, and the engine claims then."""
    store = store_factory(SystemClock())
    router = Router(("127.0.0.1", sink.port), 25, None)
    engine = engine_for(store, router, poll_interval=1.0, shaping={"default": {"max_connections": 1}})
    for i in range(120):
        await queue(store, f"u{i}@one.example")
    started = time.monotonic()
    running = asyncio.create_task(engine.run())
    try:
        while len(sink.handler.received) < 120:
            assert time.monotonic() - started < 20, f"{len(sink.handler.received)} of 120 delivered"
            await asyncio.sleep(0.01)
    finally:
        await engine.stop(1)
        await running
    assert time.monotonic() - started < 5  # 0.5 s before the site's pace is known, then its pace
    assert sink.handler.max_open == 1


async def test_a_backlog_for_a_slow_site_is_put_back_once_not_every_few_seconds(store_factory, sink):
    """What a full site cannot take went back to the queue for at most 5 s: a backlog longer than 5 s of the
    site's pace came back every 5 s to be claimed and put back again (20,000 messages to a site taking two
    a second: 65,000 claims and put-backs and 7.8 s of CPU in 15 s, for 28 delivered). Each job is booked
    for when the site's pace says it can take it, up to BOOK_AHEAD ahead, and put back once."""
    sink.handler.data_delay = 0.05  # 20 a second on the one connection
    store = store_factory(SystemClock())
    router = Router(("127.0.0.1", sink.port), 25, None)
    engine = engine_for(store, router, poll_interval=1.0, shaping={"default": {"max_connections": 1}})
    for i in range(400):
        await queue(store, f"u{i}@one.example")
    put_back: list[int] = []
    postpone_each = store.queue.postpone_each

    async def counted(returns: list[tuple[int, float]]) -> None:
        put_back.extend(rid for rid, _ in returns)
        await postpone_each(returns)

    store.queue.postpone_each = counted  # type: ignore[method-assign]
    running = asyncio.create_task(engine.run())
    try:
        await asyncio.sleep(5.6)  # past the old 5 s
    finally:
        await engine.stop(1)
        await running
    assert len(sink.handler.received) >= 40, "the site was kept busy"
    assert len(put_back) == len(set(put_back)), "each put back once"
    assert len(put_back) <= 400 - 20


async def test_a_site_faster_than_its_booking_has_what_was_put_back_brought_forward(store_factory, sink):
    """Before anything is timed a site's jobs are booked a second a connection apart, slower than most sites
    (a wrong guess there costs no put-back again): when the site runs low, the next ones are made due at
    once, so a fast site is kept busy whatever was booked."""
    store = store_factory(SystemClock())
    router = Router(("127.0.0.1", sink.port), 25, None)
    engine = engine_for(store, router, poll_interval=1.0, shaping={"default": {"max_connections": 1}})
    for i in range(200):
        await queue(store, f"u{i}@one.example")
    started = time.monotonic()
    running = asyncio.create_task(engine.run())
    try:
        while len(sink.handler.received) < 200:
            assert time.monotonic() - started < 10, f"{len(sink.handler.received)} of 200 delivered"
            await asyncio.sleep(0.01)
    finally:
        await engine.stop(1)
        await running
    assert time.monotonic() - started < 3  # booked a second apart, they would take minutes


async def test_a_claim_that_found_nothing_due_is_not_made_again_for_each_recipient_let_go(store, sink):
    """Each recipient the engine let go of (delivered, deferred, put back) woke it to claim again: with a
    backlog booked for later, thousands of claims found a few recipients or none (4,318 for 30,000 messages
    to one site). What is let go of makes nothing due now; after a claim that found nothing, only new mail,
    a put-back's return and the poll make it look again."""
    engine = engine_for(store, Router(("127.0.0.1", sink.port), 25, None))
    await queue(store, "u@one.example")
    assert await engine._claim_and_dispatch() == 1 and not engine._nothing_due
    assert await engine._claim_and_dispatch() == 0 and engine._nothing_due
    engine._wake.clear()
    await sink.handler.wait_for(1, timeout=10)
    for _ in range(200):
        if engine.held == 0:
            break
        await asyncio.sleep(0.01)
    assert engine.held == 0 and not engine._wake.is_set(), "let go of, and no claim for it"
    engine.wake()  # new mail
    assert engine._wake.is_set()
    await engine.stop(1)


def timed_destination(seconds_a_message: float | None, jobs: int, workers: int = 1, rate: str = "") -> Destination:
    shaping = Shaping(max_connections=workers, max_rate=parse_rate(rate) if rate else None)
    dest = Destination("one.example", shaping, 0.0)
    if seconds_a_message is not None:
        dest.sent(seconds_a_message)
    dest.jobs.extend([None] * jobs)  # type: ignore[list-item]  # only their number counts
    dest.workers = workers
    return dest


def test_jobs_put_back_come_back_in_turn_at_the_sites_pace():
    untimed = timed_destination(None, 20, workers=2)  # nothing timed yet: a slow guess, in turn
    assert [untimed.book_return(100.0) for _ in range(3)] == [
        THROTTLE_UNTIMED,
        THROTTLE_UNTIMED + UNTIMED_PACE / 2,
        THROTTLE_UNTIMED + UNTIMED_PACE,
    ]
    fast = timed_destination(0.001, 20)  # 1 ms a message on its one connection: 20 jobs ahead
    assert [round(fast.book_return(100.0), 4) for _ in range(3)] == [0.02, 0.021, 0.022]
    assert round(fast.book_return(100.5), 4) == 0.02  # a booking in the past is no longer ahead
    two = timed_destination(0.001, 20, workers=2)
    assert round(two.book_return(100.0), 4) == 0.01
    paced = timed_destination(0.001, 20, rate="10/s")  # max_rate sets the pace below the connection's
    assert [round(paced.book_return(100.0), 4) for _ in range(2)] == [2.0, 2.1]
    slow = timed_destination(1.0, 20)  # 20 s of work ahead: back in 20 s (it was 5 s, to be put back again)
    assert [slow.book_return(100.0) for _ in range(2)] == [20.0, 21.0]
    backlog = timed_destination(1.0, 20)
    backlog.booked_until = 100.0 + 5000  # hours of work booked: back after BOOK_AHEAD, to be booked again
    assert backlog.book_return(100.0) == BOOK_AHEAD
    instant = timed_destination(0.0, 20)
    assert instant.book_return(100.0) == THROTTLE_MIN


def test_a_site_run_out_of_jobs_brings_forward_what_was_put_back():
    """A site's pace can be slower than it turns out (a guess before anything was timed, a receiver that got
    faster): when it has no job left before the next booked return, the earliest put back are brought
    forward, as many as it holds. (Bringing them forward while it still had jobs oversupplied a fast site:
    what came back at its booking then found it full and was put back again.)"""
    dest = timed_destination(1.0, 20)  # one connection: holds 20 jobs
    for n in range(60):
        dest.book_return(100.0, [n])
    assert len(dest.booked) == 60
    dest.jobs.pop()
    assert dest.take_booked(100.0) == [], "it has jobs to work on"
    dest.jobs.clear()
    dest.bringing = True
    assert dest.take_booked(100.0) == [], "some are on their way already"
    dest.bringing = False
    dest.factor = 0.5
    assert dest.take_booked(100.0) == [], "it pushed back: it asked for less"
    dest.factor = 1.0
    dest.failures = 1
    assert dest.take_booked(100.0) == [], "it fails to connect"
    dest.failures = 0
    assert dest.take_booked(100.0) == list(range(20)), "as many as it holds, the earliest first"
    # those due within BOOKED_SLACK come back by themselves and are only forgotten
    assert dest.take_booked(100.0 + 20 + 45 - BOOKED_SLACK + 0.001) == list(range(46, 60))  # 45 was at 165 s
    assert len(dest.booked) == 0 and not dest.booked


def test_a_destination_remembers_a_bounded_number_of_bookings(monkeypatch):
    monkeypatch.setattr(engine_module, "BOOKED_KEPT", 500)
    dest = timed_destination(0.001, 20)
    for n in range(600):
        dest.book_return(100.0, [n])
    assert len(dest.booked) == 500  # the rest come back at their time, not brought forward


def test_a_backlog_booked_before_its_site_was_timed_is_remembered_whole():
    """The first claims of a big backlog are booked before anything is timed, a second a connection apart:
    50,000 recipients run past BOOK_AHEAD, and all of them are remembered to be brought forward as the
    site turns out faster (remembering only the first 20,000 left the rest waiting out BOOK_AHEAD with the
    site idle)."""
    dest = timed_destination(None, 20, workers=20)
    for n in range(50_000):
        dest.book_return(100.0, [n])
    assert len(dest.booked) == 50_000 <= BOOKED_KEPT
    dest.jobs.clear()
    taken: list[int] = []
    while ids := dest.take_booked(100.0):
        taken.extend(ids)
    assert taken == list(range(50_000))


def test_bookings_keep_their_turn_and_forget_what_is_due():
    bookings = Bookings()
    assert not bookings and bookings.take(5) == []
    bookings.add(10.0, [1, 2])
    bookings.add(11.0, range(3, 10_003))
    assert len(bookings) == 10_002
    bookings.drop_until(10.5)  # 1 and 2 are due by then: forgotten
    assert bookings.take(3) == [3, 4, 5]
    assert len(bookings.take(6_000)) == 6_000  # past COMPACT_AT: the arrays are cut down
    assert len(bookings) == 3_997
    assert bookings.take(10_000)[-1] == 10_002
    assert len(bookings) == 0


def test_a_sites_time_a_message_is_a_moving_average():
    dest = timed_destination(0.010, 0)
    dest.sent(0.020)
    assert dest.send_seconds == pytest.approx(0.012)
    assert dest.messages_sent == 2


async def test_idle_connections_make_way_for_sites_waiting_under_the_concurrency_limit(store_factory, sink, dns_server):
    """``concurrency`` caps connections for all sites together, and a connection waits idle_timeout (5 s)
    for more work: a send to many domains moved 'concurrency' sites every 5 s while the connections to the
    sites already done sat idle. An idle connection now closes when a site with work waits for a place."""
    dns_server.zone.update({f"d{n}.example": {"A": ["127.0.0.1"]} for n in range(6)})
    store = store_factory(SystemClock())
    router = Router(None, sink.port, make_resolver([("127.0.0.1", dns_server.port)], 2))
    engine = engine_for(store, router, concurrency=2, idle_timeout=5.0, poll_interval=1.0)
    for n in range(6):
        await queue(store, f"u{n}@d{n}.example")
    started = time.monotonic()
    running = asyncio.create_task(engine.run())
    try:
        await sink.handler.wait_for(6, timeout=30)
    finally:
        await engine.stop(1)
        await running
    assert time.monotonic() - started < 3  # three sites' turns, none waiting out another's idle time
    assert sink.handler.max_open <= 2


async def test_a_busy_site_gives_a_waiting_site_a_place_under_the_concurrency_limit(store_factory, sink, dns_server):
    """A site with a backlog kept every connection the overall limit allowed until its backlog was done, and
    a site with one message waited behind it. A busy site now lets a connection go (keeping one) for each
    site that has none and waits."""
    sink.handler.data_delay = 0.02
    dns_server.zone.update({"busy.example": {"A": ["127.0.0.1"]}, "other.example": {"A": ["127.0.0.1"]}})
    store = store_factory(SystemClock())
    router = Router(None, sink.port, make_resolver([("127.0.0.1", dns_server.port)], 2))
    engine = engine_for(store, router, concurrency=2, poll_interval=1.0, shaping={"default": {"max_connections": 2}})
    for i in range(40):
        await queue(store, f"u{i}@busy.example")
    running = asyncio.create_task(engine.run())
    try:
        await sink.handler.wait_for(4, timeout=10)  # the busy site has both places
        await queue(store, "u@other.example")
        engine.wake()
        await sink.handler.wait_for(41, timeout=30)
    finally:
        await engine.stop(1)
        await running
    order = [r.rcpt_tos[0] for r in sink.handler.received]
    assert order.index("u@other.example") < 20, order  # long before the busy site's backlog was done
    assert sink.handler.max_open <= 2


async def test_a_domain_is_looked_up_once_for_the_messages_claimed_together(store, sink, dns_server):
    """A claim hands each message's recipients for a domain to its own routing task, and each asked DNS:
    a hundred messages to a domain not yet in the cache made a hundred MX queries and a hundred of each
    address query at once (a newsletter's first claim: a thousand). Lookups of one name now share one query."""
    dns_server.zone.update({"many.example": {"MX": ["10 mx.many.example."]}, "mx.many.example": {"A": ["127.0.0.1"]}})
    router = Router(None, sink.port, make_resolver([("127.0.0.1", dns_server.port)], 2))
    engine = engine_for(store, router)
    for i in range(100):
        await queue(store, f"u{i}@many.example")
    assert await engine.run_once() == 100
    assert len(sink.handler.received) == 100
    asked = collections.Counter(dns_server.protocol.queries)
    assert asked[("many.example", "MX")] == 1, asked
    assert asked[("mx.many.example", "A")] == 1, asked
    await engine.stop(1)


async def test_a_destination_with_nothing_going_on_is_forgotten(store, sink):
    """Every site ever sent to stayed in the engine: in memory, and in the loop over all of them each time a
    connection closed (a relay that had sent to 100,000 domains walked 100,000 sites a delivery)."""
    engine = engine_for(store, Router(("127.0.0.1", sink.port), 25, None))
    await queue(store, "u@one.example")
    assert await engine.run_once() == 1
    (dest,) = engine.destinations.values()
    store.clock.advance(FORGET_AFTER - 1)  # the idle connection closes meanwhile
    deadline = time.monotonic() + 5
    while dest.workers:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    assert engine.forget_idle() == 0
    store.clock.advance(2)
    assert engine.forget_idle() == 1 and not engine.destinations
    await engine.stop(1)


def test_a_destination_with_something_to_remember_is_kept():
    def idle(**state: float) -> bool:
        dest = Destination("one.example", Shaping(), 0.0)
        for name, value in state.items():
            setattr(dest, name, value)
        return dest.forgettable(now=1_000.0, monotonic=FORGET_AFTER)

    assert idle()
    assert not idle(failures=1)  # connections failing: the next failure suspends it for longer
    assert not idle(suspended_until=1_001.0)
    assert not idle(factor=0.5, cooldown_until=900.0)  # pushed back: grows back step by step
    assert not idle(retry_slot_at=1_001.0)
    assert not idle(workers=1)
    assert not idle(last_job_at=1.0)
