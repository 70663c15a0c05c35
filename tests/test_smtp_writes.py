"""Replies go out in as few writes as the client allows: on loopback each write() costs a pass through the
receiver's TCP processing inside the sender's system call. A reply of several lines is one write, and the
replies to commands a client pipelined (RFC 2920) in one packet are one write too."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from relay.submission.server import SubmissionProtocol


class CountingTransport:
    """The connection's transport, with its writes recorded."""

    def __init__(self, transport: Any, writes: list[bytes]) -> None:
        self._transport = transport
        self._writes = writes

    def write(self, data: bytes) -> None:
        self._writes.append(bytes(data))
        self._transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    recorded: list[bytes] = []
    made = SubmissionProtocol.connection_made

    def counting(self: SubmissionProtocol, transport: Any) -> None:
        made(self, CountingTransport(transport, recorded))

    monkeypatch.setattr(SubmissionProtocol, "connection_made", counting)
    return recorded


async def converse(port: int, *sends: bytes) -> list[bytes]:
    """Send each of ``sends`` in one write, reading its reply lines (as many as commands in it) before the next."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    replies = [await reader.readline()]
    for send in sends:
        writer.write(send)
        lines = b""
        expected = 1 if send.startswith(b"EHLO") else send.count(b"\r\n")
        while expected:
            line = await asyncio.wait_for(reader.readline(), 10)
            lines += line
            expected -= line[3:4] == b" "
        replies.append(lines)
    writer.close()
    return replies


async def test_the_ehlo_reply_is_one_write(relay_factory: Any, writes: list[bytes]) -> None:
    relay = await relay_factory()
    await converse(relay.smtp_addresses[0][1], b"EHLO client.test\r\n")
    assert writes[0] == b"220 relay.test relay\r\n"
    ehlo_reply = writes[1]  # all the EHLO reply's lines in one write
    assert ehlo_reply.startswith(b"250-relay.test\r\n") and ehlo_reply.endswith(b"250 HELP\r\n")
    assert b"250-SIZE" in ehlo_reply and b"250-STARTTLS" in ehlo_reply
    assert all(line.startswith(b"250-") for line in ehlo_reply.split(b"\r\n")[:-2])
    assert len(writes) == 2


async def test_pipelined_commands_get_their_replies_in_one_write(relay_factory: Any, writes: list[bytes]) -> None:
    relay = await relay_factory()
    mail = b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\nRCPT TO:<c@example.org>\r\nNOOP\r\n"
    replies = await converse(relay.smtp_addresses[0][1], b"EHLO client.test\r\n", mail)
    assert replies[2] == b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n250 2.0.0 OK\r\n"
    # RCPT waits for the suppression list: the replies before each wait go out as it starts, the rest at the end
    assert b"".join(writes[2:]) == replies[2]
    assert len(writes[2:]) <= 3, writes


async def test_replies_that_need_no_wait_are_one_write(relay_factory: Any, writes: list[bytes]) -> None:
    relay = await relay_factory()
    commands = b"HELO client.test\r\nNOOP\r\nRSET\r\nVRFY <a@example.org>\r\nHELP DATA\r\nFOO\r\nQUIT\r\n"
    await converse(relay.smtp_addresses[0][1], commands)
    assert writes[1:] == [
        b"250 relay.test\r\n250 2.0.0 OK\r\n250 2.0.0 OK\r\n"
        b"252 2.0.0 Cannot VRFY user, but will accept message and attempt delivery\r\n"
        b'250 2.0.0 Syntax: DATA\r\n500 5.5.2 Error: command "FOO" not recognized\r\n221 2.0.0 Bye\r\n'
    ]
