"""Returned mail end to end: VERP return paths out, bounces and complaints in, suppression after.

A real relay delivers to a loopback sink; the tests mail reports to its inbound
listener with smtplib as a remote MTA would, built from what the sink received.
"""

from __future__ import annotations

import asyncio
import logging
import smtplib

import pytest

from relay.store.suppressions import BounceFilter
from tests.bounce_samples import dsn

INBOUND = {
    "listen": ["127.0.0.1:0"],
    "bounce_domains": ["bounces.example.com"],
    "feedback_addresses": ["fbl@bounces.example.com"],
}
BODY = (
    "From: App <app@example.com>\r\nTo: bob@example.net, carol@example.net\r\nSubject: Receipt\r\n"
    "Message-ID: <receipt-1@app.example.com>\r\n\r\nThanks.\r\n"
)


def smtp_send(port: int, sender: str, rcpts: list[str], body: str | bytes) -> dict[str, tuple[int, bytes]]:
    with smtplib.SMTP("127.0.0.1", port, local_hostname="mx.example.net", timeout=10) as smtp:
        return smtp.sendmail(sender, rcpts, body)


@pytest.fixture
async def relay(relay_factory, sink):
    return await relay_factory(delivery={"smarthost": sink.address}, inbound=INBOUND)


async def deliver(relay, sink, rcpts=("bob@example.net", "carol@example.net"), body=BODY) -> dict[str, str]:
    """Submit over SMTP, wait for the sink; the return path each recipient's copy went out with."""
    before = len(sink.handler.received)
    await asyncio.to_thread(smtp_send, relay.smtp_addresses[0][1], "app@example.com", list(rcpts), body)
    await sink.handler.wait_for(before + len(rcpts))
    return {r.rcpt_tos[0]: r.mail_from for r in sink.handler.received[before:]}


def postfix_dsn(
    recipient: str,
    diagnostic: str,
    original: bytes,
    status: str = "5.1.1",
    action: str = "failed",
    return_path: str = "",
) -> bytes:
    text = dsn(
        reporting="mx.example.net",
        human=f"<{recipient}>: host mx.example.net said: {diagnostic}\n",
        recipients=[
            f"Final-Recipient: rfc822; {recipient}\nAction: {action}\nStatus: {status}\n"
            f"Diagnostic-Code: smtp; {diagnostic}\n"
        ],
    )
    head, _, _ = text.rpartition("--BOUNDARY\nContent-Type: message/rfc822")
    returned = original.decode().replace("\r\n", "\n")
    if return_path:
        returned = f"Return-Path: <{return_path}>\n" + returned
    text = head + f"--BOUNDARY\nContent-Type: message/rfc822\n\n{returned}\n--BOUNDARY--\n"
    return text.replace("\n", "\r\n").encode()


async def test_each_recipient_gets_its_own_authenticated_return_path(relay, sink):
    paths = await deliver(relay, sink)
    assert set(paths) == {"bob@example.net", "carol@example.net"}
    assert len(set(paths.values())) == 2
    for rcpt, path in paths.items():
        assert path.startswith("b+") and path.endswith("@bounces.example.com")
        target = relay.verp.verify(path)
        assert target is not None
        stored = await relay.store.queue.returned_target(target.message_id, target.recipient_id)
        assert stored.address == rcpt


async def test_a_dsn_to_the_return_path_bounces_and_suppresses(relay, sink):
    paths = await deliver(relay, sink)
    original = sink.handler.received[0].data
    report = postfix_dsn(
        "bob@example.net", "550 5.1.1 <bob@example.net>: Recipient address rejected: User unknown", original
    )
    refused = await asyncio.to_thread(smtp_send, relay.inbound_addresses[0][1], "", [paths["bob@example.net"]], report)
    assert refused == {}

    s = await relay.store.suppressions.suppression("Bob@Example.NET")
    assert s is not None and s.reason == "hard_bounce" and s.expires_at is None
    (bounce,) = await relay.store.suppressions.bounces(BounceFilter(), 10)
    assert (bounce.recipient, bounce.kind, bounce.reason, bounce.status, bounce.source, bounce.code) == (
        "bob@example.net",
        "hard",
        "user_unknown",
        "5.1.1",
        "dsn",
        550,
    )
    full = await relay.store.suppressions.bounce(bounce.id)
    assert "Final-Recipient: rfc822; bob@example.net" in full.report
    target = relay.verp.verify(paths["bob@example.net"])
    states = {r.address: r.state for r in await relay.store.queue.message_status(target.message_id)}
    assert states == {"bob@example.net": "bounced", "carol@example.net": "delivered"}
    assert await relay.store.suppressions.suppression("carol@example.net") is None

    # The next message to bob is refused at RCPT; carol still gets hers.
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused_rcpt:
        await asyncio.to_thread(smtp_send, relay.smtp_addresses[0][1], "app@example.com", ["bob@example.net"], BODY)
    code, text = refused_rcpt.value.recipients["bob@example.net"]
    assert code == 550 and b"suppression list" in text


async def test_a_dsn_returning_a_large_message_is_read_whole(relay, sink):
    """A DSN that carries back a 300 KB original (dotted lines and all) through the chunked DATA reader."""
    big = BODY + "".join(f".line {i} of the returned copy, long enough to matter {'x' * 40}\r\n" for i in range(4000))
    paths = await deliver(relay, sink, rcpts=["bob@example.net"], body=big)
    original = sink.handler.received[-1].data
    assert len(original) > 300_000
    report = postfix_dsn("bob@example.net", "550 5.1.1 user unknown", original)
    refused = await asyncio.to_thread(smtp_send, relay.inbound_addresses[0][1], "", [paths["bob@example.net"]], report)
    assert refused == {}
    (bounce,) = await relay.store.suppressions.bounces(BounceFilter(), 10)
    assert (bounce.recipient, bounce.kind) == ("bob@example.net", "hard")


async def test_a_complaint_to_the_feedback_address_suppresses(relay, sink):
    paths = await deliver(relay, sink, rcpts=["carol@example.net"])
    original = sink.handler.received[0].data.decode().replace("\r\n", "\n")
    arf = (
        "From: fbl@isp.example\nTo: fbl@bounces.example.com\nSubject: abuse report\nMIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=feedback-report; boundary="A"\n\n--A\nContent-Type: text/plain\n\n'
        "This is an abuse report.\n\n--A\nContent-Type: message/feedback-report\n\nFeedback-Type: abuse\n"
        f"User-Agent: ISP-FBL/1.0\nVersion: 1\nOriginal-Mail-From: <{paths['carol@example.net']}>\n"
        "Original-Rcpt-To: <carol@example.net>\n\n--A\nContent-Type: message/rfc822\n\n" + original + "\n--A--\n"
    ).replace("\n", "\r\n")
    await asyncio.to_thread(
        smtp_send, relay.inbound_addresses[0][1], "fbl@isp.example", ["fbl@bounces.example.com"], arf
    )
    s = await relay.store.suppressions.suppression("carol@example.net")
    assert s is not None and s.reason == "complaint"
    (bounce,) = await relay.store.suppressions.bounces(BounceFilter(), 10)
    assert (bounce.kind, bounce.reason, bounce.source) == ("complaint", "abuse", "arf")
    events = await relay.store.db.read(
        lambda c: c.execute("SELECT kind, recipient FROM events WHERE kind = 'complained'").fetchall()
    )
    assert events == [("complained", "carol@example.net")]


async def test_without_a_return_path_the_message_id_must_match_a_recipient(relay, sink):
    await deliver(relay, sink)
    original = sink.handler.received[0].data
    inbound = relay.inbound_addresses[0][1]
    # A stranger's address in a report about our message: not ours to suppress.
    stranger = postfix_dsn("mallory@example.net", "550 5.1.1 no such user", original)
    await asyncio.to_thread(smtp_send, inbound, "", ["postmaster@bounces.example.com"], stranger)
    assert await relay.store.suppressions.bounces(BounceFilter(), 10) == []
    # Our recipient, our Message-ID: recorded, though it came to no particular return path.
    report = postfix_dsn("carol@example.net", "550 5.1.1 no such user", original)
    await asyncio.to_thread(smtp_send, inbound, "", ["postmaster@bounces.example.com"], report)
    assert (await relay.store.suppressions.suppression("carol@example.net")).reason == "hard_bounce"


async def test_a_forged_return_path_is_ignored_and_logged(relay, sink, caplog):
    paths = await deliver(relay, sink)
    genuine = paths["bob@example.net"]
    local, _, domain = genuine.rpartition("@")
    forged = local[:-12] + "a" * 12 + "@" + domain  # same ids, made-up tag
    parts = local.split(".")
    other = ".".join([parts[0], str(int(parts[1]) + 1), parts[2]])  # another recipient id, the same tag
    report = postfix_dsn("bob@example.net", "550 5.1.1 no such user", sink.handler.received[0].data)
    with caplog.at_level(logging.WARNING, logger="relay.inbound.returned"):
        for address in (forged, other + "@" + domain):
            assert await asyncio.to_thread(smtp_send, relay.inbound_addresses[0][1], "", [address], report) == {}
    assert await relay.store.suppressions.bounces(BounceFilter(), 10) == []
    assert await relay.store.suppressions.suppression("bob@example.net") is None
    assert sum("fails authentication" in r.getMessage() for r in caplog.records) == 2


async def test_delays_and_auto_replies_record_nothing(relay, sink):
    paths = await deliver(relay, sink)
    path = paths["bob@example.net"]
    delayed = postfix_dsn(
        "bob@example.net", "451 4.7.1 greylisted", sink.handler.received[0].data, status="4.7.1", action="delayed"
    )
    auto = (
        f"From: bob@example.net\r\nTo: {path}\r\nSubject: Automatic reply: Receipt\r\n"
        "Auto-Submitted: auto-replied\r\n\r\nI am away.\r\n"
    )
    for body in (delayed, auto):
        await asyncio.to_thread(smtp_send, relay.inbound_addresses[0][1], "", [path], body)
    assert await relay.store.suppressions.bounces(BounceFilter(), 10) == []


async def test_the_listener_takes_returned_mail_only(relay):
    port = relay.inbound_addresses[0][1]
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        await asyncio.to_thread(smtp_send, port, "spammer@example.org", ["victim@example.net"], BODY)
    code, text = refused.value.recipients["victim@example.net"]
    assert code == 550 and b"bounce domains only" in text
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        await asyncio.to_thread(smtp_send, port, "x@example.org", ["other@fbl.example"], BODY)


async def test_verp_off_keeps_the_senders_return_path(relay_factory, sink):
    relay = await relay_factory(delivery={"smarthost": sink.address}, inbound={**INBOUND, "verp": False})
    paths = await deliver(relay, sink, rcpts=["bob@example.net"])
    assert paths == {"bob@example.net": "app@example.com"}


async def test_a_dsn_with_bare_lf_line_ends_is_read_like_its_crlf_form(relay, sink):
    """Reporting MTAs and scripts send bare LFs too: the listener takes them as line ends, as for submission."""
    paths = await deliver(relay, sink, rcpts=["bob@example.net"])
    report = postfix_dsn("bob@example.net", "550 5.1.1 user unknown", sink.handler.received[-1].data)
    lf_report = report.replace(b"\r\n", b"\n")
    refused = await asyncio.to_thread(
        smtp_send, relay.inbound_addresses[0][1], "", [paths["bob@example.net"]], lf_report
    )
    assert refused == {}
    (bounce,) = await relay.store.suppressions.bounces(BounceFilter(), 10)
    assert (bounce.recipient, bounce.kind, bounce.status) == ("bob@example.net", "hard", "5.1.1")
    full = await relay.store.suppressions.bounce(bounce.id)
    assert "Final-Recipient: rfc822; bob@example.net\r\n" in full.report and "\r\n" in full.report
    assert "\n" not in full.report.replace("\r\n", "")


async def greeted_sessions(host: str, port: int, count: int) -> list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """``count`` connections to the inbound port, each greeted with 220."""
    opened = [await asyncio.open_connection(host, port) for _ in range(count)]
    for reader, _ in opened:
        assert (await asyncio.wait_for(reader.readline(), 5)).startswith(b"220 ")
    return opened


async def test_one_address_holds_at_most_max_connections_per_ip(relay_factory, sink):
    """Anyone may connect to the inbound port: one address held as many sessions as it opened (each a file
    descriptor and a session's memory, until the idle timeout). Past the limit it is told 421 and closed;
    a session that ends makes room, and the submission port is not counted with it."""
    relay = await relay_factory(delivery={"smarthost": sink.address}, inbound={**INBOUND, "max_connections_per_ip": 3})
    host, port = relay.inbound_addresses[0]
    opened = await greeted_sessions(host, port, 3)
    reader, writer = await asyncio.open_connection(host, port)
    assert (await asyncio.wait_for(reader.readline(), 5)).startswith(b"421 4.7.0")
    assert await asyncio.wait_for(reader.read(), 5) == b""  # and closed
    writer.close()
    first_reader, first_writer = opened.pop(0)
    first_writer.write(b"QUIT\r\n")
    assert (await asyncio.wait_for(first_reader.readline(), 5)).startswith(b"221")
    first_writer.close()
    await asyncio.wait_for(first_reader.read(), 5)
    for _ in range(50):  # the server counts the session out when it sees the connection end
        reader, writer = await asyncio.open_connection(host, port)
        line = await asyncio.wait_for(reader.readline(), 5)
        writer.close()
        if line.startswith(b"220 "):
            break
        await asyncio.sleep(0.02)
    assert line.startswith(b"220 "), line
    reader, writer = await asyncio.open_connection(host, relay.smtp_addresses[0][1])  # submission: its own limit
    assert (await asyncio.wait_for(reader.readline(), 5)).startswith(b"220 ")
    for w in (writer, *(w for _, w in opened)):
        w.close()
        await w.wait_closed()


async def test_the_inbound_port_holds_at_most_max_connections_in_all(relay_factory, sink):
    relay = await relay_factory(delivery={"smarthost": sink.address}, inbound={**INBOUND, "max_connections": 2})
    host, port = relay.inbound_addresses[0]
    opened = await greeted_sessions(host, port, 2)
    reader, writer = await asyncio.open_connection(host, port)
    assert await asyncio.wait_for(reader.readline(), 5) == b"421 4.7.0 too many connections; try again later\r\n"
    assert await asyncio.wait_for(reader.read(), 5) == b""  # and closed
    for w in (writer, *(w for _, w in opened)):
        w.close()
        await w.wait_closed()
