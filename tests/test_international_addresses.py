"""Internationalised addresses (RFC 5890, 6531, 8616): a domain in Unicode is its A-label form everywhere.

At delivery it goes in A-labels, so only a local part beyond ASCII needs a server that offers SMTPUTF8
(and only that recipient is refused where none is offered); UTF-8 in the header asks for SMTPUTF8 where
it is offered. A From: domain in Unicode is signed and verified as its A-label form; sending domains,
credentials' sender rules, the queue's domains and the delivery settings keyed by domain take either form."""

from __future__ import annotations

import asyncio
import smtplib
from collections.abc import AsyncIterator

import aiohttp
import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from relay.credentials import SmtpCredential
from relay.dkim import Signer, load_key, public_key_record
from relay.domains import SendingDomains
from relay.keys import create_api_key
from relay.message import ascii_domain_form, from_domain
from relay.store.queue import Selection
from tests.conftest import Sink, start_sink, wait_for_states
from tests.postfix import PostfixInstance
from tests.test_queue_control import engine_for, queue


@pytest.mark.parametrize(
    ("address", "sent"),
    [
        ("you@bücher.example", "you@xn--bcher-kva.example"),
        ("You@Bücher.Example", "You@xn--bcher-kva.example"),  # the domain lower-cased, the local part as given
        ("you@BÜCHER.EXAMPLE", "you@xn--bcher-kva.example"),
        ("you@例え.jp", "you@xn--r8jz45g.jp"),
        ("you@xn--bcher-kva.example", "you@xn--bcher-kva.example"),
        ("you@example.org", "you@example.org"),
        ("jöhn@bücher.example", "jöhn@bücher.example"),  # needs SMTPUTF8 anyway: left as written
        ("you@a..bücher.example", "you@a..bücher.example"),  # no A-label form: left for SMTPUTF8 or refusal
        ("", ""),
    ],
)
def test_the_ascii_form_of_an_address(address, sent):
    assert ascii_domain_form(address) == sent


@pytest.fixture
async def utf8_sink() -> AsyncIterator[Sink]:
    """A sink that offers SMTPUTF8."""
    sink = await start_sink(smtputf8=True)
    yield sink
    sink.server.close()


async def relay_and_key(relay_factory, sink):
    relay = await relay_factory(delivery={"smarthost": sink.address})
    _, key = await create_api_key(relay.store.keys, relay.store.clock, "app", ("send", "read"))
    return relay, {"Authorization": f"Bearer {key}"}


async def post(relay, headers, payload) -> str:
    host, port = relay.http_address
    async with aiohttp.ClientSession(f"http://{host}:{port}") as session:
        async with session.post("/v1/messages", json=payload, headers=headers) as resp:
            assert resp.status == 202, await resp.text()
            return str((await resp.json())["id"])


@pytest.mark.parametrize("to", ["you@bücher.example", "YOU@Bücher.Example"])
async def test_a_unicode_domain_reaches_a_server_without_smtputf8(relay_factory, sink, to):
    """It bounced with 553 5.6.7 'does not support SMTPUTF8 addresses', though its A-label form needs nothing."""
    relay, headers = await relay_and_key(relay_factory, sink)
    message_id = await post(relay, headers, {"from": "app@example.com", "to": [to], "subject": "x", "text": "hi"})
    await wait_for_states(relay.store, message_id, ["delivered"])
    [received] = sink.handler.received
    assert received.rcpt_tos == [to.split("@")[0] + "@xn--bcher-kva.example"]
    assert "SMTPUTF8" not in received.mail_options


async def test_two_forms_of_one_address_are_one_recipient(relay_factory, sink):
    relay, headers = await relay_and_key(relay_factory, sink)
    to = ["you@bücher.example", "you@BÜCHER.example", "you@xn--bcher-kva.example"]
    message_id = await post(relay, headers, {"from": "app@example.com", "to": to, "subject": "x", "text": "hi"})
    await wait_for_states(relay.store, message_id, ["delivered"])  # one recipient, as first written
    assert [r.rcpt_tos for r in sink.handler.received] == [["you@xn--bcher-kva.example"]]


async def test_two_forms_queued_before_go_as_one_rcpt_and_are_both_delivered(store, sink):
    """A message queued before recipients were taken once per mailbox holds both forms: one RCPT for them."""
    engine = engine_for(store, sink.port)
    both = await queue(store, "you@bücher.example", "you@BÜCHER.example")
    await engine.run_once()
    assert [s.state for s in await store.queue.message_status(both.id)] == ["delivered", "delivered"]
    assert [r.rcpt_tos for r in sink.handler.received] == [["you@xn--bcher-kva.example"]]


UNICODE_LOCAL_PART = {"from": "app@example.com", "to": ["jöhn@bücher.example"], "subject": "x", "text": "hi"}


async def test_a_unicode_local_part_still_needs_smtputf8(relay_factory, sink):
    relay, headers = await relay_and_key(relay_factory, sink)
    message_id = await post(relay, headers, UNICODE_LOCAL_PART)
    [status] = await wait_for_states(relay.store, message_id, ["bounced"])
    assert (status.last_code, status.last_response[:5]) == (553, "5.6.7")
    assert sink.handler.received == []
    assert await relay.store.suppressions.suppressed(["jöhn@bücher.example"]) == {}  # relay's own refusal


async def test_only_the_recipient_that_needs_smtputf8_is_refused(relay_factory, sink):
    """One recipient with a Unicode local part refused its whole transaction: its neighbours bounced too."""
    relay, headers = await relay_and_key(relay_factory, sink)
    to = ["jöhn@bücher.example", "you@bücher.example"]
    message_id = await post(relay, headers, {**UNICODE_LOCAL_PART, "to": to})
    statuses = await wait_for_states(relay.store, message_id, ["bounced", "delivered"])
    assert (statuses[0].last_code, statuses[0].last_response[:5]) == (553, "5.6.7")
    assert [r.rcpt_tos for r in sink.handler.received] == [["you@xn--bcher-kva.example"]]


async def test_a_unicode_local_part_goes_with_smtputf8_where_offered(relay_factory, utf8_sink):
    relay, headers = await relay_and_key(relay_factory, utf8_sink)
    message_id = await post(relay, headers, UNICODE_LOCAL_PART)
    await wait_for_states(relay.store, message_id, ["delivered"])
    [received] = utf8_sink.handler.received
    assert received.rcpt_tos == ["jöhn@bücher.example"]
    assert "SMTPUTF8" in received.mail_options


UTF8_SUBJECT = "From: app@example.com\r\nTo: you@example.org\r\nSubject: Grüße\r\n\r\nHallo\r\n".encode()


async def submit_over_smtp(relay, raw: bytes) -> None:
    host, port = relay.smtp_addresses[0]

    def send() -> None:
        with smtplib.SMTP(host, port) as client:
            client.sendmail("app@example.com", ["you@example.org"], raw, mail_options=["BODY=8BITMIME"])

    await asyncio.to_thread(send)  # smtplib blocks; relay runs on this loop


async def test_utf8_in_the_header_asks_for_smtputf8_where_offered(relay_factory, utf8_sink):
    """The addresses are ASCII, the Subject is UTF-8 (RFC 6532): MAIL said BODY=8BITMIME only, which does
    not cover UTF-8 in a header field."""
    relay = await relay_factory(delivery={"smarthost": utf8_sink.address})
    await submit_over_smtp(relay, UTF8_SUBJECT)
    [received] = await utf8_sink.handler.wait_for(1)
    assert sorted(received.mail_options) == ["BODY=8BITMIME", "SMTPUTF8"]
    assert "Subject: Grüße".encode() in received.data


async def test_utf8_in_the_header_still_goes_to_a_server_without_smtputf8(relay_factory, sink):
    """As Postfix sends it when its client did not ask for SMTPUTF8: refusing would lose mail that
    servers take every day."""
    relay = await relay_factory(delivery={"smarthost": sink.address})
    await submit_over_smtp(relay, UTF8_SUBJECT)
    [received] = await sink.handler.wait_for(1)
    assert received.mail_options == ["BODY=8BITMIME"]
    assert "Subject: Grüße".encode() in received.data


# The From: domain in Unicode: it is the same domain as its A-label form, for DKIM and sending domains.

UNICODE_FROM = "From: Shop <news@Bücher.example>\r\nTo: you@example.org\r\nSubject: x\r\n\r\nHallo\r\n".encode()


def test_the_from_domain_is_read_in_a_labels():
    assert from_domain(UNICODE_FROM) == "xn--bcher-kva.example"
    assert from_domain(b"From: a@Example.COM\r\n\r\n") == "example.com"


@pytest.mark.parametrize("configured", ["bücher.example", "BÜCHER.example", "xn--bcher-kva.example"])
def test_a_unicode_from_domain_is_signed_with_d_in_a_labels(tmp_path, configured):
    """It went unsigned: the key, looked up by the From: domain as written, was kept under another form."""
    pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path = tmp_path / "key.pem"
    path.write_bytes(pem)
    path.chmod(0o600)
    signed = Signer({configured: load_key(configured, "s1", path)}).sign(UNICODE_FROM)
    assert signed.startswith(b"DKIM-Signature:") and b" d=xn--bcher-kva.example;" in signed
    record = public_key_record(pem).encode()

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        return record if name.rstrip(b".") == b"s1._domainkey.xn--bcher-kva.example" else b""

    assert dkim.verify(signed, dnsfunc=dnsfunc)


def test_a_unicode_from_domain_is_verified_by_its_a_label_form():
    sending = SendingDomains(Signer({}), require_verified=True)
    sending.verified = {"xn--bcher-kva.example"}
    assert sending.refusal(UNICODE_FROM) is None
    assert sending.refusal(UNICODE_FROM.replace("Bücher".encode(), b"Bucher")) is not None


@pytest.mark.parametrize("name", ["bücher.example", "Bücher.Example.", "xn--bcher-kva.example"])
async def test_a_sending_domain_in_unicode_is_kept_in_a_labels(relay_factory, sink, name):
    """POST /v1/domains refused 'not a domain name: bücher.example'."""
    relay = await relay_factory(delivery={"smarthost": sink.address})
    _, key = await create_api_key(relay.store.keys, relay.store.clock, "ops", ("admin",))
    host, port = relay.http_address
    async with aiohttp.ClientSession(f"http://{host}:{port}") as session:
        async with session.post("/v1/domains", json={"domain": name}, headers={"Authorization": f"Bearer {key}"}) as r:
            assert r.status == 201, await r.text()
            body = await r.json()
    assert body["domain"] == "xn--bcher-kva.example"
    assert body["records"][0]["name"].endswith("._domainkey.xn--bcher-kva.example")


FORMS = ["bücher.example", "BÜCHER.Example", "xn--bcher-kva.example"]


@pytest.mark.parametrize("rule", FORMS)
@pytest.mark.parametrize("written", FORMS)
def test_a_credentials_sender_rule_takes_either_form_of_its_domain(rule, written):
    """A credential for bücher.example refused From: news@xn--bcher-kva.example, and the other way round."""
    credential = SmtpCredential("cred_1", "relay-1", allowed_from=(rule, f"Jo@{rule}"))
    assert credential.may_send_as(f"news@{written}")
    assert credential.may_send_as(f"jo@{written}")
    assert not credential.may_send_as(f"news@other.{written}")
    assert not credential.may_send_as("news@bucher.example")
    only_jo = SmtpCredential("cred_2", "relay-2", allowed_from=(f"jo@{rule}",))
    assert only_jo.may_send_as(f"JO@{written}") and not only_jo.may_send_as(f"news@{written}")


async def test_latin1_in_the_header_is_not_called_utf8(relay_factory, utf8_sink):
    """A sloppy client's Latin-1 Subject: SMTPUTF8 would tell the receiver it is UTF-8."""
    relay = await relay_factory(delivery={"smarthost": utf8_sink.address})
    await submit_over_smtp(relay, UTF8_SUBJECT.replace("Grüße".encode(), "Grüße".encode("latin-1")))
    [received] = await utf8_sink.handler.wait_for(1)
    assert received.mail_options == ["BODY=8BITMIME"]
    assert "Subject: Grüße".encode("latin-1") in received.data


# The queue keeps a recipient's domain in A-labels: an operator names it in either form.


@pytest.mark.parametrize(
    ("written", "named"),
    [
        ("bücher.example", "BÜCHER.example"),
        ("BÜCHER.example", "xn--bcher-kva.example"),
        ("xn--bcher-kva.example", "Bücher.Example"),
    ],
)
async def test_a_unicode_domain_is_one_queue_whichever_form_names_it(store, sink, written, named):
    """The queue kept 'bücher.example' as written: a suspension of xn--bcher-kva.example held nothing."""
    engine = engine_for(store, sink.port)
    held = await queue(store, f"a@{written}", "b@xn--bcher-kva.example")
    await store.queue.suspend_domain(named, 3600, "maintenance")
    await engine.run_once()
    assert [s.state for s in await store.queue.message_status(held.id)] == ["queued", "queued"]
    [waiting] = [q for q in await store.queue.domain_queues() if q.queued]
    assert (waiting.domain, waiting.queued, waiting.suspended_until is not None) == ("xn--bcher-kva.example", 2, True)
    assert await store.queue.resume_domain(named)
    await engine.run_once()
    assert [s.state for s in await store.queue.message_status(held.id)] == ["delivered", "delivered"]
    assert await store.queue.retry_now(Selection(domain=named)) == 0
    await engine.stop(1)


async def test_a_route_named_in_unicode_takes_either_form(relay_factory, sink, utf8_sink):
    """[delivery.routes."bücher.example"] was looked up with the domain as the recipient wrote it."""
    routed = utf8_sink  # any second sink
    relay = await relay_factory(
        delivery={"smarthost": sink.address, "routes": {"Bücher.example": {"smarthost": routed.address}}}
    )
    _, key = await create_api_key(relay.store.keys, relay.store.clock, "app", ("send", "read"))
    headers = {"Authorization": f"Bearer {key}"}
    to = ["you@BÜCHER.example", "me@xn--bcher-kva.example", "them@example.org"]
    message_id = await post(relay, headers, {"from": "app@example.com", "to": to, "subject": "x", "text": "hi"})
    await wait_for_states(relay.store, message_id, ["delivered"] * 3)
    assert sorted(r for m in routed.handler.received for r in m.rcpt_tos) == [
        "me@xn--bcher-kva.example",
        "you@xn--bcher-kva.example",
    ]
    assert [m.rcpt_tos for m in sink.handler.received] == [["them@example.org"]]


async def test_a_unicode_domain_reaches_a_real_postfix_without_smtputf8(relay_factory, sink):
    """Through a private Postfix (smtputf8_enable = no, as many receivers are): the A-label form passes,
    and Postfix routes it by that name; a Unicode local part waits for no one and bounces at relay."""
    postfix = PostfixInstance({"xn--bcher-kva.example": sink.address})
    await asyncio.to_thread(postfix.start)
    try:
        relay, headers = await relay_and_key(relay_factory, Sink(sink.handler, sink.server, postfix.port))
        to = ["you@Bücher.example", "jöhn@bücher.example"]
        message_id = await post(relay, headers, {"from": "app@example.com", "to": to, "subject": "x", "text": "hi"})
        statuses = await wait_for_states(relay.store, message_id, ["delivered", "bounced"], timeout=20)
        assert (statuses[1].last_code, statuses[1].last_response[:5]) == (553, "5.6.7")
        [received] = await sink.handler.wait_for(1, timeout=20)
        assert received.rcpt_tos == ["you@xn--bcher-kva.example"]
    finally:
        await asyncio.to_thread(postfix.stop)
