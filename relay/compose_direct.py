"""The common API message (text, html or both; plain ASCII headers that fit on a line) written as bytes directly.

The stdlib email package takes about 0.6 ms to build even a one-line message (it parses every header it
is given back into a token tree, then folds it again), which was half the CPU of ``POST /v1/messages``.
For the message most requests send, :func:`build_direct` writes the very bytes the email package would
(``compose.build_with_email``: same headers in the same order, same Content-Transfer-Encoding choice,
same encodings, same boundary form) and answers None for anything else, which the email package then
builds: attachments, a header that is not plain printable ASCII, one that would be folded or
RFC 2047-encoded, and a header name the email package gives a structure of its own.
tests/test_compose_direct.py checks the bytes against the email package's over many generated messages.
"""

from __future__ import annotations

import binascii
import random
import re
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from email.headerregistry import Address

    from relay.compose import Composition

MAX_LINE = 78  # email.policy.SMTP's max_line_length: a longer header line would be folded
_PLAIN = re.compile(r"[\x20-\x7e]*")  # printable ASCII: nothing to encode, nothing to escape
# Header names the email package parses into a structure of its own (or moves into a body part, for
# Content-*): their custom values go through the email package.
_STRUCTURED = frozenset(
    {"sender", "resent-sender", "resent-to", "resent-cc", "resent-bcc", "resent-from", "resent-date", "orig-date"}
)
_BOUNDARY_WIDTH = len(repr(sys.maxsize - 1))  # as email.generator.Generator makes them


def build_direct(c: Composition, message_id: str, date: str) -> bytes | None:
    """The bytes ``compose.build_with_email`` writes for ``c``, or None when ``c`` is not the common case."""
    if c.attachments:
        return None
    head = _headers(c, message_id, date)
    if head is None:
        return None
    if c.text is not None and c.html is not None:
        return _join(head) + _alternative(c.text, c.html)
    text, subtype = (c.text, "plain") if c.text is not None else (c.html or "", "html")
    part_head, body = _text_part(text, subtype)
    return _join([*head, *part_head, "MIME-Version: 1.0"]) + b"\r\n" + body


def _headers(c: Composition, message_id: str, date: str) -> list[str] | None:
    """The top-level header lines before the MIME ones, or None when one of them is not a plain line."""
    fields: list[tuple[str, str]] = [("From", _addresses((c.sender,))), ("To", _addresses(c.to))]
    if c.cc:
        fields.append(("Cc", _addresses(c.cc)))
    if c.reply_to:
        fields.append(("Reply-To", _addresses(c.reply_to)))
    fields += [("Subject", c.subject), ("Date", date), ("Message-ID", message_id)]
    for name, value in c.headers:
        lower = name.lower()
        if lower in _STRUCTURED or lower.startswith("content-"):
            return None
        fields.append((name, value))
    lines = []
    for name, value in fields:
        line = f"{name}: {value}" if value else f"{name}:"
        if not _plain_value(value) or len(line) > MAX_LINE:
            return None
        lines.append(line)
    return lines


def _plain_value(value: str) -> bool:
    """A header value the email package writes back unchanged: printable ASCII, single spaces between words
    (it may rewrite runs of white space and the ends of a value), nothing that reads as an encoded word."""
    return bool(_PLAIN.fullmatch(value)) and "  " not in value and value == value.strip() and "=?" not in value


def _addresses(addresses: tuple[Address, ...]) -> str:
    """The value the email package gives an address header set to these Address objects (quoting included)."""
    return ", ".join(str(a) for a in addresses)


def _join(lines: list[str]) -> bytes:
    return ("\r\n".join(lines) + "\r\n").encode("ascii")


def _text_part(text: str, subtype: str) -> tuple[list[str], bytes]:
    """A text part's Content-* header lines and its encoded body (CRLF lines), as ``set_content`` makes them."""
    cte, payload = _encode_text(text)
    head = [f'Content-Type: text/{subtype}; charset="utf-8"', f"Content-Transfer-Encoding: {cte}"]
    return head, _crlf(payload)


def _alternative(text: str, html: str) -> bytes:
    """MIME-Version and a multipart/alternative of text then html, as ``set_content`` + ``add_alternative``
    write it (the html part, built as a message of its own, carries a MIME-Version header too)."""
    text_head, text_body = _text_part(text, "plain")
    html_head, html_body = _text_part(html, "html")
    parts = [_join(text_head) + b"\r\n" + text_body, _join([*html_head, "MIME-Version: 1.0"]) + b"\r\n" + html_body]
    boundary = _boundary(b"\r\n".join(parts))
    delimiter = b"\r\n--" + boundary.encode("ascii") + b"\r\n"
    return (
        _join(["MIME-Version: 1.0", "Content-Type: multipart/alternative;", f' boundary="{boundary}"'])
        + b"\r\n--"
        + boundary.encode("ascii")
        + b"\r\n"
        + delimiter.join(parts)
        + b"\r\n--"
        + boundary.encode("ascii")
        + b"--\r\n"
    )


def _boundary(text: bytes) -> str:
    """A random boundary as ``email.generator.Generator._make_boundary`` makes it, the next one (``.0``, ``.1``...)
    while ``text`` holds ``--boundary``. (The generator's own test, a regex per message, misses a line ending in
    CRLF: any occurrence here, without a regex to compile. Either way it never happens by chance.)"""
    boundary = "=" * 15 + f"{random.randrange(sys.maxsize):0{_BOUNDARY_WIDTH}d}" + "=="
    candidate, counter = boundary, 0
    while b"--" + candidate.encode("ascii") in text:
        candidate = f"{boundary}.{counter}"
        counter += 1
    return candidate


def _crlf(payload: str) -> bytes:
    """A payload made of ``\\n`` lines as the generator writes it: CRLF lines, 8bit text as its bytes."""
    return payload.replace("\n", "\r\n").encode("ascii", "surrogateescape")


def _encode_text(string: str) -> tuple[str, str]:
    """The Content-Transfer-Encoding and payload ``email.contentmanager.set_text_content`` picks for utf-8 text
    under email.policy.SMTP (cte_type 8bit): 7bit or 8bit when every line fits, else quoted-printable
    or base64, whichever is shorter on the first ten lines."""
    lines = string.encode("utf-8").splitlines()
    normal = b"\n".join(lines) + b"\n"
    if max((len(x) for x in lines), default=0) <= MAX_LINE:
        return (
            ("7bit", normal.decode("ascii"))
            if normal.isascii()
            else ("8bit", normal.decode("ascii", "surrogateescape"))
        )
    sniff = b"\r\n".join(lines[:10]) + b"\r\n"
    sniff_qp = quoted_printable(sniff)
    if len(sniff_qp) > len(binascii.b2a_base64(sniff)):
        return "base64", _base64(b"\r\n".join(lines) + b"\r\n")
    if len(lines) <= 10:
        return "quoted-printable", sniff_qp
    return "quoted-printable", quoted_printable(normal)


# Quoted-printable writes every octet as =XX but tab, CR, LF and printable ASCII other than '='.
_QP_PLAIN = b"\t\n\r" + bytes(c for c in range(0x20, 0x7F) if c != ord("="))
_QP_MAP = [chr(c) if c in _QP_PLAIN else f"={c:02X}" for c in range(256)]


def _qp_escaped(data: bytes) -> str:
    """The octets as text with the escapes made; when '=' is the only octet to escape, by ``str.replace`` (which
    is ~5x faster than ``str.translate`` once one character becomes three)."""
    to_escape = data.translate(None, _QP_PLAIN)
    text = data.decode("latin-1")
    if not to_escape:
        return text
    if not to_escape.strip(b"="):
        return text.replace("=", "=3D")
    return text.translate(_QP_MAP)


def quoted_printable(data: bytes) -> str:
    """``email.quoprimime.body_encode(data.decode("latin-1"), MAX_LINE)``, the same text faster: the escapes
    made by C string methods where they can be (``str.translate`` falls to a slow path as soon as one character
    becomes three, as every '=' of an html attribute does), and a line without escapes cut in one go."""
    if not data:
        return ""
    body = _qp_escaped(data)
    width = MAX_LINE - 1  # room for the soft break's '='
    out: list[str] = []
    for line in body.splitlines():
        start, last_start = 0, len(line) - 1 - MAX_LINE
        if last_start >= 0 and "=" not in line:  # no escape to keep whole: cut every `width` characters
            start = (last_start // width + 1) * width
            out += [line[i : i + width] + "=" for i in range(0, start, width)]
        while start <= last_start:  # as body_encode: never cut inside an escape
            stop = start + width
            if line[stop - 2] == "=":
                out.append(line[start : stop - 1])
                start = stop - 2
            elif line[stop - 1] == "=":
                out.append(line[start:stop])
                start = stop - 1
            else:
                out.append(line[start:stop] + "=")
                start = stop
        out.append(_qp_line_end(line, start, last_start))
    if body[-1] in "\r\n":
        out.append("")
    return "\n".join(out)


def _qp_line_end(line: str, start: int, last_start: int) -> str:
    """The rest of a line from ``start``; white space ending it is quoted, with a soft break where needed."""
    if not line or line[-1] not in " \t":
        return line[start:]
    room, space = start - last_start, f"={ord(line[-1]):02X}"
    if room >= 3:
        return line[start:-1] + space
    if room == 2:
        return line[start:-1] + line[-1] + "=\n"
    return line[start:-1] + "=\n" + space


def _base64(data: bytes) -> str:
    """Base64 in lines of at most MAX_LINE characters, as ``email.contentmanager`` writes it."""
    step = MAX_LINE // 4 * 3
    return "".join(binascii.b2a_base64(data[i : i + step]).decode("ascii") for i in range(0, len(data), step))
