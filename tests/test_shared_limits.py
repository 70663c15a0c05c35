"""Limits that must hold for a whole cluster of nodes sharing one PostgreSQL database (issue 20).

Two "nodes" are two stores (or two Relay objects) opened on the same database: a per-key rate limit,
a daily quota and the SMTP AUTH failure limit each allow exactly N across both, and an Idempotency-Key
claimed or completed on one is seen by the other. The rate counters themselves run on both backends.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import os
import smtplib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest

from relay import ratelimit
from relay.app import Relay
from relay.clock import FakeClock, VirtualClock
from relay.config import Rate
from relay.credentials import create_smtp_credential
from relay.errors import QuotaExhausted
from relay.keys import create_api_key
from relay.message import NewMessage
from relay.ratelimit import RateLimiter, SharedLimiter, limiter_for
from relay.store.idempotency import Completion
from relay.store.postgres import PgStore
from relay.store.postgres.connection import PgConnection
from relay.store.queue import Quota
from relay.store.queue.quotas import take
from relay.submission.auth import LocalFailures, SharedFailures, SmtpAuthenticator, Throttled, Turns
from tests.conftest import PG_TEMPLATE, STORE_BACKENDS, make_config, write_store_key

T0 = 1_800_000_000.0  # on a window boundary for periods of a minute and an hour
HOUR = Rate(5, 3600.0)
_databases = itertools.count()


@pytest.fixture
def pg_url(pg_cluster) -> str:
    return str(pg_cluster.create_database(f"limits_{os.getpid()}_{next(_databases)}", template=PG_TEMPLATE))


@pytest.fixture
async def two_nodes(pg_url):
    """Two PgStores on one database, each with its own clock (set to the same time)."""
    stores = [PgStore(pg_url, FakeClock(T0)), PgStore(pg_url, FakeClock(T0))]
    yield stores
    for store in stores:
        await store.close()


# -- the counters, on both backends -----------------------------------------------------------------


@pytest.mark.parametrize("backend", STORE_BACKENDS)
async def test_the_counters_decide_as_the_memory_limiter_does_header_for_header(store_factory, backend):
    """The X-RateLimit-* headers and the refusal come out the same whichever limiter counts."""
    counters = store_factory(backend=backend).rate_counters
    memory = RateLimiter()
    for now in [T0, T0 + 1, T0 + 2, T0 + 3, T0 + 4, T0 + 5, T0 + 3599.5, T0 + 3600, T0 + 3601]:
        shared = await counters.hit("api:key_1", HOUR, now)
        assert shared == await memory.hit("key_1", HOUR, now)
        assert shared.headers() == (await memory.hit("key_2", HOUR, now)).headers()
    assert await counters.count("api:key_1", T0 + 3601) == 2  # the new window
    assert await counters.count("api:other", T0) == 0


@pytest.mark.parametrize("backend", STORE_BACKENDS)
async def test_a_refused_hit_counts_nothing_and_a_given_back_one_makes_room(store_factory, backend):
    counters = store_factory(backend=backend).rate_counters
    rate = Rate(2, 60.0)
    assert [(await counters.hit("k", rate, T0 + i)).allowed for i in range(4)] == [True, True, False, False]
    assert await counters.count("k", T0 + 4) == 2
    await counters.give_back("k", rate, T0 + 5)
    assert (await counters.hit("k", rate, T0 + 6)).allowed
    await counters.give_back("k", rate, T0 + 61)  # another window: nothing to take back there
    assert await counters.count("k", T0 + 59) == 2


@pytest.mark.parametrize("backend", STORE_BACKENDS)
async def test_a_node_whose_clock_is_behind_counts_in_the_newer_window(store_factory, backend):
    counters = store_factory(backend=backend).rate_counters
    rate = Rate(2, 60.0)
    assert (await counters.hit("k", rate, T0 + 60)).allowed  # a node in the second window
    late = await counters.hit("k", rate, T0 + 59)  # a node a second behind, still in the first
    assert late.allowed and late.remaining == 0 and late.reset_at == T0 + 120
    assert not (await counters.hit("k", rate, T0 + 59)).allowed


@pytest.mark.parametrize("backend", STORE_BACKENDS)
async def test_ended_windows_are_pruned(store_factory, backend):
    counters = store_factory(backend=backend).rate_counters
    await counters.hit("short", Rate(5, 60.0), T0)
    await counters.hit("long", HOUR, T0)
    assert await counters.prune(T0 + 60) == 1
    assert await counters.count("long", T0 + 60) == 1
    assert (await counters.hit("short", Rate(5, 60.0), T0 + 60)).remaining == 4


def test_the_backend_chooses_the_limiter_in_one_place(tmp_path):
    counters: Any = object()
    assert isinstance(limiter_for("sqlite", counters, "api", share=0.5), RateLimiter)
    shared = limiter_for("postgresql", counters, "api", share=0.5)
    assert isinstance(shared, SharedLimiter) and shared.prefix == "api"
    assert ratelimit.shared_counters("postgresql") and not ratelimit.shared_counters("sqlite")


# -- rate limits across two nodes -------------------------------------------------------------------


async def test_a_rate_limit_holds_exactly_across_two_stores_hit_at_once(two_nodes):
    a, b = two_nodes
    limiters = [SharedLimiter(a.rate_counters, "api"), SharedLimiter(b.rate_counters, "api")]
    rate = Rate(40, 60.0)
    decisions = await asyncio.gather(*(limiters[i % 2].hit("key_1", rate, T0 + 1) for i in range(120)))
    allowed = [d for d in decisions if d.allowed]
    assert len(allowed) == 40
    assert sorted(d.remaining for d in allowed) == list(range(40))  # each count given out once
    assert all(d.retry_after == 59 for d in decisions if not d.allowed)


async def get_statuses(relays: list[Relay], key: str, count: int) -> list[tuple[int, str]]:
    """``count`` GET /v1/messages with ``key``, alternating between the relays: (status, remaining)."""
    out = []
    async with aiohttp.ClientSession() as session:
        for i in range(count):
            host, port = relays[i % len(relays)].http_address
            url = f"http://{host}:{port}/v1/messages"
            async with session.get(url, headers={"Authorization": f"Bearer {key}"}) as resp:
                out.append((resp.status, resp.headers["X-RateLimit-Remaining"]))
    return out


@pytest.fixture
async def two_relays(tmp_path: Path, pg_url):
    """Two Relay nodes (own data_dir, same [store] url) on one virtual clock."""
    clock = VirtualClock(T0)
    started: list[Relay] = []

    key_file = write_store_key(tmp_path / "store.key")  # the same on every node

    async def start(**sections: dict[str, Any]) -> list[Relay]:
        for name in ("a", "b"):
            config = make_config(tmp_path / name, store={"url": pg_url, "secret_key_file": str(key_file)}, **sections)
            relay = Relay(config, clock)
            await relay.start()
            started.append(relay)
        return started

    yield start
    for relay in started:
        await relay.stop()


async def test_an_api_rate_limit_of_n_allows_n_requests_spread_over_two_relays(two_relays):
    a, b = await two_relays()
    _, key = await create_api_key(a.store.keys, a.store.clock, "limited", ("read",), rate_limit=5)
    statuses = await get_statuses([a, b], key, 8)
    assert statuses == [(200, "4"), (200, "3"), (200, "2"), (200, "1"), (200, "0"), (429, "0"), (429, "0"), (429, "0")]
    a.clock.advance(3600)  # type: ignore[attr-defined]
    assert (await get_statuses([b], key, 1)) == [(200, "4")]


def smtp_auth(port: int, username: str, password: str) -> int:
    """The reply code to AUTH PLAIN (plaintext: loopback may authenticate without TLS in these tests)."""
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
        smtp.ehlo("client.test")
        token = base64.b64encode(f"\0{username}\0{password}".encode()).decode()
        code, _ = smtp.docmd("AUTH", f"PLAIN {token}")
        return code


SMTP_AUTH = {"trusted_networks": ["192.0.2.0/24"], "plaintext_auth_networks": ["127.0.0.0/8"]}


async def test_smtp_auth_failures_are_counted_for_the_cluster_not_per_node(two_relays):
    a, b = await two_relays(smtp={**SMTP_AUTH, "max_auth_failures": 3})
    cred, password = await create_smtp_credential(a.store.credentials, a.store.clock, allowed_from=("example.com",))
    ports = [a.smtp_addresses[0][1], b.smtp_addresses[0][1]]
    codes = [await asyncio.to_thread(smtp_auth, ports[i % 2], cred.username, "wrong") for i in range(3)]
    assert codes == [535, 535, 535]
    assert await asyncio.to_thread(smtp_auth, ports[1], cred.username, password) == 454  # node b: 2 of its own
    assert await asyncio.to_thread(smtp_auth, ports[0], cred.username, password) == 454
    a.clock.advance(600)  # type: ignore[attr-defined]  # the window (10 minutes) has passed
    assert await asyncio.to_thread(smtp_auth, ports[1], cred.username, password) == 235


async def test_an_smtp_credential_rate_limit_holds_across_two_relays(two_relays, sink):
    a, b = await two_relays(smtp=SMTP_AUTH, delivery={"smarthost": sink.address})
    cred, password = await create_smtp_credential(
        a.store.credentials, a.store.clock, allowed_from=("example.com",), rate_limit=3
    )

    def mail_from(port: int) -> str:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
            smtp.ehlo("client.test")
            token = base64.b64encode(f"\0{cred.username}\0{password}".encode()).decode()
            assert smtp.docmd("AUTH", f"PLAIN {token}")[0] == 235
            code, text = smtp.docmd("MAIL", "FROM:<app@example.com>")
            return f"{code} {text.decode()}"

    ports = [a.smtp_addresses[0][1], b.smtp_addresses[0][1]]
    replies = [await asyncio.to_thread(mail_from, ports[i % 2]) for i in range(4)]
    assert replies[:3] == ["250 2.1.0 Ok"] * 3
    assert replies[3] == "450 4.7.1 Sending rate limit reached; try again in 3600s"


async def test_a_hit_does_not_wait_for_another_nodes_group_commit(two_nodes):
    """A rate counter is a row every node updates. Counted inside a node's group transaction, it stayed
    locked until that group committed: the other node's hit waited for the whole group, and two nodes'
    groups deadlocked with the other rows they both update (the hourly event counts), each deadlock
    costing PostgreSQL's deadlock_timeout (bench/http_api.py --store postgresql: 103-150 POSTs/s, p99
    1.1 s; 421 and 121 ms after). A hit now commits on its own."""
    a, b = two_nodes
    rate = Rate(100, 60.0)
    assert (await a.rate_counters.hit("api:k", rate, T0 + 1)).allowed  # the row exists

    def sleep(seconds: float) -> Callable[[Any], None]:
        return lambda conn: conn.execute(f"SELECT pg_sleep({seconds})")

    busy = asyncio.ensure_future(a.queue.db.write(sleep(0.3)))  # a's writer is busy: what comes next waits
    await asyncio.sleep(0.1)
    hit_in_group = asyncio.ensure_future(a.rate_counters.hit("api:k", rate, T0 + 1))
    group = asyncio.ensure_future(a.queue.db.write(sleep(1.5)))  # one group with the hit (as it was), then this
    await asyncio.sleep(0.5)  # that group is running now
    started = time.monotonic()
    decision = await b.rate_counters.hit("api:k", rate, T0 + 1)
    took = time.monotonic() - started
    assert decision.allowed and took < 0.5, f"b's hit waited {took:.2f}s for a's group"
    assert not group.done(), "a's group was still running while b counted"
    await asyncio.gather(busy, group, hit_in_group)
    assert await a.rate_counters.count("api:k", T0 + 1) == 3


async def test_auth_failures_shared_by_two_authenticators_on_two_stores(two_nodes):
    a, b = two_nodes
    cred, password = await create_smtp_credential(a.credentials, a.clock, allowed_from=("example.com",))
    auths = [
        SmtpAuthenticator(s.credentials, s.clock, 4, 600.0, SharedFailures(s.rate_counters, 4, 600.0)) for s in (a, b)
    ]
    results = await asyncio.gather(
        *(auths[i % 2].login("192.0.2.7", cred.username, "wrong") for i in range(10)), return_exceptions=True
    )
    assert results.count(None) == 4 and sum(isinstance(r, Throttled) for r in results) == 6
    assert await auths[0].login("192.0.2.8", cred.username, password) == cred  # another address
    assert await a.rate_counters.count("auth:192.0.2.8", T0) == 0  # a good login is taken back


async def test_parallel_good_logins_on_two_nodes_all_pass_and_count_nothing(two_nodes):
    """One application's connections logging in at once, spread over two nodes, with a limit of 4."""
    a, b = two_nodes
    cred, password = await create_smtp_credential(a.credentials, a.clock, allowed_from=("example.com",))
    auths = [
        SmtpAuthenticator(s.credentials, s.clock, 4, 600.0, SharedFailures(s.rate_counters, 4, 600.0)) for s in (a, b)
    ]
    results = await asyncio.gather(*(auths[i % 2].login("192.0.2.9", cred.username, password) for i in range(12)))
    assert [r.id if r is not None else None for r in results] == [cred.id] * 12
    assert await a.rate_counters.count("auth:192.0.2.9", T0) == 0
    assert [len(auth.turns) for auth in auths] == [0, 0]


async def test_checks_from_one_address_take_turns_and_other_addresses_do_not_wait():
    turns = Turns()
    inside: dict[str, int] = {"a": 0, "b": 0}
    most: dict[str, int] = {"a": 0, "b": 0}
    order: list[str] = []

    async def check(key: str, fail: bool) -> None:
        async with turns.turn(key):
            inside[key] += 1
            most[key] = max(most[key], inside[key])
            order.append(key)
            await asyncio.sleep(0.01)
            inside[key] -= 1
            if fail:
                raise ValueError(key)

    results = await asyncio.gather(*(check(k, i == 1) for i, k in enumerate("aabab")), return_exceptions=True)
    assert most == {"a": 1, "b": 1}, "one check at a time per address"
    assert order[:2] == ["a", "b"], "b did not wait for a"
    assert isinstance(results[1], ValueError) and len(turns) == 0, "a failed check gives its turn up too"


async def test_the_memory_failures_take_a_good_login_back():
    failures = LocalFailures(2, 60.0)
    assert await failures.attempt("ip", T0) == 1
    await failures.succeeded("ip", T0)
    assert [await failures.attempt("ip", T0 + i) for i in range(3)] == [1, 2, None]
    assert await failures.attempt("ip", T0 + 60.5) == 2  # the first has left the last 60 seconds


# -- quotas across two nodes ------------------------------------------------------------------------


def new_message(n: int) -> NewMessage:
    raw = f"Message-ID: <q{n}@example.com>\r\nSubject: q\r\n\r\nbody\r\n".encode()
    return NewMessage("app@example.com", (f"r{n}@example.org",), raw, "http", id=f"msg_q{n:04d}")


async def test_a_daily_quota_of_n_accepts_exactly_n_from_two_nodes_at_once(two_nodes):
    a, b = two_nodes
    quota = Quota("key_1", daily=25, monthly=None)

    async def submit(n: int) -> bool:
        try:
            await (a, b)[n % 2].queue.enqueue(new_message(n), quota)
        except QuotaExhausted:
            return False
        return True

    accepted = await asyncio.gather(*(submit(n) for n in range(100)))
    assert sum(accepted) == 25
    assert await a.queue.key_usage("key_1") == (25, 25)
    assert (await b.queue.summary()).by_state.get("queued") == 25


async def test_quotas_of_several_keys_on_two_nodes_never_deadlock(two_nodes, pg_url):
    """A quota was counted inside the group transaction under a lock per key held to its COMMIT: the
    groups of two nodes that took the keys in opposite orders deadlocked (bench/http_api.py --store
    postgresql --keys 4 --daily-quota: 34 POSTs/s, p99 1.2 s, 6 deadlocks in 8 s)."""
    a, b = two_nodes
    quotas = [Quota(f"key_{i}", daily=10_000, monthly=100_000) for i in range(4)]

    def quota(n: int) -> Quota:  # node a's groups take the keys in one order, node b's in the other
        i = n // 2 % 4
        return quotas[i if n % 2 == 0 else 3 - i]

    for wave in range(0, 400, 40):
        await asyncio.gather(*((a, b)[n % 2].queue.enqueue(new_message(n), quota(n)) for n in range(wave, wave + 40)))
    with psycopg.connect(pg_url, autocommit=True) as conn:
        (deadlocks,) = conn.execute(
            "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
    assert deadlocks == 0
    assert [await a.queue.key_usage(q.api_key_id) for q in quotas] == [(100, 100)] * 4


async def test_a_quota_count_does_not_wait_for_another_nodes_group_commit(two_nodes):
    a, b = two_nodes
    quota = Quota("key_1", daily=100, monthly=None)
    await a.queue.enqueue(new_message(0), quota)  # the key's rows exist

    def sleep(seconds: float) -> Callable[[Any], None]:
        return lambda conn: conn.execute(f"SELECT pg_sleep({seconds})")

    busy = asyncio.ensure_future(a.queue.db.write(sleep(0.3)))  # a's writer is busy: what comes next waits
    await asyncio.sleep(0.1)
    counted_in_group = asyncio.ensure_future(a.queue.enqueue(new_message(1), quota))
    group = asyncio.ensure_future(a.queue.db.write(sleep(1.5)))  # one group with that message, then this
    await asyncio.sleep(0.5)  # that group is running now
    started = time.monotonic()
    await b.queue.enqueue(new_message(2), quota)
    took = time.monotonic() - started
    assert took < 0.5, f"b's message waited {took:.2f}s for a's group"
    assert not group.done(), "a's group was still running while b queued"
    await asyncio.gather(busy, group, counted_in_group)
    assert await a.queue.key_usage("key_1") == (3, 3)


# -- Idempotency-Key across two nodes ---------------------------------------------------------------


async def test_a_claim_completed_on_one_node_is_replayed_on_the_other(two_nodes):
    a, b = two_nodes
    assert await a.idempotency.claim_idempotency_key("key_1", "k-1", "hash", 86400.0) is None
    async with a.idempotency.idempotency_lease("key_1", "k-1"):
        completion = Completion("key_1", "k-1", 202, '{"id": "msg_q0000"}', "msg_q0000")
        await a.queue.enqueue(new_message(0), completion=completion)
    replay = await b.idempotency.claim_idempotency_key("key_1", "k-1", "hash", 86400.0)
    assert replay is not None and (replay.state, replay.status, replay.body) == ("done", 202, '{"id": "msg_q0000"}')
    assert replay.message_id == "msg_q0000"


async def test_concurrent_claims_of_one_key_on_two_nodes_give_it_to_exactly_one(two_nodes):
    a, b = two_nodes
    keys = [f"k-{n}" for n in range(40)]
    results = await asyncio.gather(
        *(node.idempotency.claim_idempotency_key("key_1", k, "hash", 86400.0) for k in keys for node in (a, b)),
        return_exceptions=True,
    )
    errors = [r for r in results if isinstance(r, BaseException)]
    assert errors == []
    for n in range(len(keys)):
        first, second = results[2 * n], results[2 * n + 1]
        assert (first is None) != (second is None), (keys[n], first, second)
        holder = first or second
        assert holder.state == "pending"  # type: ignore[union-attr]


def wait_for_a_lock_wait(url: str) -> None:
    """Until some session of the database waits for a lock (a row's or an advisory one)."""
    with psycopg.connect(url, autocommit=True) as conn:
        for _ in range(500):
            row = conn.execute("SELECT count(*) FROM pg_locks WHERE NOT granted").fetchone()
            if row and row[0]:
                return
            time.sleep(0.01)
    raise AssertionError("no session waited for a lock")


async def test_a_quota_is_checked_after_the_other_nodes_count_not_before(pg_url):
    """Node B's count must not read the count from before node A's, still open, commits."""
    quota = Quota("key_1", daily=1, monthly=None)

    def take_and_commit(conn: psycopg.Connection[Any]) -> None:
        take(PgConnection(conn), quota, T0, 1)
        conn.commit()

    with psycopg.connect(pg_url) as first, psycopg.connect(pg_url) as second:
        take(PgConnection(first), quota, T0, 1)  # counted, not committed yet
        other = asyncio.ensure_future(asyncio.to_thread(take_and_commit, second))
        await asyncio.to_thread(wait_for_a_lock_wait, pg_url)
        first.commit()
        with pytest.raises(QuotaExhausted):
            await other
        assert first.execute("SELECT count FROM key_usage WHERE period LIKE 'd:%'").fetchone() == (1,)


def rename_rate_counters(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET lock_timeout = '5s'")
        conn.execute("ALTER TABLE rate_counters RENAME TO rate_counters_gone")


async def test_mail_from_is_451_when_the_shared_counter_cannot_be_written(two_relays, pg_url):
    """A store error in the rate-limit check is the session's 451 4.3.0 (SubmissionSMTP.handle_exception)."""
    a, _ = await two_relays(smtp=SMTP_AUTH)
    cred, password = await create_smtp_credential(
        a.store.credentials, a.store.clock, allowed_from=("example.com",), rate_limit=3
    )
    smtp = await asyncio.to_thread(smtplib.SMTP, "127.0.0.1", a.smtp_addresses[0][1], timeout=10)
    try:
        await asyncio.to_thread(smtp.ehlo, "client.test")
        token = base64.b64encode(f"\0{cred.username}\0{password}".encode()).decode()
        assert (await asyncio.to_thread(smtp.docmd, "AUTH", f"PLAIN {token}"))[0] == 235
        await asyncio.to_thread(rename_rate_counters, pg_url)
        code, text = await asyncio.to_thread(smtp.docmd, "MAIL", "FROM:<app@example.com>")
        assert (code, text) == (451, b"4.3.0 Temporary failure, please try again later")
    finally:
        smtp.close()
