"""Messages as the queue sees them: ids, envelopes, addresses and the headers relay adds."""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import os
import re
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from email._header_value_parser import get_address_list
from email.errors import HeaderParseError, InvalidHeaderDefect
from email.header import decode_header, make_header
from email.utils import format_datetime, make_msgid
from typing import Any

import idna

from relay.errors import RelayError

# A deliberately permissive address check: the local part is whatever the
# client sent (RFC 5321 quoting and UTF-8 included), the domain must look like
# a host name or an address literal.
_DOMAIN_RE = re.compile(r"(?:[^\s@.\[\]]+\.)*[^\s@.\[\]]+|\[[^\s\[\]]+\]")


_last_id = (0, 0)  # (milliseconds, random part) of the last id made in this process


def new_message_id(now: float | None = None) -> str:
    """A sortable public id: 48-bit millisecond time + 80 random bits, base32 (26 chars).

    Like a monotonic ULID: within one millisecond the random part counts up, so
    ids made by one process sort in creation order.
    """
    global _last_id
    ms = int((time.time() if now is None else now) * 1000)
    last_ms, last_random = _last_id
    if ms <= last_ms:
        ms, rand = last_ms, last_random + 1
    else:
        rand = int.from_bytes(os.urandom(10), "big") >> 1  # room to count up
    _last_id = (ms, rand)
    return sortable_base32(ms << 80 | rand)


_MESSAGE_ID = re.compile(r"[0-9a-hjkmnp-tv-z]{26}")


def is_message_id(text: str) -> bool:
    """Whether ``text`` has the form of relay's message ids (26 characters of the sortable alphabet below)."""
    return _MESSAGE_ID.fullmatch(text) is not None


def lowest_message_id(at: float) -> str:
    """The smallest id a message made at ``at`` can have: ids below it were made earlier."""
    return sortable_base32(int(at * 1000) << 80)


# RFC 4648's base32 alphabet (A-Z, 2-7) does not sort like the numbers it encodes;
# Crockford's (digits first, in ASCII order) does, so ids compare like their times.
SORTABLE_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
_PAIRS = [a + b for a in SORTABLE_ALPHABET for b in SORTABLE_ALPHABET]  # 10 bits -> two characters
_SHIFTS = range(120, -1, -10)


def sortable_base32(value: int) -> str:
    """A 128-bit number as 26 characters of SORTABLE_ALPHABET: what RFC 4648 base32 makes of its 16 bytes
    (without the padding) in that alphabet, two characters a table look-up (a third of base64's time)."""
    value <<= 2  # 130 bits: 26 characters of 5
    return "".join([_PAIRS[value >> shift & 1023] for shift in _SHIFTS])


def split_address(address: str) -> tuple[str, str] | None:
    """``"a@Example.COM"`` → ``("a", "example.com")``; None when it is not an address."""
    local, sep, domain = address.rpartition("@")
    if not sep or not local or not _DOMAIN_RE.fullmatch(domain) or any(c.isspace() for c in local):
        return None
    return local, domain.lower()


MAX_LOCAL_PART = 64  # octets (RFC 5321 §4.5.3.1.1)
MAX_ADDRESS = 254  # a path is at most 256 octets with its angle brackets (§4.5.3.1.3)
_ADDRESS_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def address_fault(address: str) -> str | None:
    """Why ``address`` could never be delivered, or None: a control character (NUL, ESC, DEL...),
    more octets than RFC 5321 §4.5.3.1 allows, or a domain no mail host can have. The one check SMTP
    and HTTP submission share, so that neither queues a message whose every delivery attempt must fail."""
    if _ADDRESS_CONTROL.search(address):
        return "contains a control character"
    local, at, domain = address.rpartition("@")
    if len(local.encode("utf-8", "surrogateescape")) > MAX_LOCAL_PART:
        return f"has a local part longer than {MAX_LOCAL_PART} octets"
    if len(address.encode("utf-8", "surrogateescape")) > MAX_ADDRESS:
        return f"is longer than {MAX_ADDRESS} octets"
    return domain_fault(domain) if at else None


def control_fault(text: str, *, lines: bool = False) -> str | None:
    """Why ``text`` (a name or a note an operator gives) cannot be kept, or None: a control character, NUL
    included (PostgreSQL cannot store a NUL; relay kept it as U+FFFD there and as it was in SQLite). With
    ``lines``, tabs and line breaks may stay."""
    found = (_NOTE_CONTROL if lines else _ADDRESS_CONTROL).search(text)
    return None if found is None else f"contains a control character ({found.group()!r})"


_NOTE_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
MAX_TAG = 128  # characters
MAX_HEADER_ID = 998  # octets: a Message-ID that fits on one line (RFC 5322 §2.1.1)
_TAG_FORBIDDEN = re.compile("[,\x00-\x1f\x7f\x85\u2028\u2029]")


def tag_fault(tag: str) -> str | None:
    """Why ``tag`` cannot be a message's tag, or None. A tag is a label a sender filters and counts by: 1 to
    128 characters, none of them a comma (SMTP's X-Relay-Tags separates tags with commas), a line break or
    another control character. The one rule of the API's ``tags`` and SMTP's X-Relay-Tags."""
    if not tag or len(tag) > MAX_TAG or _TAG_FORBIDDEN.search(tag):
        return f"a tag is 1-{MAX_TAG} characters, without commas, line breaks or control characters"
    return None


def domain_name_fault(domain: str) -> str | None:
    """Why ``domain`` (a queue's, as an operator names it to suspend it) is no domain mail goes to, or None."""
    if len(domain) > 253 or _ADDRESS_CONTROL.search(domain) or not _DOMAIN_RE.fullmatch(domain):
        return "is not a domain name"
    return domain_fault(domain)


# A host name as nearly every domain is written: ASCII labels of 1-63 letters, digits, hyphens or underscores.
_PLAIN_DOMAIN = re.compile(r"(?:[A-Za-z0-9_-]{1,63}\.)*[A-Za-z0-9_-]{1,63}\.?")


@functools.lru_cache(maxsize=4096)  # asked at every MAIL and RCPT; mail goes to the same few domains
def domain_fault(domain: str) -> str | None:
    """Why mail for ``domain`` could never be delivered, or None: an address literal that is no IP
    address (RFC 5321 §4.1.3), or a name DNS cannot hold (a label over 63 octets, an empty one, more
    than 255 octets, or Unicode that IDNA refuses). Delivery asks DNS through dnspython, so dnspython
    decides what is a name; a plain ASCII host name is one without asking it."""
    if domain.startswith("[") and domain.endswith("]"):
        text = domain[1:-1]
        try:
            ipaddress.ip_address(text[5:] if text[:5].lower() == "ipv6:" else text)  # as delivery reads it
        except ValueError:
            return "has an address literal that is no IP address"
        return None
    if len(domain) <= 253 and _PLAIN_DOMAIN.fullmatch(domain):
        return None
    import dns.exception
    import dns.name

    try:
        dns.name.from_text(domain)
    except (dns.exception.SyntaxError, dns.name.NameTooLong, dns.name.IDNAException) as exc:
        return f"has a domain DNS cannot hold ({exc})"
    return None


def normalize_address(address: str) -> str:
    """``"Bob@Bücher.Example"`` → ``"bob@xn--bcher-kva.example"``; unchanged but lower-cased if not parseable."""
    address = address.strip().strip("<>")
    local, at, domain = address.rpartition("@")
    if not at:
        return address.lower()
    return f"{local.lower()}@{normalize_domain(domain)}"


def normalize_domain(domain: str) -> str:
    return idna_domain(domain.strip().rstrip(".").lower())


def domain_key(domain: str) -> str:
    """A domain as relay keeps and compares it (queue, routes, sending domains, DKIM keys, sender rules):
    lower case, a Unicode one in A-labels, so that either form names it."""
    return idna_domain(domain.lower())


def idna_domain(domain: str) -> str:
    """``"bücher.example"`` → ``"xn--bcher-kva.example"``: a domain in Unicode as IDNA A-labels (RFC 5890),
    the form DNS, DKIM's d= and the sending-domain list hold; unchanged if ASCII or if IDNA refuses it."""
    if domain.isascii():
        return domain
    try:
        return idna.encode(domain, uts46=True).decode("ascii")
    except idna.IDNAError:
        return domain


def ascii_domain_form(address: str) -> str:
    """``"you@Bücher.example"`` → ``"you@xn--bcher-kva.example"``: the domain in IDNA A-labels (RFC 5890),
    the form an SMTP server without SMTPUTF8 takes. Unchanged if the domain is ASCII already, if the
    local part is not ASCII (that address needs SMTPUTF8 whatever its domain) or if IDNA refuses the domain."""
    local, at, domain = address.rpartition("@")
    if not at or domain.isascii() or not local.isascii():
        return address
    ascii_domain = idna_domain(domain)
    return f"{local}@{ascii_domain}" if ascii_domain.isascii() else address


def utf8_header(raw: bytes) -> bool:
    """Whether the header of CRLF ``raw`` holds UTF-8 beyond ASCII (which needs SMTPUTF8, RFC 6532). Other
    8-bit bytes there (Latin-1 from a sloppy client) are not UTF-8: SMTPUTF8 would claim they were."""
    end = raw.find(b"\r\n\r\n")
    header = raw if end == -1 else raw[:end]
    if header.isascii():
        return False
    try:
        header.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def domain_of(address: str) -> str:
    parts = split_address(address)
    if parts is None:
        raise ValueError(f"not an address: {address!r}")
    return parts[1]


def recipient_key(address: str) -> str:
    """What makes two recipients of one message the same mailbox: the local part as written, the domain as
    :func:`domain_key` (``a@Example.ORG`` and ``a@example.org``, ``a@bücher.example`` and its A-label form).
    A second RCPT or a repeat in to/cc/bcc is the same recipient, delivered once, as Postfix's cleanup
    drops a duplicate recipient."""
    local, at, domain = address.rpartition("@")
    return f"{local}@{domain_key(domain)}" if at else address


SOURCES = ("smtp", "http")  # the ways a message is submitted


@dataclasses.dataclass(frozen=True)
class NewMessage:
    """A message accepted by a submission path, ready to be queued."""

    sender: str  # envelope MAIL FROM; "" for the null sender
    recipients: tuple[str, ...]
    raw: bytes  # the full RFC 5322 message, CRLF line endings
    source: str  # one of SOURCES
    id: str = dataclasses.field(default_factory=new_message_id)
    subject: str = ""
    tags: tuple[str, ...] = ()
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)
    api_key_id: str | None = None
    suppressed: dict[str, str] = dataclasses.field(default_factory=dict)  # recipient → why; stored, never sent
    send_at: float | None = None  # scheduled: not delivered before this time
    client_size: int | None = None  # bytes the client sent, when not len(raw) (relay's own headers aside)
    sandbox: bool = False  # captured instead of delivered (sandbox mode, or a test key or credential)

    @functools.cached_property
    def header_id(self) -> str | None:
        """The Message-ID header without its angle brackets (returned mail is matched by it); None without
        one, or for one over 998 octets, which no line of a message can hold (folded, it can be longer than
        an index entry: PostgreSQL refused such a message). Read once, when first asked: SMTP asks as it
        makes the message, while its header block is the one header_fields last read."""
        value = header_value(self.raw, "Message-ID")
        if not value:
            return None
        match = re.search(r"<([^<>\s]+)>", value)
        found = match.group(1) if match else value.strip()
        return found if len(found.encode("utf-8")) <= MAX_HEADER_ID else None


_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
# local@domain in its plain form (a dot-atom local part, a domain of letters, digits and hyphens): what
# nearly every address looks like, taken on SMTP paths without the email package's full parser.
PLAIN_ADDRESS = rf"{_ATOM}(?:\.{_ATOM})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"

_LINE_END = re.compile(rb"\r\n|\r|\n")


_LONE_CR = re.compile(rb"\r(?!\n)")  # a literal first byte: the search skips to each CR (~0.8 ns a byte)


def crlf_only(data: bytes) -> bool:
    """Whether every line end of ``data`` is a CRLF: no bare LF, no lone CR.

    Every CR is followed by an LF, so there are as many CRLFs as CRs; as many LFs as CRs, then every LF
    is one of those CRLFs. Acceptance and delivery both ask it (bench/message_scans.py times it)."""
    return _LONE_CR.search(data) is None and data.count(b"\n") == data.count(b"\r")


def crlf_line_ends(data: bytes) -> bytes:
    """Every line end a CRLF: a bare LF or a lone CR ends a line too, as Postfix reads a bare LF and as
    relay's delivery sends both. Messages are made so at acceptance, so that what relay checks, signs,
    stores and sends is one and the same text whatever line ends the client used."""
    return data if crlf_only(data) else _LINE_END.sub(b"\r\n", data)


# Header fields, whole: a name and its colon (RFC 5322 §2.2; §4.5 allows space before the colon), the value
# and the folded lines that continue it, each line with its CRLF (the last one may end the text).
_FIELDS = re.compile(rb"(?:[\x21-\x39\x3b-\x7e]+[ \t]*:[^\r\n]*(?:\r\n[ \t][^\r\n]*)*(?:\r\n|\Z))*")


def header_section_ended(raw: bytes) -> bytes:
    """``raw`` (CRLF text) with the empty line that ends its header section, where a client left it out.

    The header section is the fields (``Name: value``, folded lines after them) up to the first empty
    line. A script that sends ``"Hello"`` as the whole message, or a header followed at once by text,
    has a first line that is neither: the body starts there, and an empty line goes before it, as
    Postfix's cleanup puts one. Without it, the fields relay writes on top would make the text part of
    the header section. A leading mbox ``From `` line is left as it was."""
    end = raw.find(b"\r\n\r\n")
    start = raw.find(b"\r\n") + 2 if raw.startswith(b"From ") else 0
    if start == 1:  # one line, no line end
        return raw
    fields = _FIELDS.match(raw, start, len(raw) if end == -1 else end + 2)  # matches, if only the empty text
    position = fields.end() if fields is not None else start
    if position == len(raw) or raw.startswith(b"\r\n", position):
        return raw
    return raw[:position] + b"\r\n" + raw[position:]


def has_line_over(data: bytes, limit: int) -> bool:
    """Whether a line of ``data`` (what lies between two LFs, or an LF and an end) is over ``limit`` bytes.

    From the start of a line, the last LF within the next ``limit + 1`` bytes ends a stretch of lines
    none of which is too long, and the next line starts after it; no LF there, and the line is too long.
    So the search moves ~``limit`` bytes a step (memrchr), where splitting the text made an object per
    line (a 100 KB message: ~40 against ~120 us)."""
    start, end = 0, len(data)
    while end - start > limit:
        lf = data.rfind(b"\n", start, start + limit + 1)
        if lf == -1:
            return True
        start = lf + 1
    return False


_LINE_STARTING_WITH_DOT = re.compile(rb"\r\n\.")  # a regex finds this ~2x faster than bytes.find


def dot_stuff(data: bytes) -> bytes:
    """A dot doubled at the start of every line of CRLF ``data``, as DATA carries it (RFC 5321 §4.5.2)."""
    if data.startswith(b".") or _LINE_STARTING_WITH_DOT.search(data):
        return (b"\r\n" + data).replace(b"\r\n.", b"\r\n..")[2:]
    return data


def dot_unstuff(data: bytes) -> bytes:
    """The leading dot of every line removed, as a server receiving DATA does (RFC 5321 §4.5.2)."""
    if data.startswith(b".") or _LINE_STARTING_WITH_DOT.search(data):
        return (b"\r\n" + data).replace(b"\r\n.", b"\r\n")[2:]
    return data


_FOLD = re.compile(r"\r\n[ \t]+")


def header_value(raw: bytes, name: str) -> str | None:
    """The first ``name`` header, unfolded and RFC 2047-decoded; None if absent or unreadable."""
    value = _first(raw, name)
    if value is None:
        return None
    text = _FOLD.sub(" ", value.decode("utf-8", errors="replace")).strip()
    if "=?" not in text:  # no encoded words: decoding would give the text back
        return text
    try:
        return str(make_header(decode_header(text)))
    except (HeaderParseError, LookupError, UnicodeDecodeError):
        return text


def _header_block(raw: bytes) -> bytes:
    end = raw.find(b"\r\n\r\n")
    return raw if end < 0 else raw[: end + 2]


def raw_header_value(raw: bytes, name: str) -> str | None:
    """The first ``name`` header unfolded, as written (RFC 2047 encoded words left encoded)."""
    value = _first(raw, name)
    return None if value is None else _FOLD.sub(" ", value.decode("utf-8", errors="replace")).strip()


def header_count(raw: bytes, name: str) -> int:
    return len(header_fields(raw).get(name.lower().encode("ascii"), ()))


def has_header(raw: bytes, name: str) -> bool:
    return name.lower().encode("ascii") in header_fields(raw)


def _first(raw: bytes, name: str) -> bytes | None:
    values = header_fields(raw).get(name.lower().encode("ascii"))
    return values[0] if values else None


# The header block last read and its fields: acceptance asks about a message's headers ~10 times
# (relay's own X-Relay-* fields, Message-ID, Date, Subject, From for the sender rules and the DKIM
# key), each a regular-expression search of the block before; now one pass answers them all.
_last_read: tuple[bytes, dict[bytes, list[bytes]]] = (b"\0", {})
_CACHED_BLOCK = 64 * 1024  # a bigger header block (or a message without a body) is read anew each time


def header_fields(raw: bytes) -> dict[bytes, list[bytes]]:
    """The header fields of ``raw``: lower-case name → the values of the fields so named, in order, each
    from after its colon to the end of its last folded line (CRLF folds kept). A line that starts with a
    space or tab continues the field before it; a line with no colon is no field and ends the one
    before. (What a search for ``(?:^|\\r\\n)NAME[ \\t]*:(.*?)(?=\\r\\n[^ \\t]|\\r\\n\\r\\n|$)``, case-insensitive,
    finds for each name; tests/test_header_fields.py holds the two to the same answers.) The answer is
    shared with the next caller that asks about the same header block: read it, never change it."""
    global _last_read
    block = _header_block(raw)
    seen, fields = _last_read
    if block == seen:
        return fields
    fields = _read_fields(block)
    if len(block) <= _CACHED_BLOCK:
        _last_read = (block, fields)
    return fields


def _read_fields(block: bytes) -> dict[bytes, list[bytes]]:
    fields: dict[bytes, list[bytes]] = {}
    lines = block.split(b"\r\n")
    i, count = 0, len(lines)
    while i < count:
        line = lines[i]
        i += 1
        colon = line.find(b":")
        if colon < 0 or line[:1] in (b" ", b"\t"):
            continue  # no field (or a fold with no field before it)
        end = i
        while end < count and lines[end][:1] in (b" ", b"\t"):
            end += 1
        value = line[colon + 1 :] if end == i else b"\r\n".join([line[colon + 1 :], *lines[i:end]])
        fields.setdefault(line[:colon].rstrip(b" \t").lower(), []).append(value)
        i = end
    return fields


# The From: forms nearly every message has: "local@domain" or "Plain Name <local@domain>".
_SIMPLE_FROM = re.compile(rf"(?:[A-Za-z0-9 ._'-]*<({PLAIN_ADDRESS})>|({PLAIN_ADDRESS}))")


class UnreadableFrom(RelayError, ValueError):
    """The From: header is missing, repeated, or does not parse as a list of addresses."""


class NoFrom(UnreadableFrom):
    """The message has no From: header."""


def from_addresses(raw: bytes) -> list[str]:
    """The addresses in the message's one From: header, the single answer every sender rule uses
    (a credential's allowed senders, verified sending domains, the DKIM key). Read from the header
    as written: an encoded word is display-name text and never makes or hides an address
    (RFC 2047 §5). Raises UnreadableFrom when there is no From:, more than one, or when it does not
    parse cleanly (a receiver might read another address in it than relay does)."""
    value = raw_header_value(raw, "From")
    if not value:
        raise NoFrom("the message has no From: address")
    if header_count(raw, "From") > 1:
        raise UnreadableFrom("the message has more than one From: header")
    simple = _SIMPLE_FROM.fullmatch(value)
    if simple:
        return [simple.group(1) or simple.group(2)]
    try:
        addresses = _parsed_from(value)
    except Exception:  # the email package's private parser: HeaderParseError, and on odd forms (`, .<`)
        addresses = None  # IndexError, TypeError, AttributeError
    if addresses is None or any(split_address(a) is None for a in addresses):
        raise UnreadableFrom("the From: header cannot be read")
    return addresses


def _parsed_from(value: str) -> list[str] | None:
    """The From: value's addresses by the email package's parser; None if it has anything left over,
    no mailbox, or an invalid part."""
    parsed, rest = get_address_list(value)
    mailboxes = parsed.all_mailboxes
    if rest or not mailboxes or any(isinstance(d, InvalidHeaderDefect) for d in parsed.all_defects):
        return None
    return [m.addr_spec for m in mailboxes]


def from_domain(raw: bytes) -> str:
    """The one domain of the From: addresses (lower case, a Unicode one in A-labels: the form sending
    domains and DKIM keys are kept in). Raises UnreadableFrom, also when the addresses are in more than one domain."""
    domains = {domain_key(domain_of(a)) for a in from_addresses(raw)}
    if len(domains) != 1:
        raise UnreadableFrom("the From: addresses are in more than one domain")
    return domains.pop()


def remove_headers(raw: bytes, names: Sequence[str]) -> bytes:
    """Drop every ``names`` header (with its folded lines) from the header block; the body is untouched."""
    block = _header_block(raw)
    if not any(has_header(raw, n) for n in names):
        return raw
    alternatives = b"|".join(re.escape(n.encode("ascii")) for n in names)
    pattern = rb"(?im)^(?:" + alternatives + rb")[ \t]*:.*?\r\n(?![ \t])"
    return re.sub(pattern, b"", block, flags=re.DOTALL) + raw[len(block) :]


# A header relay writes: a field name, then text whose only line breaks are folds (CRLF + space or tab).
_HEADER_NAME = re.compile(r"[!-9;-~]+")
_UNSAFE_IN_VALUE = re.compile(r"\r(?!\n[ \t])|(?<!\r)\n|[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def prepend_headers(raw: bytes, headers: list[tuple[str, str]]) -> bytes:
    """Put headers on top of the message, leaving every byte of it untouched. Raises ValueError for a
    header that would not be one header (a CR or LF that is not a fold, a control character): no value
    from outside may make or change another header."""
    if not headers:
        return raw
    for name, value in headers:
        if not _HEADER_NAME.fullmatch(name) or _UNSAFE_IN_VALUE.search(value):
            raise ValueError(f"refusing to write a {name!r} header with a line break or control in it")
    return "".join(f"{name}: {value}\r\n" for name, value in headers).encode("utf-8") + raw


def missing_standard_headers(raw: bytes, hostname: str, now: float) -> list[tuple[str, str]]:
    """Message-ID and Date for a message that lacks them (RFC 5322 §3.6)."""
    added = []
    if not has_header(raw, "Message-ID"):
        added.append(("Message-ID", make_msgid(domain=hostname)))
    if not has_header(raw, "Date"):
        added.append(("Date", rfc5322_date(now)))
    return added


def rfc5322_date(now: float) -> str:
    """``Tue, 01 Dec 2026 22:10:39 +0000``: whole seconds, so a second's messages share one formatting."""
    second = int(now // 1)
    if now - second >= 0.999999:  # datetime rounds to the microsecond: this may be the next second
        return format_datetime(datetime.fromtimestamp(now, UTC).replace(microsecond=0))
    return _date_of_second(second)


@functools.lru_cache(maxsize=4)
def _date_of_second(second: int) -> str:
    return format_datetime(datetime.fromtimestamp(second, UTC))


@functools.lru_cache(maxsize=4096)  # a client's address comes back message after message; parsing it is ~5 us
def address_literal(ip: str) -> str:
    """An IP address as SMTP writes one (RFC 5321 §4.1.3): ``[192.0.2.1]``, ``[IPv6:2001:db8::1]``; an
    IPv4 client that came in on an IPv6 socket (``::ffff:192.0.2.1``) as its IPv4 address, as Postfix
    writes it. Anything else (no address known) in brackets as it is."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return f"[{ip}]"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is None:
            return f"[IPv6:{address.compressed}]"
        address = address.ipv4_mapped
    return f"[{address}]"


def received_header(
    *,
    helo: str,
    peer_ip: str,
    hostname: str,
    protocol: str,
    queue_id: str,
    recipient: str | None,
    now: float,
    authenticated_as: str | None = None,
) -> tuple[str, str]:
    """A trace header (RFC 5321 §4.4). The authenticated identity appears only when asked for."""
    for_clause = f"\r\n\tfor <{recipient}>" if recipient else ""
    auth_clause = f" (authenticated as {authenticated_as})" if authenticated_as else ""
    value = (
        f"from {helo or 'unknown'} ({address_literal(peer_ip)}){auth_clause}\r\n\tby {hostname} (relay) with {protocol}"
        f" id {queue_id}{for_clause};\r\n\t{rfc5322_date(now)}"
    )
    return ("Received", value)
