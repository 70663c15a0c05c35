"""``relay bounces``: parse returned mail, list the bounces and complaints relay recorded."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from relay.cli.common import CommandError, Parents, Subparsers, action, command_group, when, with_store
from relay.cli.output import Column, Report, json_text, table
from relay.config import Config
from relay.store.suppressions import Bounce


def add_commands(sub: Subparsers[argparse.ArgumentParser], parents: Parents) -> None:
    _, bounces = command_group(sub, "bounces", "parse returned mail; list recorded bounces", parents)
    p = bounces.add_parser("parse", help="parse a returned message (a file or - for stdin) and print JSON")
    p.add_argument("file", help="the message as received (RFC 5322), or - for stdin")
    p.add_argument("--verbose", action="store_true", help="also print what kind of message it is")
    p.set_defaults(func=parse, no_config=True)
    p = action(bounces, "list", "recorded bounces and complaints, newest first", list_bounces, parents)
    p.add_argument("--recipient")
    p.add_argument("--kind", choices=["hard", "soft", "block", "complaint", "unknown"])
    p.add_argument("--message", metavar="ID")
    p.add_argument("--limit", type=int, default=50)
    p = action(bounces, "show", "one bounce, with the returned report", show, parents)
    p.add_argument("bounce_id", type=int)


def _read(path: str) -> bytes:
    try:
        if path == "-":
            return sys.stdin.buffer.read()
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise CommandError(f"{path}: {exc.strerror}") from None


def parse(args: argparse.Namespace, config: Config) -> Report:
    """Always JSON: the reports found, or (--verbose) what the message is, with them."""
    from relay.bounces.parse import parse as parse_message

    parsed = parse_message(_read(args.file))
    reports = [r.as_json() for r in parsed.reports]
    data = (
        reports
        if not args.verbose
        else {
            "kind": parsed.kind,
            "original_message_id": parsed.original_message_id,
            "return_path": parsed.return_path,
            "reports": reports,
        }
    )
    return Report(data, json_text(data))


BOUNCE_COLUMNS: list[Column[Bounce]] = [
    Column("id", lambda b: b.id, ">6"),
    Column("at", lambda b: when(b.at)),
    Column("recipient", lambda b: f"<{b.recipient}>"),
    Column("kind", lambda b: f"{b.kind}/{b.reason}"),
    Column("status", lambda b: b.status or ""),
    Column("source", lambda b: f"[{b.source}]"),
    Column("diagnostic", lambda b: b.diagnostic[:80]),
]


def list_bounces(args: argparse.Namespace, config: Config) -> Report:
    from relay.store.suppressions import BounceFilter

    f = BounceFilter(kind=args.kind, recipient=args.recipient, message_id=args.message)
    bounces = with_store(config, lambda s: s.suppressions.bounces(f, args.limit))
    return Report([dataclasses.asdict(b) for b in bounces], table(bounces, BOUNCE_COLUMNS))


def show(args: argparse.Namespace, config: Config) -> Report:
    bounce = with_store(config, lambda s: s.suppressions.bounce(args.bounce_id))
    if bounce is None:
        raise CommandError(f"no bounce {args.bounce_id}")
    data = dataclasses.asdict(bounce)
    text = [f"{key}: {when(value) if key == 'at' else value}" for key, value in data.items() if key != "report"]
    if bounce.report:
        text.append("\n" + bounce.report)
    return Report(data, text)
