"""Idempotency-Key claims belong to the request that made them until it ends or its process provably stopped."""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import sys
import time

import aiohttp
import pytest

from relay.app import Relay
from relay.clock import FakeClock
from relay.keys import create_api_key
from relay.message import NewMessage
from relay.store import Store
from relay.store import idempotency as idem
from relay.store.idempotency import ClaimLost, Completion, Owner
from relay.submission.http import HttpSubmission
from tests.conftest import make_config, store_rows

BATCH = {
    "messages": [
        {"from": "app@example.com", "to": "a@one.example", "subject": "s", "text": "t"},
        {"from": "app@example.com", "to": "b@one.example", "subject": "s", "text": "t"},
    ]
}


async def count_messages(store: Store) -> int:
    ((count,),) = await store_rows(store, "SELECT count(*) FROM messages")
    return int(count)


def gone_pid() -> int:
    """The pid of a process of this machine that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture
async def relay_on_fake_clock(tmp_path, sink):
    clock = FakeClock(time.time())
    relay = Relay(make_config(tmp_path / "data", delivery={"smarthost": sink.address}), clock)
    await relay.start()
    _, secret = await create_api_key(relay.store.keys, relay.store.clock, "app", ("send", "read"))
    yield relay, clock, secret
    await relay.stop()


async def post(relay, secret: str, path: str, body: dict, idempotency_key: str) -> tuple[int, dict, str | None]:
    host, port = relay.http_address
    headers = {
        "Authorization": f"Bearer {secret}",
        "Idempotency-Key": idempotency_key,
        "Content-Type": "application/json",
    }
    async with aiohttp.ClientSession() as s:
        async with s.post(f"http://{host}:{port}{path}", data=json.dumps(body), headers=headers) as r:
            return r.status, await r.json(), r.headers.get("Idempotent-Replayed")


async def test_a_request_running_past_a_minute_is_not_duplicated_by_a_retry(relay_on_fake_clock, monkeypatch):
    """Before: the retry at +64 s found a "stale" pending claim (older than 60 s), deleted it and queued the
    batch again; then the first request queued it too: four messages for a two-message batch."""
    relay, clock, secret = relay_on_fake_clock
    started, proceed = asyncio.Event(), asyncio.Event()
    build_all = HttpSubmission.build_all

    async def slow_first_build(self, compositions):
        if not started.is_set():  # the first request's rendering takes "64 seconds"
            started.set()
            await proceed.wait()
        return await build_all(self, compositions)

    monkeypatch.setattr(HttpSubmission, "build_all", slow_first_build)
    first = asyncio.create_task(post(relay, secret, "/v1/messages/batch", BATCH, "batch-64s"))
    try:
        await asyncio.wait_for(started.wait(), 10)
        clock.advance(64)
        status, body, _ = await post(relay, secret, "/v1/messages/batch", BATCH, "batch-64s")
    finally:
        proceed.set()
    status_first, first_body, _ = await first
    assert (status, body.get("error", {}).get("code")) == (409, "idempotency_in_progress"), body
    assert await count_messages(relay.store) == 2, "queued twice"
    status = status_first
    assert status == 202 and first_body["queued"] == 2
    status, replayed, header = await post(relay, secret, "/v1/messages/batch", BATCH, "batch-64s")
    assert (status, replayed, header) == (202, first_body, "true")
    assert await count_messages(relay.store) == 2


@pytest.mark.parametrize("owner", ["crashed", "restarted"])
async def test_the_claim_of_a_stopped_process_is_taken_over_at_once(relay_on_fake_clock, owner):
    """Before: a claim less than 60 s old answered 409 whoever held it, even a process that had died."""
    relay, clock, secret = relay_on_fake_clock
    me = idem.this_process()
    holder = Owner(me.node, gone_pid(), "0123456789abcdef") if owner == "crashed" else Owner(me.node, me.pid, "old")
    message = {"from": "app@example.com", "to": "a@one.example", "subject": "s", "text": "t"}
    request_hash = hashlib.sha256(json.dumps(message).encode()).hexdigest()
    key_id = (await relay.store.keys.list_api_keys())[0].id
    now = clock.now()
    await relay.store.db.write(lambda c: idem.claim(c, key_id, "k", request_hash, now, 3600, "elsewhere", holder))
    status, body, replayed = await post(relay, secret, "/v1/messages", message, "k")
    assert status == 202 and replayed is None, body
    assert await count_messages(relay.store) == 1
    record = await relay.store.idempotency.idempotency_record(key_id, "k")
    assert record is not None and record.state == "done" and record.message_id == body["id"]


# -- the claim rules, with real processes ------------------------------------------------------


def claim_as(store: Store, owner: Owner):
    now = store.clock.now()
    return store.db.write(lambda c: idem.claim(c, "key_1", "k", "h", now, 3600, "another process", owner))


async def test_a_live_process_on_this_machine_keeps_its_claim_until_its_lease_runs_out(store):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert await claim_as(store, Owner(idem.this_process().node, sleeper.pid, "t")) is None
        store.clock.advance(idem.LEASE - 1)
        held = await store.idempotency.claim_idempotency_key("key_1", "k", "h", 3600)
        assert held is not None and held.state == "pending" and held.owner.startswith(f"{sleeper.pid}:t@")
        store.clock.advance(2)  # not renewed: hung, or its pid belongs to someone else now
        assert await store.idempotency.claim_idempotency_key("key_1", "k", "h", 3600) is None
    finally:
        sleeper.kill()
        sleeper.wait()


async def test_a_claim_from_another_machine_holds_while_renewed(store):
    assert (
        await store.idempotency.claim_idempotency_key("key_1", "k", "h", 3600) is None
    )  # this process, request running
    elsewhere = Owner("another-host/boot/pid:[1]", 4242, "t")
    store.clock.advance(idem.LEASE * 0.8)
    assert await store.idempotency.renew_idempotency_key("key_1", "k")
    store.clock.advance(idem.LEASE * 0.8)  # past the first lease, within the renewed one
    assert (await claim_as(store, elsewhere)).owner == str(idem.this_process())
    store.clock.advance(idem.LEASE * 0.3)  # no renewal since: the other machine may take it over
    assert await claim_as(store, elsewhere) is None
    # The first request, still running here, lost its claim: it can neither renew nor complete, and what
    # it would have queued is not queued.
    assert not await store.idempotency.renew_idempotency_key("key_1", "k")
    with pytest.raises(ClaimLost):
        await store.queue.enqueue_many(
            [NewMessage("a@example.com", ("x@one.example",), b"\r\nhi\r\n", "http")],
            completion=Completion("key_1", "k", 202, "{}", None),
        )
    assert await count_messages(store) == 0
    record = await store.idempotency.idempotency_record("key_1", "k")
    assert record is not None and record.owner == str(elsewhere) and record.state == "pending"


async def test_a_request_of_this_process_holds_its_claim_however_long_it_runs(store):
    assert await store.idempotency.claim_idempotency_key("key_1", "k", "h", 3600) is None
    store.clock.advance(10 * idem.LEASE)  # no renewal needed: this process knows the request still runs
    assert (await store.idempotency.claim_idempotency_key("key_1", "k", "h", 3600)).state == "pending"
    idem.finished_here(store.db.name, "key_1", "k")  # it ended without completing or releasing
    assert await store.idempotency.claim_idempotency_key("key_1", "k", "h", 3600) is None
    await store.idempotency.release_idempotency_key("key_1", "k")


async def test_release_forgets_only_its_own_claim(store):
    assert await claim_as(store, Owner("another-host", 1, "t")) is None
    await store.idempotency.release_idempotency_key("key_1", "k")
    assert (await store.idempotency.idempotency_record("key_1", "k")).owner == "1:t@another-host"


def test_owner_text_round_trips():
    me = idem.this_process()
    assert Owner.parse(str(me)) == me and "@" not in me.node
    assert Owner.parse("garbage") is None and Owner.parse("x:y@z") is None


async def test_one_task_renews_every_claim_held_here_and_stops_with_the_last(store, monkeypatch):
    monkeypatch.setattr(idem, "RENEW_EVERY", 0.01)
    i = store.idempotency
    for key in ("a", "b"):
        assert await i.claim_idempotency_key("key_1", key, "h", 3600) is None
    first = store.clock.now() + idem.LEASE
    async with i.idempotency_lease("key_1", "a"), i.idempotency_lease("key_1", "b"):
        renewers = [t for t in asyncio.all_tasks() if t.get_name() == "idempotency-renewals"]
        assert len(renewers) == 1, "one task for all the claims, not one per request"
        store.clock.advance(idem.LEASE * 0.9)
        for _ in range(200):
            leases = [(await i.idempotency_record("key_1", key)).lease_until for key in ("a", "b")]
            if all(lease > first for lease in leases):
                break
            await asyncio.sleep(0.01)
        assert all(lease > first for lease in leases), leases
    for _ in range(100):  # nothing held: the renewer ends
        if renewers[0].done():
            break
        await asyncio.sleep(0.01)
    assert renewers[0].done()
