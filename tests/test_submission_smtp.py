from __future__ import annotations

import asyncio
import email
import email.message
import email.policy
import smtplib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.message import address_literal, recipient_key
from relay.store import queue as q
from tests.conftest import wait_for_states
from tests.test_address_domains import deliverable_domain

BODY = (
    b"From: App <app@example.com>\r\nTo: user@example.org\r\nSubject: hello\r\n"
    b"Message-ID: <original@example.com>\r\n\r\nLine one\r\n.starts with a dot\r\n\r\nend\r\n"
)


def smtp_send(port: int, sender: str, rcpts: list[str], body: bytes) -> tuple[dict, tuple[int, bytes]]:
    with smtplib.SMTP("127.0.0.1", port, local_hostname="client.test", timeout=10) as smtp:
        smtp.ehlo()
        code, text = smtp.mail(sender)
        assert code == 250, text
        refused = {}
        for r in rcpts:
            code, text = smtp.rcpt(r)
            if code >= 300:
                refused[r] = (code, text)
        if len(refused) == len(rcpts):
            return refused, (0, b"")
        return refused, smtp.data(body)


async def counts(relay) -> dict[str, int]:
    summary: q.QueueSummary = await relay.store.queue.summary()
    return {k: v for k, v in summary.by_state.items() if v}


async def test_trusted_client_is_queued_and_delivered_byte_for_byte(relay_factory, sink):
    relay = await relay_factory(delivery={"smarthost": sink.address})
    port = relay.smtp_addresses[0][1]
    refused, (code, text) = await asyncio.to_thread(
        smtp_send, port, "app@example.com", ["user@example.org", "other@example.net"], BODY
    )
    assert refused == {}
    assert code == 250 and text.startswith(b"2.0.0 Ok: queued as ")
    queue_id = text.decode().rsplit(" ", 1)[1]
    received = await sink.handler.wait_for(2)
    assert sorted(r for m in received for r in m.rcpt_tos) == ["other@example.net", "user@example.org"]
    for m in received:
        assert m.mail_from == "app@example.com"
        assert m.data.endswith(BODY), "the message must arrive unchanged below the added trace header"
        added = m.data[: -len(BODY)].decode()
        assert added.startswith("Received: from client.test ([127.0.0.1])")
        assert f"id {queue_id}" in added
        assert "Message-ID" not in added  # the client's own is kept
    await wait_for_states(relay.store, queue_id, ["delivered", "delivered"])


async def test_message_id_and_date_are_added_when_missing(relay_factory, sink):
    relay = await relay_factory(delivery={"smarthost": sink.address})
    body = b"Subject: bare\r\n\r\nhi\r\n"
    await asyncio.to_thread(smtp_send, relay.smtp_addresses[0][1], "a@example.com", ["b@example.org"], body)
    (m,) = await sink.handler.wait_for(1)
    headers = m.data.split(b"\r\n\r\n", 1)[0].decode()
    assert "\r\nMessage-ID: <" in headers and "@relay.test>" in headers
    assert "\r\nDate: " in headers
    assert m.data.endswith(body)


def smtplib_sendmail(port: int, message: str | bytes) -> None:
    """What many scripts do: ``sendmail(from, to, text)``, the text often without a header at all."""
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
        smtp.sendmail("app@example.com", ["user@example.org"], message)


@pytest.mark.parametrize(
    ("sent", "header", "body"),
    [
        ("Hello from a script", b"", b"Hello from a script\r\n"),  # no header at all
        ("Hello\nsecond line\n", b"", b"Hello\nsecond line\n".replace(b"\n", b"\r\n")),
        ("Subject: hi\nHello straight after the header\n", b"Subject: hi\r\n", b"Hello straight after the header\r\n"),
        (b"Subject: hi\r\n\tfolded\r\nbody: a line with a colon\r\n", b"Subject: hi\r\n\tfolded\r\n", None),
        (
            " indented first line\r\nSubject: not a header\r\n",
            b"",
            b" indented first line\r\nSubject: not a header\r\n",
        ),
        ("Subject: hi\r\n\r\nbody\r\n", b"Subject: hi\r\n", b"body\r\n"),  # well formed: as it was
    ],
)
async def test_a_message_without_the_empty_line_after_its_header_gets_one(relay_factory, sink, sent, header, body):
    """The text a client sends where the header should end starts the body (as for Postfix): the fields relay
    adds on top must not turn it into header lines, which receivers drop or refuse."""
    relay = await relay_factory(delivery={"smarthost": sink.address})
    await asyncio.to_thread(smtplib_sendmail, relay.smtp_addresses[0][1], sent)
    (m,) = await sink.handler.wait_for(1)
    added, _, rest = m.data.partition(b"\r\nDate: ")  # relay's fields: Received, Message-ID, Date
    assert added.startswith(b"Received: ") and b"\r\nMessage-ID: <" in added
    date, _, message = rest.partition(b"\r\n")
    assert message.startswith(header) and date.endswith(b"+0000")
    if body is None:  # "body: a line" is a field, as for any reader: the header goes on, no body
        assert message == header + b"body: a line with a colon\r\n"
    else:
        assert message == header + b"\r\n" + body
    parsed = email.message_from_bytes(m.data, policy=email.policy.default)
    assert not parsed.defects and all(not h.defects for h in map(parsed.get, parsed.keys()))
    if body is not None:
        assert parsed.get_content().replace("\r\n", "\n") == body.decode().replace("\r\n", "\n")


async def test_the_received_header_writes_an_ipv6_client_as_smtp_does(relay_factory, sink):
    """RFC 5321 §4.1.3: [IPv6:...]; an IPv4 client on an IPv6 socket as its IPv4 address, as Postfix writes it."""
    relay = await relay_factory(
        delivery={"smarthost": sink.address}, smtp={"listen": ["[::1]:0"], "trusted_networks": ["::1/128"]}
    )
    host, port = relay.smtp_addresses[0][:2]
    assert host == "::1"

    def send() -> None:
        with smtplib.SMTP("::1", port, local_hostname="client.test", timeout=10) as smtp:
            smtp.sendmail("app@example.com", ["user@example.org"], BODY)

    await asyncio.to_thread(send)
    (m,) = await sink.handler.wait_for(1)
    assert m.data.startswith(b"Received: from client.test ([IPv6:::1])\r\n")
    assert address_literal("::ffff:192.0.2.7") == "[192.0.2.7]" and address_literal("192.0.2.7") == "[192.0.2.7]"
    assert address_literal("2001:DB8::7") == "[IPv6:2001:db8::7]"


async def test_a_recipient_given_twice_is_delivered_once(relay_factory, sink):
    """smtplib's send_message gives RCPT for every address of To, Cc and Bcc, repeats included (the
    domain's case may differ): each mailbox is one recipient, as Postfix's cleanup drops a duplicate."""
    relay = await relay_factory(delivery={"smarthost": sink.address})
    message = email.message.EmailMessage()
    message["From"] = "app@example.com"
    message["To"] = "user@example.org"
    message["Cc"] = "User <user@EXAMPLE.org>, other@example.org"
    message["Bcc"] = "other@example.org"
    message.set_content("hi")

    def send() -> dict:
        with smtplib.SMTP("127.0.0.1", relay.smtp_addresses[0][1], timeout=10) as smtp:
            return smtp.send_message(message)

    assert await asyncio.to_thread(send) == {}  # every RCPT answered 250
    (received,) = await sink.handler.wait_for(2)
    assert sorted(received.rcpt_tos) == ["other@example.org", "user@example.org"]
    for _ in range(200):  # the outcomes are recorded just after the sink's 250
        if await counts(relay) == {"delivered": 2}:
            break
        await asyncio.sleep(0.02)
    assert await counts(relay) == {"delivered": 2}  # two recipients queued, not four
    assert recipient_key("a@B\u00fccher.Example") == recipient_key("a@xn--bcher-kva.example") != recipient_key("A@b.c")


async def test_untrusted_client_cannot_relay(relay_factory, sink):
    relay = await relay_factory(smtp={"trusted_networks": ["192.0.2.0/24"]}, delivery={"smarthost": sink.address})
    refused, _ = await asyncio.to_thread(
        smtp_send, relay.smtp_addresses[0][1], "a@example.com", ["victim@example.org"], BODY
    )
    assert refused["victim@example.org"][0] == 554
    assert b"5.7.1" in refused["victim@example.org"][1]
    assert await counts(relay) == {}


async def test_bad_recipient_syntax_and_recipient_limit(relay_factory):
    relay = await relay_factory(smtp={"max_recipients": 2}, delivery={"smarthost": "127.0.0.1:9"})
    refused, (code, _) = await asyncio.to_thread(
        smtp_send,
        relay.smtp_addresses[0][1],
        "a@example.com",
        ["no-domain", "a@example.org", "b@example.org", "c@example.org"],
        BODY,
    )
    assert refused["no-domain"][0] == 501
    assert refused["c@example.org"][0] == 452
    assert code == 250
    assert sum((await counts(relay)).values()) == 2


async def test_message_over_the_size_limit_is_refused(relay_factory):
    relay = await relay_factory(smtp={"max_message_size": "1KB"}, delivery={"smarthost": "127.0.0.1:9"})

    def send_big() -> int:
        with smtplib.SMTP("127.0.0.1", relay.smtp_addresses[0][1], timeout=10) as smtp:
            smtp.ehlo()
            assert smtp.has_extn("size") and smtp.esmtp_features["size"] == "1024"
            try:
                smtp.sendmail("a@example.com", ["b@example.org"], b"Subject: x\r\n\r\n" + b"x" * 4000)
            except smtplib.SMTPDataError as exc:
                return exc.smtp_code
            except smtplib.SMTPSenderRefused as exc:
                return exc.smtp_code
            return 250

    assert await asyncio.to_thread(send_big) == 552
    assert await counts(relay) == {}


async def test_disconnect_in_the_middle_of_data_leaves_nothing(relay_factory):
    relay = await relay_factory(delivery={"smarthost": "127.0.0.1:9"})
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.smtp_addresses[0][1])
    await reader.readline()
    for command in (b"EHLO client.test", b"MAIL FROM:<a@example.com>", b"RCPT TO:<b@example.org>", b"DATA"):
        writer.write(command + b"\r\n")
        await writer.drain()
        while True:
            line = await reader.readline()
            if line[3:4] != b"-":
                break
    assert line.startswith(b"354")
    writer.write(b"Subject: cut short\r\n\r\nhalf a message")
    await writer.drain()
    writer.close()
    await asyncio.sleep(0.2)
    assert await counts(relay) == {}


@pytest.mark.parametrize("rcpt", ["user@[127.0.0.1]", "üser@exämple.org"])
async def test_unusual_but_valid_recipients_are_accepted(relay_factory, rcpt):
    relay = await relay_factory(delivery={"smarthost": "127.0.0.1:9"})

    def send() -> int:
        with smtplib.SMTP("127.0.0.1", relay.smtp_addresses[0][1], timeout=10) as smtp:
            smtp.ehlo()
            options = ["SMTPUTF8"] if not rcpt.isascii() else []
            smtp.mail("a@example.com", options)
            return smtp.rcpt(rcpt)[0]

    assert await asyncio.to_thread(send) == 250


async def test_stop_lets_a_transaction_in_progress_finish(tmp_path, sink):
    from relay.app import Relay
    from tests.conftest import make_config

    relay = Relay(make_config(tmp_path / "data", delivery={"smarthost": sink.address}))
    await relay.start()
    port = relay.smtp_addresses[0][1]
    smtp = await asyncio.to_thread(smtplib.SMTP, "127.0.0.1", port, timeout=10)
    await asyncio.to_thread(smtp.ehlo)
    await asyncio.to_thread(smtp.mail, "a@example.com")
    await asyncio.to_thread(smtp.rcpt, "late@example.org")
    stopping = asyncio.create_task(relay.stop())
    await asyncio.sleep(0.2)
    assert not stopping.done()  # waiting for our transaction
    code, text = await asyncio.to_thread(smtp.data, BODY)
    assert code == 250, text
    await stopping
    smtp.close()
    with pytest.raises(OSError):
        await asyncio.to_thread(smtplib.SMTP, "127.0.0.1", port, timeout=2)
    import sqlite3

    conn = sqlite3.connect(tmp_path / "data" / "relay.sqlite3")
    assert conn.execute("SELECT address FROM recipients").fetchall() == [("late@example.org",)]
    conn.close()


async def test_a_full_queue_answers_452_and_keeps_nothing(relay_factory):
    relay = await relay_factory(
        server={"max_queue": 1}, delivery={"smarthost": "127.0.0.1:9", "retry_schedule": ["1h"]}
    )
    port = relay.smtp_addresses[0][1]
    _, (code, _) = await asyncio.to_thread(smtp_send, port, "a@example.com", ["b@example.org"], BODY)
    assert code == 250
    await relay.capacity.refresh()
    _, (code, text) = await asyncio.to_thread(smtp_send, port, "a@example.com", ["c@example.org"], BODY)
    assert code == 452 and text.startswith(b"4.3.1")
    assert sum((await counts(relay)).values()) == 1


def _full_parser_getaddr(arg: str) -> tuple[str | None, str | None]:
    from email._header_value_parser import get_addr_spec, get_angle_addr

    if not arg:
        return "", ""
    try:
        parsed, rest = get_angle_addr(arg) if arg.lstrip().startswith("<") else get_addr_spec(arg)
        address = parsed.addr_spec
    except Exception:  # HeaderParseError, or IndexError/AttributeError on cut-off forms: not an address
        return None, None
    if len(address.rpartition("@")[0]) > 64 or len(address) > 254 or any(ord(c) < 32 or ord(c) == 127 for c in address):
        return None, None  # relay's limits on top of the parser (RFC 5321 §4.5.3.1; no controls)
    if "@" in address and not deliverable_domain(address.rpartition("@")[2]):
        return None, None  # and a domain delivery could ask DNS for (or an IP address literal)
    return address, rest


@settings(max_examples=1500, deadline=None)
@given(st.text(alphabet='<>@.a-Z0 \t()"[]:;,+=\\é\x00\x7f', max_size=24))
def test_address_fast_path_agrees_with_the_full_parser(arg):
    """commands.getaddr takes plain <local@domain> without the email package's parser;
    every input must come out as the full parser (aiosmtpd's own way) would have it, and what that
    parser cannot read (cut off: `"`, `<`) is no address, not an exception."""
    from relay.submission.commands import getaddr

    for text in (arg, f"<{arg}@example.com> SIZE=10", f"<a{arg}>{arg}", arg[:3]):
        assert getaddr(text) == _full_parser_getaddr(text), text  # and never an exception (a 451 to the client)
