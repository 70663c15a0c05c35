"""relay.listening: the main process takes only the connections its acceptor processes leave waiting."""

from __future__ import annotations

import asyncio
import logging
import select
import socket
import threading
from typing import cast

from relay.clock import VirtualClock
from relay.listening import (
    BUSY_HOLD,
    OVERFLOW_DELAY,
    SATURATED_DELAY,
    AcceptorLoad,
    BuiltOnFirstUse,
    OverflowServer,
)


class Greeting(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        writer = cast(asyncio.WriteTransport, transport)  # uvloop's transports are not asyncio's classes
        writer.write(b"220 overflow\r\n")
        writer.close()


def listening_socket() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    return sock


def greeting(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.settimeout(5)
        return conn.recv(100)


class Acceptor(threading.Thread):
    """Another taker on the same socket, quick to take each connection (as an idle acceptor process is)."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(daemon=True)
        self.sock, self.taken, self.done = sock, 0, threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            if not select.select([self.sock], [], [], 0.01)[0]:
                continue
            try:
                conn, _ = self.sock.accept()
            except BlockingIOError:  # the overflow server took it
                continue
            self.taken += 1  # before the greeting: a client that has it may count on it
            conn.sendall(b"220 acceptor\r\n")
            conn.close()


async def test_a_connection_nobody_else_takes_is_served_after_the_delay(caplog):
    sock = listening_socket()
    port = sock.getsockname()[1]
    server = OverflowServer(sock, Greeting, delay=0.05)
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await asyncio.to_thread(greeting, port) == b"220 overflow\r\n"
        assert loop.time() - started >= 0.048 and server.taken == 1  # uvloop's clock: whole milliseconds
    finally:
        with caplog.at_level(logging.INFO, logger="relay.listening"):
            server.close()
    assert f"connections on 127.0.0.1:{port} the main process took, its acceptors busy: 1" in caplog.text


async def test_connections_an_acceptor_takes_in_time_are_left_to_it():
    sock = listening_socket()
    port = sock.getsockname()[1]
    server = OverflowServer(sock, Greeting, delay=0.5)
    acceptor = Acceptor(sock)
    acceptor.start()
    try:
        replies = [await asyncio.to_thread(greeting, port) for _ in range(10)]
        assert replies == [b"220 acceptor\r\n"] * 10
        assert acceptor.taken == 10 and server.taken == 0
        acceptor.done.set()
        await asyncio.to_thread(acceptor.join, 5)
        assert await asyncio.to_thread(greeting, port) == b"220 overflow\r\n"  # the acceptor gone: taken here
    finally:
        acceptor.done.set()
        server.close()


async def test_after_close_nothing_is_taken_and_the_socket_is_closed():
    sock = listening_socket()
    port = sock.getsockname()[1]
    server = OverflowServer(sock, Greeting, delay=0.01)
    server.close()
    server.close()  # twice is fine
    assert sock.fileno() == -1
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        pass
    else:
        raise AssertionError("the port still takes connections")
    await asyncio.sleep(0.05)
    assert server.taken == 0


def greeting_or_close(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.settimeout(5)
        try:
            return conn.recv(100)
        except ConnectionResetError:
            return b""


async def test_a_protocol_built_on_first_use_is_built_once_for_the_connections_taken_meanwhile():
    builds = 0
    release = asyncio.Event()

    async def build() -> type[Greeting]:
        nonlocal builds
        builds += 1
        await release.wait()  # the second connection is taken while the first build runs
        return Greeting

    sock = listening_socket()
    port = sock.getsockname()[1]
    server = OverflowServer(sock, BuiltOnFirstUse(build), delay=0.01)
    try:
        replies = [asyncio.create_task(asyncio.to_thread(greeting, port)) for _ in range(2)]
        for _ in range(500):  # both taken, and the build begun: the second waits for it too
            if server.taken == 2 and builds == 1:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        assert server.taken == 2 and builds == 1
        release.set()
        assert await asyncio.gather(*replies) == [b"220 overflow\r\n"] * 2
        assert await asyncio.to_thread(greeting, port) == b"220 overflow\r\n"
        assert builds == 1
    finally:
        release.set()
        server.close()


async def test_a_build_that_fails_closes_that_connection_and_is_tried_again_for_the_next(caplog):
    attempts = 0

    async def build() -> type[Greeting]:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise RuntimeError("no application today")
        return Greeting

    sock = listening_socket()
    port = sock.getsockname()[1]
    server = OverflowServer(sock, BuiltOnFirstUse(build), delay=0.01)
    try:
        with caplog.at_level(logging.ERROR, logger="relay.listening"):
            assert await asyncio.to_thread(greeting_or_close, port) == b""
        assert "could not build what serves a connection the main process took" in caplog.text
        assert "no application today" in caplog.text
        assert await asyncio.to_thread(greeting, port) == b"220 overflow\r\n"
        assert attempts == 2
    finally:
        server.close()


def test_a_saturated_acceptor_has_its_connections_taken_sooner_while_its_report_holds():
    clock = VirtualClock()
    load = AcceptorLoad(clock.monotonic)
    assert load.delay() == OVERFLOW_DELAY
    load.report_saturated()
    assert load.delay() == SATURATED_DELAY < OVERFLOW_DELAY
    clock.advance(BUSY_HOLD - 0.01)
    assert load.delay() == SATURATED_DELAY
    load.report_saturated()  # a new report holds from now
    clock.advance(BUSY_HOLD - 0.01)
    assert load.delay() == SATURATED_DELAY
    clock.advance(0.02)
    assert load.delay() == OVERFLOW_DELAY


async def test_the_delay_is_asked_for_each_connection():
    delays = [0.3, 0.0]
    sock = listening_socket()
    port = sock.getsockname()[1]
    server = OverflowServer(sock, Greeting, delay=lambda: delays.pop(0))
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await asyncio.to_thread(greeting, port) == b"220 overflow\r\n"
        assert loop.time() - started >= 0.298  # whole milliseconds
        started = loop.time()
        assert await asyncio.to_thread(greeting, port) == b"220 overflow\r\n"
        assert loop.time() - started < 0.3 and server.taken == 2 and delays == []
    finally:
        server.close()
