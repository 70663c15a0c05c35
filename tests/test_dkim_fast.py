"""relay's own DKIM signer (relay/dkim_sign.py): the same DKIM-Signature as dkimpy, byte for byte, over
the messages clients send; dkimpy for what it does not take; signatures that break when the message does."""

from __future__ import annotations

import functools
import logging
import re

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from relay import dkim_sign
from relay.dkim import SIGNED_HEADERS, DomainKey, Signer, public_key_record

DOMAIN, SELECTOR = "example.com", "s2026"
T = 1_764_000_000  # in the past: dkimpy's verify refuses a t= in the future


@functools.cache
def pem(bits: int = 2048) -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def dkimpy(raw: bytes, key_pem: bytes, domain: str = DOMAIN, selector: str = SELECTOR) -> bytes:
    """What relay signed with before it had its own signer: dkimpy with relay's arguments."""
    signature: bytes = dkim.sign(
        raw,
        selector.encode(),
        domain.encode(),
        key_pem,
        canonicalize=(b"relaxed", b"relaxed"),
        include_headers=list(SIGNED_HEADERS),
        linesep=b"\r\n",
    )
    return signature


def ours(raw: bytes, key_pem: bytes, timestamp: int, domain: str = DOMAIN, selector: str = SELECTOR) -> bytes | None:
    return dkim_sign.sign_relaxed(raw, domain.encode(), selector.encode(), key_pem, SIGNED_HEADERS, timestamp)


def same_as_dkimpy(raw: bytes, key_pem: bytes, domain: str = DOMAIN, selector: str = SELECTOR) -> bytes:
    """Our signature of ``raw``, asserted equal to dkimpy's (at the t= dkimpy used)."""
    theirs = dkimpy(raw, key_pem, domain, selector)
    timestamp = int(re.search(rb" t=(\d+);", theirs).group(1))  # type: ignore[union-attr]
    mine = ours(raw, key_pem, timestamp, domain, selector)
    assert mine == theirs, (raw, mine, theirs)
    return mine


def verifies(signed: bytes, key_pem: bytes = pem()) -> bool:
    record = public_key_record(key_pem).encode()
    return bool(dkim.verify(signed, dnsfunc=lambda name, timeout=5: record))


# -- messages as clients write them --------------------------------------------------------------

NAMES = [
    b"From", b"from", b"FROM", b"To", b"to", b"Cc", b"Subject", b"SUBJECT", b"subject", b"Date", b"Message-ID",
    b"Message-Id", b"MIME-Version", b"Content-Type", b"content-transfer-encoding", b"Reply-To", b"References",
    b"In-Reply-To", b"List-Unsubscribe", b"List-Unsubscribe-Post", b"X-Mailer", b"Received", b"X-Relay-Tags",
]  # fmt: skip
WORDS = [
    b"hello", b"Caf\xc3\xa9", b"\xe9t\xe9", b"=?utf-8?q?caf=C3=A9?=", b"<m1@example.com>", b"a@example.com", b"x;y",
    b"b=1", b" ", b"  ", b"\t", b" \t ", b"", b"--", b".", b"\xff\xfe", b"a\rb", b"\r", b"\x0c", b"x" * 300,
]  # fmt: skip
word = st.sampled_from(WORDS)
text = st.lists(word, max_size=6).map(b"".join)


@st.composite
def header_value(draw: st.DrawFn) -> bytes:
    """A value as written after the colon: with or without a leading space, maybe folded (CRLF + WSP)."""
    value = draw(st.sampled_from([b" ", b"", b"  ", b"\t"])) + draw(text)
    for _ in range(draw(st.integers(0, 2))):
        value += b"\r\n" + draw(st.sampled_from([b" ", b"\t", b"    ", b" \t"])) + draw(text)
    return value


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    """A CRLF message: a From: and any other fields (repeated, any case, missing), a body of any lines."""
    fields = [(b"From", b" Shop <news@example.com>")]
    fields += draw(st.lists(st.tuples(st.sampled_from(NAMES), header_value()), max_size=12))
    fields = draw(st.permutations(fields))
    head = b"".join(name + b":" + value + b"\r\n" for name, value in fields)
    if draw(st.integers(0, 9)) == 0:
        return head  # no body, no empty line
    lines = draw(
        st.lists(
            st.one_of(
                text,
                st.sampled_from([b"", b" ", b"\t", b"  \t ", b"end  ", b"trailing\t", b".", b"y" * 2000]),
            ),
            max_size=12,
        )
    )
    body = b"".join(line + b"\r\n" for line in lines) + b"\r\n" * draw(st.integers(0, 3))
    return head + b"\r\n" + body


@settings(max_examples=300, deadline=None)
@given(messages())
def test_the_signature_is_dkimpys_byte_for_byte(raw):
    signature = same_as_dkimpy(raw, pem())
    assert signature is not None  # taken, not left to dkimpy


@settings(max_examples=30, deadline=None)
@given(messages(), st.sampled_from([b"\r\n\r\nadded line\r\n", b"X"]))
def test_the_signature_verifies_and_breaks_when_the_message_changes(raw, addition):
    signer = Signer({DOMAIN: DomainKey(DOMAIN, SELECTOR, pem())}, now=lambda: T)
    assume(signer.key_for(raw) is not None)  # one From: (a second one goes unsigned, as before)
    signed = signer.sign(raw)
    assert signed.startswith(b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.com;")
    assert verifies(signed)
    body_changed = signed + addition if b"\r\n\r\n" in raw else signed + b"\r\n" + addition
    assert not verifies(body_changed)
    assert not verifies(signed.replace(b"news@example.com", b"news@example.net"))  # a signed field
    if not re.search(rb"(?im)^subject:", raw):  # a signed field that was absent, added
        assert not verifies(signed.replace(b"\r\nFrom:", b"\r\nSubject: free\r\nFrom:", 1))
    # a field not in h= may be added: that does not break it
    assert verifies(signed.replace(b"\r\nFrom:", b"\r\nX-Added: yes\r\nFrom:", 1))


@pytest.mark.parametrize(
    "raw",
    [
        b"From: a@example.com\r\n\r\n",  # empty body: hashed as nothing (RFC 6376 §3.4.4)
        b"From: a@example.com\r\n\r\n\r\n\r\n \t \r\n",  # a body of empty lines and whitespace: the same
        b"From: a@example.com\r\n",  # no body, no empty line
        b"From: a@example.com\r\nSubject: one\r\nSubject: two\r\n\r\nx\r\n",  # the last Subject: is signed
        b"FROM:a@example.com\r\nsUbJeCt:\t x \r\n\r\nx\r\n",  # case, no space after the colon
        b"From: a@example.com\r\nSubject: \xe9t\xe9 8-bit\r\n\r\n\xe9t\xe9\r\n",
        b"From: a@example.com\r\nSubject: a lone\rCR\r\n\r\nand\rhere \r\r\n",  # a lone CR is text
        b"From: a@example.com\r\n\r\n" + b"long " * 4000 + b"\r\n",  # one very long line
        b"From:\r\n a@example.com\r\n\r\nfolded from the first line\r\n",
    ],
)
def test_the_edge_cases_dkimpy_takes_sign_the_same(raw):
    signature = same_as_dkimpy(raw, pem())
    assert verifies(signature + raw)


def test_of_two_from_fields_the_last_is_signed_as_dkimpy_signs_it():
    # relay does not sign such a message (Signer.key_for: whose domain?), and dkimpy's verify refuses it
    same_as_dkimpy(b"From: a@example.com\r\nFrom: b@example.com\r\n\r\nx\r\n", pem())


def test_the_relaxed_body_is_rfc_6376s():
    def canonical(body: bytes) -> bytes:
        digest = dkim_sign.body_hash(body, 0)
        return next(c for c in candidates if dkim_sign.hashlib.sha256(c).digest() == digest)

    candidates = [b"", b"a\r\n", b"a b\r\n", b"a b\r\n\r\nc\r\n", b" a b\r\n"]
    assert canonical(b"") == b""  # an empty body hashes as nothing in relaxed (simple would hash a CRLF)
    assert canonical(b"\r\n\r\n") == b""
    assert canonical(b"a\t \r\n\r\n\r\n") == b"a\r\n"  # trailing WSP and trailing empty lines go
    assert canonical(b"a \t  b  \r\n") == b"a b\r\n"  # a WSP run is one space
    assert canonical(b"a  b\r\n \r\nc\r\n") == b"a b\r\n\r\nc\r\n"  # a line of WSP is an empty line
    assert canonical(b"\t a \t b\r\n") == b" a b\r\n"  # leading WSP stays, as one space


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.sampled_from([b"a", b"bc", b"d" * 30, b"e" * 80, b" ", b"; ", b"=", b"\r\n "]), max_size=40).map(
        b"".join
    ),
    st.integers(0, 20),
    st.booleans(),
)
def test_folding_is_dkimpys(value, namelen, crlf):
    value += b"\r\n" if crlf else b""
    assert dkim_sign.fold(value, namelen) == dkim.fold(value, namelen=namelen, linesep=b"\r\n")


@pytest.mark.parametrize("bits", [1024, 2048, 3072, 4096])
def test_every_key_size_signs_the_same(bits):
    key_pem = pem(bits)
    raw = b"From: Shop <news@example.com>\r\nSubject: Sale\r\n\r\nBig  sale   today.\r\n"
    assert verifies(same_as_dkimpy(raw, key_pem) + raw, key_pem)


def test_a_long_domain_and_selector_fold_the_same():
    domain = "mail." + "sub-domain-of-a-long-name." * 5 + "example.com"
    raw = f"From: me@{domain}\r\nSubject: Sale\r\n\r\nhi\r\n".encode()
    same_as_dkimpy(raw, pem(), domain, "selector-" + "x" * 50)


def test_pkcs1_pem_signs_the_same():
    key = serialization.load_pem_private_key(pem(), password=None)
    pkcs1 = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    same_as_dkimpy(b"From: a@example.com\r\n\r\nx\r\n", pkcs1)


@pytest.mark.parametrize(
    "raw",
    [
        b"From: a@example.com\n\nbare LF\n",
        b"From: a@example.com\r\n\r\nmixed\nends\r\n",
        b"From: a@example.com\r\n\r\nno CRLF at the end",
        b"From sender@example.com Tue Dec  1 10:00:00 2026\r\nFrom: a@example.com\r\n\r\nmbox\r\n",
        b" continued\r\nFrom: a@example.com\r\n\r\nx\r\n",
        b"From: a@example.com\r\nnot a field\r\n\r\nx\r\n",
        b"From: a@example.com\r\n:no name\r\n\r\nx\r\n",
    ],
)
def test_what_relays_signer_does_not_take_is_left_to_dkimpy(raw):
    assert ours(raw, pem(), T) is None


def test_a_key_that_is_not_rsa_or_a_name_with_odd_bytes_is_left_to_dkimpy():
    raw = b"From: a@example.com\r\n\r\nx\r\n"
    ed = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    assert ours(raw, ed, T) is None
    assert ours(raw, b"not a key", T) is None
    assert ours(raw, pem(), T, domain="ex ample.com") is None
    assert ours(raw, pem(), T, domain="b\u00fccher.example") is None
    assert dkim_sign.sign_relaxed(raw, b"example.com", b"s1", pem(), (b"From",), T) is None


def test_the_signer_falls_back_to_dkimpy_for_what_its_own_does_not_take():
    signer = Signer({DOMAIN: DomainKey(DOMAIN, SELECTOR, pem())})
    raw = b"From: Shop <news@example.com>\r\nSubject: Sale\r\n\r\nBig  sale   today."  # no CRLF at the end
    assert ours(raw, pem(), T) is None
    signed = signer.sign(raw)
    assert signed.endswith(raw) and signed.startswith(b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed;")
    assert verifies(signed)
    assert not verifies(signed.replace(b"Big", b"Huge"))


def test_a_message_neither_signer_can_read_goes_unsigned_with_the_reason_logged(caplog):
    signer = Signer({DOMAIN: DomainKey(DOMAIN, SELECTOR, pem())})
    raw = b"From: Shop <news@example.com>\r\nthis is not a field\r\n\r\nx\r\n"
    with caplog.at_level(logging.WARNING, logger="relay.dkim"):
        assert signer.sign(raw) == raw
    assert "could not DKIM-sign a message from example.com" in caplog.text


def test_the_key_is_parsed_once():
    key_pem = pem()
    dkim_sign.private_key(key_pem)
    before = dkim_sign.private_key.cache_info()
    for _ in range(3):
        ours(b"From: a@example.com\r\n\r\nx\r\n", bytes(key_pem), T)  # equal PEM text, another object
    after = dkim_sign.private_key.cache_info()
    assert (after.hits - before.hits, after.misses - before.misses) == (3, 0)


def test_t_is_the_signers_clock():
    signer = Signer({DOMAIN: DomainKey(DOMAIN, SELECTOR, pem())}, now=lambda: T + 0.9)
    assert f" t={T};".encode() in signer.sign(b"From: a@example.com\r\n\r\nx\r\n")
