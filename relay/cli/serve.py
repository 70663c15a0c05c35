"""``relay serve``: logging as the config says, then SMTP submission, the HTTP API and delivery."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable

from relay import logs
from relay.cli.common import CommandError, Parents, Subparsers
from relay.cli.output import Report
from relay.config import Config
from relay.startup import StartupError


def add_commands(sub: Subparsers[argparse.ArgumentParser], parents: Parents) -> None:
    p = sub.add_parser("serve", parents=[parents.config], help="run SMTP submission, the HTTP API and delivery")
    p.set_defaults(func=serve)


def serve(args: argparse.Namespace, config: Config) -> Report:
    from relay.app import serve as run

    setup_logging(config)
    try:
        with asyncio.Runner(loop_factory=_loop_factory(config)) as runner:
            return Report(status=runner.run(run(config)))
    except StartupError as exc:  # one line and a status of its own (see relay.startup), not a traceback
        raise CommandError(str(exc), exc.status) from None


def _loop_factory(config: Config) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if config.server.event_loop != "uvloop":
        return None
    import uvloop

    return uvloop.new_event_loop


def setup_logging(config: Config) -> None:
    logs.setup(config.server.log_format, config.server.log_level)
