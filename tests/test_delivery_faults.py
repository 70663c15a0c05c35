"""Receivers that misbehave: each attempt is recorded and deferred, and the worker goes on to the next job."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from relay.delivery.client import SmtpClient
from relay.delivery.mx import Router
from tests.test_delivery_shaping import engine_for, queue

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _lines_until(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, stop: bytes) -> None:
    """Answer a plain SMTP dialogue with 250s until the client sends ``stop``."""
    while line := await reader.readline():
        if line.upper().startswith(stop):
            return
        if line.upper().startswith(b"EHLO"):
            writer.write(b"250-bad.test\r\n250 8BITMIME\r\n")
        else:
            writer.write(b"250 ok\r\n")
        await writer.drain()


async def garbage_greeting(reader, writer):
    writer.write(b"\x00\xffwhat is this\r\n")
    await writer.drain()
    await reader.read(1024)
    writer.close()


async def garbage_reply_to_mail(reader, writer):
    writer.write(b"220 bad.test ESMTP\r\n")
    await _lines_until(reader, writer, b"MAIL")
    writer.write(b"hello there, I am not SMTP\r\n")
    await writer.drain()
    await reader.read(1024)
    writer.close()


async def drops_mid_data(reader, writer):
    writer.write(b"220 bad.test ESMTP\r\n")
    await _lines_until(reader, writer, b"DATA")
    writer.write(b"354 go ahead\r\n")
    await writer.drain()
    await reader.read(10)  # the first bytes of the message, then gone
    writer.transport.abort()


async def stalls_after_data(reader, writer):
    writer.write(b"220 bad.test ESMTP\r\n")
    await _lines_until(reader, writer, b"DATA")
    writer.write(b"354 go ahead\r\n")
    await writer.drain()
    await asyncio.sleep(30)  # never answers the end of data


async def broken_tls(reader, writer):
    writer.write(b"220 bad.test ESMTP\r\n")
    while line := await reader.readline():
        if line.upper().startswith(b"EHLO"):
            writer.write(b"250-bad.test\r\n250 STARTTLS\r\n")
        elif line.upper().startswith(b"STARTTLS"):
            writer.write(b"220 ready\r\n")
            await writer.drain()
            writer.write(b"\x16\x03\x01\x00\x05garbage, not a TLS record")  # then hangs up
            await writer.drain()
            writer.close()
            return
        else:
            writer.write(b"250 ok\r\n")
        await writer.drain()


class Scripted:
    """A TCP server on loopback running ``script`` per connection; ``close`` also ends the connections."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.writers: list[asyncio.StreamWriter] = []
        self.tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> Scripted:
        self.server = await asyncio.start_server(self._run, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _run(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        try:
            await self.script(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        self.server.close()
        for writer in self.writers:
            writer.transport.abort()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def serve(script: Script) -> Scripted:
    return await Scripted(script).start()


@pytest.mark.parametrize(
    ("script", "expect"),
    [
        (garbage_greeting, "SMTP"),
        (garbage_reply_to_mail, "SMTP"),
        (drops_mid_data, "connection lost during DATA"),
        (stalls_after_data, "connection lost during DATA"),
    ],
)
async def test_a_misbehaving_receiver_defers_and_the_next_message_goes(store, sink, script, expect):
    bad = await serve(script)
    bad_port = bad.port
    try:
        router = Router(None, 25, None)
        router.routes.update({"bad.example": _route(bad_port), "good.example": _route(sink.port)})
        engine = engine_for(store, router, shaping={"default": {"max_connections": 1}})
        engine.client = SmtpClient("relay.test", connect_timeout=2, command_timeout=1)
        first = await queue(store, "a@bad.example")
        second = await queue(store, "b@bad.example")
        good = await queue(store, "c@good.example")
        await asyncio.wait_for(engine.run_once(), 15)
        for m in (first, second):
            (s,) = await store.queue.message_status(m.id)
            assert s.state == "deferred" and expect in s.last_response, s
            (attempt,) = await store.queue.attempts(m.id, s.address)
            assert attempt.code == s.last_code and attempt.text
        (s,) = await store.queue.message_status(good.id)
        assert s.state == "delivered"
        await engine.stop(1)
    finally:
        await bad.close()


async def test_broken_tls_at_the_receiver_falls_back_to_plain_or_defers(store):
    received: list[bytes] = []

    async def tls_broken_then_plain(reader, writer):
        # First connection: STARTTLS offered but broken. The retry without TLS is answered properly.
        if not received:
            received.append(b"tls")
            await broken_tls(reader, writer)
            return
        writer.write(b"220 bad.test ESMTP\r\n")
        await _lines_until(reader, writer, b"DATA")
        writer.write(b"354 go ahead\r\n")
        await writer.drain()
        data = await reader.readuntil(b"\r\n.\r\n")
        received.append(data)
        writer.write(b"250 2.0.0 queued\r\n")
        await writer.drain()
        await _lines_until(reader, writer, b"QUIT")
        writer.write(b"221 bye\r\n")
        writer.close()

    server = await serve(tls_broken_then_plain)
    port = server.port
    try:
        router = Router(None, 25, None)
        router.routes.update({"opportunistic.example": _route(port), "strict.example": _route(port, "required")})
        engine = engine_for(store, router)
        relaxed = await queue(store, "a@opportunistic.example")
        await asyncio.wait_for(engine.run_once(), 15)
        (s,) = await store.queue.message_status(relaxed.id)
        assert s.state == "delivered" and len(received) == 2  # plain text, on a fresh connection
        (attempt,) = await store.queue.attempts(relaxed.id, s.address)
        assert attempt.tls is None

        received.clear()
        strict = await queue(store, "b@strict.example")
        await asyncio.wait_for(engine.run_once(), 15)
        (s,) = await store.queue.message_status(strict.id)
        assert s.state == "deferred" and s.last_response.startswith("4.7.5"), s
        await engine.stop(1)
    finally:
        await server.close()


def _route(port: int, tls: str | None = None):
    from relay.config import RouteConfig

    return RouteConfig(("127.0.0.1", port), tls=tls)


async def test_an_unexpected_error_in_the_engine_costs_an_attempt_not_a_stuck_queue(store, sink):
    engine = engine_for(store, Router(("127.0.0.1", sink.port), 25, None))

    class Exploding(SmtpClient):
        async def connect(self, *args, **kwargs):
            raise RuntimeError("a bug")

    engine.client = Exploding("relay.test", 2, 2)
    m = await queue(store, "a@one.example")
    await asyncio.wait_for(engine.run_once(), 5)
    (s,) = await store.queue.message_status(m.id)
    assert s.state == "deferred" and "internal error: RuntimeError" in s.last_response
    assert engine.held == 0
    await engine.stop(1)
