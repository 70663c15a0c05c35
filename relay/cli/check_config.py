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
    from relay.config_toml import effective

    settings = effective(config)  # the dashboard's Settings page shows the same
    header = f"# {config.source}: ok (the effective settings, secrets masked)"
    return Report(settings.data(), [header, settings.toml().removesuffix("\n")])
