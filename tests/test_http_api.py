from __future__ import annotations

import email
import email.policy

import aiohttp
import pytest

from relay.keys import create_api_key
from tests.conftest import TEST_STORE, wait_for_states


@pytest.fixture
async def api(relay_factory, sink):
    relay = await relay_factory(delivery={"smarthost": sink.address})
    _, send_key = await create_api_key(relay.store.keys, relay.store.clock, "app", ("send",))
    _, read_key = await create_api_key(relay.store.keys, relay.store.clock, "dashboard", ("read",))
    host, port = relay.http_address
    async with aiohttp.ClientSession(f"http://{host}:{port}") as session:
        yield session, relay, sink, send_key, read_key


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_post_message_is_queued_and_delivered(api):
    session, relay, sink, key, read_key = api
    payload = {
        "from": "Zoë App <app@example.com>",
        "to": ["user@example.org", "Other <other@example.org>"],
        "bcc": "hidden@example.net",
        "subject": "Grüße",
        "text": "plain body\n",
        "html": "<p>html body</p>",
        "unknown_field": "ignored",
    }
    async with session.post("/v1/messages", json=payload, headers=bearer(key)) as resp:
        assert resp.status == 202
        body = await resp.json()
    assert body["status"] == "queued"
    assert body["recipients"] == [
        {"email": "user@example.org", "status": "queued"},
        {"email": "other@example.org", "status": "queued"},
        {"email": "hidden@example.net", "status": "queued"},
    ]
    received = await sink.handler.wait_for(3)
    assert {r for m in received for r in m.rcpt_tos} == {"user@example.org", "other@example.org", "hidden@example.net"}
    msg = email.message_from_bytes(received[0].data, policy=email.policy.default)
    assert received[0].mail_from == "app@example.com"
    assert msg["Subject"] == "Grüße"
    assert "hidden" not in received[0].data.decode()  # bcc is envelope only
    assert msg.get_body(("plain",)).get_content().replace("\r\n", "\n") == "plain body\n"
    assert msg.get_body(("html",)).get_content().strip() == "<p>html body</p>"
    assert msg["Message-ID"].endswith("@relay.test>")
    await wait_for_states(relay.store, body["id"], ["delivered"] * 3)
    async with session.get(f"/v1/messages/{body['id']}", headers=bearer(read_key)) as resp:
        assert resp.status == 200
        status = await resp.json()
    assert [r["status"] for r in status["recipients"]] == ["delivered"] * 3
    assert status["recipients"][0]["last_response"].startswith("250")


@pytest.mark.parametrize(
    ("headers", "data", "status", "code", "field"),
    [
        ({"Content-Type": "application/json"}, b'{"from": ', 400, "invalid_json", None),
        ({"Content-Type": "application/json"}, b"[1, 2]", 400, "invalid_json", None),
        ({"Content-Type": "text/plain"}, b"{}", 415, "unsupported_media_type", None),
        ({"Content-Type": "application/json"}, b'{"to": "a@example.org", "text": "x"}', 400, "missing_field", "from"),
        ({"Content-Type": "application/json"}, b'{"from": "a@example.org", "text": "x"}', 400, "missing_field", "to"),
        (
            {"Content-Type": "application/json"},
            b'{"from": "a@example.org", "to": "b@example.org"}',
            400,
            "missing_field",
            "text",
        ),
        (
            {"Content-Type": "application/json"},
            b'{"from": "not an address", "to": "b@example.org", "text": "x"}',
            400,
            "invalid_field",
            "from",
        ),
        (
            {"Content-Type": "application/json"},
            b'{"from": "a@example.org", "to": [1], "text": "x"}',
            400,
            "invalid_field",
            "to[0]",
        ),
        (
            {"Content-Type": "application/json"},
            b'{"from": "a@example.org", "to": "b@example.org", "subject": "x\\r\\nBcc: c@example.org", "text": "x"}',
            400,
            "invalid_field",
            "subject",
        ),
        (
            {"Content-Type": "application/json"},
            b'{"from": "a@example.org", "to": "b@example.org", "text": 5}',
            400,
            "invalid_field",
            "text",
        ),
    ],
)
async def test_bad_requests_get_json_errors(api, headers, data, status, code, field):
    session, relay, _, key, _ = api
    async with session.post("/v1/messages", data=data, headers={**headers, **bearer(key)}) as resp:
        assert resp.status == status
        body = await resp.json()
    assert body["error"]["code"] == code
    assert body["error"].get("field") == field
    assert body["error"]["message"]
    assert all(v == 0 for v in (await relay.store.queue.summary()).by_state.values())


@pytest.mark.parametrize(
    ("authorization", "status", "code"),
    [
        (None, 401, "unauthorized"),
        ("Bearer", 401, "unauthorized"),
        ("Bearer rly_live_nope", 401, "unauthorized"),
        ("Basic dXNlcjpwYXNz", 401, "unauthorized"),
    ],
)
async def test_missing_or_bad_keys_are_refused(api, authorization, status, code):
    session, *_ = api
    headers = {"Authorization": authorization} if authorization else {}
    async with session.post("/v1/messages", json={}, headers=headers) as resp:
        assert resp.status == status
        assert (await resp.json())["error"]["code"] == code


async def test_a_key_without_the_scope_gets_403_naming_it(api):
    session, _, _, send_key, read_key = api
    payload = {"from": "a@example.com", "to": "b@example.org", "text": "x"}
    async with session.post("/v1/messages", json=payload, headers=bearer(read_key)) as resp:
        assert resp.status == 403
        error = (await resp.json())["error"]
    assert error["code"] == "missing_scope" and "'send'" in error["message"]
    async with session.get("/v1/messages/whatever", headers=bearer(send_key)) as resp:
        assert resp.status == 403


async def test_revoked_key_stops_working(api):
    session, relay, _, _, _ = api
    key, secret = await create_api_key(relay.store.keys, relay.store.clock, "temp", ("send",))
    payload = {"from": "a@example.com", "to": "b@example.org", "text": "x"}
    async with session.post("/v1/messages", json=payload, headers=bearer(secret)) as resp:
        assert resp.status == 202
    assert await relay.store.keys.revoke_api_key(key.id)
    async with session.post("/v1/messages", json=payload, headers=bearer(secret)) as resp:
        assert resp.status == 401


async def test_unknown_routes_and_methods_are_json(api):
    session, *_ = api
    async with session.get("/nope") as resp:
        assert resp.status == 404
        assert (await resp.json())["error"]["code"] == "not_found"
    async with session.put("/v1/messages") as resp:
        assert resp.status == 405
        assert (await resp.json())["error"]["code"] == "method_not_allowed"


async def test_unknown_message_is_404(api):
    session, _, _, _, read_key = api
    async with session.get("/v1/messages/doesnotexist", headers=bearer(read_key)) as resp:
        assert resp.status == 404
        assert (await resp.json())["error"]["code"] == "not_found"


@pytest.mark.skipif(TEST_STORE != "sqlite", reason="dumps the SQLite file (iterdump)")
async def test_keys_are_stored_only_as_digests(api):
    _, relay, _, send_key, _ = api
    import sqlite3

    conn = sqlite3.connect(relay.store.db.path)
    dump = "\n".join(conn.iterdump())
    conn.close()
    assert send_key not in dump


async def test_oversized_body_is_413(relay_factory):
    relay = await relay_factory(
        smtp={"max_message_size": "2KB"}, http={"max_body_size": "8KB"}, delivery={"smarthost": "127.0.0.1:9"}
    )
    _, key = await create_api_key(relay.store.keys, relay.store.clock, "app", ("send",))
    host, port = relay.http_address
    payload = {"from": "a@example.com", "to": "b@example.org", "text": "x" * 3000}
    async with aiohttp.ClientSession() as session:
        async with session.post(f"http://{host}:{port}/v1/messages", json=payload, headers=bearer(key)) as resp:
            assert resp.status == 413
            assert (await resp.json())["error"]["code"] == "message_too_large"
        payload["text"] = "x" * 10000
        async with session.post(f"http://{host}:{port}/v1/messages", json=payload, headers=bearer(key)) as resp:
            assert resp.status == 413
            assert (await resp.json())["error"]["code"] == "payload_too_large"
