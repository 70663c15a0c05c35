"""Queue control: by-domain view, retry now, suspend/resume, bounce, cancel — store, API and CLI."""

from __future__ import annotations

import json
import os
import random

import aiohttp
import pytest

from relay.clock import FakeClock, iso
from relay.delivery.client import SmtpClient
from relay.delivery.engine import Engine, EngineSettings
from relay.delivery.mx import Router
from relay.delivery.retry import RetryPolicy
from relay.keys import create_api_key
from relay.message import NewMessage
from relay.store import Store
from relay.store.queue import BodyDeleted, Selection
from tests.conftest import config_dict, run_cli, wait_for_states, write_toml

RAW = b"Subject: q\r\n\r\nx\r\n"


def engine_for(store: Store, sink_port: int) -> Engine:
    settings = EngineSettings(
        owner="n",
        concurrency=10,
        lease=300,
        poll_interval=0.05,
        retry=RetryPolicy((600,), 86400, jitter=0.0),
        idle_timeout=0.2,
    )
    client = SmtpClient("relay.test", connect_timeout=2, command_timeout=5)
    return Engine(store, Router(("127.0.0.1", sink_port), 25, None), client, store.clock, settings, random.Random(0))


async def queue(store: Store, *rcpts: str) -> NewMessage:
    m = NewMessage("sender@example.com", rcpts, b"Subject: q\r\n\r\nx\r\n", "smtp")
    await store.queue.enqueue(m)
    return m


async def test_suspended_domains_are_held_then_resumed(store, sink):
    engine = engine_for(store, sink.port)
    held = await queue(store, "a@held.example")
    other = await queue(store, "b@free.example")
    await store.queue.suspend_domain("HELD.example", 3600, "maintenance")
    await engine.run_once()
    assert [s.state for s in await store.queue.message_status(held.id)] == ["queued"]
    assert [s.state for s in await store.queue.message_status(other.id)] == ["delivered"]
    (q,) = [q for q in await store.queue.domain_queues() if q.domain == "held.example"]
    assert q.queued == 1 and q.suspended_until == store.clock.now() + 3600
    store.clock.advance(60)
    assert await store.queue.resume_domain("held.example")
    await engine.run_once()
    assert [s.state for s in await store.queue.message_status(held.id)] == ["delivered"]
    await engine.stop(1)


async def test_a_suspended_domain_backlog_is_walked_past_once_and_due_again_on_resume(store):
    """Every claim walked past a suspended domain's due recipients (the due index is in time order): with a
    backlog of 100,000 held, each claim read them all. Now the first claim to meet them puts them off to the
    suspension's end, and a resume brings them back."""
    held = [await queue(store, f"r{n}@held.example") for n in range(25)]
    scheduled_later = await queue(store, "later@held.example")
    await store.queue.postpone([await first_recipient_id(store, scheduled_later)], store.clock.now() + 7200)
    until = await store.queue.suspend_domain("held.example", 3600, "maintenance")
    free = await queue(store, "b@free.example")
    claimed = await store.queue.claim_due(10, "n", 60)  # three rounds of ten held before the free one
    assert [m.id for m in claimed] == [free.id]
    for m in held:
        (status,) = await store.queue.message_status(m.id)
        assert (status.state, status.next_attempt_at) == ("queued", until)
    assert await store.queue.claim_due(10, "n", 60) == []
    shorter = await store.queue.suspend_domain("held.example", 1800, "maintenance")  # held again, less long
    (status,) = await store.queue.message_status(held[0].id)
    assert status.next_attempt_at == shorter
    store.clock.advance(60)
    assert await store.queue.resume_domain("held.example")
    again = await store.queue.claim_due(100, "n", 60)
    assert sorted(m.id for m in again) == sorted(m.id for m in held)  # not the one due in two hours
    (status,) = await store.queue.message_status(scheduled_later.id)
    assert status.next_attempt_at == store.clock.now() - 60 + 7200


async def first_recipient_id(store: Store, message: NewMessage) -> int:
    (leased,) = [m for m in await store.queue.claim_due(100, "setup", 60) if m.id == message.id]
    await store.queue.release_leases("setup")
    return leased.recipients[0].id


async def test_retry_now_and_admin_bounce(store, sink):
    engine = engine_for(store, sink.port)
    sink.handler.rcpt_reply = "451 4.3.0 later"
    m1 = await queue(store, "a@one.example", "b@two.example")
    await engine.run_once()
    assert {s.state for s in await store.queue.message_status(m1.id)} == {"deferred"}
    assert await engine.run_once() == 0  # next attempt in 10 minutes
    sink.handler.rcpt_reply = None
    assert await store.queue.retry_now(Selection(domain="one.example")) == 1
    assert await engine.run_once() == 1
    states = {s.address: s.state for s in await store.queue.message_status(m1.id)}
    assert states == {"a@one.example": "delivered", "b@two.example": "deferred"}
    assert await store.queue.admin_bounce("customer asked", Selection(domain="two.example")) == 1
    (s,) = [s for s in await store.queue.message_status(m1.id) if s.address == "b@two.example"]
    assert s.state == "bounced" and "bounced by the operator: customer asked" in s.last_response
    assert await store.queue.retry_now(Selection()) == 0
    await engine.stop(1)


async def test_queue_api(relay_factory):
    relay = await relay_factory(delivery={"smarthost": "127.0.0.1:9", "retry_schedule": ["1h"]})
    _, admin = await create_api_key(relay.store.keys, relay.store.clock, "ops", ("admin",))
    headers = {"Authorization": f"Bearer {admin}"}
    m = NewMessage(
        "a@example.com", ("x@slow.example", "y@slow.example", "z@other.example"), b"S: x\r\n\r\nx\r\n", "smtp"
    )
    await relay.store.queue.enqueue(m)
    relay.engine.wake()
    await wait_for_states(relay.store, m.id, ["deferred", "deferred", "deferred"])
    host, port = relay.http_address
    base = f"http://{host}:{port}"
    async with aiohttp.ClientSession(headers=headers) as s:
        async with s.get(f"{base}/v1/sending-queues") as resp:
            body = await resp.json()
        assert body["totals"]["deferred"] == 3 and body["totals"]["scheduled"] == 3
        assert body["data"][0]["domain"] == "slow.example" and body["data"][0]["deferred"] == 2
        async with s.post(f"{base}/v1/sending-queues/slow.example/suspend", json={"duration": "2h"}) as resp:
            assert resp.status == 200 and (await resp.json())["suspended_until"]
        async with s.post(f"{base}/v1/sending-queues/slow.example/retry") as resp:
            assert (await resp.json())["retried"] == 2
        async with s.post(f"{base}/v1/sending-queues/slow.example/resume") as resp:
            assert resp.status == 200
        async with s.post(f"{base}/v1/sending-queues/slow.example/resume") as resp:
            assert resp.status == 404
        async with s.post(f"{base}/v1/sending-queues/other.example/bounce", json={"reason": "typo"}) as resp:
            assert (await resp.json())["bounced"] == 1
        async with s.post(f"{base}/v1/messages/{m.id}/retry") as resp:
            assert resp.status == 200
        # Purge a held domain (the running engine leaves it alone, so nothing is in flight).
        async with s.post(f"{base}/v1/sending-queues/held.example/suspend", json={"duration": "1h"}) as resp:
            assert resp.status == 200
        held = NewMessage("a@example.com", ("p@held.example", "q@held.example"), b"S: x\r\n\r\nx\r\n", "smtp")
        await relay.store.queue.enqueue(held)
        async with s.delete(f"{base}/v1/sending-queues/held.example") as resp:
            assert (await resp.json())["purged"] == 2
        assert [r.state for r in await relay.store.queue.message_status(held.id)] == ["cancelled", "cancelled"]

        async with s.post(f"{base}/v1/sending-queues/x/suspend", json={"duration": "forever"}) as resp:
            assert resp.status == 400 and (await resp.json())["error"]["field"] == "duration"
        # A suspension is kept: only for a domain mail can go to (3 KB went over PostgreSQL's index limit: 503).
        for bad in (os.urandom(1500).hex() + ".example", "a%00b.example", "d" * 64 + ".example", "a..example"):
            async with s.post(f"{base}/v1/sending-queues/{bad}/suspend", json={"duration": "1h"}) as resp:
                assert resp.status == 400 and (await resp.json())["error"]["field"] == "domain", bad
        assert [q.domain for q in await relay.store.queue.domain_queues() if q.suspended_until] == ["held.example"]


def test_queue_cli(tmp_path):
    config = write_toml(tmp_path / "relay.toml", config_dict(tmp_path / "data"))
    run_cli("queue", config=config)  # creates the database
    import asyncio

    async def seed() -> str:
        store = Store(tmp_path / "data" / "relay.sqlite3", FakeClock())
        m = await queue(store, "a@cli.example", "b@cli.example")
        await store.close()
        return m.id

    message_id = asyncio.run(seed())
    domains = json.loads(run_cli("queue", "domains", "--json", config=config).stdout)
    assert domains[0]["domain"] == "cli.example" and domains[0]["queued"] == 2
    assert "suspended" in run_cli("queue", "suspend", "cli.example", "--for", "30m", config=config).stdout
    refused = run_cli("queue", "suspend", "cli..example", "--for", "30m", config=config)
    assert refused.returncode == 2 and "not a domain name" in refused.stderr, refused.stderr
    assert run_cli("queue", "resume", "cli.example", config=config).returncode == 0
    assert run_cli("queue", "resume", "cli.example", config=config).returncode == 1
    shown = json.loads(run_cli("queue", "show", message_id, "--json", config=config).stdout)
    assert [r["address"] for r in shown["recipients"]] == ["a@cli.example", "b@cli.example"]
    assert json.loads(run_cli("queue", "retry", "--all", "--json", config=config).stdout)["retried"] == 2
    assert run_cli("queue", "purge", config=config).returncode == 2  # a filter is required
    purged = run_cli("queue", "purge", "--recipient", "a@cli.example", "--json", config=config)
    assert json.loads(purged.stdout)["purged"] == 1
    bounced = run_cli("queue", "bounce", "--message", message_id, "--reason", "test", "--json", config=config)
    assert json.loads(bounced.stdout)["bounced"] == 1

    assert run_cli("queue", "show", "nope", config=config).returncode == 1


async def test_purge_by_filters_that_combine(store):
    old = NewMessage("news@example.com", ["a@one.example", "b@two.example"], b"Subject: x\r\n\r\nx\r\n", "smtp")
    await store.queue.enqueue(old)
    store.clock.advance(3 * 86400)
    new = NewMessage("news@example.com", ["c@one.example"], b"Subject: y\r\n\r\ny\r\n", "smtp")
    other = NewMessage("billing@example.com", ["d@one.example"], b"Subject: z\r\n\r\nz\r\n", "smtp")
    await store.queue.enqueue(new)
    await store.queue.enqueue(other)
    cutoff = store.clock.now() - 86400
    assert (
        await store.queue.purge(Selection(sender="news@example.com", domain="one.example", created_before=cutoff)) == 1
    )
    assert [s.state for s in await store.queue.message_status(old.id)] == ["cancelled", "queued"]
    assert await store.queue.purge(Selection(sender="news@example.com")) == 2
    assert [s.state for s in await store.queue.message_status(other.id)] == ["queued"]
    assert await store.queue.purge(Selection(sender="news@example.com")) == 0  # only waiting recipients


async def test_resend_requeues_an_expired_recipient_and_delivers_it(store, sink):
    engine = engine_for(store, sink.port)  # max_age: one day
    m = await queue(store, "tempfail@one.example", "ok@one.example")
    await engine.run_once()
    store.clock.advance(2 * 86400)
    await engine.run_once()
    states = {s.address: s.state for s in await store.queue.message_status(m.id)}
    assert states == {"tempfail@one.example": "failed", "ok@one.example": "delivered"}
    sink.handler.rcpt_reply = "250 2.1.5 Ok"  # the receiver takes it now
    outcome = await store.queue.resend(m.id)
    assert [(r.address, r.previous, r.result) for r in outcome] == [
        ("tempfail@one.example", "failed", "queued"),
        ("ok@one.example", "delivered", "unchanged"),
    ]
    assert await engine.run_once() == 1
    assert [s.state for s in await store.queue.message_status(m.id)] == ["delivered", "delivered"]
    assert await store.queue.resend("nosuchmessage") is None
    await engine.stop(1)


async def test_cancel_scheduled_leaves_what_is_due(store):
    now = store.clock.now()
    later = NewMessage("s@example.com", ("a@one.example", "b@two.example"), RAW, "http", send_at=now + 3600)
    due = NewMessage("s@example.com", ("c@one.example",), RAW, "http", send_at=now + 60)
    for m in (later, due):
        await store.queue.enqueue(m)
    store.clock.advance(120)  # due's send_at has passed; the engine has not taken it yet
    assert await store.queue.cancel_scheduled() == (1, 2)
    assert [s.state for s in await store.queue.message_status(later.id)] == ["cancelled", "cancelled"]
    assert [s.state for s in await store.queue.message_status(due.id)] == ["scheduled"]
    assert [e.type for e in await store.events.message_events(later.id)] == [
        "queued",
        "queued",
        "cancelled",
        "cancelled",
    ]


async def api_call(relay, key: str, method: str, path: str, **kwargs) -> tuple[int, dict]:
    host, port = relay.http_address
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as s:
        async with s.request(method, f"http://{host}:{port}{path}", **kwargs) as resp:
            return resp.status, await resp.json()


async def test_purge_scheduled_through_the_api(relay_factory, sink):
    relay = await relay_factory(delivery={"smarthost": sink.address})
    _, admin = await create_api_key(relay.store.keys, relay.store.clock, "ops", ("admin",))
    body = {"from": "a@example.com", "subject": "s", "text": "t", "send_at": iso(relay.clock.now() + 3600)}
    _, first = await api_call(
        relay, admin, "POST", "/v1/messages", json={**body, "to": ["x@one.example", "y@two.example"]}
    )
    _, second = await api_call(relay, admin, "POST", "/v1/messages", json={**body, "to": "z@one.example"})
    _, now = await api_call(relay, admin, "POST", "/v1/messages", json={**body, "to": "n@one.example", "send_at": None})
    status, answer = await api_call(relay, admin, "DELETE", "/v1/sending-queues/scheduled")
    assert status == 200 and answer == {"queue": "scheduled", "cancelled_messages": 2, "cancelled_recipients": 3}
    for m in (first, second):
        _, shown = await api_call(relay, admin, "GET", f"/v1/messages/{m['id']}")
        assert {r["status"] for r in shown["recipients"]} == {"cancelled"}
        _, events = await api_call(relay, admin, "GET", f"/v1/messages/{m['id']}/events")
        assert [e["type"] for e in events["data"]].count("cancelled") == len(shown["recipients"])
    _, listed = await api_call(relay, admin, "GET", "/v1/scheduled-messages")
    assert listed["data"] == []
    await sink.handler.wait_for(1)
    assert sink.handler.received[0].rcpt_tos == ["n@one.example"]  # what was not scheduled went
    status, again = await api_call(relay, admin, "DELETE", "/v1/sending-queues/scheduled")
    assert (status, again["cancelled_messages"], again["cancelled_recipients"]) == (200, 0, 0)
    for method, path in (("POST", "/v1/sending-queues/scheduled/retry"), ("POST", "/v1/sending-queues/resend/bounce")):
        status, error = await api_call(relay, admin, method, path)
        assert status == 404, (path, error)  # reserved names, never a domain
    status, _ = await api_call(relay, admin, "DELETE", "/v1/sending-queues/one.example")
    assert status == 200


async def test_resend_through_the_api(relay_factory, sink):
    relay = await relay_factory(delivery={"smarthost": sink.address})
    _, admin = await create_api_key(relay.store.keys, relay.store.clock, "ops", ("admin",))
    body = {"from": "a@example.com", "subject": "s", "text": "t"}
    _, hard = await api_call(
        relay, admin, "POST", "/v1/messages", json={**body, "to": ["permfail@one.example", "ok@one.example"]}
    )
    await wait_for_states(relay.store, hard["id"], ["bounced", "delivered"])  # a hard bounce: suppressed
    sink.handler.rcpt_reply = "554 5.7.1 Message rejected as spam"  # a block: not suppressed
    _, blocked = await api_call(relay, admin, "POST", "/v1/messages", json={**body, "to": "b@one.example"})
    await wait_for_states(relay.store, blocked["id"], ["bounced"])
    sink.handler.rcpt_reply = None

    status, answer = await api_call(relay, admin, "POST", "/v1/sending-queues/resend", json={"message_id": hard["id"]})
    assert status == 200 and answer["queued"] == 0
    (bounced, delivered) = answer["recipients"]
    assert bounced["email"] == "permfail@one.example" and bounced["result"] == "suppressed"
    assert bounced["previous_status"] == "bounced" and "hard_bounce" in bounced["reason"]
    assert delivered == {"email": "ok@one.example", "previous_status": "delivered", "result": "unchanged"}
    assert [s.state for s in await relay.store.queue.message_status(hard["id"])] == ["bounced", "delivered"]

    status, answer = await api_call(
        relay, admin, "POST", "/v1/sending-queues/resend", json={"message_id": blocked["id"]}
    )
    assert status == 200 and answer["queued"] == 1
    assert answer["recipients"] == [{"email": "b@one.example", "previous_status": "bounced", "result": "queued"}]
    await wait_for_states(relay.store, blocked["id"], ["delivered"])
    _, events = await api_call(relay, admin, "GET", f"/v1/messages/{blocked['id']}/events")
    assert [e["type"] for e in events["data"]] == ["queued", "bounced", "queued", "delivered"]
    assert events["data"][2]["details"]["resent"] is True

    status, error = await api_call(relay, admin, "POST", "/v1/sending-queues/resend", json={"message_id": "nope"})
    assert status == 404 and error["error"]["code"] == "not_found"
    status, error = await api_call(relay, admin, "POST", "/v1/sending-queues/resend", json={})
    assert status == 400 and error["error"]["field"] == "message_id"


async def test_resend_after_retention_deleted_the_body(store, sink):
    engine = engine_for(store, sink.port)
    m = await queue(store, "permfail@one.example")
    await engine.run_once()
    assert [s.state for s in await store.queue.message_status(m.id)] == ["bounced"]
    store.clock.advance(10 * 86400)
    await store.events.prune_history(0, store.clock.now() - 86400)
    with pytest.raises(BodyDeleted):
        await store.queue.resend(m.id)
    assert [s.state for s in await store.queue.message_status(m.id)] == ["bounced"]
    await engine.stop(1)
