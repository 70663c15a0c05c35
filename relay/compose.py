"""From API fields to an RFC 5322 message, with the stdlib email package. Pure, no I/O.

``parse_request`` validates a ``POST /v1/messages`` body into a Composition
(unknown fields are ignored); ``build`` renders it: text, html or
multipart/alternative; inline images make the html part multipart/related;
attachments make the whole multipart/mixed. Non-ASCII names and subjects become
RFC 2047 encoded-words; a non-ASCII address switches to RFC 6532 UTF-8 headers.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import mimetypes
import re
import secrets
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP, SMTPUTF8
from email.utils import getaddresses, make_msgid
from typing import Any, cast

from relay.compose_direct import build_direct
from relay.errors import RelayError
from relay.message import PLAIN_ADDRESS, address_fault, recipient_key, rfc5322_date, split_address, tag_fault

# What Python (and so the email package) counts as a line boundary in a header value, not only CR and LF.
_LINE_BREAK = re.compile("[\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
# Control characters that would reach a header as they are (NUL, ESC, DEL...); a tab may stay.
_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f]")
# RFC 2047 encoded-word syntax: in a display name given as JSON (Unicode already) it can only be meant
# to be decoded by the receiver into something else than what relay checked, such as a second address.
_ENCODED_WORD = re.compile(r"=\?.*\?=", re.DOTALL)
_PLAIN_MAILBOX = re.compile(rf"([A-Za-z0-9]+(?: [A-Za-z0-9]+)*) <({PLAIN_ADDRESS})>|({PLAIN_ADDRESS})")


class FieldError(RelayError, ValueError):
    """A request field is missing or invalid; ``field`` names it (``to[1]``, ``attachments[0].content``)."""

    def __init__(self, field: str, message: str, code: str = "invalid_field") -> None:
        super().__init__(message)
        self.field = field
        self.code = code


MAX_METADATA_SIZE = 10 * 1024  # characters of a message's metadata keys and values together


@dataclasses.dataclass(frozen=True)
class Limits:
    max_recipients: int = 50
    max_attachments_size: int = 20 * 1024 * 1024  # decoded bytes, all attachments together
    max_tags: int = 10
    max_metadata_size: int = MAX_METADATA_SIZE


@dataclasses.dataclass(frozen=True)
class Attachment:
    filename: str
    content: bytes
    content_type: str
    content_id: str | None = None  # set for inline parts referenced as cid:... from the html


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
    headers: tuple[tuple[str, str], ...] = ()
    attachments: tuple[Attachment, ...] = ()
    tags: tuple[str, ...] = ()
    metadata: dict[str, str | int | float | bool | None] = dataclasses.field(default_factory=dict)

    send_at: float | None = None

    @property
    def envelope_recipients(self) -> tuple[str, ...]:
        seen: dict[str, str] = {}  # recipient_key -> the address as first written
        for a in (*self.to, *self.cc, *self.bcc):
            seen.setdefault(recipient_key(a.addr_spec), a.addr_spec)
        return tuple(seen.values())


# Headers the API builds itself; a caller sets them through the documented fields.
# fmt: off
RESERVED_HEADERS = frozenset(
    h.lower()
    for h in (
        "From", "To", "Cc", "Bcc", "Reply-To", "Subject", "Date", "Message-ID", "MIME-Version",
        "Content-Type", "Content-Transfer-Encoding", "Content-Disposition", "Received",
    )
)
# fmt: on
_HEADER_NAME = re.compile(r"[!-9;-~]+")  # RFC 5322 ftext: printable ASCII except ':'


def single_line(where: str, text: str) -> str:
    """``text`` if it can be a header value as it is: FieldError naming ``where`` for a line break or a control
    character (a tab may stay)."""
    if _LINE_BREAK.search(text):
        raise FieldError(where, f"'{where}' contains a line break")
    if _CONTROL.search(text):
        raise FieldError(where, f"'{where}' contains a control character")
    return text


def _display_name(where: str, name: str) -> str:
    single_line(where, name)
    if _ENCODED_WORD.search(name):
        raise FieldError(
            where, f"'{where}' contains RFC 2047 encoded-word syntax (=?...?=); give the name as plain Unicode text"
        )
    return name


def parse_addresses(
    field: str, value: object, *, required: bool = False, limit: int | None = None, many: bool = False
) -> tuple[Address, ...]:
    """``"a@x"``, ``"Name <a@x>"``, ``{"email": "a@x", "name": "Name"}`` or a list of those → Addresses;
    FieldError otherwise, naming the item (``to[1]``) or its part (``to[1].email``). A list longer than
    ``limit`` is refused before any of its items is looked at. With ``many``, a string alone may also be
    a comma-separated list (``"a@x, Name <b@y>"``), as Postmark's and Mailgun's APIs take it."""
    if value is None or value == [] or value == "":
        if required:
            raise FieldError(field, f"'{field}' is required", "missing_field")
        return ()
    single = isinstance(value, str | dict)
    items = [value] if single else value
    if many and isinstance(value, str) and "," in value:
        items = address_list(value) or [value]  # each named by the field: the string is what the caller wrote
    if not isinstance(items, list):
        raise FieldError(field, f"'{field}' must be an address, an object with 'email', or a list of those")
    if limit is not None and len(items) > limit:
        raise FieldError(
            field, f"'{field}' has {len(items)} addresses; at most {limit} recipients", "too_many_recipients"
        )
    out = []
    for index, item in enumerate(items):
        where = field if single else f"{field}[{index}]"
        out.append(_address_object(where, item) if isinstance(item, dict) else _parse_address(where, item))
    return tuple(out)


def address_list(text: str) -> list[str]:
    """The addresses of a comma-separated list, as written: split at each comma outside a quoted string
    (``"Doe, John" <j@x>``) and angle brackets, the empty ones (a trailing comma) left out. Each is then
    read as one address, so an unquoted name with a comma (``Doe, John <j@x>``) is refused, not guessed
    at, and nothing the email package's lenient list parser would make of a malformed list gets in."""
    pieces, start, quoted, angle, escaped = [], 0, False, False, False
    for index, char in enumerate(text):
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif not quoted and char in "<>":
            angle = char == "<"
        elif char == "," and not quoted and not angle:
            pieces.append(text[start:index])
            start = index + 1
    pieces.append(text[start:])
    return [piece.strip() for piece in pieces if piece.strip()]


def _address_object(where: str, item: dict[str, Any]) -> Address:
    """``{"email": "a@x", "name": "Name"?}``, as SendGrid, Postmark and Resend clients send addresses."""
    email, name = item.get("email"), item.get("name")
    if email is None or email == "":
        raise FieldError(f"{where}.email", f"'{where}.email' is required", "missing_field")
    if not isinstance(email, str):
        raise FieldError(f"{where}.email", f"'{where}.email' must be a string")
    address = _parse_address(f"{where}.email", email)
    if address.display_name or "<" in email:
        raise FieldError(f"{where}.email", f"'{where}.email' must be a bare address; put the name in 'name'")
    if name is None or name == "":
        return address
    if not isinstance(name, str):
        raise FieldError(f"{where}.name", f"'{where}.name' must be a string")
    _display_name(f"{where}.name", name)
    return Address(display_name=name, username=address.username, domain=address.domain)


def name_and_address(item: str) -> list[tuple[str, str]]:
    """``getaddresses([item])``, answered without the email package's parser for the usual forms (``a@x``,
    ``Name Surname <a@x>`` with a plain address and a name of letters and digits), which it reads the same."""
    plain = _PLAIN_MAILBOX.fullmatch(item)
    if plain is not None:
        return [(plain.group(1) or "", plain.group(2) or plain.group(3))]
    if "@[" in item:
        return _with_domain_literals(item)
    return getaddresses([item])


_DOMAIN_LITERAL = re.compile(r"@(\[[^\[\]\\\s]*\])")  # @[192.0.2.1], @[IPv6:2001:db8::1] (RFC 5321 §4.1.3)


def _with_domain_literals(item: str) -> list[tuple[str, str]]:
    """``getaddresses([item])`` for text with a domain literal in it. The email package with the fix for
    CVE-2023-27043 (Python 3.11.10, 3.12.6, 3.13 and the distributions' backports, Debian 12's 3.11.2 among
    them) reads any address with a ``[`` in it as ``('', '')``, where older ones read ``a@[192.0.2.1]``: each
    literal is read as a placeholder domain of its own, then put back in the names and addresses."""
    literals: list[str] = []
    token = secrets.token_hex(8)

    def hide(match: re.Match[str]) -> str:
        literals.append(match.group(1))
        return f"@literal{len(literals) - 1}-{token}.invalid"

    def show(text: str) -> str:
        for index, literal in enumerate(literals):
            text = text.replace(f"literal{index}-{token}.invalid", literal)
        return text

    return [(show(name), show(address)) for name, address in getaddresses([_DOMAIN_LITERAL.sub(hide, item)])]


def _parse_address(where: str, item: object) -> Address:
    if not isinstance(item, str):
        raise FieldError(where, f"'{where}' must be a string or an object with 'email'")
    single_line(where, item)
    parsed = name_and_address(item)
    if len(parsed) != 1 or split_address(parsed[0][1]) is None:
        raise FieldError(where, f"'{where}' is not a valid address: {item!r}")
    name, spec = parsed[0]
    fault = address_fault(spec)
    if fault is not None:
        raise FieldError(where, f"'{where}' {fault}")
    _display_name(where, name)
    local, _, domain = spec.rpartition("@")
    return Address(display_name=name, username=local, domain=domain)


def _optional_string(data: dict[str, Any], field: str, *, single_line_only: bool = False) -> str | None:
    value = data.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise FieldError(field, f"'{field}' must be a string")
    return single_line(field, value) if single_line_only else value


def _body_text(data: dict[str, Any], field: str) -> str | None:
    """``text`` or ``html``: any Unicode but NUL, which no message may carry (RFC 5322 §2.3); as 7bit or 8bit
    data it went out as it was, and receivers refuse or cut it. (Also what a template rendered, as its field.)"""
    value = _optional_string(data, field)
    if value is not None and "\x00" in value:
        raise FieldError(field, f"'{field}' contains a NUL character, which no message may carry")
    return value


def _headers(value: object) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise FieldError("headers", "'headers' must be an object of name: value")
    out = []
    for name, text in value.items():
        where = f"headers.{name}"
        if not _HEADER_NAME.fullmatch(name):
            raise FieldError(where, f"{name!r} is not a valid header name")
        if name.lower() in RESERVED_HEADERS:
            raise FieldError(where, f"set {name} through its own field, not 'headers'")
        if not isinstance(text, str):
            raise FieldError(where, f"the value of header {name} must be a single-line string")
        out.append((name, single_line(where, text)))
    return tuple(out)


def _attachments(value: object, limits: Limits) -> tuple[Attachment, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise FieldError("attachments", "'attachments' must be a list")
    out, total = [], 0
    for index, item in enumerate(value):
        where = f"attachments[{index}]"
        if not isinstance(item, dict):
            raise FieldError(where, f"'{where}' must be an object")
        filename = item.get("filename")
        if not isinstance(filename, str) or not filename or any(c in filename for c in '"\\/'):
            raise FieldError(f"{where}.filename", "a plain file name is required")
        single_line(f"{where}.filename", filename)
        content = item.get("content")
        if not isinstance(content, str):
            raise FieldError(f"{where}.content", "'content' must be a base64 string", "missing_field")
        try:
            data = base64.b64decode(content, validate=True)
        except (binascii.Error, ValueError):
            raise FieldError(f"{where}.content", "'content' is not valid base64") from None
        total += len(data)
        if total > limits.max_attachments_size:
            raise FieldError(
                where, f"attachments exceed {limits.max_attachments_size} bytes in total", "attachments_too_large"
            )
        content_type = item.get("content_type") or mimetypes.guess_type(filename)[0] or "application/octet-stream"
        if not isinstance(content_type, str) or not re.fullmatch(r"[\w.+-]+/[\w.+-]+", content_type):
            raise FieldError(f"{where}.content_type", "'content_type' must look like 'image/png'")
        content_id = item.get("content_id")
        if content_id is not None and (not isinstance(content_id, str) or not re.fullmatch(r"[\w.@+-]+", content_id)):
            raise FieldError(f"{where}.content_id", "'content_id' must be a simple token such as 'logo'")
        out.append(Attachment(filename, data, content_type.lower(), content_id))
    return tuple(out)


def _tags(value: object, limits: Limits) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise FieldError("tags", "'tags' must be a list of strings")
    if len(value) > limits.max_tags:
        raise FieldError("tags", f"at most {limits.max_tags} tags")
    for index, tag in enumerate(value):
        fault = tag_fault(tag)
        if fault is not None:
            raise FieldError(f"tags[{index}]", f"'tags[{index}]': {fault}")
    return tuple(dict.fromkeys(value))


def metadata_fault(value: object, max_size: int = MAX_METADATA_SIZE) -> tuple[str, str] | None:
    """Why ``value`` cannot be a message's metadata, as (the field at fault, why), or None: the one rule of
    the API's ``metadata`` and SMTP's X-Relay-Metadata. A flat object of strings, numbers, booleans and
    nulls, its keys and values ``max_size`` characters at most together (it goes into every event and
    webhook payload of the message)."""
    if not isinstance(value, dict):
        return "metadata", "'metadata' must be a flat object"
    size = 0
    for key, item in value.items():
        if not isinstance(item, str | int | float | bool) and item is not None:
            return f"metadata.{key}", "metadata values are strings, numbers, booleans or null"
        size += len(key) + len(str(item))
    if size > max_size:
        return "metadata", f"metadata exceeds {max_size} bytes"
    return None


def _metadata(value: object, limits: Limits) -> dict[str, Any]:
    if value is None:
        return {}
    fault = metadata_fault(value, limits.max_metadata_size)
    if fault is not None:
        raise FieldError(*fault)
    assert isinstance(value, dict)
    return dict(value)


def parse_request(data: dict[str, Any], limits: Limits) -> Composition:
    """Validate a POST /v1/messages body. Raises FieldError naming the field at fault."""
    limit = limits.max_recipients  # lists are counted before any address in them is parsed
    given = data.get("from")
    if isinstance(given, list) and len(given) > 1:
        raise FieldError("from", "'from' must be a single address")
    sender = parse_addresses("from", given, required=True)
    text = _body_text(data, "text")
    html = _body_text(data, "html")
    if text is None and html is None:
        raise FieldError("text", "give 'text', 'html' or both", "missing_field")
    composition = Composition(
        sender=sender[0],
        to=parse_addresses("to", data.get("to"), required=True, limit=limit, many=True),
        cc=parse_addresses("cc", data.get("cc"), limit=limit, many=True),
        bcc=parse_addresses("bcc", data.get("bcc"), limit=limit, many=True),
        reply_to=parse_addresses("reply_to", data.get("reply_to"), limit=limit, many=True),
        subject=_optional_string(data, "subject", single_line_only=True) or "",
        text=text,
        html=html,
        headers=_headers(data.get("headers")),
        attachments=_attachments(data.get("attachments"), limits),
        tags=_tags(data.get("tags"), limits),
        metadata=_metadata(data.get("metadata"), limits),
    )
    if len(composition.envelope_recipients) > limits.max_recipients:
        raise FieldError(
            "to", f"at most {limits.max_recipients} recipients (to, cc and bcc together)", "too_many_recipients"
        )
    if any(a.content_id for a in composition.attachments) and html is None:
        raise FieldError("attachments", "inline attachments (content_id) need an 'html' body")
    return composition


def build(c: Composition, hostname: str, now: float) -> bytes:
    """The message as CRLF bytes: written directly in the common case (relay.compose_direct), the same bytes
    the email package writes, which builds the others."""
    date, message_id = _date_and_id(hostname, now)
    return build_direct(c, message_id, date) or build_with_email(c, message_id, date)


def build_common(c: Composition, hostname: str, now: float) -> bytes | None:
    """``build``'s bytes for the common message (relay.compose_direct), None for one that needs the email package
    (a batch builds those in worker processes)."""
    date, message_id = _date_and_id(hostname, now)
    return build_direct(c, message_id, date)


def _date_and_id(hostname: str, now: float) -> tuple[str, str]:
    return rfc5322_date(now), make_msgid(domain=hostname)  # the date formatted once per second


def build_with_email(c: Composition, message_id: str, date: str) -> bytes:
    """The message as CRLF bytes, built with the email package."""
    utf8 = any(not a.addr_spec.isascii() for a in (c.sender, *c.to, *c.cc, *c.reply_to))
    msg = EmailMessage(policy=SMTPUTF8 if utf8 else SMTP)
    msg["From"] = c.sender
    msg["To"] = c.to
    if c.cc:
        msg["Cc"] = c.cc
    if c.reply_to:
        msg["Reply-To"] = c.reply_to
    msg["Subject"] = c.subject
    msg["Date"] = date
    msg["Message-ID"] = message_id
    for name, value in c.headers:
        msg[name] = value
    _set_bodies(msg, c)
    for a in c.attachments:
        if a.content_id is None:
            maintype, subtype = a.content_type.split("/", 1)
            msg.add_attachment(a.content, maintype=maintype, subtype=subtype, filename=a.filename)
    return msg.as_bytes()


def _set_bodies(msg: EmailMessage, c: Composition) -> None:
    if c.text is not None:
        msg.set_content(c.text)
        if c.html is not None:
            msg.add_alternative(c.html, subtype="html")
    else:
        msg.set_content(c.html or "", subtype="html")
    inline = [a for a in c.attachments if a.content_id is not None]
    if not inline:
        return
    html_part = msg if c.text is None else cast(EmailMessage, msg.get_payload(1))  # text, then html: add_alternative
    for a in inline:
        maintype, subtype = a.content_type.split("/", 1)
        html_part.add_related(
            a.content,
            maintype=maintype,
            subtype=subtype,
            cid=f"<{a.content_id}>",
            filename=a.filename,
            disposition="inline",
        )


def build_many(compositions: list[Composition], hostname: str, now: float) -> list[bytes]:
    """``build`` for several compositions (a batch; run in a worker process for large ones)."""
    return [build(c, hostname, now) for c in compositions]
