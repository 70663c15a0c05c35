"""The one place relay reads time: a Clock protocol, the system clock and a fake for tests."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch."""
        ...


class SystemClock:
    def now(self) -> float:
        return time.time()


class FakeClock:
    """A clock that only moves when a test says so."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds


async def sleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


def iso(ts: float | None) -> str | None:
    """Seconds since the epoch as the API writes times: ISO 8601, UTC, milliseconds, ``Z``."""
    return (
        None
        if ts is None
        else datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )
