"""Events, signed webhooks, stats and metrics, against a real HTTP receiver on loopback."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time

import aiohttp
import pytest
from aiohttp import web
from standardwebhooks import Webhook as StandardWebhook
from standardwebhooks import WebhookVerificationError

from relay.app import Relay
from relay.clock import FakeClock, SystemClock, VirtualClock
from relay.config import Rate
from relay.keys import create_api_key
from relay.message import NewMessage
from relay.store import Store
from relay.store.events import EventFilter
from relay.store.webhooks import Webhook
from relay.webhooks import SenderSettings, WebhookSender, new_secret, sign
from tests.conftest import make_config, run_cli, wait_for_states

RAW = b"From: app@example.com\r\nTo: x@one.example\r\nSubject: hi\r\nMessage-ID: <w-1@example.com>\r\n\r\nhi\r\n"


@dataclasses.dataclass
class Receiver:
    """A webhook endpoint that answers with scripted statuses (then 200) and records every request."""

    url: str
    requests: list[tuple[dict[str, str], bytes]]
    statuses: list[int]
    arrived: asyncio.Event
    delay: float = 0.0
    open_now: int = 0
    max_open: int = 0
    clock: VirtualClock | None = None  # when set, ``times`` has its monotonic() at each request
    times: list[float] = dataclasses.field(default_factory=list)

    def bodies(self) -> list[dict]:
        return [json.loads(body) for _, body in self.requests]

    async def wait_for(self, count: int, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.requests) < count:
            assert time.monotonic() < deadline, f"receiver got {len(self.requests)} requests, expected {count}"
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), 0.2)
            except TimeoutError:
                pass


@pytest.fixture
async def receiver():
    requests: list[tuple[dict[str, str], bytes]] = []
    statuses: list[int] = []
    arrived = asyncio.Event()
    receiver = Receiver("", requests, statuses, arrived)

    async def handle(request: web.Request) -> web.Response:
        receiver.open_now += 1
        receiver.max_open = max(receiver.max_open, receiver.open_now)
        try:
            await asyncio.sleep(receiver.delay)
            requests.append((dict(request.headers), await request.read()))
            if receiver.clock is not None:
                receiver.times.append(receiver.clock.monotonic())
            arrived.set()
            return web.Response(status=statuses.pop(0) if statuses else 200, text="ok")
        finally:
            receiver.open_now -= 1

    app = web.Application()
    app.router.add_post("/hook", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    receiver.url = f"http://127.0.0.1:{port}/hook"
    yield receiver
    await runner.cleanup()


def verify(secret: str, headers: dict[str, str], body: bytes) -> dict:
    """The documented receiver-side check (README), with the standardwebhooks package."""
    return StandardWebhook(secret).verify(body, {k.lower(): v for k, v in headers.items()})


@pytest.fixture
def store_clock():
    return FakeClock(time.time())  # signatures are checked against the real time


async def add_hook(store: Store, url: str, events: list[str] | None = None) -> Webhook:
    now = store.clock.now()
    hook = Webhook("wh_test", url, events or [], True, "", new_secret(), now, now)
    await store.webhooks.create_webhook(hook)
    return hook


def sender_for(store: Store, **settings) -> WebhookSender:
    return WebhookSender(store, store.clock, SenderSettings(allow_private_targets=True, **settings))


async def test_signature_matches_the_standard_webhooks_library():
    secret = new_secret()
    body = b'{"type":"delivered"}'
    headers = {"webhook-id": "evt_1", "webhook-timestamp": str(int(time.time()))}
    headers["webhook-signature"] = sign(secret, "evt_1", int(headers["webhook-timestamp"]), body)
    assert verify(secret, headers, body) == {"type": "delivered"}
    with pytest.raises(WebhookVerificationError):
        verify(secret, headers, body.replace(b"delivered", b"bounced"))
    with pytest.raises(WebhookVerificationError):
        verify(new_secret(), headers, body)


async def test_a_failing_receiver_gets_the_event_once_after_retries(store, receiver):
    hook = await add_hook(store, receiver.url, ["queued"])
    await store.queue.enqueue(NewMessage("app@example.com", ("x@one.example",), RAW, "smtp", tags=("welcome",)))
    receiver.statuses.extend([500, 503, 502])
    sender = sender_for(store)
    for delay in (0, 5, 30, 120):  # the first three retries of RETRY_SCHEDULE
        store.clock.advance(delay)
        assert await sender.run_once() == 1
        assert await sender.run_once() == 0  # nothing else is due yet
    store.clock.advance(10_000)
    assert await sender.run_once() == 0  # delivered: never sent again
    assert len(receiver.requests) == 4
    ids = {h["webhook-id"] for h, _ in receiver.requests}
    assert len(ids) == 1  # the same webhook-id on every retry: receivers de-duplicate by it
    bodies = {body for _, body in receiver.requests}
    assert len(bodies) == 1  # byte for byte the same payload
    headers, body = receiver.requests[-1]
    event = verify(hook.secret, headers, body)
    assert event["type"] == "queued" and event["data"]["recipient"] == "x@one.example"
    assert event["data"]["tags"] == ["welcome"] and event["data"]["id"] == headers["webhook-id"]
    attempts = await store.webhooks.webhook_attempts(hook.id, 10)
    assert [a.status for a in attempts] == [200, 502, 503, 500]
    assert (await store.webhooks.webhook(hook.id)).failing_since is None
    await sender.stop()


async def test_the_running_sender_retries_on_the_schedule(store, receiver):
    """The sender's own poll loop, on the virtual clock: the 2nd attempt 5 s after the 1st, the 3rd 30 s
    after the 2nd, the 4th 2 min after the 3rd (RETRY_SCHEDULE), none in between, and no real sleep."""
    await add_hook(store, receiver.url, ["queued"])
    await store.queue.enqueue(NewMessage("app@example.com", ("x@one.example",), RAW, "smtp"))
    receiver.statuses.extend([500, 503, 502])
    receiver.clock = clock = store.clock
    sender = sender_for(store)
    # A lane waits longer after an empty claim that took the database real time (a loaded machine's
    # PostgreSQL can take 20 ms): tested on its own below; here every empty claim waits poll_interval.
    sender._idle_wait = lambda lane: sender.settings.poll_interval  # type: ignore[method-assign]
    running = asyncio.create_task(sender.run())

    async def requests(count: int) -> None:
        await receiver.wait_for(count)

    try:
        started = clock.monotonic()
        # The sender's loop and the endpoint's lane wait on the clock: nothing else runs.
        await clock.drive(requests(4), sleepers=2)
        assert [t - started for t in receiver.times] == [0, 5, 5 + 30, 35 + 120]
        await clock.drive(clock.sleep(600), sleepers=3)  # ten more minutes of polls, one a second
        assert len(receiver.requests) == 4  # delivered: never sent again
    finally:
        await sender.stop()
        running.cancel()


async def test_deliveries_survive_a_restart(store_factory, receiver):
    clock = FakeClock(time.time())
    first = store = store_factory(clock)
    await add_hook(store, receiver.url)
    for i in range(5):
        await store.queue.enqueue(NewMessage("app@example.com", (f"u{i}@one.example",), RAW, "smtp"))
    await store.close()  # "crash" before any webhook was sent

    store = store_factory(clock, restart=first)
    sender = sender_for(store)
    assert await sender.run_once() == 5
    assert sorted(b["data"]["recipient"] for b in receiver.bodies()) == [f"u{i}@one.example" for i in range(5)]
    await sender.stop()
    await store.close()


async def test_giving_up_and_disabling_a_dead_endpoint(store, receiver):
    hook = await add_hook(store, receiver.url.replace("/hook", "/missing"))  # 404 every time
    await store.queue.enqueue(NewMessage("app@example.com", ("x@one.example",), RAW, "smtp"))
    sender = sender_for(store, retry_schedule=(5, 5), disable_after=3600)
    for _ in range(3):
        await sender.run_once()
        store.clock.advance(5)
    assert await store.webhooks.webhook_backlog() == {}  # given up after the schedule
    hook = await store.webhooks.webhook(hook.id)
    assert hook.enabled and hook.failing_since is not None
    await store.queue.enqueue(NewMessage("app@example.com", ("y@one.example",), RAW, "smtp"))
    store.clock.advance(3600)
    await sender.run_once()
    hook = await store.webhooks.webhook(hook.id)
    assert not hook.enabled and "disabled after failing" in hook.disabled_reason
    assert "HTTP 404" in hook.disabled_reason
    await store.queue.enqueue(NewMessage("app@example.com", ("z@one.example",), RAW, "smtp"))
    assert await sender.run_once() == 0  # a disabled endpoint is not called; its new events are not queued
    await sender.stop()


async def test_a_slow_endpoint_delays_only_its_own_events(store_factory, receiver):
    """Two endpoints, one that never answers (each request waits for the timeout): the other gets events
    queued while the first one's requests hang as soon as it would alone."""
    store = store_factory(SystemClock())

    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # never answers; the sender's timeout closes the connection
        writer.close()

    hanging = await asyncio.start_server(hang, "127.0.0.1", 0)
    port = hanging.sockets[0].getsockname()[1]
    now = store.clock.now()
    for hook_id, url in (("wh_fast", receiver.url), ("wh_slow", f"http://127.0.0.1:{port}/hook")):
        await store.webhooks.create_webhook(Webhook(hook_id, url, ["queued"], True, "", new_secret(), now, now))
    sender = sender_for(store, timeout=4.0, max_concurrency=1, poll_interval=0.05)
    running = asyncio.create_task(sender.run())
    try:
        for i in range(3):
            await store.queue.enqueue(NewMessage("app@example.com", (f"a{i}@one.example",), RAW, "smtp"))
        await receiver.wait_for(3, timeout=3)
        started = time.monotonic()
        for i in range(3):  # while the slow endpoint's first three requests wait for their timeouts (12 s)
            await store.queue.enqueue(NewMessage("app@example.com", (f"b{i}@one.example",), RAW, "smtp"))
        await receiver.wait_for(6, timeout=3)
        assert time.monotonic() - started < 2
        assert (await store.webhooks.webhook_backlog())["wh_slow"] == 6, "the slow endpoint's wait in its own lane"
    finally:
        await sender.stop()
        running.cancel()
        hanging.close()
        await store.close()


async def test_a_claim_that_finds_nothing_at_a_cost_is_not_repeated_every_poll(store_factory):
    """An endpoint that has been failing leaves events due that wait for an earlier event of their
    message: every claim looks at each of them and finds nothing (20,000 of them: ~20 ms a claim on
    SQLite here). A lane spends at most a fiftieth of its time on such claims."""
    store = store_factory(SystemClock())
    now = store.clock.now()
    await store.webhooks.create_webhook(Webhook("wh_down", "http://127.0.0.1:9/", [], True, "", new_secret(), now, now))
    claims = []
    real_claim = store.webhooks.claim_webhook_deliveries

    async def costly_claim(*args, **kwargs):
        claims.append(time.monotonic())
        await asyncio.sleep(0.04)  # as a claim looking at a big backlog takes
        return await real_claim(*args, **kwargs)

    store.webhooks.claim_webhook_deliveries = costly_claim
    sender = sender_for(store, poll_interval=0.05)
    running = asyncio.create_task(sender.run())
    try:
        await asyncio.sleep(1.5)
    finally:
        await sender.stop()
        running.cancel()
        await store.close()
    assert 1 <= len(claims) <= 2, f"{len(claims)} claims in 1.5 s (every 0.05 s + 0.04 s: ~16)"


async def test_a_stored_url_relay_would_not_save_is_refused_at_every_send(store, receiver):
    """The API refuses such a URL; one in the store anyway (an older relay, a copied store) is refused
    when sent to, every time, and never called."""
    url = receiver.url.replace("http://", "http://user:secret@")
    hook = await add_hook(store, url)
    sender = sender_for(store)
    try:
        for msg_id in ("evt_1", "evt_2"):
            status, error, _ = await sender.post(hook, msg_id, b"{}")
            assert status is None and "must not carry credentials" in (error or "")
        status, _, _ = await sender.post(dataclasses.replace(hook, url=receiver.url), "evt_3", b"{}")
    finally:
        await sender.stop()
    assert status == 200 and len(receiver.requests) == 1


def test_an_endpoint_leases_what_it_can_send_within_half_the_lease():
    def limit(**settings: object) -> int:
        return WebhookSender(None, VirtualClock(), SenderSettings(**settings)).claim_limit  # type: ignore[arg-type]

    assert limit() == 24  # 10 s each at worst, 4 at a time: 24 in 60 s
    assert limit(max_concurrency=1) == 6
    assert limit(max_rate=Rate(1, 1.0)) == 17  # and one a second at most
    assert limit(max_rate=Rate(1, 3600.0)) == 1
    assert limit(timeout=1.0, max_concurrency=50) == 200, "at most a batch"


async def test_event_filter_and_per_endpoint_concurrency(store, receiver):
    await add_hook(store, receiver.url, ["cancelled"])
    for i in range(8):
        m = NewMessage("app@example.com", (f"u{i}@one.example",), RAW, "smtp")
        await store.queue.enqueue(m)
        await store.queue.cancel_message(m.id)
    receiver.delay = 0.05
    sender = sender_for(store, max_concurrency=2)
    assert await sender.run_once() == 8
    assert [b["type"] for b in receiver.bodies()] == ["cancelled"] * 8  # not the queued events
    assert receiver.max_open == 2  # eight due at once, two at a time
    await sender.stop()


# -- through the running relay -----------------------------------------------------------------


async def api(relay, method: str, path: str, key: str, **kwargs):
    host, port = relay.http_address
    async with aiohttp.ClientSession() as s:
        async with s.request(
            method, f"http://{host}:{port}{path}", headers={"Authorization": f"Bearer {key}"}, **kwargs
        ) as r:
            return r.status, await r.json(content_type=None) if r.content_type == "application/json" else await r.text()


@pytest.fixture
async def relay_on_virtual_clock(tmp_path):
    """Like relay_factory, on a VirtualClock that starts now (receivers check signatures against real time)."""
    started: list[Relay] = []

    async def start(**sections) -> Relay:
        relay = Relay(make_config(tmp_path / "data", **sections), VirtualClock(time.time()))
        await relay.start()
        started.append(relay)
        return relay

    yield start
    for relay in started:
        await relay.stop()


async def tick_until(clock: VirtualClock, reached, real_seconds: float = 30.0) -> None:
    """Move the clock a second at a time (the sender's and the engine's poll interval) until ``reached()``."""
    deadline = time.monotonic() + real_seconds
    while not reached():
        assert time.monotonic() < deadline, "not reached"
        clock.advance(1.0)
        await asyncio.sleep(0.02)  # what became due runs: claims, deliveries, webhook requests


@pytest.fixture
async def relay_and_key(relay_on_virtual_clock, sink):
    relay = await relay_on_virtual_clock(
        delivery={"smarthost": sink.address, "retry_schedule": ["1s"]}, webhooks={"allow_private_targets": True}
    )
    key = await create_api_key(relay.store.keys, relay.store.clock, "t", ("admin",))
    return relay, key[1]


async def test_events_reach_the_webhook_signed_and_in_order(relay_and_key, receiver, sink):
    relay, key = relay_and_key
    status, hook = await api(relay, "POST", "/v1/webhooks", key, json={"url": receiver.url})
    assert status == 201 and hook["secret"].startswith("whsec_") and hook["events"] == []
    await relay.store.suppressions.suppress(["gone@one.example"])
    sink.handler.rcpt_reply = None
    to = ["ok@one.example", "tempfail@one.example", "permfail@one.example", "gone@one.example"]
    body = {"from": "app@example.com", "to": to, "subject": "hi", "text": "hi", "tags": ["t1"]}
    status, sent = await api(relay, "POST", "/v1/messages", key, json=body)
    assert status == 202, sent
    # queued x3 + suppressed, delivered, deferred, bounced; the tempfail one is retried (1s) and deferred again.
    await tick_until(relay.clock, lambda: len(receiver.requests) >= 8)  # the 1 s retry, webhooks polled each second
    events = [verify(hook["secret"], h, b) for h, b in receiver.requests]
    mine = [e["data"] for e in events if e["data"]["message_id"] == sent["id"]]
    by_recipient: dict[str, list[str]] = {}
    for e in mine:
        by_recipient.setdefault(e["recipient"], []).append(e["type"])
    assert by_recipient["ok@one.example"] == ["queued", "delivered"]
    assert by_recipient["permfail@one.example"] == ["queued", "bounced"]
    assert by_recipient["gone@one.example"] == ["suppressed"]
    assert by_recipient["tempfail@one.example"][:2] == ["queued", "deferred"]
    ids = [int(e["id"].removeprefix("evt_")) for e in mine]
    assert ids == sorted(ids)  # in order per message
    delivered = next(e for e in mine if e["type"] == "delivered")
    assert delivered["details"]["smtp_code"] == 250 and delivered["details"]["attempt"] == 1
    assert delivered["details"]["mx_host"] == "127.0.0.1" and delivered["tags"] == ["t1"]
    bounced = next(e for e in mine if e["type"] == "bounced")
    assert bounced["details"]["classification"] == "hard" and bounced["details"]["reason"] == "user_unknown"

    # The same events through the API.
    status, page = await api(relay, "GET", f"/v1/messages/{sent['id']}/events", key)
    assert status == 200 and [e["type"] for e in page["data"]][:1] == ["queued"]
    status, page = await api(relay, "GET", "/v1/events?type=bounced,delivered&limit=1", key)
    assert status == 200 and len(page["data"]) == 1 and page["next_cursor"]
    status, rest = await api(relay, "GET", f"/v1/events?type=bounced,delivered&cursor={page['next_cursor']}", key)
    assert {e["type"] for e in page["data"] + rest["data"]} == {"bounced", "delivered"}
    status, tagged = await api(relay, "GET", "/v1/events?tag=t1&recipient=ok@one.example", key)
    assert [e["type"] for e in tagged["data"]] == ["delivered", "queued"]

    # Stats agree with the events.
    status, stats = await api(relay, "GET", "/v1/stats?interval=hour", key)
    assert status == 200
    _, all_events = await api(relay, "GET", "/v1/events?limit=500", key)
    counted: dict[str, int] = {}
    for e in all_events["data"]:
        counted[e["type"]] = counted.get(e["type"], 0) + 1
    assert stats["totals"] == counted
    _, by_tag = await api(relay, "GET", "/v1/stats?interval=day&tag=t1", key)
    assert by_tag["totals"] == counted  # every message here carried t1
    _, bounces = await api(relay, "GET", "/v1/stats/bounces", key)
    assert bounces["total"] >= 1
    assert {"classification": "hard", "reason": "user_unknown", "count": 1} in bounces["by_classification"]
    assert bounces["by_domain"][0]["domain"] == "one.example"

    # The delivery log and a test send.
    status, log = await api(relay, "GET", f"/v1/webhooks/{hook['id']}/deliveries", key)
    assert status == 200 and all(a["ok"] for a in log["data"]) and len(log["data"]) >= 8
    status, test = await api(relay, "POST", f"/v1/webhooks/{hook['id']}/test", key)
    assert status == 200 and test["ok"] and test["status_code"] == 200 and test["latency_ms"] >= 0
    verify(hook["secret"], *receiver.requests[-1])


async def test_webhook_api_crud_rotation_and_ssrf_guard(relay_factory, receiver):
    relay = await relay_factory()
    key = (await create_api_key(relay.store.keys, relay.store.clock, "t", ("webhooks",)))[1]
    status, error = await api(relay, "POST", "/v1/webhooks", key, json={"url": receiver.url})
    assert status == 400 and error["error"]["field"] == "url" and "non-public" in error["error"]["message"]
    for bad in ("ftp://example.com/x", "http://user:pw@example.com/", "not a url"):
        status, error = await api(relay, "POST", "/v1/webhooks", key, json={"url": bad})
        assert status == 400 and error["error"]["field"] == "url"
    status, error = await api(relay, "POST", "/v1/webhooks", key, json={"url": "https://9.9.9.9/x", "events": ["nope"]})
    assert status == 400 and error["error"]["field"] == "events"

    status, hook = await api(
        relay,
        "POST",
        "/v1/webhooks",
        key,
        json={"url": "https://9.9.9.9/hook", "events": ["bounced", "complained"], "description": "crm"},
    )
    assert status == 201, hook
    status, listed = await api(relay, "GET", "/v1/webhooks", key)
    assert [h["id"] for h in listed["data"]] == [hook["id"]] and "secret" not in listed["data"][0]
    status, changed = await api(relay, "PUT", f"/v1/webhooks/{hook['id']}", key, json={"enabled": False})
    assert status == 200 and changed["enabled"] is False and changed["events"] == ["bounced", "complained"]
    status, rotated = await api(relay, "POST", f"/v1/webhooks/{hook['id']}/rotate-secret", key)
    assert status == 200 and rotated["secret"] != hook["secret"]
    assert (await api(relay, "DELETE", f"/v1/webhooks/{hook['id']}", key))[0] == 200
    assert (await api(relay, "GET", f"/v1/webhooks/{hook['id']}", key))[0] == 404
    read_only = (await create_api_key(relay.store.keys, relay.store.clock, "r", ("read",)))[1]
    assert (await api(relay, "GET", "/v1/webhooks", read_only))[0] == 403


async def test_metrics(relay_factory, sink):
    relay = await relay_factory(delivery={"smarthost": sink.address})
    await relay.store.queue.enqueue(NewMessage("app@example.com", ("a@one.example",), RAW, "smtp"))
    relay.engine.wake()
    await sink.handler.wait_for(1)
    host, port = relay.http_address
    async with aiohttp.ClientSession() as s:
        async with s.get(f"http://{host}:{port}/metrics") as r:
            text = await r.text()
    assert r.status == 200
    assert 'relay_events_total{type="queued"} 1.0' in text
    assert 'relay_queue_recipients{state="delivered"}' in text
    assert "relay_delivery_latency_seconds_count" in text and "relay_webhook_backlog 0.0" in text


async def test_retention_prunes_old_events_and_bodies(tmp_path, relay_on_virtual_clock, sink):
    relay = await relay_on_virtual_clock(
        delivery={"smarthost": sink.address}, retention={"events": "1s", "bodies": "1s"}
    )
    await relay.store.queue.enqueue(NewMessage("app@example.com", ("a@one.example",), RAW, "smtp"))
    waiting = NewMessage("app@example.com", ("tempfail@one.example",), RAW, "smtp")
    relay.engine.wake()
    await sink.handler.wait_for(1)
    await relay.store.queue.enqueue(waiting)
    relay.engine.wake()
    await wait_for_states(relay.store, waiting.id, ["deferred"])
    relay.clock.advance(2.1)  # past both retention periods
    await relay.prune_history()  # (the housekeeping task may have pruned some already)
    left = await relay.store.db.read(lambda c: c.execute("SELECT message_id FROM message_bodies").fetchall())
    states = await relay.store.db.read(lambda c: c.execute("SELECT message_id, state FROM recipients").fetchall())
    assert left == [(waiting.id,)], states  # the waiting message keeps its body
    assert await relay.store.events.query(EventFilter(until=relay.clock.now() - 1), 10) == []
    totals = await relay.store.events.event_totals()
    assert totals["queued"] == 2  # the hourly counts outlive the events


async def test_housekeeping_prunes_every_ten_minutes_of_the_relays_clock(relay_on_virtual_clock, sink):
    relay = await relay_on_virtual_clock(
        delivery={"smarthost": sink.address}, retention={"events": "1s", "bodies": "1s"}
    )
    await relay.store.queue.enqueue(NewMessage("app@example.com", ("a@one.example",), RAW, "smtp"))
    relay.engine.wake()
    await sink.handler.wait_for(1)

    async def bodies() -> int:
        return (await relay.store.db.read(lambda c: c.execute("SELECT count(*) FROM message_bodies").fetchone()))[0]

    await asyncio.sleep(0.2)
    assert await bodies() == 1  # housekeeping ran at start, before the body was old enough
    relay.clock.advance(599)
    await asyncio.sleep(0.2)
    assert await bodies() == 1
    relay.clock.advance(1)  # ten minutes after the last run: the next one
    deadline = time.monotonic() + 10
    while await bodies():
        assert time.monotonic() < deadline, "not pruned"
        await asyncio.sleep(0.02)


async def test_a_killed_relay_loses_no_webhook_event(relay_process, receiver, sink):
    proc = relay_process(delivery={"smarthost": sink.address}, webhooks={"allow_private_targets": True})
    await proc.start()
    config = proc.config_path
    key = json.loads(run_cli("keys", "create", "--scope", "admin", "--json", config=config).stdout)["key"]
    base, auth = f"http://127.0.0.1:{proc.http_port}", {"Authorization": f"Bearer {key}"}
    receiver.statuses.append(500)  # the first call fails: a retry is due in 5 s
    async with aiohttp.ClientSession(headers=auth) as s:
        async with s.post(f"{base}/v1/webhooks", json={"url": receiver.url}) as r:
            hook = await r.json()
        async with s.post(
            f"{base}/v1/messages", json={"from": "a@example.com", "to": "b@one.example", "subject": "s", "text": "t"}
        ) as r:
            assert r.status == 202
        await sink.handler.wait_for(1)
        deadline = time.monotonic() + 10
        while True:
            async with s.get(f"{base}/v1/webhooks/{hook['id']}/deliveries") as r:
                if (await r.json())["data"]:
                    break
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
    proc.kill()  # with the queued event failed once and the delivered event not yet sent
    await proc.start()
    await receiver.wait_for(3)
    ok = [verify(hook["secret"], h, b) for h, b in receiver.requests[1:]]
    assert [e["type"] for e in ok] == ["queued", "delivered"]
    assert receiver.requests[0][0]["webhook-id"] == receiver.requests[1][0]["webhook-id"]
    await proc.terminate()
