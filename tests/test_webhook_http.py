"""The HTTP/1.1 client webhooks are posted with, against real servers on loopback that answer as
servers in the field do: kept-alive or not, chunked, close-delimited, interim 100s, bare LFs, folded
fields, too big, too slow, nonsense, or gone while idle."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import ssl

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay.tls import server_context, write_self_signed
from relay.webhook_http import MAX_BODY, MAX_HEAD, Client, HttpError, split_url


async def loopback(host: str, port: int) -> list[str]:
    return ["127.0.0.1"]


@dataclasses.dataclass
class Scripted:
    """A server that reads each request whole and answers it with the next of ``answers`` (bytes written
    in ``pieces``); ``None`` closes the connection instead of answering; a connection past the script is
    closed. Records the requests and counts connections."""

    answers: list[bytes | None]
    pieces: int = 1
    close_after_each: bool = False
    requests: list[bytes] = dataclasses.field(default_factory=list)
    connections: int = 0
    closed: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)  # a connection has ended
    port: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while self.answers:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(next(line for line in head.split(b"\r\n") if line.startswith(b"content-length:"))[15:])
                self.requests.append(head + await reader.readexactly(length))
                answer = self.answers.pop(0)
                if answer is None:
                    break
                step = max(1, len(answer) // self.pieces)
                for start in range(0, len(answer), step):
                    writer.write(answer[start : start + step])
                    await writer.drain()
                    await asyncio.sleep(0)
                if self.close_after_each:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            self.closed.set()


@pytest.fixture
async def scripted():
    servers = []

    async def start(*answers: bytes | None, **options) -> Scripted:
        script = Scripted(list(answers), **options)
        server = await asyncio.start_server(script.handle, "127.0.0.1", 0)
        script.port = server.sockets[0].getsockname()[1]
        servers.append(server)
        return script

    yield start
    for server in servers:
        server.close()


def ok(body: bytes = b"ok", extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n%s\r\n%s" % (len(body), extra, body)


async def post(client: Client, script: Scripted, path: str = "/hook", body: bytes = b'{"a":1}'):
    return await client.post(f"http://127.0.0.1:{script.port}{path}", {"webhook-id": "evt_1"}, body)


async def test_the_request_as_the_server_reads_it(scripted):
    script = await scripted(ok())
    client = Client(loopback, timeout=5)
    response = await client.post(
        f"http://127.0.0.1:{script.port}/in/é vents?k=a b&x=1",
        {"content-type": "application/json", "webhook-id": "evt_7"},
        b'{"type":"delivered"}',
    )
    await client.close()
    assert (response.status, response.body) == (200, b"ok")
    (request,) = script.requests
    head, body = request.split(b"\r\n\r\n")
    assert head.split(b"\r\n") == [
        b"POST /in/%C3%A9%20vents?k=a%20b&x=1 HTTP/1.1",
        f"host: 127.0.0.1:{script.port}".encode(),
        b"content-type: application/json",
        b"webhook-id: evt_7",
        b"content-length: 20",
    ]
    assert body == b'{"type":"delivered"}'


async def test_a_kept_alive_connection_carries_the_next_requests(scripted):
    script = await scripted(
        ok(), ok(b"", b"transfer-encoding: chunked\r\n") + b"0\r\n\r\n", b"HTTP/1.1 204 No\r\n\r\n", ok()
    )
    client = Client(loopback, timeout=5)
    statuses = [(await post(client, script)).status for _ in range(4)]
    await client.close()
    assert statuses == [200, 200, 204, 200]
    assert script.connections == 1


@pytest.mark.parametrize(
    "answer, body",
    [
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", b"ok"),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", b"ok"),
        (b"HTTP/1.1 500 Oops\r\n\r\nbroken until close", b"broken until close"),  # no length: until close
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nzz", b"zz"),  # not chunked last: until close
    ],
    ids=["connection-close", "http-1.0", "close-delimited", "other-coding"],
)
async def test_an_answer_that_ends_the_connection_is_not_reused(scripted, answer, body):
    script = await scripted(answer, ok(), ok(), close_after_each=True)
    client = Client(loopback, timeout=5)
    first = await post(client, script)
    second = await post(client, script)
    await client.close()
    assert first.body == body and second.status == 200
    assert script.connections == 2


async def test_answers_in_sloppy_and_unusual_forms(scripted):
    script = await scripted(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 202 Accepted\r\nContent-Length: 4\r\n\r\nsure",
        b"HTTP/1.1 410 Gone\nContent-Length: 4\nX-Folded: a\n b\n\ngone",  # bare LFs, a folded field
        b"HTTP/1.1 422 No\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nbad\r\n6\r\n input\r\n0\r\nX-T: 1\r\n\r\n",
        b"HTTP/1.1 200\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok",  # no reason, the length twice
        ok(),
    )
    client = Client(loopback, timeout=5)
    answers = [await post(client, script) for _ in range(5)]
    await client.close()
    assert [(a.status, a.body) for a in answers] == [
        (202, b"sure"),
        (410, b"gone"),
        (422, b"bad input"),
        (200, b"ok"),
        (200, b"ok"),
    ]
    assert script.connections == 1, "every one of them left the connection usable"


async def test_only_the_start_of_a_body_is_kept_and_a_huge_one_is_not_read(scripted):
    big = b"x" * (MAX_BODY + 10)
    script = await scripted(ok(b"y" * 1000), ok(big), ok(), close_after_each=False)
    client = Client(loopback, timeout=5)
    first = await client.post(f"http://127.0.0.1:{script.port}/", {}, b"", keep=10)
    second = await client.post(f"http://127.0.0.1:{script.port}/", {}, b"", keep=10)
    await client.close()
    assert (first.body, second.body) == (b"y" * 10, b"x" * 10)


async def test_idle_connections_are_closed_after_the_idle_timeout(scripted):
    first, second = await scripted(ok(), ok()), await scripted(ok(), ok())
    client = Client(loopback, timeout=5, idle_timeout=0.2)
    await post(client, first)
    await asyncio.sleep(0.3)  # real time: the idle timeout is the machine's
    assert not first.closed.is_set()
    await post(client, second)  # closes the first origin's connection, idle too long
    await asyncio.wait_for(first.closed.wait(), 5)
    await post(client, first)  # and so needs a new one
    await client.close()
    assert (first.connections, second.connections) == (2, 1)


async def test_a_connection_the_server_closed_while_idle_is_replaced_once(scripted):
    """A server that closes kept-alive connections without saying so: the request that finds its
    connection gone goes once more on a new one."""
    script = await scripted(ok(), None, ok())
    client = Client(loopback, timeout=5)
    first = await post(client, script)
    second = await post(client, script)  # the server reads it, then closes without answering
    await client.close()
    assert (first.status, second.status) == (200, 200)
    assert script.connections == 2 and len(script.requests) == 3


async def test_a_new_connection_closed_without_an_answer_is_an_error(scripted):
    script = await scripted(None)
    client = Client(loopback, timeout=5)
    with pytest.raises(HttpError, match="closed the connection without answering"):
        await post(client, script)
    await client.close()


@pytest.mark.parametrize(
    "answer, error",
    [
        (b"SSH-2.0-OpenSSH_9.2\r\n\r\n", "not an HTTP/1.x answer"),
        (b"HTTP/1.1 2000 OK\r\n\r\n", "not an HTTP/1.x answer"),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "malformed header field"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok", "not one number"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "closed in the middle of the answer's body"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "malformed chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n", "does not end where"),
        (b"HTTP/1.1 101 Switching Protocols\r\n\r\n", "switched protocols"),
        (b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * MAX_HEAD, "header is over"),
        (b"HTTP/1.1 200 OK\r\nContent-", "closed in the middle of the answer's header"),
    ],
    ids=[
        "not-http",
        "status-4-digits",
        "no-colon",
        "two-lengths",
        "short-body",
        "chunk-size",
        "chunk-end",
        "upgrade",
        "huge-header",
        "cut-header",
    ],
)
async def test_a_broken_answer_is_an_error_not_a_status(scripted, answer, error):
    script = await scripted(answer, close_after_each=True)
    client = Client(loopback, timeout=5)
    with pytest.raises(HttpError, match=error):
        await post(client, script)
    await client.close()


async def test_a_server_that_never_answers_times_out_and_its_connection_is_closed():
    closed = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client closes
        closed.set()
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = Client(loopback, timeout=0.3)
    with pytest.raises(TimeoutError):
        await client.post(f"http://127.0.0.1:{port}/", {}, b"{}")
    await asyncio.wait_for(closed.wait(), 5)
    await client.close()
    server.close()


async def test_nothing_listening_and_a_refused_host():
    listener = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    listener.close()
    await listener.wait_closed()
    client = Client(loopback, timeout=5)
    with pytest.raises(HttpError, match=f"cannot connect to 127.0.0.1 port {port}"):
        await client.post(f"http://127.0.0.1:{port}/", {}, b"")

    class Refused(Exception):
        pass

    async def refuse(host: str, port: int) -> list[str]:
        raise Refused(host)

    with pytest.raises(Refused, match="hooks.example"):
        await Client(refuse, timeout=5).post("https://hooks.example/x", {}, b"")
    await client.close()


async def test_against_aiohttps_server():
    """A real HTTP server: JSON in, status and body out, one connection for several requests."""
    seen: list[tuple[str, str, dict]] = []
    peers: set[int] = set()

    async def handle(request: web.Request) -> web.Response:
        peers.add(request.transport.get_extra_info("peername")[1])  # type: ignore[union-attr]
        seen.append((request.path_qs, request.headers["webhook-id"], await request.json()))
        return web.json_response({"thanks": len(seen)}, status=201 if len(seen) % 2 else 200)

    app = web.Application()
    app.router.add_post("/hooks/relay", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    client = Client(loopback, timeout=5)
    try:
        answers = [
            await client.post(f"http://127.0.0.1:{port}/hooks/relay?n={i}", {"webhook-id": f"evt_{i}"}, b'{"i":%d}' % i)
            for i in range(3)
        ]
    finally:
        await client.close()
        await runner.cleanup()
    assert [(a.status, json.loads(a.body)) for a in answers] == [
        (201, {"thanks": 1}),
        (200, {"thanks": 2}),
        (201, {"thanks": 3}),
    ]
    assert seen == [(f"/hooks/relay?n={i}", f"evt_{i}", {"i": i}) for i in range(3)]
    assert len(peers) == 1


async def test_https_checks_the_certificate_and_the_name(tmp_path):
    cert, key = tmp_path / "hooks.crt", tmp_path / "hooks.key"
    write_self_signed(cert, key, "hooks.test")
    script = Scripted([ok(b"secure"), ok(b"again")])
    server = await asyncio.start_server(script.handle, "127.0.0.1", 0, ssl=server_context(str(cert), str(key)))
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(HttpError, match="TLS with hooks.test: self-signed certificate"):
            await Client(loopback, timeout=5).post(f"https://hooks.test:{port}/", {}, b"")  # the system's CAs
        trusting = Client(loopback, timeout=5, tls=ssl.create_default_context(cafile=str(cert)))
        with pytest.raises(HttpError, match="TLS with other.test: .*mismatch"):
            await trusting.post(f"https://other.test:{port}/", {}, b"")
        answers = [await trusting.post(f"https://hooks.test:{port}/", {}, b"") for _ in range(2)]
        await trusting.close()
    finally:
        server.close()
    assert [a.body for a in answers] == [b"secure", b"again"]
    assert script.connections == 1, "the two requests on one connection (the refused handshakes never got one)"


def test_urls_become_an_origin_and_a_target():
    origin, target = split_url("https://Hooks.Example/a/b?c=d")
    assert (origin.scheme, origin.host, origin.port, target) == ("https", "hooks.example", 443, "/a/b?c=d")
    origin, target = split_url("http://[::1]:8080")
    assert (origin.host, origin.port, target) == ("[::1]", 8080, "/")
    origin, _ = split_url("http://bücher.example/")
    assert origin.host == "xn--bcher-kva.example"
    for bad in ("ftp://x/", "http:///nohost", "http://x:99999/"):
        with pytest.raises(HttpError):
            split_url(bad)


ANSWERS = st.sampled_from(
    [
        (ok(b"fine"), 200, b"fine"),
        (b"HTTP/1.1 503 Busy\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nbusy\r\n0\r\n\r\n", 503, b"busy"),
        (b"HTTP/1.1 100 Continue\n\nHTTP/1.1 201 Created\nContent-Length: 3\n\nnew", 201, b"new"),
    ]
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(answer=ANSWERS, pieces=st.integers(1, 40))
async def test_an_answer_reads_the_same_however_it_is_cut_into_writes(scripted, answer, pieces):
    raw, status, body = answer
    script = await scripted(raw, ok(), pieces=pieces)
    client = Client(loopback, timeout=5)
    first = await post(client, script)
    second = await post(client, script)
    await client.close()
    assert (first.status, first.body, second.status) == (status, body, 200)
    assert script.connections == 1
