"""Several nodes on one PostgreSQL database, as the store sees them: two PgStore objects over the same
database are two nodes (each has its own writer, readers and listener connections). Claims of due mail
and of webhook deliveries never overlap, one node's new mail wakes the others, housekeeping runs on one
node at a time."""

from __future__ import annotations

import asyncio
import itertools

import psycopg
import pytest

from relay.clock import FakeClock
from relay.message import NewMessage
from relay.store.events import HOUSEKEEPING_LOCK
from relay.store.postgres import PgStore
from relay.store.webhooks import Webhook
from tests.conftest import PG_TEMPLATE

_names = itertools.count()


@pytest.fixture
async def nodes(pg_cluster):
    """Two stores (two nodes) on one new database, on one fake clock; closed after the test."""
    url = pg_cluster.create_database(f"nodes_{next(_names)}", template=PG_TEMPLATE)
    clock = FakeClock()
    a, b = PgStore(url, clock), PgStore(url, clock)
    a.url = url
    yield a, b
    await a.close()
    await b.close()


def message(*rcpts: str, **fields) -> NewMessage:
    return NewMessage("a@example.com", rcpts, b"Subject: t\r\n\r\nbody\r\n", "http", **fields)


async def test_concurrent_claims_by_two_nodes_lease_each_recipient_once(nodes):
    a, b = nodes
    queued = [message(f"r{i}@example.org", f"s{i}@example.net") for i in range(300)]
    await a.queue.enqueue_many(queued[:150])
    await b.queue.enqueue_many(queued[150:])
    leased: dict[str, list[int]] = {"node-a": [], "node-b": []}

    async def claim(store: PgStore, owner: str) -> None:
        while batch := await store.queue.claim_due(7, owner, lease=600):
            leased[owner] += [r.id for m in batch for r in m.recipients]

    await asyncio.gather(claim(a, "node-a"), claim(b, "node-b"), claim(a, "node-a"), claim(b, "node-b"))
    everything = leased["node-a"] + leased["node-b"]
    assert len(everything) == len(set(everything)) == 600  # each recipient once, none left behind
    assert leased["node-a"] and leased["node-b"]  # both took work: neither waited for the other's locks


async def test_new_mail_on_one_node_wakes_the_other_after_its_commit(nodes):
    a, b = nodes
    woken = asyncio.Event()
    b.queue.watch(woken.set)
    await asyncio.sleep(0.3)  # the listener connects
    await a.queue.enqueue(message("x@example.org", send_at=a.clock.now() + 3600))
    with pytest.raises(TimeoutError):  # scheduled for later: nothing to wake for
        await asyncio.wait_for(woken.wait(), 0.7)
    await a.queue.enqueue_many([message("x@example.org"), message("y@example.org")])
    await asyncio.wait_for(woken.wait(), 5)
    (claimed, _) = await b.queue.claim_due(10, "node-b", lease=60) or [None, None]
    assert claimed is not None  # the woken node finds the mail committed


async def test_a_listener_hears_again_after_the_server_restarts(pg_cluster, nodes):
    a, b = nodes
    woken = asyncio.Event()
    b.queue.watch(woken.set)
    await asyncio.sleep(0.3)
    await asyncio.to_thread(pg_cluster.restart, 0.2)
    await asyncio.wait_for(woken.wait(), 10)  # reconnected: told once, for what it may have missed
    woken.clear()
    for _ in range(20):  # the first write after the restart may meet a stale connection
        try:
            await a.queue.enqueue(message("x@example.org"))
            break
        except Exception:
            await asyncio.sleep(0.2)
    await asyncio.wait_for(woken.wait(), 5)


async def test_webhook_deliveries_are_claimed_once_across_nodes(nodes):
    a, b = nodes
    now = a.clock.now()
    await a.webhooks.create_webhook(Webhook("wh_1", "https://hooks.example/x", ["queued"], True, "", "s", now, now))
    await a.queue.enqueue_many([message(f"r{i}@example.org") for i in range(100)])
    claimed: list[int] = []

    async def claim(store: PgStore) -> None:
        while due := await store.webhooks.claim_webhook_deliveries("wh_1", 3, lease=600):
            claimed.extend(d.id for d in due)

    await asyncio.gather(claim(a), claim(b), claim(a), claim(b))
    assert len(claimed) == len(set(claimed)) == 100


async def test_housekeeping_runs_on_one_node_at_a_time(nodes):
    a, b = nodes
    await a.queue.enqueue(message("x@example.org"))
    a.clock.advance(3600)
    with psycopg.connect(a.url) as other:  # another node in the middle of its housekeeping batch
        other.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (HOUSEKEEPING_LOCK,))
        assert await b.events.prune_history(a.clock.now(), a.clock.now()) == (0, 0)  # skipped, not waiting
    assert (await b.events.prune_history(a.clock.now(), 0))[0] > 0  # the lock is free again: it prunes
