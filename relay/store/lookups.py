"""Keyed look-ups coalesced into one query: while one query is on its way, the look-ups asked for meanwhile
wait and then share the next one.

For a database that answers over the network (PostgreSQL), every look-up is a round trip and a hop to a
reader thread; at the RCPT of twenty concurrent sessions most of them would be spent on the same small
query. A :class:`Coalescer` keeps one query in flight: the first caller starts it at once (no added
latency when the relay is idle), callers that come while it runs are answered by the next, which asks for
all their keys together. SQLite answers look-ups inline and needs none of this.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

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
