"""Contract tests: what every storage backend must do, through the Protocols of relay/store/protocols.py.

Each test takes ``storage`` (a :class:`relay.store.protocols.Storage`) and only calls repository methods:
no SQL, no backend class, so a second backend runs the same tests by joining ``STORE_BACKENDS`` in
tests/conftest.py. Time is the backend's fake clock (``storage.clock``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import sqlite3
from pathlib import Path
from typing import Protocol

import psycopg
import pytest

from relay import credentials as creds
from relay.bounces.classify import Classification, Kind
from relay.dashboard import accounts
from relay.domains import DkimKey
from relay.errors import QuotaExhausted, StoreError
from relay.events import EventKind, State
from relay.keys import create_api_key, digest
from relay.message import NewMessage
from relay.nodes import SILENT, STOPPED, UP, NodeInfo
from relay.store import protocols
from relay.store.events import EventFilter
from relay.store.idempotency import ClaimLost, Completion
from relay.store.queue import AttemptResult, MessageFilter, Quota, Selection
from relay.store.suppressions import BounceFilter, NewBounce, SuppressionFilter
from relay.store.webhooks import AttemptOutcome, Webhook
from tests.conftest import STORE_BACKENDS

HARD = Classification(Kind.HARD, "user_unknown", "5.1.1")
REPOSITORIES = {
    "queue": protocols.QueueStore,
    "events": protocols.EventStore,
    "suppressions": protocols.SuppressionStore,
    "keys": protocols.KeyStore,
    "credentials": protocols.CredentialStore,
    "domains": protocols.DomainStore,
    "templates": protocols.TemplateStore,
    "webhooks": protocols.WebhookStore,
    "idempotency": protocols.IdempotencyStore,
    "nodes": protocols.NodeStore,
    "sites": protocols.SiteStore,
    "rate_counters": protocols.RateCounters,
    "secrets": protocols.SecretStore,
    "operators": protocols.OperatorStore,
    "bodies": protocols.BodyStore,
}


@pytest.fixture(params=STORE_BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def storage(store_factory, backend) -> protocols.Storage:
    made: protocols.Storage = store_factory(backend=backend)
    return made


def message(*rcpts: str, **fields) -> NewMessage:
    raw = b"Message-ID: <m1@example.com>\r\nSubject: t\r\n\r\nbody\r\n"
    return NewMessage("a@example.com", rcpts, raw, "http", **fields)


def protocol_methods(proto: type) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(member)
        for name, member in vars(proto).items()
        if callable(member) and not name.startswith("_")
    }


# -- the shape ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("attribute", sorted(REPOSITORIES))
def test_each_repository_provides_its_protocol_with_the_same_signatures(storage, attribute):
    """Every method a Protocol names exists on the backend's repository, with the same parameters and
    the same kind (coroutine or not)."""
    repository = getattr(storage, attribute)
    for name, signature in protocol_methods(REPOSITORIES[attribute]).items():
        method = getattr(repository, name, None)
        assert method is not None, f"{type(repository).__name__} has no {name}"
        assert inspect.signature(method).parameters.keys() == signature.parameters.keys() - {"self"}, name
        declared = getattr(REPOSITORIES[attribute], name)
        assert inspect.iscoroutinefunction(method) == inspect.iscoroutinefunction(declared), name


def test_the_bundle_holds_every_repository_and_the_clock(storage):
    declared = {name for name, value in vars(protocols.Storage).items() if isinstance(value, property)}
    assert declared == {"clock", *REPOSITORIES}
    for attribute in REPOSITORIES:
        assert getattr(storage, attribute) is not None
    assert storage.clock.now() > 0


def test_the_protocols_module_lists_every_protocol():
    doc = protocols.__doc__ or ""
    defined = {
        n
        for n, v in vars(protocols).items()
        if isinstance(v, type) and issubclass(v, Protocol) and v.__module__ == protocols.__name__
    }
    assert defined == {p.__name__ for p in REPOSITORIES.values()} | {"Storage"}
    assert all(f":class:`{name}`" in doc for name in defined)


# -- queue ------------------------------------------------------------------------------------------------


async def test_queue_life_cycle_enqueue_claim_record(storage):
    q = storage.queue
    m = message("x@one.example", "y@two.example")
    await q.enqueue(m)
    assert [s.state for s in await q.message_status(m.id)] == ["queued", "queued"]
    assert await q.pending_count() == 2
    (leased,) = await q.claim_due(10, "node-a", lease=60)
    assert await q.claim_due(10, "node-b", lease=60) == []  # leased once
    assert leased.id == m.id and leased.raw == m.raw
    x, y = leased.recipients
    later = storage.clock.now() + 300
    await q.record_attempts(
        [
            AttemptResult(x.id, m.id, x.address, State.DELIVERED, EventKind.DELIVERED, None, 250, "ok"),
            AttemptResult(y.id, m.id, y.address, State.DEFERRED, EventKind.DEFERRED, later, 451, "busy"),
        ]
    )
    assert {s.address: s.state for s in await q.message_status(m.id)} == {
        "x@one.example": "delivered",
        "y@two.example": "deferred",
    }
    assert await q.next_due_at() == later
    assert [a.code for a in await q.attempts(m.id, "y@two.example")] == [451]
    assert (await q.summary()).by_state["delivered"] == 1
    storage.clock.advance(301)
    (again,) = await q.claim_due(10, "node-a", lease=60)
    assert [r.attempts for r in again.recipients] == [1]


async def test_outcomes_recorded_together_as_the_engine_records_them(storage):
    """Attempt numbers from the lease, where the attempt went, several recipients and messages in one call
    (on PostgreSQL one statement for all of them)."""
    q = storage.queue
    first, second = message("a@one.example", "b@two.example"), message("c@one.example")
    await q.enqueue_many([first, second])
    leased = await q.claim_due(10, "node-a", lease=60)
    later = storage.clock.now() + 300
    results = []
    for lm in leased:
        for r in lm.recipients:
            deferred = r.address.startswith("b")
            results.append(
                AttemptResult(
                    r.id,
                    lm.id,
                    r.address,
                    State.DEFERRED if deferred else State.DELIVERED,
                    EventKind.DEFERRED if deferred else EventKind.DELIVERED,
                    later if deferred else None,
                    451 if deferred else 250,
                    "4.2.0 busy, it's <b>'quoted'</b>" if deferred else "2.0.0 queued as X",
                    mx_host="mx.one.example",
                    ip="127.0.0.1",
                    tls="TLSv1.3" if not deferred else None,
                    attempt=r.attempts + 1,
                )
            )
    await q.record_attempts(results)
    states = {s.address: (s.state, s.last_code) for m in (first, second) for s in await q.message_status(m.id)}
    assert states == {
        "a@one.example": ("delivered", 250),
        "b@two.example": ("deferred", 451),
        "c@one.example": ("delivered", 250),
    }
    (attempt,) = await q.attempts(first.id, "b@two.example")
    assert (attempt.code, attempt.mx_host, attempt.ip, attempt.tls) == (451, "mx.one.example", "127.0.0.1", None)
    assert attempt.text == "4.2.0 busy, it's <b>'quoted'</b>"
    events = [e for e in await storage.events.message_events(first.id) if e.type != "queued"]
    assert [(e.type, e.recipient, e.details["attempt"], e.details["enhanced_status"]) for e in events] == [
        ("delivered", "a@one.example", 1, "2.0.0"),
        ("deferred", "b@two.example", 1, "4.2.0"),
    ]
    assert await q.next_due_at() == later
    storage.clock.advance(301)
    (again,) = await q.claim_due(10, "node-a", lease=60)
    assert [(r.address, r.attempts) for r in again.recipients] == [("b@two.example", 1)]


async def test_queue_keeps_suppressed_recipients_for_the_record(storage):
    m = message("a@example.org", "b@example.org", "c@example.org", suppressed={"b@example.org": "hard_bounce"})
    await storage.queue.enqueue(m)
    statuses = {s.address: (s.state, s.last_response) for s in await storage.queue.message_status(m.id)}
    assert statuses == {
        "a@example.org": ("queued", None),
        "b@example.org": ("suppressed", "hard_bounce"),
        "c@example.org": ("queued", None),
    }
    events = [(e.type, e.recipient, e.detail) for e in await storage.events.message_events(m.id)]
    assert events == [
        ("queued", "a@example.org", None),
        ("suppressed", "b@example.org", "hard_bounce"),
        ("queued", "c@example.org", None),
    ]
    (leased,) = await storage.queue.claim_due(10, "node", lease=60)
    assert [r.address for r in leased.recipients] == ["a@example.org", "c@example.org"]


async def test_queue_enqueue_many_is_all_or_nothing(storage):
    first, second = message("a@example.org"), message("b@example.org")
    await storage.queue.enqueue_many([first, second])
    assert len(await storage.queue.messages(MessageFilter(), 10)) == 2
    duplicate = NewMessage(first.sender, first.recipients, first.raw, "http", first.id)
    with pytest.raises(Exception):  # noqa: B017 - an id already queued: the backend's integrity error
        await storage.queue.enqueue_many([message("c@example.org"), duplicate])
    assert len(await storage.queue.messages(MessageFilter(), 10)) == 2


async def test_queue_leases_expire_and_are_released_by_owner(storage):
    q = storage.queue
    await q.enqueue(message("a@example.org"))
    await q.enqueue(message("b@example.org"))
    await q.claim_due(1, "crashed", lease=60)
    await q.claim_due(1, "alive", lease=600)
    assert await q.release_leases("crashed") == 1
    storage.clock.advance(120)
    assert await q.release_leases() == 0
    storage.clock.advance(600)
    assert await q.release_leases() == 1
    assert await q.pending_count() == 2


async def test_queue_brings_forward_only_recipients_still_waiting(storage):
    """The engine puts back what a full site cannot take, booked at the site's pace, and brings the next of
    them forward when the site runs low: only rows still waiting for a later time move (not one leased
    again meanwhile, nor one delivered, nor one due already)."""
    q = storage.queue
    for n in range(4):
        await q.enqueue(message(f"u{n}@one.example"))
    leased = [r for m in await q.claim_due(10, "node-a", lease=60) for r in m.recipients]
    a, b, c, d = sorted(r.id for r in leased)
    now = storage.clock.now()
    await q.postpone([a, b, c], now + 600)
    await q.postpone([d], now - 1)  # due already
    (again,) = await q.claim_due(1, "node-b", lease=60)  # d, leased again
    assert [r.id for r in again.recipients] == [d]
    await q.record_attempts(
        [AttemptResult(d, again.id, again.recipients[0].address, State.DELIVERED, EventKind.DELIVERED, None, 250, "ok")]
    )
    (c_message,) = [m for m in await q.claim_due(10, "node-b", lease=60)] or [None]
    assert c_message is None  # a, b and c wait for their booking
    assert await q.bring_forward([a, b, d]) == 2  # d was delivered: left as it is
    assert sorted(r.id for m in await q.claim_due(10, "node-a", lease=60) for r in m.recipients) == [a, b]
    assert await q.bring_forward([a, b]) == 0  # leased now: not waiting
    storage.clock.advance(601)
    assert [r.id for m in await q.claim_due(10, "node-a", lease=60) for r in m.recipients] == [c]


async def test_queue_leases_renewed_by_a_live_owner_do_not_expire(storage):
    q = storage.queue
    await q.enqueue(message("a@example.org"))
    await q.enqueue(message("b@example.org"))
    (alive,) = await q.claim_due(1, "alive", lease=60)
    (gone,) = await q.claim_due(1, "gone", lease=60)
    storage.clock.advance(50)
    assert await q.renew_leases("alive", 60, [r.id for r in alive.recipients]) == 1
    assert await q.renew_leases("alive", 60, [r.id for r in gone.recipients]) == 0  # not its lease
    storage.clock.advance(50)  # 100 s after the claims: only the renewed lease holds
    assert await q.release_leases() == 1
    assert await q.renew_leases("gone", 60, [r.id for r in gone.recipients]) == 0  # expired and released
    assert [m.recipients[0].address for m in await q.claim_due(10, "other", lease=60)] == ["b@example.org"]


async def test_queue_operator_control(storage):
    q = storage.queue
    m = message("a@one.example", "b@two.example")
    await q.enqueue(m)
    (leased,) = await q.claim_due(10, "n", lease=60)
    later = storage.clock.now() + 3600
    await q.record_attempts(
        [
            AttemptResult(r.id, m.id, r.address, State.DEFERRED, EventKind.DEFERRED, later, 451, "x")
            for r in leased.recipients
        ]
    )
    assert await q.retry_now(Selection(domain="one.example")) == 1
    until = await q.suspend_domain("two.example", 600, "maintenance")
    assert until == storage.clock.now() + 600
    assert {d.domain: d.suspended_until for d in await q.domain_queues()}["two.example"] == until
    assert await q.resume_domain("two.example") is True
    assert await q.admin_bounce("operator", Selection(recipient="b@two.example")) == 1
    assert await q.purge(Selection(message_id=m.id)) == 1
    assert sorted(s.state for s in await q.message_status(m.id)) == ["bounced", "cancelled"]
    resent = await q.resend(m.id)
    assert resent is not None and [(r.address, r.result) for r in resent if r.result == "queued"] == [
        ("b@two.example", "queued")
    ]
    assert await q.resend("no-such-message") is None


async def test_queue_scheduling_and_cancel(storage):
    q = storage.queue
    now = storage.clock.now()
    later = message("a@example.org", send_at=now + 3600)
    await q.enqueue(later)
    assert await q.claim_due(10, "n", lease=60) == []
    assert [r.id for r in await q.scheduled_messages(None, 10)] == [later.id]
    assert await q.reschedule(later.id, now + 60) == 1
    storage.clock.advance(61)
    assert len(await q.claim_due(10, "n", lease=60)) == 1
    other = message("b@example.org", send_at=storage.clock.now() + 3600)
    await q.enqueue(other)
    assert await q.cancel_scheduled() == (1, 1)
    third = message("c@example.org")
    await q.enqueue(third)
    assert await q.cancel_message(third.id) == ["c@example.org"]


async def test_queue_counts_quotas(storage):
    quota = Quota("key_1", daily=2, monthly=10)
    await storage.queue.enqueue(message("a@example.org"), quota)
    await storage.queue.enqueue(message("b@example.org"), quota)
    assert await storage.queue.key_usage("key_1") == (2, 2)
    with pytest.raises(QuotaExhausted):
        await storage.queue.check_quota(quota)
    with pytest.raises(QuotaExhausted):
        await storage.queue.enqueue(message("c@example.org"), quota)
    assert await storage.queue.key_usage("key_1") == (2, 2)


async def test_a_batch_counts_against_a_quota_all_or_nothing(storage):
    q = storage.queue
    quota = Quota("key_1", daily=5, monthly=4)
    with pytest.raises(QuotaExhausted) as refused:
        await q.enqueue_many([message(f"{n}@example.org") for n in range(5)], quota)  # the month's 4 is less
    assert refused.value.period == "m"
    assert await q.key_usage("key_1") == (0, 0) and not any((await q.summary()).by_state.values())
    first = message("a@example.org")
    await q.enqueue_many([first, message("b@example.org"), message("c@example.org")], quota)
    assert await q.key_usage("key_1") == (3, 3)
    with pytest.raises(
        (StoreError, sqlite3.IntegrityError, psycopg.Error)
    ):  # not queued (the id is taken): not counted
        await q.enqueue_many([message("d@example.org", id=first.id)], quota)
    assert await q.key_usage("key_1") == (3, 3)
    await q.enqueue(message("e@example.org"), quota)
    with pytest.raises(QuotaExhausted):
        await q.enqueue(message("f@example.org"), quota)
    assert await q.key_usage("key_1") == (4, 4)


async def test_queue_sandbox(storage):
    m = message("a@example.org", sandbox=True)
    await storage.queue.enqueue(m)
    assert [r.id for r in await storage.queue.sandbox_messages(None, 10)] == [m.id]
    found = await storage.queue.sandbox_message(m.id)
    assert found is not None and found[0].id == m.id and found[1] == m.raw


async def test_queue_returned_mail(storage):
    m = message("gone@example.org")
    await storage.queue.enqueue(m)
    (target,) = await storage.queue.targets_by_header_id("m1@example.com")
    assert (target.message_id, target.address) == (m.id, "gone@example.org")
    assert await storage.queue.returned_target(m.id, target.recipient_id) == target
    bounce = NewBounce("gone@example.org", HARD, "dsn", 550, "5.1.1 unknown", message_id=m.id)
    bounce_id, suppression = await storage.queue.record_returned(bounce, target)
    assert suppression is not None and suppression.address == "gone@example.org"
    assert (await storage.suppressions.bounce(bounce_id)).recipient == "gone@example.org"


async def test_a_message_id_no_line_could_hold_is_not_kept(storage):
    """Folded, a Message-ID can be longer than any line: 4 KB of emoji went into PostgreSQL's Message-ID
    index and the enqueue failed (every SMTP attempt got 451). Such an id is no id: not kept, not matched."""
    emoji = "".join(chr(0x1F300 + (i * 7919) % 1000) for i in range(1000))
    folded = "Message-ID: x" + "".join("\r\n " + emoji[i : i + 240] for i in range(0, 1000, 240))
    m = NewMessage("a@example.com", ("a@example.org",), (folded + "\r\nSubject: t\r\n\r\nbody\r\n").encode(), "smtp")
    assert m.header_id is None
    await storage.queue.enqueue(m)
    longest = "x" * 990 + "@example"  # 998 octets: still an id
    kept = NewMessage("a@example.com", ("a@example.org",), f"Message-ID: <{longest}>\r\n\r\nbody\r\n".encode(), "smtp")
    assert kept.header_id == longest
    await storage.queue.enqueue(kept)
    assert [t.message_id for t in await storage.queue.targets_by_header_id(longest)] == [kept.id]


# -- events -----------------------------------------------------------------------------------------------


async def test_events_are_listed_counted_and_pruned(storage):
    m = message("a@example.org", tags=("news",))
    await storage.queue.enqueue(m)
    (event,) = await storage.events.message_events(m.id)
    assert (event.type, event.recipient, event.tags) == ("queued", "a@example.org", ["news"])
    assert await storage.events.event(event.id) == event
    assert await storage.events.query(EventFilter(tag="news"), 10) == [event]
    assert await storage.events.query(EventFilter(types=("delivered",)), 10) == []
    assert (await storage.events.event_totals())["queued"] == 1
    now = storage.clock.now()
    assert sum(n for _, kind, n in await storage.events.event_counts(now - 3600, now + 3600, 3600, None)) >= 1
    assert [(k, n) for _, k, n in await storage.events.event_counts(now - 3600, now + 3600, 3600, "news")] == [
        ("queued", 1)
    ]  # counted per tag too: the tags are there when the event is
    assert (await storage.events.bounce_stats(now - 3600, now + 1)).total == 0
    assert await storage.events.prune_history(now - 1, now - 1) == (0, 0)
    assert (await storage.events.prune_history(now + 1, now + 1))[0] >= 1
    assert await storage.events.message_events(m.id) == []


# -- suppressions ------------------------------------------------------------------------------------------


async def test_concurrent_suppression_lookups_each_get_their_own_answer(storage):
    """As at the RCPT of many sessions at once (on PostgreSQL they share queries)."""
    await storage.suppressions.suppress(["a@example.org", "c@example.org"], "manual", "")
    asks = [["A@example.org"], ["b@example.org"], ["c@example.org", "a@example.org"], [], ["a@example.org"]] * 20
    answers = await asyncio.gather(*(storage.suppressions.suppressed(a) for a in asks))
    for asked, answer in zip(asks, answers, strict=True):
        assert sorted(answer) == sorted(a for a in asked if a.lower() in {"a@example.org", "c@example.org"})
        assert all(s.address == a.lower() for a, s in answer.items())


async def test_suppressions_add_look_up_list_remove(storage):
    s = storage.suppressions
    (added,) = await s.suppress(["Someone@Example.org"], "manual", "by hand")
    assert added.address == "someone@example.org"
    assert set(await s.suppressed(["someone@example.org", "other@example.org"])) == {"someone@example.org"}
    assert (await s.suppression("someone@example.org")).reason == "manual"
    assert [x.address for x in await s.query(SuppressionFilter(reason="manual"), 10)] == ["someone@example.org"]
    assert await s.unsuppress("someone@example.org") is True
    assert await s.suppressed(["someone@example.org"]) == {}
    await s.suppress(["later@example.org"], expires_at=storage.clock.now() + 60)
    storage.clock.advance(61)
    assert await s.suppression("later@example.org") is None


async def test_bounces_suppress_unless_allowed(storage):
    s = storage.suppressions
    assert await s.allow("example.net", "partner") == "example.net"
    assert [entry for entry, _, _ in await s.allowlist()] == ["example.net"]
    bounce_id, suppression = await s.record_bounce(NewBounce("x@example.org", HARD, "smtp", 550, "5.1.1 no"))
    assert suppression is not None and suppression.bounce_id == bounce_id
    _, allowed = await s.record_bounce(NewBounce("y@example.net", HARD, "smtp", 550, "5.1.1 no"))
    assert allowed is None
    assert [b.recipient for b in await s.bounces(BounceFilter(kind="hard"), 10)] == ["y@example.net", "x@example.org"]
    assert (await s.bounce(bounce_id)).code == 550
    assert await s.disallow("example.net") is True
    assert (await s.reclassify_suppressions(apply=False)).lifts == []


# -- keys and credentials ----------------------------------------------------------------------------------


async def test_keys_store_a_digest_and_authenticate_by_secret(storage):
    key, secret = await create_api_key(storage.keys, storage.clock, "ci", ("send",), daily_quota=5)
    assert digest(secret) != secret
    assert await storage.keys.authenticate(secret) == key
    assert await storage.keys.authenticate(secret + "x") is None
    stored = await storage.keys.api_key(key.id)  # its last use may be written by now (in the background)
    assert stored is not None and dataclasses.replace(stored, last_used_at=None) == key
    assert [k.id for k in await storage.keys.list_api_keys()] == [key.id]
    assert await storage.keys.revoke_api_key(key.id) is True
    assert await storage.keys.revoke_api_key(key.id) is False
    assert await storage.keys.authenticate(secret) is None


async def test_credentials_store_a_password_hash(storage):
    cred, password = await creds.create_smtp_credential(
        storage.credentials, storage.clock, allowed_from=("example.com",)
    )
    found = await storage.credentials.smtp_credential_for_login(cred.username)
    assert found is not None and found[0] == cred and found[1] != password
    assert creds.verify_password(found[1], password)
    assert await storage.credentials.smtp_credential(cred.id) == cred
    assert [c.id for c in await storage.credentials.list_smtp_credentials()] == [cred.id]
    storage.credentials.touch_smtp_credential(cred.id)  # never waited for
    assert await storage.credentials.revoke_smtp_credential(cred.id) is True
    assert await storage.credentials.smtp_credential_for_login(cred.username) is None


# -- domains, templates ------------------------------------------------------------------------------------


async def test_domains_and_their_keys(storage):
    d = storage.domains
    now = storage.clock.now()
    created = await d.create_domain("dom_1", "example.com", DkimKey("s1", "active", now, "v=DKIM1; p=A", b"sealed-1"))
    assert (await d.domain("dom_1")) == created == (await d.domain("example.com"))
    await d.add_dkim_key("dom_1", DkimKey("s2", "pending", now, "v=DKIM1; p=B", b"sealed-2"))
    assert [k.selector for k in (await d.domain("dom_1")).keys] == ["s1", "s2"]
    assert (await d.domain("dom_1")).keys[1] == DkimKey("s2", "pending", now, "v=DKIM1; p=B", b"sealed-2")
    # A key made before keys moved into the store: in its file until it is sealed into its row, once.
    await d.add_dkim_key("dom_1", DkimKey("s0", "retired", now, path=Path("/k/s0.pem")))
    assert (await d.domain("dom_1")).keys[2] == DkimKey("s0", "retired", now, path=Path("/k/s0.pem"))
    assert await d.store_file_key("dom_1", "s0", b"sealed-0", "v=DKIM1; p=C") is True
    assert await d.store_file_key("dom_1", "s0", b"again", "v=DKIM1; p=D") is False
    moved = (await d.domain("dom_1")).keys[2]
    assert (moved.sealed, moved.public_key, moved.path) == (b"sealed-0", "v=DKIM1; p=C", Path("/k/s0.pem"))
    checked = await d.record_domain_checks(created, {"dkim": {"status": "ok", "hint": ""}}, None)
    assert checked.checks == {"dkim": {"status": "ok", "hint": ""}} and checked.checked_at == now
    assert [x.name for x in await d.list_all()] == ["example.com"]
    assert (await d.delete_domain("example.com")).id == "dom_1"
    assert await d.list_all() == []


async def test_domains_page_by_name(storage):
    d = storage.domains
    now = storage.clock.now()
    for i, name in enumerate(["c.example", "a.example", "b.example"]):
        await d.create_domain(f"dom_{i}", name, DkimKey("s1", "active", now, "v=DKIM1; p=A", b"sealed"))
    first = await d.domain_page(2)
    assert [x.name for x in first] == ["a.example", "b.example"] and first[0].keys[0].selector == "s1"
    assert [x.name for x in await d.domain_page(2, after=first[-1].name)] == ["c.example"]
    assert await d.domain_page(2, after="c.example") == []


async def test_a_secret_is_stored_once_the_first_value_wins(storage):
    assert await storage.secrets.secret("verp") is None
    assert await storage.secrets.add_secret("verp", b"\x01first") == b"\x01first"
    assert await storage.secrets.add_secret("verp", b"\x01second") == b"\x01first"
    assert await storage.secrets.secret("verp") == b"\x01first"


async def test_templates_keep_versions(storage):
    t = storage.templates
    created = await t.create_template("tpl_1", "welcome", "Hi {{name}}", "<p>hi</p>", None)
    assert created.version == 1 and await t.template("tpl_1") == created
    updated = await t.update_template("tpl_1", None, "Hello {{name}}", None, "hello")
    assert updated is not None and updated.version == 2 and updated.name == "welcome"
    assert (await t.template_version("tpl_1", 1)).subject == "Hi {{name}}"
    assert [v.version for v in await t.template_versions("tpl_1")] == [2, 1]
    assert [x.id for x in await t.list_all()] == ["tpl_1"]
    assert await t.delete_template("tpl_1") is True
    assert await t.template("tpl_1") is None


async def test_templates_page_by_name_and_versions_page_newest_first(storage):
    t = storage.templates
    for ident, name in [("tpl_c", "b"), ("tpl_a", "a"), ("tpl_d", "c"), ("tpl_b", "b")]:
        await t.create_template(ident, name, "s", None, "x")
    first = await t.template_page(3)
    assert [x.id for x in first] == ["tpl_a", "tpl_b", "tpl_c"], "by name, then id"
    assert [x.id for x in await t.template_page(3, after=first[-1].id)] == ["tpl_d"]
    assert [x.id for x in await t.template_page(2, after="tpl_b")] == ["tpl_c", "tpl_d"], "a tie on the name"
    assert await t.template_page(3, after="tpl_d") == []
    for n in range(2, 6):
        await t.update_template("tpl_a", None, f"s{n}", None, "x")
    assert [v.version for v in await t.template_versions("tpl_a", limit=2)] == [5, 4]
    assert [v.version for v in await t.template_versions("tpl_a", limit=2, before=4)] == [3, 2]
    assert [v.version for v in await t.template_versions("tpl_a", before=2)] == [1]


# -- webhooks -----------------------------------------------------------------------------------------------


async def test_webhooks_queue_a_delivery_per_event_and_log_attempts(storage):
    w = storage.webhooks
    now = storage.clock.now()
    hook = Webhook("wh_1", "https://hooks.example/x", ["queued"], True, "", "whsec_x", now, now)
    await w.create_webhook(hook)
    assert await w.webhook("wh_1") == hook and await w.list_all() == [hook]
    await storage.queue.enqueue(message("a@example.org"))
    assert await w.webhook_backlog() == {"wh_1": 1}
    (due,) = await w.claim_webhook_deliveries("wh_1", 10, lease=30)
    assert due.payload is None and due.event is not None, "no payload yet: the event comes with the claim"
    assert (due.event.id, due.event.type, due.event.recipient) == (due.event_id, "queued", "a@example.org")
    assert await w.claim_webhook_deliveries("wh_1", 10, lease=30) == []
    outcome = AttemptOutcome(due.id, "wh_1", due.event_id, 200, None, 12.0, None, b"{}")
    assert await w.record_webhook_attempts([outcome], disable_after=86400) == {}
    assert [a.status for a in await w.webhook_attempts("wh_1", 10)] == [200]
    assert await w.webhook_backlog() == {}
    assert (await w.update_webhook("wh_1", {"enabled": False})).enabled is False
    assert await w.delete_webhook("wh_1") is True


async def test_webhook_attempts_recorded_together(storage):
    """One endpoint's claim, several outcomes in one write: a retried one keeps the payload it was sent
    with (and comes back with it, without its event), the endpoint is failing only while none succeeds,
    and one failing past ``disable_after`` is disabled."""
    w = storage.webhooks
    clock = storage.clock
    now = clock.now()
    await w.create_webhook(Webhook("wh_1", "https://hooks.example/x", ["queued"], True, "", "whsec_x", now, now))
    await w.create_webhook(Webhook("wh_2", "https://other.example/y", ["queued"], True, "", "whsec_y", now, now))
    for address in ("a@example.org", "b@example.org", "c@example.org"):
        await storage.queue.enqueue(message(address))
    mine = await w.claim_webhook_deliveries("wh_1", 10, lease=30)
    assert len(mine) == 3 and {d.webhook_id for d in mine} == {"wh_1"}, "only the endpoint asked for"
    first, second, third = mine
    outcomes = [
        AttemptOutcome(first.id, "wh_1", first.event_id, 200, None, 1.0, None, b"one"),
        AttemptOutcome(second.id, "wh_1", second.event_id, 503, "HTTP 503", 1.0, now + 5, b"two"),
        AttemptOutcome(third.id, "wh_1", third.event_id, 400, "HTTP 400", 1.0, None, b"three"),  # given up
    ]
    assert await w.record_webhook_attempts(outcomes, disable_after=3600) == {}
    assert (await w.webhook("wh_1")).failing_since is None, "one of them succeeded"
    assert await w.webhook_backlog() == {"wh_1": 1, "wh_2": 3}
    clock.advance(5)
    (retry,) = await w.claim_webhook_deliveries("wh_1", 10, lease=30)
    assert (retry.id, retry.payload, retry.event, retry.attempts) == (second.id, b"two", None, 1)
    failed = AttemptOutcome(retry.id, "wh_1", retry.event_id, 500, "HTTP 500", 1.0, clock.now() + 30, b"other")
    await w.record_webhook_attempts([failed], disable_after=3600)
    assert (await w.webhook("wh_1")).failing_since == clock.now()
    clock.advance(3600)
    (retry,) = await w.claim_webhook_deliveries("wh_1", 10, lease=30)
    assert retry.payload == b"two", "the payload of the first failed attempt, byte for byte"
    failed = AttemptOutcome(retry.id, "wh_1", retry.event_id, 500, "HTTP 500", 1.0, clock.now() + 60, b"two")
    disabled = await w.record_webhook_attempts([failed], disable_after=3600)
    assert list(disabled) == ["wh_1"] and "last error: HTTP 500" in disabled["wh_1"]
    assert not (await w.webhook("wh_1")).enabled
    assert [a.status for a in await w.webhook_attempts("wh_1", 10)] == [500, 500, 400, 503, 200]


async def test_webhooks_list_the_deliveries_a_messages_events_caused(storage):
    w = storage.webhooks
    now = storage.clock.now()
    await w.create_webhook(Webhook("wh_1", "https://hooks.example/x", [], True, "", "whsec_x", now, now))
    await w.create_webhook(Webhook("wh_2", "https://other.example/y", ["queued"], True, "", "whsec_y", now, now))
    await w.create_webhook(Webhook("wh_3", "https://none.example/z", ["delivered"], True, "", "whsec_z", now, now))
    first, second = message("a@example.org"), message("b@example.org")
    await storage.queue.enqueue(first)
    await storage.queue.enqueue(second)
    deliveries = await w.message_deliveries(first.id, 10)
    assert [(d.webhook_id, d.url, d.state, d.attempts) for d in deliveries] == [
        ("wh_1", "https://hooks.example/x", "pending", 0),
        ("wh_2", "https://other.example/y", "pending", 0),
    ]
    (event,) = await storage.events.message_events(first.id)
    assert {d.event_id for d in deliveries} == {event.id}
    failed = AttemptOutcome(deliveries[0].id, "wh_1", event.id, 500, "HTTP 500", 3.0, now + 60)
    await w.record_webhook_attempts([failed], disable_after=86400)
    retried = (await w.message_deliveries(first.id, 1))[0]
    assert (retried.state, retried.attempts, retried.last_status, retried.last_error) == ("pending", 1, 500, "HTTP 500")
    assert len(await w.message_deliveries(first.id, 1)) == 1, "at most the limit"
    assert len(await w.message_deliveries(second.id, 10)) == 2, "each message its own"
    assert await w.message_deliveries("no-such-message", 10) == []


# -- bodies ------------------------------------------------------------------------------------------------


async def test_bodies_read_back_the_raw_message_as_stored(storage):
    m = message("a@example.org")
    await storage.queue.enqueue(m)
    assert await storage.bodies.raw_message(m.id) == m.raw
    assert await storage.bodies.raw_message("no-such-message") is None
    await storage.queue.cancel_message(m.id)  # nothing will send it any more
    await storage.events.prune_history(0, storage.clock.now() + 1)  # [retention] bodies: the body goes
    assert await storage.bodies.raw_message(m.id) is None


# -- idempotency -----------------------------------------------------------------------------------------------


async def test_idempotency_claim_complete_replay_forget(storage):
    i = storage.idempotency
    assert await i.claim_idempotency_key("key_1", "k", "hash", 3600) is None
    held = await i.claim_idempotency_key("key_1", "k", "hash", 3600)
    assert held is not None and held.state == "pending"
    assert await i.renew_idempotency_key("key_1", "k") is True
    await i.complete_idempotency_key(Completion("key_1", "k", 202, '{"id": "m"}', None))
    record = await i.idempotency_record("key_1", "k")
    assert record is not None and (record.state, record.status) == ("done", 202)
    assert await i.forget_idempotency_record("key_1", "k") == (record, True)
    assert await i.idempotency_record("key_1", "k") is None
    assert await i.claim_idempotency_key("key_1", "k2", "hash", 60) is None
    await i.release_idempotency_key("key_1", "k2")
    assert await i.idempotency_record("key_1", "k2") is None


async def test_idempotency_lease_releases_a_failed_request(storage):
    i = storage.idempotency
    assert await i.claim_idempotency_key("key_1", "k", "hash", 3600) is None
    with pytest.raises(RuntimeError):
        async with i.idempotency_lease("key_1", "k"):
            raise RuntimeError("the request failed")
    assert await i.idempotency_record("key_1", "k") is None
    with pytest.raises(ClaimLost):  # no claim held: nothing to complete
        await i.complete_idempotency_key(Completion("key_1", "done", 200, "{}", None))
    storage.clock.advance(10**6)
    assert await i.prune() >= 0


# -- nodes -------------------------------------------------------------------------------------------------------


async def test_nodes_register_beat_and_stop(storage):
    n = storage.nodes
    await n.register(NodeInfo("node-a", "mx1.example", "0.1.0", 100))
    storage.clock.advance(5)
    await n.register(NodeInfo("node-b", "mx2.example", "0.1.0", 200))
    assert [node.id for node in await n.list_all()] == ["node-b", "node-a"]
    storage.clock.advance(30)
    assert await n.beat("node-a") is True
    a, b = sorted(await n.list_all(), key=lambda node: node.id)
    now = storage.clock.now()
    assert (a.heartbeat_at, a.status(now, 90), b.status(now, 20)) == (now, UP, SILENT)
    await n.stop("node-b")
    b = next(node for node in await n.list_all() if node.id == "node-b")
    assert b.status(now, 90) == STOPPED and b.stopped_at == now
    assert await n.beat("node-b") is False, "a stopped node does not beat until it registers again"
    assert await n.beat("node-unknown") is False
    await n.register(NodeInfo("node-b", "mx2.example", "0.2.0", 300))  # restarted, upgraded
    b = next(node for node in await n.list_all() if node.id == "node-b")
    assert (b.version, b.pid, b.stopped_at, b.started_at) == ("0.2.0", 300, None, now)


# -- per-site limits -------------------------------------------------------------------------------------


async def test_site_slots_are_leased_up_to_the_limit_released_renewed_and_expire(storage):
    sites = storage.sites
    assert [await sites.acquire_slot("mx.example", 2, owner) for owner in ("a", "b", "c")] == [0, 1, None]
    await sites.release_slot("mx.example", 0, "a")
    assert await sites.acquire_slot("mx.example", 2, "c") == 0
    assert await sites.acquire_slot("other.example", 2, "c") == 0  # per site
    storage.clock.advance(40)
    assert await sites.renew_slots("c", [("mx.example", 0), ("other.example", 0), ("mx.example", 1)]) == 2
    storage.clock.advance(40)  # b's lease (60 s) has run out, c's was renewed
    assert await sites.acquire_slot("mx.example", 2, "d") == 1
    assert await sites.release_all_slots("c") == 2
    assert await sites.acquire_slot("mx.example", 2, "d") == 0


async def test_site_pushback_keeps_the_lower_share_until_it_ends(storage):
    sites, now = storage.sites, storage.clock.now()
    await sites.record_pushback("mx.example", 0.5, now + 300)
    await sites.record_pushback("mx.example", 0.25, now + 200)  # lower share, earlier end: share wins, end stays
    await sites.record_pushback("mx.example", 0.5, now + 250)
    assert await sites.pushbacks() == {"mx.example": (0.25, now + 300)}
    storage.clock.advance(301)
    assert await sites.pushbacks() == {}
    await sites.record_pushback("mx.example", 0.5, storage.clock.now() + 300)  # an ended one is replaced
    assert (await sites.pushbacks())["mx.example"][0] == 0.5


async def test_last_errors_are_the_newest_deferral_of_each_domain_still_waiting(storage):
    q = storage.queue
    m = message("a@slow.example", "b@slow.example", "c@fine.example", "d@gone.example")
    await q.enqueue(m)
    (leased,) = await q.claim_due(10, "node-a", lease=60)
    a, b, c, d = leased.recipients
    later = storage.clock.now() + 300

    def deferred(r, code: int, text: str) -> AttemptResult:
        return AttemptResult(r.id, m.id, r.address, State.DEFERRED, EventKind.DEFERRED, later, code, text)

    await q.record_attempts([deferred(a, 451, "4.3.0 older"), deferred(d, 421, "4.4.2 gone")])
    storage.clock.advance(5)
    await q.record_attempts(
        [
            deferred(b, 452, "4.2.2 mailbox full <x>"),
            AttemptResult(c.id, m.id, c.address, State.DELIVERED, EventKind.DELIVERED, None, 250, "ok"),
        ]
    )
    await q.purge(Selection(domain="gone.example"))  # no longer waiting: no last error
    errors = await storage.sites.last_errors(["SLOW.example", "fine.example", "gone.example", "none.example"])
    assert list(errors) == ["slow.example"]
    assert (errors["slow.example"].code, errors["slow.example"].response) == (452, "4.2.2 mailbox full <x>")
    assert errors["slow.example"].at == storage.clock.now()
    assert await storage.sites.last_errors([]) == {}


# -- dashboard operators -----------------------------------------------------------------------------------


async def test_operators_are_unique_by_name_and_keep_only_a_password_hash(storage):
    ops = storage.operators
    made = await accounts.create_operator(ops, storage.clock, "alice", "admin", "correct horse battery")
    assert made is not None
    alice, password = made
    assert password == "correct horse battery"
    assert await accounts.create_operator(ops, storage.clock, "alice", "viewer") is None, "the name is taken"
    viewer, generated = await accounts.create_operator(ops, storage.clock, "bob", "viewer")
    assert len(generated) == 32
    assert await ops.operator("alice") == alice and alice.is_admin and not viewer.is_admin
    found = await ops.operator_for_login("alice")
    assert found is not None and found[0] == alice and password not in found[1]
    assert await accounts.check_login(ops, "alice", password) == alice
    assert await accounts.check_login(ops, "alice", generated) is None
    assert await accounts.check_login(ops, "nobody", password) is None
    assert [o.name for o in await ops.list_operators()] == ["alice", "bob"]


async def test_operator_sessions_expire_on_the_store_clock_and_end_on_logout(storage):
    ops = storage.operators
    alice, _ = await accounts.create_operator(ops, storage.clock, "alice", "admin")
    await ops.start_session(alice.id, "digest-1", "csrf-1", lifetime=3600)
    session = await ops.session("digest-1")
    assert session is not None and session.operator.name == "alice" and session.csrf_token == "csrf-1"
    assert session.expires_at == session.created_at + 3600
    assert (await ops.operator("alice")).last_login_at == storage.clock.now()
    assert await ops.session("digest-2") is None
    storage.clock.advance(120)
    assert (await ops.session("digest-1")).last_seen_at == storage.clock.now()
    assert (await ops.session("digest-1")).last_seen_at == storage.clock.now(), "as stored"
    assert await ops.end_session("digest-1") is True
    assert await ops.session("digest-1") is None
    await ops.start_session(alice.id, "digest-3", "csrf-3", lifetime=60)
    storage.clock.advance(60)
    assert await ops.session("digest-3") is None, "expired"
    assert await ops.prune_sessions() == 1


async def test_removing_an_operator_or_changing_its_password_ends_its_sessions(storage):
    ops = storage.operators
    alice, _ = await accounts.create_operator(ops, storage.clock, "alice", "admin")
    bob, _ = await accounts.create_operator(ops, storage.clock, "bob", "viewer")
    await ops.start_session(alice.id, "a1", "c", lifetime=3600)
    await ops.start_session(bob.id, "b1", "c", lifetime=3600)
    new = await accounts.change_password(ops, "alice", "a new password here")
    assert new == "a new password here"
    assert await ops.session("a1") is None and await ops.session("b1") is not None
    assert await accounts.check_login(ops, "alice", new) is not None
    assert await accounts.change_password(ops, "nobody") is None
    assert await ops.remove_operator("bob") is True
    assert await ops.session("b1") is None and await ops.operator("bob") is None
    assert await ops.remove_operator("bob") is False
