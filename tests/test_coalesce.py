"""relay.store.coalesce.Coalescer: concurrent look-ups share one query; each caller gets its own keys' answers."""

from __future__ import annotations

import asyncio

import pytest

from relay.store.coalesce import Coalescer, Combiner


class Fetcher:
    """A query that takes a while and records what it was asked."""

    def __init__(self, table: dict[str, int], fail: bool = False) -> None:
        self.table = table
        self.calls: list[list[str]] = []
        self.fail = fail
        self.release = asyncio.Event()

    async def __call__(self, keys: list[str]) -> dict[str, int]:
        self.calls.append(keys)
        await self.release.wait()
        if self.fail:
            raise RuntimeError("the database went away")
        return {k: self.table[k] for k in keys if k in self.table}


async def test_an_idle_lookup_runs_at_once_alone() -> None:
    fetch = Fetcher({"a": 1})
    fetch.release.set()
    assert await Coalescer(fetch).get(["a", "b"]) == {"a": 1}
    assert fetch.calls == [["a", "b"]]


async def test_lookups_made_while_one_runs_share_the_next_query() -> None:
    fetch = Fetcher({"a": 1, "b": 2, "c": 3})
    lookups = Coalescer(fetch)
    first = asyncio.create_task(lookups.get(["a"]))
    await asyncio.sleep(0)
    others = [asyncio.create_task(lookups.get(keys)) for keys in (["b"], ["c", "x"], ["b"])]
    await asyncio.sleep(0)
    fetch.release.set()
    assert await first == {"a": 1}
    assert [await t for t in others] == [{"b": 2}, {"c": 3}, {"b": 2}]
    assert fetch.calls == [["a"], ["b", "c", "x"]]  # two queries for four callers, each key asked once


async def test_a_failed_query_fails_each_of_its_callers_and_the_next_query_still_runs() -> None:
    fetch = Fetcher({"a": 1}, fail=True)
    lookups = Coalescer(fetch)
    calls = [asyncio.create_task(lookups.get([k])) for k in "ab"]
    await asyncio.sleep(0)
    fetch.release.set()
    for call in calls:
        with pytest.raises(RuntimeError, match="went away"):
            await call
    fetch.fail = False
    assert await lookups.get(["a"]) == {"a": 1}


async def test_a_cancelled_caller_does_not_disturb_the_others() -> None:
    fetch = Fetcher({"a": 1, "b": 2})
    lookups = Coalescer(fetch)
    first = asyncio.create_task(lookups.get(["a"]))
    await asyncio.sleep(0)
    gone, kept = asyncio.create_task(lookups.get(["a"])), asyncio.create_task(lookups.get(["b"]))
    await asyncio.sleep(0)
    gone.cancel()
    fetch.release.set()
    assert await first == {"a": 1}
    assert await kept == {"b": 2}


async def test_one_query_asks_for_at_most_max_keys() -> None:
    fetch = Fetcher({})
    lookups = Coalescer(fetch, max_keys=3)
    first = asyncio.create_task(lookups.get(["k0"]))
    await asyncio.sleep(0)
    rest = [asyncio.create_task(lookups.get([f"k{i}", f"j{i}"])) for i in range(1, 4)]
    await asyncio.sleep(0)
    fetch.release.set()
    await asyncio.gather(first, *rest)
    assert [len(c) for c in fetch.calls] == [1, 2, 2, 2]  # 2 + 2 would pass 3


class Writer:
    """A write that takes a while, records what it was given, and refuses the items in ``bad``."""

    def __init__(self, bad: frozenset[str] = frozenset()) -> None:
        self.bad = bad
        self.calls: list[list[str]] = []
        self.stored: list[str] = []
        self.release = asyncio.Event()

    async def __call__(self, items: list[str]) -> None:
        self.calls.append(items)
        await self.release.wait()
        if self.bad & set(items):
            raise ValueError(f"refused {sorted(self.bad & set(items))}")
        self.stored += items


async def test_writes_made_while_one_runs_go_together_in_the_next() -> None:
    write = Writer()
    combiner = Combiner(write)
    first = asyncio.create_task(combiner.add(["a"]))
    await asyncio.sleep(0)
    others = [asyncio.create_task(combiner.add(items)) for items in (["b", "c"], ["d"])]
    await asyncio.sleep(0)
    write.release.set()
    await asyncio.gather(first, *others)
    assert write.calls == [["a"], ["b", "c", "d"]] and write.stored == ["a", "b", "c", "d"]


async def test_a_bad_item_fails_only_its_caller() -> None:
    write = Writer(bad=frozenset({"x"}))
    combiner = Combiner(write)
    first = asyncio.create_task(combiner.add(["a"]))
    await asyncio.sleep(0)
    good, bad, also_good = (asyncio.create_task(combiner.add(i)) for i in (["b"], ["x", "y"], ["c"]))
    await asyncio.sleep(0)
    write.release.set()
    await asyncio.gather(first, good, also_good)
    with pytest.raises(ValueError, match="refused"):
        await bad
    assert write.stored == ["a", "b", "c"]  # the combined write failed; each was written again alone
    assert write.calls[1] == ["b", "x", "y", "c"]


async def test_a_write_alone_that_fails_fails_its_caller_and_the_next_runs() -> None:
    write = Writer(bad=frozenset({"x"}))
    write.release.set()
    combiner = Combiner(write)
    with pytest.raises(ValueError):
        await combiner.add(["x"])
    await combiner.add(["a"])
    assert write.stored == ["a"]
