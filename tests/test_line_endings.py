"""Bare LF line endings over SMTP: a bare LF is a line end (as for Postfix), so a message gets the same
decision, the same stored bytes and the same delivered bytes whatever line ends its client used."""

from __future__ import annotations

import asyncio
import base64
import random
import re
import smtplib
import sqlite3

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay.compose import FieldError, Limits, build, parse_request
from relay.credentials import create_smtp_credential
from relay.delivery.client import wire_form
from relay.dkim import DomainKey, Signer
from relay.message import (
    UnreadableFrom,
    crlf_line_ends,
    crlf_only,
    from_addresses,
    from_domain,
    has_line_over,
    header_section_ended,
)
from relay.store import schema as sqlite_schema
from relay.store.queue import MessageFilter
from tests.conftest import smtp_reply, store_rows
from tests.test_dkim import new_key, publish, verifier

PLAINTEXT_AUTH = {"trusted_networks": ["192.0.2.0/24"], "plaintext_auth_networks": ["127.0.0.0/8"]}


def wire(lines: list[bytes], ends: list[bytes]) -> bytes:
    """A DATA stream: each line with its own line end (the last is the CRLF of <CRLF>.<CRLF>), a leading
    dot doubled after any line end as smtplib and Postfix's sendmail do, then the end-of-data line."""
    stuffed = [b"." + line if line.startswith(b".") else line for line in lines]
    return b"".join(line + end for line, end in zip(stuffed, [*ends, b"\r\n"], strict=False)) + b".\r\n"


class Client:
    """A raw-socket SMTP client: sends exactly the bytes it is given."""

    def __init__(self, port: int) -> None:
        self.port = port

    async def send(self, data: bytes, *, sender: str, auth: tuple[str, str] | None = None) -> str:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:

            async def command(line: bytes) -> str:
                writer.write(line)
                return await smtp_reply(reader)

            await command(b"")  # greeting
            await command(b"EHLO client.test\r\n")
            if auth:
                token = base64.b64encode(f"\0{auth[0]}\0{auth[1]}".encode()).decode()
                assert (await command(f"AUTH PLAIN {token}\r\n".encode())).startswith("235")
            assert (await command(f"MAIL FROM:<{sender}>\r\n".encode())).startswith("250")
            assert (await command(b"RCPT TO:<you@example.org>\r\n")).startswith("250")
            assert (await command(b"DATA\r\n")).startswith("354")
            reply = await command(data)
            await command(b"QUIT\r\n")
            return reply.strip()
        finally:
            writer.close()


async def stored_raw(relay, message_id: str) -> bytes:
    ((raw,),) = await store_rows(relay.store, "SELECT raw FROM message_bodies WHERE message_id = ?", message_id)
    return bytes(raw)


def without_trace(raw: bytes) -> bytes:
    """The message less relay's Received: header and a DKIM-Signature (both carry times and ids)."""
    for name in (b"DKIM-Signature", b"Received"):
        raw = re.sub(rb"(?s)\A" + name + rb":.*?\r\n(?![ \t])", b"", raw, count=1)
    return raw


@pytest.fixture
async def strict_relay(relay_factory, sink, dns_server, tmp_path):
    path, pem = new_key(tmp_path)
    publish(dns_server, "s1", "example.com", pem)
    relay = await relay_factory(
        smtp=PLAINTEXT_AUTH,
        delivery={"smarthost": sink.address},
        domains={"require_verified_domain": True},
        dkim={"domains": {"example.com": {"selector": "s1", "private_key": str(path)}}},
    )
    relay.domains.sending.verified.add("example.com")
    cred, password = await create_smtp_credential(
        relay.store.credentials, relay.store.clock, allowed_from=("example.com",)
    )
    return relay, (cred.username, password)


FROMS = {  # From: value → may the credential (allowed: example.com) send it?
    b"me@example.com": True,
    b"App <me@example.com>": True,
    b'"Shop, Inc." <shop@example.com>': True,
    b"ceo@bank.example": False,
    b"CEO <ceo@bank.example>": False,
    b"=?utf-8?q?me=40example.com_=28?= <ceo@bank.example>": False,  # an encoded word never hides the address
}
BODY_LINES = [b"", b".", b"..", b".hidden", b"Hi <me@example.com>", b"From: me@example.com", b"text", b"a\tb"]


@st.composite
def messages(draw):
    from_value = draw(st.sampled_from(sorted(FROMS)))
    headers = [
        b"From: " + from_value,
        b"To: you@example.org",
        b"Subject: " + draw(st.sampled_from([b"Hello", b"two\r\n words", b"=?utf-8?q?caf=C3=A9?="])),
        b"Message-ID: <fixed@example.com>",
        b"Date: Tue, 01 Dec 2026 10:00:00 +0000",
    ]
    if draw(st.booleans()):
        headers.append(b"X-Relay-Tags: welcome, trial")
    headers = draw(st.permutations(headers))
    lines = b"\r\n".join(headers).split(b"\r\n") + [b""] + draw(st.lists(st.sampled_from(BODY_LINES), max_size=8))
    mixed = draw(st.lists(st.sampled_from([b"\r\n", b"\n"]), min_size=len(lines) - 1, max_size=len(lines) - 1))
    return from_value, lines, mixed


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(example=messages())
async def test_lf_crlf_and_mixed_forms_get_one_decision_and_one_text(strict_relay, sink, dns_server, example):
    relay, auth = strict_relay
    from_value, lines, mixed = example
    client = Client(relay.smtp_addresses[0][1])
    forms = {"crlf": [b"\r\n"] * len(mixed), "lf": [b"\n"] * len(mixed), "mixed": mixed}
    replies, stored = {}, {}
    arrived_before = len(sink.handler.received)
    for name, ends in forms.items():
        reply = await client.send(wire(lines, ends), sender="me@example.com", auth=auth)
        replies[name] = re.sub(r"queued as \w+", "queued as ID", reply)
        if reply.startswith("250"):
            stored[name] = without_trace(await stored_raw(relay, reply.rsplit(" ", 1)[1]))
    assert len(set(replies.values())) == 1, replies
    allowed = FROMS[from_value]
    assert replies["crlf"].startswith("250" if allowed else "550 5.7.1"), replies
    if not allowed:
        return
    assert len(set(stored.values())) == 1, stored
    text = stored["crlf"]
    assert b"\n" not in text.replace(b"\r\n", b"") and b"\r" not in text.replace(b"\r\n", b"")
    assert text.count(b"\r\nMessage-ID:") + text.startswith(b"Message-ID:") == 1, "no second Message-ID"
    assert b"X-Relay-Tags" not in text
    delivered = await sink.handler.wait_for(arrived_before + 3)
    copies = [m.data for m in delivered[arrived_before:]]
    assert len({without_trace(c) for c in copies}) == 1
    verify = verifier(dns_server)
    for copy in copies:
        assert b"d=example.com;" in copy and await asyncio.to_thread(verify, copy)


async def test_lf_message_from_a_foreign_domain_is_refused_for_a_limited_credential(strict_relay):
    relay, auth = strict_relay
    raw = b"To: you@example.org\nFrom: CEO <ceo@bank.example>\nSubject: x\n\nWrite to <me@example.com>\n"

    def submit() -> None:
        with smtplib.SMTP("127.0.0.1", relay.smtp_addresses[0][1], timeout=10) as smtp:
            smtp.login(*auth)
            smtp.sendmail("me@example.com", ["you@example.org"], raw)  # bytes: sent with their bare LFs

    with pytest.raises(smtplib.SMTPDataError, match="bank.example") as refused:
        await asyncio.to_thread(submit)
    assert refused.value.smtp_code == 550


async def test_lf_message_from_a_foreign_domain_is_not_signed(relay_factory, sink, tmp_path):
    """The field report: first header From: someone@evil.example, the body naming <me@example.com>."""
    path, _ = new_key(tmp_path)
    relay = await relay_factory(
        delivery={"smarthost": sink.address},
        dkim={"domains": {"example.com": {"selector": "s1", "private_key": str(path)}}},
    )
    raw = b"From: someone@evil.example\nTo: you@example.org\nSubject: x\n\nWrite to <me@example.com>\n"

    def submit() -> None:
        with smtplib.SMTP("127.0.0.1", relay.smtp_addresses[0][1], timeout=10) as smtp:
            smtp.sendmail("me@example.com", ["you@example.org"], raw)

    await asyncio.to_thread(submit)
    [arrived] = await sink.handler.wait_for(1)
    assert b"DKIM-Signature" not in arrived.data
    assert b"\r\nFrom: someone@evil.example\r\nTo: you@example.org\r\n" in arrived.data


async def test_lf_message_relay_headers_are_applied_and_removed(relay_factory, sink):
    relay = await relay_factory(delivery={"smarthost": sink.address})
    raw = (
        b"From: App <me@example.com>\nTo: you@example.org\nSubject: Welcome\n  aboard\nX-Relay-Tags: welcome\n"
        b'X-Relay-Metadata: {"user": 42}\nMessage-ID: <one@example.com>\n\nHello\n.dotted\n'
    )

    def submit() -> dict[str, tuple[int, bytes]]:
        with smtplib.SMTP("127.0.0.1", relay.smtp_addresses[0][1], timeout=10) as smtp:
            return smtp.sendmail("me@example.com", ["you@example.org"], raw)

    assert await asyncio.to_thread(submit) == {}
    [arrived] = await sink.handler.wait_for(1)
    assert b"X-Relay-" not in arrived.data
    assert arrived.data.count(b"Message-ID:") == 1
    assert b"\r\n\r\nHello\r\n.dotted\r\n" in arrived.data
    [record] = await relay.store.queue.messages(MessageFilter(), 10)
    assert record.subject == "Welcome aboard"
    assert record.tags == ["welcome"] and record.metadata == {"user": 42}


def test_from_addresses_are_read_from_the_header_as_written():
    def msg(*headers: bytes) -> bytes:
        return b"\r\n".join(headers) + b"\r\n\r\nbody <other@example.net>\r\n"

    assert from_addresses(msg(b"From: App <me@example.com>")) == ["me@example.com"]
    assert from_addresses(msg(b"Subject: x", b"From: a@x.example,\r\n B <b@y.example>")) == [
        "a@x.example",
        "b@y.example",
    ]
    assert from_domain(msg(b"From: =?utf-8?q?me=40example.com_=28?= <ceo@Bank.Example>")) == "bank.example"
    assert from_domain(msg(b"From: John Q. Public <john@example.com>")) == "example.com"
    for unreadable in (
        msg(b"To: x@example.org"),  # none
        msg(b"From: a@example.com", b"From: b@evil.example"),  # DKIM would sign the last, checks read the first
        msg(b"From: a@example.com <b@evil.example>"),  # readers disagree on which address this is
        msg(b"From: <>"),
        msg(b"From: a@x.example, b@y.example"),  # for from_domain: two domains
        msg(b"From: , .<"),  # the email package's parser raises TypeError on this one
    ):
        with pytest.raises(UnreadableFrom):
            from_domain(unreadable)


FROM_PIECES = [*'<>"()\\@.:;, []a\x1c\t=?', "=?utf-8?q?x?=", "a@b", "<a@b>"]


@settings(max_examples=2000, deadline=None)
@given(st.lists(st.sampled_from(FROM_PIECES), max_size=14).map("".join))
def test_a_from_header_is_read_or_unreadable_never_an_exception(value: str) -> None:
    """The email package's parser raises IndexError, TypeError or AttributeError on some forms (``, .<``):
    each is an unreadable From: (a 5xx to the client), never relay's 451 guard and a traceback."""
    raw = ("From: " + value + "\r\nSubject: x\r\n\r\nbody\r\n").encode()
    try:
        addresses = from_addresses(raw)
    except UnreadableFrom:
        return
    assert addresses and all("@" in a for a in addresses)


def test_crlf_line_ends_treats_bare_lf_and_lone_cr_as_line_ends():
    assert crlf_line_ends(b"a\r\nb\r\n") == b"a\r\nb\r\n"
    assert crlf_line_ends(b"a\nb\r\nc\rd\r\r\n") == b"a\r\nb\r\nc\r\nd\r\n\r\n"


# Texts made of line ends of every kind and short runs of other bytes, where the cases meet.
LINE_PIECES = st.lists(
    st.sampled_from([b"\r\n", b"\n", b"\r", b"\r\r\n", b"\n\r", b"x", b"xy", b".", b" "]), max_size=40
)


@given(st.one_of(st.binary(max_size=200), LINE_PIECES.map(b"".join)))
def test_crlf_only_is_every_line_end_a_crlf(data):
    assert crlf_only(data) == (re.search(rb"\r(?!\n)|(?<!\r)\n", data) is None)


@given(
    st.lists(st.integers(min_value=0, max_value=40), max_size=12),
    st.sampled_from([b"\n", b"\r\n", b"\r"]),
    st.integers(min_value=0, max_value=45),
)
def test_has_line_over_is_the_longest_line_between_lfs(lengths, end, limit):
    data = end.join(b"x" * n for n in lengths)
    assert has_line_over(data, limit) == (max(map(len, data.split(b"\n"))) > limit)


HEADER_LINES = st.lists(
    st.sampled_from([b"Subject: x", b"X-A : y", b" fold", b"\tfold", b"", b"text", b"a: b: c", b":x", b"From me"]),
    max_size=8,
)


@given(HEADER_LINES, st.booleans())
def test_header_section_ended_only_adds_the_empty_line_a_header_lacks(lines, final_crlf):
    raw = b"\r\n".join(lines) + (b"\r\n" if final_crlf else b"")
    ended = header_section_ended(raw)
    assert header_section_ended(ended) == ended
    if ended != raw:  # one CRLF, put in at the start of a line
        line_starts = [0] + [i + 2 for i in range(len(raw)) if raw.startswith(b"\r\n", i)]
        assert any(ended == raw[:at] + b"\r\n" + raw[at:] for at in line_starts)
    if raw.startswith(b"From "):
        return  # an mbox separator line: left as it was
    header = ended.split(b"\r\n\r\n", 1)[0] if not ended.startswith(b"\r\n") else b""
    for number, line in enumerate(header.split(b"\r\n") if header else []):
        is_field = re.match(rb"[\x21-\x39\x3b-\x7e]+[ \t]*:", line) is not None
        assert is_field or (number > 0 and line[:1] in (b" ", b"\t")) or (line == b"" and header.endswith(b"\r\n"))


@given(st.binary(max_size=200))
def test_crlf_line_ends_is_its_own_fixed_point(data):
    normal = crlf_line_ends(data)
    assert crlf_only(normal) and crlf_line_ends(normal) == normal
    assert normal.replace(b"\r\n", b"\n") == data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")


# What the queue holds is CRLF text, which delivery sends without scanning it again (wire_form): each path
# that writes a message must make it so. SMTP's is tested above; the HTTP composer's and the signer's here.
TEXT = st.lists(
    st.sampled_from(
        ["a", "\r", "\n", "\r\n", "\x0b", "\x0c", "\x1c", "\x85", "\u2028", "é", ".", " ", "\t", "=", "x" * 90]
    ),
    max_size=30,
).map("".join)


@settings(max_examples=400, deadline=None)
@given(TEXT, st.none() | TEXT, st.booleans(), st.sampled_from(["s", "é ü", "a\u2028b"]))
def test_the_http_composer_writes_crlf_text_whatever_the_fields_line_ends(text, html, attach, subject):
    fields: dict[str, object] = {"from": "a@example.com", "to": "b@example.org", "subject": subject, "text": text}
    if html is not None:
        fields["html"] = html
    if attach:
        fields["attachments"] = [{"filename": "a.txt", "content": "aGkNCmxmCmNyDQ==", "content_type": "text/plain"}]
    try:
        composition = parse_request(fields, Limits())
    except FieldError:  # a subject with a line break is refused, which is fine
        return
    assert crlf_only(build(composition, "relay.test", 1_000_000_000.0))


def test_a_signed_message_is_crlf_text(tmp_path):
    _, pem = new_key(tmp_path)
    signer = Signer({"example.com": DomainKey("example.com", "s1", pem)})
    raw = b"From: me@example.com\r\nTo: x@example.org\r\nSubject: " + b"long " * 60 + b"\r\n\r\nhi\r\n"
    signed = signer.sign(raw)
    assert signed != raw and crlf_only(signed)


def version_18_with_bodies(path, bodies: list[bytes]) -> None:
    """A SQLite store as relay left it at schema version 18, holding ``bodies``."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sqlite_schema, "MIGRATIONS", sqlite_schema.MIGRATIONS[:18])
        conn = sqlite3.connect(path, isolation_level=None)
        assert sqlite_schema.migrate(conn) == 18
    for number, body in enumerate(bodies):
        conn.execute(
            "INSERT INTO messages (id, created_at, sender, size, source, subject)"
            " VALUES (?, 1.0, 'a@example.com', ?, 'smtp', '')",
            (f"m{number:04d}", len(body)),
        )
        conn.execute("INSERT INTO message_bodies (message_id, raw) VALUES (?, ?)", (f"m{number:04d}", body))
    conn.close()


LINE_PIECES = st.lists(
    st.sampled_from([b"a", b"\r", b"\n", b"\r\n", b"\x00", b"\xff", b"\xc3\xa9", b".", b"\r\r\n"]), max_size=40
)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(LINE_PIECES.map(b"".join), min_size=1, max_size=30))
def test_migration_19_makes_every_stored_body_crlf_text_as_acceptance_would(tmp_path_factory, bodies):
    path = tmp_path_factory.mktemp("store") / "relay.sqlite3"
    version_18_with_bodies(path, bodies)
    conn = sqlite3.connect(path, isolation_level=None)
    assert sqlite_schema.migrate(conn) == len(sqlite_schema.MIGRATIONS)
    stored = conn.execute("SELECT raw, typeof(raw) FROM message_bodies ORDER BY message_id").fetchall()
    conn.close()
    assert stored == [(crlf_line_ends(body), "blob") for body in bodies]


def test_postgresql_migration_9_makes_every_stored_body_crlf_text_as_acceptance_would(pg_cluster):
    import psycopg

    from relay.store.postgres import schema as pg_schema

    draw = random.Random(19)
    pieces = [b"a", b"\r", b"\n", b"\r\n", b"\x00", b"\xff", b"\xc3\xa9", b".", b"\r\r\n", b"\\", b"\\0", b"\\123"]
    bodies = [b"".join(draw.choice(pieces) for _ in range(draw.randrange(40))) for _ in range(300)]
    url = pg_cluster.create_database("line_ends_migration")
    try:
        with psycopg.connect(url) as conn:
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(pg_schema, "MIGRATIONS", pg_schema.MIGRATIONS[:8])
                assert pg_schema.migrate(conn) == 8
            for number, body in enumerate(bodies):
                conn.execute(
                    "INSERT INTO messages (id, created_at, sender, size, source, subject)"
                    " VALUES (%s, 1.0, 'a@example.com', %s, 'smtp', '')",
                    (f"m{number:04d}", len(body)),
                )
                conn.execute("INSERT INTO message_bodies (message_id, raw) VALUES (%s, %s)", (f"m{number:04d}", body))
            conn.commit()
            assert pg_schema.migrate(conn) == len(pg_schema.MIGRATIONS)
            stored = [bytes(raw) for (raw,) in conn.execute("SELECT raw FROM message_bodies ORDER BY message_id")]
        assert stored == [crlf_line_ends(body) for body in bodies]
    finally:
        pg_cluster.drop_database("line_ends_migration")


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from([b"a", b".", b"\r\n", b"..", b"x y", b"\xc3\xa9"]), max_size=40))
def test_wire_form_dot_stuffs_crlf_text_and_ends_it(parts):
    raw = b"".join(parts)
    wire = wire_form(raw)
    assert wire.endswith(b"\r\n.\r\n") or wire == b".\r\n"
    lines = wire[:-3].split(b"\r\n")
    assert all(line[1:2] == b"." for line in lines if line.startswith(b"."))  # every dot line doubled
    assert b"\r\n".join(line[1:] if line.startswith(b".") else line for line in lines) in (raw, raw + b"\r\n")


def test_dkim_signs_only_for_the_from_domain(tmp_path):
    _, pem = new_key(tmp_path)
    signer = Signer({"example.com": DomainKey("example.com", "s1", pem)})
    evil = b"From: someone@evil.example\r\nTo: x@example.org\r\n\r\nmail <me@example.com>\r\n"
    assert signer.sign(evil) == evil
    two = b"From: me@example.com\r\nFrom: ceo@evil.example\r\n\r\nhi\r\n"
    assert signer.sign(two) == two
    good = b"From: me@example.com\r\nTo: x@example.org\r\n\r\nhi\r\n"
    assert signer.sign(good).startswith(b"DKIM-Signature:") and b" d=example.com;" in signer.sign(good)


@given(st.floats(min_value=0, max_value=4_102_444_800, allow_nan=False))
def test_the_date_header_is_that_of_the_second_whatever_the_fraction(now: float) -> None:
    # rfc5322_date formats each second once (lru_cache): the text must be what formatting the moment gives.
    from datetime import UTC, datetime
    from email.utils import format_datetime

    from relay.message import rfc5322_date

    assert rfc5322_date(now) == format_datetime(datetime.fromtimestamp(now, UTC))
