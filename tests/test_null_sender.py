"""The null sender (RFC 5321 §4.5.5): DSNs and auto-replies go out with MAIL FROM:<>, never rewritten."""

from __future__ import annotations

import asyncio
import smtplib

import aiohttp
import pytest

from relay.keys import create_api_key
from relay.store.queue import MessageFilter

RAW = b"From: MAILER-DAEMON@example.com\r\nTo: bob@one.example\r\nSubject: Undelivered Mail\r\n\r\nreport\r\n"


def submit_null_sender(port: int) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
        smtp.sendmail("", ["bob@one.example", "carol@one.example"], RAW)


@pytest.mark.parametrize("verp", [False, True])
async def test_null_sender_mail_is_delivered_with_a_null_return_path(relay_factory, sink, verp):
    """Before: every attempt failed with "internal error: ValueError" (the path "<>" reached aiosmtplib's
    quote_address) until the message expired; with VERP it went out as b+...@bounces.example.com."""
    inbound = {"bounce_domains": ["bounces.example.com"], "verp": verp}
    relay = await relay_factory(delivery={"smarthost": sink.address}, inbound=inbound)
    await asyncio.to_thread(submit_null_sender, relay.smtp_addresses[0][1])
    received = await sink.handler.wait_for(2)
    assert [r.mail_from for r in received] == ["<>"]  # one transaction: no per-recipient VERP split
    assert sorted(received[0].rcpt_tos) == ["bob@one.example", "carol@one.example"]
    assert received[0].data.endswith(b"report\r\n")


@pytest.mark.parametrize(("sender", "code"), [("", "missing_field"), ("<>", "invalid_field"), (" ", "invalid_field")])
async def test_http_has_no_null_sender(relay_factory, sender, code):
    """The API builds a message whose From: is also the return path: an empty one is refused, naming
    the field, and nothing is queued (DSNs and auto-replies with MAIL FROM:<> go through SMTP)."""
    relay = await relay_factory()
    _, key = await create_api_key(relay.store.keys, relay.store.clock, "t", ("send",))
    host, port = relay.http_address
    body = {"from": sender, "to": "bob@one.example", "subject": "s", "text": "t"}
    async with aiohttp.ClientSession() as s:
        async with s.post(
            f"http://{host}:{port}/v1/messages", json=body, headers={"Authorization": f"Bearer {key}"}
        ) as r:
            status, error = r.status, await r.json()
    assert status == 400 and (error["error"]["code"], error["error"]["field"]) == (code, "from"), error
    assert await relay.store.queue.messages(MessageFilter(), 10) == []
