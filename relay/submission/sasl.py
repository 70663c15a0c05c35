"""The SASL exchange of SMTP AUTH (RFC 4954) for PLAIN (RFC 4616) and LOGIN, without I/O.

:func:`start` reads the AUTH command's argument; each step says what happens next: a 334
:class:`Challenge` whose answer (the client's next line) gives the next step, a :class:`Refusal`
that ends the exchange with its reply, or the :class:`Credentials` to check. The SMTP server
(relay.submission.server) writes the replies, feeds it the lines and checks the credentials; what
it must know of the session first (EHLO, TLS, not yet authenticated) it checks before :func:`start`.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
from collections.abc import Callable

from relay.submission.commands import (
    AUTH_ABORTED,
    AUTH_BAD_BASE64,
    AUTH_BAD_SPLIT,
    AUTH_NO_VALUE,
    AUTH_TOO_MANY,
    AUTH_UNKNOWN,
    CHALLENGE_PASSWORD,
    CHALLENGE_PLAIN,
    CHALLENGE_USER,
    MECHANISMS,
)


@dataclasses.dataclass(frozen=True)
class Challenge:
    """Send ``reply`` (a 334); the client's next line goes to ``answer``."""

    reply: bytes
    answer: Callable[[bytes], Step]


@dataclasses.dataclass(frozen=True)
class Refusal:
    """The exchange ends with ``reply``."""

    reply: bytes


@dataclasses.dataclass(frozen=True)
class Credentials:
    """The login and password the client gave: the server checks them."""

    login: bytes
    password: bytes


Step = Challenge | Refusal | Credentials


def start(arg: str | None) -> Step:
    """The first step for ``AUTH <arg>``: ``PLAIN`` or ``LOGIN``, with or without an initial response."""
    args = arg.split() if arg else []  # str.split's white space is wider than the command line's strip
    if not args:
        return Refusal(AUTH_NO_VALUE)
    if len(args) > 2:
        return Refusal(AUTH_TOO_MANY)
    mechanism = args[0]
    if mechanism not in MECHANISMS:
        return Refusal(AUTH_UNKNOWN)
    if len(args) == 1:
        return Challenge(CHALLENGE_PLAIN, _plain) if mechanism == "PLAIN" else Challenge(CHALLENGE_USER, _login_user)
    initial = _initial_response(args[1])
    if initial is None:
        return Refusal(AUTH_BAD_BASE64)
    if mechanism == "PLAIN":
        return _plain_credentials(initial)
    return Challenge(CHALLENGE_PASSWORD, lambda line: _login_password(initial, line))


def _plain(line: bytes) -> Step:
    decoded = _response(line)
    return decoded if isinstance(decoded, Refusal) else _plain_credentials(decoded)


def _plain_credentials(decoded: bytes) -> Step:
    parts = decoded.split(b"\0")  # authorization id, login, password (RFC 4616)
    if len(parts) != 3:
        return Refusal(AUTH_BAD_SPLIT)
    return Credentials(parts[1], parts[2])


def _login_user(line: bytes) -> Step:
    login = _response(line)
    if isinstance(login, Refusal):
        return login
    return Challenge(CHALLENGE_PASSWORD, lambda line: _login_password(login, line))


def _login_password(login: bytes, line: bytes) -> Step:
    password = _response(line)
    return password if isinstance(password, Refusal) else Credentials(login, password)


def _response(line: bytes) -> bytes | Refusal:
    """The decoded answer to a 334 challenge, or the refusal when the client cancels (``*``) or it is
    not base64."""
    blob = line.strip()
    if blob == b"*":
        return Refusal(AUTH_ABORTED)
    try:
        return base64.b64decode(blob, validate=True)
    except binascii.Error:
        return Refusal(AUTH_BAD_BASE64)


def _initial_response(text: str) -> bytes | None:
    try:
        return base64.b64decode(text.encode("utf-8", "surrogateescape"), validate=True)
    except (binascii.Error, ValueError):
        return None
