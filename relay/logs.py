"""relay's log lines: the text and JSON formats, and the handler that writes them to standard error.

Relay logs a line or two for every message (queued, delivered, deferred, bounced), as Postfix does, so
what a line costs is paid per message. Two things make it cheaper than logging's defaults:

- The time is formatted once per second, not for every line (``time.strftime`` and ``localtime`` were
  most of a line's formatting).
- Lines logged on the event loop's thread are written together, once per turn of the loop, instead of
  one ``write`` each: under load a turn carries the lines of many messages, and each ``write`` to standard
  error is also a moment the loop's thread lets go of the GIL, which wakes a thread waiting for it for
  nothing. A warning or an error, a line from another thread, and every line when no loop runs are
  written at once, with the lines before them, so that order is kept and nothing that matters waits.
  The lines of the current turn are lost only if the process is killed during that turn.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from typing import IO, Any


def rfc3339_utc(timestamp: float) -> str:
    """Unix seconds → ``2026-12-01T10:32:29.123Z`` (RFC 3339, UTC, milliseconds)."""
    seconds, millis = divmod(round(timestamp * 1000), 1000)
    return _utc_second(seconds) + f".{millis:03d}Z"


_utc_cache: tuple[int, str] = (-1, "")


def _utc_second(second: int) -> str:
    global _utc_cache
    cached_second, text = _utc_cache
    if second != cached_second:
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _utc_cache = (second, text)
    return text


class TextFormatter(logging.Formatter):
    """``2026-12-01 10:32:29,123 INFO relay.submission.smtp: queued …`` (local time, as logging's default)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self._second: tuple[int, str] = (-1, "")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 (logging's name)
        second = int(record.created)
        cached_second, text = self._second
        if second != cached_second:
            text = time.strftime("%Y-%m-%d %H:%M:%S", self.converter(second))
            self._second = (second, text)
        return f"{text},{int(record.msecs):03d}"


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


class LineHandler(logging.StreamHandler):  # type: ignore[type-arg]  # StreamHandler is generic in typeshed only
    """Writes formatted lines to ``stream``; those of an event loop's turn together (see the module)."""

    def __init__(self, stream: IO[str]) -> None:
        super().__init__(stream)
        self._lines: list[str] = []
        self._flush_on: asyncio.AbstractEventLoop | None = None  # the loop whose turn ends with a flush

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._lines.append(self.format(record) + self.terminator)
            loop = asyncio.events._get_running_loop()
            if loop is None or record.levelno >= logging.WARNING:
                self._write()
            elif self._flush_on is not loop:  # also when a loop closed before its flush ran
                self._flush_on = loop
                loop.call_soon(self._flush_turn)
        except RecursionError:  # as StreamHandler.emit
            raise
        except Exception:
            self.handleError(record)

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]  # a Handler's lock exists once it is made
            self._write()
            super().flush()

    def _flush_turn(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._flush_on = None
            self._write()

    def _write(self) -> None:
        """Write the waiting lines (the caller holds the handler's lock)."""
        if self._lines:
            text = "".join(self._lines)
            self._lines.clear()  # a line the stream refuses is not offered again with the next ones
            self.stream.write(text)
            self.stream.flush()


def setup(log_format: str, level: str) -> None:
    """Lines to standard error in ``log_format`` ("text" or "json") from ``level`` up."""
    handler = LineHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    logging.basicConfig(level=level.upper(), handlers=[handler])
    # Neither format shows the caller's file and line or thread and process names: do not collect
    # them for every line (the logging HOWTO's "Optimization" switches).
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logging._srcfile = None
    if level.lower() != "debug":
        logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd logs every command at INFO
