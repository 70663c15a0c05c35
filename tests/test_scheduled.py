"""Scheduled sending: held until send_at (fake clock), across a restart; API list/reschedule/cancel; SMTP header."""

from __future__ import annotations

import asyncio
import smtplib

import aiohttp
import pytest

from relay.clock import FakeClock
from relay.delivery.mx import Router
from relay.keys import create_api_key
from relay.message import NewMessage
from tests.test_delivery_shaping import RAW, engine_for

HOUR = 3600.0


async def test_held_until_send_at_even_across_a_restart(store_factory, sink):
    clock = FakeClock()
    first = store = store_factory(clock)
    m = NewMessage("sender@example.com", ("a@one.example",), RAW, "http", send_at=clock.now() + 2 * HOUR)
    await store.queue.enqueue(m)
    assert [s.state for s in await store.queue.message_status(m.id)] == ["scheduled"]
    engine = engine_for(store, Router(("127.0.0.1", sink.port), 25, None))
    await engine.run_once()
    clock.advance(HOUR)
    await engine.run_once()
    assert sink.handler.received == []
    await engine.stop(1)
    await store.close()

    store = store_factory(clock, restart=first)  # restarted
    engine = engine_for(store, Router(("127.0.0.1", sink.port), 25, None))
    clock.advance(HOUR + 1)
    assert await engine.run_once() == 1
    assert [s.state for s in await store.queue.message_status(m.id)] == ["delivered"]
    assert len(sink.handler.received) == 1
    await engine.stop(1)
    await store.close()


async def test_the_queue_lifetime_counts_from_send_at(store, sink):
    clock = store.clock
    m = NewMessage("sender@example.com", ("tempfail@one.example",), RAW, "http", send_at=clock.now() + 10 * HOUR)
    await store.queue.enqueue(m)
    engine = engine_for(store, Router(("127.0.0.1", sink.port), 25, None))  # max_age 1h in engine_for
    clock.advance(10 * HOUR + 1)
    await engine.run_once()
    assert [s.state for s in await store.queue.message_status(m.id)] == ["deferred"]  # not expired on arrival
    await engine.stop(1)
    await store.close()


async def api(relay, method: str, path: str, key: str, **kwargs):
    host, port = relay.http_address
    async with aiohttp.ClientSession() as s:
        async with s.request(
            method, f"http://{host}:{port}{path}", headers={"Authorization": f"Bearer {key}"}, **kwargs
        ) as r:
            return r.status, await r.json()


def at(relay, seconds: float) -> str:
    from relay.api.messages import iso

    return iso(relay.clock.now() + seconds)


async def test_schedule_list_reschedule_cancel(relay_factory, sink):
    relay = await relay_factory(delivery={"smarthost": sink.address})
    _, key = await create_api_key(relay.store.keys, relay.store.clock, "t", ("send", "read"))
    body = {"from": "a@example.com", "to": "b@one.example", "subject": "later", "text": "t"}
    status, first = await api(relay, "POST", "/v1/messages", key, json={**body, "send_at": at(relay, 2 * HOUR)})
    assert status == 202 and first["status"] == "scheduled" and first["send_at"]
    _, second = await api(relay, "POST", "/v1/messages", key, json={**body, "send_at": at(relay, HOUR)})
    status, listed = await api(relay, "GET", "/v1/scheduled-messages", key)
    assert status == 200 and [m["id"] for m in listed["data"]] == [second["id"], first["id"]]  # soonest first
    assert listed["data"][0]["recipients"][0]["status"] == "scheduled"

    status, moved = await api(
        relay, "PATCH", f"/v1/scheduled-messages/{first['id']}", key, json={"send_at": at(relay, 30 * 60)}
    )
    assert status == 200 and moved["send_at"] < second["send_at"]
    for bad in ({"send_at": at(relay, -60)}, {"send_at": at(relay, 40 * 86400)}, {}):
        status, error = await api(relay, "PATCH", f"/v1/scheduled-messages/{first['id']}", key, json=bad)
        assert status == 400 and error["error"]["field"] == "send_at"
    status, cancelled = await api(relay, "DELETE", f"/v1/scheduled-messages/{second['id']}", key)
    assert status == 200 and cancelled["cancelled"] == ["b@one.example"]
    status, error = await api(
        relay, "PATCH", f"/v1/scheduled-messages/{second['id']}", key, json={"send_at": at(relay, HOUR)}
    )
    assert status == 409 and error["error"]["code"] == "not_scheduled"
    _, listed = await api(relay, "GET", "/v1/scheduled-messages", key)
    assert [m["id"] for m in listed["data"]] == [first["id"]]
    await asyncio.sleep(0.3)
    assert sink.handler.received == []  # nothing went early

    status, now = await api(relay, "POST", "/v1/messages", key, json={**body, "send_at": at(relay, -5)})
    assert status == 202 and now["status"] == "queued"  # a past time sends now
    await sink.handler.wait_for(1)


def smtp_send(port: int, header: str) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
        smtp.sendmail("a@example.com", ["b@one.example"], f"{header}Subject: x\r\n\r\nhi\r\n")


async def test_smtp_header_schedules(relay_factory, sink):
    relay = await relay_factory(delivery={"smarthost": sink.address})
    port = relay.smtp_addresses[0][1]
    await asyncio.to_thread(smtp_send, port, f"X-Relay-Send-At: {at(relay, HOUR)}\r\n")
    (scheduled,) = await relay.store.queue.scheduled_messages(None, 10)
    assert scheduled.recipients[0].state == "scheduled"
    raw = await relay.store.db.read(lambda c: c.execute("SELECT raw FROM message_bodies").fetchone()[0])
    assert b"X-Relay-Send-At" not in raw
    with pytest.raises(smtplib.SMTPDataError) as refused:
        await asyncio.to_thread(smtp_send, port, "X-Relay-Send-At: someday\r\n")
    assert refused.value.smtp_code == 550 and b"X-Relay-Send-At" in refused.value.smtp_error


async def test_the_202_of_a_scheduled_message_agrees_with_what_get_says(relay_factory, sink):
    relay = await relay_factory(delivery={"smarthost": sink.address})
    _, key = await create_api_key(relay.store.keys, relay.store.clock, "t", ("send", "read"))
    await relay.store.suppressions.suppress(["gone@one.example"])
    body = {
        "from": "a@example.com",
        "to": ["b@one.example", "gone@one.example"],
        "subject": "later",
        "text": "t",
        "send_at": at(relay, HOUR),
    }
    status, accepted = await api(relay, "POST", "/v1/messages", key, json=body)
    assert status == 202 and accepted["status"] == "scheduled"
    _, shown = await api(relay, "GET", f"/v1/messages/{accepted['id']}", key)
    statuses = {r["email"]: r["status"] for r in accepted["recipients"]}
    assert statuses == {r["email"]: r["status"] for r in shown["recipients"]}
    assert statuses == {"b@one.example": "scheduled", "gone@one.example": "suppressed"}

    batch = {"messages": [{**body, "to": "c@one.example"}, {**body, "to": "d@one.example", "send_at": None}]}
    status, result = await api(relay, "POST", "/v1/messages/batch", key, json=batch)
    assert status == 202
    later, now = result["results"]
    assert later["status"] == "scheduled" and [r["status"] for r in later["recipients"]] == ["scheduled"]
    assert now["status"] == "queued" and [r["status"] for r in now["recipients"]] == ["queued"]
    _, shown = await api(relay, "GET", f"/v1/messages/{later['id']}", key)
    assert [r["status"] for r in shown["recipients"]] == ["scheduled"]


async def test_get_one_scheduled_message(relay_factory, sink):
    relay = await relay_factory(delivery={"smarthost": sink.address})
    _, key = await create_api_key(relay.store.keys, relay.store.clock, "t", ("send", "read"))
    body = {"from": "a@example.com", "to": "b@one.example", "subject": "later", "text": "t"}
    _, later = await api(relay, "POST", "/v1/messages", key, json={**body, "send_at": at(relay, HOUR)})
    status, shown = await api(relay, "GET", f"/v1/scheduled-messages/{later['id']}", key)
    assert status == 200 and shown["id"] == later["id"] and shown["send_at"] == later["send_at"]
    assert [(r["email"], r["status"]) for r in shown["recipients"]] == [("b@one.example", "scheduled")]
    _, now = await api(relay, "POST", "/v1/messages", key, json=body)
    await sink.handler.wait_for(1)
    for message_id in (now["id"], "nosuchmessage"):
        status, error = await api(relay, "GET", f"/v1/scheduled-messages/{message_id}", key)
        assert status == 404 and error["error"]["code"] == "not_found"
    await api(relay, "DELETE", f"/v1/scheduled-messages/{later['id']}", key)
    status, _ = await api(relay, "GET", f"/v1/scheduled-messages/{later['id']}", key)
    assert status == 404  # cancelled: no longer scheduled
