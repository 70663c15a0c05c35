"""``relay send``: a test message through the running relay, over SMTP, as a client would send it."""

from __future__ import annotations

import argparse
import email.policy
import mimetypes
import os
import re
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any

from relay import config as config_mod
from relay.cli.common import CommandError, Parents, Subparsers, UsageError
from relay.cli.output import Report
from relay.config import Config

SEND_PASSWORD_ENV = "RELAY_SEND_PASSWORD"
TLS_CHOICES = ("none", "starttls", "implicit")
_HEADER_NAME = re.compile(r"[!-9;-~]+")  # RFC 5322 ftext
_REPLACEABLE = ("From", "To", "Subject", "Date", "Message-ID")
Refused = dict[str, tuple[int, bytes]]  # recipient → SMTP reply, as smtplib's sendmail returns them


def add_commands(sub: Subparsers[argparse.ArgumentParser], parents: Parents) -> None:
    epilog = f"The password for --auth-user is read from ${SEND_PASSWORD_ENV}, else asked for."
    p = sub.add_parser(
        "send", parents=parents.both, help="send a test message through the running relay (SMTP)", epilog=epilog
    )
    p.add_argument("--from", dest="sender", required=True, metavar="ADDRESS", help="envelope sender and From: header")
    p.add_argument("--to", action="append", required=True, metavar="ADDRESS", help="recipient (repeatable)")
    p.add_argument("--subject", default="relay test message", help='Subject: header (default: "%(default)s")')
    p.add_argument("--body", default="This is a test message sent with 'relay send'.\n", help="the text body")
    p.add_argument(
        "--header",
        action="append",
        default=[],
        metavar='"NAME: VALUE"',
        help="add a header, or replace From:, To:, Subject:, Date: or Message-ID: (repeatable)",
    )
    p.add_argument(
        "--attach",
        action="append",
        default=[],
        metavar="FILE",
        help="attach a file, its type guessed from its name (repeatable)",
    )
    p.add_argument(
        "--server",
        metavar="HOST[:PORT]",
        help="where to submit (default: the first [smtp] listen address, or tls_listen with --tls implicit)",
    )
    p.add_argument(
        "--port",
        type=int,
        metavar="PORT",
        help="TCP port, instead of the one in --server (default with a bare host: 587, 465 for implicit)",
    )
    p.add_argument(
        "--tls",
        choices=TLS_CHOICES,
        default="none",
        help="none (default), starttls (refuse to go on without it) or implicit (TLS from the start)",
    )
    p.add_argument(
        "--insecure",
        action="store_true",
        help="do not verify the server's certificate (e.g. relay's own self-signed one)",
    )
    p.add_argument(
        "--auth-user",
        metavar="USER",
        help=f"AUTH as USER (PLAIN or LOGIN); password from ${SEND_PASSWORD_ENV} or a prompt",
    )
    p.set_defaults(func=send)


def send(args: argparse.Namespace, config: Config) -> Report:
    host, port = _send_target(args, config)
    msg = _test_message(args, config.server.hostname)
    password = None
    if args.auth_user:
        import getpass  # here: it loads termios, ~0.5 MB in every relay process (relay serve too)

        password = os.environ.get(SEND_PASSWORD_ENV) or getpass.getpass(f"SMTP password for {args.auth_user}: ")
    refused = _submit_reporting_failures(args, host, port, password, msg.as_bytes())
    return _sent(args, f"{host}:{port}", msg["Message-ID"], refused)


def _send_target(args: argparse.Namespace, config: Config) -> tuple[str, int]:
    """Host and port from --server/--port, else from the config's listeners (loopback for a wildcard)."""
    default_port = 465 if args.tls == "implicit" else 587
    if args.server:
        try:
            host, port = config_mod.parse_hostport(args.server, default_port=default_port)
        except ValueError as exc:
            raise UsageError(f"--server: {exc}") from None
    else:
        listeners = config.smtp.tls_listen if args.tls == "implicit" else config.smtp.listen
        if not listeners:
            raise UsageError("no [smtp] listen address to send to; use --server")
        host, port = listeners[0]
        host = "127.0.0.1" if host in ("0.0.0.0", "") else "::1" if host == "::" else host
    if args.port is not None:
        if not 0 < args.port < 65536:
            raise UsageError("--port must be between 1 and 65535")
        port = args.port
    return host, port


def _extra_headers(values: list[str]) -> list[tuple[str, str]]:
    headers = []
    for text in values:
        name, colon, value = text.partition(":")
        if not colon or not _HEADER_NAME.fullmatch(name):
            raise UsageError(f'--header {text!r}: expected "Name: value"')
        if "\r" in value or "\n" in value:
            raise UsageError(f"--header {name}: a value cannot contain a line break")
        headers.append((name, value.strip()))
    return headers


def _attach(msg: EmailMessage, path: str) -> None:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"--attach {path}: {exc.strerror}") from None
    ctype, encoding = mimetypes.guess_type(path)
    if ctype is None or encoding is not None:  # unknown, or compressed (.gz): bytes as they are
        ctype = "application/octet-stream"
    maintype, subtype = ctype.split("/", 1)
    msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=Path(path).name)


def _test_message(args: argparse.Namespace, hostname: str) -> EmailMessage:
    """The message to send, with CRLF line ends (email.policy.SMTP) as SMTP requires."""
    extra = _extra_headers(args.header)
    given = {name.lower() for name, _ in extra}
    msg = EmailMessage(policy=email.policy.SMTP)
    defaults = zip(
        _REPLACEABLE,
        (args.sender, ", ".join(args.to), args.subject, formatdate(localtime=True), make_msgid(domain=hostname)),
        strict=True,
    )
    for name, value in defaults:
        if name.lower() not in given:
            msg[name] = value
    for name, value in extra:
        msg[name] = value
    msg.set_content(args.body)
    for path in args.attach:
        _attach(msg, path)
    return msg


def _tls_context(insecure: bool) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _submit(args: argparse.Namespace, host: str, port: int, password: str | None, data: bytes) -> Refused:
    """Submit over SMTP as the options say; returns the refused recipients (smtplib's sendmail)."""
    context = _tls_context(args.insecure)
    smtp: smtplib.SMTP
    if args.tls == "implicit":
        smtp = smtplib.SMTP_SSL(host, port, local_hostname="localhost", timeout=30, context=context)
    else:
        smtp = smtplib.SMTP(host, port, local_hostname="localhost", timeout=30)
    with smtp:
        if args.tls == "starttls":
            smtp.starttls(context=context)
        if args.auth_user:
            assert password is not None
            smtp.login(args.auth_user, password)
        return smtp.sendmail(args.sender, args.to, data)


def _submit_reporting_failures(
    args: argparse.Namespace, host: str, port: int, password: str | None, data: bytes
) -> Refused:
    """:func:`_submit`, its failures as a CommandError (exit status 1) saying what went wrong."""
    try:
        return _submit(args, host, port, password, data)
    except smtplib.SMTPAuthenticationError as exc:
        error = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else exc.smtp_error
        raise CommandError(f"authentication failed: {exc.smtp_code} {error}") from None
    except ssl.SSLCertVerificationError as exc:
        raise CommandError(f"sending failed: {exc.verify_message} (--insecure to skip the check)") from None
    except (smtplib.SMTPException, OSError) as exc:
        raise CommandError(f"sending failed: {exc}") from None


def _sent(args: argparse.Namespace, server: str, message_id: str, refused: Refused) -> Report:
    accepted = [r for r in args.to if r not in refused]
    data: dict[str, Any] = {
        "server": server,
        "tls": args.tls,
        "auth_user": args.auth_user,
        "message_id": message_id,
        "accepted": accepted,
        "refused": {k: v[1].decode() for k, v in refused.items()},
    }
    how = ", ".join(x for x in (args.tls if args.tls != "none" else "", args.auth_user and f"as {args.auth_user}") if x)
    text = [f"queued for {', '.join(accepted)} via {server}" + (f" ({how})" if how else "")]
    text.extend(f"refused {rcpt}: {code} {reply.decode(errors='replace')}" for rcpt, (code, reply) in refused.items())
    return Report(data, text)
