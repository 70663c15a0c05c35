"""A real MTA as relay's SMTP client: a private Postfix that relays through relay with SMTP credentials, as
a machine whose own MTA uses relay as its smarthost does."""

from __future__ import annotations

import asyncio
import smtplib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from relay.credentials import create_smtp_credential
from tests.postfix import PostfixInstance

MESSAGE = b"From: app@example.com\r\nTo: user@example.org\r\nSubject: through postfix\r\n\r\nhello\r\n"


@pytest.fixture(params=["starttls", "plain"])
async def postfix_via_relay(
    request: Any, relay_factory: Any, sink: Any
) -> AsyncIterator[tuple[Any, PostfixInstance, bool]]:
    """Postfix sends example.org to relay, authenticated, and, as Exim and Sendmail always do once
    authenticated, with AUTH=<> on MAIL FROM (RFC 4954 §5). "starttls": as in production, AUTH only
    after STARTTLS (relay's self-signed certificate, which Postfix's "encrypt" level does not check);
    "plain": AUTH PLAIN without TLS, which relay allows loopback here."""
    tls = request.param == "starttls"
    relay = await relay_factory(
        smtp={"trusted_networks": [], "plaintext_auth_networks": [] if tls else ["127.0.0.1/32"]},
        delivery={"smarthost": sink.address},
    )
    credential, password = await create_smtp_credential(relay.store.credentials, relay.store.clock)
    host, port = relay.smtp_addresses[0]
    postfix = PostfixInstance(
        {"example.org": f"{host}:{port}"},
        extra={
            "smtp_sasl_auth_enable": "yes",
            "smtp_sasl_password_maps": f"inline:{{ [{host}]:{port}={credential.username}:{password} }}",
            "smtp_sasl_security_options": "noanonymous",
            "smtp_send_dummy_mail_auth": "yes",
            "smtp_tls_security_level": "encrypt" if tls else "none",
            "smtp_tls_loglevel": "1",
        },
    )
    await asyncio.to_thread(postfix.start)
    try:
        yield relay, postfix, tls
    finally:
        await asyncio.to_thread(postfix.stop)


def submit(port: int) -> None:
    with smtplib.SMTP("127.0.0.1", port) as client:
        client.sendmail("app@example.com", ["user@example.org"], MESSAGE)


async def test_postfix_authenticated_with_auth_on_mail_from_gets_its_mail_through(postfix_via_relay, sink):
    """MAIL FROM:<...> AUTH=<> got 555 'parameters not recognized', so every message bounced back."""
    relay, postfix, tls = postfix_via_relay
    await asyncio.to_thread(submit, postfix.port)
    try:
        [received] = await sink.handler.wait_for(1, timeout=20)
    except AssertionError:
        raise AssertionError(f"nothing came through relay; Postfix's log:\n{postfix.log()[-3000:]}") from None
    assert b"Subject: through postfix" in received.data
    assert received.rcpt_tos == ["user@example.org"]
    assert ("TLS connection established to" in postfix.log()) == tls
