"""What the message page shows of a stored message: its headers, its text and HTML bodies, its attachments.

Pure: raw bytes in, plain strings out. Everything here came from outside and is shown escaped (the HTML
body only inside a sandboxed frame, see message.html); bounded so a large message makes a page, not a
stall. Parsing is lenient: a header or part relay cannot decode is shown as it is, never an error.
"""

from __future__ import annotations

import dataclasses
import email
import email.policy
import re
from email.errors import HeaderParseError
from email.header import decode_header, make_header
from email.message import EmailMessage, Message

MAX_HEADERS = 200
MAX_HEADER_LENGTH = 4000
MAX_TEXT = 200_000  # characters of the text body shown
MAX_HTML = 1_000_000  # characters of the HTML body put in the frame
MAX_ATTACHMENTS = 100

_FOLD = re.compile(r"\r?\n[ \t]+")


@dataclasses.dataclass(frozen=True)
class Attachment:
    filename: str
    content_type: str
    size: int


@dataclasses.dataclass(frozen=True)
class Source:
    headers: list[tuple[str, str]]
    text: str | None
    html: str | None
    attachments: list[Attachment]
    truncated: list[str]  # what was cut to fit the page: "headers", "text", "html", "attachments"


def read_source(raw: bytes) -> Source:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    truncated: list[str] = []
    headers = [(name, header_text(value)) for name, value in message.raw_items()]
    if len(headers) > MAX_HEADERS:
        headers, truncated = headers[:MAX_HEADERS], [*truncated, "headers"]
    text = _body(message, "plain")
    if text is not None and len(text) > MAX_TEXT:
        text, truncated = text[:MAX_TEXT], [*truncated, "text"]
    html = _body(message, "html")
    if html is not None and len(html) > MAX_HTML:
        html, truncated = html[:MAX_HTML], [*truncated, "html"]
    attachments = [_attachment(part) for part in _attachments(message)]
    if len(attachments) > MAX_ATTACHMENTS:
        attachments, truncated = attachments[:MAX_ATTACHMENTS], [*truncated, "attachments"]
    return Source(headers, text, html, attachments, truncated)


def header_text(value: str) -> str:
    """A header value unfolded and its RFC 2047 encoded words decoded (as it is when they cannot be)."""
    unfolded = _FOLD.sub(" ", str(value)).strip()
    try:
        decoded = str(make_header(decode_header(unfolded)))
    except (HeaderParseError, LookupError, UnicodeError, ValueError):
        decoded = unfolded
    return decoded[:MAX_HEADER_LENGTH]


def _body(message: EmailMessage, subtype: str) -> str | None:
    """The message's ``text/<subtype>`` body (the one a mail client would show), if it has one."""
    try:
        part = message.get_body(preferencelist=(subtype,))
    except (KeyError, ValueError, TypeError):
        return None
    if part is None or part.get_content_subtype() != subtype:
        return None
    return _content(part)


def _content(part: Message) -> str:
    try:
        content = part.get_content()  # type: ignore[attr-defined]  # EmailMessage under policy.default
        if isinstance(content, str):
            return content
    except (LookupError, UnicodeError, ValueError, KeyError, AssertionError):
        pass
    payload = part.get_payload(decode=True)
    return payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""


def _attachments(message: EmailMessage) -> list[EmailMessage]:
    if not message.is_multipart():
        return []
    try:
        return list(message.iter_attachments())
    except (KeyError, ValueError, TypeError):
        return []


def _attachment(part: EmailMessage) -> Attachment:
    payload = part.get_payload(decode=True)
    size = len(payload) if isinstance(payload, bytes) else 0
    return Attachment(header_text(part.get_filename() or "(no name)"), part.get_content_type(), size)
