"""Real DSNs: a private Postfix instance relays our mail, meets a refusal, and bounces to our return path.

relay --(smarthost)--> Postfix --> sink (550 for permfail*), and Postfix's
bounce goes to the VERP return path, routed back to relay's inbound listener.
"""

from __future__ import annotations

import asyncio
import smtplib
import time

import pytest

from relay.store.suppressions import BounceFilter
from tests.postfix import PostfixInstance, free_port

BODY = (
    "From: app@example.com\r\nTo: permfail@example.net\r\nSubject: hi\r\nMessage-ID: <pf-1@example.com>\r\n\r\nhi\r\n"
)


@pytest.fixture
async def chain(tmp_path, relay_factory, sink):
    inbound_port = free_port()
    postfix = PostfixInstance({"example.net": sink.address, "bounces.example.com": f"127.0.0.1:{inbound_port}"})
    await asyncio.to_thread(postfix.start)
    try:
        relay = await relay_factory(
            delivery={"smarthost": f"127.0.0.1:{postfix.port}"},
            inbound={"listen": [f"127.0.0.1:{inbound_port}"], "bounce_domains": ["bounces.example.com"]},
        )
        yield relay, postfix
    finally:
        await asyncio.to_thread(postfix.stop)


def submit(port: int) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
        smtp.sendmail("app@example.com", ["permfail@example.net", "ok@example.net"], BODY)


async def test_a_postfix_dsn_comes_back_and_suppresses(chain, sink):
    relay, postfix = chain
    await asyncio.to_thread(submit, relay.smtp_addresses[0][1])
    deadline = time.monotonic() + 30
    while await relay.store.suppressions.suppression("permfail@example.net") is None:
        assert time.monotonic() < deadline, f"no bounce recorded; postfix log:\n{postfix.log()}"
        await asyncio.sleep(0.1)

    (bounce,) = await relay.store.suppressions.bounces(BounceFilter(), 10)
    assert (bounce.recipient, bounce.kind, bounce.reason, bounce.status, bounce.source) == (
        "permfail@example.net",
        "hard",
        "user_unknown",
        "5.1.1",
        "dsn",
    )
    assert "550 5.1.1" in bounce.diagnostic
    report = (await relay.store.suppressions.bounce(bounce.id)).report
    assert "X-Postfix-Queue-ID" in report and "Reporting-MTA: dns; mx.postfix.test" in report
    states = {s.address: s.state for s in await relay.store.queue.message_status(bounce.message_id)}
    assert states == {"permfail@example.net": "bounced", "ok@example.net": "delivered"}
    assert [r.rcpt_tos for r in sink.handler.received] == [["ok@example.net"]]
    assert "status=bounced" in postfix.log()
