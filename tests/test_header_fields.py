"""The header block read once (relay.message.header_fields) answers what a regular-expression search
for each field answered before, for every header relay asks about, whatever the block looks like."""

from __future__ import annotations

import re
from email.header import decode_header, make_header

from hypothesis import given, settings
from hypothesis import strategies as st

from relay import message
from relay.message import has_header, header_count, header_value, raw_header_value, remove_headers

NAMES = ["Subject", "From", "Message-ID", "Date", "X-Relay-Tags", "X-Relay-Metadata", "X-Relay-Send-At", "To"]


def pattern(name: str) -> re.Pattern[bytes]:  # the search each lookup made before
    return re.compile(
        rb"(?:^|\r\n)" + re.escape(name.encode("ascii")) + rb"[ \t]*:(.*?)(?=\r\n[^ \t]|\r\n\r\n|$)",
        re.IGNORECASE | re.DOTALL,
    )


def block_of(raw: bytes) -> bytes:
    end = raw.find(b"\r\n\r\n")
    return raw if end < 0 else raw[: end + 2]


FOLD = re.compile(r"\r\n[ \t]+")


def reference_raw_value(raw: bytes, name: str) -> str | None:
    m = pattern(name).search(block_of(raw))
    return None if m is None else FOLD.sub(" ", m.group(1).decode("utf-8", errors="replace")).strip()


def reference_value(raw: bytes, name: str) -> str | None:
    text = reference_raw_value(raw, name)
    if text is None or "=?" not in text:
        return text
    try:
        return str(make_header(decode_header(text)))
    except Exception:
        return text


def reference_count(raw: bytes, name: str) -> int:
    return len(pattern(name).findall(block_of(raw)))


field_name = st.sampled_from(
    [n.encode() for n in NAMES]
    + [b"subject", b"SUBJECT", b"from", b"x-relay-tags", b"Received", b"Sub ject", b"Subject-Line", b"X-Subject"]
)
text = st.binary(max_size=30).map(lambda b: b.replace(b"\r\n", b" ").replace(b":", b";"))
separator = st.sampled_from([b":", b": ", b" :", b"\t: ", b":\t", b"  :"])
fold = st.tuples(st.sampled_from([b"\r\n ", b"\r\n\t", b"\r\n   "]), text).map(b"".join)
field = st.tuples(field_name, separator, text, st.lists(fold, max_size=2)).map(
    lambda t: t[0] + t[1] + t[2] + b"".join(t[3])
)
odd_line = st.sampled_from([b"no colon here", b" leading fold: x", b"\tindented", b"", b"bare\nLF: y", b"lone\rCR: z"])
line = st.one_of(field, field, field, odd_line)
tail = st.sampled_from([b"\r\n\r\nbody\r\nSubject: not a header\r\n", b"\r\n", b"", b"\r\n\r\n"])
messages = st.tuples(st.lists(line, max_size=8), tail).map(lambda t: b"\r\n".join(t[0]) + t[1])


@settings(max_examples=1500, deadline=None)
@given(raw=messages)
def test_one_read_of_the_block_answers_what_each_search_did(raw: bytes) -> None:
    message._last_read = (b"\0", {})  # start cold; the second round below is answered from the cache
    for _ in range(2):
        for name in NAMES:
            assert raw_header_value(raw, name) == reference_raw_value(raw, name), name
            assert header_value(raw, name) == reference_value(raw, name), name
            assert header_count(raw, name) == reference_count(raw, name), name
            assert has_header(raw, name) == (reference_count(raw, name) > 0), name


def test_the_cache_never_answers_for_another_block() -> None:
    first = b"Subject: one\r\nFrom: a@x.example\r\n\r\nbody"
    second = b"Subject: two\r\n\r\nbody"
    assert header_value(first, "Subject") == "one"
    assert header_value(second, "Subject") == "two"
    assert header_value(first, "subject") == "one" and has_header(first, "From") and not has_header(second, "From")
    stripped = remove_headers(b"X-Relay-Tags: a\r\n" + second, ["X-Relay-Tags"])
    assert stripped == second and not has_header(stripped, "X-Relay-Tags")
