"""``relay allowlist``: addresses and domains that bounces and complaints never suppress."""

from __future__ import annotations

import argparse

from relay.cli.common import EX_FAILED, Parents, Subparsers, UsageError, action, command_group, when, with_store
from relay.cli.output import Column, Report, table
from relay.config import Config
from relay.suppression import entry_fault

Entry = tuple[str, str, float]  # entry, note, created_at

ENTRY_COLUMNS: list[Column[Entry]] = [
    Column("entry", lambda e: e[0]),
    Column("created", lambda e: when(e[2]), gap="  "),
    Column("note", lambda e: e[1], gap="  "),
]


def add_commands(sub: Subparsers[argparse.ArgumentParser], parents: Parents) -> None:
    _, allow = command_group(sub, "allowlist", "addresses and domains never suppressed automatically", parents)
    action(allow, "list", "the allowlist", list_entries, parents)
    p = action(allow, "add", "allow an address or a whole domain", add, parents)
    p.add_argument("entry")
    p.add_argument("--note", default="")
    p = action(allow, "remove", "remove an allowlist entry", remove, parents)
    p.add_argument("entry")


def list_entries(args: argparse.Namespace, config: Config) -> Report:
    entries = with_store(config, lambda s: s.suppressions.allowlist())
    data = [{"entry": e, "note": n, "created_at": at} for e, n, at in entries]
    return Report(data, table(entries, ENTRY_COLUMNS))


def add(args: argparse.Namespace, config: Config) -> Report:
    fault = entry_fault(args.entry)  # the API's rule
    if fault is not None:
        raise UsageError(f"{args.entry!r} {fault}")
    entry = with_store(config, lambda s: s.suppressions.allow(args.entry, args.note))
    return Report({"entry": entry}, [f"{entry} allowed: bounces and complaints are recorded but never suppress it"])


def remove(args: argparse.Namespace, config: Config) -> Report:
    removed = with_store(config, lambda s: s.suppressions.disallow(args.entry))
    data = {"entry": args.entry, "removed": removed}
    return Report(data) if removed else Report(data, status=EX_FAILED, error=f"{args.entry} is not on the allowlist")
