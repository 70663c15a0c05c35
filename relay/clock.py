"""The one place relay reads and waits on time: a Clock protocol, the system clock and a virtual clock for tests.

Everything that schedules (the delivery engine's pacing, suspensions and polls, the webhook
sender's retries, API rate limits, retention and housekeeping) reads time and waits through the
``Clock`` it is given, so a test can run minutes of schedule in milliseconds on a ``VirtualClock``.

Two readings: ``now()`` is the wall clock (seconds since the epoch: stored times, retry
schedules, expiries); ``monotonic()`` only ever moves forward (pacing and latencies).
"""

from __future__ import annotations

import asyncio
import dataclasses
import heapq
import itertools
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Protocol, TypeVar

T = TypeVar("T")


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch."""
        ...

    def monotonic(self) -> float:
        """Seconds from an arbitrary start; never goes back. For intervals, not for dates."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Suspend the calling task for ``seconds``."""
        ...

    async def wait(self, event: asyncio.Event, within: float) -> bool:
        """Wait until ``event`` is set, for at most ``within`` seconds; True if it was set."""
        ...


class SystemClock:
    """The machine's clocks and asyncio's waits: what relay runs on."""

    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def wait(self, event: asyncio.Event, within: float) -> bool:
        if event.is_set():
            return True
        try:  # asyncio.timeout, not wait_for: wait_for wraps the wait in a task of its own each time
            async with asyncio.timeout(within):
                await event.wait()
        except TimeoutError:
            return False
        return True


class VirtualClock:
    """A clock for tests whose time moves only when the test moves it.

    ``now()`` and ``monotonic()`` move together, by :meth:`advance` or :meth:`run_for`.
    ``sleep()`` and ``wait()`` suspend until the virtual time reaches their deadline, so a
    schedule of minutes runs in milliseconds with no real sleep. A test that drives code doing
    real I/O between its waits (an SMTP sink, a webhook receiver) parks on
    :meth:`wait_for_sleepers` until that code is waiting on the clock again, then advances.
    """

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self._now = start
        self._elapsed = 0.0  # monotonic(): seconds moved since the clock was made
        self._timers: list[_Timer] = []  # a heap, soonest first
        self._order = itertools.count()
        self._watchers: list[asyncio.Future[None]] = []  # told whenever a task starts waiting

    def now(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._elapsed

    def advance(self, seconds: float) -> None:
        """Move time forward; every sleeper whose deadline has come runs at the caller's next await."""
        if seconds < 0:
            raise ValueError("a clock does not go back")
        self._now += seconds
        self._elapsed += seconds
        while self._timers and self._timers[0].deadline <= self._elapsed:
            timer = heapq.heappop(self._timers)
            if not timer.waiter.done():
                timer.waiter.set_result(None)

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        timer = self._timer(seconds)
        try:
            await timer
        finally:
            timer.cancel()  # a cancelled sleep leaves no live timer behind

    async def wait(self, event: asyncio.Event, within: float) -> bool:
        if event.is_set():
            return True
        if within <= 0:
            return False
        timer = self._timer(within, event)
        waiter = asyncio.ensure_future(event.wait())
        try:
            await asyncio.wait((waiter, timer), return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
            waiter.cancel()
        return waiter.done() and not waiter.cancelled()

    # -- for the test that drives the clock -------------------------------------------------

    @property
    def sleepers(self) -> int:
        """Tasks waiting on this clock now."""
        return sum(1 for timer in self._timers if timer.live)

    def next_deadline(self) -> float | None:
        """The ``monotonic()`` time the next sleeper wakes at, or None when no task waits."""
        live = [timer.deadline for timer in self._timers if timer.live]
        return min(live, default=None)

    def advance_to_next(self) -> float:
        """Move time to the next sleeper's deadline (not at all if none waits); returns the step taken."""
        deadline = self.next_deadline()
        step = 0.0 if deadline is None else max(0.0, deadline - self._elapsed)
        self.advance(step)
        return step

    async def run_for(self, seconds: float) -> None:
        """Move time forward ``seconds``, stopping at each deadline on the way and letting the woken tasks
        run, so that a task sleeping in a loop wakes at each of its times, not once at the end. Only for
        tasks that do no real I/O between their waits: for those, see :meth:`drive`."""
        end = self._elapsed + seconds
        await _let_tasks_run()  # tasks just started reach their first wait
        while (deadline := self.next_deadline()) is not None and deadline <= end:
            self.advance(max(0.0, deadline - self._elapsed))
            await _let_tasks_run()  # the woken tasks run up to their next wait
        self.advance(max(0.0, end - self._elapsed))
        await _let_tasks_run()

    async def wait_for_sleepers(self, count: int | Callable[[], int], real_seconds: float = 10.0) -> None:
        """Wait (in real time, at most ``real_seconds``) until ``count`` tasks are waiting on this clock;
        ``count`` may be a function, asked again as tasks come and go (the workers alive now)."""

        def expected() -> int:
            return count() if callable(count) else count

        loop = asyncio.get_running_loop()
        deadline = loop.time() + real_seconds
        while self.sleepers < expected():
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"{self.sleepers} tasks wait on the clock, expected {expected()}")
            changed = loop.create_future()
            self._watchers.append(changed)
            try:
                await asyncio.wait_for(changed, min(remaining, 0.05))  # also looks again as waits end
            except TimeoutError:
                pass
            finally:
                if changed in self._watchers:
                    self._watchers.remove(changed)

    async def drive(self, awaitable: Awaitable[T], sleepers: int | Callable[[], int], real_seconds: float = 30.0) -> T:
        """Await ``awaitable`` while moving time: each time ``sleepers`` tasks wait on the clock (say, every
        delivery worker waits for a token or for work), time moves on to the earliest of their deadlines.
        ``sleepers`` may be a function, for a number of workers that changes.

        Time moves only while those tasks are all parked, so what they do in between (real I/O
        included) happens at one instant of virtual time, and the schedule seen is exact.
        """
        task = asyncio.ensure_future(awaitable)
        try:
            while not task.done():
                parked = asyncio.ensure_future(self.wait_for_sleepers(sleepers, real_seconds))
                try:
                    await asyncio.wait((task, parked), return_when=asyncio.FIRST_COMPLETED)
                finally:
                    parked.cancel()
                if parked.done() and not parked.cancelled():
                    parked.result()  # raises TimeoutError: they never all waited on the clock
                if not task.done():
                    self.advance_to_next()
            return task.result()
        finally:
            task.cancel()

    def _timer(self, seconds: float, event: asyncio.Event | None = None) -> asyncio.Future[None]:
        timer: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if len(self._timers) > 256:  # drop the waits that ended early (an event came, a task was cancelled)
            self._timers = [t for t in self._timers if not t.waiter.done()]
            heapq.heapify(self._timers)
        heapq.heappush(self._timers, _Timer(self._elapsed + seconds, next(self._order), timer, event))
        for watcher in self._watchers:
            if not watcher.done():
                watcher.set_result(None)
        self._watchers.clear()
        return timer


async def _let_tasks_run() -> None:
    """A few turns of the event loop: enough for tasks that do no real I/O to reach their next wait."""
    for _ in range(5):
        await asyncio.sleep(0)


@dataclasses.dataclass(order=True)
class _Timer:
    """A task waiting on a VirtualClock: until ``deadline`` (its ``monotonic()``), or until ``event`` is set."""

    deadline: float
    order: int  # first come, first woken among equal deadlines
    waiter: asyncio.Future[None] = dataclasses.field(compare=False)
    event: asyncio.Event | None = dataclasses.field(compare=False)

    @property
    def live(self) -> bool:
        """Still waiting: not woken, not cancelled, and its event (if any) not set, so not about to wake."""
        return not self.waiter.done() and (self.event is None or not self.event.is_set())


FakeClock = VirtualClock  # the name the older tests use


def iso(ts: float | None) -> str | None:
    """Seconds since the epoch as the API writes times: ISO 8601, UTC, milliseconds, ``Z``."""
    return (
        None
        if ts is None
        else datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )
