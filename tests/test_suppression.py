"""Bounces during delivery feed the suppression list; suppressed addresses are not mailed."""

from __future__ import annotations

import pytest

from relay.bounces.classify import Classification, Kind
from relay.delivery.mx import Router
from relay.message import normalize_address
from relay.store.suppressions import BounceFilter, NewBounce, SuppressionFilter
from relay.suppression import SuppressionPolicy
from tests.test_delivery_shaping import engine_for, queue


@pytest.fixture
def suppression_policy():
    return SuppressionPolicy(soft_bounce_limit=2)


@pytest.mark.parametrize(
    ("given", "normal"),
    [
        ("Bob@Example.COM", "bob@example.com"),
        ("<x@Bücher.example>", "x@xn--bcher-kva.example"),
        ("x@example.com.", "x@example.com"),
        ("not-an-address", "not-an-address"),
    ],
)
def test_addresses_are_normalised(given, normal):
    assert normalize_address(given) == normal


async def test_a_hard_bounce_suppresses_and_the_next_message_is_not_sent(store, sink):
    engine = engine_for(store, Router(("127.0.0.1", sink.port), 25, None))
    first = await queue(store, "permfail@one.example", "ok@one.example")
    await engine.run_once()
    states = {s.address: s.state for s in await store.queue.message_status(first.id)}
    assert states == {"permfail@one.example": "bounced", "ok@one.example": "delivered"}
    (bounce,) = await store.suppressions.bounces(BounceFilter(), 10)
    assert (bounce.recipient, bounce.kind, bounce.reason, bounce.code, bounce.status, bounce.source) == (
        "permfail@one.example",
        "hard",
        "user_unknown",
        550,
        "5.1.1",
        "smtp",
    )
    assert bounce.message_id == first.id and bounce.remote_mta == "127.0.0.1"
    s = await store.suppressions.suppression("PermFail@ONE.example")
    assert s is not None and s.reason == "hard_bounce" and s.bounce_id == bounce.id and s.expires_at is None

    sink.handler.received.clear()
    second = await queue(store, "PERMFAIL@one.example", "ok@one.example")
    await engine.run_once()
    states = {s.address: s.state for s in await store.queue.message_status(second.id)}
    assert states == {"PERMFAIL@one.example": "suppressed", "ok@one.example": "delivered"}
    assert [r.rcpt_tos for r in sink.handler.received] == [["ok@one.example"]]
    await engine.stop(1)


async def test_a_blocked_message_does_not_suppress_the_address(store, sink):
    sink.handler.rcpt_reply = "554 5.7.1 Service unavailable; Client host [127.0.0.1] blocked using zen.spamhaus.org"
    engine = engine_for(store, Router(("127.0.0.1", sink.port), 25, None))
    await queue(store, "someone@one.example")
    await engine.run_once()
    (bounce,) = await store.suppressions.bounces(BounceFilter(), 10)
    assert (bounce.kind, bounce.reason) == ("block", "blocklisted")
    assert await store.suppressions.suppression("someone@one.example") is None
    await engine.stop(1)


async def test_a_temporary_reply_that_says_user_unknown_does_not_suppress(store, sink):
    """A 4xx is temporary whatever it says (issue 18). Before: suppressed as hard_bounce while deferred."""
    sink.handler.rcpt_reply = "450 4.1.1 <gone@one.example>: Recipient address rejected: User unknown"
    engine = engine_for(store, Router(("127.0.0.1", sink.port), 25, None))
    m = await queue(store, "gone@one.example")
    await engine.run_once()
    (s,) = await store.queue.message_status(m.id)
    assert s.state == "deferred"
    assert await store.suppressions.suppression("gone@one.example") is None
    store.clock.advance(61)
    sink.handler.rcpt_reply = None
    await engine.run_once()  # the retry goes out and is delivered
    (s,) = await store.queue.message_status(m.id)
    assert s.state == "delivered" and len(sink.handler.received) == 1
    await engine.stop(1)


async def test_a_refusal_after_the_data_is_not_hard_even_when_it_says_user_unknown(store, sink):
    """The RCPT was accepted, so the mailbox exists: a 5xx to the end of the data is content filtering.
    Before: kind hard, reason user_unknown, and the address suppressed until removed."""
    sink.handler.data_reply = "550 5.1.1 <alive@one.example>: Recipient address rejected: User unknown"
    engine = engine_for(store, Router(("127.0.0.1", sink.port), 25, None))
    m = await queue(store, "alive@one.example")
    await engine.run_once()
    (s,) = await store.queue.message_status(m.id)
    assert s.state == "bounced"
    (bounce,) = await store.suppressions.bounces(BounceFilter(), 10)
    assert (bounce.kind, bounce.reason, bounce.status) == ("soft", "filtered", "5.1.1")
    assert await store.suppressions.suppression("alive@one.example") is None
    await engine.stop(1)


async def test_the_same_reply_at_rcpt_is_hard(store, sink):
    sink.handler.rcpt_reply = "550 5.1.1 <dead@one.example>: Recipient address rejected: User unknown"
    engine = engine_for(store, Router(("127.0.0.1", sink.port), 25, None))
    await queue(store, "dead@one.example")
    await engine.run_once()
    (bounce,) = await store.suppressions.bounces(BounceFilter(), 10)
    assert (bounce.kind, bounce.reason) == ("hard", "user_unknown")
    assert (await store.suppressions.suppression("dead@one.example")).reason == "hard_bounce"
    await engine.stop(1)


async def test_repeated_soft_bounces_suppress_for_a_while(store):
    soft = Classification(Kind.SOFT, "mailbox_full", "5.2.2")
    _, first = await store.suppressions.record_bounce(
        NewBounce("full@example.org", soft, "smtp", 552, "5.2.2 mailbox full")
    )
    assert first is None
    _, second = await store.suppressions.record_bounce(
        NewBounce("full@example.org", soft, "smtp", 552, "5.2.2 mailbox full")
    )
    assert second is not None and second.reason == "soft_bounces"
    assert second.expires_at == store.clock.now() + SuppressionPolicy().soft_bounce_suppression
    store.clock.advance(8 * 86400)
    assert await store.suppressions.suppression("full@example.org") is None  # expired
    assert await store.suppressions.suppressed(["full@example.org"]) == {}


async def test_a_temporary_entry_never_shortens_a_permanent_one(store):
    hard = Classification(Kind.HARD, "user_unknown", "5.1.1")
    soft = Classification(Kind.SOFT, "mailbox_full", "5.2.2")
    await store.suppressions.record_bounce(NewBounce("x@example.org", hard, "smtp", 550))
    for _ in range(3):
        await store.suppressions.record_bounce(NewBounce("x@example.org", soft, "smtp", 552))
    s = await store.suppressions.suppression("x@example.org")
    assert s.reason == "hard_bounce" and s.expires_at is None


async def test_the_allowlist_bypasses_suppression(store):
    hard = Classification(Kind.HARD, "user_unknown", "5.1.1")
    await store.suppressions.suppress(["vip@example.org", "other@partner.example"], detail="test")
    assert set(await store.suppressions.suppressed(["vip@example.org", "other@partner.example"])) == {
        "vip@example.org",
        "other@partner.example",
    }
    assert await store.suppressions.allow("VIP@example.org") == "vip@example.org"
    await store.suppressions.allow("Partner.Example")
    assert await store.suppressions.suppressed(["vip@example.org", "other@partner.example"]) == {}
    _, s = await store.suppressions.record_bounce(NewBounce("new@partner.example", hard, "smtp", 550))
    assert s is None  # allowlisted: a bounce is logged, nothing suppressed
    assert await store.suppressions.disallow("partner.example")
    assert set(await store.suppressions.suppressed(["other@partner.example"])) == {"other@partner.example"}


async def test_listing_filters_and_pages(store):
    await store.suppressions.suppress([f"user{i}@example.org" for i in range(5)], reason="manual")
    hard = Classification(Kind.HARD, "user_unknown", "5.1.1")
    await store.suppressions.record_bounce(NewBounce("bounced@example.org", hard, "smtp", 550))
    page = await store.suppressions.query(SuppressionFilter(reason="manual"), 3)
    assert [s.address for s in page] == ["user0@example.org", "user1@example.org", "user2@example.org"]
    rest = await store.suppressions.query(SuppressionFilter(reason="manual", after=page[-1].address), 3)
    assert [s.address for s in rest] == ["user3@example.org", "user4@example.org"]
    assert [s.address for s in await store.suppressions.query(SuppressionFilter(search="bounced"), 10)] == [
        "bounced@example.org"
    ]
    assert await store.suppressions.unsuppress("USER0@example.org")
    assert not await store.suppressions.unsuppress("user0@example.org")
