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

from relay.keys import SCOPES

EXTERNAL = "victim@external.example"


def probe(port: int, implicit_tls: bool = False, starttls: bool = False) -> tuple[int, bytes]:
    """MAIL FROM and RCPT to an outside domain, without AUTH: the RCPT reply."""
    context = ssl._create_unverified_context()
    smtp = smtplib.SMTP_SSL("127.0.0.1", port, timeout=10, context=context) if implicit_tls else \
        smtplib.SMTP("127.0.0.1", port, timeout=10)  # fmt: skip
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
    assert sum((await relay.store.summary()).by_state.values()) == 0


async def api(relay, method, path, key, **kwargs):
    host, port = relay.http_address
    async with aiohttp.ClientSession() as s:
        async with s.request(method, f"http://{host}:{port}{path}", headers={"Authorization": f"Bearer {key}"},
                             **kwargs) as r:  # fmt: skip
            return r.status, await r.text()


async def test_secrets_are_shown_once_and_never_logged(relay_factory, sink, caplog):
    caplog.set_level(logging.DEBUG)
    relay = await relay_factory(smtp={"listen": ["127.0.0.1:0"], "plaintext_auth_networks": ["127.0.0.1/32"],
                                      "trusted_networks": ["192.0.2.0/24"]},
                                delivery={"smarthost": sink.address},
                                webhooks={"allow_private_targets": True})  # fmt: skip
    _, admin = await relay.store.create_api_key("admin", ("admin",))
    status, created = await api(relay, "POST", "/v1/api-keys", admin, json={"name": "app", "scopes": ["send"]})
    key = json.loads(created)["key"]
    status, cred = await api(relay, "POST", "/v1/smtp-credentials", admin, json={})
    cred = json.loads(cred)
    status, hook = await api(relay, "POST", "/v1/webhooks", admin, json={"url": "http://127.0.0.1:9/hook"})
    secret = json.loads(hook)["secret"]
    secrets_ = [admin, key, cred["password"], secret]

    # Use them: the key sends, the SMTP password logs in (and a wrong one fails).
    status, _ = await api(relay, "POST", "/v1/messages", key, json={"from": "a@example.com", "to": "b@one.example",
                                                                    "subject": "s", "text": "t"})  # fmt: skip
    assert status == 202

    def login(password: str) -> None:
        with smtplib.SMTP("127.0.0.1", relay.smtp_addresses[0][1], timeout=10) as smtp:
            smtp.login(cred["username"], password)

    await asyncio.to_thread(login, cred["password"])
    with pytest.raises(smtplib.SMTPAuthenticationError):
        await asyncio.to_thread(login, cred["password"] + "x")
    await sink.handler.wait_for(1)

    listings = [await api(relay, "GET", path, admin) for path in ("/v1/api-keys", "/v1/smtp-credentials",
                                                                   "/v1/webhooks")]  # fmt: skip
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for secret_value in secrets_:
        assert secret_value not in logged
        for _, body in listings:
            assert secret_value not in body


async def test_every_route_checks_its_scope(relay_factory):
    relay = await relay_factory()
    keys = {scope: (await relay.store.create_api_key(scope, (scope,)))[1] for scope in SCOPES if scope != "admin"}
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

    commands = [b"EHLO x", b"HELO x", b"MAIL FROM:<a@b>", b"RCPT TO:<c@d>", b"DATA", b"RSET", b"NOOP", b"QUIT",
                b"STARTTLS", b"AUTH PLAIN", b"AUTH LOGIN", b"VRFY x", b"BDAT 10", b".", b"\r\n.\r\n"]  # fmt: skip
    commands += [b"MAIL FROM:<" + b"a" * 600 + b">", b"\x00\x01\x02", b"", b"\xff\xfe" * 50, b"A" * 5000,
                 b"RCPT TO:<\x00@d>"]  # fmt: skip
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


async def test_raw_smtp_fuzzing_does_not_bring_the_server_down(relay_factory, sink):
    relay = await relay_factory(delivery={"smarthost": sink.address}, smtp={"listen": ["127.0.0.1:0"],
                                                                           "idle_timeout": "2s"})  # fmt: skip
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
