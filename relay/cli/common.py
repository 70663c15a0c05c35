"""What every ``relay`` command shares: the --config/--json options, command groups, errors and exit
statuses, the store, and how a time is written."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from relay import config as config_mod
from relay.cli.output import Report
from relay.clock import SystemClock
from relay.config import Config
from relay.errors import RelayError
from relay.startup import EX_CONFIG as EX_CONFIG  # a bad config file (sysexits.h)
from relay.store.protocols import Storage

T = TypeVar("T")

EX_FAILED = 1  # the command ran and did not find or do what was asked
EX_USAGE = 2  # a command-line mistake (argparse's own status for one)
EX_INTERRUPTED = 130  # Ctrl-C, as a shell reports it

Subparsers = argparse._SubParsersAction  # what add_subparsers returns: a command's actions
Handler = Callable[[argparse.Namespace, Config], Report]


class CommandError(RelayError):
    """A command that cannot go on: ``relay: <message>`` on stderr and exit with ``status``."""

    def __init__(self, message: str, status: int = EX_FAILED) -> None:
        super().__init__(message)
        self.status = status


class UsageError(CommandError):
    """A bad option value, reported as ``relay: ...`` with exit status 2."""

    def __init__(self, message: str) -> None:
        super().__init__(message, EX_USAGE)


@dataclasses.dataclass(frozen=True)
class Parents:
    """Parent parsers giving a command --config and --json, before or after its action."""

    config: argparse.ArgumentParser
    json: argparse.ArgumentParser

    @classmethod
    def make(cls) -> Parents:
        # Their defaults live on the top parser only: a copy of an option in a sub-parser has the
        # default SUPPRESS, so an action that does not repeat it leaves what the group parsed in place.
        config = argparse.ArgumentParser(add_help=False)
        config.add_argument(
            "--config",
            metavar="FILE",
            default=argparse.SUPPRESS,
            help="TOML config file (default: $RELAY_CONFIG or ./config/relay.toml)",
        )
        as_json = argparse.ArgumentParser(add_help=False)
        as_json.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON for scripts")
        return cls(config, as_json)

    @property
    def both(self) -> list[argparse.ArgumentParser]:
        return [self.config, self.json]


def command_group(
    sub: Subparsers[argparse.ArgumentParser], name: str, help: str, parents: Parents
) -> tuple[argparse.ArgumentParser, Subparsers[argparse.ArgumentParser]]:
    """A command with actions (``relay NAME ACTION``): the group's parser and its actions.

    The group takes --config and --json too; run without an action it prints its own help (exit 2).
    """
    group = sub.add_parser(name, parents=parents.both, help=help)
    group.set_defaults(group_parser=group)
    return group, group.add_subparsers(title=f"{name} commands", metavar="ACTION")


def action(
    sub: Subparsers[argparse.ArgumentParser],
    name: str,
    help: str,
    handler: Handler,
    parents: Parents,
    *more: argparse.ArgumentParser,
) -> argparse.ArgumentParser:
    """An action taking --config and --json (and the options of ``more``), run by ``handler``."""
    parser = sub.add_parser(name, parents=[*parents.both, *more], help=help)
    parser.set_defaults(func=handler)
    return parser


def load_config(args: argparse.Namespace) -> Config:
    """The config the command runs with (``relay.config.ConfigError`` when it does not load)."""
    return Config() if getattr(args, "no_config", False) else config_mod.load(args.config)


def with_store(config: Config, fn: Callable[[Storage], Awaitable[T]]) -> T:
    """Open the store, run ``fn`` on it and close it again."""

    async def run() -> T:
        from relay.app import open_store

        store = open_store(config, SystemClock())
        try:
            return await fn(store)
        finally:
            await store.close()

    return asyncio.run(run())


def now() -> float:
    """The wall clock, read as the rest of relay reads it (relay.clock)."""
    return SystemClock().now()


def duration(option: str, value: str, status: int = EX_USAGE) -> float:
    """Seconds in ``value`` ("30m", "2d"); a CommandError naming ``option`` when it is not a duration."""
    try:
        return config_mod.parse_duration(value)
    except ValueError as exc:
        raise CommandError(f"{option}: {exc}", status) from None


def positive(option: str, value: int | None) -> None:
    if value is not None and value <= 0:
        raise UsageError(f"{option} must be positive")


def when(ts: float | None) -> str:
    """A time as the text output writes it: local time to the second, "-" for none."""
    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def revoked_report(ident: str, revoked: bool, what: str) -> Report:
    """What revoking a key or a credential says."""
    if revoked:
        return Report({"id": ident, "revoked": True}, [f"revoked {ident}"])
    return Report({"id": ident, "revoked": False}, status=EX_FAILED, error=f"no active {what} {ident}")
