from __future__ import annotations

import random

import pytest

from relay.delivery.mx import order_mx
from relay.delivery.outcome import Reply, Verdict, classify
from relay.delivery.retry import RetryPolicy, delay_for_attempt, next_attempt_at, retry_hint

POLICY = RetryPolicy(schedule=(60, 300, 600, 1200, 2400, 3600), max_age=5 * 86400, jitter=0.0)


def test_the_schedule_is_followed_and_its_last_step_repeats():
    assert [delay_for_attempt(POLICY, n) for n in range(1, 9)] == [60, 300, 600, 1200, 2400, 3600, 3600, 3600]
    assert delay_for_attempt(POLICY, 0) == 0
    assert delay_for_attempt(POLICY, 10_000) == 3600


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("4.7.0 Try again in 10 minutes", 600),
        ("421 4.7.28 please retry in 30 seconds", 30),
        ("450 Greylisted, try again after 5 min", 300),
        ("451 temporarily deferred, come back in 2 hours", 7200),
        ("451 try again in 900 hours", 86400),
        ("451 4.3.0 try again later", None),
        ("452 mailbox full", None),
    ],
)
def test_receiver_hints(text, seconds):
    assert retry_hint(text) == seconds


def test_a_hint_replaces_the_schedule():
    rng = random.Random(0)
    assert next_attempt_at(POLICY, 1, 0.0, 100.0, rng, hint=900) == 1000.0


def test_jitter_only_adds_and_stays_within_ten_percent():
    policy = RetryPolicy(schedule=(300,), max_age=86400, jitter=0.1)
    rng = random.Random(7)
    delays = [next_attempt_at(policy, 1, 0.0, 100.0, rng) - 100.0 for _ in range(200)]
    assert min(delays) >= 300 and max(delays) <= 330
    assert len(set(delays)) > 100


def test_gives_up_after_the_queue_lifetime():
    rng = random.Random(1)
    queued = 1000.0
    assert next_attempt_at(POLICY, 3, queued, queued + POLICY.max_age - 1, rng) == queued + POLICY.max_age
    assert next_attempt_at(POLICY, 3, queued, queued + POLICY.max_age, rng) is None


@pytest.mark.parametrize(
    ("reply", "verdict"),
    [
        (Reply(250, "2.0.0 ok"), Verdict.DELIVERED),
        (Reply(251, "will forward"), Verdict.DELIVERED),
        (Reply(421, "4.7.0 try later"), Verdict.DEFERRED),
        (Reply(451, "4.3.0 busy"), Verdict.DEFERRED),
        (Reply(452, "4.2.2 mailbox full"), Verdict.DEFERRED),
        (Reply(550, "5.1.1 no such user"), Verdict.BOUNCED),
        (Reply(554, "5.7.1 rejected"), Verdict.BOUNCED),
        (Reply(None, "connection refused"), Verdict.DEFERRED),
        (Reply(354, "odd"), Verdict.DEFERRED),
    ],
)
def test_classify(reply, verdict):
    assert classify(reply) is verdict


def test_mx_order_is_by_preference_with_ties_shuffled():
    records = [(20, "b.example"), (10, "a1.example"), (10, "a2.example"), (30, "c.example")]
    orders = {tuple(order_mx(records, random.Random(seed))) for seed in range(20)}
    assert orders == {
        ("a1.example", "a2.example", "b.example", "c.example"),
        ("a2.example", "a1.example", "b.example", "c.example"),
    }
