"""Concurrent calls to a database server coalesced: while one query or write is on its way, the calls made
meanwhile wait and then go together in the next one.

For a database that answers over the network (PostgreSQL), every statement is a round trip (or a place in
the writer's pipeline) and Python work in the driver; with twenty sessions or deliveries at once most of
them would be spent on the same small statement. Both classes keep one call in flight: the first caller
starts it at once (no added latency when the relay is idle), callers that come while it runs go in the
next. :class:`Coalescer` merges keyed look-ups (the RCPT suppression check), :class:`Combiner` lists of
rows to write (the delivery engine's outcomes). SQLite answers look-ups inline and writes in-process: it
needs neither.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
T = TypeVar("T")

MAX_KEYS = 500  # keys asked for in one query at most; more callers wait for the next


class Coalescer(Generic[K, V]):
    """``get(keys)`` answers ``{key: value}`` for the keys ``fetch`` found, as ``fetch(keys)`` would."""

    def __init__(self, fetch: Callable[[list[K]], Awaitable[dict[K, V]]], max_keys: int = MAX_KEYS) -> None:
        self._fetch = fetch
        self._max_keys = max_keys
        self._waiting: list[tuple[Sequence[K], asyncio.Future[dict[K, V]]]] = []
        self._runner: asyncio.Task[None] | None = None

    async def get(self, keys: Sequence[K]) -> dict[K, V]:
        if not keys:
            return {}
        loop = asyncio.get_running_loop()
        if self._runner is not None and not self._runner.done() and self._runner.get_loop() is not loop:
            return await self._fetch(list(keys))  # another event loop's queries are not this one's to join
        future: asyncio.Future[dict[K, V]] = loop.create_future()
        self._waiting.append((keys, future))
        if self._runner is None or self._runner.done():
            self._runner = loop.create_task(self._run())
        return await future

    async def _run(self) -> None:
        while self._waiting:
            batch = self._take()
            wanted = list(dict.fromkeys(k for keys, _ in batch for k in keys))
            try:
                found = await self._fetch(wanted)
            except Exception as exc:  # each caller gets the error, as if it had asked alone
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for keys, future in batch:
                if not future.done():
                    future.set_result({k: found[k] for k in keys if k in found})

    def _take(self) -> list[tuple[Sequence[K], asyncio.Future[dict[K, V]]]]:
        """The callers whose keys fit in one query (always at least the first)."""
        taken, count = 0, 0
        for keys, _ in self._waiting:
            if taken and count + len(keys) > self._max_keys:
                break
            taken, count = taken + 1, count + len(keys)
        batch, self._waiting = self._waiting[:taken], self._waiting[taken:]
        return batch


class Combiner(Generic[T]):
    """``add(items)`` returns once ``write`` has stored them, in one call with the items of others that came
    meanwhile. If a combined write fails, each caller's items are written again on their own, so one bad
    item fails only its caller (as if each had written alone)."""

    def __init__(self, write: Callable[[list[T]], Awaitable[None]], max_items: int = MAX_KEYS) -> None:
        self._write = write
        self._max_items = max_items
        self._waiting: list[tuple[Sequence[T], asyncio.Future[None]]] = []
        self._runner: asyncio.Task[None] | None = None

    async def add(self, items: Sequence[T]) -> None:
        if not items:
            return
        loop = asyncio.get_running_loop()
        if self._runner is not None and not self._runner.done() and self._runner.get_loop() is not loop:
            return await self._write(list(items))
        future: asyncio.Future[None] = loop.create_future()
        self._waiting.append((items, future))
        if self._runner is None or self._runner.done():
            self._runner = loop.create_task(self._run())
        return await future

    async def _run(self) -> None:
        while self._waiting:
            batch = _take(self._waiting, self._max_items)
            self._waiting = self._waiting[len(batch) :]
            try:
                await self._write([item for items, _ in batch for item in items])
            except Exception as exc:
                if len(batch) == 1:
                    _settle(batch[0][1], exc)
                    continue
                for items, future in batch:  # alone, each fails or succeeds on its own
                    try:
                        await self._write(list(items))
                    except Exception as alone:
                        _settle(future, alone)
                    else:
                        _settle(future, None)
                continue
            for _, future in batch:
                _settle(future, None)


def _take(
    waiting: list[tuple[Sequence[T], asyncio.Future[None]]], limit: int
) -> list[tuple[Sequence[T], asyncio.Future[None]]]:
    """The first callers whose items fit in ``limit`` (always at least one)."""
    taken, count = 0, 0
    for items, _ in waiting:
        if taken and count + len(items) > limit:
            break
        taken, count = taken + 1, count + len(items)
    return waiting[:taken]


def _settle(future: asyncio.Future[None], error: Exception | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
