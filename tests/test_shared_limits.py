"""Limits that must hold for a whole cluster of nodes sharing one PostgreSQL database (issue 20).

Two "nodes" are two stores opened on the same database: a daily quota allows exactly N across both,
and an Idempotency-Key claimed or completed on one is seen by the other.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from typing import Any

import psycopg
import pytest

from relay.clock import FakeClock
from relay.config import Rate
from relay.errors import QuotaExhausted
from relay.message import NewMessage
from relay.store.idempotency import Completion
from relay.store.postgres import PgStore
from relay.store.postgres.connection import PgConnection
from relay.store.queue import Quota
from relay.store.queue.lifecycle import enqueue
from tests.conftest import PG_TEMPLATE

T0 = 1_800_000_000.0  # on a window boundary for periods of a minute and an hour
HOUR = Rate(5, 3600.0)
_databases = itertools.count()


@pytest.fixture
def pg_url(pg_cluster) -> str:
    return str(pg_cluster.create_database(f"limits_{os.getpid()}_{next(_databases)}", template=PG_TEMPLATE))


@pytest.fixture
async def two_nodes(pg_url):
    """Two PgStores on one database, each with its own clock (set to the same time)."""
    stores = [PgStore(pg_url, FakeClock(T0)), PgStore(pg_url, FakeClock(T0))]
    yield stores
    for store in stores:
        await store.close()


# -- quotas across two nodes ------------------------------------------------------------------------


def new_message(n: int) -> NewMessage:
    raw = f"Message-ID: <q{n}@example.com>\r\nSubject: q\r\n\r\nbody\r\n".encode()
    return NewMessage("app@example.com", (f"r{n}@example.org",), raw, "http", id=f"msg_q{n:04d}")


async def test_a_daily_quota_of_n_accepts_exactly_n_from_two_nodes_at_once(two_nodes):
    a, b = two_nodes
    quota = Quota("key_1", daily=25, monthly=None)

    async def submit(n: int) -> bool:
        try:
            await (a, b)[n % 2].queue.enqueue(new_message(n), quota)
        except QuotaExhausted:
            return False
        return True

    accepted = await asyncio.gather(*(submit(n) for n in range(100)))
    assert sum(accepted) == 25
    assert await a.queue.key_usage("key_1") == (25, 25)
    assert (await b.queue.summary()).by_state.get("queued") == 25


# -- Idempotency-Key across two nodes ---------------------------------------------------------------


async def test_a_claim_completed_on_one_node_is_replayed_on_the_other(two_nodes):
    a, b = two_nodes
    assert await a.idempotency.claim_idempotency_key("key_1", "k-1", "hash", 86400.0) is None
    async with a.idempotency.idempotency_lease("key_1", "k-1"):
        completion = Completion("key_1", "k-1", 202, '{"id": "msg_q0000"}', "msg_q0000")
        await a.queue.enqueue(new_message(0), completion=completion)
    replay = await b.idempotency.claim_idempotency_key("key_1", "k-1", "hash", 86400.0)
    assert replay is not None and (replay.state, replay.status, replay.body) == ("done", 202, '{"id": "msg_q0000"}')
    assert replay.message_id == "msg_q0000"


async def test_concurrent_claims_of_one_key_on_two_nodes_give_it_to_exactly_one(two_nodes):
    a, b = two_nodes
    keys = [f"k-{n}" for n in range(40)]
    results = await asyncio.gather(
        *(node.idempotency.claim_idempotency_key("key_1", k, "hash", 86400.0) for k in keys for node in (a, b)),
        return_exceptions=True,
    )
    errors = [r for r in results if isinstance(r, BaseException)]
    assert errors == []
    for n in range(len(keys)):
        first, second = results[2 * n], results[2 * n + 1]
        assert (first is None) != (second is None), (keys[n], first, second)
        holder = first or second
        assert holder.state == "pending"  # type: ignore[union-attr]


def wait_for_a_lock_wait(url: str) -> None:
    """Until some session of the database waits for a lock (a row's or an advisory one)."""
    with psycopg.connect(url, autocommit=True) as conn:
        for _ in range(500):
            row = conn.execute("SELECT count(*) FROM pg_locks WHERE NOT granted").fetchone()
            if row and row[0]:
                return
            time.sleep(0.01)
    raise AssertionError("no session waited for a lock")


async def test_a_quota_is_checked_after_the_other_nodes_count_not_before(pg_url):
    """Node B's check must not read the count from before node A's transaction, still open, commits."""
    quota = Quota("key_1", daily=1, monthly=None)

    def enqueue_and_commit(conn: psycopg.Connection[Any], n: int) -> None:
        enqueue(PgConnection(conn), new_message(n), T0, quota)
        conn.commit()

    with psycopg.connect(pg_url) as first, psycopg.connect(pg_url) as second:
        enqueue(PgConnection(first), new_message(1), T0, quota)  # counted, not committed yet
        other = asyncio.ensure_future(asyncio.to_thread(enqueue_and_commit, second, 2))
        await asyncio.to_thread(wait_for_a_lock_wait, pg_url)
        first.commit()
        with pytest.raises(QuotaExhausted):
            await other
        assert first.execute("SELECT count FROM key_usage WHERE period LIKE 'd:%'").fetchone() == (1,)
