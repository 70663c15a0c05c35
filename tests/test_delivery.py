"""The delivery engine against a real SMTP sink and a real DNS server on loopback, with a fake clock."""

from __future__ import annotations

import asyncio
import math
import random
import time

import pytest

from relay.delivery.client import SmtpClient
from relay.delivery.engine import Engine, EngineSettings
from relay.delivery.mx import MAX_EXCHANGES, MAX_LOOKUPS, RouteError, Router, make_resolver, site_of
from relay.delivery.retry import RetryPolicy
from relay.message import NewMessage
from relay.store import Store
from tests.conftest import store_rows

RAW = b"Subject: engine test\r\n\r\nbody\r\n"
POLICY = RetryPolicy(schedule=(60, 120, 600), max_age=3600, jitter=0.0)


def make_engine(store: Store, router: Router) -> Engine:
    settings = EngineSettings(owner="test-node", concurrency=10, lease=300, poll_interval=0.05, retry=POLICY)
    client = SmtpClient("relay.test", connect_timeout=2, command_timeout=5)
    return Engine(store, router, client, store.clock, settings, random.Random(0))


async def queue(store: Store, *rcpts: str) -> NewMessage:
    m = NewMessage("sender@example.com", rcpts, RAW, "smtp")
    await store.queue.enqueue(m)
    return m


async def states(store: Store, m: NewMessage) -> dict[str, tuple[str, int]]:
    return {s.address: (s.state, s.attempts) for s in await store.queue.message_status(m.id)}


async def test_smarthost_outcomes_per_recipient(store, sink):
    engine = make_engine(store, Router(("127.0.0.1", sink.port), 25, None))
    m = await queue(store, "ok@a.example", "tempfail@a.example", "permfail@a.example")
    assert await engine.run_once() == 3
    assert await states(store, m) == {
        "ok@a.example": ("delivered", 1),
        "tempfail@a.example": ("deferred", 1),
        "permfail@a.example": ("bounced", 1),
    }
    assert [r.rcpt_tos for r in sink.handler.received] == [["ok@a.example"]]
    (deferred,) = [s for s in await store.queue.message_status(m.id) if s.state == "deferred"]
    assert deferred.next_attempt_at == store.clock.now() + 60
    assert deferred.last_code == 451 and "try again" in deferred.last_response


async def test_retry_schedule_follows_the_clock_and_expires(store, sink):
    engine = make_engine(store, Router(("127.0.0.1", sink.port), 25, None))
    m = await queue(store, "tempfail@a.example")
    await engine.run_once()
    assert await engine.run_once() == 0  # not due yet
    store.clock.advance(59)
    assert await engine.run_once() == 0
    store.clock.advance(1)
    assert await engine.run_once() == 1  # second attempt after 60s
    (s,) = await store.queue.message_status(m.id)
    assert (s.state, s.attempts, s.next_attempt_at) == ("deferred", 2, store.clock.now() + 120)
    store.clock.advance(3600)  # past the queue lifetime
    assert await engine.run_once() == 1
    (s,) = await store.queue.message_status(m.id)
    assert (s.state, s.attempts, s.next_attempt_at) == ("failed", 3, None)


async def test_connection_refused_defers(store):
    engine = make_engine(store, Router(("127.0.0.1", 9), 25, None))
    m = await queue(store, "a@a.example")
    await engine.run_once()
    (s,) = await store.queue.message_status(m.id)
    assert s.state == "deferred" and s.last_code is None
    assert "127.0.0.1:9" in s.last_response


async def test_data_rejection_applies_to_every_accepted_recipient(store, sink):
    sink.handler.data_reply = "554 5.6.0 content rejected"
    engine = make_engine(store, Router(("127.0.0.1", sink.port), 25, None))
    m = await queue(store, "a@a.example", "b@a.example")
    await engine.run_once()
    assert await states(store, m) == {"a@a.example": ("bounced", 1), "b@a.example": ("bounced", 1)}


async def test_mx_routing_through_dns(store, sink, dns_server):
    dns_server.zone.update(
        {
            "mx.example": {"MX": ["10 mx1.mx.example.", "20 mx2.mx.example."]},
            "mx1.mx.example": {"A": ["127.0.0.2"]},  # nothing listens there: must fall through to mx2
            "mx2.mx.example": {"A": ["127.0.0.1"]},
            "implicit.example": {"A": ["127.0.0.1"]},  # no MX: the domain is its own MX
            "nullmx.example": {"MX": ["0 ."]},
            "broken.example": {"SERVFAIL": ["1"]},
        }
    )
    resolver = make_resolver([("127.0.0.1", dns_server.port)], timeout=2)
    engine = make_engine(store, Router(None, sink.port, resolver))
    ok = await queue(store, "u@mx.example", "v@implicit.example")
    gone = await queue(store, "u@nxdomain.example")
    null = await queue(store, "u@nullmx.example")
    broken = await queue(store, "u@broken.example")
    no_name = await queue(store, "u@" + "x" * 64 + ".example")  # a label DNS cannot hold: no retry helps
    too_long = await queue(store, "u@" + ".".join(["y" * 60] * 5))  # over 255 octets: dnspython's FormError
    await engine.run_once()
    assert await states(store, ok) == {"u@mx.example": ("delivered", 1), "v@implicit.example": ("delivered", 1)}
    assert sorted(r for m in sink.handler.received for r in m.rcpt_tos) == ["u@mx.example", "v@implicit.example"]
    (s,) = await store.queue.message_status(gone.id)
    assert (s.state, s.last_code) == ("bounced", 550) and "5.1.2" in s.last_response
    (s,) = await store.queue.message_status(null.id)
    assert (s.state, s.last_code) == ("bounced", 556)
    (s,) = await store.queue.message_status(broken.id)
    assert (s.state, s.last_code) == ("deferred", 451)
    (s,) = await store.queue.message_status(no_name.id)
    assert (s.state, s.last_code) == ("bounced", 550) and "not a domain name" in s.last_response
    (s,) = await store.queue.message_status(too_long.id)
    assert (s.state, s.last_code) == ("bounced", 550) and "not a domain name" in s.last_response
    assert ("mx.example", "MX") in dns_server.protocol.queries


async def test_a_domain_with_hundreds_of_mx_hosts_costs_a_bounded_attempt(dns_server):
    """A domain's DNS is anyone's: 200 MX records of long names cost 400 lookups per attempt when none of
    them had an address, and named a site (a key of PostgreSQL's per-site tables) of 12 KB."""
    names = [f"{'h' * 50}.{i}.{'x' * 50}.many.example" for i in range(200)]
    zone = {"many.example": {"MX": [f"{10 if i < 100 else 20} {n}." for i, n in enumerate(names)]}}
    zone.update({n: {"A": ["127.0.0.1"]} for n in names[100:]})
    zone["few.example"] = {"MX": ["10 mx2.few.example.", "10 MX1.few.example."]}
    zone.update({n: {"A": ["127.0.0.1"]} for n in ("mx1.few.example", "mx2.few.example")})
    dns_server.zone.update(zone)
    resolver = make_resolver([("127.0.0.1", dns_server.port)], timeout=2)
    router = Router(None, 25, resolver, rng=random.Random(1))
    with pytest.raises(RouteError):  # the first ten tried have no address: no more lookups this attempt
        await router.route("many.example")
    looked_up = [q for q in dns_server.protocol.queries if q[0] != "many.example"]
    assert 0 < len(looked_up) <= 2 * MAX_EXCHANGES
    site = (await Router(None, 25, resolver, rng=random.Random(2)).route("few.example")).site
    assert site == "mx mx1.few.example,mx2.few.example"  # short enough: named in full
    long_site = site_of(list(reversed(names)))
    assert len(long_site) < 300 and long_site == site_of(names) != site_of(names[:-1])


async def test_a_domains_route_is_known_without_dns_until_its_answers_expire(dns_server, monkeypatch):
    """Each message's route asked the resolver again: its cache answered, at 146 us a call (three answers
    and AAAA's NoAnswer raised each time) and a task for each message's routing. The router keeps what DNS
    said until the first of the answers expires, and routes from it at once."""
    dns_server.zone.update(
        {
            "ttl.example": {"MX": ["10 mx1.ttl.example.", "10 mx2.ttl.example."]},
            "mx1.ttl.example": {"A": ["127.0.0.1"]},
            "mx2.ttl.example": {"A": ["127.0.0.2"]},
        }
    )
    router = Router(None, 25, make_resolver([("127.0.0.1", dns_server.port)], timeout=2), rng=random.Random(3))
    assert router.route_now("ttl.example") is None
    first = await router.route("ttl.example")
    asked = len(dns_server.protocol.queries)
    routes = [router.route_now("TTL.example") for _ in range(50)]
    assert all(r is not None and r.site == first.site for r in routes)
    orders = {r.mx_names for r in routes if r is not None}
    assert orders == {("mx1.ttl.example", "mx2.ttl.example"), ("mx2.ttl.example", "mx1.ttl.example")}  # shuffled
    assert len(dns_server.protocol.queries) == asked
    later = time.time() + 61  # the fixture's answers live 60 s
    monkeypatch.setattr(time, "time", lambda: later)
    assert router.route_now("ttl.example") is None


async def test_recipients_of_one_domain_share_one_transaction(store, sink):
    engine = make_engine(store, Router(("127.0.0.1", sink.port), 25, None))
    await queue(store, "a@one.example", "b@one.example", "c@two.example")
    await engine.run_once()
    assert sorted(sorted(r.rcpt_tos) for r in sink.handler.received) == [
        ["a@one.example", "b@one.example"],
        ["c@two.example"],
    ]


async def test_events_record_every_outcome(store, sink):
    engine = make_engine(store, Router(("127.0.0.1", sink.port), 25, None))
    await queue(store, "ok@a.example", "tempfail@a.example", "permfail@a.example")
    await engine.run_once()
    kinds = await store_rows(store, "SELECT recipient, kind, code FROM events ORDER BY id")
    assert sorted(kinds) == sorted(
        [
            ("ok@a.example", "queued", None),
            ("tempfail@a.example", "queued", None),
            ("permfail@a.example", "queued", None),
            ("ok@a.example", "delivered", 250),
            ("tempfail@a.example", "deferred", 451),
            ("permfail@a.example", "bounced", 550),
        ]
    )


async def test_stop_releases_leases_of_unfinished_deliveries(store, sink):
    sink.handler.data_delay = 5
    engine = make_engine(store, Router(("127.0.0.1", sink.port), 25, None))
    m = await queue(store, "slow@a.example")
    await engine._claim_and_dispatch()
    await sink.handler.data_started.wait()
    assert (await states(store, m))["slow@a.example"][0] == "sending"
    await engine.stop(grace=0.1)
    assert await states(store, m) == {"slow@a.example": ("queued", 0)}


async def test_a_receivers_hint_sets_the_next_attempt_and_expiry_says_4_4_7(store, sink):
    sink.handler.rcpt_reply = "451 4.7.1 Greylisted, try again in 3 minutes"
    engine = make_engine(store, Router(("127.0.0.1", sink.port), 25, None))
    m = await queue(store, "grey@a.example")
    await engine.run_once()
    (s,) = await store.queue.message_status(m.id)
    assert s.state == "deferred" and s.next_attempt_at == store.clock.now() + 180
    store.clock.advance(3600)
    await engine.run_once()
    (s,) = await store.queue.message_status(m.id)
    assert s.state == "failed" and s.last_response.startswith("4.4.7 expired") and "Greylisted" in s.last_response


async def test_no_more_than_max_lookups_domains_are_looked_up_at_once():
    """A claim of a thousand messages to as many new domains looked them all up at once: 3,000 queries, a
    socket each, past the open files a process may have (bench/burst.py --sites 1000 --mx: the lookups
    failed and the messages waited a minute for their retry)."""
    router = Router(None, 25, None)
    now, most = 0, 0

    async def exchanges(domain: str) -> tuple[list[tuple[int, str]], float]:
        nonlocal now, most
        now += 1
        most = max(most, now)
        await asyncio.sleep(0.001)
        now -= 1
        return [(10, f"mx.{domain}")], math.inf

    async def addresses(host: str) -> tuple[list[str], float]:
        return ["127.0.0.1"], math.inf

    router._exchanges = exchanges  # type: ignore[method-assign]
    router._addresses = addresses  # type: ignore[method-assign]
    routes = await asyncio.gather(*(router.route(f"d{n}.example") for n in range(3 * MAX_LOOKUPS)))
    assert len({r.site for r in routes}) == 3 * MAX_LOOKUPS
    assert most == MAX_LOOKUPS
