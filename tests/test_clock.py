"""The clock seam: the system clock's waits, and the virtual clock that tests drive."""

from __future__ import annotations

import asyncio
import datetime
import time

import aiohttp
import pytest
from cryptography import x509

from relay import workers
from relay.app import Relay
from relay.clock import Clock, FakeClock, SystemClock, VirtualClock
from relay.keys import create_api_key
from relay.message import new_message_id
from relay.tls import self_signed
from tests.conftest import make_config


def test_both_clocks_are_clocks():
    clocks: list[Clock] = [SystemClock(), VirtualClock()]
    assert all(callable(c.monotonic) and callable(c.wait) for c in clocks)
    assert FakeClock is VirtualClock


async def test_the_system_clock_waits_for_an_event_or_the_time():
    clock, event = SystemClock(), asyncio.Event()
    started = time.monotonic()
    assert await clock.wait(event, 0.05) is False
    assert time.monotonic() - started >= 0.04
    asyncio.get_running_loop().call_later(0.01, event.set)
    assert await clock.wait(event, 5) is True
    assert abs(clock.now() - time.time()) < 1 and clock.monotonic() <= time.monotonic()


def test_virtual_time_moves_only_when_told():
    clock = VirtualClock(1000.0)
    assert (clock.now(), clock.monotonic()) == (1000.0, 0.0)
    time.sleep(0.01)
    assert clock.now() == 1000.0
    clock.advance(90)
    assert (clock.now(), clock.monotonic()) == (1090.0, 90.0)
    with pytest.raises(ValueError):
        clock.advance(-1)


async def test_a_sleep_ends_when_virtual_time_reaches_its_deadline():
    clock = VirtualClock()
    woke: list[float] = []

    async def sleeper(seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append(clock.monotonic())

    tasks = [asyncio.create_task(sleeper(s)) for s in (60, 30, 60.5)]
    await clock.wait_for_sleepers(3)
    assert clock.next_deadline() == 30
    clock.advance(29.9)
    await asyncio.sleep(0)
    assert woke == []
    clock.advance(0.1)
    await asyncio.sleep(0)
    assert woke == [30]
    clock.advance(30)
    await asyncio.sleep(0)
    assert woke == [30, 60] and clock.sleepers == 1
    clock.advance(3600)
    await asyncio.gather(*tasks)
    assert woke == [30, 60, 3660]  # woken at the time it was moved to, late, as a real sleep can be
    assert clock.sleepers == 0 and clock.next_deadline() is None


async def test_a_zero_sleep_only_yields():
    clock = VirtualClock()
    await asyncio.wait_for(clock.sleep(0), 1)
    await asyncio.wait_for(clock.sleep(-5), 1)
    assert clock.sleepers == 0


async def test_a_cancelled_sleep_leaves_no_sleeper():
    clock = VirtualClock()
    task = asyncio.create_task(clock.sleep(10))
    await clock.wait_for_sleepers(1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert clock.sleepers == 0 and clock.next_deadline() is None


async def test_wait_returns_true_when_the_event_comes_first_and_false_at_the_deadline():
    clock, event = VirtualClock(), asyncio.Event()
    first = asyncio.create_task(clock.wait(event, 5))
    await clock.wait_for_sleepers(1)
    event.set()
    assert await first is True
    assert clock.sleepers == 0  # its timer went with it
    assert await clock.wait(event, 5) is True  # already set: at once

    event.clear()
    second = asyncio.create_task(clock.wait(event, 5))
    await clock.wait_for_sleepers(1)
    clock.advance(4.99)
    await asyncio.sleep(0)
    assert not second.done()
    clock.advance(0.01)
    assert await second is False
    assert await clock.wait(event, 0) is False


async def test_run_for_wakes_a_loop_at_each_of_its_times():
    clock = VirtualClock()
    ticks: list[float] = []

    async def every_ten_seconds() -> None:
        while True:
            await clock.sleep(10)
            ticks.append(clock.monotonic())

    task = asyncio.create_task(every_ten_seconds())
    await clock.wait_for_sleepers(1)
    started = time.monotonic()
    await clock.run_for(3600)  # an hour of schedule
    assert time.monotonic() - started < 1.0
    assert ticks == [10.0 * i for i in range(1, 361)]
    assert clock.monotonic() == 3600
    task.cancel()


async def test_wait_for_sleepers_gives_up_in_real_time():
    with pytest.raises(TimeoutError, match="0 tasks wait on the clock, expected 1"):
        await VirtualClock().wait_for_sleepers(1, real_seconds=0.1)


async def test_drive_moves_time_only_when_every_worker_waits():
    """Two workers, each doing work that takes real time between its sleeps: time moves only once both
    wait on the clock, so each sees its own schedule exactly."""
    clock = VirtualClock()
    seen: dict[str, list[float]] = {"a": [], "b": []}

    running = 0

    async def worker(name: str, every: float, real_work: float, times: int) -> None:
        nonlocal running
        running += 1
        try:
            for _ in range(times):
                await asyncio.sleep(real_work)  # I/O that does not touch the clock
                seen[name].append(clock.monotonic())
                await clock.sleep(every)
        finally:
            running -= 1

    async def both() -> str:
        await asyncio.gather(worker("a", 7, 0.01, 4), worker("b", 5, 0.03, 2))
        return "done"

    assert await clock.drive(both(), sleepers=lambda: running) == "done"
    assert seen == {"a": [0, 7, 14, 21], "b": [0, 5]}  # b ended at 10; a went on alone
    assert clock.monotonic() == 28


async def test_drive_reports_workers_that_never_wait():
    clock = VirtualClock()
    with pytest.raises(TimeoutError):
        await clock.drive(asyncio.Event().wait(), sleepers=1, real_seconds=0.1)


def test_times_made_outside_the_clock_take_its_now():
    clock = VirtualClock(1_900_000_000.0)
    a, b = new_message_id(clock.now()), new_message_id(clock.now() + 1)
    assert a < b
    cert = x509.load_pem_x509_certificate(self_signed("mx.test", days=10, now=clock.now())[0])
    start = datetime.datetime.fromtimestamp(clock.now(), datetime.UTC)
    assert cert.not_valid_before_utc == start - datetime.timedelta(minutes=5)
    assert cert.not_valid_after_utc == start + datetime.timedelta(days=10)


async def test_api_rate_limits_count_in_the_relays_clock(tmp_path):
    """The limiter's windows are the relay's clock's: a key's hour runs out, and comes back, in virtual time."""
    clock = VirtualClock(1_800_000_000.0)  # on a window boundary: the hour runs to 1_800_003_600
    relay = Relay(make_config(tmp_path / "data"), clock)
    await relay.start()
    try:
        _, key = await create_api_key(relay.store.keys, relay.store.clock, "limited", ("read",), rate_limit=2)
        host, port = relay.http_address

        async def get() -> tuple[int, dict[str, str]]:
            async with aiohttp.ClientSession() as s:
                async with s.get(f"http://{host}:{port}/v1/messages", headers={"Authorization": f"Bearer {key}"}) as r:
                    return r.status, dict(r.headers)

        assert [(await get())[0] for _ in range(2)] == [200, 200]
        status, headers = await get()
        assert (status, headers["Retry-After"], headers["X-RateLimit-Reset"]) == (429, "3600", "1800003600")
        clock.advance(3599)
        status, headers = await get()
        assert (status, headers["Retry-After"]) == (429, "1")
        clock.advance(1)
        status, headers = await get()
        assert (status, headers["X-RateLimit-Remaining"], headers["X-RateLimit-Reset"]) == (200, "1", "1800007200")
    finally:
        await relay.stop()


async def test_an_acceptor_looks_at_its_parent_each_interval_of_its_clock():
    clock, parents, gone = VirtualClock(), [100], []
    watch = workers.ParentWatch(
        100,
        lambda: gone.append(clock.monotonic()),
        interval=1.0,
        getppid=lambda: parents[0],
        exiting=lambda pid: False,
        clock=clock,
    )
    task = asyncio.create_task(watch.run())
    await clock.run_for(10.5)
    assert gone == []
    parents[0] = 1  # re-parented at 10.5 s: seen at the next look, 11 s
    await clock.run_for(5)
    assert gone == [11.0]
    await task
