"""Building RFC 5322 messages from API fields with the stdlib email package. Pure, no I/O."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP, SMTPUTF8
from email.utils import format_datetime, getaddresses, make_msgid

from relay.message import split_address


class FieldError(ValueError):
    """A request field is missing or invalid; ``field`` names it for the API error."""

    def __init__(self, field: str, message: str, code: str = "invalid_field") -> None:
        super().__init__(message)
        self.field = field
        self.code = code


@dataclasses.dataclass(frozen=True)
class Composition:
    sender: Address
    to: tuple[Address, ...]
    cc: tuple[Address, ...] = ()
    bcc: tuple[Address, ...] = ()
    reply_to: tuple[Address, ...] = ()
    subject: str = ""
    text: str | None = None
    html: str | None = None

    @property
    def envelope_recipients(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for a in (*self.to, *self.cc, *self.bcc):
            seen.setdefault(a.addr_spec, None)
        return tuple(seen)


def parse_addresses(field: str, value: object, *, required: bool = False) -> tuple[Address, ...]:
    """``"a@x"``, ``"Name <a@x>"`` or a list of those → Addresses; FieldError otherwise."""
    if value is None or value == [] or value == "":
        if required:
            raise FieldError(field, f"'{field}' is required", "missing_field")
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
        raise FieldError(field, f"'{field}' must be a string or a list of strings")
    out = []
    for item in items:
        if any(c in item for c in "\r\n"):
            raise FieldError(field, f"'{field}' contains a line break")
        parsed = getaddresses([item])
        if len(parsed) != 1 or split_address(parsed[0][1]) is None:
            raise FieldError(field, f"'{field}' has an invalid address: {item!r}")
        name, spec = parsed[0]
        local, _, domain = spec.rpartition("@")
        out.append(Address(display_name=name, username=local, domain=domain))
    return tuple(out)


def build(c: Composition, hostname: str, now: float) -> bytes:
    """The message as CRLF bytes: text, html, or multipart/alternative with both."""
    # Non-ASCII names and subjects become RFC 2047 encoded-words; only a
    # non-ASCII address itself needs raw UTF-8 headers (RFC 6532, SMTPUTF8).
    utf8 = any(not a.addr_spec.isascii() for a in (c.sender, *c.to, *c.cc, *c.reply_to))
    msg = EmailMessage(policy=SMTPUTF8 if utf8 else SMTP)
    msg["From"] = c.sender
    msg["To"] = c.to
    if c.cc:
        msg["Cc"] = c.cc
    if c.reply_to:
        msg["Reply-To"] = c.reply_to
    msg["Subject"] = c.subject
    msg["Date"] = format_datetime(datetime.fromtimestamp(now, UTC))
    msg["Message-ID"] = make_msgid(domain=hostname)
    if c.text is not None:
        msg.set_content(c.text)
        if c.html is not None:
            msg.add_alternative(c.html, subtype="html")
    elif c.html is not None:
        msg.set_content(c.html, subtype="html")
    else:
        msg.set_content("")
    return msg.as_bytes()
