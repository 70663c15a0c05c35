"""``relay check-config``: validate the config and print the settings in force."""

from __future__ import annotations

import argparse

from relay.cli.common import Parents, Subparsers
from relay.cli.output import Report
from relay.config import Config


def add_commands(sub: Subparsers[argparse.ArgumentParser], parents: Parents) -> None:
    p = sub.add_parser("check-config", parents=parents.both, help="validate the config and print it")
    p.set_defaults(func=check_config)


def check_config(args: argparse.Namespace, config: Config) -> Report:
    """Every section as the config file takes it (secrets masked); settings that resolve at start-up
    ("auto") are shown with what they resolve to on this machine."""
    from relay.config_toml import as_written, to_toml

    sections = as_written(config)
    resolved = {("server", "acceptors"): config.server.acceptor_processes}
    data = {**sections, "resolved": {f"{s}.{k}": v for (s, k), v in resolved.items()}}
    notes = {key: f"resolves to {value} here" for key, value in resolved.items()}
    header = f"# {config.source}: ok (the effective settings, secrets masked)"
    return Report(data, [header, to_toml(sections, notes).removesuffix("\n")])
