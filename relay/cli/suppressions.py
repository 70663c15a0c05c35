"""``relay suppressions``: the addresses relay does not send to, and why."""

from __future__ import annotations

import argparse
import dataclasses

from relay.cli.common import (
    EX_FAILED,
    Parents,
    Subparsers,
    UsageError,
    action,
    command_group,
    duration,
    now,
    when,
    with_store,
)
from relay.cli.output import Report
from relay.config import Config
from relay.message import address_fault, split_address
from relay.store.reclassify import Reclassified
from relay.store.suppressions import Suppression
from relay.suppression import REASONS


def add_commands(sub: Subparsers[argparse.ArgumentParser], parents: Parents) -> None:
    _, sup = command_group(sub, "suppressions", "the suppression list", parents)
    p = action(sup, "list", "suppressed addresses", list_suppressions, parents)
    p.add_argument("--reason", choices=REASONS)
    p.add_argument("--search", help="part of the address")
    p.add_argument("--limit", type=int, default=100)
    p = action(sup, "show", "whether an address is suppressed, and why", show, parents)
    p.add_argument("address")
    p = action(sup, "add", "suppress addresses by hand", add, parents)
    p.add_argument("address", nargs="+")
    p.add_argument("--reason", default="manual", choices=["manual", "hard_bounce", "complaint"])
    p.add_argument("--for", dest="duration", help='only for a while, e.g. "30d" (default: until removed)')
    p = action(sup, "remove", "take an address off the list (reactivate it)", remove, parents)
    p.add_argument("address")
    reclassify_help = (
        "read the bounces behind hard-bounce suppressions again with the rule in force; list"
        " (or, with --apply, lift) those that are not hard now"
    )
    p = action(sup, "reclassify", reclassify_help, reclassify, parents)
    p.add_argument("--apply", action="store_true", help="lift them (default: a dry run that only lists them)")


def _line(s: Suppression) -> str:
    until = "until removed" if s.expires_at is None else f"until {when(s.expires_at)}"
    return f"<{s.address}> {s.reason} since {when(s.created_at)}, {until}: {s.detail}"


def _listing(entries: list[Suppression]) -> Report:
    return Report([dataclasses.asdict(e) for e in entries], [_line(e) for e in entries])


def list_suppressions(args: argparse.Namespace, config: Config) -> Report:
    from relay.store.suppressions import SuppressionFilter

    f = SuppressionFilter(reason=args.reason, search=args.search)
    return _listing(with_store(config, lambda s: s.suppressions.query(f, args.limit)))


def show(args: argparse.Namespace, config: Config) -> Report:
    entry = with_store(config, lambda s: s.suppressions.suppression(args.address))
    if entry is None:
        return Report(None, [f"<{args.address}> is not suppressed"], status=EX_FAILED)
    return Report(dataclasses.asdict(entry), [_line(entry)])


def add(args: argparse.Namespace, config: Config) -> Report:
    for address in args.address:  # the API's rule (relay.api.suppressions.parse_emails)
        fault = "is not an email address" if split_address(address) is None else address_fault(address)
        if fault is not None:
            raise UsageError(f"<{address}> {fault}")
    expires = now() + duration("--for", args.duration) if args.duration else None
    detail = "added with relay suppressions add"
    return _listing(with_store(config, lambda s: s.suppressions.suppress(args.address, args.reason, detail, expires)))


def reclassify(args: argparse.Namespace, config: Config) -> Report:
    result = with_store(config, lambda s: s.suppressions.reclassify_suppressions(args.apply))
    key = "lifted" if result.applied else "would_lift"
    data = {"applied": result.applied, "checked": result.checked, key: [dataclasses.asdict(x) for x in result.lifts]}
    return Report(data, _reclassified_text(result))


def _reclassified_text(result: Reclassified) -> list[str]:
    text = [
        f"<{x.address}> {x.was} -> {x.kind}/{x.reason} {x.status or ''} (bounce {x.bounce_id})" for x in result.lifts
    ]
    verb = "lifted" if result.applied else "would be lifted (dry run: --apply lifts them)"
    return [*text, f"{len(result.lifts)} of {result.checked} hard-bounce suppressions {verb}"]


def remove(args: argparse.Namespace, config: Config) -> Report:
    removed = with_store(config, lambda s: s.suppressions.unsuppress(args.address))
    data = {"address": args.address, "removed": removed}
    if removed:
        return Report(data, [f"<{args.address}> removed from the suppression list"])
    return Report(data, status=EX_FAILED, error=f"<{args.address}> was not suppressed")
