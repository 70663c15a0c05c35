"""What the dashboard reads through the API, against a running relay and a sink: ``GET /v1/messages`` searched
by sender, subject and message id (validated, errors naming the field), and ``GET /v1/stats/overview``."""

from __future__ import annotations

import email
import time
from urllib.parse import quote

import aiohttp
import pytest

from relay.clock import iso
from relay.keys import create_api_key
from tests.conftest import wait_for_states


class Client:
    def __init__(self, relay, session: aiohttp.ClientSession, key: str) -> None:
        self.relay = relay
        self.session = session
        self.key = key

    async def call(self, method: str, path: str, key: str | None = None, **kwargs):
        headers = {"Authorization": f"Bearer {key or self.key}"}
        async with self.session.request(method, path, headers=headers, **kwargs) as resp:
            return resp.status, await resp.json()

    async def send(self, **fields) -> str:
        body = {"from": "App <app@brand.example>", "to": "user@dest.example", "subject": "Hi", "text": "x", **fields}
        status, answer = await self.call("POST", "/v1/messages", json=body)
        assert status == 202, answer
        return str(answer["id"])

    async def found(self, query: str) -> list[str]:
        status, page = await self.call("GET", f"/v1/messages?{query}")
        assert status == 200, page
        return [m["id"] for m in page["data"]]


@pytest.fixture
async def client(relay_factory, sink):
    relay = await relay_factory(delivery={"smarthost": sink.address})
    _, admin = await create_api_key(relay.store.keys, relay.store.clock, "admin", ("admin",))
    host, port = relay.http_address
    async with aiohttp.ClientSession(f"http://{host}:{port}") as session:
        yield Client(relay, session, admin)


async def test_messages_are_searched_by_sender_subject_and_message_id(client, sink):
    first = await client.send(subject="Your invoice #1")
    (arrived,) = await sink.handler.wait_for(1)
    header_id = email.message_from_bytes(arrived.data)["Message-ID"].strip()  # "<...@host>", made by relay
    second = await client.send(**{"from": "news@Other.example"}, subject="Weekly news")
    third = await client.send(**{"from": "Alerts <alerts@brand.example>"}, subject="INVOICE overdue")
    await sink.handler.wait_for(3)
    for sent in (first, second, third):  # the sink has them; relay records the outcome after the sink's 250
        await wait_for_states(client.relay.store, sent, ["delivered"])
    assert await client.found("sender=app@brand.example") == [first]
    assert await client.found("sender=ALERTS@BRAND.EXAMPLE") == [third]
    assert await client.found("sender=brand.example") == [third, first]
    assert await client.found("sender=other.example") == [second]
    assert await client.found("subject=invoice") == [third, first]
    assert await client.found("subject=weekly+NEWS") == [second]
    assert await client.found(f"message_id={second}") == [second]
    assert await client.found(f"message_id={quote(header_id)}") == [first]
    assert await client.found(f"message_id={quote(header_id.strip('<>'))}") == [first]
    assert await client.found("sender=brand.example&subject=overdue&status=delivered") == [third]
    assert await client.found("sender=nobody.example") == []


async def test_a_subject_page_follows_the_cursor(client, sink):
    made = [await client.send(subject=f"Report {i}") for i in range(3)]
    await sink.handler.wait_for(3)
    status, page = await client.call("GET", "/v1/messages?subject=report&limit=2")
    assert [m["id"] for m in page["data"]] == [made[2], made[1]] and page["next_cursor"] == made[1]
    status, page = await client.call("GET", f"/v1/messages?subject=report&limit=2&cursor={made[1]}")
    assert [m["id"] for m in page["data"]] == [made[0]] and page["next_cursor"] is None


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("sender=not%20a%20domain", "sender"),
        ("sender=a%20b@example.com", "sender"),
        ("sender=@", "sender"),
        ("subject=" + "x" * 201, "subject"),
        ("subject=a%09b", "subject"),
        ("message_id=a%20b@example.com", "message_id"),
        ("message_id=" + "x" * 201, "message_id"),
    ],
)
async def test_bad_search_parameters_are_refused_naming_the_field(client, query, field):
    status, error = await client.call("GET", f"/v1/messages?{query}")
    assert status == 400
    assert (error["error"]["code"], error["error"]["field"]) == ("invalid_field", field)


async def test_the_overview_figures(client, sink):
    delivered = await client.send(to=["one@dest.example", "two@dest.example"])
    waiting = await client.send(to=["tempfail1@slow.example", "tempfail2@slow.example", "tempfail3@other.example"])
    await wait_for_states(client.relay.store, delivered, ["delivered", "delivered"])
    await wait_for_states(client.relay.store, waiting, ["deferred", "deferred", "deferred"])
    status, overview = await client.call("GET", "/v1/stats/overview")
    assert status == 200, overview
    assert overview["recipients"]["delivered"] == 2 and overview["recipients"]["deferred"] == 3
    assert overview["recipients"]["bounced"] == 0 and overview["waiting"] == 3
    hours, days = overview["last_24_hours"], overview["last_30_days"]
    assert (hours["interval"], len(hours["data"]), days["interval"], len(days["data"])) == ("hour", 24, "day", 30)
    now_hour = int(time.time()) // 3600 * 3600
    assert hours["data"][-1]["start"] == iso(now_hour)
    recent = [b["counts"] for b in hours["data"][-2:]]  # the last hour, or the one before if it just turned
    assert {k: sum(c[k] for c in recent) for k in recent[0]} == {
        "delivered": 2,
        "deferred": 3,
        "bounced": 0,
        "complained": 0,
    }
    assert days["data"][-1]["counts"]["delivered"] == 2 and days["data"][0]["counts"]["delivered"] == 0
    (reason,) = overview["deferral_reasons"]["data"]
    assert (reason["reason"], reason["count"], reason["example"]) == (
        "451 4.3.0 try again later",
        3,
        "451 4.3.0 try again later",
    )
    slow, other = overview["destinations"]
    assert (slow["domain"], slow["waiting"], slow["deferred"]) == ("slow.example", 2, 2)
    assert (other["domain"], other["waiting"]) == ("other.example", 1)
    status, top = await client.call("GET", "/v1/stats/overview?limit=1")
    assert [d["domain"] for d in top["destinations"]] == ["slow.example"]
    status, earlier = await client.call("GET", "/v1/stats/overview?from=2020-01-01T00:00:00Z&to=2020-01-02T00:00:00Z")
    assert earlier["deferral_reasons"] == {
        "from": "2020-01-01T00:00:00.000Z",
        "to": "2020-01-02T00:00:00.000Z",
        "data": [],
    }


async def test_the_overview_is_for_instance_wide_readers_and_checks_its_window(client):
    store, clock = client.relay.store, client.relay.store.clock
    _, own = await create_api_key(store.keys, clock, "own", ("read",), own_messages=True)
    _, sender = await create_api_key(store.keys, clock, "sender", ("send",))
    status, error = await client.call("GET", "/v1/stats/overview", key=own)
    assert status == 403 and error["error"]["code"] == "own_messages_only"
    assert (await client.call("GET", "/v1/stats/overview", key=sender))[0] == 403
    status, error = await client.call("GET", "/v1/stats/overview?from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z")
    assert (status, error["error"]["field"]) == (400, "from")
    status, error = await client.call("GET", "/v1/stats/overview?limit=0")
    assert (status, error["error"]["field"]) == (400, "limit")
