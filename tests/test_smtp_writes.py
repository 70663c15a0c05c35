"""Replies of several lines go out in one write: on loopback each write() costs a pass through the
receiver's TCP processing inside the sender's system call."""

from __future__ import annotations

import asyncio
import smtplib
from typing import Any

import pytest


async def test_the_ehlo_reply_is_one_write(relay_factory: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    relay = await relay_factory()
    writes: list[bytes] = []
    write = asyncio.StreamWriter.write

    def counting(self: asyncio.StreamWriter, data: bytes) -> None:
        writes.append(bytes(data))
        write(self, data)

    monkeypatch.setattr(asyncio.StreamWriter, "write", counting)
    host, port = relay.smtp_addresses[0]

    def ehlo() -> tuple[int, bytes]:
        with smtplib.SMTP(host, port) as client:
            return client.ehlo("client.test")

    code, text = await asyncio.to_thread(ehlo)
    assert code == 250 and b"SIZE" in text and b"STARTTLS" in text and b"HELP" in text
    replies = [w for w in writes if w.startswith(b"250")]
    assert len(replies) == 1, replies  # all the EHLO reply's lines in one write
    ehlo_reply = replies[0]
    assert ehlo_reply.startswith(b"250-relay.test\r\n") and ehlo_reply.endswith(b"250 HELP\r\n")
    assert all(line.startswith(b"250-") for line in ehlo_reply.split(b"\r\n")[:-2])
