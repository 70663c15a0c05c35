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


@pytest.fixture
async def postfix_via_relay(relay_factory: Any, sink: Any) -> AsyncIterator[tuple[Any, PostfixInstance]]:
    """Postfix sends example.org to relay, authenticated (AUTH PLAIN without TLS: loopback may), and, as Exim
    and Sendmail always do once authenticated, with AUTH=<> on MAIL FROM (RFC 4954 §5)."""
    relay = await relay_factory(
        smtp={"trusted_networks": [], "plaintext_auth_networks": ["127.0.0.1/32"]},
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
        },
    )
    await asyncio.to_thread(postfix.start)
    try:
        yield relay, postfix
    finally:
        await asyncio.to_thread(postfix.stop)


def submit(port: int) -> None:
    with smtplib.SMTP("127.0.0.1", port) as client:
        client.sendmail("app@example.com", ["user@example.org"], MESSAGE)


async def test_postfix_authenticated_with_auth_on_mail_from_gets_its_mail_through(postfix_via_relay, sink):
    """MAIL FROM:<...> AUTH=<> got 555 'parameters not recognized', so every message bounced back."""
    relay, postfix = postfix_via_relay
    await asyncio.to_thread(submit, postfix.port)
    try:
        [received] = await sink.handler.wait_for(1, timeout=20)
    except AssertionError:
        raise AssertionError(f"nothing came through relay; Postfix's log:\n{postfix.log()[-3000:]}") from None
    assert b"Subject: through postfix" in received.data
    assert received.rcpt_tos == ["user@example.org"]
