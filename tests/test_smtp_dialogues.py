"""SMTP submission dialogues as data: what a client sends, and the exact reply lines relay gives.

Each dialogue runs on a new connection to a relay started by the fixtures, over a real socket. A step
sends bytes (a tuple: separate writes, to split commands and data at awkward places) and then reads
the reply lines it lists, byte for byte (``<ID>`` stands for a queue id). ``CLOSED``: the server
closes the connection then; ``SILENT``: nothing arrives for a moment; ``TLS``: the client starts TLS.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import re
import ssl
import time
from typing import Any

import pytest

from relay.credentials import create_smtp_credential

TLS = object()  # a step that starts TLS on the client's side
CLOSED = "CLOSED"
SILENT = "SILENT"
GREETING = "220 relay.test relay"

Send = bytes | tuple[bytes, ...] | object


@dataclasses.dataclass(frozen=True)
class Dialogue:
    name: str
    steps: tuple[tuple[Send, str], ...]


def d(name: str, *steps: tuple[Send, str]) -> Dialogue:
    return Dialogue(name, steps)


def ehlo_lines(size: int = 26214400, starttls: bool = True, auth: bool = False) -> str:
    lines = ["250-relay.test", f"250-SIZE {size}", "250-8BITMIME", "250-SMTPUTF8"]
    if starttls:
        lines.append("250-STARTTLS")
    if auth:
        lines.append("250-AUTH LOGIN PLAIN")
    return "\n".join([*lines, "250-PIPELINING", "250-ENHANCEDSTATUSCODES", "250 HELP"])


EHLO = ehlo_lines()
MAIL = b"MAIL FROM:<app@example.com>\r\n"
RCPT = b"RCPT TO:<user@example.org>\r\n"
BODY = b"From: app@example.com\r\nTo: user@example.org\r\nSubject: hi\r\n\r\nhello\r\n"
QUEUED = "250 2.0.0 Ok: queued as <ID>"
BAD_AUTH = "501 5.5.4 Error: AUTH= takes <> or a mailbox in xtext (RFC 4954)"
MAIL_SYNTAX = "501 5.5.4 Syntax: MAIL FROM: <address> [SP <mail-parameters>]"
RCPT_SYNTAX = "501 5.5.4 Syntax: RCPT TO: <address> [SP <mail-parameters>]"
COMMANDS = "AUTH DATA EHLO HELO HELP MAIL NOOP QUIT RCPT RSET STARTTLS VRFY"
BYE = "221 2.0.0 Bye\nCLOSED"
START_DATA = "354 End data with <CR><LF>.<CR><LF>"

# A trusted client (loopback) on the STARTTLS listener, in plain text.
TRUSTED = [
    d("ehlo and quit", (b"EHLO client.test\r\n", EHLO), (b"QUIT\r\n", BYE)),
    d("helo", (b"HELO client.test\r\n", "250 relay.test"), (b"QUIT\r\n", BYE)),
    d(
        "helo and ehlo without a name",
        (b"HELO\r\n", "501 Syntax: HELO hostname"),
        (b"EHLO\r\n", "501 Syntax: EHLO hostname"),
    ),
    d(
        "helo and ehlo names that could break a header",
        (
            b"EHLO bad\x01name\r\n",
            "501 5.5.4 Syntax: EHLO hostname (a domain or address literal, no spaces or controls)",
        ),
        (b"HELO two words\r\n", "501 5.5.4 Syntax: HELO hostname (a domain or address literal, no spaces or controls)"),
        (b"MAIL FROM:<app@example.com>\r\n", "503 5.5.1 Error: send HELO first"),
    ),
    d(
        "lower-case commands",
        (b"ehlo client.test\r\n", EHLO),
        (b"mail from:<app@example.com>\r\n", "250 2.1.0 Ok"),
        (b"rcpt to:<user@example.org>\r\n", "250 2.1.5 Ok"),
        (b"data\r\n", START_DATA),
        (BODY + b".\r\n", QUEUED),
        (b"quit\r\n", BYE),
    ),
    d(
        "bare LF line ends",
        (b"EHLO client.test\n", EHLO),
        (b"NOOP\n", "250 2.0.0 OK"),
        (b"MAIL FROM:<app@example.com>\n", "250 2.1.0 Ok"),
        (b"QUIT\n", BYE),
    ),
    d(
        "extra spaces",
        (b"EHLO   client.test  \r\n", EHLO),
        (b"MAIL FROM: <app@example.com>\r\n", "250 2.1.0 Ok"),
        (b"RCPT  TO:  <user@example.org>  \r\n", "250 2.1.5 Ok"),
        (b"NOOP   \r\n", "250 2.0.0 OK"),
        (b"RSET \r\n", "250 2.0.0 OK"),
    ),
    d("a tab is not a separator", (b"NOOP\tx\r\n", '500 5.5.2 Error: command "NOOP\tX" not recognized')),
    d(
        "noop, rset, quit with arguments",
        (b"NOOP\r\n", "250 2.0.0 OK"),
        (b"NOOP anything at all\r\n", "250 2.0.0 OK"),
        (b"RSET\r\n", "250 2.0.0 OK"),
        (b"RSET now\r\n", "501 5.5.4 Syntax: RSET"),
        (b"QUIT now\r\n", "501 5.5.4 Syntax: QUIT"),
        (b"QUIT\r\n", BYE),
    ),
    d(
        "help",
        (b"HELP\r\n", f"250 2.0.0 Supported commands: {COMMANDS}"),
        (b"HELP mail\r\n", "250 2.0.0 Syntax: MAIL FROM: <address>"),
        (b"HELP bogus\r\n", f"501 5.5.4 Supported commands: {COMMANDS}"),
        (b"HELP EXPN\r\n", f"501 5.5.4 Supported commands: {COMMANDS}"),
        (b"HELP STARTTLS\r\n", "250 2.0.0 Syntax: STARTTLS"),
        (b"HELP AUTH\r\n", "250 2.0.0 Syntax: AUTH <mechanism>"),
        (b"EHLO client.test\r\n", EHLO),
        (b"HELP MAIL\r\n", "250 2.0.0 Syntax: MAIL FROM: <address> [SP <mail-parameters>]"),
        (b"HELP rcpt\r\n", "250 2.0.0 Syntax: RCPT TO: <address> [SP <mail-parameters>]"),
        (b"HELP DATA\r\n", "250 2.0.0 Syntax: DATA"),
    ),
    d(
        "vrfy and expn",
        (b"VRFY\r\n", "501 5.5.4 Syntax: VRFY <address>"),
        (b"VRFY <user@example.org>\r\n", "252 2.0.0 Cannot VRFY user, but will accept message and attempt delivery"),
        (b"VRFY user@example.org\r\n", "252 2.0.0 Cannot VRFY user, but will accept message and attempt delivery"),
        (b"VRFY <<bad\r\n", "502 5.5.1 Could not VRFY <<bad"),
        (b"EXPN list\r\n", "502 5.5.1 EXPN not implemented"),
    ),
    d(
        "unknown commands, then too many",
        (b"FOO\r\n", '500 5.5.2 Error: command "FOO" not recognized'),
        (b"bar baz\r\n", '500 5.5.2 Error: command "BAR" not recognized'),
        (b"NOOP\r\n", "250 2.0.0 OK"),
        (
            b"FOO\r\nFOO\r\n",
            '500 5.5.2 Error: command "FOO" not recognized\n500 5.5.2 Error: command "FOO" not recognized',
        ),
        (b"FOO\r\n", "502 5.5.1 Too many unrecognized commands, goodbye.\nCLOSED"),
    ),
    d(
        "empty and undecodable lines",
        (b"\r\n", "500 5.5.2 Error: bad syntax"),
        (b"\n", "500 5.5.2 Error: bad syntax"),
        (b"\xffOO\r\n", "500 5.5.2 Error: bad syntax"),
        (b"NOOP \xff\r\n", "250 2.0.0 OK"),
    ),
    d(
        "command lines too long",
        (b"NOOP " + b"x" * 600 + b"\r\n", "500 5.5.2 Command line too long"),
        (b"NOOP " + b"x" * 5000 + b"\r\n", "500 5.5.2 Command line too long"),
        (b"NOOP " + b"x" * 500 + b"\r\n", "250 2.0.0 OK"),
        (b"NOOP " + b"x" * 3000 + b"\r\nNOOP\r\n", "500 5.5.2 Command line too long\n250 2.0.0 OK"),
        (b"HELO client.test\r\n", "250 relay.test"),
        (b"MAIL FROM:<app@example.com> SIZE=" + b"0" * 497 + b"100\r\n", "500 5.5.2 Command line too long"),
        (b"EHLO client.test\r\n", EHLO),  # extensions allow MAIL a longer line
        (b"MAIL FROM:<app@example.com> SIZE=" + b"0" * 497 + b"100\r\n", "250 2.1.0 Ok"),
        (b"RSET\r\n", "250 2.0.0 OK"),
        (b"MAIL FROM:<app@example.com> SIZE=" + b"0" * 517 + b"100\r\n", "500 5.5.2 Command line too long"),
    ),
    d(
        "sequence errors",
        (b"MAIL FROM:<app@example.com>\r\n", "503 5.5.1 Error: send HELO first"),
        (b"RCPT TO:<user@example.org>\r\n", "503 5.5.1 Error: send HELO first"),
        (b"DATA\r\n", "503 5.5.1 Error: send HELO first"),
        (b"EHLO client.test\r\n", EHLO),
        (b"RCPT TO:<user@example.org>\r\n", "503 5.5.1 Error: need MAIL command"),
        (b"DATA\r\n", "503 5.5.1 Error: need RCPT command"),
        (MAIL, "250 2.1.0 Ok"),
        (b"MAIL FROM:<other@example.com>\r\n", "503 5.5.1 Error: nested MAIL command"),
        (b"DATA\r\n", "503 5.5.1 Error: need RCPT command"),
        (RCPT, "250 2.1.5 Ok"),
        (b"DATA now\r\n", "501 5.5.4 Syntax: DATA"),
        (b"RSET\r\n", "250 2.0.0 OK"),
        (b"DATA\r\n", "503 5.5.1 Error: need RCPT command"),
        (b"EHLO client.test\r\n", EHLO),
        (MAIL, "250 2.1.0 Ok"),
        (b"EHLO client.test\r\n", EHLO),  # EHLO resets the transaction
        (RCPT, "503 5.5.1 Error: need MAIL command"),
    ),
    d(
        "mail parameters",
        (b"EHLO client.test\r\n", EHLO),
        (b"MAIL\r\n", MAIL_SYNTAX),
        (b"MAIL TO:<app@example.com>\r\n", MAIL_SYNTAX),
        (b"MAIL FROM:\r\n", MAIL_SYNTAX),
        (b"MAIL FROM:<app@@example.com>\r\n", "553 5.1.3 Error: malformed address"),
        (b"MAIL FROM:<app@example.com> SIZE=abc\r\n", MAIL_SYNTAX),
        (b"MAIL FROM:<app@example.com> SIZE=\xc2\xb2\r\n", MAIL_SYNTAX),  # a superscript two: a digit to isdigit
        (b"MAIL FROM:<app@example.com> SIZE=\xd9\xa1\r\n", MAIL_SYNTAX),  # an Arabic-Indic one: int() reads it
        (b"MAIL FROM:<app@example.com> SIZE\r\n", MAIL_SYNTAX),
        (b"MAIL FROM:<app@example.com> SIZE=\r\n", MAIL_SYNTAX),
        (b"MAIL FROM:<app@example.com> X-Y=1\r\n", MAIL_SYNTAX),
        (
            b"MAIL FROM:<app@example.com> SIZE=999999999\r\n",
            "552 5.3.4 Error: message size exceeds fixed maximum message size",
        ),
        (b"MAIL FROM:<app@example.com> BODY=BINARYMIME\r\n", "501 5.5.4 Error: BODY can only be one of 7BIT, 8BITMIME"),
        (b"MAIL FROM:<app@example.com> SMTPUTF8=yes\r\n", "501 5.5.4 Error: SMTPUTF8 takes no arguments"),
        (
            b"MAIL FROM:<app@example.com> FOO=bar\r\n",
            "555 5.0.0 MAIL FROM parameters not recognized or not implemented",
        ),
        (b"MAIL FROM:<app@example.com> size=100 body=8bitmime smtputf8\r\n", "250 2.1.0 Ok"),
        (b"RSET\r\n", "250 2.0.0 OK"),
        (b"MAIL FROM:app@example.com\r\n", "250 2.1.0 Ok"),
        (
            b"RCPT TO:<user@example.org> NOTIFY=NEVER\r\n",
            "555 5.0.0 RCPT TO parameters not recognized or not implemented",
        ),
        (b"RCPT TO:<user@example.org> =x\r\n", RCPT_SYNTAX),
        (b"RCPT\r\n", RCPT_SYNTAX),
        (b"RCPT FROM:<user@example.org>\r\n", RCPT_SYNTAX),
        (b"RCPT TO:<>\r\n", "501 5.1.3 Bad recipient address syntax"),
        (b"RCPT TO:<a b@example.org>\r\n", "501 5.1.3 Bad recipient address syntax"),
        (b"RCPT TO:<a\x01b@example.org>\r\n", "553 5.1.3 Error: malformed address"),
        (b"RCPT TO:<" + b"a" * 65 + b"@example.org>\r\n", "553 5.1.3 Error: malformed address"),
        (b"RCPT TO:<user>\r\n", "501 5.1.3 Bad recipient address syntax"),
        (b"RCPT TO:user@example.org\r\n", "250 2.1.5 Ok"),
        (b'RCPT TO:<"quoted name"@example.org>\r\n', "501 5.1.3 Bad recipient address syntax"),
    ),
    d(
        "the AUTH parameter of MAIL (RFC 4954 §5: Exim sends AUTH=<> once it has authenticated)",
        (b"EHLO client.test\r\n", EHLO),
        (b"MAIL FROM:<app@example.com> AUTH=<>\r\n", "250 2.1.0 Ok"),
        (b"RSET\r\n", "250 2.0.0 OK"),
        (b"MAIL FROM:<app@example.com> auth=app+2Bx@example.com size=100\r\n", "250 2.1.0 Ok"),
        (b"RSET\r\n", "250 2.0.0 OK"),
        (b"MAIL FROM:<app@example.com> AUTH=" + b"a" * 500 + b" BODY=8BITMIME\r\n", "250 2.1.0 Ok"),
        (b"RSET\r\n", "250 2.0.0 OK"),
        (b"MAIL FROM:<app@example.com> SIZE=100 AUTH=" + b"a" * 1100 + b"\r\n", "500 5.5.2 Command line too long"),
        (b"MAIL FROM:<app@example.com> SIZE=" + b"0" * 997 + b"100\r\n", "500 5.5.2 Command line too long"),
        (b"MAIL FROM:<app@example.com> AUTH=+ZZ\r\n", BAD_AUTH),
        (b"MAIL FROM:<app@example.com> AUTH=a=b\r\n", BAD_AUTH),
        (b"MAIL FROM:<app@example.com> AUTH\r\n", BAD_AUTH),
        (b"MAIL FROM:<app@example.com> AUTH=<>\r\n" + RCPT + b"DATA\r\n", f"250 2.1.0 Ok\n250 2.1.5 Ok\n{START_DATA}"),
        (BODY + b".\r\n", QUEUED),
    ),
    d(
        "mail parameters after helo",
        (b"HELO client.test\r\n", "250 relay.test"),
        (b"MAIL FROM:<app@example.com> SIZE=100\r\n", "501 5.5.4 Syntax: MAIL FROM: <address>"),
        (b"MAIL\r\n", "501 5.5.4 Syntax: MAIL FROM: <address>"),
        (MAIL, "250 2.1.0 Ok"),
        (b"RCPT TO:<user@example.org> X=1\r\n", "501 5.5.4 Syntax: RCPT TO: <address>"),
        (RCPT, "250 2.1.5 Ok"),
        (b"DATA\r\n", START_DATA),
        (BODY + b".\r\n", QUEUED),
    ),
    d(
        "the null sender",
        (b"EHLO client.test\r\n", EHLO),
        (b"MAIL FROM:<>\r\n", "250 2.1.0 Ok"),
        (RCPT, "250 2.1.5 Ok"),
        (b"DATA\r\n", START_DATA),
        (BODY + b".\r\n", QUEUED),
    ),
    d(
        "a transaction, then another",
        (b"EHLO client.test\r\n", EHLO),
        (MAIL, "250 2.1.0 Ok"),
        (RCPT, "250 2.1.5 Ok"),
        (b"RCPT TO:<other@example.net>\r\n", "250 2.1.5 Ok"),
        (b"DATA\r\n", START_DATA),
        (BODY + b"..a dotted line\r\n.\r\n", QUEUED),
        (MAIL, "250 2.1.0 Ok"),
        (RCPT, "250 2.1.5 Ok"),
        (b"DATA\r\n", START_DATA),
        (b".\r\n", QUEUED),  # an empty message
        (b"QUIT\r\n", BYE),
    ),
    d(
        "pipelined commands in one write",
        (b"EHLO client.test\r\n", EHLO),
        (
            MAIL + RCPT + b"RCPT TO:<other@example.net>\r\nDATA\r\n",
            f"250 2.1.0 Ok\n250 2.1.5 Ok\n250 2.1.5 Ok\n{START_DATA}",
        ),
        (BODY + b".\r\nRSET\r\nNOOP\r\nQUIT\r\n", f"{QUEUED}\n250 2.0.0 OK\n250 2.0.0 OK\n{BYE}"),
    ),
    d(
        "a whole session in one write",
        (
            b"EHLO client.test\r\n"
            + MAIL
            + RCPT
            + b"DATA\r\n"
            + BODY
            + b".\r\n"
            + MAIL
            + RCPT
            + b"DATA\r\n"
            + BODY
            + b".\r\nQUIT\r\n",
            f"{EHLO}\n250 2.1.0 Ok\n250 2.1.5 Ok\n{START_DATA}\n{QUEUED}\n"
            f"250 2.1.0 Ok\n250 2.1.5 Ok\n{START_DATA}\n{QUEUED}\n{BYE}",
        ),
    ),
    d(
        "pipelined errors keep their order",
        (b"EHLO client.test\r\n", EHLO),
        (
            b"RCPT TO:<user@example.org>\r\nFOO\r\n" + MAIL + b"MAIL FROM:<x@example.com>\r\n" + RCPT + b"DATA x\r\n",
            '503 5.5.1 Error: need MAIL command\n500 5.5.2 Error: command "FOO" not recognized\n250 2.1.0 Ok\n'
            "503 5.5.1 Error: nested MAIL command\n250 2.1.5 Ok\n501 5.5.4 Syntax: DATA",
        ),
    ),
    d(
        "commands split across writes",
        (b"EHLO client.test\r\n", EHLO),
        ((b"MA", b"IL FROM:<app@exa", b"mple.com>\r", b"\n"), "250 2.1.0 Ok"),
        ((RCPT + b"DA", b"TA\r\n"), f"250 2.1.5 Ok\n{START_DATA}"),
        (BODY + b".\r\n", QUEUED),
    ),
    *(
        d(
            f"the end of data split after byte {cut}",
            (b"EHLO client.test\r\n" + MAIL + RCPT + b"DATA\r\n", f"{EHLO}\n250 2.1.0 Ok\n250 2.1.5 Ok\n{START_DATA}"),
            ((BODY + b"line\r\n.\r\n")[: len(BODY) + 4 + cut], SILENT),
            ((BODY + b"line\r\n.\r\nNOOP\r\n")[len(BODY) + 4 + cut :], f"{QUEUED}\n250 2.0.0 OK"),
        )
        for cut in range(1, 5)
    ),
    d(
        "data split between CR and LF",
        (b"EHLO client.test\r\n" + MAIL + RCPT + b"DATA\r\n", f"{EHLO}\n250 2.1.0 Ok\n250 2.1.5 Ok\n{START_DATA}"),
        ((b"Subject: x\r", b"\n\r", b"\nbody\r", b"\n.", b"\r", b"\n"), QUEUED),
    ),
    d(
        "a bare LF never ends the data",
        (b"EHLO client.test\r\n" + MAIL + RCPT + b"DATA\r\n", f"{EHLO}\n250 2.1.0 Ok\n250 2.1.5 Ok\n{START_DATA}"),
        (b"Subject: x\r\n\r\nhello\n.\nMAIL FROM:<evil@example.com>\r\n", SILENT),
        (b"hello\r\n.\nRSET\r\n", SILENT),
        (b"hello\r\n.\r\n", QUEUED),
    ),
    d(
        "a data line too long",
        (b"EHLO client.test\r\n" + MAIL + RCPT + b"DATA\r\n", f"{EHLO}\n250 2.1.0 Ok\n250 2.1.5 Ok\n{START_DATA}"),
        (b"Subject: x\r\n\r\n" + b"x" * 1001 + b"\r\nend\r\n.\r\n", "500 5.5.2 Line too long (see RFC5321 4.5.3.1.6)"),
        (RCPT, "503 5.5.1 Error: need MAIL command"),  # the transaction is over
        (MAIL + RCPT + b"DATA\r\n", f"250 2.1.0 Ok\n250 2.1.5 Ok\n{START_DATA}"),
        (b"Subject: x\r\n\r\n" + b"x" * 998 + b"\r\n.\r\n", QUEUED),
    ),
    d(
        "starttls",
        (b"STARTTLS now\r\n", "501 5.5.4 Syntax: STARTTLS"),
        (b"EHLO client.test\r\n", EHLO),
        (MAIL, "250 2.1.0 Ok"),
        (b"STARTTLS\r\n", "220 Ready to start TLS"),
        (TLS, ""),
        (RCPT, "503 5.5.1 Error: send HELO first"),  # a new session after TLS
        (b"EHLO client.test\r\n", ehlo_lines(starttls=False, auth=True)),
        (RCPT, "503 5.5.1 Error: need MAIL command"),
        (b"HELP\r\n", f"250 2.0.0 Supported commands: {COMMANDS}"),
        (MAIL + RCPT + b"DATA\r\n", f"250 2.1.0 Ok\n250 2.1.5 Ok\n{START_DATA}"),
        (BODY + b".\r\n", QUEUED),
        (b"QUIT\r\n", BYE),
    ),
    d("starttls before ehlo", (b"STARTTLS\r\n", "220 Ready to start TLS"), (TLS, ""), (b"NOOP\r\n", "250 2.0.0 OK")),
    d(
        "auth needs tls here",
        (b"AUTH PLAIN AGFAYg==\r\n", "503 5.5.1 Error: send EHLO first"),
        (b"HELO client.test\r\n", "250 relay.test"),
        (b"AUTH PLAIN AGFAYg==\r\n", "500 5.5.2 Error: command 'AUTH' not recognized"),
        (b"EHLO client.test\r\n", EHLO),
        (b"AUTH PLAIN AGFAYg==\r\n", "538 5.7.11 Encryption required for requested authentication mechanism"),
    ),
]

# A client that must authenticate, allowed to in plain text ([smtp] plaintext_auth_networks).
AUTH_EHLO = ehlo_lines(auth=True)
AUTHED = "235 2.7.0 Authentication successful"
INVALID = "535 5.7.8 Authentication credentials invalid"
AUTHENTICATING = [
    d("ehlo offers auth", (b"EHLO client.test\r\n", AUTH_EHLO)),
    d(
        "auth plain with an initial response",
        (b"EHLO client.test\r\n", AUTH_EHLO),
        (b"AUTH PLAIN {PLAIN}\r\n", AUTHED),
        (b"AUTH PLAIN {PLAIN}\r\n", "503 5.5.1 Already authenticated"),
        (MAIL + RCPT + b"DATA\r\n", f"250 2.1.0 Ok\n250 2.1.5 Ok\n{START_DATA}"),
        (BODY + b".\r\n", QUEUED),
    ),
    d(
        "auth plain with a continuation",
        (b"EHLO client.test\r\n", AUTH_EHLO),
        (b"AUTH PLAIN\r\n", "334 "),
        (b"{PLAIN}\r\n", AUTHED),
        (
            b"MAIL FROM:<app@other.example>\r\n",
            "550 5.7.1 Sender <app@other.example> is not allowed for this SMTP credential",
        ),
    ),
    d(
        "auth plain and its errors",
        (b"EHLO client.test\r\n", AUTH_EHLO),
        (b"AUTH\r\n", "501 5.5.4 Not enough value"),
        (b"AUTH \x1c\r\n", "501 5.5.4 Not enough value"),  # white space to str.split, not to bytes.strip
        (b"AUTH \xc2\xa0\r\n", "501 5.5.4 Not enough value"),  # a no-break space, in UTF-8
        (b"AUTH PLAIN a b\r\n", "501 5.5.4 Too many values"),
        (b"AUTH CRAM-MD5\r\n", "504 5.5.4 Unrecognized authentication type"),
        (b"AUTH plain {PLAIN}\r\n", "504 5.5.4 Unrecognized authentication type"),
        (b"AUTH PLAIN !!!\r\n", "501 5.5.2 Can't decode base64"),
        (b"AUTH PLAIN bm96ZXJv\r\n", "501 5.5.2 Can't split auth value"),
        (b"AUTH PLAIN\r\n", "334 "),
        (b"*\r\n", "501 5.7.0 Auth aborted"),
        (b"AUTH PLAIN\r\n", "334 "),
        (b"!!!\r\n", "501 5.5.2 Can't decode base64"),
        (b"AUTH PLAIN {WRONG}\r\n", INVALID),
        (b"AUTH PLAIN\r\n", "334 "),
        (b"x" * 2000 + b"\r\n", "500 5.5.2 Line too long"),
        (b"NOOP\r\n", "250 2.0.0 OK"),
        (MAIL, "250 2.1.0 Ok"),
        (RCPT, "554 5.7.1 <user@example.org>: Relay access denied"),
    ),
    d(
        "auth plain, then MAIL with AUTH=<> as Exim writes it",
        (b"EHLO client.test\r\n", AUTH_EHLO),
        (b"AUTH PLAIN {PLAIN}\r\n", AUTHED),
        (b"MAIL FROM:<app@example.com> AUTH=<>\r\n" + RCPT + b"DATA\r\n", f"250 2.1.0 Ok\n250 2.1.5 Ok\n{START_DATA}"),
        (BODY + b".\r\n", QUEUED),
    ),
    d(
        "auth login",
        (b"EHLO client.test\r\n", AUTH_EHLO),
        (b"AUTH LOGIN\r\n", "334 VXNlciBOYW1lAA=="),
        (b"{USER}\r\n", "334 UGFzc3dvcmQA"),
        (b"{PASSWORD}\r\n", AUTHED),
    ),
    d(
        "auth login with an initial response, pipelined",
        (b"EHLO client.test\r\n", AUTH_EHLO),
        (b"AUTH LOGIN {USER}\r\n", "334 UGFzc3dvcmQA"),
        (b"{PASSWORD}\r\n" + MAIL + RCPT, f"{AUTHED}\n250 2.1.0 Ok\n250 2.1.5 Ok"),
    ),
    d(
        "auth login cancelled and wrong",
        (b"EHLO client.test\r\n", AUTH_EHLO),
        (b"AUTH LOGIN\r\n", "334 VXNlciBOYW1lAA=="),
        (b"*\r\n", "501 5.7.0 Auth aborted"),
        (b"AUTH LOGIN {USER}\r\n", "334 UGFzc3dvcmQA"),
        (b"*\r\n", "501 5.7.0 Auth aborted"),
        (b"AUTH LOGIN !!!\r\n", "501 5.5.2 Can't decode base64"),
        (b"AUTH LOGIN {USER}\r\n", "334 UGFzc3dvcmQA"),
        (b"{WRONGB64}\r\n", INVALID),
    ),
]

# Implicit TLS (465): AUTH offered, no STARTTLS.
IMPLICIT = [
    d(
        "implicit tls",
        (b"EHLO client.test\r\n", ehlo_lines(starttls=False, auth=True)),
        (b"STARTTLS\r\n", "454 4.7.0 TLS not available"),
        (b"HELP\r\n", "250 2.0.0 Supported commands: AUTH DATA EHLO HELO HELP MAIL NOOP QUIT RCPT RSET VRFY"),
        (b"HELP STARTTLS\r\n", "501 5.5.4 Supported commands: AUTH DATA EHLO HELO HELP MAIL NOOP QUIT RCPT RSET VRFY"),
        (b"AUTH PLAIN {PLAIN}\r\n", AUTHED),
        (MAIL + RCPT + b"DATA\r\n", f"250 2.1.0 Ok\n250 2.1.5 Ok\n{START_DATA}"),
        (BODY + b".\r\n", QUEUED),
        (b"QUIT\r\n", BYE),
    ),
]

# Small limits.
SMALL = [
    d("ehlo shows the size limit", (b"EHLO client.test\r\n", ehlo_lines(size=2000))),
    d(
        "too much data",
        (
            b"EHLO client.test\r\n" + MAIL + RCPT + b"DATA\r\n",
            f"{ehlo_lines(size=2000)}\n250 2.1.0 Ok\n250 2.1.5 Ok\n{START_DATA}",
        ),
        (b"Subject: x\r\n\r\n" + b"y" * 900 + b"\r\n" + b"z" * 900 + b"\r\n" + b"w" * 900 + b"\r\n", SILENT),
        (b".\r\n", "552 5.3.4 Error: Too much mail data"),
        (MAIL + RCPT + b"DATA\r\n", f"250 2.1.0 Ok\n250 2.1.5 Ok\n{START_DATA}"),
        (b"Subject: x\r\n\r\n" + b"y" * 900 + b"\r\n.\r\n", QUEUED),
    ),
    d(
        "too many recipients",
        (b"EHLO client.test\r\n" + MAIL, f"{ehlo_lines(size=2000)}\n250 2.1.0 Ok"),
        (
            b"RCPT TO:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nRCPT TO:<c@example.org>\r\n",
            "250 2.1.5 Ok\n250 2.1.5 Ok\n452 4.5.3 Too many recipients",
        ),
    ),
    d(
        "declared size over the limit",
        (b"EHLO client.test\r\n", ehlo_lines(size=2000)),
        (
            b"MAIL FROM:<app@example.com> SIZE=2001\r\n",
            "552 5.3.4 Error: message size exceeds fixed maximum message size",
        ),
        (b"MAIL FROM:<app@example.com> SIZE=2000\r\n", "250 2.1.0 Ok"),
    ),
]

THROTTLED = [
    d(
        "auth throttled after a failure",
        (b"EHLO client.test\r\n", AUTH_EHLO),
        (b"AUTH PLAIN {WRONG}\r\n", INVALID),
        (b"AUTH PLAIN {PLAIN}\r\n", "454 4.7.0 Too many failed authentication attempts, try again later"),
        (b"AUTH LOGIN {USER}\r\n", "334 UGFzc3dvcmQA"),
        (b"{PASSWORD}\r\n", "454 4.7.0 Too many failed authentication attempts, try again later"),
    ),
]


def client_tls() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # relay's self-signed certificate
    return context


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


async def expect(reader: asyncio.StreamReader, want: str, where: str) -> None:
    for line in want.split("\n"):
        if line == "":
            continue
        if line == SILENT:
            try:
                early = await asyncio.wait_for(reader.readline(), 0.3)
            except TimeoutError:
                continue
            raise AssertionError(f"{where}: expected no reply yet, got {early!r}")
        if line == CLOSED:
            rest = await asyncio.wait_for(reader.read(), 10)
            assert rest == b"", f"{where}: expected the connection closed, got {rest!r}"
            continue
        got = await asyncio.wait_for(reader.readuntil(b"\r\n"), 10)
        if "<ID>" in line:
            pattern = re.escape(line).replace(re.escape("<ID>"), r"[0-9A-Za-z]+") + "\r\n"
            assert re.fullmatch(pattern.encode(), got), f"{where}: expected {line!r}, got {got!r}"
        else:
            assert got == line.encode() + b"\r\n", f"{where}: expected {line!r}, got {got!r}"


async def run(dialogue: Dialogue, port: int, subs: dict[bytes, bytes], implicit: bool = False) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_tls() if implicit else None)
    try:
        await expect(reader, GREETING, f"{dialogue.name}: greeting")
        for number, (send, want) in enumerate(dialogue.steps, 1):
            where = f"{dialogue.name}, step {number}"
            if send is TLS:
                await writer.start_tls(client_tls())
                continue
            pieces = send if isinstance(send, tuple) else (send,)
            for i, piece in enumerate(pieces):
                for key, value in subs.items():
                    piece = piece.replace(key, value)
                writer.write(piece)
                await writer.drain()
                if i < len(pieces) - 1:
                    await asyncio.sleep(0.05)  # separate reads on the server's side
            await expect(reader, want, where)
    finally:
        writer.close()


async def run_all(
    dialogues: list[Dialogue], port: int, subs: dict[bytes, bytes] | None = None, implicit: bool = False
) -> None:
    failures = []
    for dialogue in dialogues:
        try:
            await run(dialogue, port, subs or {}, implicit)
        except (AssertionError, TimeoutError, ConnectionError, asyncio.IncompleteReadError) as exc:
            failures.append(f"{dialogue.name}: {type(exc).__name__}: {exc}")
    assert not failures, "\n".join(failures)


async def credentials(relay: Any) -> dict[bytes, bytes]:
    cred, password = await create_smtp_credential(
        relay.store.credentials, relay.store.clock, allowed_from=("example.com",)
    )
    user, secret = cred.username.encode(), password.encode()
    return {
        b"{PLAIN}": b64(b"\0" + user + b"\0" + secret),
        b"{WRONG}": b64(b"\0" + user + b"\0wrong"),
        b"{USER}": b64(user),
        b"{PASSWORD}": b64(secret),
        b"{WRONGB64}": b64(b"wrong"),
    }


async def test_trusted_client_dialogues(relay_factory: Any, sink: Any) -> None:
    relay = await relay_factory(delivery={"smarthost": sink.address})
    await run_all(TRUSTED, relay.smtp_addresses[0][1])


async def test_authenticating_client_dialogues(relay_factory: Any, sink: Any) -> None:
    relay = await relay_factory(
        smtp={
            "trusted_networks": ["192.0.2.0/24"],
            "plaintext_auth_networks": ["127.0.0.0/8"],
            "max_auth_failures": 100,
        },
        delivery={"smarthost": sink.address},
    )
    await run_all(AUTHENTICATING, relay.smtp_addresses[0][1], await credentials(relay))


async def test_implicit_tls_dialogues(relay_factory: Any, sink: Any) -> None:
    relay = await relay_factory(
        smtp={"trusted_networks": ["192.0.2.0/24"], "tls_listen": ["127.0.0.1:0"]}, delivery={"smarthost": sink.address}
    )
    await run_all(IMPLICIT, relay.smtps_addresses[0][1], await credentials(relay), implicit=True)


async def test_small_limit_dialogues(relay_factory: Any, sink: Any) -> None:
    relay = await relay_factory(
        smtp={"max_message_size": 2000, "max_recipients": 2}, delivery={"smarthost": sink.address}
    )
    await run_all(SMALL, relay.smtp_addresses[0][1])


async def test_auth_throttle_dialogue(relay_factory: Any, sink: Any) -> None:
    relay = await relay_factory(
        smtp={"trusted_networks": ["192.0.2.0/24"], "plaintext_auth_networks": ["127.0.0.0/8"], "max_auth_failures": 1},
        delivery={"smarthost": sink.address},
    )
    await run_all(THROTTLED, relay.smtp_addresses[0][1], await credentials(relay))


async def test_connections_past_the_per_address_limit_get_421(relay_factory: Any) -> None:
    relay = await relay_factory(smtp={"max_connections_per_ip": 1})
    port = relay.smtp_addresses[0][1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await expect(reader, GREETING, "first")
    second_reader, second_writer = await asyncio.open_connection("127.0.0.1", port)
    await expect(second_reader, "421 4.7.0 Too many connections from your address, try again later\nCLOSED", "second")
    second_writer.close()
    writer.write(b"QUIT\r\n")
    await expect(reader, BYE, "first, quit")
    writer.close()
    for _ in range(50):  # the first connection's count is given back once it is gone
        if not relay.smtp_sessions.counts.by_address:
            break
        await asyncio.sleep(0.02)
    third_reader, third_writer = await asyncio.open_connection("127.0.0.1", port)
    await expect(third_reader, GREETING, "third")
    third_writer.close()


async def test_connections_past_the_total_get_421(relay_factory: Any) -> None:
    """Many addresses together could hold every file descriptor: [smtp] max_connections caps them in all."""
    relay = await relay_factory(smtp={"max_connections": 2, "trusted_networks": ["192.0.2.0/24"]})
    port = relay.smtp_addresses[0][1]
    opened = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
    for n, (reader, _) in enumerate(opened):
        await expect(reader, GREETING, f"connection {n}")
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await expect(reader, "421 4.7.0 Too many connections, try again later\nCLOSED", "past the total")
    writer.close()
    for _, w in opened:
        w.close()


async def test_a_trusted_client_gets_in_past_the_total(relay_factory: Any) -> None:
    """A client of trusted_networks (the applications relay serves) is let in past the total, and counts."""
    trusting = await relay_factory(smtp={"max_connections": 2, "trusted_networks": ["127.0.0.0/8"]})
    port = trusting.smtp_addresses[0][1]
    opened = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
    for n, (reader, _) in enumerate(opened):
        await expect(reader, GREETING, f"trusted connection {n}")
    assert trusting.smtp_sessions.counts.open == 3
    for _, w in opened:
        w.close()


async def test_an_idle_connection_is_closed_without_a_reply(relay_factory: Any) -> None:
    relay = await relay_factory(smtp={"idle_timeout": "1s"})
    reader, writer = await asyncio.open_connection(*relay.smtp_addresses[0])
    await expect(reader, GREETING, "greeting")
    await asyncio.sleep(0.6)
    writer.write(b"NOOP\r\n")
    await expect(reader, "250 2.0.0 OK", "first noop")
    await asyncio.sleep(0.6)  # 1.2 s since the greeting: each command restarts the clock
    writer.write(b"EHLO client.test\r\n")
    await expect(reader, EHLO, "ehlo")
    last = time.monotonic()
    writer.write(b"MAIL FROM:<app@example.com>\r\nRCPT TO:<user@example.org>\r\nDATA\r\n")
    await expect(reader, f"250 2.1.0 Ok\n250 2.1.5 Ok\n{START_DATA}", "data")
    for _ in range(3):  # data pieces restart the clock too
        await asyncio.sleep(0.6)
        writer.write(b"more data\r\n")
        last = time.monotonic()
    assert await asyncio.wait_for(reader.read(), 10) == b""
    assert time.monotonic() - last >= 0.9
    writer.close()
    assert not any((await relay.store.queue.summary()).by_state.values())


async def test_a_connection_lost_mid_data_leaves_nothing(relay_factory: Any) -> None:
    relay = await relay_factory()
    reader, writer = await asyncio.open_connection(*relay.smtp_addresses[0])
    await expect(reader, GREETING, "greeting")
    writer.write(b"EHLO client.test\r\n" + MAIL + RCPT + b"DATA\r\n" + BODY)
    await expect(reader, f"{EHLO}\n250 2.1.0 Ok\n250 2.1.5 Ok\n{START_DATA}", "data")
    writer.write(b"more\r\n.")
    await writer.drain()
    writer.transport.abort()
    await asyncio.sleep(0.3)
    assert not any((await relay.store.queue.summary()).by_state.values())
    for _ in range(50):
        if not relay.smtp_sessions.open:
            break
        await asyncio.sleep(0.02)
    assert not relay.smtp_sessions.open and not relay.smtp_sessions.counts.by_address


@pytest.mark.parametrize("cut", [1, 7, 20])
async def test_a_connection_closed_mid_command_leaves_the_counts_right(relay_factory: Any, cut: int) -> None:
    relay = await relay_factory()
    reader, writer = await asyncio.open_connection(*relay.smtp_addresses[0])
    await expect(reader, GREETING, "greeting")
    writer.write((b"EHLO client.test\r\n" + MAIL)[:cut])
    await writer.drain()
    writer.close()
    for _ in range(100):
        if not relay.smtp_sessions.open:
            break
        await asyncio.sleep(0.02)
    assert not relay.smtp_sessions.open and not relay.smtp_sessions.counts.by_address


# Arguments a sloppy or hostile client sends: white space that str.split knows and bytes.strip does not,
# a no-break space and NEL in UTF-8, a NUL, bytes that are not UTF-8, quotes and brackets left open.
ODD_ARGUMENTS = [
    *(b"\x1c", b"\x1f", b"\xc2\xa0", b"\xc2\x85", b"\x00", b"\xff\xfe"),
    *(b'"', b"<", b'<"', b"\\@[", b"<>x", b"(", b"\x1c<a@b>", b"<a@b"),
]


async def test_odd_arguments_to_every_command_get_a_reply_of_their_own(relay_factory: Any, sink: Any) -> None:
    """No argument turns into relay's guard reply (451, an exception logged): each command answers it."""
    relay = await relay_factory(
        smtp={
            "trusted_networks": ["192.0.2.0/24"],
            "plaintext_auth_networks": ["127.0.0.0/8"],
            "max_auth_failures": 1000,
        },
        delivery={"smarthost": sink.address},
    )
    port = relay.smtp_addresses[0][1]
    words = [w.encode() for w in COMMANDS.split() if w not in ("DATA", "QUIT", "STARTTLS")]
    for word in [*words, b"MAIL FROM:", b"RCPT TO:", b"VRFY <"]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            await expect(reader, GREETING, "greeting")
            writer.write(b"EHLO client.test\r\n")
            await expect(reader, AUTH_EHLO, "EHLO")
            for odd in ODD_ARGUMENTS:
                writer.write(word + b" " + odd + b"\r\n")
                line = await asyncio.wait_for(reader.readline(), 5)
                while line[3:4] == b"-":
                    line = await asyncio.wait_for(reader.readline(), 5)
                if line.startswith(b"334"):  # an AUTH challenge: cancel it
                    writer.write(b"*\r\n")
                    line = await asyncio.wait_for(reader.readline(), 5)
                assert line[:1] in (b"2", b"5") and not line.startswith(b"451"), (word, odd, line)
                if word.startswith((b"MAIL", b"RCPT")):
                    writer.write(b"RSET\r\n")
                    assert (await asyncio.wait_for(reader.readline(), 5)).startswith(b"250")
        finally:
            writer.close()
