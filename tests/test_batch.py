"""POST /v1/messages/batch: per-item results, atomic batches, personalisation, idempotency."""

from __future__ import annotations

import email
import email.policy

import aiohttp

from relay.keys import create_api_key

GOOD = {"from": "app@example.com", "subject": "s", "text": "t"}


async def post(relay, key, body, headers=None):
    host, port = relay.http_address
    async with aiohttp.ClientSession() as s:
        async with s.post(
            f"http://{host}:{port}/v1/messages/batch",
            json=body,
            headers={"Authorization": f"Bearer {key}", **(headers or {})},
        ) as r:
            return r.status, await r.json(), r.headers


async def test_three_good_one_bad(relay_factory, sink):
    relay = await relay_factory(delivery={"smarthost": sink.address})
    _, key = await create_api_key(relay.store.keys, relay.store.clock, "t", ("send",))
    messages = [
        {**GOOD, "to": "a@one.example"},
        {**GOOD, "to": "b@one.example"},
        {**GOOD, "to": "not an address"},
        {**GOOD, "to": "c@one.example", "tags": ["x"]},
    ]
    status, body, _ = await post(relay, key, {"messages": messages})
    assert status == 202, body
    assert (body["queued"], body["failed"]) == (3, 1)
    assert [r["index"] for r in body["results"]] == [0, 1, 2, 3]
    assert body["results"][2]["error"]["field"] == "messages[2].to"
    assert all(r["status"] == "queued" and r["id"] for r in body["results"] if r["index"] != 2)
    received = await sink.handler.wait_for(3)
    assert sorted(r.rcpt_tos[0] for r in received) == ["a@one.example", "b@one.example", "c@one.example"]


async def test_atomic_batch_with_a_bad_item_queues_nothing(relay_factory):
    relay = await relay_factory()
    _, key = await create_api_key(relay.store.keys, relay.store.clock, "t", ("send",))
    messages = [{**GOOD, "to": "a@one.example"}, {**GOOD, "to": "b@one.example", "text": None}]
    status, body, _ = await post(relay, key, {"messages": messages, "atomic": True})
    assert status == 400 and body["error"]["code"] == "batch_rejected" and body["error"]["field"] == "messages[1].text"
    assert sum((await relay.store.queue.summary()).by_state.values()) == 0


async def test_personalised_batch_renders_each_copy(relay_factory, sink):
    relay = await relay_factory(delivery={"smarthost": sink.address})
    _, key = await create_api_key(relay.store.keys, relay.store.clock, "t", ("send",))
    body = {
        "message": {"from": "app@example.com", "subject": "Hi {{ name }}", "html": "<p>Code {{ code }}</p>"},
        "recipients": [
            {"to": "ann@one.example", "variables": {"name": "Ann", "code": "A1"}},
            {"to": "bob@one.example", "variables": {"name": "<Bob>", "code": "B2"}},
        ],
    }
    status, result, _ = await post(relay, key, body)
    assert status == 202 and result["queued"] == 2, result
    received = {
        r.rcpt_tos[0]: email.message_from_bytes(r.data, policy=email.policy.default)
        for r in await sink.handler.wait_for(2)
    }
    assert received["ann@one.example"]["Subject"] == "Hi Ann"
    assert received["bob@one.example"]["Subject"] == "Hi <Bob>"
    assert "Code B2" in received["bob@one.example"].get_body(("plain",)).get_content()
    assert received["ann@one.example"].get_body(("html",)).get_content().strip() == "<p>Code A1</p>"


async def test_idempotency_key_covers_the_batch(relay_factory):
    relay = await relay_factory()
    _, key = await create_api_key(relay.store.keys, relay.store.clock, "t", ("send",))
    body = {"messages": [{**GOOD, "to": "a@one.example"}, {**GOOD, "to": "b@one.example"}]}
    first = await post(relay, key, body, {"Idempotency-Key": "batch-1"})
    again = await post(relay, key, body, {"Idempotency-Key": "batch-1"})
    assert first[0] == again[0] == 202 and first[1] == again[1]
    assert again[2].get("Idempotent-Replayed") == "true"
    assert sum((await relay.store.queue.summary()).by_state.values()) == 2  # two recipients, not four


async def test_limits(relay_factory):
    relay = await relay_factory(http={"listen": "127.0.0.1:0", "max_batch": 3})
    _, key = await create_api_key(relay.store.keys, relay.store.clock, "t", ("send",))
    status, body, _ = await post(relay, key, {"messages": [{**GOOD, "to": "a@one.example"}] * 4})
    assert status == 400 and body["error"]["field"] == "messages"
    status, body, _ = await post(relay, key, {"message": GOOD, "recipients": []})
    assert status == 400 and body["error"]["field"] == "recipients"
    status, body, _ = await post(relay, key, {"nothing": 1})
    assert status == 400 and body["error"]["code"] == "missing_field"


async def test_a_big_batch_is_built_in_worker_processes(relay_factory, sink):
    relay = await relay_factory(delivery={"smarthost": sink.address})
    _, key = await create_api_key(relay.store.keys, relay.store.clock, "t", ("send",))
    people = [{"to": f"u{i}@one.example", "variables": {"n": i}} for i in range(40)]  # over BULK_BUILD
    body = {"message": {"from": "app@example.com", "subject": "No. {{ n }}", "text": "n={{ n }}"}, "recipients": people}
    status, result, _ = await post(relay, key, body)
    assert status == 202 and result["queued"] == 40
    received = await sink.handler.wait_for(40)
    subjects = {
        r.rcpt_tos[0]: email.message_from_bytes(r.data, policy=email.policy.default)["Subject"] for r in received
    }
    assert subjects == {f"u{i}@one.example": f"No. {i}" for i in range(40)}
    ids = [r["id"] for r in result["results"]]
    assert len(set(ids)) == 40


async def test_a_big_batch_builds_only_what_needs_the_email_package_in_worker_processes():
    """Common messages (relay.compose_direct) are built right away, in order with the others; only those
    with attachments (for example) go to the worker processes."""
    import base64
    from concurrent.futures import ThreadPoolExecutor

    from relay.clock import SystemClock
    from relay.compose import Limits, parse_request
    from relay.submission.http import BULK_BUILD, HttpSubmission

    class CountingPool(ThreadPoolExecutor):
        built = 0

        def submit(self, fn, /, *args, **kwargs):
            self.built += len(args[0])
            return super().submit(fn, *args, **kwargs)

    attachment = [{"filename": "a.txt", "content": base64.b64encode(b"attached").decode()}]
    requests = [
        {**GOOD, "to": f"u{i}@one.example", "subject": f"No. {i}", **({"attachments": attachment} if i % 2 else {})}
        for i in range(2 * BULK_BUILD)
    ]
    submission = HttpSubmission(None, None, "relay.example", SystemClock(), Limits(), 60.0)  # type: ignore[arg-type]
    with CountingPool(2) as pool:
        submission.builders = pool
        raws = await submission.build_all([parse_request(r, Limits()) for r in requests])
    assert pool.built == BULK_BUILD  # the odd ones, with an attachment
    for i, raw in enumerate(raws):
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert (message["To"], message["Subject"]) == (f"u{i}@one.example", f"No. {i}")
        assert [p.get_content() for p in message.iter_attachments()] == (["attached"] if i % 2 else [])
