"""A receiver relay cannot reach (nothing listens, the connection is refused) defers; it is never a block."""

from __future__ import annotations

import asyncio
import smtplib
import socket
import time

from relay.store.events import EventFilter
from relay.store.suppressions import BounceFilter

RAW = b"From: app@example.com\r\nTo: bob@one.example\r\nSubject: hi\r\n\r\nhello\r\n"


def closed_port() -> int:
    """A loopback port nothing listens on (connecting to it is refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def submit(port: int) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
        smtp.sendmail("app@example.com", ["bob@one.example"], RAW)


async def deferred_events(relay, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events = await relay.store.events.query(EventFilter(types=("deferred",)), 10)
        if events:
            return events
        await asyncio.sleep(0.05)
    raise AssertionError("no deferred event")


async def assert_deferred_as_network_error(relay) -> None:
    await asyncio.to_thread(submit, relay.smtp_addresses[0][1])
    (event,) = await deferred_events(relay)
    assert event.recipient == "bob@one.example" and event.code is None
    assert "Connect call failed" in event.detail or "refused" in event.detail.lower(), event.detail
    assert (event.details["classification"], event.details["reason"]) == ("soft", "network_error"), event.details
    (status,) = await relay.store.queue.message_status(event.message_id)
    assert status.state == "deferred"
    assert (
        await relay.store.suppressions.bounces(BounceFilter(), 10) == []
    )  # nothing to record: nobody refused anything


async def test_a_refused_connection_to_the_smarthost_defers_as_a_network_error(relay_factory):
    """Before: the deferred event said classification "block", reason "policy_rejection"."""
    relay = await relay_factory(delivery={"smarthost": f"127.0.0.1:{closed_port()}"})
    await assert_deferred_as_network_error(relay)


async def test_a_refused_connection_to_the_mx_defers_as_a_network_error(relay_factory, dns_server):
    dns_server.zone["one.example"] = {"MX": ["10 mx.one.example."]}
    dns_server.zone["mx.one.example"] = {"A": ["127.0.0.1"]}
    relay = await relay_factory(
        delivery={"mx_port": closed_port()}, dns={"nameservers": [f"127.0.0.1:{dns_server.port}"], "timeout": "2s"}
    )
    await assert_deferred_as_network_error(relay)
