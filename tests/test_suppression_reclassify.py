"""`relay suppressions reclassify`: suppressions the old hard rule made, read again (issue 18 item 2)."""

from __future__ import annotations

import json

import pytest

from relay.bounces.classify import Classification, Kind
from relay.clock import FakeClock
from relay.message import NewMessage
from relay.store import Store
from relay.store.events import EventFilter
from relay.store.suppressions import BounceFilter, NewBounce
from relay.suppression import SuppressionPolicy
from tests.bounce_samples import SAMPLES
from tests.conftest import config_dict, run_cli, wait_for_states, write_toml


def _raw(name: str) -> str:
    return next(s for s in SAMPLES if s.name == name).raw.decode()


OLD = [  # (recipient, kind, reason, source, code, diagnostic, sample whose report was kept)
    (
        "disabled@gmail.example",
        "hard",
        "mailbox_disabled",
        "smtp",
        550,
        "5.2.1 The email account that you tried to reach is disabled.",
        None,
    ),
    (
        "late@example.org",
        "hard",
        "user_unknown",
        "smtp",
        450,
        "4.1.1 <late@example.org>: Recipient address rejected: User unknown",
        None,
    ),
    ("bob@example.net", "hard", "mailbox_disabled", "dsn", None, "", "dsn-rfc822-headers-only"),  # parsed again
    ("dead@example.org", "hard", "user_unknown", "smtp", 550, "5.1.1 <dead@example.org>: User unknown", None),
    ("bob@yahoo.com", "hard", "user_unknown", "dsn", 554, "", "yahoo-user-unknown"),
]


async def _old_suppressions(store: Store) -> None:
    """Bounces stored as hard by the old rule: three wrongly, two rightly; and one manual entry."""
    for n, (address, kind, reason, source, code, diagnostic, sample) in enumerate(OLD):
        c = Classification(Kind(kind), reason)
        report = _raw(sample) if sample else None
        await store.suppressions.record_bounce(NewBounce(address, c, source, code, diagnostic, None, f"m{n}", report))
    await store.suppressions.suppress(
        ["manual@example.org"], reason="hard_bounce", detail="added by hand"
    )  # no bounce: kept


@pytest.fixture
async def old_suppressions(store):
    """The shared store, with suppressions made by older rules."""
    await _old_suppressions(store)


WRONG = {"disabled@gmail.example", "late@example.org", "bob@example.net"}
RIGHT = {"dead@example.org", "bob@yahoo.com", "manual@example.org"}


@pytest.mark.usefixtures("old_suppressions")
async def test_a_dry_run_lists_and_changes_nothing(store):
    result = await store.suppressions.reclassify_suppressions(apply=False)
    assert not result.applied and result.checked == 5
    assert {x.address: (x.was, x.kind, x.reason) for x in result.lifts} == {
        "disabled@gmail.example": ("hard/mailbox_disabled", "soft", "mailbox_disabled"),
        "late@example.org": ("hard/user_unknown", "soft", "user_unknown"),
        "bob@example.net": ("hard/mailbox_disabled", "soft", "mailbox_disabled"),
    }
    assert set(await store.suppressions.suppressed(WRONG | RIGHT)) == WRONG | RIGHT
    assert await store.events.query(EventFilter(types=("unsuppressed",)), 10) == []


@pytest.mark.usefixtures("old_suppressions")
async def test_apply_lifts_the_wrong_ones_with_an_event_each(store):
    result = await store.suppressions.reclassify_suppressions(apply=True)
    assert result.applied and {x.address for x in result.lifts} == WRONG
    assert set(await store.suppressions.suppressed(WRONG | RIGHT)) == RIGHT
    events = await store.events.query(EventFilter(types=("unsuppressed",)), 10)
    assert {e.recipient for e in events} == WRONG
    (e,) = [e for e in events if e.recipient == "bob@example.net"]
    assert (
        e.message_id == "m2"
        and e.details["was"] == "hard/mailbox_disabled"
        and e.details["reason"] == ("mailbox_disabled")
    )
    kinds = {b.recipient: b.kind for b in await store.suppressions.bounces(BounceFilter(), 10)}
    assert kinds["bob@example.net"] == "soft" and kinds["dead@example.org"] == "hard"
    again = await store.suppressions.reclassify_suppressions(apply=True)  # nothing left to lift
    assert again.lifts == [] and again.checked == 2


def test_the_command_dry_run_then_apply(tmp_path):
    import asyncio

    from relay.app import open_store
    from relay.clock import SystemClock
    from relay.config import load

    config_path = write_toml(tmp_path / "relay.toml", config_dict(tmp_path / "data"))

    async def seed() -> None:
        store = open_store(load(config_path), SystemClock())
        try:
            await _old_suppressions(store)
        finally:
            await store.close()

    asyncio.run(seed())
    dry = run_cli("suppressions", "reclassify", "--json", config=config_path)
    assert dry.returncode == 0, dry.stderr
    out = json.loads(dry.stdout)
    assert out["applied"] is False and out["checked"] == 5 and {x["address"] for x in out["would_lift"]} == WRONG
    text = run_cli("suppressions", "reclassify", config=config_path)
    assert "3 of 5 hard-bounce suppressions would be lifted (dry run" in text.stdout
    assert run_cli("suppressions", "show", "late@example.org", config=config_path).returncode == 0  # still there
    applied = run_cli("suppressions", "reclassify", "--apply", config=config_path)
    assert applied.returncode == 0 and "3 of 5 hard-bounce suppressions lifted" in applied.stdout
    assert "<late@example.org> hard/user_unknown -> soft/user_unknown" in applied.stdout
    assert run_cli("suppressions", "show", "late@example.org", config=config_path).returncode == 1
    assert run_cli("suppressions", "show", "dead@example.org", config=config_path).returncode == 0


async def test_the_stored_phase_of_a_delivery_refusal_is_read_again(store_factory):
    """A 5xx "user unknown" answered to the end of the data says the mailbox exists (content filtering);
    since migration 11 the phase is stored with the bounce, so reclassify can tell it from one at RCPT."""
    s = store_factory(FakeClock(), SuppressionPolicy())
    try:
        hard = Classification(Kind.HARD, "user_unknown")
        text = "5.1.1 <x@example.org>: Recipient address rejected: User unknown"
        for address, phase in (
            ("after@example.org", "after-data"),
            ("rcpt@example.org", "rcpt"),
            ("old@example.org", None),
        ):
            await s.suppressions.record_bounce(
                NewBounce(address, hard, "smtp", 550, text, None, "m", None, phase=phase)
            )
        result = await s.suppressions.reclassify_suppressions(apply=True)
        assert [(x.address, x.kind) for x in result.lifts] == [("after@example.org", "soft")]
        assert set(await s.suppressions.suppressed(["rcpt@example.org", "old@example.org"])) == {
            "rcpt@example.org",
            "old@example.org",
        }
    finally:
        await s.close()


async def test_a_delivery_refusal_records_its_phase(relay_factory, sink):
    sink.handler.data_reply = "550 5.7.1 Message content rejected"
    relay = await relay_factory(delivery={"smarthost": sink.address})
    message = NewMessage("a@example.com", ("x@example.org",), b"From: a@example.com\r\n\r\nhi\r\n", "smtp")
    await relay.store.queue.enqueue(message)
    relay.engine.wake()
    await wait_for_states(relay.store, message.id, ["bounced"])
    (bounce,) = await relay.store.suppressions.bounces(BounceFilter(), 10)
    assert bounce.phase == "after-data" and bounce.code == 550
