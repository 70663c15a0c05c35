"""``relay migrate``: bring the store's schema up to date and say from which version to which."""

from __future__ import annotations

import argparse

from relay.cli.common import Parents, Subparsers
from relay.cli.output import Report
from relay.config import Config


def add_commands(sub: Subparsers[argparse.ArgumentParser], parents: Parents) -> None:
    p = sub.add_parser(
        "migrate",
        parents=parents.both,
        help="apply the store's pending schema migrations ([store] url); serve does this too when it starts",
    )
    p.set_defaults(func=migrate)


def migrate(args: argparse.Namespace, config: Config) -> Report:
    from relay.store.migrations import migrate as apply

    where = config.store_url
    done = apply(where)
    shown = str(where.path) if where.backend == "sqlite" else where.shown
    data = {"store": where.backend, "database": shown, "before": done.before, "after": done.after}
    if done.before == done.after:
        text = f"{shown}: schema at version {done.after}, up to date"
    else:
        text = f"{shown}: schema migrated from version {done.before} to {done.after}"
    return Report(data, [text])
