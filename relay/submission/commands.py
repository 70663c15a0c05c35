"""SMTP command lines and replies, as pure functions: what relay's submission server (relay.submission.server)
parses and answers without waiting for anything.

The reply texts are the ones relay's submission gave when it ran on aiosmtpd (RFC 5321 replies with
RFC 2034 enhanced codes added by :func:`with_enhanced_code`): clients and their operators see them, so
they stay byte for byte. tests/test_smtp_dialogues.py holds them to it.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Sequence
from email._header_value_parser import get_addr_spec, get_angle_addr

from relay.config import Network
from relay.message import PLAIN_ADDRESS, address_fault

COMMAND_LIMIT = 512  # a command line, CRLF excluded (RFC 5321 §4.5.3.1.4)
MAIL_EXTRA = 26 + 10  # what the SIZE and SMTPUTF8 extensions add to MAIL's line after EHLO (RFC 1870, 6531)
AUTH_EXTRA = 500  # and what an AUTH= parameter adds (RFC 4954 §5)
LINE_LIMIT = 1001  # a line of data longer than this (its LF included) is refused (RFC 5321 §4.5.3.1.6)
COMMAND_LINE_LIMIT = COMMAND_LIMIT + MAIL_EXTRA + AUTH_EXTRA + 2  # a longer command line is refused unread
BOGUS_LIMIT = 5  # the fifth unknown command closes the connection

# RFC 2034 enhanced codes for replies written without one.
_ENHANCED_CODES = {
    "500": "5.5.2",
    "501": "5.5.4",
    "502": "5.5.1",
    "503": "5.5.1",
    "504": "5.5.4",
    "530": "5.7.0",
    "552": "5.3.4",
    "553": "5.1.3",
    "454": "4.7.0",
}
_HAS_ENHANCED = re.compile(r"\d{3}[ -][245]\.\d{1,3}\.\d{1,3}\b")


def with_enhanced_code(reply: str) -> str:
    """``552 Error: Too much mail data`` → ``552 5.3.4 Error: Too much mail data``."""
    if len(reply) < 4 or reply[3] != " " or reply[0] not in "245" or _HAS_ENHANCED.match(reply):
        return reply
    code = reply[:3]
    return f"{code} {_ENHANCED_CODES.get(code, code[0] + '.0.0')} {reply[4:]}"


def _r(text: str) -> bytes:
    return with_enhanced_code(text).encode() + b"\r\n"


# Replies, ready to write.
OK = _r("250 OK")
BYE = _r("221 Bye")
BAD_SYNTAX = _r("500 Error: bad syntax")
TOO_LONG = _r("500 Command line too long")
TOO_MANY_BOGUS = _r("502 5.5.1 Too many unrecognized commands, goodbye.")
SEND_HELO = _r("503 Error: send HELO first")
SEND_EHLO = _r("503 Error: send EHLO first")
NEED_MAIL = _r("503 Error: need MAIL command")
NEED_RCPT = _r("503 Error: need RCPT command")
NESTED_MAIL = _r("503 Error: nested MAIL command")
MALFORMED = _r("553 5.1.3 Error: malformed address")
BAD_BODY = _r("501 Error: BODY can only be one of 7BIT, 8BITMIME")
SMTPUTF8_ARGS = _r("501 Error: SMTPUTF8 takes no arguments")
SIZE_EXCEEDED = _r("552 Error: message size exceeds fixed maximum message size")
MAIL_PARAMS = _r("555 MAIL FROM parameters not recognized or not implemented")
BAD_AUTH_PARAM = _r("501 Error: AUTH= takes <> or a mailbox in xtext (RFC 4954)")
RCPT_PARAMS = _r("555 RCPT TO parameters not recognized or not implemented")
START_DATA = b"354 End data with <CR><LF>.<CR><LF>\r\n"
DATA_LINE_TOO_LONG = _r("500 Line too long (see RFC5321 4.5.3.1.6)")
TOO_MUCH_DATA = _r("552 Error: Too much mail data")
START_TLS = b"220 Ready to start TLS\r\n"
NO_TLS = _r("454 TLS not available")
TLS_ACTIVE = _r("554 5.5.1 Error: TLS already active")  # Postfix's words
VRFY_CANNOT = _r("252 Cannot VRFY user, but will accept message and attempt delivery")
EXPN_NO = _r("502 EXPN not implemented")
AUTH_NOT_EXTENDED = _r("500 Error: command 'AUTH' not recognized")
AUTH_NEEDS_TLS = _r("538 5.7.11 Encryption required for requested authentication mechanism")
AUTH_AGAIN = _r("503 Already authenticated")
AUTH_NO_VALUE = _r("501 Not enough value")
AUTH_TOO_MANY = _r("501 Too many values")
AUTH_UNKNOWN = _r("504 5.5.4 Unrecognized authentication type")
AUTH_ABORTED = _r("501 5.7.0 Auth aborted")
AUTH_BAD_BASE64 = _r("501 5.5.2 Can't decode base64")
AUTH_BAD_SPLIT = _r("501 5.5.2 Can't split auth value")
AUTH_OK = b"235 2.7.0 Authentication successful\r\n"
AUTH_INVALID = b"535 5.7.8 Authentication credentials invalid\r\n"
AUTH_THROTTLED = b"454 4.7.0 Too many failed authentication attempts, try again later\r\n"
AUTH_LINE_TOO_LONG = b"500 5.5.2 Line too long\r\n"
CHALLENGE_PLAIN = b"334 \r\n"
CHALLENGE_USER = b"334 VXNlciBOYW1lAA==\r\n"  # base64 of "User Name\0", as aiosmtpd asks
CHALLENGE_PASSWORD = b"334 UGFzc3dvcmQA\r\n"  # "Password\0"
TEMPORARY = b"451 4.3.0 Temporary failure, please try again later\r\n"
TOO_MANY_CONNECTIONS = b"421 4.7.0 Too many connections from your address, try again later\r\n"
TOO_BUSY = b"421 4.7.0 Too many connections, try again later\r\n"
MECHANISMS = ("LOGIN", "PLAIN")

SYNTAX = {  # HELP texts: the command's syntax, and what EHLO adds to it
    "AUTH": ("AUTH <mechanism>", ""),
    "DATA": ("DATA", ""),
    "EHLO": ("EHLO hostname", ""),
    "HELO": ("HELO hostname", ""),
    "HELP": ("HELP [command]", ""),
    "MAIL": ("MAIL FROM: <address>", " [SP <mail-parameters>]"),
    "NOOP": ("NOOP [ignored]", ""),
    "QUIT": ("QUIT", ""),
    "RCPT": ("RCPT TO: <address>", " [SP <mail-parameters>]"),
    "RSET": ("RSET", ""),
    "STARTTLS": ("STARTTLS", ""),
    "VRFY": ("VRFY <address>", ""),
}


def syntax_error(command: str, extended: bool) -> bytes:
    """``501 5.5.4 Syntax: MAIL FROM: <address> [SP <mail-parameters>]`` and the like."""
    text, more = SYNTAX[command]
    return _r(f"501 Syntax: {text}{more if extended else ''}")


SYNTAX_ERRORS = {(c, e): syntax_error(c, e) for c in SYNTAX for e in (False, True)}
PLAIN_SYNTAX = {  # HELO/EHLO replies carry no enhanced codes (RFC 2034 §3)
    "HELO": b"501 Syntax: HELO hostname\r\n",
    "EHLO": b"501 Syntax: EHLO hostname\r\n",
}
BAD_HELO = {
    c: f"501 5.5.4 Syntax: {c} hostname (a domain or address literal, no spaces or controls)\r\n".encode()
    for c in ("HELO", "EHLO")
}


def help_reply(arg: str | None, extended: bool, starttls: bool) -> bytes:
    """The reply to HELP [arg]: a command's syntax, or the list of commands (501 for an unknown one)."""
    known = [c for c in sorted(SYNTAX) if starttls or c != "STARTTLS"]
    if arg:
        name = arg.upper()
        if name in known:
            text, more = SYNTAX[name]
            return _r(f"250 Syntax: {text}{more if extended else ''}")
        return _r(f"501 Supported commands: {' '.join(known)}")
    return _r(f"250 Supported commands: {' '.join(known)}")


def unknown_command(command: str) -> bytes:
    return _r(f'500 Error: command "{command}" not recognized')


def split_command(line: bytes) -> tuple[str, str | None] | None:
    """``b"mail FROM:<a@b>"`` (line end removed) → ``("MAIL", "FROM:<a@b>")``; None when the command is
    not ASCII. The argument, stripped of white space, keeps any non-UTF-8 bytes as surrogate escapes."""
    command_bytes, _, arg_bytes = line.partition(b" ")
    try:
        command = command_bytes.upper().decode("ascii")
    except UnicodeDecodeError:
        return None
    if not arg_bytes:
        return command, None
    return command, arg_bytes.strip().decode("utf-8", "surrogateescape")


def strip_keyword(keyword: str, arg: str) -> str | None:
    """``FROM: <a@b>`` → ``<a@b>`` for keyword ``FROM:``; None without it."""
    if arg[: len(keyword)].upper() == keyword:
        return arg[len(keyword) :].strip()
    return None


# <local@domain> and what follows: the path every client sends, taken without the full parser.
_SIMPLE_PATH = re.compile(rf"<({PLAIN_ADDRESS})>[ \t]*(.*)", re.DOTALL)


def getaddr(arg: str) -> tuple[str | None, str | None]:
    """The address of a MAIL/RCPT/VRFY argument and the text after it: ``("", "")`` for none, ``(None,
    None)`` for one that cannot be parsed or delivered. Plain ``<local@domain> PARAMS`` takes a fast path;
    anything else goes through the email package's parser (as aiosmtpd does)."""
    if not arg:
        return "", ""
    simple = _SIMPLE_PATH.match(arg)
    if simple and not simple.group(2).startswith("("):
        address, rest = simple.group(1), simple.group(2)
    else:
        try:
            parsed, rest = get_angle_addr(arg) if arg.lstrip().startswith("<") else get_addr_spec(arg)
            address = parsed.addr_spec
        except Exception:  # HeaderParseError, and on cut-off or odd forms (`"`, `<`, `\@[`)
            return None, None  # the email package's private parser raises IndexError or AttributeError too
    if address_fault(address) is not None:
        return None, None  # 553 5.1.3: RFC 5321 §4.5.3.1 limits; a control could never be delivered
    return address, rest


def getparams(params: list[str]) -> dict[str, str | bool] | None:
    """``["SIZE=10", "SMTPUTF8"]`` → ``{"SIZE": "10", "SMTPUTF8": True}``; None if one is malformed (RFC 1869)."""
    result: dict[str, str | bool] = {}
    for param in params:
        name, eq, value = param.partition("=")
        if not name.isalnum() or eq and not value:
            return None
        result[name] = value if eq else True
    return result


# xtext (RFC 3461 §4): printable ASCII but "+" and "=", which are written +XX.
_XTEXT = re.compile(r"(?:[!-*,-<>-~]|\+[0-9A-F]{2})+")


def mail_params_fault(params: dict[str, str | bool], max_size: int | None, syntax: bytes) -> bytes | None:
    """The reply refusing MAIL FROM's parameters (AUTH, BODY, SMTPUTF8, SIZE; no others), or None.

    AUTH= names who submitted the message to the client (RFC 4954 §5): Exim sends ``AUTH=<>`` once it
    has authenticated, Sendmail the sender. A server that offers AUTH must take it; relay keeps none of
    it (it trusts no client's word for it, so it is ``<>`` to relay, as the RFC allows)."""
    auth = params.pop("AUTH", None)
    if auth is not None and (isinstance(auth, bool) or not _XTEXT.fullmatch(auth)):
        return BAD_AUTH_PARAM
    body = params.pop("BODY", "7BIT")
    if body not in ("7BIT", "8BITMIME"):
        return BAD_BODY
    if not isinstance(params.pop("SMTPUTF8", False), bool):
        return SMTPUTF8_ARGS
    size = params.pop("SIZE", None)
    if size:
        if isinstance(size, bool) or not (size.isascii() and size.isdigit()):  # RFC 1870: ASCII digits
            return syntax
        if max_size and int(size) > max_size:
            return SIZE_EXCEEDED
    if params:
        return MAIL_PARAMS
    return None


def valid_helo_name(name: str) -> bool:
    """Whether an EHLO/HELO argument may stand in relay's Received: header: one word of printable
    characters (RFC 5321 §4.1.1.1 asks for a domain or address literal; clients' names vary, so only
    what could break or forge a header is refused: CR, LF, NUL, other controls and spaces)."""
    if _PLAIN_HELO.fullmatch(name):  # printable ASCII: what nearly every client sends
        return True
    return len(name) <= 255 and all(c.isprintable() and not c.isspace() for c in name)


_PLAIN_HELO = re.compile(r"[!-~]{1,255}")


@functools.lru_cache(maxsize=4096)  # parsed at every RCPT; clients come back from the same few addresses
def _address(peer_ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(peer_ip.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def is_trusted(peer_ip: str, networks: Sequence[Network]) -> bool:
    address = _address(peer_ip)
    return address is not None and any(address in net for net in networks)
