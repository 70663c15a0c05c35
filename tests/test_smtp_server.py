"""Relay's own SMTP submission server (relay.submission.server): its machinery, beyond the dialogues of
tests/test_smtp_dialogues.py — steps that wait, input kept meanwhile, timers, sessions, connection loss."""

from __future__ import annotations

import asyncio
import smtplib
from typing import Any

import pytest

from relay.submission import server as server_mod
from relay.submission.server import SubmissionProtocol
from tests.test_smtp_dialogues import EHLO, GREETING, client_tls, expect

MAIL = b"MAIL FROM:<a@example.com>\r\n"


class Gate:
    """Holds the suppression look-up of RCPT until opened."""

    def __init__(self, relay: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        self.opened = asyncio.Event()
        self.waiting = 0
        acceptor = relay.smtp_factories[0].handler.acceptor
        look_up = acceptor.suppressed

        async def held(addresses: Any) -> dict[str, str]:
            self.waiting += 1
            await self.opened.wait()
            return await look_up(addresses)

        monkeypatch.setattr(acceptor, "suppressed", held)


def connections(relay: Any) -> list[SubmissionProtocol]:
    return list(relay.smtp_sessions.open)


async def test_many_connections_each_carry_a_message(relay_factory: Any) -> None:
    relay = await relay_factory(smtp={"trusted_networks": ["127.0.0.1/32"]})
    host, port = relay.smtp_addresses[0]

    def send(n: int) -> dict[str, tuple[int, bytes]]:
        with smtplib.SMTP(host, port) as client:
            client.ehlo("client.test")
            return client.sendmail("a@example.com", [f"b{n}@example.org"], b"Subject: x\r\n\r\nhi\r\n")

    refused = await asyncio.gather(*(asyncio.to_thread(send, n) for n in range(8)))
    assert refused == [{}] * 8
    assert sum((await relay.store.queue.state_counts()).values()) == 8


async def test_input_waits_behind_a_step_and_is_taken_in_order(relay_factory: Any, monkeypatch: Any) -> None:
    relay = await relay_factory()
    gate = Gate(relay, monkeypatch)
    monkeypatch.setattr(server_mod, "PAUSE_AT", 4096)
    reader, writer = await asyncio.open_connection(*relay.smtp_addresses[0])
    await expect(reader, GREETING, "greeting")
    writer.write(b"EHLO client.test\r\n" + MAIL + b"RCPT TO:<b@example.org>\r\n" + b"NOOP\r\n" * 2000)
    await expect(reader, f"{EHLO}\n250 2.1.0 Ok", "before the step")
    for _ in range(100):
        (protocol,) = connections(relay)
        if gate.waiting and protocol._paused:
            break
        await asyncio.sleep(0.02)
    assert gate.waiting == 1 and protocol._paused, "reading pauses while a step waits on a full buffer"
    assert not protocol.transport.is_reading()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(reader.readline(), 0.2)  # nothing answered out of turn
    gate.opened.set()
    await expect(reader, "250 2.1.5 Ok\n" + "250 2.0.0 OK\n" * 2000, "after the step")
    assert not protocol._paused and protocol.transport.is_reading()
    writer.close()


async def test_a_connection_lost_while_a_step_waits_cancels_it(relay_factory: Any, monkeypatch: Any) -> None:
    relay = await relay_factory()
    gate = Gate(relay, monkeypatch)
    reader, writer = await asyncio.open_connection(*relay.smtp_addresses[0])
    await expect(reader, GREETING, "greeting")
    writer.write(b"HELO client.test\r\n" + MAIL + b"RCPT TO:<b@example.org>\r\n")
    await expect(reader, "250 relay.test\n250 2.1.0 Ok", "before the step")
    for _ in range(500):
        if gate.waiting:
            break
        await asyncio.sleep(0.01)
    (protocol,) = connections(relay)
    step = protocol._step
    assert step is not None and relay.smtp_sessions.in_transaction() == 1
    writer.transport.abort()
    for _ in range(100):
        if step.done():
            break
        await asyncio.sleep(0.02)
    assert step.cancelled()
    assert not relay.smtp_sessions.open and not relay.smtp_sessions.counts.by_address


async def test_one_timer_per_connection(relay_factory: Any) -> None:
    relay = await relay_factory()
    reader, writer = await asyncio.open_connection(*relay.smtp_addresses[0])
    await expect(reader, GREETING, "greeting")
    (protocol,) = connections(relay)
    timer = protocol._timer
    writer.write(b"EHLO client.test\r\n" + MAIL + b"NOOP\r\nRSET\r\n")
    await expect(reader, f"{EHLO}\n250 2.1.0 Ok\n250 2.0.0 OK\n250 2.0.0 OK", "commands")
    assert protocol._timer is timer, "commands move the deadline, not the timer"
    writer.close()


async def test_starttls_is_refused_once_the_connection_is_encrypted(relay_factory: Any) -> None:
    relay = await relay_factory()
    reader, writer = await asyncio.open_connection(*relay.smtp_addresses[0])
    await expect(reader, GREETING, "greeting")
    writer.write(b"STARTTLS\r\nNOOP\r\n")  # what follows STARTTLS in plain text is dropped (RFC 3207 §6)
    await expect(reader, "220 Ready to start TLS", "starttls")
    await writer.start_tls(client_tls())
    writer.write(b"STARTTLS\r\n")
    await expect(reader, "554 5.5.1 Error: TLS already active", "again")
    writer.write(b"NOOP\r\n")
    await expect(reader, "250 2.0.0 OK", "noop")
    writer.close()


async def test_a_failed_tls_handshake_closes_the_connection(relay_factory: Any) -> None:
    relay = await relay_factory()
    reader, writer = await asyncio.open_connection(*relay.smtp_addresses[0])
    await expect(reader, GREETING, "greeting")
    writer.write(b"STARTTLS\r\n")
    await expect(reader, "220 Ready to start TLS", "starttls")
    writer.write(b"this is not a TLS client hello\r\n" * 10)
    assert await asyncio.wait_for(reader.read(), 10) == b""
    writer.close()
    for _ in range(100):
        if not relay.smtp_sessions.open:
            break
        await asyncio.sleep(0.02)
    assert not relay.smtp_sessions.open and not relay.smtp_sessions.counts.by_address


async def test_drain_waits_for_a_transaction_then_closes(relay_factory: Any) -> None:
    relay = await relay_factory()
    reader, writer = await asyncio.open_connection(*relay.smtp_addresses[0])
    await expect(reader, GREETING, "greeting")
    writer.write(b"HELO client.test\r\n" + MAIL)
    await expect(reader, "250 relay.test\n250 2.1.0 Ok", "mail")
    assert relay.smtp_sessions.in_transaction() == 1
    drained = asyncio.create_task(relay.smtp_sessions.drain(5.0))
    await asyncio.sleep(0.2)
    assert not drained.done(), "a transaction in progress is given time"
    writer.write(b"RSET\r\n")
    await expect(reader, "250 2.0.0 OK\nCLOSED", "rset, then closed by the drain")
    await asyncio.wait_for(drained, 5)
    writer.close()


async def test_an_exception_in_a_command_is_a_451_without_its_text(relay_factory: Any, monkeypatch: Any) -> None:
    relay = await relay_factory()
    handler = relay.smtp_factories[0].handler

    def broken(*args: Any) -> str:
        raise ValueError("secret internals")

    monkeypatch.setattr(handler, "mail", broken)
    reader, writer = await asyncio.open_connection(*relay.smtp_addresses[0])
    await expect(reader, GREETING, "greeting")
    writer.write(b"HELO client.test\r\n" + MAIL + b"NOOP\r\n")
    await expect(reader, "250 relay.test\n451 4.3.0 Temporary failure, please try again later\n250 2.0.0 OK", "mail")
    writer.close()


@pytest.mark.parametrize("cut", range(1, 6))
async def test_a_body_whose_end_is_split_across_reads_arrives_intact(relay_factory: Any, sink: Any, cut: int) -> None:
    relay = await relay_factory(delivery={"smarthost": sink.address})
    reader, writer = await asyncio.open_connection(*relay.smtp_addresses[0])
    await expect(reader, GREETING, "greeting")
    writer.write(b"HELO client.test\r\n" + MAIL + b"RCPT TO:<b@example.org>\r\nDATA\r\n")
    await expect(reader, "250 relay.test\n250 2.1.0 Ok\n250 2.1.5 Ok\n354 End data with <CR><LF>.<CR><LF>", "data")
    body = b"Subject: split\r\n\r\n..dotted\r\nlast line\r\n"
    stream = body + b".\r\nQUIT\r\n"
    at = len(body) - 2 + cut  # from inside the last line's CRLF to just after the end-of-data line
    writer.write(stream[:at])
    await writer.drain()
    await asyncio.sleep(0.05)
    writer.write(stream[at:])
    await expect(reader, "250 2.0.0 Ok: queued as <ID>\n221 2.0.0 Bye\nCLOSED", "end")
    writer.close()
    (message,) = await sink.handler.wait_for(1)
    assert message.data.endswith(b"\r\n\r\n.dotted\r\nlast line\r\n"), message.data[-60:]


async def test_a_step_that_need_not_wait_takes_no_task(relay_factory: Any, monkeypatch: Any) -> None:
    """SQLite answers RCPT's suppression look-up inline, and MAIL needs nothing: only DATA's queueing waits."""
    relay = await relay_factory()
    tasks: list[object] = []
    run = SubmissionProtocol._run

    async def counted(self: SubmissionProtocol, step: Any) -> None:
        tasks.append(step)
        await run(self, step)

    monkeypatch.setattr(SubmissionProtocol, "_run", counted)
    reader, writer = await asyncio.open_connection(*relay.smtp_addresses[0])
    await expect(reader, GREETING, "greeting")
    writer.write(b"EHLO client.test\r\n" + MAIL + b"RCPT TO:<b@example.org>\r\nRCPT TO:<c@example.org>\r\nDATA\r\n")
    await expect(
        reader, f"{EHLO}\n250 2.1.0 Ok\n250 2.1.5 Ok\n250 2.1.5 Ok\n354 End data with <CR><LF>.<CR><LF>", "data"
    )
    assert tasks == []
    writer.write(b"Subject: x\r\n\r\nhi\r\n.\r\nQUIT\r\n")
    await expect(reader, "250 2.0.0 Ok: queued as <ID>\n221 2.0.0 Bye\nCLOSED", "end")
    writer.close()
    assert len(tasks) == 1


@pytest.mark.parametrize("waits", [False, True])
async def test_a_step_that_fails_is_a_451_and_the_session_goes_on(
    relay_factory: Any, monkeypatch: Any, waits: bool
) -> None:
    relay = await relay_factory()
    handler = relay.smtp_factories[0].handler

    async def failing() -> str:
        if waits:
            await asyncio.sleep(0.01)
        raise RuntimeError("secret internals")

    monkeypatch.setattr(handler, "rcpt", lambda *args: failing())
    reader, writer = await asyncio.open_connection(*relay.smtp_addresses[0])
    await expect(reader, GREETING, "greeting")
    writer.write(b"HELO client.test\r\n" + MAIL + b"RCPT TO:<b@example.org>\r\nNOOP\r\n")
    await expect(
        reader,
        "250 relay.test\n250 2.1.0 Ok\n451 4.3.0 Temporary failure, please try again later\n250 2.0.0 OK",
        "rcpt",
    )
    writer.close()
