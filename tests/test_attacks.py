"""What an adversarial client tries: each case failed before its fix (issue 17) and stays in the suite."""

from __future__ import annotations

import asyncio

import pytest

from relay.message import prepend_headers


async def smtp_session(port: int, lines: list[bytes]) -> list[str]:
    """Send each line (with its own line end) and read one reply per line; the greeting first."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    replies = []

    async def reply() -> str:
        text = b""
        while True:
            line = await asyncio.wait_for(reader.readline(), 10)
            text += line
            if line[3:4] != b"-":
                return text.decode()

    try:
        replies.append(await reply())
        for line in lines:
            writer.write(line)
            replies.append(await reply())
    finally:
        writer.close()
    return replies


@pytest.mark.parametrize("verb", [b"EHLO", b"HELO"])
@pytest.mark.parametrize(
    "name",
    [b"c\rFrom: CEO <ceo@unverified.example>\rSubject: pay now", b"a\x00b", b"a\x1bb", b"two words", b"a\x7fb"],
)
async def test_an_ehlo_name_that_could_forge_a_header_is_refused(relay_factory, sink, verb, name):
    relay = await relay_factory(delivery={"smarthost": sink.address})
    body = b"From: App <app@example.com>\r\nTo: you@example.org\r\nSubject: honest\r\n\r\nhi\r\n.\r\n"
    replies = await smtp_session(
        relay.smtp_addresses[0][1],
        [verb + b" " + name + b"\r\n", b"EHLO client.test\r\n", b"MAIL FROM:<app@example.com>\r\n",
         b"RCPT TO:<you@example.org>\r\n", b"DATA\r\n", body, b"QUIT\r\n"],
    )  # fmt: skip
    assert replies[1].startswith("501 5.5.4"), replies[1]
    assert replies[2].startswith("250") and replies[6].startswith("250 2.0.0"), replies
    [arrived] = await sink.handler.wait_for(1)
    assert b"unverified.example" not in arrived.data and b"from client.test ([127.0.0.1])" in arrived.data


async def test_ordinary_ehlo_names_still_pass(relay_factory, sink):
    relay = await relay_factory(delivery={"smarthost": sink.address})
    for name in (b"localhost", b"[127.0.0.1]", b"[IPv6:::1]", b"DESKTOP-4F_2B", "bücher.example".encode()):
        replies = await smtp_session(relay.smtp_addresses[0][1], [b"EHLO " + name + b"\r\n", b"QUIT\r\n"])
        assert replies[1].startswith("250-"), (name, replies[1])


@pytest.mark.parametrize(
    "value", ["a\rFrom: x@evil.example", "a\nFrom: x@evil.example", "a\r\nFrom: x@evil.example", "a\x00b", "a\r\n"]
)
def test_relay_never_writes_a_header_that_is_not_one_header(value):
    with pytest.raises(ValueError):
        prepend_headers(b"Subject: x\r\n\r\nbody\r\n", [("Received", value)])
    folded = prepend_headers(b"\r\n", [("Received", "from a\r\n\tby b;\r\n\tdate")])
    assert folded == b"Received: from a\r\n\tby b;\r\n\tdate\r\n\r\n"
