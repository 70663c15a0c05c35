"""``relay serve``: logging as the config says, then SMTP submission, the HTTP API and delivery."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

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
