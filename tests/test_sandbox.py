"""Sandbox mode and test keys: every check runs, the message is queued durably, then captured, never sent."""

from __future__ import annotations

import asyncio
import base64
import json
import smtplib
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from relay.api.sandbox import sandbox_json
from relay.app import Relay
from relay.clock import FakeClock
from relay.config import ConfigError
from relay.keys import create_api_key
from relay.sandbox import render
from relay.store.queue import MessageFilter
from tests.conftest import config_dict, make_config, run_cli, store_rows, wait_for_states, write_toml
from tests.test_dkim import new_key

MESSAGE = {"from": "App <app@example.com>", "to": ["user@example.org"], "subject": "Hi", "text": "Hello"}


class Client:
    def __init__(self, relay: Relay, session: aiohttp.ClientSession, key: str) -> None:
        self.relay, self.session, self.key = relay, session, key

    async def call(self, method: str, path: str, key: str | None = None, **kwargs) -> tuple[int, object]:
        headers = {"Authorization": f"Bearer {key or self.key}", **kwargs.pop("headers", {})}
        async with self.session.request(method, path, headers=headers, **kwargs) as resp:
            body = await resp.read()
            if resp.content_type == "application/json":
                return resp.status, json.loads(body)
            return resp.status, body


@pytest.fixture
async def client_factory(relay_factory):
    sessions = []

    async def make(**sections) -> Client:
        relay = await relay_factory(**sections)
        _, admin = await create_api_key(relay.store.keys, relay.store.clock, "admin", ("admin",))
        host, port = relay.http_address
        session = aiohttp.ClientSession(f"http://{host}:{port}")
        sessions.append(session)
        return Client(relay, session, admin)

    yield make
    for s in sessions:
        await s.close()


def _smtp_port(relay: Relay) -> int:
    return relay.smtp_addresses[0][1]


async def send_smtp(relay: Relay, recipients: list[str], raw: bytes, login: tuple[str, str] | None = None) -> dict:
    """Submit with smtplib, a real blocking client, in a thread (the relay runs on this event loop)."""

    def send() -> dict:
        with smtplib.SMTP("127.0.0.1", _smtp_port(relay), timeout=10) as smtp:
            if login:
                smtp.login(*login)
            return smtp.sendmail("me@example.com", recipients, raw)

    return await asyncio.to_thread(send)


async def _count(relay: Relay, sql: str) -> int:
    ((count,),) = await store_rows(relay.store, sql)
    return int(count)


async def test_a_test_key_on_a_live_instance_is_captured_and_never_connects(client_factory, sink):
    c = await client_factory(delivery={"smarthost": sink.address})
    status, created = await c.call(
        "POST", "/v1/api-keys", json={"name": "ci", "scopes": ["send", "read"], "test": True}
    )
    assert status == 201 and created["key"].startswith("rly_test_") and created["test"] is True
    status, live = await c.call("POST", "/v1/api-keys", json={"name": "prod", "scopes": ["send"]})
    assert live["key"].startswith("rly_live_") and live["test"] is False
    _, listing = await c.call("GET", "/v1/api-keys")
    assert {k["name"]: k["test"] for k in listing["data"]} == {"admin": False, "ci": True, "prod": False}

    status, body = await c.call("POST", "/v1/messages", key=created["key"], json=MESSAGE)
    assert status == 202 and body["sandbox"] is True  # the 202 says so, as GET does
    await wait_for_states(c.relay.store, body["id"], ["delivered"])
    _, message = await c.call("GET", f"/v1/messages/{body['id']}")
    assert message["sandbox"] is True and "captured in the sandbox" in message["recipients"][0]["last_response"]
    _, events = await c.call("GET", f"/v1/messages/{body['id']}/events")
    delivered = [e for e in events["data"] if e["type"] == "delivered"]
    assert delivered[0]["details"]["sandbox"] is True and delivered[0]["details"]["mx_host"] is None
    assert sink.handler.connections == 0 and sink.handler.received == []

    status, live_sent = await c.call("POST", "/v1/messages", key=live["key"], json=MESSAGE)  # the live key delivers
    assert live_sent["sandbox"] is False
    await sink.handler.wait_for(1)
    await wait_for_states(c.relay.store, live_sent["id"], ["delivered"])
    _, message = await c.call("GET", f"/v1/messages/{live_sent['id']}")
    assert message["sandbox"] is False
    assert c.relay.engine.captured == 1


async def test_sandbox_mode_captures_without_dns_or_connections(client_factory, dns_server):
    c = await client_factory(delivery={"mode": "sandbox"}, dns={"nameservers": [f"127.0.0.1:{dns_server.port}"]})
    await send_smtp(
        c.relay,
        ["you@example.org", "other@example.net"],  # trusted (loopback), no AUTH
        b"From: me@example.com\r\nTo: you@example.org\r\nSubject: tour\r\n\r\nhello\r\n",
    )
    status, page = await c.call("GET", "/v1/sandbox/messages")
    assert status == 200 and len(page["data"]) == 1
    message_id = page["data"][0]["id"]
    await wait_for_states(c.relay.store, message_id, ["delivered", "delivered"])
    assert dns_server.protocol.queries == []  # MX routing was never even looked up


async def test_reading_a_captured_message_rendered_and_raw(client_factory):
    c = await client_factory(delivery={"mode": "sandbox"})
    body = {
        **MESSAGE,
        "html": "<p>Hello</p>",
        "cc": "cc@example.org",
        "subject": "Caf\u00e9",
        "attachments": [
            {"filename": "report.csv", "content": base64.b64encode(b"a,b\n1,2\n").decode(), "content_type": "text/csv"},
            {
                "filename": "logo.png",
                "content": base64.b64encode(b"\x89PNG" + bytes(96)).decode(),
                "content_type": "image/png",
                "content_id": "logo",
            },
        ],
    }
    status, accepted = await c.call("POST", "/v1/messages", json=body)
    assert status == 202
    await wait_for_states(c.relay.store, accepted["id"], ["delivered", "delivered"])
    status, shown = await c.call("GET", f"/v1/sandbox/messages/{accepted['id']}")
    assert status == 200
    assert shown["envelope"] == {"from": "app@example.com", "to": ["user@example.org", "cc@example.org"]}
    headers = {h["name"]: h["value"] for h in shown["headers"]}
    assert headers["Subject"] == "Caf\u00e9" and headers["From"] == "App <app@example.com>"
    assert shown["text"].strip() == "Hello" and shown["html"].strip() == "<p>Hello</p>"
    assert sorted((a["filename"], a["content_type"], a["size"], a["content_id"]) for a in shown["attachments"]) == [
        ("logo.png", "image/png", 100, "logo"),
        ("report.csv", "text/csv", 8, None),
    ]
    assert shown["sandbox"] is True and shown["body_deleted"] is False
    assert [r["status"] for r in shown["recipients"]] == ["delivered", "delivered"]

    status, raw = await c.call("GET", f"/v1/sandbox/messages/{accepted['id']}/raw")
    assert status == 200 and b"From: App <app@example.com>\r\n" in raw
    status, same = await c.call("GET", f"/v1/sandbox/messages/{accepted['id']}?format=raw")
    assert status == 200 and same == raw and render(raw).text.strip() == "Hello"
    status, error = await c.call("GET", f"/v1/sandbox/messages/{accepted['id']}?format=pdf")
    assert status == 400 and error["error"]["field"] == "format"
    assert (await c.call("GET", "/v1/sandbox/messages/nope"))[0] == 404


def test_rendering_takes_what_it_can_from_odd_messages():
    odd = render(b"From: a@example.com\r\nX-Bad: \xff\r\nContent-Type: text/plain; charset=x-unknown\r\n\r\nhi\r\n")
    assert odd.text == "hi\r\n" and odd.headers[0] == ("From", "a@example.com") and odd.headers[1][0] == "X-Bad"
    forwarded = render(
        b"Subject: fwd\r\nContent-Type: multipart/mixed; boundary=zz\r\n\r\n--zz\r\n"
        b"Content-Type: text/plain\r\n\r\nsee below\r\n--zz\r\nContent-Type: message/rfc822\r\n\r\n"
        b"Subject: inner\r\n\r\ninner body\r\n--zz--\r\n"
    )
    assert forwarded.text == "see below" and [a.content_type for a in forwarded.attachments] == ["message/rfc822"]
    assert forwarded.attachments[0].size > len(b"inner body")
    assert render(b"no header at all").text == "no header at all"


async def test_captured_bodies_follow_retention_bodies(tmp_path):
    clock = FakeClock(time.time())
    relay = Relay(make_config(tmp_path / "data", delivery={"mode": "sandbox"}, retention={"bodies": "7d"}), clock)
    await relay.start()
    try:
        await send_smtp(relay, ["you@example.org"], b"From: me@example.com\r\nSubject: kept\r\n\r\nread me\r\n")
        (message,) = await relay.store.queue.sandbox_messages(None, 10)
        await wait_for_states(relay.store, message.id, ["delivered"])
        await relay.prune_history()
        _, raw = await relay.store.queue.sandbox_message(message.id)
        assert raw is not None and raw.endswith(b"read me\r\n")  # readable until [retention] bodies
        clock.advance(8 * 86400)
        assert (await relay.prune_history())[1] == 1
        found, raw = await relay.store.queue.sandbox_message(message.id)
        assert raw is None and found.recipients[0].state == "delivered"  # the envelope and status remain
        assert sandbox_json(found, raw)["body_deleted"] is True
    finally:
        await relay.stop()


async def test_the_listing_is_newest_first_with_a_cursor_and_only_sandboxed(client_factory, sink):
    c = await client_factory(delivery={"smarthost": sink.address})
    _, test_key = await c.call("POST", "/v1/api-keys", json={"scopes": ["send"], "test": True})
    ids = []
    for i in range(5):
        _, accepted = await c.call("POST", "/v1/messages", key=test_key["key"], json={**MESSAGE, "subject": f"n{i}"})
        ids.append(accepted["id"])
    await c.call("POST", "/v1/messages", json=MESSAGE)  # live: delivered to the sink, not listed
    status, first = await c.call("GET", "/v1/sandbox/messages", params={"limit": "2"})
    assert status == 200 and [m["id"] for m in first["data"]] == ids[::-1][:2]
    _, rest = await c.call("GET", "/v1/sandbox/messages", params={"limit": "10", "cursor": first["next_cursor"]})
    assert [m["id"] for m in rest["data"]] == ids[::-1][2:] and rest["next_cursor"] is None
    _, read_only = await c.call("POST", "/v1/api-keys", json={"scopes": ["send"]})
    assert (await c.call("GET", "/v1/sandbox/messages", key=read_only["key"]))[0] == 403  # scope read


async def test_every_check_still_applies_to_test_keys(client_factory, sink, tmp_path):
    path, _ = new_key(tmp_path)
    dkim = {"domains": {"example.com": {"selector": "s1", "private_key": str(path)}}}
    c = await client_factory(delivery={"smarthost": sink.address}, domains={"require_verified_domain": True}, dkim=dkim)
    _, key = await c.call("POST", "/v1/api-keys", json={"scopes": ["send"], "test": True, "daily_quota": 1})
    status, refused = await c.call("POST", "/v1/messages", key=key["key"], json=MESSAGE)
    assert status == 422 and refused["error"]["code"] == "domain_not_verified"
    c.relay.domains.sending.verified.add("example.com")  # as a verification would
    await c.relay.store.suppressions.suppress(["gone@example.org"], "hard_bounce")
    status, accepted = await c.call(
        "POST", "/v1/messages", key=key["key"], json={**MESSAGE, "to": ["user@example.org", "gone@example.org"]}
    )
    assert status == 202 and accepted["recipients"][1]["status"] == "suppressed"
    assert (await c.call("POST", "/v1/messages", key=key["key"], json=MESSAGE))[0] == 402  # the quota counts
    await wait_for_states(c.relay.store, accepted["id"], ["delivered", "suppressed"])
    _, shown = await c.call("GET", f"/v1/sandbox/messages/{accepted['id']}")
    assert shown["headers"][0]["name"] == "DKIM-Signature" and "s=s1" in shown["headers"][0]["value"]
    assert sink.handler.connections == 0


async def test_test_smtp_credentials_sandbox_their_mail(client_factory, sink):
    c = await client_factory(delivery={"smarthost": sink.address}, smtp={"plaintext_auth_networks": ["127.0.0.0/8"]})
    status, cred = await c.call("POST", "/v1/smtp-credentials", json={"test": True})
    assert status == 201 and cred["test"] is True and cred["username"].startswith("relay-test-")
    _, listing = await c.call("GET", "/v1/smtp-credentials")
    assert listing["data"][0]["test"] is True
    await send_smtp(
        c.relay,
        ["user@example.org"],
        b"From: me@example.com\r\nTo: user@example.org\r\n\r\nhi\r\n",
        (cred["username"], cred["password"]),
    )
    _, page = await c.call("GET", "/v1/sandbox/messages")
    assert len(page["data"]) == 1 and page["data"][0]["source"] == "smtp"
    await wait_for_states(c.relay.store, page["data"][0]["id"], ["delivered"])
    assert sink.handler.connections == 0


async def _accept_only(data_dir: Path, mode: str) -> str:
    """Accept one message in ``mode`` while its destination is suspended (nothing delivers it), then stop."""
    relay = Relay(make_config(data_dir, delivery={"mode": mode}))
    await relay.start()
    try:
        await relay.store.queue.suspend_domain("example.org", 3600)
        assert await send_smtp(relay, ["you@example.org"], b"From: me@example.com\r\nSubject: r\r\n\r\nx\r\n") == {}
        (message,) = [
            m for m in await relay.store.queue.messages(MessageFilter(), 10) if m.recipients[0].state == "queued"
        ]
        return message.id
    finally:
        await relay.stop()


async def _restart(data_dir: Path, mode: str, smarthost: str) -> Relay:
    relay = Relay(make_config(data_dir, delivery={"mode": mode, "smarthost": smarthost}))
    await relay.start()
    await relay.store.queue.resume_domain("example.org")
    return relay


async def test_the_mode_at_acceptance_survives_a_restart_in_the_other_mode(tmp_path, sink):
    data = tmp_path / "data"
    sandboxed = await _accept_only(data, "sandbox")
    live = await _restart(data, "live", sink.address)
    try:
        await wait_for_states(live.store, sandboxed, ["delivered"])
        assert sink.handler.connections == 0  # accepted in sandbox mode: still captured
    finally:
        await live.stop()

    delivered = await _accept_only(data, "live")
    sandbox = await _restart(data, "sandbox", sink.address)
    try:
        await sink.handler.wait_for(1)  # accepted live: really delivered, even by a sandbox-mode instance
        await wait_for_states(sandbox.store, delivered, ["delivered"])
        assert [m.id for m in await sandbox.store.queue.sandbox_messages(None, 10)] == [sandboxed]
    finally:
        await sandbox.stop()


async def test_webhooks_carry_the_sandbox_marker(client_factory):
    got: list[dict] = []
    arrived = asyncio.Event()

    async def hook(request: web.Request) -> web.Response:
        got.append(await request.json())
        arrived.set()
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        c = await client_factory(delivery={"mode": "sandbox"}, webhooks={"allow_private_targets": True})
        status, _ = await c.call(
            "POST", "/v1/webhooks", json={"url": f"http://127.0.0.1:{port}/hook", "events": ["delivered"]}
        )
        assert status == 201
        _, accepted = await c.call("POST", "/v1/messages", json=MESSAGE)
        deadline = time.monotonic() + 15
        while not got:
            assert time.monotonic() < deadline, "no webhook arrived"
            arrived.clear()
            try:
                await asyncio.wait_for(arrived.wait(), 0.5)
            except TimeoutError:
                pass
        assert got[0]["type"] == "delivered" and got[0]["data"]["message_id"] == accepted["id"]
        assert got[0]["data"]["details"]["sandbox"] is True
    finally:
        await runner.cleanup()


# -- dry runs -----------------------------------------------------------------------------------------


async def _queue_snapshot(relay: Relay) -> tuple[int, ...]:
    tables = ("messages", "recipients", "events", "idempotency", "key_usage", "message_bodies")
    return tuple([await _count(relay, f"SELECT count(*) FROM {t}") for t in tables])


async def test_dry_run_checks_everything_and_writes_nothing(client_factory, sink):
    c = await client_factory(delivery={"smarthost": sink.address})
    _, key = await c.call("POST", "/v1/api-keys", json={"scopes": ["send", "read"], "daily_quota": 1})
    await c.relay.store.suppressions.suppress(["gone@example.org"], "complaint")
    before = await _queue_snapshot(c.relay)
    body = {**MESSAGE, "to": ["user@example.org", "gone@example.org"]}
    for _ in range(3):  # the quota is checked, not consumed; the Idempotency-Key is not taken
        status, answer = await c.call(
            "POST", "/v1/messages?dry_run=true", key=key["key"], json=body, headers={"Idempotency-Key": "same"}
        )
        assert status == 200, answer
    assert answer["dry_run"] is True and answer["status"] == "would_queue" and answer["sandbox"] is False
    assert answer["recipients"] == [
        {"email": "user@example.org", "status": "would_queue"},
        {"email": "gone@example.org", "status": "suppressed", "reason": "complaint"},
    ]
    assert "id" not in answer and answer["size"] > 0
    assert await _queue_snapshot(c.relay) == before
    await asyncio.sleep(0.3)
    assert sink.handler.connections == 0

    status, error = await c.call("POST", "/v1/messages?dry_run=true", key=key["key"], json={**MESSAGE, "to": "bad"})
    assert status == 400 and error["error"]["field"] == "to"
    status, error = await c.call(
        "POST", "/v1/messages?dry_run=true", key=key["key"], json={**MESSAGE, "to": ["gone@example.org"]}
    )
    assert status == 422 and error["error"]["code"] == "recipients_suppressed"
    status, error = await c.call("POST", "/v1/messages?dry_run=maybe", key=key["key"], json=MESSAGE)
    assert status == 400 and error["error"]["field"] == "dry_run"
    assert await _queue_snapshot(c.relay) == before

    status, real = await c.call(
        "POST", "/v1/messages?dry_run=false", key=key["key"], json=MESSAGE, headers={"Idempotency-Key": "same"}
    )
    assert status == 202  # the key was not taken by the dry runs, and the quota's one message was left
    status, error = await c.call("POST", "/v1/messages?dry_run=true", key=key["key"], json=MESSAGE)
    assert status == 402 and error["error"]["code"] == "quota_exhausted"  # now the quota is used up
    status, _ = await c.call("POST", "/v1/messages?dry_run=true", json=MESSAGE)  # another key's quota is its own
    assert status == 200


async def test_dry_run_reports_schedule_sandbox_and_refusals(client_factory, tmp_path):
    path, _ = new_key(tmp_path)
    dkim = {"domains": {"example.com": {"selector": "s1", "private_key": str(path)}}}
    c = await client_factory(delivery={"mode": "sandbox"}, domains={"require_verified_domain": True}, dkim=dkim)
    status, error = await c.call("POST", "/v1/messages?dry_run=true", json=MESSAGE)
    assert status == 422 and error["error"]["code"] == "domain_not_verified"
    c.relay.domains.sending.verified.add("example.com")
    later = time.time() + 3600
    status, answer = await c.call("POST", "/v1/messages?dry_run=1", json={**MESSAGE, "send_at": later})
    assert status == 200 and answer["status"] == "would_schedule" and answer["send_at"]
    assert answer["sandbox"] is True and answer["dkim"] is True
    assert answer["recipients"] == [{"email": "user@example.org", "status": "would_schedule"}]
    _, read_only = await c.call("POST", "/v1/api-keys", json={"scopes": ["read"]})
    assert (await c.call("POST", "/v1/messages?dry_run=true", key=read_only["key"], json=MESSAGE))[0] == 403
    assert await _count(c.relay, "SELECT count(*) FROM messages") == 0


# -- configuration, start-up, command line -----------------------------------------------------


def test_delivery_mode_is_checked_and_read_from_the_environment(tmp_path):
    from relay import config as config_mod

    data = config_dict(tmp_path)
    assert config_mod.from_dict(data, environ={}).delivery.mode == "live"
    assert config_mod.from_dict(data, environ={"RELAY_DELIVERY_MODE": "sandbox"}).delivery.mode == "sandbox"
    with pytest.raises(ConfigError, match=r'\[delivery\] mode must be "live" or "sandbox"'):
        config_mod.from_dict(data, environ={"RELAY_DELIVERY_MODE": "test"})


async def test_start_up_says_loudly_what_is_not_delivered_and_what_is_refused(relay_process):
    proc = relay_process(delivery={"mode": "sandbox"}, domains={"require_verified_domain": True})
    await proc.start()
    await proc.terminate()
    log = proc.log()
    assert "WARNING relay: sandbox mode: mail is captured, not delivered; read it with relay sandbox list" in log
    assert "require_verified_domain is on: mail From: a domain that is not a verified sending domain is refused" in log
    assert "verified: none yet" in log and "RELAY_DOMAINS_REQUIRE_VERIFIED_DOMAIN=false" in log


async def test_cli_test_keys_credentials_and_the_sandbox(tmp_path):
    config = write_toml(tmp_path / "relay.toml", config_dict(tmp_path / "data", delivery={"mode": "sandbox"}))
    key = json.loads(run_cli("keys", "create", "--test", "--scope", "send", "--json", config=config).stdout)
    assert key["key"].startswith("rly_test_") and key["test"] is True
    assert " test " in run_cli("keys", "list", config=config).stdout
    cred = json.loads(run_cli("smtp-credentials", "create", "--test", "--json", config=config).stdout)
    assert cred["test"] is True and cred["username"].startswith("relay-test-")
    assert " test " in run_cli("smtp-credentials", "list", config=config).stdout
    empty = run_cli("sandbox", "list", config=config)
    assert empty.returncode == 0 and "no captured messages" in empty.stdout

    relay = Relay(make_config(tmp_path / "data", delivery={"mode": "sandbox"}))
    await relay.start()
    try:
        await send_smtp(
            relay,
            ["you@example.org"],
            b"From: me@example.com\r\nTo: you@example.org\r\nSubject: Look\r\n\r\nfind me\r\n",
        )
        (message,) = await relay.store.queue.sandbox_messages(None, 10)
        await wait_for_states(relay.store, message.id, ["delivered"])
    finally:
        await relay.stop()
    listing = run_cli("sandbox", "list", config=config)
    assert listing.returncode == 0 and message.id in listing.stdout and "delivered" in listing.stdout
    assert "<me@example.com> -> <you@example.org>  Look" in listing.stdout
    as_json = json.loads(run_cli("sandbox", "list", "--json", config=config).stdout)
    assert [m["id"] for m in as_json] == [message.id] and as_json[0]["sandbox"] is True
    shown = run_cli("sandbox", "show", message.id, config=config)
    assert shown.returncode == 0 and "Subject: Look" in shown.stdout and "--- text\nfind me" in shown.stdout
    raw = run_cli("sandbox", "show", message.id, "--raw", config=config)
    assert raw.returncode == 0 and raw.stdout.startswith("Received: ") and raw.stdout.endswith("\n\nfind me\n")
    assert run_cli("sandbox", "show", "nope", config=config).returncode == 1
