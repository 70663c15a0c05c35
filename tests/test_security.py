"""Security checks: no open relay on any listener, secrets never logged or shown again, scopes on every route,
and a raw-socket SMTP fuzzer that must not bring the server down."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import smtplib
import ssl

import aiohttp
import pytest

from relay.keys import SCOPES, create_api_key

EXTERNAL = "victim@external.example"


def probe(port: int, implicit_tls: bool = False, starttls: bool = False) -> tuple[int, bytes]:
    """MAIL FROM and RCPT to an outside domain, without AUTH: the RCPT reply."""
    context = ssl._create_unverified_context()
    smtp = (
        smtplib.SMTP_SSL("127.0.0.1", port, timeout=10, context=context)
        if implicit_tls
        else smtplib.SMTP("127.0.0.1", port, timeout=10)
    )
    with smtp:
        smtp.ehlo("probe.example")
        if starttls:
            smtp.starttls(context=context)
            smtp.ehlo("probe.example")
        smtp.mail("spammer@elsewhere.example")
        return smtp.rcpt(EXTERNAL)


async def test_no_listener_relays_for_strangers(relay_factory, sink):
    relay = await relay_factory(
        smtp={"listen": ["127.0.0.1:0"], "tls_listen": ["127.0.0.1:0"], "trusted_networks": ["192.0.2.0/24"]},
        delivery={"smarthost": sink.address},
        inbound={"listen": ["127.0.0.1:0"], "bounce_domains": ["bounces.example.com"]},
    )
    submission, implicit, inbound = (
        relay.smtp_addresses[0][1],
        relay.smtps_addresses[0][1],
        relay.inbound_addresses[0][1],
    )
    replies = [
        await asyncio.to_thread(probe, submission),
        await asyncio.to_thread(probe, submission, starttls=True),
        await asyncio.to_thread(probe, implicit, implicit_tls=True),
        await asyncio.to_thread(probe, inbound),
    ]
    for code, text in replies:
        assert code >= 550 and b"5.7.1" in text, (code, text)
    assert sum((await relay.store.queue.summary()).by_state.values()) == 0


async def api(relay, method, path, key, **kwargs):
    host, port = relay.http_address
    async with aiohttp.ClientSession() as s:
        async with s.request(
            method, f"http://{host}:{port}{path}", headers={"Authorization": f"Bearer {key}"}, **kwargs
        ) as r:
            return r.status, await r.text()


async def test_secrets_are_shown_once_and_never_logged(relay_factory, sink, caplog):
    caplog.set_level(logging.DEBUG)
    relay = await relay_factory(
        smtp={
            "listen": ["127.0.0.1:0"],
            "plaintext_auth_networks": ["127.0.0.1/32"],
            "trusted_networks": ["192.0.2.0/24"],
        },
        delivery={"smarthost": sink.address},
        webhooks={"allow_private_targets": True},
    )
    _, admin = await create_api_key(relay.store.keys, relay.store.clock, "admin", ("admin",))
    status, created = await api(relay, "POST", "/v1/api-keys", admin, json={"name": "app", "scopes": ["send"]})
    key = json.loads(created)["key"]
    status, cred = await api(relay, "POST", "/v1/smtp-credentials", admin, json={})
    cred = json.loads(cred)
    status, hook = await api(relay, "POST", "/v1/webhooks", admin, json={"url": "http://127.0.0.1:9/hook"})
    secret = json.loads(hook)["secret"]
    secrets_ = [admin, key, cred["password"], secret]

    # Use them: the key sends, the SMTP password logs in (and a wrong one fails).
    status, _ = await api(
        relay,
        "POST",
        "/v1/messages",
        key,
        json={"from": "a@example.com", "to": "b@one.example", "subject": "s", "text": "t"},
    )
    assert status == 202

    def login(password: str) -> None:
        with smtplib.SMTP("127.0.0.1", relay.smtp_addresses[0][1], timeout=10) as smtp:
            smtp.login(cred["username"], password)

    await asyncio.to_thread(login, cred["password"])
    with pytest.raises(smtplib.SMTPAuthenticationError):
        await asyncio.to_thread(login, cred["password"] + "x")
    await sink.handler.wait_for(1)

    listings = [
        await api(relay, "GET", path, admin) for path in ("/v1/api-keys", "/v1/smtp-credentials", "/v1/webhooks")
    ]
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for secret_value in secrets_:
        assert secret_value not in logged
        for _, body in listings:
            assert secret_value not in body


async def test_every_route_checks_its_scope(relay_factory):
    relay = await relay_factory()
    keys = {
        scope: (await create_api_key(relay.store.keys, relay.store.clock, scope, (scope,)))[1]
        for scope in SCOPES
        if scope != "admin"
    }
    checked = 0
    for resource in relay._http_runner.app.router.resources():  # type: ignore[union-attr]
        for route in resource:
            scope = getattr(route.handler, "required_scope", None)
            if scope is None or route.method == "HEAD":
                continue
            path = resource.canonical.replace("{id}", "x").replace("{email}", "x@example.com")
            for name in ("{domain}", "{entry}", "{key}", "{version}"):
                path = path.replace(name, "x")
            other = next(s for s in keys if s != scope)
            status, body = await api(relay, route.method, path, keys[other], json={})
            assert status == 403 and "missing_scope" in body, (route.method, path, scope, status, body)
            checked += 1
    assert checked > 50


def _fuzz_session(port: int, rng: random.Random) -> None:
    import socket

    commands = [
        b"EHLO x",
        b"HELO x",
        b"MAIL FROM:<a@b>",
        b"RCPT TO:<c@d>",
        b"DATA",
        b"RSET",
        b"NOOP",
        b"QUIT",
        b"STARTTLS",
        b"AUTH PLAIN",
        b"AUTH LOGIN",
        b"VRFY x",
        b"BDAT 10",
        b".",
        b"\r\n.\r\n",
    ]
    commands += [
        b"MAIL FROM:<" + b"a" * 600 + b">",
        b"\x00\x01\x02",
        b"",
        b"\xff\xfe" * 50,
        b"A" * 5000,
        b"RCPT TO:<\x00@d>",
    ]
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.settimeout(0.3)
        try:
            s.recv(512)
            for _ in range(rng.randint(1, 12)):
                choice = rng.random()
                if choice < 0.1:
                    s.sendall(rng.randbytes(rng.randint(1, 3000)))  # binary garbage, TLS-like or not
                elif choice < 0.15:
                    s.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + rng.randbytes(200))  # a ClientHello
                else:
                    s.sendall(rng.choice(commands) + rng.choice([b"\r\n", b"\n", b"\r", b""]))
                s.recv(4096)
        except OSError:
            pass  # the server may hang up on garbage: that is fine


def _data_fuzz_session(port: int, rng: random.Random) -> bool:
    """A valid envelope, then a DATA phase of random pieces (garbage, long lines, lone dots, bare LFs,
    near-miss terminators), ended properly or cut off. True if the server answered the end of data."""
    import socket

    pieces = [
        b"\r\n",
        b"\n",
        b"\r",
        b".",
        b"..",
        b"\n.\n",
        b"\r\n.\n",
        b"\n.\r\n",
        b"x" * 1200,
        b"\x00",
        b"\r\n.\r",
        b"Subject: fuzz\r\n",
    ]
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s, s.makefile("rb") as f:
        f.readline()
        s.sendall(b"EHLO fuzz.test\r\n")
        while f.readline()[3:4] == b"-":
            pass
        s.sendall(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<fuzz@one.example>\r\nDATA\r\n")
        replies = [f.readline() for _ in range(3)]
        assert [r[:3] for r in replies] == [b"250", b"250", b"354"], replies
        while True:  # a payload whose only end-of-data line is the one sent after it
            payload = [
                rng.choice(pieces) if rng.random() < 0.8 else rng.randbytes(rng.randint(1, 2000))
                for _ in range(rng.randint(1, 40))
            ]
            stream = b"\r\n" + b"".join(payload) + b"\r\n.\r\n"
            if stream.find(b"\r\n.\r\n") == len(stream) - 5:
                break
        for piece in payload:
            s.sendall(piece)
        if rng.random() < 0.3:
            return False  # cut off mid-DATA: nothing may be queued
        s.sendall(b"\r\n.\r\nNOOP\r\n")
        end, noop = f.readline(), f.readline()
        assert end[:1] in (b"2", b"5") and noop.startswith(b"250"), (end, noop)
        return end.startswith(b"250")


async def test_random_data_phases_end_cleanly(relay_factory, sink):
    """Whatever comes between DATA and the end-of-data line, the server answers once, keeps the
    session in step (a pipelined NOOP after it is answered), and queues exactly the accepted ones."""
    relay = await relay_factory(delivery={"smarthost": sink.address})
    port = relay.smtp_addresses[0][1]
    rng = random.Random(99)
    accepted = 0
    for _ in range(60):
        accepted += await asyncio.to_thread(_data_fuzz_session, port, random.Random(rng.random()))
    assert accepted > 10
    await sink.handler.wait_for(accepted)
    await asyncio.sleep(0.3)
    assert len(sink.handler.received) == accepted


async def test_raw_smtp_fuzzing_does_not_bring_the_server_down(relay_factory, sink):
    relay = await relay_factory(
        delivery={"smarthost": sink.address}, smtp={"listen": ["127.0.0.1:0"], "idle_timeout": "2s"}
    )
    port = relay.smtp_addresses[0][1]
    rng = random.Random(1234)
    for _ in range(80):
        await asyncio.to_thread(_fuzz_session, port, random.Random(rng.random()))

    def ok() -> dict:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
            return smtp.sendmail("a@example.com", ["fine@one.example"], b"Subject: after\r\n\r\nstill here\r\n")

    assert await asyncio.to_thread(ok) == {}
    received = await sink.handler.wait_for(1)
    assert any(r.rcpt_tos == ["fine@one.example"] for r in received)
