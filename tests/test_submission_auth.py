"""SMTP submission with TLS and AUTH, driven by real clients: smtplib and swaks."""

from __future__ import annotations

import asyncio
import base64
import logging
import shutil
import smtplib
import socket
import ssl
import subprocess
import time

import pytest

from relay.credentials import create_smtp_credential
from tests.conftest import wait_for_states

BODY = b"From: App <app@example.com>\r\nTo: user@example.org\r\nSubject: auth test\r\n\r\nHello over TLS.\r\n"
NOT_TRUSTED = {"trusted_networks": ["192.0.2.0/24"]}  # loopback clients must authenticate


def tls_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # relay's self-signed certificate
    return context


@pytest.fixture
async def smtp_relay(relay_factory, sink):
    async def start(**smtp):
        relay = await relay_factory(smtp={**NOT_TRUSTED, **smtp}, delivery={"smarthost": sink.address})
        cred, password = await create_smtp_credential(
            relay.store.credentials, relay.store.clock, allowed_from=("example.com",), tags=("app",)
        )
        return relay, cred, password

    return start


def send_authenticated(
    port: int,
    username: str,
    password: str,
    *,
    mechanism: str = "PLAIN",
    body: bytes = BODY,
    sender: str = "app@example.com",
    implicit: bool = False,
) -> tuple[int, bytes]:
    if implicit:
        smtp: smtplib.SMTP = smtplib.SMTP_SSL("127.0.0.1", port, timeout=10, context=tls_context())
    else:
        smtp = smtplib.SMTP("127.0.0.1", port, timeout=10)
        smtp.starttls(context=tls_context())
    with smtp:
        smtp.ehlo("client.test")
        smtp.user, smtp.password = username, password
        code, _ = smtp.auth(mechanism, getattr(smtp, f"auth_{mechanism.lower()}"), initial_response_ok=True)
        assert code == 235
        code, text = smtp.mail(sender)
        if code != 250:
            raise smtplib.SMTPSenderRefused(code, text, sender)
        assert smtp.rcpt("user@example.org")[0] == 250
        return smtp.data(body)


def ehlo_features(port: int, starttls: bool) -> dict[str, str]:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
        if starttls:
            smtp.starttls(context=tls_context())
        smtp.ehlo("client.test")
        return dict(smtp.esmtp_features)


def swaks(*args: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("swaks") is None:
        pytest.fail("swaks is not installed: run the README's set-up (make test installs it)")
    return subprocess.run(["swaks", "--timeout", "30", *args], capture_output=True, text=True, timeout=90)


async def test_starttls_then_auth_plain_and_login_deliver(smtp_relay, sink):
    relay, cred, password = await smtp_relay()
    port = relay.smtp_addresses[0][1]
    for mechanism in ("PLAIN", "LOGIN"):
        code, text = await asyncio.to_thread(send_authenticated, port, cred.username, password, mechanism=mechanism)
        assert code == 250, text
    received = await sink.handler.wait_for(2)
    for m in received:
        assert m.data.endswith(BODY)
        assert b"with ESMTPSA id" in m.data
        assert cred.username.encode() not in m.data  # the identity stays out of Received unless configured
    queue_id = text.decode().rsplit(" ", 1)[1]
    await wait_for_states(relay.store, queue_id, ["delivered"])
    assert (await relay.store.queue.message(queue_id)).tags == ["app"]


async def test_a_successful_auth_logs_no_deprecation_warning(smtp_relay, sink, caplog):
    """aiosmtpd's smtp_AUTH sets the deprecated Session.login_data on every success, which logs a warning."""
    relay, cred, password = await smtp_relay(tls_listen=["127.0.0.1:0"])
    caplog.set_level(logging.DEBUG)
    for port, implicit in ((relay.smtp_addresses[0][1], False), (relay.smtps_addresses[0][1], True)):
        for mechanism in ("PLAIN", "LOGIN"):
            code, _ = await asyncio.to_thread(
                send_authenticated, port, cred.username, password, mechanism=mechanism, implicit=implicit
            )
            assert code == 250
    await sink.handler.wait_for(4)
    assert sum("AUTH ok" in r.getMessage() for r in caplog.records) == 4  # the logins were seen by caplog
    assert [r.getMessage() for r in caplog.records if "deprecated" in r.getMessage()] == []
    assert [r for r in caplog.records if r.levelno >= logging.WARNING and r.name == "mail.log"] == []


async def test_ehlo_advertises_extensions_and_auth_only_after_tls(smtp_relay):
    relay, _, _ = await smtp_relay(max_message_size="10MB")
    port = relay.smtp_addresses[0][1]
    before = await asyncio.to_thread(ehlo_features, port, False)
    for extension in ("size", "8bitmime", "smtputf8", "pipelining", "enhancedstatuscodes", "starttls"):
        assert extension in before, before
    assert before["size"] == str(10 * 1024 * 1024)
    assert "auth" not in before
    after = await asyncio.to_thread(ehlo_features, port, True)
    assert set(after["auth"].split()) == {"LOGIN", "PLAIN"} and "starttls" not in after


async def test_implicit_tls_listener(smtp_relay, sink):
    relay, cred, password = await smtp_relay(tls_listen=["127.0.0.1:0"])
    port = relay.smtps_addresses[0][1]
    code, _ = await asyncio.to_thread(send_authenticated, port, cred.username, password, implicit=True)
    assert code == 250
    (m,) = await sink.handler.wait_for(1)
    assert b"with ESMTPSA" in m.data


async def test_auth_before_starttls_is_refused(smtp_relay):
    relay, cred, password = await smtp_relay()
    port = relay.smtp_addresses[0][1]
    result = await asyncio.to_thread(
        swaks,
        "--server",
        f"127.0.0.1:{port}",
        "--auth",
        "PLAIN",
        "--auth-user",
        cred.username,
        "--auth-password",
        password,
        "--from",
        "app@example.com",
        "--to",
        "user@example.org",
    )
    assert result.returncode != 0 and "did not advertise authentication" in result.stderr

    def insist() -> tuple[int, bytes]:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
            smtp.ehlo("client.test")
            token = base64.b64encode(f"\0{cred.username}\0{password}".encode()).decode()
            return smtp.docmd("AUTH", f"PLAIN {token}")

    code, text = await asyncio.to_thread(insist)
    assert code == 538 and text.startswith(b"5.7.11")


async def test_plaintext_auth_from_an_allowed_network(smtp_relay, sink):
    relay, cred, password = await smtp_relay(plaintext_auth_networks=["127.0.0.1/32"])
    port = relay.smtp_addresses[0][1]
    result = await asyncio.to_thread(
        swaks,
        "--server",
        f"127.0.0.1:{port}",
        "--auth",
        "LOGIN",
        "--auth-user",
        cred.username,
        "--auth-password",
        password,
        "--from",
        "app@example.com",
        "--to",
        "user@example.org",
    )
    assert result.returncode == 0, result.stdout
    await sink.handler.wait_for(1)


async def test_wrong_password_then_throttling(smtp_relay):
    relay, cred, password = await smtp_relay(max_auth_failures=3)
    port = relay.smtp_addresses[0][1]
    common = [
        "--server",
        f"127.0.0.1:{port}",
        "-tls",
        "--auth",
        "PLAIN",
        "--auth-user",
        cred.username,
        "--from",
        "app@example.com",
        "--to",
        "user@example.org",
        "--quit-after",
        "AUTH",
    ]
    for _ in range(3):
        result = await asyncio.to_thread(swaks, *common, "--auth-password", "wrong")
        assert "535 5.7.8" in result.stdout, result.stdout
    result = await asyncio.to_thread(swaks, *common, "--auth-password", password)
    assert "454 4.7.0" in result.stdout, result.stdout  # even the right password waits now


async def test_open_relay_attempt_is_refused(smtp_relay):
    relay, _, _ = await smtp_relay()
    port = relay.smtp_addresses[0][1]
    result = await asyncio.to_thread(
        swaks, "--server", f"127.0.0.1:{port}", "--from", "spammer@example.net", "--to", "victim@example.org"
    )
    assert result.returncode != 0
    assert "554 5.7.1 <victim@example.org>: Relay access denied" in result.stdout
    assert all(v == 0 for v in (await relay.store.queue.summary()).by_state.values())


async def test_sender_restrictions_on_mail_from_and_from_header(smtp_relay):
    relay, cred, password = await smtp_relay()
    port = relay.smtp_addresses[0][1]
    with pytest.raises(smtplib.SMTPSenderRefused) as info:
        await asyncio.to_thread(send_authenticated, port, cred.username, password, sender="ceo@other.example")
    assert info.value.smtp_code == 550 and b"5.7.1" in info.value.smtp_error
    forged = BODY.replace(b"From: App <app@example.com>", b"From: CEO <ceo@other.example>")
    code, text = await asyncio.to_thread(send_authenticated, port, cred.username, password, body=forged)
    assert code == 550 and b"5.7.1" in text and b"ceo@other.example" in text
    assert all(v == 0 for v in (await relay.store.queue.summary()).by_state.values())


async def test_relay_headers_become_tags_and_metadata_and_are_removed(smtp_relay, sink):
    relay, cred, password = await smtp_relay()
    port = relay.smtp_addresses[0][1]
    body = b'X-Relay-Tags: welcome, onboarding\r\nX-Relay-Metadata: {"user_id": 42}\r\n' + BODY
    code, text = await asyncio.to_thread(send_authenticated, port, cred.username, password, body=body)
    assert code == 250
    (m,) = await sink.handler.wait_for(1)
    assert b"X-Relay" not in m.data and m.data.endswith(BODY)
    record = await relay.store.queue.message(text.decode().rsplit(" ", 1)[1])
    assert record.tags == ["app", "welcome", "onboarding"] and record.metadata == {"user_id": 42}
    bad = b"X-Relay-Metadata: [1, 2]\r\n" + BODY
    code, text = await asyncio.to_thread(send_authenticated, port, cred.username, password, body=bad)
    assert code == 550 and b"X-Relay-Metadata" in text


async def test_credential_rate_limit(smtp_relay):
    relay, _, _ = await smtp_relay()
    cred, password = await create_smtp_credential(relay.store.credentials, relay.store.clock, rate_limit=2)
    port = relay.smtp_addresses[0][1]
    for _ in range(2):
        assert (await asyncio.to_thread(send_authenticated, port, cred.username, password))[0] == 250
    with pytest.raises(smtplib.SMTPSenderRefused) as info:
        await asyncio.to_thread(send_authenticated, port, cred.username, password)
    assert info.value.smtp_code == 450 and b"4.7.1" in info.value.smtp_error


async def test_revoked_credential_stops_working_at_once(smtp_relay):
    relay, cred, password = await smtp_relay()
    port = relay.smtp_addresses[0][1]
    assert (await asyncio.to_thread(send_authenticated, port, cred.username, password))[0] == 250
    assert await relay.store.credentials.revoke_smtp_credential(cred.id)
    with pytest.raises(smtplib.SMTPAuthenticationError) as info:
        await asyncio.to_thread(send_authenticated, port, cred.username, password)
    assert info.value.smtp_code == 535


async def test_too_many_connections_from_one_address(smtp_relay):
    relay, _, _ = await smtp_relay(max_connections_per_ip=2)
    port = relay.smtp_addresses[0][1]

    def greetings() -> list[bytes]:
        socks = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(3)]
        try:
            return [s.recv(200) for s in socks]
        finally:
            for s in socks:
                s.close()

    lines = await asyncio.to_thread(greetings)
    assert lines[0].startswith(b"220") and lines[1].startswith(b"220")
    assert lines[2].startswith(b"421 4.7.0")


async def test_limits_and_bad_input_with_swaks(smtp_relay):
    relay, _, _ = await smtp_relay(trusted_networks=["127.0.0.1/32"], max_message_size="2KB", max_recipients=2)
    port = relay.smtp_addresses[0][1]
    server = ["--server", f"127.0.0.1:{port}", "--from", "app@example.com"]
    big = await asyncio.to_thread(swaks, *server, "--to", "a@example.org", "--body", ("x" * 70 + "\n") * 70)
    assert "552 5.3.4" in big.stdout and big.returncode != 0
    many = await asyncio.to_thread(swaks, *server, "--to", "a@example.org,b@example.org,c@example.org")
    assert "452 4.5.3" in many.stdout
    syntax = await asyncio.to_thread(swaks, *server, "--to", "no-domain")
    assert "501 5.1.3" in syntax.stdout
    piped = await asyncio.to_thread(swaks, *server, "--to", "a@example.org", "--pipeline")
    assert piped.returncode == 0, piped.stdout

    def garbage() -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.recv(200)
            s.sendall(b"\x00\xff\xfe garbage \x01\r\n" + b"A" * 5000 + b"\r\nDATA\r\n")
            return s.recv(2000)

    replies = await asyncio.to_thread(garbage)
    assert replies.startswith(b"5")
    ok = await asyncio.to_thread(swaks, *server, "--to", "a@example.org")
    assert ok.returncode == 0  # and the server still serves others


async def test_idle_clients_are_disconnected(smtp_relay):
    relay, _, _ = await smtp_relay(idle_timeout="500ms")
    port = relay.smtp_addresses[0][1]

    def idle() -> tuple[bytes, float]:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            started = time.monotonic()
            data = s.recv(200)
            while chunk := s.recv(200):
                data += chunk
            return data, time.monotonic() - started

    data, waited = await asyncio.to_thread(idle)
    assert data.startswith(b"220") and waited < 4  # closed by the server, not by our 5 s timeout


async def test_self_signed_certificate_is_created_once_with_a_private_key(smtp_relay, tmp_path):
    relay, _, _ = await smtp_relay()
    key = relay.config.server.data_dir / "tls" / "smtp.key"
    cert = relay.config.server.data_dir / "tls" / "smtp.crt"
    assert key.stat().st_mode & 0o077 == 0 and cert.exists()


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("552 Error: Too much mail data", "552 5.3.4 Error: Too much mail data"),
        ("503 Error: need MAIL command", "503 5.5.1 Error: need MAIL command"),
        ("250 OK", "250 2.0.0 OK"),
        ("221 Bye", "221 2.0.0 Bye"),
        ("250 2.1.5 Ok", "250 2.1.5 Ok"),
        ("354 End data with <CR><LF>.<CR><LF>", "354 End data with <CR><LF>.<CR><LF>"),
        ("334 VXNlcm5hbWU6", "334 VXNlcm5hbWU6"),
        ("250-PIPELINING", "250-PIPELINING"),
    ],
)
def test_enhanced_codes_are_added_to_aiosmtpd_replies(reply, expected):
    from relay.submission.smtp import with_enhanced_code

    assert with_enhanced_code(reply) == expected


async def test_protocol_errors_carry_enhanced_codes(smtp_relay):
    relay, _, _ = await smtp_relay()
    port = relay.smtp_addresses[0][1]

    def dialog() -> list[tuple[int, bytes]]:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
            smtp.ehlo("client.test")
            return [smtp.docmd("DATA"), smtp.docmd("NOOP"), smtp.docmd("HELP", "EHLO")]

    (data, noop, help_) = await asyncio.to_thread(dialog)
    assert data[0] == 503 and data[1].startswith(b"5.5.1")
    assert noop[0] == 250 and noop[1].startswith(b"2.0.0")
    assert help_[0] == 250 and b"EHLO hostname" in help_[1]
