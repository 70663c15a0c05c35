"""The chunked DATA reader: the end-of-data line, dot-stuffing, limits, and what follows the data."""

from __future__ import annotations

import asyncio
import random
import socket

import pytest
from aiosmtplib.protocol import PERIOD_REGEX, normalize_message_line_endings
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.delivery.client import send_data, wire_form
from relay.message import crlf_line_ends
from relay.submission.data import BodyTooLarge, DataCollector, LineTooLong, read_data


def stuffed(body: bytes) -> bytes:
    """What a client sends for ``body`` (CRLF lines): each line's leading dot doubled, then ".\r\n"."""
    return (b"\r\n" + body).replace(b"\r\n.", b"\r\n..")[2:] + b".\r\n"


async def read(stream: bytes, pieces: list[int], max_size: int | None = None, max_line: int = 1001):
    """Feed ``stream`` to a StreamReader (limit 1001, like aiosmtpd's) in pieces of the given sizes."""
    reader = asyncio.StreamReader(limit=1001)
    collector = DataCollector(max_size, max_line)
    task = asyncio.ensure_future(read_data(reader, collector))
    at = 0
    for size in pieces:
        reader.feed_data(stream[at : at + size])
        at += size
        await asyncio.sleep(0)
    if at < len(stream):
        reader.feed_data(stream[at:])
    reader.feed_eof()
    await task
    rest = await reader.read()
    return collector, rest


BODIES = [
    b"",
    b"\r\n",
    b"a\r\n",
    b".\r\n",
    b"..\r\n",
    b".hidden\r\n",
    b"Subject: x\r\n\r\nends with a dot.\r\n",
    b"Subject: x\r\n\r\n.\r\n.\r\n..\r\n",
    b"line\r\nbare\nlf\r\n.\nnot the end\r\n",
    b"Subject: big\r\n\r\n" + (b"x" * 76 + b"\r\n") * 3000,
    b"Subject: dots\r\n\r\n" + b".\r\nend.\r\n..\r\n" * 500,
]


@pytest.mark.parametrize("body", BODIES, ids=range(len(BODIES)))
async def test_bodies_come_back_unstuffed_whatever_the_piece_sizes(body):
    stream = stuffed(body) + b"QUIT\r\n"
    rnd = random.Random(len(body))
    for pieces in ([len(stream)], [1] * len(stream), [rnd.randint(1, 700) for _ in range(len(stream) // 300 + 3)]):
        collector, rest = await read(stream, pieces)
        assert collector.body() == crlf_line_ends(body)  # a bare LF is a line end: stored as CRLF
        assert rest == b"QUIT\r\n", "what follows the data belongs to the next command"


@settings(max_examples=300, deadline=None)
@given(
    lines=st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\r\n", b"")), max_size=30),
    cut=st.integers(min_value=1, max_value=50),
)
async def test_any_body_round_trips(lines, cut):
    body = b"".join(line.replace(b"\r", b"").replace(b"\n", b"") + b"\r\n" for line in lines)
    stream = stuffed(body) + b"RSET\r\n"
    collector, rest = await read(stream, [cut] * (len(stream) // cut + 1))
    assert collector.body() == body
    assert rest == b"RSET\r\n"


async def test_a_bare_lf_dot_never_ends_the_data():
    stream = b"a\n.\nb\r\n.\n\r\nc\r\n.\r\n"
    collector, rest = await read(stream, [3] * 10)
    # Bare LFs end lines (stored as CRLF), and the "." lines lost their dots like any dotted line.
    assert collector.body() == b"a\r\n\r\nb\r\n\r\n\r\nc\r\n"
    assert rest == b""


async def test_size_limit_reads_to_the_end_and_keeps_nothing():
    body = b"x" * 70 + b"\r\n"
    collector, rest = await read(stuffed(body * 100) + b"NOOP\r\n", [512] * 20, max_size=1000)
    assert collector.too_large and collector._pieces == []
    with pytest.raises(BodyTooLarge):
        collector.body()
    assert rest == b"NOOP\r\n"
    exact = body * 10
    collector, _ = await read(stuffed(exact), [len(exact) + 3], max_size=len(exact))
    assert collector.body() == exact


async def test_line_length_limit_counts_the_crlf():
    ok = b"y" * 999 + b"\r\n"
    collector, _ = await read(stuffed(ok * 3), [4096])
    assert collector.body() == ok * 3
    collector, rest = await read(stuffed(b"y" * 1000 + b"\r\n") + b"QUIT\r\n", [4096])
    with pytest.raises(LineTooLong):
        collector.body()
    assert rest == b"QUIT\r\n"
    split = b"y" * 600 + b"\n" + b"y" * 600 + b"\r\n"  # a bare LF ends a line too
    collector, _ = await read(stuffed(split), [4096])
    assert collector.body() == split.replace(b"\n", b"\r\n", 1)


async def test_a_big_body_is_read_in_big_pieces_and_the_command_limit_comes_back():
    body = b"Subject: big\r\n\r\n" + (b"x" * 76 + b"\r\n") * 1300  # 100 KB, no line ends in a dot
    reader = asyncio.StreamReader(limit=1001)
    collector = DataCollector(None, 1001)
    reader.feed_data(stuffed(body) + b"QUIT\r\n")
    await read_data(reader, collector)
    assert len(collector._pieces) <= 3, "64 KB at a time, not 1 KB"
    assert collector.body() == body
    assert reader._limit == 1001
    assert await reader.readline() == b"QUIT\r\n"
    reader.feed_data(b"y" * 2000 + b"\r\n")
    with pytest.raises(ValueError):  # a command line over the limit is refused as before
        await reader.readline()


async def test_the_client_going_away_mid_data_is_an_incomplete_read():
    reader = asyncio.StreamReader(limit=1001)
    reader.feed_data(b"Subject: x\r\n\r\nhalf a mess")
    reader.feed_eof()
    with pytest.raises(asyncio.IncompleteReadError):
        await read_data(reader, DataCollector(None, 1001))


async def test_over_a_socket_the_server_answers_each_message(relay_factory, sink):
    """Two pipelined messages in one session, sent in odd-sized writes, through the real listener."""
    relay = await relay_factory(delivery={"smarthost": sink.address})
    port = relay.smtp_addresses[0][1]
    big = b"Subject: one\r\n\r\n" + b".leading dot\r\n" * 2000
    small = b"Subject: two\r\n\r\n.\r\n..\r\n"

    def session() -> list[bytes]:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            f = s.makefile("rb")
            replies = [f.readline()]

            def command(line: bytes) -> bytes:
                s.sendall(line)
                reply = f.readline()
                while reply[3:4] == b"-":
                    reply = f.readline()
                return reply

            command(b"EHLO client.test\r\n")
            for body in (big, small):
                assert command(b"MAIL FROM:<app@example.com>\r\n").startswith(b"250")
                assert command(b"RCPT TO:<user@example.org>\r\n").startswith(b"250")
                assert command(b"DATA\r\n").startswith(b"354")
                data = stuffed(body)
                for at in range(0, len(data), 7777):
                    s.sendall(data[at : at + 7777])
                replies.append(f.readline())
            replies.append(command(b"QUIT\r\n"))
            return replies

    replies = await asyncio.to_thread(session)
    assert replies[1].startswith(b"250 2.0.0") and replies[2].startswith(b"250 2.0.0"), replies
    assert replies[3].startswith(b"221")
    received = await sink.handler.wait_for(2)
    bodies = sorted((m.data for m in received), key=len)
    assert bodies[0].endswith(small) and bodies[1].endswith(big)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from([b"a", b".", b"\r", b"\n", b"\r\n", b"..", b"x y", b"\xc3\xa9"]), max_size=40))
def test_wire_form_matches_aiosmtplibs_encoding(parts):
    """relay's DATA encoding of a queued message (made CRLF text at acceptance, whatever its line ends) gives
    the bytes aiosmtplib's data() would have sent."""
    raw = b"".join(parts)
    expected = PERIOD_REGEX.sub(b"..", normalize_message_line_endings(raw)) + b".\r\n"
    assert wire_form(crlf_line_ends(raw)) == expected


async def test_wire_form_arrives_as_sent(sink):
    """A message with dotted lines crosses a real aiosmtpd sink intact."""
    import aiosmtplib

    raw = b"Subject: dots\r\n\r\n.\r\n..two\r\nbare lf\r\nbare cr\r\n.last"
    host, port = sink.address.rsplit(":", 1)
    smtp = aiosmtplib.SMTP(hostname=host, port=int(port), timeout=10, start_tls=False)
    await smtp.connect()
    await smtp.mail("a@example.com")
    await smtp.rcpt("b@example.org")
    reply = await send_data(smtp, wire_form(raw))
    await smtp.quit()
    assert reply.code == 250
    (received,) = await sink.handler.wait_for(1)
    assert received.data == b"Subject: dots\r\n\r\n.\r\n..two\r\nbare lf\r\nbare cr\r\n.last\r\n"


async def test_an_over_long_line_is_refused_after_the_data_and_the_session_goes_on(relay_factory, sink):
    import smtplib

    relay = await relay_factory(delivery={"smarthost": sink.address})
    port = relay.smtp_addresses[0][1]

    def send() -> tuple[int, int]:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
            try:
                smtp.sendmail("app@example.com", ["user@example.org"], b"Subject: long\r\n\r\n" + b"z" * 1200 + b"\r\n")
                refused = 0
            except smtplib.SMTPDataError as exc:
                refused = exc.smtp_code
                assert exc.smtp_error.startswith(b"5.5.2 Line too long")
            smtp.sendmail("app@example.com", ["user@example.org"], b"Subject: fine\r\n\r\nshort\r\n")
            return refused, smtp.noop()[0]

    assert await asyncio.to_thread(send) == (500, 250)
    (received,) = await sink.handler.wait_for(1)
    assert received.data.endswith(b"Subject: fine\r\n\r\nshort\r\n")


@settings(max_examples=2000, deadline=None)
@given(st.text(alphabet='ab.@-+_ <>"(),;:\\é\t=', max_size=20))
def test_plain_paths_are_what_aiosmtplib_would_send(address):
    """path_of() skips aiosmtplib's parsing only where its quote_address gives the same path."""
    from aiosmtplib.email import quote_address

    from relay.delivery.client import path_of

    for text in (address, f"user{address}@example.com", f"{address}x@host.example"):
        path = path_of(text)
        if path is not None:
            assert path.decode() == quote_address(text), text


def feed(stream: bytes, pieces: list[int], max_size: int | None = None) -> tuple[DataCollector, bytes]:
    """Feed ``stream`` to DataCollector.feed in pieces of the given sizes, as the server's reads come."""
    collector = DataCollector(max_size, 1001)
    at = 0
    for size in [*pieces, len(stream)]:
        piece = stream[at : at + size]
        taken = collector.feed(piece)
        if taken is not None:
            return collector, piece[taken:] + stream[at + size :]
        at += size
    raise AssertionError("the end of the data was not found")


@pytest.mark.parametrize("body", BODIES, ids=range(len(BODIES)))
def test_fed_bodies_end_at_the_end_of_data_line_whatever_the_pieces(body):
    stream = stuffed(body) + b"QUIT\r\n.\r\n"
    rnd = random.Random(len(body))
    for pieces in ([len(stream)], [1] * len(stream), [rnd.randint(1, 700) for _ in range(len(stream) // 300 + 3)]):
        collector, rest = feed(stream, pieces)
        assert collector.body() == crlf_line_ends(body)
        assert rest == b"QUIT\r\n.\r\n", "what follows the data belongs to the next command"


@settings(max_examples=300, deadline=None)
@given(
    lines=st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\r\n", b"")), max_size=30),
    cut=st.integers(min_value=1, max_value=50),
)
def test_any_fed_body_round_trips(lines, cut):
    body = b"".join(line.replace(b"\r", b"").replace(b"\n", b"") + b"\r\n" for line in lines)
    stream = stuffed(body) + b"RSET\r\n"
    collector, rest = feed(stream, [cut] * (len(stream) // cut + 1))
    assert collector.body() == body
    assert rest == b"RSET\r\n"


@pytest.mark.parametrize("cut", range(1, 5))
def test_the_end_of_data_split_across_pieces_is_found(cut):
    stream = b"Subject: x\r\n\r\nhi\r\n.\r\nNOOP\r\n"
    end = stream.index(b"\r\n.\r\n")
    collector, rest = feed(stream, [end + cut])
    assert collector.body() == b"Subject: x\r\n\r\nhi\r\n" and rest == b"NOOP\r\n"


def test_an_empty_message_ends_at_once():
    collector, rest = feed(b".\r\nQUIT\r\n", [1, 1, 1])
    assert collector.body() == b"" and rest == b"QUIT\r\n"


async def test_a_bare_lf_dot_never_ends_fed_data():
    stream = b"a\n.\nb\r\n.\nc\n.\r\nd\r\n.\r\n"
    collector, rest = feed(stream, [3, 3, 3])
    read_collector, _ = await read(stream, [3, 3, 3])
    assert collector.body() == read_collector.body() == b"a\r\n\r\nb\r\n\r\nc\r\n\r\nd\r\n" and rest == b""
