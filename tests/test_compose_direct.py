"""relay.compose_direct: the common API message written directly, byte for byte as the email package writes it
(and relay.compose's reading of the usual address forms without the email package's parser, as it reads them).

Each message relay.compose_direct takes is built both ways, with the same Message-ID, Date and random state
(the multipart boundary is random), and the bytes must be equal; what it does not take goes to the email
package. Then what ``compose.build`` writes is read back with the email package (structure, text, names,
subjects, attachments) and DKIM-signed and verified.
"""

from __future__ import annotations

import base64
import random
import string
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from email import message_from_bytes, quoprimime
from email.message import EmailMessage
from email.policy import default
from email.utils import format_datetime, getaddresses, make_msgid
from typing import Any

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from relay.compose import (
    _PLAIN_MAILBOX,
    Composition,
    FieldError,
    Limits,
    build,
    build_with_email,
    name_and_address,
    parse_request,
)
from relay.compose_direct import build_direct, quoted_printable
from relay.dkim import DomainKey, Signer, public_key_record

DATE = format_datetime(datetime(2027, 1, 15, 8, 0, tzinfo=UTC))
BASE = {"from": "Shop <news@example.com>", "to": "user@example.org", "subject": "Sale"}
FIVE_KB = "Hello,\n\n" + "Our big sale starts today, with prices down on almost everything.\n" * 75

# Requests relay.compose_direct writes itself (each must come out as the email package writes it).
DIRECT: dict[str, dict[str, Any]] = {
    "text": {"text": "Big sale today."},
    "html": {"html": "<p>Big sale today.</p>"},
    "text and html": {"text": FIVE_KB, "html": "<p>" + FIVE_KB.replace("\n", "<br>\n") + "</p>"},
    "one long line (quoted-printable)": {"text": "x" * 4000},
    "long lines after ten short ones": {"text": "a\n" * 12 + "b" * 200 + "\n=\n"},
    "non-ASCII text, short lines (8bit)": {"text": "Café ☃ déjà vu\nzweite Zeile"},
    "non-ASCII text, long lines (base64)": {"text": "☃" * 300, "html": "<p>" + "é" * 100 + "</p>"},
    "empty text": {"text": ""},
    "text with CR, LF and CRLF": {"text": "one\rtwo\nthree\r\nfour\n\n"},
    "a body line looking like a boundary": {"text": "--===============0000000000000000000==\n", "html": "<p></p>"},
    "no subject": {"subject": None, "text": "x"},
    "quoted display name": {"from": "John Q. Public <john@example.com>", "text": "x"},
    "name object, cc and reply_to": {
        "from": {"email": "a@example.com", "name": "Ann O'Neil"},
        "to": ["b@example.org", "Bob <c@example.org>"],
        "cc": ["d@example.net"],
        "reply_to": "help@example.com",
        "text": "x",
    },
    "custom headers": {
        "headers": {"X-Campaign": "spring-2027", "List-Unsubscribe": "<mailto:u@example.com>"},
        "text": "x",
    },
}

# Requests it leaves to the email package.
VIA_EMAIL: dict[str, dict[str, Any]] = {
    "attachment": {"text": "x", "attachments": [{"filename": "a.txt", "content": base64.b64encode(b"hi").decode()}]},
    "non-ASCII subject": {"subject": "Soldes d'été ☀", "text": "x"},
    "non-ASCII display name": {"from": "Zoë <zoe@example.com>", "text": "x"},
    "non-ASCII address": {"to": "josé@exämple.org", "text": "x"},
    "subject to fold": {"subject": "word " * 20 + "end", "text": "x"},
    "many recipients to fold": {"to": [f"user{i}@example.org" for i in range(8)], "text": "x"},
    "double space in subject": {"subject": "a  b", "text": "x"},
    "encoded-word look in a header": {"headers": {"X-Note": "=?utf-8?q?x?="}, "text": "x"},
    "structured custom header": {"headers": {"Sender": "other@example.com"}, "text": "x"},
    "Content-* custom header": {"headers": {"Content-Language": "en"}, "text": "x", "html": "<p>x</p>"},
}


def composition(fields: dict[str, Any]) -> Composition:
    return parse_request({k: v for k, v in {**BASE, **fields}.items() if v is not None}, Limits())


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """The global random state (the email package draws the boundary from it) set, then put back."""
    state = random.getstate()
    random.seed(seed)
    try:
        yield
    finally:
        random.setstate(state)


def both_ways(c: Composition, hostname: str = "relay.example.com", seed: int = 7) -> tuple[bytes | None, bytes | None]:
    """The bytes of both ways; the email package's only when the direct way wrote some (the email package raises
    on a few odd addresses that parse_request lets through: the direct way must decline those)."""
    message_id = make_msgid(domain=hostname)
    with seeded(seed):
        direct = build_direct(c, message_id, DATE)
    if direct is None:
        return None, None
    with seeded(seed):
        return direct, build_with_email(c, message_id, DATE)


@pytest.mark.parametrize("fields", DIRECT.values(), ids=DIRECT.keys())
def test_the_common_message_is_written_as_the_email_package_writes_it(fields):
    direct, with_email = both_ways(composition(fields))
    assert direct is not None
    assert direct == with_email


def test_a_hostname_too_long_for_one_line_still_matches():
    direct, with_email = both_ways(composition({"text": "x"}), hostname="h" * 70 + ".example")
    assert direct is None or direct == with_email


@pytest.mark.parametrize("fields", VIA_EMAIL.values(), ids=VIA_EMAIL.keys())
def test_the_rest_goes_to_the_email_package(fields):
    c = composition(fields)
    assert build_direct(c, make_msgid(domain="relay.example.com"), DATE) is None
    assert message_from_bytes(build(c, "relay.example.com", 1.8e9), policy=default)["From"]


# -- generated messages: many shapes, each either declined or equal ------------------------------

PIECES = ["a", "Bob", "x", " ", "  ", ".", ",", '"', "\\", "(", ")", "<", ">", ";", ":", "@", "[", "]", "'", "-"]
PIECES += ["=?", "?=", "=", "!", "#", "~", "Z9", "é", "☃", "\t", "x" * 30, "From ", "--"]
PLAIN = ["a", "Bob", "x", " ", ".", ",", "-", "'", "Z9", "!", "#", "=", "(", ")", '"', "<", ":", "@", ";"]


class Generator:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.pieces = PLAIN

    def words(self, most: int = 6) -> str:
        return "".join(self.rng.choice(self.pieces) for _ in range(self.rng.randint(0, most)))

    def address(self) -> str | dict[str, str]:
        local = self.rng.choice(["a", "b.c", "x-y", "x+y", "o'neil", '"q r"', "é", "A" * self.rng.randint(1, 40)])
        domain = self.rng.choice(["example.com", "b.c", "exämple.org", "x" * self.rng.randint(1, 40) + ".test"])
        spec, shape = f"{local}@{domain}", self.rng.random()
        return (
            spec
            if shape < 0.3
            else f"{self.words()} <{spec}>"
            if shape < 0.6
            else {"email": spec, "name": self.words()}
        )

    def body(self) -> str | None:
        shapes = [
            lambda: None,
            lambda: self.words(40),
            lambda: "x" * self.rng.randint(70, 90),
            lambda: "\n".join(self.words(30) for _ in range(self.rng.randint(0, 15))),
            lambda: "<p>" + "é" * self.rng.randint(0, 100) + "</p>",
            lambda: "line\n" * self.rng.randint(8, 12) + "y" * 100,
            lambda: "".join(
                self.rng.choice(string.printable + "é\x00\x0b\x85") for _ in range(self.rng.randint(0, 300))
            ),
        ]
        return self.rng.choice(shapes)()

    def request(self) -> dict[str, Any]:
        self.pieces = PLAIN if self.rng.random() < 0.8 else PIECES
        rng = self.rng
        data: dict[str, Any] = {"from": self.address(), "to": [self.address() for _ in range(rng.randint(1, 4))]}
        if rng.random() < 0.3:
            data["cc"] = [self.address() for _ in range(rng.randint(1, 2))]
        if rng.random() < 0.2:
            data["reply_to"] = self.address()
        if rng.random() < 0.7:
            data["subject"] = self.words(15)
        data["text"], data["html"] = self.body(), self.body()
        if rng.random() < 0.3:
            names = ["X-Tag", "In-Reply-To", "References", "Sender", "Content-Language", "x-lower", "List-Id"]
            data["headers"] = {rng.choice(names): self.words(10) for _ in range(rng.randint(1, 3))}
        return data


def test_generated_messages_are_declined_or_written_identically():
    generator, direct_count = Generator(2027), 0
    for i in range(10000):
        try:
            c = parse_request(generator.request(), Limits())
        except FieldError:
            continue
        direct, with_email = both_ways(c, seed=i)
        if direct is not None:
            assert direct == with_email, c
            direct_count += 1
    assert direct_count > 250  # the generator does reach the direct path


# -- what build writes, read back ----------------------------------------------------------------


def content(part: EmailMessage) -> str:
    """A text part's content with its lines ended by LF (as read from the CRLF message, they end with CRLF)."""
    return str(part.get_content()).replace("\r\n", "\n")


def read(fields: dict[str, Any]) -> EmailMessage:
    raw = build(composition(fields), "relay.example.com", 1.8e9)
    message = message_from_bytes(raw, policy=default)
    assert isinstance(message, EmailMessage)
    assert not message.defects
    return message


@pytest.mark.parametrize(
    ("fields", "content_type"),
    [({"text": "Hi ☃"}, "text/plain"), ({"html": "<p>Hi</p>"}, "text/html"), (DIRECT["text and html"], None)],
    ids=["text", "html", "both"],
)
def test_the_bodies_read_back(fields, content_type):
    message = read(fields)
    assert message["Subject"] == "Sale"
    assert message["From"].addresses[0].display_name == "Shop"
    assert message["MIME-Version"] == "1.0"
    if content_type is not None:
        assert message.get_content_type() == content_type
        assert content(message) == (fields.get("text") or fields["html"]) + "\n"
        return
    assert message.get_content_type() == "multipart/alternative"
    text, html = message.iter_parts()
    assert content(text) == fields["text"]
    assert content(html) == fields["html"] + "\n"


def test_attachments_non_ascii_names_and_subjects_read_back():
    message = read(
        {
            "from": "Zoë Ünal <zoe@example.com>",
            "subject": "Soldes d'été ☀",
            "text": "see attached",
            "attachments": [{"filename": "reçu.pdf", "content": base64.b64encode(b"%PDF-1").decode()}],
        }
    )
    assert message["Subject"] == "Soldes d'été ☀"
    assert message["From"].addresses[0].display_name == "Zoë Ünal"
    assert message.get_content_type() == "multipart/mixed"
    body, attachment = message.iter_parts()
    assert content(body) == "see attached\n"
    assert attachment.get_filename() == "reçu.pdf"
    assert attachment.get_content() == b"%PDF-1"


@pytest.mark.parametrize("fields", [DIRECT["text and html"], DIRECT["non-ASCII text, long lines (base64)"]])
def test_a_directly_written_message_signs_and_verifies(fields):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    c = composition(fields)
    assert build_direct(c, make_msgid(domain="relay.example.com"), DATE) is not None
    signed = Signer({"example.com": DomainKey("example.com", "s1", pem)}).sign(build(c, "relay.example.com", 1.8e9))
    assert signed.startswith(b"DKIM-Signature:")
    record = public_key_record(pem).encode()
    assert dkim.verify(signed, dnsfunc=lambda name, timeout=5: record)


# -- addresses: the usual forms read without the email package's parser ----------------------------


@pytest.mark.parametrize(
    "item",
    [
        "a@example.com",
        "Bench <bench@example.com>",
        "Ann Lee <ann.lee+tag@Mail-1.Example.org>",
        "o'neil/x=y?z@example.com",
        "Bob  Two Spaces <b@example.com>",  # the parser collapses the spaces: not the fast path's form
        '"Lee, Ann" <ann@example.com>',
        "Zoë <zoe@example.com>",
        "a@b@example.com",
        "a..b@example.com",
        "<a@example.com>",
        "a@example.com, b@example.com",
    ],
)
def test_an_address_reads_as_getaddresses_reads_it(item):
    assert name_and_address(item) == getaddresses([item])


# The email package with the fix for CVE-2023-27043 (Python 3.11.10+, 3.12.6+, 3.13, Debian 12's 3.11.2) reads
# no address with a "[" in it; relay reads an address literal as the package did before (tests/test_fuzz_inputs.py).
READS_NO_LITERAL = getaddresses(["x@[192.0.2.1]"]) == [("", "")]


def test_generated_addresses_read_as_getaddresses_reads_them():
    """On a Python before that fix, exactly as getaddresses (address literals too: read through a placeholder)."""
    rng, fast = random.Random(22), 0
    pieces = [*"aZ9 .<>@\"'(),;:[]\\-_+=/?#é\t", "bob", "example.com", " <", ">", "@ex.org", "  ", "=?"]
    for _ in range(30000):
        item = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 10)))
        if rng.random() < 0.3:
            item = rng.choice(["Bob", "Bob Smith", "B0b  X", "a b c"]) + " <" + item + ">"
        if rng.random() < 0.2:
            item = rng.choice(["a", "a.b", "x'y", "a+b"]) + "@" + rng.choice(["ex.com", "EX-1.org", "a..b", "a.b."])
        fast += _PLAIN_MAILBOX.fullmatch(item) is not None
        if READS_NO_LITERAL and "@[" in item:
            continue
        assert name_and_address(item) == getaddresses([item]), item
    assert fast > 1000  # the generator does reach the fast path


# -- quoted-printable -------------------------------------------------------------------------------


def body_encode(data: bytes) -> str:
    return quoprimime.body_encode(data.decode("latin-1"), 78)


@pytest.mark.parametrize(
    "text",
    [
        "x" * 4000 + "\r\n",
        '<p class="a" style="b">' * 200,  # '=' the only octet to escape
        "Café déjà vu, prix=10€ " * 100,  # 8-bit octets too
        "ends in a space \r\nand a tab\t\nand = sign=",
        "",
    ],
)
def test_quoted_printable_is_body_encode(text):
    data = text.encode("utf-8")
    assert quoted_printable(data) == body_encode(data)


def test_quoted_printable_cuts_lines_as_body_encode_does():
    """Lines around the cut, with '=' (three characters to keep whole) and white space at their ends."""
    rng = random.Random(45)
    pieces = ["x", " ", "\t", "=", "\r\n", "\n", "\r", "é", "\x00", "\x85", "\x7f", "<a href=x>", "y" * 76, "z" * 77]
    for _ in range(20000):
        data = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 30))).encode("utf-8")
        assert quoted_printable(data) == body_encode(data), data
    for length in range(70, 240):
        for end in ["", " ", "\t", "=", "==", " \r\n", "\t\t"]:
            for start in ["", "=", "a="]:
                data = (start + "x" * length + end).encode()
                assert quoted_printable(data) == body_encode(data), data


def test_a_body_holding_the_boundary_gets_another_one():
    with seeded(1):
        drawn = build_direct(composition({"text": "a", "html": "b"}), "<m@x>", DATE)
    assert drawn is not None
    boundary = message_from_bytes(drawn, policy=default).get_boundary()
    c = composition({"text": f"before\n--{boundary}\nafter", "html": f"<p>--{boundary}--</p>"})
    with seeded(1):
        raw = build_direct(c, "<m@x>", DATE)
    assert raw is not None
    message = message_from_bytes(raw, policy=default)
    assert message.get_boundary() == f"{boundary}.0"
    text, html = message.iter_parts()
    assert content(text) == f"before\n--{boundary}\nafter\n"
    assert content(html) == f"<p>--{boundary}--</p>\n"
