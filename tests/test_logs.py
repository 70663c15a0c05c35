"""relay.logs: the lines of an event loop's turn written together, in order; what matters written at once."""

from __future__ import annotations

import asyncio
import io
import logging
import threading
import time

import pytest

from relay.logs import LineHandler, TextFormatter, rfc3339_utc


class CountingStream(io.StringIO):
    """A text stream that remembers each write."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)


@pytest.fixture
def logged() -> tuple[logging.Logger, CountingStream]:
    stream = CountingStream()
    handler = LineHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger(f"relay.test.logs.{id(stream)}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    yield logger, stream
    logger.handlers.clear()


def test_lines_of_one_turn_are_written_together_at_its_end(logged):
    logger, stream = logged

    async def turn() -> list[str]:
        for n in range(5):
            logger.info("queued %d", n)
        before = stream.getvalue()
        await asyncio.sleep(0)  # the loop runs its next callbacks: the flush among them
        return [before, stream.getvalue()]

    before, after = asyncio.run(turn())
    assert before == ""
    assert after == "".join(f"INFO queued {n}\n" for n in range(5))
    assert len(stream.writes) == 1


def test_a_warning_is_written_at_once_after_the_lines_before_it(logged):
    logger, stream = logged

    async def turn() -> str:
        logger.info("queued 1")
        logger.warning("refused a connection")
        return stream.getvalue()

    assert asyncio.run(turn()) == "INFO queued 1\nWARNING refused a connection\n"


def test_without_an_event_loop_every_line_is_written_at_once(logged):
    logger, stream = logged
    logger.info("relay started")
    assert stream.getvalue() == "INFO relay started\n"


def test_a_line_from_another_thread_is_written_at_once_and_keeps_the_order(logged):
    logger, stream = logged

    async def turn() -> str:
        logger.info("from the loop")
        thread = threading.Thread(target=logger.info, args=("from a thread",))
        thread.start()
        thread.join()
        return stream.getvalue()

    assert asyncio.run(turn()) == "INFO from the loop\nINFO from a thread\n"


def test_lines_still_waiting_are_written_by_flush(logged):
    """logging.shutdown flushes every handler at exit: lines of a turn that never ends are not lost."""
    logger, stream = logged

    async def turn() -> list[str]:
        logger.info("delivered")
        before = stream.getvalue()
        next(h for h in logger.handlers if isinstance(h, LineHandler)).flush()
        after = stream.getvalue()
        await asyncio.sleep(0)  # the turn's own flush finds nothing left to write
        return [before, after, stream.getvalue()]

    assert asyncio.run(turn()) == ["", "INFO delivered\n", "INFO delivered\n"]


def test_a_loop_that_closed_before_its_flush_does_not_hold_back_the_next_loops_lines(logged):
    logger, stream = logged

    first = asyncio.new_event_loop()
    first.call_soon(logger.info, "one")  # its flush is scheduled after the stop below: it never runs
    first.call_soon(first.stop)
    first.run_forever()
    first.close()
    assert stream.getvalue() == ""

    async def turn() -> str:
        logger.info("two")
        await asyncio.sleep(0)
        return stream.getvalue()

    assert asyncio.run(turn()).endswith("INFO two\n")


def test_a_line_that_cannot_be_formatted_does_not_take_the_others_with_it(logged):
    logger, stream = logged
    handler = next(h for h in logger.handlers if isinstance(h, LineHandler))
    logger.handlers = [handler]  # pytest's capture (added for the test's call) raises where logging goes on
    failed: list[logging.LogRecord] = []
    handler.handleError = failed.append  # logging's own prints a traceback to stderr and goes on

    async def turn() -> None:
        logger.info("queued %d", 1)
        logger.info("queued %d", "not a number")
        logger.info("queued %d", 3)
        await asyncio.sleep(0)

    asyncio.run(turn())
    assert stream.getvalue() == "INFO queued 1\nINFO queued 3\n"
    assert [r.args for r in failed] == [("not a number",)]


def test_text_time_is_loggings_default_format_cached_per_second():
    formatter = TextFormatter()
    for created in (1796121149.123, 1796121149.999, 1796121150.0, 1796121149.5):
        record = logging.LogRecord("relay", logging.INFO, __file__, 1, "m", None, None)
        record.created, record.msecs = created, (created - int(created)) * 1000
        expected = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(created)) + f",{int(record.msecs):03d}"
        assert formatter.formatTime(record) == expected
        assert logging.Formatter().formatTime(record) == expected


def test_rfc3339_time_across_a_second_boundary():
    assert rfc3339_utc(1796121149.9996) == "2026-12-01T10:32:30.000Z"
    assert rfc3339_utc(1796121149.123) == "2026-12-01T10:32:29.123Z"
    assert rfc3339_utc(1796121150.001) == "2026-12-01T10:32:30.001Z"
