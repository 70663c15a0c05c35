"""The v1 API contract against the running app: idempotency, limits, keys, listing, errors."""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import uuid

import aiohttp
import pytest

from relay.clock import iso
from relay.keys import create_api_key
from tests.conftest import store_rows, wait_for_states

MESSAGE = {"from": "App <app@example.com>", "to": "user@example.org", "subject": "Hi", "text": "Hello"}


class Api:
    def __init__(self, relay, session: aiohttp.ClientSession, key: str) -> None:
        self.relay = relay
        self.session = session
        self.key = key

    def request(self, method: str, path: str, key: str | None = None, **kwargs):
        headers = kwargs.pop("headers", {})
        if key is not False:
            headers.setdefault("Authorization", f"Bearer {key or self.key}")
        return self.session.request(method, path, headers=headers, **kwargs)

    async def messages_in_store(self) -> int:
        ((count,),) = await store_rows(self.relay.store, "SELECT count(*) FROM messages")
        return int(count)


@pytest.fixture
async def api_factory(relay_factory, sink):
    sessions = []

    async def make(**sections) -> Api:
        sections.setdefault("delivery", {"smarthost": sink.address})
        relay = await relay_factory(**sections)
        _, admin = await create_api_key(relay.store.keys, relay.store.clock, "admin", ("admin",))
        host, port = relay.http_address
        session = aiohttp.ClientSession(f"http://{host}:{port}")
        sessions.append(session)
        return Api(relay, session, admin)

    yield make
    for s in sessions:
        await s.close()


@pytest.fixture
async def api(api_factory) -> Api:
    return await api_factory()


async def test_seed_snippet_with_idempotency_key_sends_exactly_once(api, sink):
    headers = {"Idempotency-Key": str(uuid.uuid4())}
    async with api.request("POST", "/v1/messages", json=MESSAGE, headers=dict(headers)) as resp:
        assert resp.status == 202
        first = await resp.json()
        assert "Idempotent-Replayed" not in resp.headers
    async with api.request("POST", "/v1/messages", json=MESSAGE, headers=dict(headers)) as resp:
        assert resp.status == 202
        assert resp.headers["Idempotent-Replayed"] == "true"
        assert await resp.json() == first
    await sink.handler.wait_for(1)
    await asyncio.sleep(0.2)
    assert len(sink.handler.received) == 1
    assert await api.messages_in_store() == 1
    async with api.request("GET", f"/v1/idempotency/records/{headers['Idempotency-Key']}") as resp:
        record = await resp.json()
    assert record["state"] == "done" and record["status"] == 202 and record["message_id"] == first["id"]


async def test_idempotency_key_reused_with_another_body(api):
    headers = {"Idempotency-Key": "order-1234"}
    async with api.request("POST", "/v1/messages", json=MESSAGE, headers=dict(headers)) as resp:
        assert resp.status == 202
    async with api.request("POST", "/v1/messages", json={**MESSAGE, "subject": "changed"}, headers=headers) as resp:
        assert resp.status == 422
        assert (await resp.json())["error"]["code"] == "idempotency_key_reused"


async def test_twenty_concurrent_retries_queue_one_message(api):
    headers = {"Idempotency-Key": str(uuid.uuid4())}

    async def post() -> tuple[int, dict]:
        async with api.request("POST", "/v1/messages", json=MESSAGE, headers=dict(headers)) as resp:
            return resp.status, await resp.json()

    results = await asyncio.gather(*(post() for _ in range(20)))
    statuses = [s for s, _ in results]
    assert set(statuses) <= {202, 409}, statuses
    ids = {body["id"] for s, body in results if s == 202}
    assert len(ids) == 1
    assert all(body["error"]["code"] == "idempotency_in_progress" for s, body in results if s == 409)
    assert await api.messages_in_store() == 1


async def test_a_failed_request_does_not_hold_its_idempotency_key(api):
    headers = {"Idempotency-Key": "k-1"}
    async with api.request("POST", "/v1/messages", json={**MESSAGE, "to": "bad"}, headers=dict(headers)) as resp:
        assert resp.status == 400
    async with api.request("POST", "/v1/messages", json=MESSAGE, headers=dict(headers)) as resp:
        assert resp.status == 202


async def test_rate_limit_headers_count_down_to_429(api):
    _, key = await create_api_key(
        api.relay.store.keys, api.relay.store.clock, "limited", ("send", "read"), rate_limit=3
    )
    remaining = []
    for _ in range(3):
        async with api.request("GET", "/v1/messages", key=key) as resp:
            assert resp.status == 200
            assert resp.headers["X-RateLimit-Limit"] == "3"
            remaining.append(int(resp.headers["X-RateLimit-Remaining"]))
            reset = int(resp.headers["X-RateLimit-Reset"])
    assert remaining == [2, 1, 0]
    async with api.request("POST", "/v1/messages", key=key, json=MESSAGE) as resp:
        assert resp.status == 429
        assert (await resp.json())["error"]["code"] == "rate_limited"
        retry_after = int(resp.headers["Retry-After"])
        assert 0 < retry_after <= 3600
        assert int(resp.headers["X-RateLimit-Reset"]) == reset
    async with api.request("GET", "/v1/messages") as resp:  # other keys are unaffected
        assert resp.status == 200


async def test_daily_quota_is_402(api):
    _, key = await create_api_key(api.relay.store.keys, api.relay.store.clock, "quota", ("send",), daily_quota=2)
    codes = []
    for _ in range(3):
        async with api.request("POST", "/v1/messages", key=key, json=MESSAGE) as resp:
            codes.append((resp.status, (await resp.json()).get("error", {}).get("code")))
    assert codes == [(202, None), (202, None), (402, "quota_exhausted")]
    assert await api.messages_in_store() == 2


async def test_ip_allowlist(api_factory):
    api = await api_factory(http={"trust_proxy": True})
    _, key = await create_api_key(
        api.relay.store.keys, api.relay.store.clock, "office", ("send",), allowed_ips=("10.0.0.0/8",)
    )
    async with api.request("POST", "/v1/messages", key=key, json=MESSAGE) as resp:
        assert resp.status == 403
        assert (await resp.json())["error"]["code"] == "ip_not_allowed"
    headers = {"X-Forwarded-For": "198.51.100.7, 10.1.2.3"}
    async with api.request("POST", "/v1/messages", key=key, json=MESSAGE, headers=headers) as resp:
        assert resp.status == 202
    # A last hop that is no IP address was not written by a proxy: the peer's address counts (it was taken as
    # the client's, and a long one became a rate counter's key, over PostgreSQL's index row limit).
    for junk in ("10.1.2.3, unknown", "10.1.2.3, " + "x" * 3000, "10.1.2.3, 10.1.2.3 "):
        forwarded = {"X-Forwarded-For": junk}
        async with api.request("POST", "/v1/messages", key=key, json=MESSAGE, headers=forwarded) as resp:
            expected = 202 if junk.endswith(" ") else 403  # white space around a hop is no matter
            assert resp.status == expected, (junk[:30], await resp.text())
            assert len(await resp.text()) < 1000  # the error names the peer, not 3 KB of someone's text
        async with api.request("GET", "/metrics", headers=forwarded) as resp:
            # the peer, loopback, may read metrics; 10.1.2.3 may not. A junk hop answered 500 (ValueError).
            assert resp.status == (403 if junk.endswith(" ") else 200), junk[:30]


async def test_plain_http_from_elsewhere_can_be_refused(api_factory):
    api = await api_factory(http={"trust_proxy": True, "require_tls": True})
    outside = {"X-Forwarded-For": "203.0.113.9"}
    async with api.request("GET", "/v1/messages", headers=dict(outside)) as resp:
        assert resp.status == 403
        assert (await resp.json())["error"]["code"] == "tls_required"
    async with api.request("GET", "/v1/messages", headers={**outside, "X-Forwarded-Proto": "https"}) as resp:
        assert resp.status == 200
    async with api.request("GET", "/v1/messages") as resp:  # loopback
        assert resp.status == 200


async def test_attachments_inline_images_and_custom_headers_reach_the_sink(api, sink):
    pdf, png = b"%PDF-1.4 fake", b"\x89PNG\r\n\x1a\nfake"
    payload = {
        **MESSAGE,
        "html": '<p>Logo: <img src="cid:logo"></p>',
        "headers": {"X-Campaign": "spring"},
        "attachments": [
            {"filename": "invoice.pdf", "content": base64.b64encode(pdf).decode()},
            {"filename": "logo.png", "content": base64.b64encode(png).decode(), "content_id": "logo"},
        ],
    }
    async with api.request("POST", "/v1/messages", json=payload) as resp:
        assert resp.status == 202, await resp.text()
    (received,) = await sink.handler.wait_for(1)
    msg = email.message_from_bytes(received.data, policy=email.policy.default)
    assert msg.get_content_type() == "multipart/mixed"
    assert msg["X-Campaign"] == "spring"
    (attachment,) = list(msg.iter_attachments())
    assert attachment.get_filename() == "invoice.pdf" and attachment.get_content() == pdf
    related = [p for p in msg.walk() if p.get_content_type() == "multipart/related"]
    assert len(related) == 1
    (image,) = [p for p in msg.walk() if p.get_content_type() == "image/png"]
    assert image["Content-ID"] == "<logo>" and image.get_content() == png


@pytest.mark.parametrize(
    ("payload", "status", "code", "field"),
    [
        ({**MESSAGE, "headers": {"From": "x@example.com"}}, 400, "invalid_field", "headers.From"),
        ({**MESSAGE, "headers": {"X-Bad": "a\r\nBcc: v@example.org"}}, 400, "invalid_field", "headers.X-Bad"),
        (
            {**MESSAGE, "attachments": [{"filename": "a.txt", "content": "%%%"}]},
            400,
            "invalid_field",
            "attachments[0].content",
        ),
        ({**MESSAGE, "to": [f"u{i}@example.org" for i in range(51)]}, 400, "too_many_recipients", "to"),
        ({**MESSAGE, "tags": ["ok", 5]}, 400, "invalid_field", "tags"),
        ({**MESSAGE, "metadata": {"nested": {"a": 1}}}, 400, "invalid_field", "metadata.nested"),
        ({**MESSAGE, "send_at": "2099-01-01T00:00:00Z"}, 400, "invalid_field", "send_at"),
        ({**MESSAGE, "send_at": "next tuesday"}, 400, "invalid_field", "send_at"),
        ({**MESSAGE, "to": ["ok@example.org", "broken"]}, 400, "invalid_field", "to[1]"),
        ({**MESSAGE, "to": ["ok@example.org", {"email": "broken"}]}, 400, "invalid_field", "to[1].email"),
        ({**MESSAGE, "to": [{"name": "No Address"}]}, 400, "missing_field", "to[0].email"),
        ({**MESSAGE, "cc": {"email": "a@example.org", "name": 7}}, 400, "invalid_field", "cc.name"),
        (
            {**MESSAGE, "bcc": [{"email": "a@example.org", "name": "A\r\nBcc: x@evil.example"}]},
            400,
            "invalid_field",
            "bcc[0].name",
        ),
        ({**MESSAGE, "reply_to": {"email": "Ann <ann@example.org>"}}, 400, "invalid_field", "reply_to.email"),
        ({**MESSAGE, "from": {"email": ["app@example.com"]}}, 400, "invalid_field", "from.email"),
        ({**MESSAGE, "to": 42}, 400, "invalid_field", "to"),
        # A comma-separated string: each address is read whole, an unquoted name with a comma is refused.
        ({**MESSAGE, "to": "ok@example.org, broken"}, 400, "invalid_field", "to"),
        ({**MESSAGE, "to": "Doe, John <john@example.org>"}, 400, "invalid_field", "to"),
        ({**MESSAGE, "to": "a@example.org b@example.org"}, 400, "invalid_field", "to"),
        ({**MESSAGE, "to": " , "}, 400, "invalid_field", "to"),  # commas and nothing else: no recipient
        ({**MESSAGE, "cc": "Group: a@example.org, b@example.org;"}, 400, "invalid_field", "cc"),
        ({**MESSAGE, "bcc": ", ".join(f"u{i}@example.org" for i in range(51))}, 400, "too_many_recipients", "bcc"),
        ({**MESSAGE, "from": "app@example.com, other@example.com"}, 400, "invalid_field", "from"),
    ],
)
async def test_validation_errors_name_the_field(api, payload, status, code, field):
    async with api.request("POST", "/v1/messages", json=payload) as resp:
        assert resp.status == status
        error = (await resp.json())["error"]
    assert (error["code"], error["field"]) == (code, field)
    assert await api.messages_in_store() == 0


async def test_addresses_as_objects_with_names_reach_the_sink(api, sink):
    payload = {
        **MESSAGE,
        "from": {"email": "app@example.com", "name": "Acme, Inc."},
        "to": [{"email": "ann@example.org", "name": "Ann Ö"}, "Bob <bob@example.org>"],
        "cc": {"email": "carol@example.org"},
        "bcc": [{"email": "dave@example.org", "name": "Dave"}],
        "reply_to": {"email": "help@example.com", "name": "Help"},
    }
    async with api.request("POST", "/v1/messages", json=payload) as resp:
        assert resp.status == 202, await resp.text()
        recipients = [r["email"] for r in (await resp.json())["recipients"]]
    assert recipients == ["ann@example.org", "bob@example.org", "carol@example.org", "dave@example.org"]
    (received,) = await sink.handler.wait_for(4)
    assert received.mail_from == "app@example.com" and sorted(received.rcpt_tos) == sorted(recipients)
    msg = email.message_from_bytes(received.data, policy=email.policy.default)
    assert msg["From"].addresses[0].display_name == "Acme, Inc." and msg["From"].addresses[0].addr_spec == (
        "app@example.com"
    )
    assert [(a.display_name, a.addr_spec) for a in msg["To"].addresses] == [
        ("Ann Ö", "ann@example.org"),
        ("Bob", "bob@example.org"),
    ]
    assert msg["Cc"] == "carol@example.org" and msg["Bcc"] is None
    assert msg["Reply-To"].addresses[0].display_name == "Help"

    batch = {
        "messages": [
            {**MESSAGE, "to": {"email": "eve@example.org", "name": "Eve"}},
            {**MESSAGE, "to": [{"email": "nobody"}]},
        ]
    }
    async with api.request("POST", "/v1/messages/batch", json=batch) as resp:
        result = await resp.json()
    assert resp.status == 202 and result["queued"] == 1
    assert result["results"][1]["error"]["field"] == "messages[1].to[0].email"
    personal = {"message": MESSAGE, "recipients": [{"to": {"email": "fay@example.org", "name": "Fay"}}]}
    async with api.request("POST", "/v1/messages/batch", json=personal) as resp:
        assert resp.status == 202 and (await resp.json())["queued"] == 1


async def test_a_comma_separated_string_of_addresses_is_a_list(api, sink):
    """As Postmark's "To" and Mailgun's "to" take them: a string of addresses separated by commas, names
    with a comma quoted; a trailing comma from joining them is nothing."""
    payload = {
        **MESSAGE,
        "to": '"Doe, John" <john@example.org>, ann@example.org,',
        "cc": "Carol <carol@example.org>,dave@example.org",
        "bcc": "eve@example.org",
        "reply_to": "help@example.com, Sales <sales@example.com>",
    }
    async with api.request("POST", "/v1/messages", json=payload) as resp:
        assert resp.status == 202, await resp.text()
        recipients = [r["email"] for r in (await resp.json())["recipients"]]
    expected = ["john@example.org", "ann@example.org", "carol@example.org", "dave@example.org", "eve@example.org"]
    assert recipients == expected
    (received,) = await sink.handler.wait_for(5)
    assert sorted(received.rcpt_tos) == sorted(expected)
    msg = email.message_from_bytes(received.data, policy=email.policy.default)
    assert [(a.display_name, a.addr_spec) for a in msg["To"].addresses] == [
        ("Doe, John", "john@example.org"),
        ("", "ann@example.org"),
    ]
    assert [a.addr_spec for a in msg["Cc"].addresses] == ["carol@example.org", "dave@example.org"]
    assert [a.addr_spec for a in msg["Reply-To"].addresses] == ["help@example.com", "sales@example.com"]
    assert msg["Bcc"] is None


async def test_an_address_in_to_cc_and_bcc_is_one_recipient(api, sink):
    payload = {
        **MESSAGE,
        "to": "ann@example.org",
        "cc": ["Ann <ann@EXAMPLE.ORG>", "bob@example.org"],
        "bcc": "bob@example.org",
    }
    async with api.request("POST", "/v1/messages", json=payload) as resp:
        assert resp.status == 202, await resp.text()
        recipients = [r["email"] for r in (await resp.json())["recipients"]]
    assert recipients == ["ann@example.org", "bob@example.org"]  # as first written
    (received,) = await sink.handler.wait_for(2)
    assert sorted(received.rcpt_tos) == ["ann@example.org", "bob@example.org"]


async def test_show_list_filter_and_paginate(api):
    ids = []
    for i in range(5):
        payload = {
            **MESSAGE,
            "to": f"u{i}@example.org",
            "tags": ["even" if i % 2 == 0 else "odd"],
            "metadata": {"n": i},
        }
        async with api.request("POST", "/v1/messages", json=payload) as resp:
            ids.append((await resp.json())["id"])
    await wait_for_states(api.relay.store, ids[-1], ["delivered"])
    async with api.request("GET", f"/v1/messages/{ids[2]}") as resp:
        detail = await resp.json()
    assert detail["tags"] == ["even"] and detail["metadata"] == {"n": 2} and detail["subject"] == "Hi"
    assert detail["from"] == "app@example.com" and detail["recipients"][0]["email"] == "u2@example.org"

    seen, cursor = [], None
    while True:
        query = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        async with api.request("GET", "/v1/messages", params=query) as resp:
            page = await resp.json()
        seen += [m["id"] for m in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))
    async with api.request("GET", "/v1/messages", params={"tag": "odd"}) as resp:
        assert [m["id"] for m in (await resp.json())["data"]] == [ids[3], ids[1]]
    async with api.request("GET", "/v1/messages", params={"recipient": "u4@example.org"}) as resp:
        assert [m["id"] for m in (await resp.json())["data"]] == [ids[4]]
    async with api.request("GET", "/v1/messages", params={"status": "bounced"}) as resp:
        assert (await resp.json())["data"] == []
    async with api.request("GET", "/v1/messages", params={"since": "2999-01-01T00:00:00Z"}) as resp:
        assert (await resp.json())["data"] == []
    async with api.request("GET", "/v1/messages", params={"limit": "1000"}) as resp:
        assert resp.status == 400 and (await resp.json())["error"]["field"] == "limit"


async def test_delete_cancels_recipients_not_yet_delivered(api_factory):
    api = await api_factory(delivery={"smarthost": "127.0.0.1:9", "retry_schedule": ["1h"]})
    async with api.request("POST", "/v1/messages", json={**MESSAGE, "to": ["a@example.org", "b@example.org"]}) as r:
        message_id = (await r.json())["id"]
    await wait_for_states(api.relay.store, message_id, ["deferred", "deferred"])
    async with api.request("DELETE", f"/v1/messages/{message_id}") as resp:
        assert resp.status == 200
        body = await resp.json()
    assert sorted(body["cancelled"]) == ["a@example.org", "b@example.org"]
    assert [r["status"] for r in body["recipients"]] == ["cancelled", "cancelled"]
    async with api.request("DELETE", "/v1/messages/nope") as resp:
        assert resp.status == 404


async def test_backpressure_when_the_queue_is_full(api_factory):
    api = await api_factory(server={"max_queue": 1}, delivery={"smarthost": "127.0.0.1:9", "retry_schedule": ["1h"]})
    async with api.request("POST", "/v1/messages", json=MESSAGE) as resp:
        assert resp.status == 202
    await api.relay.capacity.refresh()
    async with api.request("POST", "/v1/messages", json=MESSAGE) as resp:
        assert resp.status == 503
        assert (await resp.json())["error"]["code"] == "service_unavailable"
        assert int(resp.headers["Retry-After"]) > 0


async def test_api_keys_lifecycle_through_the_api(api):
    payload = {"name": "ci", "scopes": ["send"], "allowed_ips": ["127.0.0.1/32"], "daily_quota": 100}
    async with api.request("POST", "/v1/api-keys", json=payload) as resp:
        assert resp.status == 201
        created = await resp.json()
    secret = created["key"]
    assert secret.startswith("rly_live_") and created["allowed_ips"] == ["127.0.0.1/32"]
    async with api.request("POST", "/v1/messages", key=secret, json=MESSAGE) as resp:
        assert resp.status == 202
    async with api.request("GET", "/v1/api-keys", key=secret) as resp:
        assert resp.status == 403 and "'admin'" in (await resp.json())["error"]["message"]
    async with api.request("GET", "/v1/api-keys") as resp:
        listing = await resp.text()
    assert created["id"] in listing and secret not in listing
    async with api.request("DELETE", f"/v1/api-keys/{created['id']}") as resp:
        assert resp.status == 200 and (await resp.json())["revoked_at"] is not None
    async with api.request("POST", "/v1/messages", key=secret, json=MESSAGE) as resp:
        assert resp.status == 401
    async with api.request("DELETE", f"/v1/api-keys/{created['id']}") as resp:
        assert resp.status == 404
    async with api.request("POST", "/v1/api-keys", json={"scopes": ["root"]}) as resp:
        assert resp.status == 400 and (await resp.json())["error"]["field"] == "scopes[0]"


async def test_conventions_request_ids_slashes_allow_healthz_scopes(api):
    async with api.request("GET", "/healthz", key=False) as resp:
        assert resp.status == 200 and (await resp.json()) == {"status": "ok"}
        assert resp.headers["X-Request-Id"].startswith("req_")
    async with api.request("POST", "/v1/messages/", json=MESSAGE) as resp:
        assert resp.status == 202
    async with api.request("PATCH", "/v1/messages") as resp:
        assert resp.status == 405
        assert set(resp.headers["Allow"].split(",")) >= {"GET", "POST"}
        error = (await resp.json())["error"]
    assert error["request_id"] == resp.headers["X-Request-Id"]
    async with api.request("GET", "/v1/scopes") as resp:
        names = [s["name"] for s in (await resp.json())["data"]]
    assert names == ["send", "read", "domains", "suppressions", "templates", "webhooks", "admin"]
    async with api.request("GET", "/v1/scopes", key=False) as resp:
        assert resp.status == 401


async def test_the_api_can_serve_https_itself(relay_factory, tmp_path):
    import ssl

    from relay.tls import write_self_signed

    cert, key = tmp_path / "api.crt", tmp_path / "api.key"
    write_self_signed(cert, key, "relay.test")
    assert key.stat().st_mode & 0o077 == 0
    relay = await relay_factory(
        http={"tls_cert": str(cert), "tls_key": str(key), "require_tls": True}, delivery={"smarthost": "127.0.0.1:9"}
    )
    _, secret = await create_api_key(relay.store.keys, relay.store.clock, "app", ("send",))
    host, port = relay.http_address
    context = ssl.create_default_context(cafile=str(cert))
    context.check_hostname = False
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"https://{host}:{port}/v1/messages",
            json=MESSAGE,
            ssl=context,
            headers={"Authorization": f"Bearer {secret}"},
        ) as resp:
            assert resp.status == 202
        with pytest.raises(aiohttp.ClientError):
            async with session.get(f"http://{host}:{port}/healthz"):
                pass


async def test_idempotency_records_survive_a_restart(tmp_path, sink):
    from relay.app import Relay
    from tests.conftest import make_config

    config = make_config(tmp_path / "data", delivery={"smarthost": sink.address})
    headers = {"Idempotency-Key": "survives-restart"}
    bodies = []
    for _ in range(2):
        relay = Relay(config)
        await relay.start()
        try:
            if not bodies:
                _, secret = await create_api_key(relay.store.keys, relay.store.clock, "app", ("send",))
            host, port = relay.http_address
            async with aiohttp.ClientSession() as session:
                async with session.post(
                    f"http://{host}:{port}/v1/messages",
                    json=MESSAGE,
                    headers={**headers, "Authorization": f"Bearer {secret}"},
                ) as resp:
                    assert resp.status == 202
                    bodies.append((await resp.json(), resp.headers.get("Idempotent-Replayed")))
        finally:
            await relay.stop()
    assert bodies[0][0] == bodies[1][0]
    assert bodies[1][1] == "true"


async def test_expired_idempotency_records_are_pruned(store):
    assert await store.idempotency.claim_idempotency_key("key_1", "k", "h", ttl=60) is None
    assert await store.idempotency.prune() == 0
    store.clock.advance(61)
    assert await store.idempotency.idempotency_record("key_1", "k") is None
    assert await store.idempotency.prune() == 1


async def test_smtp_credentials_through_the_api(api, sink):
    import smtplib
    import ssl

    async with api.request("POST", "/v1/smtp-credentials", json={"allowed_from": ["example.com"]}) as resp:
        assert resp.status == 201
        created = await resp.json()
    password = created["password"]
    async with api.request("GET", "/v1/smtp-credentials") as resp:
        listing = await resp.json()
    assert listing["data"][0]["password"] == "********" and password not in json_dump(listing)

    def send() -> int:
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        with smtplib.SMTP("127.0.0.1", api.relay.smtp_addresses[0][1], timeout=10) as smtp:
            smtp.starttls(context=context)
            smtp.login(created["username"], password)
            refused = smtp.sendmail("app@example.com", ["user@example.org"], b"Subject: credential\r\n\r\nhi\r\n")
            return len(refused)

    assert await asyncio.to_thread(send) == 0
    await sink.handler.wait_for(1)
    async with api.request("DELETE", f"/v1/smtp-credentials/{created['id']}") as resp:
        assert resp.status == 200 and (await resp.json())["revoked_at"] is not None
    async with api.request("POST", "/v1/smtp-credentials", json={"allowed_from": ["nope nope"]}) as resp:
        assert resp.status == 400 and (await resp.json())["error"]["field"] == "allowed_from[0]"


def json_dump(data) -> str:
    import json

    return json.dumps(data)


async def test_backpressure_when_the_disk_is_nearly_full(api_factory):
    api = await api_factory(server={"min_free_disk": "1000000GB"}, delivery={"smarthost": "127.0.0.1:9"})
    async with api.request("POST", "/v1/messages", json=MESSAGE) as resp:
        assert resp.status == 503
        assert "free in the data directory" in (await resp.json())["error"]["message"]
    assert await api.messages_in_store() == 0


async def test_rate_limit_headers_on_a_403_for_a_missing_scope(api):
    _, reader = await create_api_key(api.relay.store.keys, api.relay.store.clock, "reader", ("read",), rate_limit=5)
    async with api.request("POST", "/v1/messages", key=reader, json=MESSAGE) as resp:
        assert resp.status == 403 and (await resp.json())["error"]["code"] == "missing_scope"
        assert resp.headers["X-RateLimit-Limit"] == "5" and resp.headers["X-RateLimit-Remaining"] == "4"
        assert int(resp.headers["X-RateLimit-Reset"]) > 0
    async with api.request("GET", "/v1/messages", key=reader) as resp:
        assert resp.status == 200 and resp.headers["X-RateLimit-Remaining"] == "3"  # the 403 counted


async def test_delete_an_idempotency_record_to_use_the_key_again(api):
    headers = {"Idempotency-Key": "order-77"}
    async with api.request("POST", "/v1/messages", json=MESSAGE, headers=dict(headers)) as resp:
        first = (await resp.json())["id"]
    _, other = await create_api_key(api.relay.store.keys, api.relay.store.clock, "other", ("send",))
    async with api.request("DELETE", "/v1/idempotency/records/order-77", key=other) as resp:
        assert resp.status == 404  # another key's record is not yours
    async with api.request("DELETE", "/v1/idempotency/records/order-77") as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["key"] == "order-77" and body["message_id"] == first and body["deleted"] is True
    async with api.request("GET", "/v1/idempotency/records/order-77") as resp:
        assert resp.status == 404
    async with api.request("DELETE", "/v1/idempotency/records/order-77") as resp:
        assert resp.status == 404 and (await resp.json())["error"]["code"] == "not_found"
    async with api.request("POST", "/v1/messages", json=MESSAGE, headers=dict(headers)) as resp:
        assert resp.status == 202 and "Idempotent-Replayed" not in resp.headers
        assert (await resp.json())["id"] != first
    # A request still running under a key keeps its record: deleting it would let a retry send twice.
    await api.relay.store.idempotency.claim_idempotency_key(await _admin_id(api), "running", "h", 60)
    async with api.request("DELETE", "/v1/idempotency/records/running") as resp:
        assert resp.status == 409 and (await resp.json())["error"]["code"] == "idempotency_in_progress"


async def _admin_id(api) -> str:
    (admin,) = [k for k in await api.relay.store.keys.list_api_keys() if k.name == "admin"]
    return admin.id


async def test_quotas_show_the_calling_keys_usage_and_limits(api):
    key_record, key = await create_api_key(
        api.relay.store.keys, api.relay.store.clock, "q", ("send",), daily_quota=3, monthly_quota=100
    )
    for _ in range(2):
        async with api.request("POST", "/v1/messages", key=key, json=MESSAGE) as resp:
            assert resp.status == 202
    async with api.request("GET", "/v1/quotas", key=key) as resp:
        assert resp.status == 200 and "X-RateLimit-Limit" in resp.headers
        quotas = await resp.json()
    assert quotas["api_key_id"] == key_record.id
    assert {k: quotas["daily"][k] for k in ("limit", "used", "remaining")} == {"limit": 3, "used": 2, "remaining": 1}
    assert {k: quotas["monthly"][k] for k in ("limit", "used", "remaining")} == {
        "limit": 100,
        "used": 2,
        "remaining": 98,
    }
    assert quotas["daily"]["resets_at"].endswith("T00:00:00.000Z") and quotas["monthly"]["resets_at"].endswith(
        "-01T00:00:00.000Z"
    )
    async with api.request("GET", "/v1/quotas") as resp:  # the admin key has no quota: nothing is counted
        unlimited = await resp.json()
    assert unlimited["daily"]["limit"] is None and unlimited["daily"]["used"] is None
    async with api.request("GET", "/v1/quotas", key=False) as resp:
        assert resp.status == 401


async def test_event_details_give_times_in_iso_8601(api, sink):
    send_at = iso(api.relay.clock.now() + 3600)
    async with api.request("POST", "/v1/messages", json={**MESSAGE, "send_at": send_at}) as resp:
        later = await resp.json()
    assert later["send_at"] == send_at
    async with api.request("POST", "/v1/messages", json={**MESSAGE, "to": "tempfail@example.org"}) as resp:
        now = await resp.json()
    await wait_for_states(api.relay.store, now["id"], ["deferred"])
    async with api.request("GET", f"/v1/messages/{later['id']}/events") as resp:
        (queued,) = (await resp.json())["data"]
    assert queued["details"]["send_at"] == send_at
    async with api.request("GET", f"/v1/events?type=deferred&message_id={now['id']}") as resp:
        (deferred,) = (await resp.json())["data"]
    next_at = deferred["details"]["next_attempt_at"]
    assert isinstance(next_at, str) and next_at.endswith("Z")
    async with api.request("GET", f"/v1/messages/{now['id']}") as resp:
        assert (await resp.json())["recipients"][0]["next_attempt_at"] == next_at


async def test_odd_numbers_in_paths_and_queries_are_refused_never_a_500(api_factory):
    """Cursors, limits and ids past what the database holds, negative, in other scripts' digits, or not
    numbers: each an answer (a 4xx, or a page when the value reads as one), never a 500. An events
    cursor past 2**63 overflowed the database driver into a 500."""
    api = await api_factory(webhooks={"allow_private_targets": True})
    async with api.request("POST", "/v1/webhooks", json={"url": "http://127.0.0.1:9/hook"}) as resp:
        assert resp.status == 201, await resp.text()
        hook = (await resp.json())["id"]
    async with api.request("POST", "/v1/templates", json={"name": "t", "subject": "s", "text": "x"}) as resp:
        assert resp.status == 201, await resp.text()
        template = (await resp.json())["id"]
    big = "9" * 30
    odd = [big, "-" + big, "-1", "\u0663", "\u00b2", "1e5", "0x10", "evt_" + big, "%00"]
    paths = [
        *("/v1/events?cursor={}", "/v1/events?limit={}", "/v1/messages?cursor={}", "/v1/messages?limit={}"),
        *("/v1/bounces?cursor={}", "/v1/bounces?limit={}", "/v1/bounces/{}", "/v1/suppressions?limit={}"),
        *(f"/v1/webhooks/{hook}/deliveries?cursor={{}}", "/v1/webhooks/{}", "/v1/webhooks/{}/deliveries"),
        *(f"/v1/templates/{template}/versions/{{}}", "/v1/templates/{}/versions", "/v1/messages/{}/events"),
        *("/v1/api-keys/{}", "/v1/domains/{}", "/v1/smtp-credentials/{}", "/v1/scheduled-messages/{}"),
        *("/v1/sandbox/messages/{}", "/v1/stats?days={}", "/v1/stats?hours={}", "/v1/stats/bounces?days={}"),
    ]
    failed = []
    for path in paths:
        for value in odd:
            async with api.request("GET", path.format(value)) as resp:
                if resp.status >= 500:
                    failed.append((path.format(value), resp.status))
    assert not failed, failed


async def test_a_message_listing_cursor_is_a_message_id(api_factory):
    """?cursor= of GET /v1/messages and /v1/scheduled-messages is a previous page's next_cursor. Anything
    else was compared with ids as it came: with a NUL, SQLite answered an empty page and PostgreSQL every
    message (its NUL made U+FFFD, which sorts after every id)."""
    api = await api_factory()
    ids = []
    for n in range(3):
        async with api.request("POST", "/v1/messages", json={**MESSAGE, "subject": f"m{n}"}) as resp:
            assert resp.status == 202, await resp.text()
            ids.append((await resp.json())["id"])
    async with api.request("GET", "/v1/messages", params={"cursor": ids[2]}) as resp:
        assert [m["id"] for m in (await resp.json())["data"]] == [ids[1], ids[0]]
    for listing in ("/v1/messages", "/v1/scheduled-messages"):
        for odd in ("\x00", "z" * 5000, ids[2].upper(), ids[2] + "0", "01ABC"):
            async with api.request("GET", listing, params={"cursor": odd}) as resp:
                body = await resp.json()
                assert resp.status == 400 and body["error"]["field"] == "cursor", (listing, odd, body)
                assert body["error"]["message"] == "'cursor' must be the next_cursor of a previous page"


async def _raw_post(port: int, head: bytes, body: bytes) -> bytes:
    """A POST /v1/messages written by hand (headers aiohttp's client would not send), and its status."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        length = str(len(body)).encode()
        writer.write(b"POST /v1/messages HTTP/1.1\r\nHost: relay\r\n" + head + b"Content-Length: " + length)
        writer.write(b"\r\nConnection: close\r\n\r\n" + body)
        status_line = await asyncio.wait_for(reader.readline(), 10)
        return status_line.split(b" ", 2)[1]
    finally:
        writer.close()


async def test_odd_request_headers_and_bodies_are_refused_never_a_500(api):
    """Each of these is the client's fault and gets a 4xx. Two answered 500: a body that is not in the
    Content-Encoding it names (gzip), and a string with half a surrogate pair ("\\ud800"), which
    json reads and UTF-8 cannot write."""
    _, port = api.relay.http_address
    key = b"Authorization: Bearer " + api.key.encode() + b"\r\n"
    json_type = b"Content-Type: application/json\r\n"
    good = b'{"from":"a@example.com","to":"b@example.org","subject":"s","text":"t"}'
    cases = [
        (b"Authorization: Bearer \xff\xfe\r\n" + json_type, good),
        (b"Authorization: Bearer " + b"k" * 5000 + b"\r\n" + json_type, good),
        (b"Authorization: Basic \xc2\xb2\r\n" + json_type, good),
        (key + json_type + b"Idempotency-Key: \xff\xfe\x01\r\n", good),
        (key + json_type + b"Idempotency-Key: " + b"x" * 1000 + b"\r\n", good),
        (key + b"Content-Type: text/plain\r\n", good),
        (key + json_type + b"Content-Encoding: gzip\r\n", good),
        (key + json_type + b"Content-Encoding: br\r\n", good),
        (key + json_type, good.replace(b'"t"}', b'"\\ud800"}')),
        (key + json_type, good.replace(b'"t"}', b'"t","tags":["\\udfff"]}')),
        (key + json_type, good.replace(b"}", b',"x":NaN}')),
        (key + json_type, b"\xff\xfe{"),
        (key + json_type, b"[" * 100_000),
    ]
    statuses = [(head[-60:], body[-30:], await _raw_post(port, head, body)) for head, body in cases]
    assert all(status.startswith(b"4") for _, _, status in statuses), [s for s in statuses if s[2][:1] != b"4"]
    assert await _raw_post(port, key + json_type, good) == b"202"  # and the server still takes a good one
    charset = b"Content-Type: application/json; charset=\xff\r\n"  # JSON is UTF-8 whatever it says (RFC 8259)
    assert await _raw_post(port, key + charset, good) == b"202"


async def test_a_webhook_url_whose_host_is_no_host_name_is_a_400(api):
    """A label over 63 characters, or empty (an ideographic full stop is a dot to IDNA): Python's IDNA
    codec refuses it before any lookup, and that UnicodeError answered 500. No DNS is asked here."""
    for host in ("x" * 64 + ".example", "a\u3002\u3002example"):
        async with api.request("POST", "/v1/webhooks", json={"url": f"https://{host}/hook"}) as resp:
            body = await resp.json()
            assert resp.status == 400 and body["error"]["field"] == "url", body
            assert "not a host name" in body["error"]["message"]
