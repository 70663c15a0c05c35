"""The ``relay`` command: serve, check-config, keys, queue, send, bounces, suppressions, domains, sandbox."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import email.policy
import getpass
import ipaddress
import json
import logging
import mimetypes
import os
import re
import smtplib
import ssl
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any, TypeVar

from relay import __version__
from relay import config as config_mod
from relay.clock import SystemClock
from relay.config import Config, ConfigError
from relay.credentials import create_smtp_credential, valid_sender_rule
from relay.keys import SCOPES, create_api_key
from relay.startup import EX_CONFIG, StartupError
from relay.store import Store
from relay.store.queue import Selection

T = TypeVar("T")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):  # no command, or a command group without its action
        getattr(args, "group_parser", parser).print_help()
        return 2
    try:
        config = Config() if getattr(args, "no_config", False) else config_mod.load(args.config)
    except ConfigError as exc:
        print(f"relay: {exc}", file=sys.stderr)
        return EX_CONFIG  # systemd's Restart=on-failure will not loop forever on it
    func: Callable[[argparse.Namespace, Config], int] = args.func
    try:
        return func(args, config)
    except KeyboardInterrupt:
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="relay",
        description="A self-hosted SMTP relay with an HTTP submission API.",
        epilog="Every command reads the config from --config, $RELAY_CONFIG or ./config/relay.toml.",
    )
    parser.add_argument("--version", action="version", version=f"relay {__version__}")
    # --config and --json are accepted by a command group and by its actions, before or after the
    # action. Their defaults live here only: a copy of an option in a sub-parser has the default
    # SUPPRESS, so an action that does not repeat it leaves what the group parsed in place.
    parser.set_defaults(config=None, json=False)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS,
                        help="TOML config file (default: $RELAY_CONFIG or ./config/relay.toml)")  # fmt: skip
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON for scripts")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    p = sub.add_parser("serve", parents=[common], help="run SMTP submission, the HTTP API and delivery")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("check-config", parents=[common, as_json], help="validate the config and print it")
    p.set_defaults(func=cmd_check_config)

    _, keys = command_group(sub, "keys", "manage HTTP API keys", common, as_json)
    p = keys.add_parser("create", parents=[common, as_json], help="create an API key (shown once)")
    p.add_argument("--name", default="default", help="a label for the key")
    p.add_argument("--scope", action="append", choices=SCOPES, help="grant a scope (repeatable; default: send)")
    p.add_argument("--allow-ip", action="append", metavar="CIDR", help="only from these networks (repeatable)")
    p.add_argument("--rate-limit", type=int, metavar="N", help="requests per hour (default: [http] rate_limit)")
    p.add_argument("--daily-quota", type=int, metavar="N", help="messages per UTC day")
    p.add_argument("--monthly-quota", type=int, metavar="N", help="messages per UTC month")
    p.add_argument("--test", action="store_true", help="a test key (rly_test_...): its mail is captured, not delivered")
    own_help = "the key reads only the messages it sent (and their events); no instance-wide stats"
    p.add_argument("--own-messages", action="store_true", help=own_help)
    p.set_defaults(func=cmd_keys_create)
    p = keys.add_parser("list", parents=[common, as_json], help="list API keys (never their secrets)")
    p.set_defaults(func=cmd_keys_list)
    p = keys.add_parser("revoke", parents=[common, as_json], help="revoke an API key")
    p.add_argument("key_id", help="the key's id (key_...)")
    p.set_defaults(func=cmd_keys_revoke)

    _, creds = command_group(sub, "smtp-credentials", "manage SMTP AUTH credentials", common, as_json)
    p = creds.add_parser("create", parents=[common, as_json], help="create a username and password (shown once)")
    p.add_argument("--allowed-from", action="append", metavar="DOMAIN_OR_ADDRESS",
                   help="senders this credential may use (repeatable; default: any)")  # fmt: skip
    p.add_argument("--rate-limit", type=int, metavar="N", help="messages per hour")
    p.add_argument("--tag", action="append", help="tag every message sent with it (repeatable)")
    p.add_argument("--test", action="store_true", help="test credentials: their mail is captured, not delivered")
    p.set_defaults(func=cmd_creds_create)
    p = creds.add_parser("list", parents=[common, as_json], help="list SMTP credentials (passwords masked)")
    p.set_defaults(func=cmd_creds_list)
    p = creds.add_parser("revoke", parents=[common, as_json], help="revoke SMTP credentials")
    p.add_argument("credential_id", help="the credential's id (cred_...)")
    p.set_defaults(func=cmd_creds_revoke)

    selection = argparse.ArgumentParser(add_help=False)
    group = selection.add_argument_group("which waiting recipients (filters combine; one is required)")
    group.add_argument("--message", metavar="ID")
    group.add_argument("--domain", help="recipient domain")
    group.add_argument("--sender", help="envelope sender")
    group.add_argument("--recipient", help="recipient address")
    group.add_argument("--older-than", metavar="AGE", help='accepted more than AGE ago, e.g. "2d"')
    group.add_argument("--all", action="store_true", help="every waiting recipient")

    queue, actions = command_group(sub, "queue", "show and control the queue (default: counts)", common, as_json)
    queue.set_defaults(func=cmd_queue)
    p = actions.add_parser("domains", parents=[common, as_json], help="waiting recipients by destination domain")
    p.set_defaults(func=cmd_queue_domains)
    p = actions.add_parser("show", parents=[common, as_json], help="one message, its recipients and attempts")
    p.add_argument("message_id")
    p.set_defaults(func=cmd_queue_show)
    p = actions.add_parser("retry", parents=[common, as_json, selection], help="make waiting recipients due now")
    p.set_defaults(func=cmd_queue_retry)
    p = actions.add_parser("suspend", parents=[common, as_json], help="hold a destination domain for a while")
    p.add_argument("domain")
    p.add_argument("--for", dest="duration", default="1h", help='how long, e.g. "30m" (default 1h)')
    p.add_argument("--reason", default="")
    p.set_defaults(func=cmd_queue_suspend)
    p = actions.add_parser("resume", parents=[common, as_json], help="end a suspension")
    p.add_argument("domain")
    p.set_defaults(func=cmd_queue_resume)
    p = actions.add_parser("bounce", parents=[common, as_json, selection], help="bounce waiting recipients")
    p.add_argument("--reason", default="bounced by the operator")
    p.set_defaults(func=cmd_queue_bounce)
    purge_help = "remove waiting recipients from the queue, without a bounce (postsuper -d)"
    p = actions.add_parser("purge", parents=[common, as_json, selection], help=purge_help)
    p.set_defaults(func=cmd_queue_purge)
    p = actions.add_parser("cancel", parents=[common, as_json], help="cancel a message's waiting recipients")
    p.add_argument("message_id")
    p.set_defaults(func=cmd_queue_cancel)

    _add_send_command(sub, common, as_json)
    _add_bounce_commands(sub, common, as_json)
    _add_domain_commands(sub, common, as_json)
    _add_sandbox_commands(sub, common, as_json)
    return parser


def command_group(
    sub: Any, name: str, help: str, common: argparse.ArgumentParser, as_json: argparse.ArgumentParser
) -> tuple[argparse.ArgumentParser, Any]:
    """A command with actions (``relay NAME ACTION``): the group's parser and its actions.

    The group takes --config and --json too; run without an action it prints its own help (exit 2).
    """
    group = sub.add_parser(name, parents=[common, as_json], help=help)
    group.set_defaults(group_parser=group)
    return group, group.add_subparsers(title=f"{name} commands", metavar="ACTION")


def _add_send_command(sub: Any, common: argparse.ArgumentParser, as_json: argparse.ArgumentParser) -> None:
    epilog = f"The password for --auth-user is read from ${SEND_PASSWORD_ENV}, else asked for."
    p = sub.add_parser("send", parents=[common, as_json], help="send a test message through the running relay (SMTP)",
                       epilog=epilog)  # fmt: skip
    p.add_argument("--from", dest="sender", required=True, metavar="ADDRESS", help="envelope sender and From: header")
    p.add_argument("--to", action="append", required=True, metavar="ADDRESS", help="recipient (repeatable)")
    p.add_argument("--subject", default="relay test message", help='Subject: header (default: "%(default)s")')
    p.add_argument("--body", default="This is a test message sent with 'relay send'.\n", help="the text body")
    p.add_argument("--header", action="append", default=[], metavar='"NAME: VALUE"',
                   help="add a header, or replace From:, To:, Subject:, Date: or Message-ID: (repeatable)")  # fmt: skip
    p.add_argument("--attach", action="append", default=[], metavar="FILE",
                   help="attach a file, its type guessed from its name (repeatable)")  # fmt: skip
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
    p.add_argument("--auth-user", metavar="USER",
                   help=f"AUTH as USER (PLAIN or LOGIN); password from ${SEND_PASSWORD_ENV} or a prompt")  # fmt: skip
    p.set_defaults(func=cmd_send)


def _add_sandbox_commands(sub: Any, common: argparse.ArgumentParser, as_json: argparse.ArgumentParser) -> None:
    help = "mail captured instead of delivered (sandbox mode, test keys)"
    _, actions = command_group(sub, "sandbox", help, common, as_json)
    p = actions.add_parser("list", parents=[common, as_json], help="captured messages, newest first")
    p.add_argument("--limit", type=int, default=20, help="how many (default 20)")
    p.set_defaults(func=cmd_sandbox_list)
    p = actions.add_parser("show", parents=[common, as_json], help="one captured message: envelope, headers, bodies")
    p.add_argument("message_id")
    p.add_argument("--raw", action="store_true", help="print the message as stored (RFC 5322)")
    p.set_defaults(func=cmd_sandbox_show)


def _add_domain_commands(sub: Any, common: argparse.ArgumentParser, as_json: argparse.ArgumentParser) -> None:
    _, domains = command_group(sub, "domains", "sending domains: DKIM keys, DNS records, verification", common, as_json)
    p = domains.add_parser("add", parents=[common, as_json], help="add a domain: makes its DKIM key, lists records")
    p.add_argument("domain")
    p.set_defaults(func=cmd_domains_add)
    p = domains.add_parser("list", parents=[common, as_json], help="sending domains and their status")
    p.set_defaults(func=cmd_domains_list)
    p = domains.add_parser("show", parents=[common, as_json], help="one domain: records to publish, last checks")
    p.add_argument("domain")
    p.set_defaults(func=cmd_domains_show)
    p = domains.add_parser("verify", parents=[common, as_json], help="check the published records now")
    p.add_argument("domain")
    p.set_defaults(func=cmd_domains_verify)
    p = domains.add_parser("remove", parents=[common, as_json], help="remove a domain and delete its keys")
    p.add_argument("domain")
    p.set_defaults(func=cmd_domains_remove)
    _, dkim = command_group(sub, "dkim", "DKIM keys", common, as_json)
    rotate_help = "make a new key to publish next to the current one; it signs once verify sees it"
    p = dkim.add_parser("rotate", parents=[common, as_json], help=rotate_help)
    p.add_argument("domain")
    p.set_defaults(func=cmd_dkim_rotate)


def _add_bounce_commands(sub: Any, common: argparse.ArgumentParser, as_json: argparse.ArgumentParser) -> None:
    _, bounces = command_group(sub, "bounces", "parse returned mail; list recorded bounces", common, as_json)
    p = bounces.add_parser("parse", help="parse a returned message (a file or - for stdin) and print JSON")
    p.add_argument("file", help="the message as received (RFC 5322), or - for stdin")
    p.add_argument("--verbose", action="store_true", help="also print what kind of message it is")
    p.set_defaults(func=cmd_bounces_parse, no_config=True)
    p = bounces.add_parser("list", parents=[common, as_json], help="recorded bounces and complaints, newest first")
    p.add_argument("--recipient")
    p.add_argument("--kind", choices=["hard", "soft", "block", "complaint", "unknown"])
    p.add_argument("--message", metavar="ID")
    p.add_argument("--limit", type=int, default=50)
    p.set_defaults(func=cmd_bounces_list)
    p = bounces.add_parser("show", parents=[common, as_json], help="one bounce, with the returned report")
    p.add_argument("bounce_id", type=int)
    p.set_defaults(func=cmd_bounces_show)

    _, sup = command_group(sub, "suppressions", "the suppression list", common, as_json)
    p = sup.add_parser("list", parents=[common, as_json], help="suppressed addresses")
    p.add_argument("--reason", choices=["hard_bounce", "complaint", "soft_bounces", "manual"])
    p.add_argument("--search", help="part of the address")
    p.add_argument("--limit", type=int, default=100)
    p.set_defaults(func=cmd_suppressions_list)
    p = sup.add_parser("show", parents=[common, as_json], help="whether an address is suppressed, and why")
    p.add_argument("address")
    p.set_defaults(func=cmd_suppressions_show)
    p = sup.add_parser("add", parents=[common, as_json], help="suppress addresses by hand")
    p.add_argument("address", nargs="+")
    p.add_argument("--reason", default="manual", choices=["manual", "hard_bounce", "complaint"])
    p.add_argument("--for", dest="duration", help='only for a while, e.g. "30d" (default: until removed)')
    p.set_defaults(func=cmd_suppressions_add)
    p = sup.add_parser("remove", parents=[common, as_json], help="take an address off the list (reactivate it)")
    p.add_argument("address")
    p.set_defaults(func=cmd_suppressions_remove)
    p = sup.add_parser("reclassify", parents=[common, as_json],
                       help="read the bounces behind hard-bounce suppressions again with the rule in force; list"
                       " (or, with --apply, lift) those that are not hard now")  # fmt: skip
    p.add_argument("--apply", action="store_true", help="lift them (default: a dry run that only lists them)")
    p.set_defaults(func=cmd_suppressions_reclassify)

    allowlist_help = "addresses and domains never suppressed automatically"
    _, allow = command_group(sub, "allowlist", allowlist_help, common, as_json)
    p = allow.add_parser("list", parents=[common, as_json], help="the allowlist")
    p.set_defaults(func=cmd_allowlist_list)
    p = allow.add_parser("add", parents=[common, as_json], help="allow an address or a whole domain")
    p.add_argument("entry")
    p.add_argument("--note", default="")
    p.set_defaults(func=cmd_allowlist_add)
    p = allow.add_parser("remove", parents=[common, as_json], help="remove an allowlist entry")
    p.add_argument("entry")
    p.set_defaults(func=cmd_allowlist_remove)


def _with_store(config: Config, fn: Callable[[Store], Awaitable[T]]) -> T:
    async def run() -> T:
        from relay.app import open_store

        store = open_store(config, SystemClock())
        try:
            return await fn(store)
        finally:
            await store.close()

    return asyncio.run(run())


def rfc3339_utc(timestamp: float) -> str:
    """Unix seconds → ``2026-12-01T10:32:29.123Z`` (RFC 3339, UTC, milliseconds)."""
    seconds, millis = divmod(round(timestamp * 1000), 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (RFC 3339 UTC), level, logger, message, and message_id/recipient when a line
    has them."""

    FIELDS = ("message_id", "recipient", "state", "attempt", "mx_host")

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": rfc3339_utc(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        data.update({f: getattr(record, f) for f in self.FIELDS if hasattr(record, f)})
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def cmd_serve(args: argparse.Namespace, config: Config) -> int:
    from relay.app import serve

    handler = logging.StreamHandler(sys.stderr)
    if config.server.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=config.server.log_level.upper(), handlers=[handler])
    # Neither format shows the caller's file and line or thread and process names: do not collect
    # them for every line (the logging HOWTO's "Optimization" switches).
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logging._srcfile = None
    if config.server.log_level.lower() != "debug":
        logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd logs every command at INFO
    loop_factory = None
    if config.server.event_loop == "uvloop":
        import uvloop

        loop_factory = uvloop.new_event_loop
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            return runner.run(serve(config))
    except StartupError as exc:  # one line and a status of its own (see relay.startup), not a traceback
        print(f"relay: {exc}", file=sys.stderr)
        return exc.status


def cmd_check_config(args: argparse.Namespace, config: Config) -> int:
    """Every section as the config file takes it (secrets masked); settings that resolve at start-up
    ("auto") are shown with what they resolve to on this machine."""
    from relay.config_toml import as_written, to_toml

    sections = as_written(config)
    resolved = {("server", "acceptors"): config.server.acceptor_processes}
    if args.json:
        _print_json({**sections, "resolved": {f"{s}.{k}": v for (s, k), v in resolved.items()}})
        return 0
    print(f"# {config.source}: ok (the effective settings, secrets masked)")
    notes = {key: f"resolves to {value} here" for key, value in resolved.items()}
    print(to_toml(sections, notes), end="")
    return 0


def cmd_keys_create(args: argparse.Namespace, config: Config) -> int:
    scopes = tuple(dict.fromkeys(args.scope or ["send"]))
    try:
        networks = tuple(str(ipaddress.ip_network(c, strict=False)) for c in args.allow_ip or [])
    except ValueError as exc:
        print(f"relay: --allow-ip: {exc}", file=sys.stderr)
        return 2
    for name in ("rate_limit", "daily_quota", "monthly_quota"):
        if getattr(args, name) is not None and getattr(args, name) <= 0:
            print(f"relay: --{name.replace('_', '-')} must be positive", file=sys.stderr)
            return 2
    key, secret = _with_store(
        config,
        lambda s: create_api_key(
            s.keys,
            s.clock,
            args.name,
            scopes,
            allowed_ips=networks,
            rate_limit=args.rate_limit,
            daily_quota=args.daily_quota,
            monthly_quota=args.monthly_quota,
            test=args.test,
            own_messages=args.own_messages,
        ),  # fmt: skip
    )
    if args.json:
        _print_json({**key.public(), "key": secret})
    else:
        mode = "test key (mail is captured in the sandbox, not delivered)" if key.test else "live key"
        print(f"Created API key {key.id} ({key.name}), a {mode}, with scopes: {', '.join(key.scopes)}")
        print("Store it now; it is not shown again:")
        print(secret)
    return 0


def cmd_keys_list(args: argparse.Namespace, config: Config) -> int:
    keys = _with_store(config, lambda s: s.keys.list_api_keys())
    if args.json:
        _print_json([k.public() for k in keys])
        return 0
    for k in keys:
        status = "revoked" if k.revoked_at else "active"
        print(f"{k.id}  {status:8} {'test' if k.test else 'live':5} {k.name:20} {' '.join(k.scopes)}")
    return 0


def _report_revoked(args: argparse.Namespace, ident: str, revoked: bool, what: str) -> int:
    if args.json:
        _print_json({"id": ident, "revoked": revoked})
    elif revoked:
        print(f"revoked {ident}")
    else:
        print(f"relay: no active {what} {ident}", file=sys.stderr)
    return 0 if revoked else 1


def cmd_keys_revoke(args: argparse.Namespace, config: Config) -> int:
    revoked = _with_store(config, lambda s: s.keys.revoke_api_key(args.key_id))
    return _report_revoked(args, args.key_id, revoked, "key")


def cmd_creds_create(args: argparse.Namespace, config: Config) -> int:
    allowed = tuple(r.lower() for r in args.allowed_from or [])
    bad = [r for r in allowed if not valid_sender_rule(r)]
    if bad:
        print(f"relay: --allowed-from {bad[0]!r} is not a domain or an address", file=sys.stderr)
        return 2
    if args.rate_limit is not None and args.rate_limit <= 0:
        print("relay: --rate-limit must be positive", file=sys.stderr)
        return 2
    cred, password = _with_store(
        config,
        lambda s: create_smtp_credential(
            s.credentials,
            s.clock,
            allowed_from=allowed,
            rate_limit=args.rate_limit,
            tags=tuple(args.tag or []),
            test=args.test,
        ),
    )
    if args.json:
        _print_json({**cred.public(), "password": password})
    else:
        print(f"Created SMTP credential {cred.id}" + (" (test: mail is captured, not delivered)" if cred.test else ""))
        print(f"username: {cred.username}")
        print(f"password: {password}")
        print("Store the password now; it is not shown again.")
        if cred.allowed_from:
            print(f"may send as: {', '.join(cred.allowed_from)}")
    return 0


def cmd_creds_list(args: argparse.Namespace, config: Config) -> int:
    found = _with_store(config, lambda s: s.credentials.list_smtp_credentials())
    if args.json:
        _print_json([{**c.public(), "password": "********"} for c in found])
        return 0
    for c in found:
        status = "revoked" if c.revoked_at else "active"
        print(f"{c.id}  {status:8} {'test' if c.test else 'live':5} {c.username:25} ********"
              f" {' '.join(c.allowed_from) or '(any sender)'}")  # fmt: skip
    return 0


def cmd_creds_revoke(args: argparse.Namespace, config: Config) -> int:
    revoked = _with_store(config, lambda s: s.credentials.revoke_smtp_credential(args.credential_id))
    return _report_revoked(args, args.credential_id, revoked, "SMTP credential")


def cmd_queue(args: argparse.Namespace, config: Config) -> int:
    summary = _with_store(config, lambda s: s.queue.summary())
    if args.json:
        _print_json(dataclasses.asdict(summary))
        return 0
    print("recipients by state:")
    for state, count in summary.by_state.items():
        print(f"  {state:11} {count}")
    if summary.by_domain:
        print("pending by domain (queued / deferred / sending):")
        for domain, counts in sorted(summary.by_domain.items()):
            print(f"  {domain:30} {counts.get('queued', 0)} / {counts.get('deferred', 0)} / {counts.get('sending', 0)}")
    return 0


SEND_PASSWORD_ENV = "RELAY_SEND_PASSWORD"
TLS_CHOICES = ("none", "starttls", "implicit")
_HEADER_NAME = re.compile(r"[!-9;-~]+")  # RFC 5322 ftext
_REPLACEABLE = ("From", "To", "Subject", "Date", "Message-ID")


class UsageError(Exception):
    """A bad option value, reported as ``relay: ...`` with exit status 2."""


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
    defaults = zip(_REPLACEABLE, (args.sender, ", ".join(args.to), args.subject, formatdate(localtime=True),
                                  make_msgid(domain=hostname)), strict=True)  # fmt: skip
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


def _submit(args: argparse.Namespace, host: str, port: int, password: str | None, data: bytes) -> dict[str, Any]:
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


def cmd_send(args: argparse.Namespace, config: Config) -> int:
    try:
        host, port = _send_target(args, config)
        msg = _test_message(args, config.server.hostname)
    except UsageError as exc:
        print(f"relay: {exc}", file=sys.stderr)
        return 2
    password = None
    if args.auth_user:
        password = os.environ.get(SEND_PASSWORD_ENV) or getpass.getpass(f"SMTP password for {args.auth_user}: ")
    try:
        refused = _submit(args, host, port, password, msg.as_bytes())
    except smtplib.SMTPAuthenticationError as exc:
        print(f"relay: authentication failed: {exc.smtp_code} {exc.smtp_error.decode(errors='replace')}",
              file=sys.stderr)  # fmt: skip
        return 1
    except ssl.SSLCertVerificationError as exc:
        print(f"relay: sending failed: {exc.verify_message} (--insecure to skip the check)", file=sys.stderr)
        return 1
    except (smtplib.SMTPException, OSError) as exc:
        print(f"relay: sending failed: {exc}", file=sys.stderr)
        return 1
    _report_sent(args, f"{host}:{port}", msg["Message-ID"], refused)
    return 0


def _report_sent(args: argparse.Namespace, server: str, message_id: str, refused: dict[str, Any]) -> None:
    accepted = [r for r in args.to if r not in refused]
    if args.json:
        _print_json({"server": server, "tls": args.tls, "auth_user": args.auth_user, "message_id": message_id,
                     "accepted": accepted, "refused": {k: v[1].decode() for k, v in refused.items()}})  # fmt: skip
        return
    how = ", ".join(x for x in (args.tls if args.tls != "none" else "", args.auth_user and f"as {args.auth_user}") if x)
    print(f"queued for {', '.join(accepted)} via {server}" + (f" ({how})" if how else ""))
    for rcpt, (code, text) in refused.items():
        print(f"refused {rcpt}: {code} {text.decode(errors='replace')}")


def _when(ts: float | None) -> str:
    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def cmd_queue_domains(args: argparse.Namespace, config: Config) -> int:
    queues = _with_store(config, lambda s: s.queue.domain_queues())
    if args.json:
        _print_json([dataclasses.asdict(q) for q in queues])
        return 0
    print(f"{'domain':32} {'queued':>7} {'deferred':>8} {'sending':>7}  oldest               suspended until")
    for q in queues:
        print(
            f"{q.domain:32} {q.queued:7} {q.deferred:8} {q.sending:7}  {_when(q.oldest):20} {_when(q.suspended_until)}"
        )
    return 0


def cmd_queue_show(args: argparse.Namespace, config: Config) -> int:
    async def load(s: Store) -> tuple[Any, dict[str, Any]]:
        message = await s.queue.message(args.message_id)
        if message is None:
            return None, {}
        return message, {r.address: await s.queue.attempts(message.id, r.address) for r in message.recipients}

    message, attempts = _with_store(config, load)
    if message is None:
        print(f"relay: no message {args.message_id}", file=sys.stderr)
        return 1
    if args.json:
        data = dataclasses.asdict(message)
        data["attempts"] = {a: [dataclasses.asdict(x) for x in lst] for a, lst in attempts.items()}
        _print_json(data)
        return 0
    print(f"{message.id}  from <{message.sender}>  {message.size} bytes  via {message.source}")
    print(f"queued:  {_when(message.created_at)}")
    print(f"subject: {message.subject}")
    for r in message.recipients:
        print(f"  <{r.address}> {r.state}, {r.attempts} attempts, next {_when(r.next_attempt_at)}")
        for a in attempts.get(r.address, []):
            print(f"    {_when(a.at)} {a.mx_host or '-'} [{a.ip or '-'}] {a.tls or 'plain'}: {a.code or ''} {a.text}")
    return 0


def _selection(args: argparse.Namespace) -> Selection:
    """The recipients a queue command applies to; exits with status 2 on a missing or bad filter."""
    try:
        age = config_mod.parse_duration(args.older_than) if args.older_than else None
    except ValueError as exc:
        raise SystemExit(f"relay: --older-than: {exc}") from None
    selection = Selection(message_id=args.message, domain=args.domain, sender=args.sender, recipient=args.recipient,
                          created_before=None if age is None else time.time() - age)  # fmt: skip
    if selection.is_everything and not args.all:
        print("relay: say which recipients: --message, --domain, --sender, --recipient, --older-than or --all",
              file=sys.stderr)  # fmt: skip
        raise SystemExit(2)
    return selection


def cmd_queue_retry(args: argparse.Namespace, config: Config) -> int:
    selection = _selection(args)
    count = _with_store(config, lambda s: s.queue.retry_now(selection))
    if args.json:
        _print_json({"retried": count})
    else:
        print(f"{count} recipients are due now (the running relay picks them up within [delivery] poll_interval)")
    return 0


def cmd_queue_suspend(args: argparse.Namespace, config: Config) -> int:
    try:
        duration = config_mod.parse_duration(args.duration)
    except ValueError as exc:
        print(f"relay: --for: {exc}", file=sys.stderr)
        return 2
    until = _with_store(config, lambda s: s.queue.suspend_domain(args.domain, duration, args.reason))
    if args.json:
        _print_json({"domain": args.domain.lower(), "suspended_until": until})
    else:
        print(f"{args.domain.lower()} suspended until {_when(until)}: its recipients wait, without attempts")
    return 0


def cmd_queue_resume(args: argparse.Namespace, config: Config) -> int:
    resumed = _with_store(config, lambda s: s.queue.resume_domain(args.domain))
    if args.json:
        _print_json({"domain": args.domain.lower(), "resumed": resumed})
    elif resumed:
        print(f"{args.domain.lower()} resumed")
    else:
        print(f"relay: {args.domain} was not suspended", file=sys.stderr)
    return 0 if resumed else 1


def cmd_queue_bounce(args: argparse.Namespace, config: Config) -> int:
    selection = _selection(args)
    count = _with_store(config, lambda s: s.queue.admin_bounce(args.reason, selection))
    if args.json:
        _print_json({"bounced": count})
    else:
        print(f"{count} recipients bounced")
    return 0


def cmd_queue_purge(args: argparse.Namespace, config: Config) -> int:
    selection = _selection(args)
    count = _with_store(config, lambda s: s.queue.purge(selection))
    if args.json:
        _print_json({"purged": count})
    else:
        print(f"{count} recipients purged from the queue")
    return 0


def cmd_queue_cancel(args: argparse.Namespace, config: Config) -> int:
    cancelled = _with_store(config, lambda s: s.queue.cancel_message(args.message_id))
    if args.json:
        _print_json({"id": args.message_id, "cancelled": cancelled})
    else:
        print(f"cancelled {len(cancelled)} recipients" + (f": {', '.join(cancelled)}" if cancelled else ""))
    return 0


# -- bounces, suppressions, allowlist -----------------------------------------------------------


def cmd_bounces_parse(args: argparse.Namespace, config: Config) -> int:
    from relay.bounces.parse import parse

    try:
        raw = sys.stdin.buffer.read() if args.file == "-" else open(args.file, "rb").read()  # noqa: SIM115
    except OSError as exc:
        print(f"relay: {args.file}: {exc.strerror}", file=sys.stderr)
        return 1
    parsed = parse(raw)
    reports = [r.as_json() for r in parsed.reports]
    if args.verbose:
        _print_json({"kind": parsed.kind, "original_message_id": parsed.original_message_id,
                     "return_path": parsed.return_path, "reports": reports})  # fmt: skip
    else:
        _print_json(reports)
    return 0


def cmd_bounces_list(args: argparse.Namespace, config: Config) -> int:
    from relay.store.suppressions import BounceFilter

    f = BounceFilter(kind=args.kind, recipient=args.recipient, message_id=args.message)
    bounces = _with_store(config, lambda s: s.suppressions.bounces(f, args.limit))
    if args.json:
        _print_json([dataclasses.asdict(b) for b in bounces])
        return 0
    for b in bounces:
        print(f"{b.id:>6} {_when(b.at)} <{b.recipient}> {b.kind}/{b.reason} {b.status or ''} [{b.source}]"
              f" {b.diagnostic[:80]}")  # fmt: skip
    return 0


def cmd_bounces_show(args: argparse.Namespace, config: Config) -> int:
    bounce = _with_store(config, lambda s: s.suppressions.bounce(args.bounce_id))
    if bounce is None:
        print(f"relay: no bounce {args.bounce_id}", file=sys.stderr)
        return 1
    if args.json:
        _print_json(dataclasses.asdict(bounce))
        return 0
    for key, value in dataclasses.asdict(bounce).items():
        if key != "report":
            print(f"{key}: {_when(value) if key == 'at' else value}")
    if bounce.report:
        print("\n" + bounce.report)
    return 0


def _print_suppression(s: Any) -> None:
    until = "until removed" if s.expires_at is None else f"until {_when(s.expires_at)}"
    print(f"<{s.address}> {s.reason} since {_when(s.created_at)}, {until}: {s.detail}")


def cmd_suppressions_list(args: argparse.Namespace, config: Config) -> int:
    from relay.store.suppressions import SuppressionFilter

    f = SuppressionFilter(reason=args.reason, search=args.search)
    entries = _with_store(config, lambda s: s.suppressions.query(f, args.limit))
    if args.json:
        _print_json([dataclasses.asdict(e) for e in entries])
    for e in [] if args.json else entries:
        _print_suppression(e)
    return 0


def cmd_suppressions_show(args: argparse.Namespace, config: Config) -> int:
    entry = _with_store(config, lambda s: s.suppressions.suppression(args.address))
    if args.json:
        _print_json(dataclasses.asdict(entry) if entry else None)
    elif entry is None:
        print(f"<{args.address}> is not suppressed")
    else:
        _print_suppression(entry)
    return 0 if entry is not None else 1


def cmd_suppressions_add(args: argparse.Namespace, config: Config) -> int:
    try:
        expires = time.time() + config_mod.parse_duration(args.duration) if args.duration else None
    except ValueError as exc:
        print(f"relay: --for: {exc}", file=sys.stderr)
        return 2
    entries = _with_store(config, lambda s: s.suppressions.suppress(args.address, args.reason,
                                                                    "added with relay suppressions add",
                                                                    expires))  # fmt: skip
    if args.json:
        _print_json([dataclasses.asdict(e) for e in entries])
    for e in [] if args.json else entries:
        _print_suppression(e)
    return 0


def cmd_suppressions_reclassify(args: argparse.Namespace, config: Config) -> int:
    result = _with_store(config, lambda s: s.suppressions.reclassify_suppressions(args.apply))
    if args.json:
        key = "lifted" if result.applied else "would_lift"
        lifts = [dataclasses.asdict(x) for x in result.lifts]
        _print_json({"applied": result.applied, "checked": result.checked, key: lifts})
        return 0
    for x in result.lifts:
        print(f"<{x.address}> {x.was} -> {x.kind}/{x.reason} {x.status or ''} (bounce {x.bounce_id})")
    verb = "lifted" if result.applied else "would be lifted (dry run: --apply lifts them)"
    print(f"{len(result.lifts)} of {result.checked} hard-bounce suppressions {verb}")
    return 0


def cmd_suppressions_remove(args: argparse.Namespace, config: Config) -> int:
    removed = _with_store(config, lambda s: s.suppressions.unsuppress(args.address))
    if args.json:
        _print_json({"address": args.address, "removed": removed})
    elif removed:
        print(f"<{args.address}> removed from the suppression list")
    else:
        print(f"relay: <{args.address}> was not suppressed", file=sys.stderr)
    return 0 if removed else 1


def cmd_allowlist_list(args: argparse.Namespace, config: Config) -> int:
    entries = _with_store(config, lambda s: s.suppressions.allowlist())
    if args.json:
        _print_json([{"entry": e, "note": n, "created_at": at} for e, n, at in entries])
    for e, n, at in [] if args.json else entries:
        print(f"{e}  {_when(at)}  {n}")
    return 0


def cmd_allowlist_add(args: argparse.Namespace, config: Config) -> int:
    entry = _with_store(config, lambda s: s.suppressions.allow(args.entry, args.note))
    if args.json:
        _print_json({"entry": entry})
    else:
        print(f"{entry} allowed: bounces and complaints are recorded but never suppress it")
    return 0


def cmd_allowlist_remove(args: argparse.Namespace, config: Config) -> int:
    removed = _with_store(config, lambda s: s.suppressions.disallow(args.entry))
    if args.json:
        _print_json({"entry": args.entry, "removed": removed})
    elif not removed:
        print(f"relay: {args.entry} is not on the allowlist", file=sys.stderr)
    return 0 if removed else 1


# -- sending domains ----------------------------------------------------------------------------


def _domains_call(config: Config, action: str, *args: Any, with_policy: bool = True) -> tuple[Any, Any]:
    """The action's result, and (``with_policy``) the policy, with the outbound addresses found, that the
    records are built from."""
    from relay.app import make_domains

    async def run(store: Store) -> tuple[Any, Any]:
        domains = make_domains(config, store, None)
        result = await getattr(domains, action)(*args) if args else await store.domains.list_all()
        return result, (await domains.policy() if with_policy else None)

    return _with_store(config, run)


def _print_domain(args: argparse.Namespace, domain: Any, policy: Any) -> None:
    from relay.domains import records

    if args.json:
        from relay.api.domains import domain_json

        _print_json(domain_json(domain, policy))
        return
    keys = ", ".join(f"{k.selector} ({k.state})" for k in domain.keys)
    print(f"{domain.name}  {domain.status}  id {domain.id}  dkim {keys}")
    print(f"sending from: {', '.join(policy.outbound_ips) or 'unknown'} ({policy.outbound_note})")
    print("records to publish:")
    for r in records(domain, policy):
        print(f"  {r.type:4} {r.name}\n       {r.value}\n       ({r.purpose})")
    if domain.checks:
        print(f"checks ({_when(domain.checked_at)}):")
        for name, check in domain.checks.items():
            print(f"  {name:12} {check['status']:9} {check['hint']}")


def _domain_command(args: argparse.Namespace, config: Config, action: str) -> int:
    from relay.domains import DomainError

    try:
        domain, policy = _domains_call(config, action, args.domain)
    except DomainError as exc:
        print(f"relay: {exc}", file=sys.stderr)
        return 1
    _print_domain(args, domain, policy)
    return 0


def cmd_domains_add(args: argparse.Namespace, config: Config) -> int:
    return _domain_command(args, config, "add")


def cmd_domains_show(args: argparse.Namespace, config: Config) -> int:
    return _domain_command(args, config, "get")


def cmd_domains_verify(args: argparse.Namespace, config: Config) -> int:
    return _domain_command(args, config, "verify")


def cmd_dkim_rotate(args: argparse.Namespace, config: Config) -> int:
    return _domain_command(args, config, "rotate")


def cmd_domains_remove(args: argparse.Namespace, config: Config) -> int:
    from relay.domains import DomainError

    try:
        domain, _ = _domains_call(config, "remove", args.domain, with_policy=False)
    except DomainError as exc:
        print(f"relay: {exc}", file=sys.stderr)
        return 1
    if args.json:
        _print_json({"id": domain.id, "domain": domain.name, "deleted": True})
    else:
        print(f"{domain.name} removed, its DKIM keys deleted")
    return 0


def cmd_domains_list(args: argparse.Namespace, config: Config) -> int:
    domains, policy = _domains_call(config, "list", with_policy=args.json)
    if args.json:
        from relay.api.domains import domain_json

        _print_json([domain_json(d, policy) for d in domains])
        return 0
    for d in domains:
        print(f"{d.name:40} {d.status:9} checked {_when(d.checked_at)}")
    return 0


# -- sandbox --------------------------------------------------------------------------------------


def _states(message: Any) -> str:
    return ", ".join(sorted({r.state for r in message.recipients})) or "-"


def cmd_sandbox_list(args: argparse.Namespace, config: Config) -> int:
    if args.limit <= 0:
        print("relay: --limit must be positive", file=sys.stderr)
        return 2
    messages = _with_store(config, lambda s: s.queue.sandbox_messages(None, args.limit))
    if args.json:
        from relay.api.messages import message_json

        _print_json([message_json(m) for m in messages])
        return 0
    if not messages:
        print("no captured messages (mail is captured in sandbox mode and from test keys and credentials)")
    for m in messages:
        to = ", ".join(f"<{r.address}>" for r in m.recipients)
        print(f"{m.id}  {_when(m.created_at)}  {_states(m):10} <{m.sender}> -> {to}  {m.subject}")
    return 0


def cmd_sandbox_show(args: argparse.Namespace, config: Config) -> int:
    from relay.api.sandbox import sandbox_json

    found = _with_store(config, lambda s: s.queue.sandbox_message(args.message_id))
    if found is None:
        print(f"relay: no sandboxed message {args.message_id}", file=sys.stderr)
        return 1
    message, raw = found
    if args.raw:
        if raw is None:
            print(f"relay: the body of {message.id} was deleted ([retention] bodies)", file=sys.stderr)
            return 1
        sys.stdout.buffer.write(raw)
        return 0
    data = sandbox_json(message, raw)
    if args.json:
        _print_json(data)
        return 0
    print(f"{message.id}  {_when(message.created_at)}  via {message.source}  {_states(message)}")
    print(f"envelope: <{message.sender}> -> {', '.join(f'<{a}>' for a in data['envelope']['to'])}")
    if raw is None:
        print("(the body was deleted: [retention] bodies)")
        return 0
    print()
    for h in data["headers"]:
        print(f"{h['name']}: {h['value']}")
    for part in ("text", "html"):
        if data[part] is not None:
            print(f"\n--- {part}\n{data[part].rstrip()}")
    if data["attachments"]:
        print("\n--- attachments")
        for a in data["attachments"]:
            print(f"  {a['filename'] or '(no name)'}  {a['content_type']}  {a['size']} bytes")
    return 0
