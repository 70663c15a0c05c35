"""The ``relay`` command: serve, check-config, migrate, store copy, keys, smtp-credentials, queue, send,
bounces, suppressions, allowlist, domains, dkim, sandbox, nodes, users.

One module per noun builds its commands (``add_commands``) and their handlers; a handler reads its
arguments, calls the store or the app, and returns a :class:`~relay.cli.output.Report` that
:func:`~relay.cli.output.show` prints as text or JSON. :mod:`relay.cli.common` holds what they share.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from relay import __version__
from relay.cli import (
    allowlist,
    bounces,
    check_config,
    credentials,
    domains,
    keys,
    nodes,
    queue,
    sandbox,
    send,
    serve,
    store,
    suppressions,
    users,
)
from relay.cli.common import EX_CONFIG, EX_INTERRUPTED, EX_USAGE, CommandError, Handler, Parents, load_config
from relay.cli.output import show
from relay.config import ConfigError
from relay.errors import StoreError
from relay.logs import JsonFormatter
from relay.startup import EX_IOERR

__all__ = ["JsonFormatter", "build_parser", "main"]

NOUNS = (
    serve,
    check_config,
    store,
    keys,
    credentials,
    queue,
    send,
    bounces,
    suppressions,
    allowlist,
    domains,
    sandbox,
    nodes,
    users,
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):  # no command, or a command group without its action
        getattr(args, "group_parser", parser).print_help()
        return EX_USAGE
    try:
        config = load_config(args)
    except ConfigError as exc:
        print(f"relay: {exc}", file=sys.stderr)
        return EX_CONFIG  # systemd's Restart=on-failure will not loop forever on it
    handler: Handler = args.func
    try:
        return show(handler(args, config), args.json)
    except CommandError as exc:
        print(f"relay: {exc}", file=sys.stderr)
        return exc.status
    except StoreError as exc:  # the database cannot be reached, is full, or is newer than this relay
        print(f"relay: the store: {exc}", file=sys.stderr)
        return EX_IOERR
    except KeyboardInterrupt:
        return EX_INTERRUPTED


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="relay",
        description="A self-hosted SMTP relay with an HTTP submission API.",
        epilog="Every command reads the config from --config, $RELAY_CONFIG or ./config/relay.toml.",
    )
    parser.add_argument("--version", action="version", version=f"relay {__version__}")
    # --config and --json are accepted here too (relay --config FILE queue, as postconf -c or nginx -c take
    # theirs), by a command group and by its actions, before or after the action; the last one given wins.
    # These copies are the top parser's own (the sub-parsers' come from Parents, whose defaults are
    # SUPPRESS so that what was parsed before stays); the defaults live here only.
    parser.add_argument("--config", metavar="FILE", help="TOML config file, for any command")
    parser.add_argument("--json", action="store_true", help="print JSON for scripts, for any command that prints data")
    parser.set_defaults(config=None, json=False)
    parents = Parents.make()
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    for noun in NOUNS:
        noun.add_commands(sub, parents)
    return parser
