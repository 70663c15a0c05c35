"""What both group-commit writers share (SQLite's ``Database``, PostgreSQL's ``PgDatabase``): the operations
waiting for the writer thread, how it takes them in batches, and how their callers' futures are resolved."""

from __future__ import annotations

import asyncio
import queue
from collections.abc import Callable
from typing import Any

MAX_BATCH = 512  # operations committed together at most
STOP = object()  # put on the queue to stop the writer once the operations before it are done


class Pending:
    """An operation for the writer thread, and the future (on its caller's event loop) for its outcome."""

    __slots__ = ("fn", "future", "loop")

    def __init__(self, fn: Callable[[Any], Any], future: asyncio.Future[Any], loop: asyncio.AbstractEventLoop) -> None:
        self.fn = fn
        self.future = future
        self.loop = loop


def take_batch(waiting: queue.SimpleQueue[Any]) -> tuple[list[Pending], bool]:
    """Wait for an operation, then take every other one waiting (up to MAX_BATCH): (the batch, whether STOP
    came after it)."""
    item = waiting.get()
    if item is STOP:
        return [], True
    batch = [item]
    while len(batch) < MAX_BATCH:
        try:
            item = waiting.get_nowait()
        except queue.Empty:
            break
        if item is STOP:
            return batch, True
        batch.append(item)
    return batch, False


def settle(items: list[tuple[Pending, bool, Any]]) -> None:
    """Resolve the callers' futures, each on its own event loop: (pending, True, value) or (pending, False, error)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]] = {}
    for pending, ok, value in items:
        by_loop.setdefault(pending.loop, []).append((pending.future, ok, value))
    for loop, results in by_loop.items():
        try:
            loop.call_soon_threadsafe(_resolve, results)
        except RuntimeError:  # that event loop has closed; nobody is waiting
            pass


def _resolve(items: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for future, ok, value in items:
        if future.done():
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)
