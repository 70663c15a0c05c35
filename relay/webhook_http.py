"""The HTTP/1.1 client webhooks are posted with: kept-alive connections, to checked addresses only.

A webhook POST is a small request whose answer matters only for its status (and the start of its
body, shown in the delivery log), so this client does that and no more: no redirects, no cookies, no
compression, no proxies. Every new connection goes to an address the caller's ``resolve`` returned
for it in that same lookup (relay checks there that the address is public: no DNS-rebinding window).
A connection is kept for the next request to the same origin while the answer's framing says where
it ended and the server did not ask to close it; one that the server closed while it was idle is
replaced once, before any byte of the answer.

aiohttp's client did this before at about five times the CPU per request (bench/webhooks.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import cast
from urllib.parse import quote, urlsplit

from relay.errors import RelayError

Resolve = Callable[[str, int], Awaitable[list[str]]]  # (host, port) → the addresses to connect to

MAX_HEAD = 64 * 1024  # status line and header fields of an answer
MAX_BODY = 64 * 1024  # an answer's body is read to its end up to this much, to keep the connection
MAX_LINE = 4096  # a chunk-size line or a trailer field
IDLE_TIMEOUT = 15.0  # a connection unused this long is closed rather than reused
_TARGET_SAFE = "/?:@!$&'()*+,;=%~"  # kept as they are in the request target (RFC 3986 pchar and query)


class HttpError(RelayError):
    """No usable answer: the connection failed or broke, or the answer is not HTTP/1.x."""


@dataclasses.dataclass(frozen=True)
class Response:
    status: int
    body: bytes  # the first ``keep`` bytes of the body


@dataclasses.dataclass(frozen=True)
class Origin:
    scheme: str
    host: str  # as sent in Host: (IDNA, IPv6 in brackets)
    port: int


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection: bytes in a buffer, read by the coroutine that sent a request."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.closed = False
        self.idle_since = 0.0
        self._waiter: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass of asyncio's

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._wake()

    def eof_received(self) -> bool:
        self.closed = True
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def _more(self) -> bool:
        """Wait for more bytes; False once the server has closed its side (and nothing more came)."""
        if self.closed:
            return False
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None
        return True

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    async def line(self, limit: int) -> bytes:
        """Up to and without the next CRLF (a bare LF ends it too)."""
        while (end := self.buffer.find(b"\n")) < 0:
            if len(self.buffer) > limit:
                raise HttpError("a line of the answer is too long")
            if not await self._more():
                raise HttpError("the connection closed in the middle of the answer")
        line = bytes(self.buffer[:end]).removesuffix(b"\r")
        del self.buffer[: end + 1]
        return line

    async def head(self) -> bytes | None:
        """The status line and header fields, without the empty line that ends them; None if the server
        closed the connection before sending any byte."""
        while (end := _end_of_head(self.buffer)) is None:
            if len(self.buffer) > MAX_HEAD:
                raise HttpError(f"the answer's header is over {MAX_HEAD} bytes")
            if not await self._more():
                if not self.buffer:
                    return None
                raise HttpError("the connection closed in the middle of the answer's header")
        cut, skip = end
        head = bytes(self.buffer[:cut])
        del self.buffer[: cut + skip]
        return head

    async def exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            if not await self._more():
                raise HttpError("the connection closed in the middle of the answer's body")
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    async def to_close(self, limit: int) -> bytes:
        """The rest of what the server sends until it closes (at most ``limit`` bytes are waited for)."""
        while len(self.buffer) < limit and await self._more():
            pass
        data = bytes(self.buffer[:limit])
        self.buffer.clear()
        return data


def _end_of_head(buffer: bytearray) -> tuple[int, int] | None:
    """Where the header ends (at its last field's line end) and how long the blank line after it is: CRLF
    CRLF, or bare LFs from a sloppy server."""
    ends = [(at, size) for at, size in ((buffer.find(b"\n\r\n"), 3), (buffer.find(b"\n\n"), 2)) if at >= 0]
    return min(ends) if ends else None


@dataclasses.dataclass(frozen=True)
class _Head:
    version: bytes
    status: int
    fields: dict[bytes, bytes]  # names in lower case; repeated fields joined with ", "


def parse_head(head: bytes) -> _Head:
    lines = head.split(b"\n")
    status_line = lines[0].rstrip(b"\r")
    version, _, rest = status_line.partition(b" ")
    code = rest[:3]
    if (
        version not in (b"HTTP/1.1", b"HTTP/1.0")
        or len(code) != 3
        or not code.isdigit()
        or rest[3:4] not in (b"", b" ")
    ):
        raise HttpError(f"not an HTTP/1.x answer: {status_line[:80]!r}")
    fields: dict[bytes, bytes] = {}
    last: bytes | None = None
    for raw in lines[1:]:
        line = raw.rstrip(b"\r")
        if line[:1] in (b" ", b"\t") and last is not None:  # an obsolete folded continuation line
            fields[last] += b" " + line.strip()
            continue
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip():
            raise HttpError(f"a malformed header field in the answer: {line[:80]!r}")
        last = name.lower()
        value = value.strip()
        fields[last] = fields[last] + b", " + value if last in fields else value
    return _Head(version, int(code), fields)


def _content_length(fields: Mapping[bytes, bytes]) -> int | None:
    value = fields.get(b"content-length")
    if value is None:
        return None
    values = {v.strip() for v in value.split(b",")}
    if len(values) != 1 or not (only := values.pop()).isdigit():
        raise HttpError(f"the answer's Content-Length is not one number: {value[:40]!r}")
    return int(only)


async def _chunked(conn: _Connection, keep: int) -> tuple[bytes, bool]:
    """A chunked body: (its first ``keep`` bytes, whether it was read to its end)."""
    kept = bytearray()
    read = 0
    while True:
        size_text = (await conn.line(MAX_LINE)).split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise HttpError(f"a malformed chunk size in the answer: {size_text[:20]!r}") from None
        if size == 0:
            while await conn.line(MAX_LINE):  # trailer fields, up to the empty line
                pass
            return bytes(kept), True
        read += size
        if read > MAX_BODY:
            return bytes(kept), False
        data = await conn.exactly(size)
        if len(kept) < keep:
            kept += data[: keep - len(kept)]
        if await conn.line(MAX_LINE):
            raise HttpError("a chunk of the answer does not end where its size says")


async def _body(conn: _Connection, head: _Head, keep: int) -> tuple[bytes, bool]:
    """(The first ``keep`` bytes of the body, whether the connection may carry another request.)"""
    wants_close = b"close" in head.fields.get(b"connection", b"").lower() or head.version == b"HTTP/1.0"
    if head.status in (204, 304):
        return b"", not wants_close
    coding = head.fields.get(b"transfer-encoding")
    if coding is not None:
        if coding.lower().rsplit(b",", 1)[-1].strip() != b"chunked":
            return (await conn.to_close(keep)), False
        body, ended = await _chunked(conn, keep)
        return body, ended and not wants_close
    length = _content_length(head.fields)
    if length is None:
        return (await conn.to_close(keep)), False
    if length > MAX_BODY:
        return (await conn.exactly(min(length, keep))), False
    body = await conn.exactly(length)
    return body[:keep], not wants_close


class Client:
    """Kept-alive connections by origin; ``post`` sends one request and reads its answer."""

    def __init__(
        self, resolve: Resolve, timeout: float, idle_timeout: float = IDLE_TIMEOUT, tls: ssl.SSLContext | None = None
    ) -> None:
        self.resolve = resolve
        self.timeout = timeout
        self.idle_timeout = idle_timeout
        self._idle: dict[Origin, list[_Connection]] = {}
        self._urls: dict[str, tuple[Origin, str]] = {}
        self._swept = time.monotonic()
        self._tls = tls  # made at the first https request: the system's CAs, the name checked

    async def post(self, url: str, headers: Mapping[str, str], body: bytes, keep: int = 200) -> Response:
        """POST ``body`` to ``url`` within the client's ``timeout`` seconds (TimeoutError past it); HttpError when
        there is no usable answer. The caller's ``resolve`` may raise for a host it will not call."""
        split = self._urls.get(url)
        if split is None:
            if len(self._urls) >= 1000:  # endpoints are few; URLs that changed go
                self._urls.clear()
            split = self._urls[url] = split_url(url)
        origin, target = split
        request = _request(origin, target, headers, body)
        async with asyncio.timeout(self.timeout):
            for first in (True, False):
                conn, reused = (self._take(origin) if first else None) or (await self._connect(origin), False)
                try:
                    assert conn.transport is not None
                    conn.transport.write(request)
                    head = await conn.head()
                    while head is not None and (parsed := parse_head(head)).status < 200:
                        if parsed.status == 101:
                            raise HttpError("the server switched protocols")
                        head = await conn.head()  # 100 Continue and other interim answers
                    if head is None:
                        if reused:
                            conn.close()
                            continue  # closed while idle: once more, on a new connection
                        raise HttpError("the server closed the connection without answering")
                    answer, reusable = await _body(conn, parsed, keep)
                except BaseException:
                    conn.close()
                    raise
                self._give_back(origin, conn, reusable)
                return Response(parsed.status, answer)
        raise HttpError("the server closed the connection without answering")

    def _take(self, origin: Origin) -> tuple[_Connection, bool] | None:
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if not conn.closed and not conn.buffer and now - conn.idle_since < self.idle_timeout:
                return conn, True
            conn.close()
        return None

    def _give_back(self, origin: Origin, conn: _Connection, reusable: bool) -> None:
        if not reusable or conn.closed or conn.buffer:
            conn.close()
            return
        conn.idle_since = now = time.monotonic()
        self._idle.setdefault(origin, []).append(conn)
        if now - self._swept > self.idle_timeout:  # the connections of origins no longer posted to
            self._swept = now
            for key, idle in list(self._idle.items()):
                for old in [c for c in idle if c.closed or now - c.idle_since >= self.idle_timeout]:
                    idle.remove(old)
                    old.close()
                if not idle:
                    del self._idle[key]

    async def _connect(self, origin: Origin) -> _Connection:
        loop = asyncio.get_running_loop()
        tls = self._tls_context() if origin.scheme == "https" else None
        name = origin.host.strip("[]")
        failures = []
        for address in await self.resolve(name, origin.port):
            try:
                _, conn = await loop.create_connection(
                    _Connection, address, origin.port, ssl=tls, server_hostname=name if tls else None
                )
                return conn
            except ssl.SSLError as exc:  # the certificate: another address of the name would not do better
                detail = getattr(exc, "verify_message", None) or exc.reason or str(exc)
                raise HttpError(f"TLS with {name}: {detail}") from None
            except OSError as exc:
                failures.append(f"{address}: {exc.strerror or exc}")
        raise HttpError(f"cannot connect to {name} port {origin.port} ({'; '.join(failures) or 'no address'})")

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = ssl.create_default_context()  # the system's CAs; the name is checked
        return self._tls

    async def close(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()


def split_url(url: str) -> tuple[Origin, str]:
    """An http(s) URL's origin and request target (percent-encoded where it needs to be)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise HttpError(f"not an http:// or https:// URL: {url[:100]}")
    try:
        host = parts.hostname.encode("idna").decode("ascii") if not parts.hostname.isascii() else parts.hostname
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except (UnicodeError, ValueError) as exc:
        raise HttpError(f"not a usable URL: {exc}") from None
    target = quote(parts.path or "/", safe=_TARGET_SAFE) + (
        "?" + quote(parts.query, safe=_TARGET_SAFE) if parts.query else ""
    )
    return Origin(parts.scheme, f"[{host}]" if ":" in host else host, port), target


def _request(origin: Origin, target: str, headers: Mapping[str, str], body: bytes) -> bytes:
    default_port = 443 if origin.scheme == "https" else 80
    host = origin.host if origin.port == default_port else f"{origin.host}:{origin.port}"
    if any("\r" in value or "\n" in value for value in headers.values()):
        raise HttpError("a header value with a line break")
    fields = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    head = f"POST {target} HTTP/1.1\r\nhost: {host}\r\n{fields}content-length: {len(body)}\r\n\r\n"
    return head.encode("latin-1") + body
