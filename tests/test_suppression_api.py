"""Suppressions through the API and at submission (HTTP and SMTP)."""

from __future__ import annotations

import asyncio
import smtplib

from relay.bounces.classify import Classification, Kind
from relay.keys import create_api_key
from relay.store.suppressions import NewBounce
from tests.test_http_api_v1 import MESSAGE, api_factory  # noqa: F401 (a fixture)


async def test_suppressions_crud_allowlist_and_bounces(api_factory):  # noqa: F811
    api = await api_factory()
    _, key = await create_api_key(api.relay.store.keys, api.relay.store.clock, "support", ("suppressions",))
    async with api.request(
        "POST", "/v1/suppressions", key, json={"emails": ["A@Example.org", "b@example.org"], "note": "asked to stop"}
    ) as resp:
        assert resp.status == 201
        assert [s["email"] for s in (await resp.json())["data"]] == ["a@example.org", "b@example.org"]
    async with api.request("GET", "/v1/suppressions?limit=1", key) as resp:
        page = await resp.json()
    assert [s["email"] for s in page["data"]] == ["a@example.org"] and page["next_cursor"] == "a@example.org"
    async with api.request("GET", f"/v1/suppressions?limit=1&cursor={page['next_cursor']}", key) as resp:
        assert [s["email"] for s in (await resp.json())["data"]] == ["b@example.org"]
    async with api.request("GET", "/v1/suppressions/a@EXAMPLE.org", key) as resp:
        body = await resp.json()
        assert body["reason"] == "manual" and body["detail"] == "asked to stop" and body["expires_at"] is None
    async with api.request("DELETE", "/v1/suppressions/a@example.org", key) as resp:
        assert resp.status == 200
    async with api.request("GET", "/v1/suppressions/a@example.org", key) as resp:
        assert resp.status == 404
    async with api.request("POST", "/v1/suppressions", key, json={"emails": ["not an address"]}) as resp:
        assert resp.status == 400 and (await resp.json())["error"]["field"] == "emails"
    async with api.request("POST", "/v1/allowlist", key, json={"entry": "Partner.example"}) as resp:
        assert resp.status == 201 and (await resp.json())["entry"] == "partner.example"
    async with api.request("GET", "/v1/allowlist", key) as resp:
        assert [e["entry"] for e in (await resp.json())["data"]] == ["partner.example"]
    async with api.request("DELETE", "/v1/allowlist/partner.example", key) as resp:
        assert resp.status == 200

    hard = Classification(Kind.HARD, "user_unknown", "5.1.1")
    bounce_id, _ = await api.relay.store.suppressions.record_bounce(
        NewBounce("c@example.org", hard, "dsn", 550, "5.1.1 user unknown", "mx.example.org", None, "the report")
    )
    async with api.request("GET", "/v1/bounces?type=hard", key) as resp:
        (item,) = (await resp.json())["data"]
    assert item["email"] == "c@example.org" and item["type"] == "hard" and "report" not in item
    async with api.request("GET", f"/v1/bounces/{bounce_id}", key) as resp:
        assert (await resp.json())["report"] == "the report"
    async with api.request("GET", "/v1/bounces/999", key) as resp:
        assert resp.status == 404
    async with api.request("GET", "/v1/suppressions?reason=hard_bounce", key) as resp:
        assert [s["email"] for s in (await resp.json())["data"]] == ["c@example.org"]
    _, sender = await create_api_key(api.relay.store.keys, api.relay.store.clock, "app", ("send",))
    async with api.request("GET", "/v1/suppressions", sender) as resp:
        assert resp.status == 403


async def test_http_submission_reports_and_skips_suppressed_recipients(api_factory, sink):  # noqa: F811
    api = await api_factory()
    await api.relay.store.suppressions.suppress(["gone@example.org"])
    payload = {**MESSAGE, "to": ["Gone@example.org", "here@example.org"]}
    async with api.request("POST", "/v1/messages", json=payload) as resp:
        assert resp.status == 202
        body = await resp.json()
    assert body["recipients"] == [
        {"email": "Gone@example.org", "status": "suppressed", "reason": "manual"},
        {"email": "here@example.org", "status": "queued"},
    ]
    await sink.handler.wait_for(1)
    await asyncio.sleep(0.1)
    assert [r.rcpt_tos for r in sink.handler.received] == [["here@example.org"]]
    async with api.request("GET", f"/v1/messages/{body['id']}") as resp:
        detail = await resp.json()
    assert [r["status"] for r in detail["recipients"]] == ["suppressed", "delivered"]
    async with api.request("POST", "/v1/messages", json={**MESSAGE, "to": "gone@example.org"}) as resp:
        assert resp.status == 422
        error = (await resp.json())["error"]
    assert error["code"] == "recipients_suppressed" and error["field"] == "to"


async def test_smtp_submission_refuses_a_suppressed_recipient(api_factory, sink):  # noqa: F811
    api = await api_factory()
    await api.relay.store.suppressions.suppress(["gone@example.org"])
    host, port = api.relay.smtp_addresses[0][:2]

    def submit() -> tuple[int, int]:
        with smtplib.SMTP(host, port, timeout=10) as smtp:
            smtp.ehlo()
            smtp.mail("app@example.com")
            refused = smtp.rcpt("GONE@example.org")[0]
            assert smtp.rcpt("here@example.org")[0] == 250
            code, _ = smtp.data(b"From: app@example.com\r\nSubject: s\r\n\r\nbody\r\n")
            return refused, code

    assert await asyncio.to_thread(submit) == (550, 250)
    await sink.handler.wait_for(1)
    assert [r.rcpt_tos for r in sink.handler.received] == [["here@example.org"]]


async def test_bounce_filters_answer_to_both_documented_names(api_factory):  # noqa: F811
    api = await api_factory()
    _, key = await create_api_key(api.relay.store.keys, api.relay.store.clock, "support", ("suppressions",))
    hard = Classification(Kind.HARD, "user_unknown", "5.1.1")
    soft = Classification(Kind.SOFT, "mailbox_full", "4.2.2")
    for address, c in (("c@example.org", hard), ("d@example.org", soft), ("e@example.org", hard)):
        await api.relay.store.suppressions.record_bounce(
            NewBounce(address, c, "smtp", 550, "x", "mx.example.org", None, None)
        )

    async def emails(query: str) -> list[str]:
        async with api.request("GET", f"/v1/bounces?{query}", key) as resp:
            assert resp.status == 200, await resp.text()
            return sorted(b["email"] for b in (await resp.json())["data"])

    assert await emails("kind=soft") == await emails("type=soft") == ["d@example.org"]
    assert await emails("recipient=e@example.org") == await emails("email=e@example.org") == ["e@example.org"]
    assert await emails("kind=hard&recipient=c@example.org") == ["c@example.org"]
    assert await emails("kind=hard&type=hard") == ["c@example.org", "e@example.org"]
    for query, field in (
        ("kind=soft&type=hard", "kind"),
        ("kind=nonsense", "kind"),
        ("type=nonsense", "type"),
        ("recipient=a@x&email=b@x", "recipient"),
    ):
        async with api.request("GET", f"/v1/bounces?{query}", key) as resp:
            assert resp.status == 400 and (await resp.json())["error"]["field"] == field, query


async def test_the_suppressions_cursor_and_search_take_no_control_character(api_factory):  # noqa: F811
    """The cursor is the address a previous page ended with. A NUL in it answered every suppression on SQLite
    and none on PostgreSQL (where it became U+FFFD, which sorts after every address)."""
    api = await api_factory()
    _, key = await create_api_key(api.relay.store.keys, api.relay.store.clock, "support", ("suppressions",))
    async with api.request("POST", "/v1/suppressions", key, json={"emails": ["a@example.org", "b@example.org"]}) as r:
        assert r.status == 201
    async with api.request("GET", "/v1/suppressions", key, params={"cursor": "a@example.org"}) as resp:
        assert [s["email"] for s in (await resp.json())["data"]] == ["b@example.org"]
    for name, value in (("cursor", "\x00"), ("cursor", "a\x1b@example.org"), ("cursor", "z" * 300), ("search", "\x00")):
        async with api.request("GET", "/v1/suppressions", key, params={name: value}) as resp:
            body = await resp.json()
            assert resp.status == 400 and body["error"]["field"] == name, (name, value, body)
