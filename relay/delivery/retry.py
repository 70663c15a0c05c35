"""When to try again: exponential backoff with jitter, capped, within the queue lifetime. Pure."""

from __future__ import annotations

import dataclasses
import random


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    initial: float  # delay after the first failed attempt, seconds
    maximum: float  # longest delay between attempts
    lifetime: float  # give up once a message has been queued this long
    jitter: float = 0.1  # up to +10%, so a restart does not retry everything at once


def delay_for_attempt(policy: RetryPolicy, attempts: int) -> float:
    """Delay after ``attempts`` failed attempts (1 → initial, doubling up to maximum)."""
    if attempts < 1:
        return 0.0
    return min(policy.initial * 2 ** min(attempts - 1, 32), policy.maximum)


def next_attempt_at(
    policy: RetryPolicy, attempts: int, queued_at: float, now: float, rng: random.Random
) -> float | None:
    """The time of the next attempt after ``attempts`` failures, or None to give up."""
    if now - queued_at >= policy.lifetime:
        return None
    delay = delay_for_attempt(policy, attempts)
    delay += delay * policy.jitter * rng.random()
    # One last attempt at the end of the lifetime rather than none at all.
    return min(now + delay, queued_at + policy.lifetime)
