"""Reading captured (sandboxed) messages: what a developer checks, taken from the stored RFC 5322 bytes. Pure.

Sandboxed mail (``[delivery] mode = "sandbox"``, or sent with a test API key or
test SMTP credentials) is queued like any message but DKIM-signed at once (other mail is signed as it
leaves), and recorded delivered without a connection; its body stays in the store
(``[retention] bodies`` applies as to any message) to be read from here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from email import policy
from email.message import EmailMessage, Message
from email.parser import BytesParser
from typing import Any

FORMATS = ("json", "raw")  # how the API gives a captured message: rendered, or its RFC 5322 bytes


@dataclasses.dataclass(frozen=True)
class Attachment:
    filename: str | None
    content_type: str
    size: int  # decoded bytes
    content_id: str | None = None  # set on inline parts (referenced as cid: from the html)


@dataclasses.dataclass(frozen=True)
class Rendered:
    headers: list[tuple[str, str]]  # in order, decoded (RFC 2047)
    text: str | None
    html: str | None
    attachments: list[Attachment]

    def as_json(self) -> dict[str, Any]:
        return {
            "headers": [{"name": n, "value": v} for n, v in self.headers],
            "text": self.text,
            "html": self.html,
            "attachments": [dataclasses.asdict(a) for a in self.attachments],
        }


def render(raw: bytes) -> Rendered:
    """Headers, the text and html bodies, and every other part as an attachment (name, type, size)."""
    message = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(message, EmailMessage)
    text_part = message.get_body(preferencelist=("plain",))
    html_part = message.get_body(preferencelist=("html",))
    bodies = [p for p in (text_part, html_part) if p is not None]
    attachments = [_attachment(part) for part in _leaves(message) if not any(part is body for body in bodies)]
    return Rendered(_headers(message), _content(text_part), _content(html_part), attachments)


def _headers(message: EmailMessage) -> list[tuple[str, str]]:
    out = []
    for name, raw_value in message.raw_items():
        try:
            out.append((name, str(message.policy.header_fetch_parse(name, raw_value))))
        except Exception:  # a header the email package cannot decode: show it as it came
            out.append((name, str(raw_value)))
    return out


def _content(part: Message | None) -> str | None:
    if part is None:
        return None
    try:
        return str(part.get_content())  # type: ignore[attr-defined]
    except (LookupError, ValueError):  # an unknown charset or a broken encoding: decode what is there
        payload = part.get_payload(decode=True)
        return payload.decode("utf-8", errors="replace") if isinstance(payload, bytes) else None


def _leaves(part: Message) -> Iterator[Message]:
    """The parts that are not multiparts; an attached message (message/rfc822) is one, not opened."""
    payload = part.get_payload()
    if part.get_content_maintype() == "multipart" and isinstance(payload, list):
        for sub in payload:
            if isinstance(sub, Message):  # a parsed multipart holds only messages
                yield from _leaves(sub)
    else:
        yield part


def _attachment(part: Message) -> Attachment:
    payload = part.get_payload(decode=True)
    if isinstance(payload, bytes):
        size = len(payload)
    else:  # an attached message: its bytes as they would be saved
        inner = part.get_payload()
        size = sum(len(m.as_bytes()) for m in inner if isinstance(m, Message)) if isinstance(inner, list) else 0
    content_id = part.get("Content-ID")
    return Attachment(
        part.get_filename(), part.get_content_type(), size, str(content_id).strip("<> ") if content_id else None
    )
