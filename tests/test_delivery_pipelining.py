"""Outbound PIPELINING (RFC 2920): one write for MAIL, the RCPTs and DATA, and the outcome of every
recipient exactly what the one-command-at-a-time path gives for the same server replies.

The server here is a small asyncio one whose replies are data (a dialogue table, as chasquid's
fake server), so that packet boundaries, multi-line replies, a 421 or a dropped connection are
under the test's control; it records what arrived in each read and what it received.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session
from aiosmtplib.protocol import SMTPProtocol
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.bounces.classify import Phase
from relay.delivery import client
from relay.delivery.client import Connection, SmtpClient, StaleConnection
from relay.delivery.mx import Host, Router
from relay.delivery.outcome import Reply
from relay.delivery.pipelining import parse_replies
from relay.ratelimit import Rate
from relay.tls import server_context, write_self_signed
from tests.conftest import Received, SinkHandler
from tests.postfix import PostfixInstance
from tests.test_delivery_shaping import engine_for, queue

RAW = b"From: a@src.test\r\nTo: x@dst.test\r\nSubject: hi\r\n\r\nline one\r\n.starts with a dot\r\nend\r\n"


@dataclasses.dataclass(frozen=True)
class Act:
    """A reply (possibly none) and whether the server hangs up after it."""

    reply: bytes = b""
    close: bool = False
    stall: bool = False  # answer nothing more, keep the connection open


HANG_UP = Act(close=True)  # no reply: the connection just ends
SILENT = Act(stall=True)  # no reply from here on, the connection stays open (the client times out)

DEFAULTS: dict[str, bytes | Act] = {
    "MAIL": b"250 2.1.0 sender ok\r\n",
    "RCPT": b"250 2.1.5 recipient ok\r\n",
    "DATA": b"354 go ahead\r\n",
    "DATA-empty": b"554 5.5.1 no valid recipients\r\n",  # DATA after no accepted RCPT
    "BODY": b"",  # the first bytes of the body
    ".": b"250 2.0.0 queued\r\n",
    "RSET": b"250 2.0.0 reset\r\n",
    "NOOP": b"250 2.0.0 ok\r\n",
    "QUIT": Act(b"221 2.0.0 bye\r\n", close=True),
}


@dataclasses.dataclass
class Dialogue:
    """One connection's state on the server side."""

    mail: str | None = None
    accepted: list[str] = dataclasses.field(default_factory=list)
    in_data: bool = False
    body: bytearray = dataclasses.field(default_factory=bytearray)


class ScriptedServer:
    """SMTP on loopback, answering from ``rules`` (keys as DEFAULTS, plus "RCPT <address>"); it
    offers PIPELINING when ``pipelining``; ``byte_by_byte`` writes every reply one byte at a time."""

    def __init__(self, rules: dict[str, bytes | Act], pipelining: bool = True, byte_by_byte: bool = False) -> None:
        self.rules = {**DEFAULTS, **rules}
        self.pipelining = pipelining
        self.byte_by_byte = byte_by_byte
        self.received: list[Received] = []
        self.reads: list[bytes] = []  # what each read() from a client returned
        self.piped_reads: list[bytes] = []  # (_both_ways: the reads of the pipelined run)
        self.writers: list[asyncio.StreamWriter] = []
        self.closing = asyncio.Event()

    async def start(self) -> ScriptedServer:
        self.server = await asyncio.start_server(self._run, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        self.closing.set()
        self.server.close()
        for writer in self.writers:
            writer.transport.abort()

    def host(self) -> Host:
        return Host("127.0.0.1", self.port, "127.0.0.1")

    async def _run(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        writer.write(b"220 scripted.test ESMTP\r\n")
        session, pending = Dialogue(), b""
        try:
            while chunk := await reader.read(65536):
                self.reads.append(chunk)
                pending += chunk
                pending = await self._take(pending, session, writer)
                if pending is None:
                    break
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def _take(self, pending: bytes, s: Dialogue, writer: asyncio.StreamWriter) -> bytes | None:
        """Answer every complete command (or body) in ``pending``; what is left, or None after hanging up."""
        while pending:
            if s.in_data:
                if not s.body and not await self._answer(self.rules["BODY"], writer):
                    return None
                data = bytes(s.body) + pending
                end = -2 if data.startswith(b".\r\n") else data.find(b"\r\n.\r\n")
                if end == -1:
                    s.body = bytearray(data)
                    return b""
                s.body = bytearray(data[: end + 2])
                pending = data[end + 5 :]
                act = self._end_of_data(s)
            else:
                end = pending.find(b"\r\n")
                if end == -1:
                    return pending
                line, pending = pending[:end].decode(), pending[end + 2 :]
                act = self._command(line, s)
            if not await self._answer(act, writer):
                return None
        return b""

    def _command(self, line: str, s: Dialogue) -> bytes | Act:
        verb = line.split(" ", 1)[0].upper()
        if verb == "EHLO":
            offers = b"250-PIPELINING\r\n" if self.pipelining else b""
            return b"250-scripted.test\r\n" + offers + b"250-8BITMIME\r\n250 SMTPUTF8\r\n"
        if verb == "MAIL":
            act = self.rules["MAIL"]
            s.mail = line[10:].split(" ")[0].strip("<>") if _positive(act) else None
            s.accepted = []
            return act
        if verb == "RCPT":
            if s.mail is None:
                return b"503 5.5.1 need MAIL first\r\n"
            address = line[8:].split(" ")[0].strip("<>")
            act = self.rules.get(f"RCPT {address}", self.rules["RCPT"])
            if _positive(act):
                s.accepted.append(address)
            return act
        if verb == "DATA":
            if s.mail is None or not s.accepted:
                act = self.rules["DATA-empty"]
            else:
                act = self.rules["DATA"]
            s.in_data = _reply_of(act).startswith(b"354")
            return act
        if verb in ("RSET", "QUIT", "NOOP"):
            s.mail, s.accepted = None, []
            return self.rules[verb]
        return b"500 5.5.2 what?\r\n"

    def _end_of_data(self, s: Dialogue) -> bytes | Act:
        act = self.rules["."]
        if s.accepted and _positive(act):
            body = bytes(s.body).replace(b"\r\n..", b"\r\n.")
            self.received.append(Received(s.mail or "", list(s.accepted), body, "127.0.0.1"))
        s.mail, s.accepted, s.in_data, s.body = None, [], False, bytearray()
        return act

    async def _answer(self, act: bytes | Act, writer: asyncio.StreamWriter) -> bool:
        """Write the reply; False when the server hangs up (after it, or after a 421)."""
        reply = _reply_of(act)
        if isinstance(act, Act) and act.stall:
            await self.closing.wait()
            return False
        if self.byte_by_byte:
            for i in range(len(reply)):
                writer.write(reply[i : i + 1])
                await writer.drain()
                await asyncio.sleep(0.001)
        elif reply:
            writer.write(reply)
        if (isinstance(act, Act) and act.close) or reply.startswith(b"421"):
            await writer.drain()
            writer.close()
            return False
        return True


def _reply_of(act: bytes | Act) -> bytes:
    return act.reply if isinstance(act, Act) else act


def _positive(act: bytes | Act) -> bool:
    return _reply_of(act)[:1] == b"2"


def _grouped(read: bytes) -> bool:
    return read.startswith(b"MAIL FROM:") and b"\r\nRCPT TO:" in read and read.endswith(b"\r\nDATA\r\n")


async def _connect(server: ScriptedServer, timeout: float = 5.0) -> Connection:
    conn = await SmtpClient("client.test", 5.0, timeout).connect([server.host()])
    assert isinstance(conn, Connection), conn
    return conn


def _seen(replies: dict[str, Reply]) -> dict[str, tuple[int | None, str, Phase]]:
    return {r: (reply.code, reply.text, reply.phase) for r, reply in replies.items()}


async def _run(
    server: ScriptedServer,
    recipients: list[str],
    messages: int,
    timeout: float,
    max_rcpt: int = 100,
    follow: bool = False,
) -> list[Any]:
    """Send ``messages`` messages on one connection; what each gave (replies, or the exception's
    type), with the connection's state after each. ``follow``: each message's group goes with the
    last body when it can (``send(..., following=...)``), as the engine does with a backlog."""
    conn = await _connect(server, timeout)
    outcomes: list[Any] = []
    try:
        for i in range(messages):
            following = None
            if follow and i + 1 < messages:

                def following() -> client.Envelope | None:
                    ok = conn.can_follow("from@src.test", recipients, RAW, max_rcpt)
                    return ("from@src.test", recipients, RAW) if ok else None

            try:
                replies = _seen(await conn.send("from@src.test", recipients, RAW, max_rcpt, following))
            except StaleConnection:
                outcomes.append("StaleConnection")
                break
            outcomes.append((replies, conn.broken, conn._in_transaction))
            if conn.broken:
                break
    finally:
        await conn.close()
    return outcomes


async def _both_ways(
    rules: dict[str, bytes | Act],
    recipients: list[str],
    messages: int = 2,
    byte_by_byte: bool = False,
    timeout: float = 5.0,
    max_rcpt: int = 100,
    follow: bool = False,
    server: ScriptedServer | None = None,
) -> tuple[list[Any], list[Any], ScriptedServer]:
    """The same dialogue pipelined and one command at a time, on one server (so the texts that
    name its port are the same); what the server received is compared too."""
    server = await (server or ScriptedServer(rules, byte_by_byte=byte_by_byte)).start()
    try:
        piped = await _run(server, recipients, messages, timeout, max_rcpt, follow)
        got_piped, server.received = server.received, []
        assert any(_grouped(read) for read in server.reads)  # it was pipelined
        server.piped_reads, server.pipelining, server.reads = server.reads, False, []
        one_by_one = await _run(server, recipients, messages, timeout, max_rcpt)
        assert not any(_grouped(read) for read in server.reads)
        assert got_piped == server.received
    finally:
        await server.close()
    return piped, one_by_one, server


ABC = ["a@dst.test", "b@dst.test", "c@dst.test"]
GROUP_A = b"MAIL FROM:<from@src.test>\r\nRCPT TO:<a@dst.test>\r\nDATA\r\n"

SCENARIOS: dict[str, dict[str, bytes | Act]] = {
    "all accepted": {},
    "MAIL refused": {"MAIL": b"550 5.7.1 sender refused\r\n"},
    "MAIL deferred": {"MAIL": b"451 4.3.0 try later\r\n"},
    "one RCPT refused": {"RCPT b@dst.test": b"550 5.1.1 no such user\r\n"},
    "RCPT 251": {"RCPT a@dst.test": b"251 2.1.5 will forward\r\n"},
    "all RCPT refused": {"RCPT": b"550 5.1.1 no such user\r\n"},
    "all RCPT refused, DATA 354 anyway": {"RCPT": b"450 4.2.1 later\r\n", "DATA-empty": b"354 go ahead\r\n"},
    "DATA refused": {"DATA": b"554 5.3.0 no data today\r\n"},
    "DATA refused, no recipient": {"RCPT": b"550 5.1.1 no\r\n", "DATA-empty": b"503 5.5.1 no recipients\r\n"},
    "body refused": {".": b"550 5.7.1 content refused\r\n"},
    "body deferred": {".": b"451 4.3.0 queue full\r\n"},
    "421 at MAIL": {"MAIL": b"421 4.3.2 shutting down\r\n"},
    "421 at the second RCPT": {"RCPT b@dst.test": b"421 4.3.2 shutting down\r\n"},
    "421 at the last RCPT": {"RCPT c@dst.test": b"421 4.3.2 shutting down\r\n"},
    "421 at DATA": {"DATA": b"421 4.3.2 shutting down\r\n"},
    "421 after the body": {".": b"421 4.3.2 shutting down\r\n"},
    "hangs up at the second RCPT": {"RCPT b@dst.test": HANG_UP},
    "hangs up after the group": {"DATA": HANG_UP},
    "hangs up during the body": {"BODY": HANG_UP},
    "hangs up after the body": {".": HANG_UP},
    "multi-line replies": {
        "MAIL": b"250-first line\r\n250-\r\n250 2.1.0 last\r\n",
        "RCPT b@dst.test": b"550-5.1.1 no such\r\n550-5.1.1 user here\r\n550 5.1.1 sorry\r\n",
        "DATA": b"354-start\r\n354 go\r\n",
        ".": b"250-2.0.0 queued\r\n250 2.0.0 as 123\r\n",
    },
    "silent at the last RCPT": {"RCPT c@dst.test": SILENT},
}


@pytest.mark.parametrize("name", list(SCENARIOS))
async def test_every_recipient_gets_what_the_one_by_one_path_gives(name: str) -> None:
    timeout = 0.5 if "silent" in name else 5.0
    piped, one_by_one, _ = await _both_ways(SCENARIOS[name], ABC, timeout=timeout)
    assert piped == one_by_one


@pytest.mark.parametrize("name", list(SCENARIOS))
async def test_with_each_group_after_the_last_body_too(name: str) -> None:
    """The next message's MAIL, RCPTs and DATA in the write of this one's body: every recipient of
    three messages still gets what one command at a time gives, and the server the same mail."""
    timeout = 0.5 if "silent" in name else 5.0
    piped, one_by_one, server = await _both_ways(SCENARIOS[name], ABC, messages=3, timeout=timeout, follow=True)
    assert piped == one_by_one


class PlannedServer(ScriptedServer):
    """A scripted server whose every transaction on a connection (counted by its MAIL) answers by the
    next scenario of ``plan``, the last one repeating."""

    def __init__(self, plan: list[str]) -> None:
        super().__init__(SCENARIOS[plan[0]])
        self.plan = plan
        self.transactions = 0

    async def _run(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.transactions = 0
        self.rules = {**DEFAULTS, **SCENARIOS[self.plan[0]]}
        await super()._run(reader, writer)

    def _command(self, line: str, s: Dialogue) -> bytes | Act:
        if line[:4].upper() == "MAIL":
            self.rules = {**DEFAULTS, **SCENARIOS[self.plan[min(self.transactions, len(self.plan) - 1)]]}
            self.transactions += 1
        return super()._command(line, s)


QUICK = [name for name in SCENARIOS if "silent" not in name]  # (those wait out a timeout)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from(QUICK), min_size=1, max_size=4))
async def test_messages_each_answered_its_own_way_get_what_one_command_at_a_time_gives(plan: list[str]) -> None:
    """Four messages on a connection, each transaction answered as another scenario says (a refused body,
    then a 421 at MAIL, ...), every group after the first sent with the body before it when it can be:
    each recipient's outcome, the connection's state after each message, and the mail the server took
    are what one command at a time gives."""
    piped, one_by_one, server = await _both_ways({}, ABC, messages=4, follow=True, server=PlannedServer(plan))
    assert piped == one_by_one
    if plan[0] == "all accepted":  # the first body went, and the second message's group with it
        assert any(b"\r\n.\r\nMAIL FROM:" in read for read in server.piped_reads)


@pytest.mark.parametrize("byte_by_byte", [False, True])
async def test_a_kept_connection_with_a_backlog_takes_one_write_a_message(byte_by_byte: bool) -> None:
    server = await ScriptedServer({}, byte_by_byte=byte_by_byte).start()
    try:
        outcomes = await _run(server, ["a@dst.test"], 12 if byte_by_byte else 40, 5.0, follow=True)
    finally:
        await server.close()
    count = len(outcomes)
    assert [o[0]["a@dst.test"][0] for o in outcomes] == [250] * count
    assert len(server.received) == count
    body_then_group = [r for r in server.reads if r.startswith(b"From: ") and r.endswith(b"\r\n.\r\n" + GROUP_A)]
    assert len(body_then_group) == count - 1  # every body but the last carried the next group
    assert server.reads.count(GROUP_A) == 1  # the first group alone


async def test_a_refused_body_does_not_stop_the_group_after_it() -> None:
    """Each message's end of data answered 550 then 250 in turn: the group that followed each body is
    a transaction of its own, and every message gets its own reply."""
    server = await ScriptedServer({}).start()
    answers = iter([b"550 5.7.1 no\r\n", b"250 ok\r\n"] * 3)
    server._end_of_data = _answering(server._end_of_data, server, answers)  # type: ignore[method-assign]
    try:
        outcomes = await _run(server, ["a@dst.test"], 6, 5.0, follow=True)
    finally:
        await server.close()
    assert [o[0]["a@dst.test"][0] for o in outcomes] == [550, 250] * 3
    assert len(server.received) == 3


def _answering(end_of_data: Any, server: ScriptedServer, answers: Any) -> Any:
    """The server's end of data answering each message with the next of ``answers``, then as usual."""

    def answer(s: Dialogue) -> bytes | Act:
        server.rules["."] = next(answers, DEFAULTS["."])
        return end_of_data(s)

    return answer


async def test_a_message_not_sent_ahead_is_refused_by_the_connection() -> None:
    """A connection that sent a group ahead carries that message next, no other."""
    server = await ScriptedServer({}).start()
    try:
        conn = await _connect(server)
        await conn.send("from@src.test", ["a@dst.test"], RAW, following=lambda: ("from@src.test", ["b@dst.test"], RAW))
        with pytest.raises(RuntimeError):
            await conn.send("from@src.test", ["c@dst.test"], RAW)
        conn.broken = True
        await conn.close()
    finally:
        await server.close()


def test_what_can_follow_a_body() -> None:
    """One pipelined transaction with addresses written as they are; anything else goes on its own."""
    conn = Connection(aiosmtplib.SMTP(), Host("127.0.0.1", 25, "127.0.0.1"), None)
    assert not conn.can_follow("a@src.test", ["b@dst.test"], RAW, 100)  # nothing pipelined on it yet
    conn._reader = object()  # type: ignore[assignment]
    assert conn.can_follow("a@src.test", ["b@dst.test"], RAW, 100)
    assert conn.can_follow("", ["b@dst.test", "c@dst.test"], RAW, 2)
    assert not conn.can_follow("a@src.test", ["b@dst.test", "c@dst.test"], RAW, 1)  # two transactions
    assert not conn.can_follow("a@src.test", [], RAW, 100)
    assert not conn.can_follow("få@src.test", ["b@dst.test"], RAW, 100)
    assert not conn.can_follow("a@src.test", ['"odd one"@dst.test'], RAW, 100)
    conn.broken = True
    assert not conn.can_follow("a@src.test", ["b@dst.test"], RAW, 100)


@pytest.mark.parametrize(
    "name", ["all accepted", "MAIL refused", "one RCPT refused", "multi-line replies", "421 at the second RCPT"]
)
async def test_replies_one_byte_at_a_time_give_the_same_outcomes(name: str) -> None:
    piped, one_by_one, _ = await _both_ways(SCENARIOS[name], ABC, byte_by_byte=True)
    assert piped == one_by_one


@pytest.mark.parametrize(
    "rules",
    [
        {"RCPT r4@dst.test": b"550 5.1.1 no\r\n"},
        {"RCPT r1@dst.test": b"421 4.3.2 going away\r\n"},
        {"RCPT r4@dst.test": HANG_UP},
        {"MAIL": b"452 4.3.1 too busy\r\n"},
        {".": b"451 4.3.0 later\r\n"},
    ],
)
async def test_max_rcpt_transactions_are_each_pipelined(rules: dict[str, bytes | Act]) -> None:
    recipients = [f"r{i}@dst.test" for i in range(7)]
    piped, one_by_one, server = await _both_ways(rules, recipients, max_rcpt=3)
    assert piped == one_by_one
    assert len(piped[0][0]) == 7


async def test_the_group_arrives_in_one_write_before_any_reply() -> None:
    server = await ScriptedServer({}).start()
    try:
        conn = await _connect(server)
        replies = await conn.send("from@src.test", ABC, RAW)
        await conn.close()
    finally:
        await server.close()
    assert {r.code for r in replies.values()} == {250}
    group = b"MAIL FROM:<from@src.test>\r\n" + b"".join(b"RCPT TO:<%s>\r\n" % r.encode() for r in ABC) + b"DATA\r\n"
    assert group in server.reads  # one read: nothing was waiting for a reply in between
    assert server.received == [Received("from@src.test", ABC, RAW, "127.0.0.1")]


async def test_an_8bit_body_puts_body_8bitmime_in_the_group() -> None:
    server = await ScriptedServer({}).start()
    body = "Subject: cafe\r\n\r\nnaïve\r\n".encode()  # 8-bit in the body only (in the header: SMTPUTF8 too)
    try:
        conn = await _connect(server)
        replies = await conn.send("", ["a@dst.test"], body)
        await conn.close()
    finally:
        await server.close()
    assert replies["a@dst.test"].code == 250
    assert b"MAIL FROM:<> BODY=8BITMIME\r\nRCPT TO:<a@dst.test>\r\nDATA\r\n" in server.reads
    assert [r.data for r in server.received] == [body]


async def test_a_server_without_pipelining_gets_one_command_at_a_time() -> None:
    server = await ScriptedServer({}, pipelining=False).start()
    try:
        conn = await _connect(server)
        await conn.send("from@src.test", ABC, RAW)
        await conn.close()
    finally:
        await server.close()
    assert b"MAIL FROM:<from@src.test>\r\n" in server.reads
    assert b"RCPT TO:<a@dst.test>\r\n" in server.reads
    assert len(server.received) == 1


async def test_no_accepted_recipient_and_354_sends_only_the_end_of_data() -> None:
    """RFC 2920 §3.1: DATA in the group may be answered 354 when no RCPT was accepted; the client
    then sends the end of data alone, and the connection stays in step for the next message."""
    rules: dict[str, bytes | Act] = {"RCPT": b"550 5.1.1 no\r\n", "DATA-empty": b"354 go ahead\r\n"}
    server = await ScriptedServer(rules).start()
    try:
        conn = await _connect(server)
        first = await conn.send("from@src.test", ["x@dst.test"], RAW)
        server.rules["RCPT"] = DEFAULTS["RCPT"]
        second = await conn.send("from@src.test", ["y@dst.test"], RAW)
        await conn.close()
    finally:
        await server.close()
    assert _seen(first) == {"x@dst.test": (550, "5.1.1 no", Phase.RCPT)}
    assert b".\r\n" in b"".join(server.reads) and b"line one" not in b"".join(server.reads[:-3])
    assert _seen(second) == {"y@dst.test": (250, "2.0.0 queued", Phase.AFTER_DATA)}
    assert [r.rcpt_tos for r in server.received] == [["y@dst.test"]]


async def test_a_kept_connection_carries_many_messages_two_writes_each() -> None:
    server = await ScriptedServer({}).start()
    try:
        conn = await _connect(server)
        for i in range(40):
            replies = await conn.send("", [f"r{i}@dst.test"], RAW)
            assert replies[f"r{i}@dst.test"].code == 250
        assert not conn.broken and conn.messages == 40
        assert (await conn.smtp.quit()).code == 221
    finally:
        await server.close()
    assert len(server.received) == 40
    assert {r.mail_from for r in server.received} == {""}  # the null sender as MAIL FROM:<>
    envelope_reads = [r for r in server.reads if r.startswith(b"MAIL FROM:<>")]
    assert len(envelope_reads) == 40 and all(r.endswith(b"DATA\r\n") for r in envelope_reads)


@pytest.mark.parametrize("pipelining", [True, False])
@pytest.mark.parametrize("goodbye", [b"", b"421 4.4.2 idle too long\r\n"])
@pytest.mark.parametrize("idle", [0.0, 0.05])
async def test_a_kept_connection_closed_while_idle_is_stale(pipelining: bool, goodbye: bytes, idle: float) -> None:
    server = await ScriptedServer({}, pipelining=pipelining).start()
    try:
        conn = await _connect(server)
        await conn.send("from@src.test", ["a@dst.test"], RAW)
        writer = server.writers[-1]
        writer.write(goodbye)
        await writer.drain()
        writer.close()
        await asyncio.sleep(idle)
        with pytest.raises(StaleConnection):
            await conn.send("from@src.test", ["b@dst.test"], RAW)
        assert conn.broken
        await conn.close()
    finally:
        await server.close()
    assert [r.rcpt_tos for r in server.received] == [["a@dst.test"]]


async def test_after_a_refused_mail_the_next_message_resets_and_goes() -> None:
    server = await ScriptedServer({"MAIL": b"550 5.7.1 not you\r\n"}).start()
    try:
        conn = await _connect(server)
        first = await conn.send("bad@src.test", ABC, RAW)
        server.rules["MAIL"] = DEFAULTS["MAIL"]
        second = await conn.send("good@src.test", ABC, RAW)
        await conn.close()
    finally:
        await server.close()
    assert {r.code for r in first.values()} == {550}
    assert {r.code for r in second.values()} == {250}
    assert b"RSET\r\n" in server.reads
    assert [r.mail_from for r in server.received] == ["good@src.test"]


class PipeliningSink(SinkHandler):
    """conftest's aiosmtpd sink, offering PIPELINING (aiosmtpd reads commands line by line, so it copes)."""

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        return [*responses[:-1], "250-PIPELINING", responses[-1]]


async def _aiosmtpd_sink(tmp_path: Path, tls: bool) -> tuple[PipeliningSink, asyncio.Server, int]:
    """aiosmtpd offering PIPELINING and SMTPUTF8 on loopback, and STARTTLS (self-signed) when ``tls``."""
    handler = PipeliningSink()
    context = None
    if tls:
        write_self_signed(tmp_path / "sink.crt", tmp_path / "sink.key", "sink.test")
        context = server_context(str(tmp_path / "sink.crt"), str(tmp_path / "sink.key"))
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="sink.test", enable_SMTPUTF8=True, tls_context=context), "127.0.0.1", 0
    )
    return handler, server, server.sockets[0].getsockname()[1]


@pytest.mark.parametrize("tls", [False, True])
async def test_8bit_and_utf8_messages_through_aiosmtpd(tmp_path: Path, tls: bool) -> None:
    handler, server, port = await _aiosmtpd_sink(tmp_path, tls)
    try:
        conn = await SmtpClient("client.test", 5.0, 5.0).connect([Host("127.0.0.1", port, "127.0.0.1")])
        assert isinstance(conn, Connection)
        assert conn.smtp.supports_extension("pipelining") and (conn.tls is not None) == tls
        body = "Subject: héllo\r\n\r\ncafé\r\n".encode()
        plain = await conn.send("from@src.test", ["a@dst.test", "permfail@dst.test"], body)
        utf8 = await conn.send("från@src.test", ["b@dst.test"], RAW)  # not path_of(): one by one
        again = await conn.send("", ["c@dst.test"], RAW)
        assert (await conn.smtp.quit()).code == 221  # aiosmtplib reads its own replies again
    finally:
        server.close()
    assert plain["a@dst.test"].code == 250 and plain["permfail@dst.test"].code == 550
    assert utf8["b@dst.test"].code == 250 and again["c@dst.test"].code == 250
    assert [(r.mail_from, r.rcpt_tos, r.data) for r in handler.received] == [
        ("from@src.test", ["a@dst.test"], body),
        ("från@src.test", ["b@dst.test"], RAW),
        ("<>", ["c@dst.test"], RAW),
    ]


@pytest.mark.parametrize(
    ("data", "codes", "left"),
    [
        (b"250 ok\r\n250 ok\r\n354 go\r\n", [250, 250, 354], b""),
        (b"250 ok\r\n250-a\r\n25", [250], b"250-a\r\n25"),
        (b"250-a\n250 b\n", [250], b""),
        (b"", [], b""),
    ],
)
def test_parse_replies_takes_complete_replies_only(data: bytes, codes: list[int], left: bytes) -> None:
    buffer = bytearray(data)
    replies, error = parse_replies(buffer)
    assert [r.code for r in replies] == codes and error is None
    assert bytes(buffer) == left


def test_parse_replies_joins_lines_as_aiosmtplib_does() -> None:
    replies, _ = parse_replies(bytearray(b"250-\r\n250-first\r\n250-\r\n250 last\r\n"))
    assert replies[0].message == "first\n\nlast"


def test_a_malformed_line_is_an_error_after_the_replies_before_it() -> None:
    buffer = bytearray(b"250 ok\r\nnot smtp\r\n250 ok\r\n")
    replies, error = parse_replies(buffer)
    assert [r.code for r in replies] == [250]
    assert error is not None and "Malformed SMTP response line: not smtp" in str(error)


async def test_the_engine_delivers_over_pipelined_kept_connections(store: Any) -> None:
    """The whole delivery path against aiosmtpd offering PIPELINING: every outcome recorded as it should be."""
    handler = PipeliningSink()
    server = await asyncio.get_running_loop().create_server(lambda: SMTP(handler, hostname="sink.test"), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    engine = engine_for(store, Router(("127.0.0.1", port), 25, None), shaping={"default": {"max_connections": 2}})
    try:
        messages = [await queue(store, f"u{i}@one.example", f"permfail{i}@one.example") for i in range(20)]
        messages.append(await queue(store, "tempfail@one.example"))
        await engine.run_once()
    finally:
        await engine.stop(1)
        server.close()
    assert sorted(r.rcpt_tos[0] for r in handler.received) == sorted(f"u{i}@one.example" for i in range(20))
    states = {s.address: s.state for m in messages for s in await store.queue.message_status(m.id)}
    assert states == {
        **{f"u{i}@one.example": "delivered" for i in range(20)},
        **{f"permfail{i}@one.example": "bounced" for i in range(20)},
        "tempfail@one.example": "deferred",
    }


def _aiosmtplib_parse(data: bytes) -> tuple[list[Any], str | None]:
    """What aiosmtplib's own parser makes of ``data``, reply after reply (the oracle)."""
    protocol = SMTPProtocol(loop=asyncio.new_event_loop())
    protocol._buffer = bytearray(data)
    replies: list[Any] = []
    try:
        while (reply := protocol._read_response_from_buffer()) is not None:
            replies.append(reply)
    except aiosmtplib.SMTPResponseException as exc:
        return replies, exc.message
    finally:
        protocol._loop.close()
    return replies, None


LINES = [b"250 ok", b"250-more", b"250-", b"354 go", b"550 5.1.1 no\tuser ", b"421 bye", b"xyz", b"2", b"", b"\xc3\xa9"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(LINES), st.sampled_from([b"\r\n", b"\n", b"\r"])), max_size=8))
def test_parse_replies_gives_what_aiosmtplib_gives(lines: list[tuple[bytes, bytes]]) -> None:
    data = b"".join(text + end for text, end in lines)
    replies, error = parse_replies(bytearray(data))
    expected, expected_error = _aiosmtplib_parse(data)
    assert replies == expected
    assert (error.message if isinstance(error, aiosmtplib.SMTPResponseException) else None) == expected_error


async def test_the_engine_sends_a_backlog_one_write_a_message(store: Any) -> None:
    """A site's waiting jobs go out on its connection each with the last one's body: every recipient
    recorded as delivered, and the server read most bodies together with the next envelope."""
    server = await ScriptedServer({}).start()
    engine, states = await _backlog(store, server, 15)
    assert states == {f"u{i}@one.example": "delivered" for i in range(15)}
    assert sorted(r.rcpt_tos[0] for r in server.received) == sorted(states)
    together = [r for r in server.reads if b"\r\n.\r\nMAIL FROM:<sender@example.com>\r\nRCPT TO:<u" in r]
    assert len(together) == 14 == engine.sent_ahead, server.reads


async def test_the_engine_sends_nothing_ahead_to_a_site_paced_by_rate(store: Any) -> None:
    server = await ScriptedServer({}).start()
    await _backlog(store, server, 5, max_rate=Rate(1000, 1.0))
    assert len(server.received) == 5
    assert not [r for r in server.reads if b"\r\n.\r\nMAIL FROM:" in r]


@pytest.mark.parametrize("tls", [False, True])
async def test_postfix_guarding_against_unauthorised_pipelining_takes_a_backlog(
    store: Any, sink: Any, tls: bool
) -> None:
    """A real smtpd that drops clients pipelining where RFC 2920 forbids it (Postfix's answer to SMTP
    smuggling) takes groups that follow a body, in plain text and after STARTTLS: every message arrives,
    none is refused."""
    postfix = PostfixInstance(
        {"one.example": sink.address},
        extra={"smtpd_forbid_unauth_pipelining": "yes", "smtpd_data_restrictions": "reject_unauth_pipelining"},
    )
    if tls:
        write_self_signed(postfix.base / "smtpd.crt", postfix.base / "smtpd.key", "mx.postfix.test")
        postfix.extra.update(
            smtpd_tls_security_level="may",
            smtpd_tls_cert_file=str(postfix.base / "smtpd.crt"),
            smtpd_tls_key_file=str(postfix.base / "smtpd.key"),
            smtpd_tls_loglevel="1",
        )
    await asyncio.to_thread(postfix.start)
    shaping = {"default": {"max_connections": 1}}
    router = Router(("127.0.0.1", postfix.port), 25, None)
    engine = engine_for(store, router, shaping=shaping, tls="required" if tls else "opportunistic")
    try:
        messages = [await queue(store, f"u{i}@one.example") for i in range(12)]
        await engine.run_once()
        for _ in range(100):  # Postfix passes them on to the sink on its own time
            if len(sink.handler.received) == 12:
                break
            await asyncio.sleep(0.1)
    finally:
        await engine.stop(1)
        log = postfix.log()
        await asyncio.to_thread(postfix.stop)
    states = {s.address: s.state for m in messages for s in await store.queue.message_status(m.id)}
    assert set(states.values()) == {"delivered"}, states
    assert sorted(r.rcpt_tos[0] for r in sink.handler.received) == sorted(states)
    assert engine.sent_ahead >= 6  # (the first claim's jobs; the rest come back from the queue)
    assert "pipelining" not in log, log
    assert ("TLS connection established from localhost" in log) == tls


async def test_a_job_sent_ahead_when_delivery_stops_goes_out_again_later(store: Any) -> None:
    """Stopping while a body's reply is awaited, its next job's envelope already sent: that job returns to
    the queue with the rest (no reply came for any of them) and a later run delivers every one."""
    stalled = await ScriptedServer({".": SILENT}).start()
    engine = one_connection(store, stalled.port)
    messages = [await queue(store, f"u{i}@one.example") for i in range(5)]
    task = asyncio.create_task(engine.run_once())
    for _ in range(200):
        if engine.sent_ahead:
            break
        await asyncio.sleep(0.01)
    assert engine.sent_ahead == 1
    await engine.stop(0.1)
    task.cancel()
    await stalled.close()
    server = await ScriptedServer({}).start()
    again = engine_for(store, Router(("127.0.0.1", server.port), 25, None))
    try:
        await again.run_once()
    finally:
        await again.stop(1)
        await server.close()
    states = {s.address: s.state for m in messages for s in await store.queue.message_status(m.id)}
    assert states == {f"u{i}@one.example": "delivered" for i in range(5)}


def one_connection(store: Any, port: int, **shaping: Any) -> Any:
    """An engine that delivers everything to 127.0.0.1:``port`` over one connection at a time."""
    limits = {"max_connections": 1, **shaping}
    return engine_for(store, Router(("127.0.0.1", port), 25, None), shaping={"default": limits})


async def _backlog(store: Any, server: ScriptedServer, count: int, **shaping: Any) -> tuple[Any, dict[str, str]]:
    """Queue ``count`` messages (u0@one.example, u1@...), deliver them to ``server`` over one connection, stop
    the engine and the server: the engine, and each recipient's state."""
    engine = one_connection(store, server.port, **shaping)
    try:
        messages = [await queue(store, f"u{i}@one.example") for i in range(count)]
        await engine.run_once()
    finally:
        await engine.stop(1)
        await server.close()
    return engine, {s.address: s.state for m in messages for s in await store.queue.message_status(m.id)}


@pytest.mark.parametrize("after_first_body", [b"421 4.3.2 closing\r\n", HANG_UP])
async def test_a_job_sent_ahead_on_a_connection_that_then_ends_goes_on_a_new_one(
    store: Any, after_first_body: bytes | Act
) -> None:
    """The first body's reply ends the session (421, or the server hangs up) after the next message's
    envelope went with it: that message goes again on a new connection, and is delivered once."""
    server = await ScriptedServer({}).start()
    answers = iter([after_first_body])
    server._end_of_data = _answering(server._end_of_data, server, answers)  # type: ignore[method-assign]
    engine, states = await _backlog(store, server, 4)
    assert states == {"u0@one.example": "deferred", **{f"u{i}@one.example": "delivered" for i in (1, 2, 3)}}
    assert sorted(r.rcpt_tos[0] for r in server.received) == ["u1@one.example", "u2@one.example", "u3@one.example"]
    assert engine.sent_ahead >= 2 and len(server.writers) == 2  # u1 went ahead on the first connection too


async def test_a_site_with_pipelining_off_gets_one_command_at_a_time(store: Any) -> None:
    """[delivery.shaping."<site>"] pipelining = false: for a receiver that offers PIPELINING and mishandles it."""
    server = await ScriptedServer({}).start()
    engine, _ = await _backlog(store, server, 5, pipelining=False)
    assert len(server.received) == 5 and engine.sent_ahead == 0
    assert not [r for r in server.reads if _grouped(r) or b"\r\n.\r\nMAIL FROM:" in r]
    assert b"MAIL FROM:<sender@example.com>\r\n" in server.reads


@pytest.mark.parametrize("tls", [False, True])
async def test_groups_after_bodies_through_aiosmtpd(tmp_path: Path, tls: bool) -> None:
    """aiosmtpd (which reads a line at a time) takes each next envelope in the write of the body before it,
    in plain text and over STARTTLS."""
    handler, server, port = await _aiosmtpd_sink(tmp_path, tls)
    envelopes = [("from@src.test", [f"r{i}@dst.test"], RAW) for i in range(6)]
    taken: list[int] = []
    try:
        conn = await SmtpClient("client.test", 5.0, 5.0).connect([Host("127.0.0.1", port, "127.0.0.1")])
        assert isinstance(conn, Connection) and (conn.tls is not None) == tls
        for i, envelope in enumerate(envelopes):

            def following(i: int = i) -> client.Envelope | None:
                if i + 1 == len(envelopes) or not conn.can_follow(*envelopes[i + 1], 100):
                    return None
                taken.append(i + 1)
                return envelopes[i + 1]

            replies = await conn.send(*envelope, following=following)
            assert replies[envelope[1][0]].code == 250
        assert (await conn.smtp.quit()).code == 221
    finally:
        server.close()
    assert taken == [1, 2, 3, 4, 5]
    assert [(r.rcpt_tos, r.data) for r in handler.received] == [(e[1], RAW) for e in envelopes]
