"""The suppression list's Bloom filter (relay.store.suppression_sieve): RCPT's "not suppressed" without a
statement, and never an answer the database would not give."""

from __future__ import annotations

import asyncio
import random
import sqlite3
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.clock import FakeClock
from relay.store.changes import SUPPRESSIONS_CHANGED, ChangeCounts
from relay.store.db import Database
from relay.store.suppression_sieve import MIN_BITS, REBUILD_EVERY, REFRESH_INTERVAL, BloomFilter
from tests.conftest import STORE_BACKENDS


def address(rng: random.Random) -> str:
    local = "".join(rng.choices(string.ascii_lowercase + string.digits, k=rng.randint(3, 20)))
    return f"{local}@{rng.choice(['example.com', 'example.org', 'mail.example.net'])}"


@given(st.lists(st.text(min_size=1, max_size=40), max_size=300))
@settings(max_examples=60, deadline=None)
def test_a_bloom_filter_never_misses_what_it_was_given(keys):
    bloom = BloomFilter(len(keys))
    for key in keys:
        bloom.add(key)
    assert all(key in bloom for key in keys)


def test_a_bloom_filter_takes_few_absent_keys_for_present_ones():
    rng = random.Random(22)
    bloom = BloomFilter(20_000)
    for _ in range(20_000):
        bloom.add(address(rng))
    absent = [f"{address(rng)}.absent" for _ in range(50_000)]
    false_positives = sum(key in bloom for key in absent)
    assert false_positives < 0.01 * len(absent)  # 16 bits and 4 probes an address: ~0.24% expected
    assert not bloom.full


def test_a_bloom_filter_says_when_it_holds_more_than_it_was_sized_for():
    bloom = BloomFilter(10)
    assert bloom.capacity == MIN_BITS // 16
    for n in range(bloom.capacity):
        bloom.add(f"a{n}@example.com")
    assert not bloom.full
    bloom.add("one-more@example.com")
    assert bloom.full


def test_change_counts_are_shared_through_the_file(tmp_path):
    first, second = ChangeCounts(tmp_path / "relay.sqlite3"), ChangeCounts(tmp_path / "relay.sqlite3")
    assert first.count(SUPPRESSIONS_CHANGED) == 0
    first.bump({SUPPRESSIONS_CHANGED, "relay_new_work"})  # a channel without a count is left alone
    second.bump({SUPPRESSIONS_CHANGED})
    assert first.count(SUPPRESSIONS_CHANGED) == second.count(SUPPRESSIONS_CHANGED) == 2
    assert (tmp_path / "relay.sqlite3.changes").stat().st_mode & 0o777 == 0o600
    first.close()
    second.close()


@pytest.fixture(params=STORE_BACKENDS)
def backend(request):
    return request.param


async def current(store):
    """Bring the store's filter up to date (its first look-up starts the reading) and wait for it."""
    sieve = store.suppressions.sieve
    await store.suppressions.suppressed(["warm-up@example.com"])
    if sieve._refreshing is not None:
        await sieve._refreshing
    assert sieve.may_be_suppressed(["warm-up@example.com"]) is not None, "the filter is not current"


async def test_an_address_not_on_the_list_is_answered_without_a_statement(store_factory):
    store = store_factory(backend="sqlite")
    await store.suppressions.suppress(["gone@example.com"], "manual")
    await current(store)
    statements: list[str] = []
    db: Database = store.db
    for conn in (db._lookup_conn, db._read_conn):
        conn.set_trace_callback(statements.append)
    answered = store.suppressions.sieve.answered
    assert await store.suppressions.suppressed(["someone@example.com", "Other@Example.COM"]) == {}
    assert statements == []
    assert store.suppressions.sieve.answered == answered + 1
    found = await store.suppressions.suppressed(["Gone@Example.com", "someone@example.com"])
    assert list(found) == ["Gone@Example.com"]  # on the list: asked of the database, as given
    assert statements, "an address the filter holds is asked of the database"


async def test_another_process_suppression_is_seen_at_once(store_factory, backend):
    """A second store on the same database stands for another process (or node): what it suppresses is
    refused by the first at its next look-up, filter or not."""
    clock = FakeClock()
    first = store_factory(clock=clock, backend=backend)
    second = store_factory(clock=clock, backend=backend, restart=first)
    await current(first)
    assert await first.suppressions.suppressed(["late@example.com"]) == {}
    await second.suppressions.suppress(["late@example.com"], "manual")
    for _ in range(200):  # SQLite: at once; PostgreSQL: once the NOTIFY has come (a few ms)
        if await first.suppressions.suppressed(["late@example.com"]):
            break
        await asyncio.sleep(0.01)
    assert list(await first.suppressions.suppressed(["late@example.com"])) == ["late@example.com"]
    clock.advance(REFRESH_INTERVAL)
    await current(first)  # read into the filter: still refused, now through it
    assert list(await first.suppressions.suppressed(["late@example.com"])) == ["late@example.com"]


async def test_this_process_suppression_is_seen_before_its_write_returns(store_factory, backend):
    store = store_factory(backend=backend)
    await current(store)
    await store.suppressions.suppress(["now@example.com"], "manual")
    assert list(await store.suppressions.suppressed(["now@example.com"])) == ["now@example.com"]


async def test_a_bounce_that_suppresses_moves_the_count(store_factory, backend):
    from relay.bounces.classify import Classification, Kind
    from relay.store.suppressions import NewBounce

    store = store_factory(backend=backend)
    await current(store)
    hard = Classification(Kind.HARD, "user_unknown", "5.1.1")
    await store.suppressions.record_bounce(NewBounce("bounced@example.com", hard, "smtp", code=550))
    assert list(await store.suppressions.suppressed(["bounced@example.com"])) == ["bounced@example.com"]


async def test_the_database_has_the_last_word_on_what_the_filter_holds(store_factory, backend):
    clock = FakeClock()
    store = store_factory(clock=clock, backend=backend)
    await store.suppressions.suppress(["brief@example.com"], "manual", expires_at=clock.now() + 60)
    await store.suppressions.suppress(["allowed@example.com"], "manual")
    await store.suppressions.allow("allowed@example.com")
    await current(store)
    assert list(await store.suppressions.suppressed(["brief@example.com", "allowed@example.com"])) == [
        "brief@example.com"
    ]
    clock.advance(61)
    assert await store.suppressions.suppressed(["brief@example.com", "allowed@example.com"]) == {}


async def test_the_filter_is_built_anew_from_the_whole_list_now_and_then(store_factory):
    """An address written without relay's notification (by hand, with the sqlite3 shell) is in the filter
    after the next build from the whole list, and refused from then on through it as well."""
    clock = FakeClock()
    store = store_factory(clock=clock, backend="sqlite")
    await current(store)
    conn = sqlite3.connect(store.db.path)
    conn.execute(
        "INSERT INTO suppressions (address, reason, created_at) VALUES ('by-hand@example.com', 'manual', ?)",
        (clock.now() - 3600,),
    )
    conn.commit()
    conn.close()
    assert await store.suppressions.suppressed(["by-hand@example.com"]) == {}  # the filter does not know yet
    clock.advance(REBUILD_EVERY)
    await store.suppressions.suppressed(["warm-up@example.com"])  # due: it is built again, meanwhile used
    await current(store)
    assert list(await store.suppressions.suppressed(["by-hand@example.com"])) == ["by-hand@example.com"]


async def test_a_list_longer_than_the_filter_was_sized_for_is_read_into_a_bigger_one(store_factory):
    clock = FakeClock()
    store = store_factory(clock=clock, backend="sqlite")
    await current(store)
    small = store.suppressions.sieve._bloom
    many = [f"user{n}@example.com" for n in range(small.capacity + 1)]
    await store.suppressions.suppress(many, "manual")
    clock.advance(REFRESH_INTERVAL)
    await current(store)  # the new addresses, read into the same filter: now over its size
    clock.advance(REFRESH_INTERVAL)
    await current(store)
    bigger = store.suppressions.sieve._bloom
    assert bigger is not small and bigger.capacity > small.capacity and not bigger.full
    found = await store.suppressions.suppressed([many[0], many[-1], "someone@example.com"])
    assert sorted(found) == sorted([many[0], many[-1]])
