"""HTTP connection limits that aiohttp's server does not have: per-address caps and read deadlines.

aiohttp closes a connection idle between requests after ``keepalive_timeout``, but a client that
sends its request one byte at a time, or its body at a trickle, holds the connection (and a file
descriptor the SMTP listener needs) for as long as it keeps sending. Here every HTTP connection
goes through a :class:`GuardedProtocol` that

- refuses a connection beyond ``max_connections_per_ip`` from one address, or beyond ``max_connections`` in
  all (503, then closes it; see relay.admission),
- closes a connection whose request headers are not complete ``header_timeout`` after their first
  byte (or after the connection opened) with a 408,

and :meth:`ConnectionGuard.middleware` cuts a request body that has not fully arrived
``body_timeout`` after its headers: the next read of it raises a 408 error, and the connection is
closed once that response is sent.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import random
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import StreamReader, web
from aiohttp.http_exceptions import LineTooLong
from aiohttp.web_protocol import RequestHandler

from relay.admission import ConnectionCounts, Refusal
from relay.api.app import HELD, ApiError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_ids = random.Random()
log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ConnectionLimits:
    header_timeout: float = 10.0  # from the first byte of a request (or the connection) to its blank line
    body_timeout: float = 60.0  # from the end of the headers to the end of the body
    keepalive_timeout: float = 75.0  # an idle connection between requests is closed after this
    max_connections_per_ip: int = 50
    max_connections: int = 1000  # in all, in this process


def canned_response(status: int, reason: str, code: str, message: str, extra: str = "") -> bytes:
    """A complete HTTP/1.1 error response with relay's JSON error body, for a connection aiohttp never sees."""
    request_id = f"req_{_ids.getrandbits(64):016x}"
    body = json.dumps({"error": {"code": code, "message": message, "request_id": request_id}}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nX-Request-Id: {request_id}\r\n{extra}Connection: close\r\n\r\n"
    )
    return head.encode() + body


class JsonErrorsHandler(RequestHandler):
    """aiohttp's request handler, answering a request it could not read (a 4xx: a request line or header
    over its 8190 bytes, a malformed request) with relay's JSON error instead of aiohttp's text, which
    echoed the request line, and logging it in one line without a traceback (the client's doing, not
    relay's). Anything else as aiohttp does it. (aiohttp's Server makes plain RequestHandlers; each
    connection's is given this class, which adds no slots, in GuardedProtocol.connection_made.)"""

    __slots__ = ()

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500:
            return super().handle_error(request, status, exc, message)
        log.info("could not read an HTTP request from %s: %s", request.remote, type(exc).__name__ if exc else status)
        if isinstance(exc, LineTooLong):
            text = "the request line or a header is longer than 8190 bytes"
        else:
            text = "the HTTP request could not be read"
        request_id = f"req_{_ids.getrandbits(64):016x}"
        body = {"error": {"code": "bad_request", "message": text, "request_id": request_id}}
        response = web.json_response(body, status=status, headers={"X-Request-Id": request_id})
        response.force_close()
        return response


def _peer_ip(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    return str(peer[0]) if isinstance(peer, tuple) and peer else ""


class ConnectionGuard:
    """The connections of one process's HTTP listeners: counts per address, and which are in a request."""

    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        self.counts = ConnectionCounts(limits.max_connections_per_ip, limits.max_connections)
        self._by_handler: dict[object, GuardedProtocol] = {}

    def factory(self, make_handler: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        """A protocol factory for ``loop.create_server``: aiohttp's handlers behind the guard."""
        return lambda: GuardedProtocol(self, make_handler)

    def admit(self, ip: str) -> Refusal | None:
        return self.counts.admit(ip)

    def release(self, ip: str) -> None:
        self.counts.release(ip)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Headers are in: stop the header clock, start the body clock; close after a body that timed out."""
        conn = self._by_handler.get(request.protocol)
        if conn is not None:
            conn.request_started()
        expired: list[bool] = []
        timer = None
        if request.body_exists and not request.content.is_eof():
            timer = asyncio.get_running_loop().call_later(self.limits.body_timeout, self._expire, request, expired)
        try:
            response = await handler(request)
        finally:
            if timer is not None:
                timer.cancel()
            if conn is not None:
                conn.request_finished(request.content if request.body_exists else None)
            if HELD in request:
                request[HELD].release()  # the body may go: the message is on disk, or refused
        if expired:  # the rest of the body is not worth waiting for: answer, then close
            response.force_close()
            await response.prepare(request)
            await response.write_eof()
            request.protocol.force_close()
        return response

    def _expire(self, request: web.Request, expired: list[bool]) -> None:
        if not request.content.is_eof():
            expired.append(True)
            seconds = f"{self.limits.body_timeout:g}"
            request.content.set_exception(
                ApiError(408, "request_timeout", f"the request body did not arrive within {seconds} s")
            )

    def _track(self, handler: object, conn: GuardedProtocol) -> None:
        self._by_handler[handler] = conn

    def _untrack(self, handler: object) -> None:
        self._by_handler.pop(handler, None)


REFUSE_WITHIN = 1.0  # seconds a refused connection may take to send its request head (then answered anyway)


class GuardedProtocol(asyncio.Protocol):
    """One HTTP connection: aiohttp's protocol inside, with the per-address cap and the header deadline."""

    def __init__(self, guard: ConnectionGuard, make_handler: Callable[[], asyncio.Protocol]) -> None:
        self._guard = guard
        self._make_handler = make_handler
        self._inner: asyncio.Protocol | None = None
        self._transport: asyncio.Transport | None = None
        self._ip: str | None = None  # set once admitted (and counted)
        self._in_request = False
        self._unread: StreamReader | None = None  # a body the last response left unread (aiohttp drains it)
        self._timer: asyncio.TimerHandle | None = None
        self._refused_head = b""  # a refused connection's request so far: answered once its headers end
        self._refusal: Refusal | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # a stream transport (uvloop's is no subclass)
        ip = _peer_ip(transport)
        self._refusal = self._guard.admit(ip)
        if self._refusal is not None:
            self._arm(self._refuse, min(REFUSE_WITHIN, self._guard.limits.header_timeout))
            return
        self._ip = ip
        self._inner = self._make_handler()
        if type(self._inner) is RequestHandler:
            self._inner.__class__ = JsonErrorsHandler
        self._guard._track(self._inner, self)
        self._inner.connection_made(transport)
        self._arm(self._headers_timed_out)  # the first request's headers are due as well

    def data_received(self, data: bytes) -> None:
        if self._inner is None:
            seen = self._refused_head + data
            self._refused_head = seen[-3:]
            if b"\r\n\r\n" in seen:
                self._refuse()
            return
        self._inner.data_received(data)
        if not self._in_request and self._timer is None and (self._unread is None or self._unread.is_eof()):
            self._arm(self._headers_timed_out)

    def eof_received(self) -> bool | None:
        if self._inner is None:
            return None
        return self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._ip is not None:
            self._guard.release(self._ip)
            self._ip = None
        if self._inner is not None:
            self._guard._untrack(self._inner)
            self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    def request_started(self) -> None:
        self._in_request = True
        self._disarm()

    def request_finished(self, body: StreamReader | None) -> None:
        """The next request's clock starts with its first byte, after what is left of this one's body."""
        self._in_request = False
        self._unread = body

    def _arm(self, callback: Callable[[], None], delay: float | None = None) -> None:
        self._disarm()
        delay = self._guard.limits.header_timeout if delay is None else delay
        self._timer = asyncio.get_running_loop().call_later(delay, callback)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _headers_timed_out(self) -> None:
        self._timer = None
        if self._in_request or self._transport is None or self._transport.is_closing():
            return
        message = f"the request headers did not arrive within {self._guard.limits.header_timeout:g} s"
        self._transport.write(canned_response(408, "Request Timeout", "request_timeout", message))
        self._transport.close()

    def _refuse(self) -> None:
        self._disarm()
        if self._transport is None or self._transport.is_closing():
            return
        limits = self._guard.limits
        if self._refusal is Refusal.TOTAL:
            message = f"the server has {limits.max_connections} connections open; retry shortly"
        else:
            message = f"more than {limits.max_connections_per_ip} connections from this address; close one and retry"
        self._transport.write(
            canned_response(503, "Service Unavailable", "too_many_connections", message, "Retry-After: 1\r\n")
        )
        self._transport.close()


class GuardedSite(web.SockSite):
    """aiohttp's site on a listening socket, its connections behind ``guard``."""

    def __init__(self, runner: web.BaseRunner, sock: socket.socket, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(runner, sock, **kwargs)
        self._guard = guard
        self._listening = sock

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with its runner
        server = self._runner.server
        assert server is not None
        factory = self._guard.factory(server)
        self._server = await asyncio.get_running_loop().create_server(
            factory, sock=self._listening, ssl=self._ssl_context, backlog=self._backlog
        )
