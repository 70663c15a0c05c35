"""When to try again: a schedule of delays with jitter, receivers' hints, and expiry. Pure.

``[delivery] retry_schedule = ["1m", "5m", "10m", "20m", "40m", "1h"]``: the
delay after the first failure, the second, ...; the last one repeats. A
receiver that says "try again in 10 minutes" is taken at its word. After
``max_age`` in the queue the recipient fails as expired (4.4.7).
"""

from __future__ import annotations

import dataclasses
import random
import re

DEFAULT_SCHEDULE = (60.0, 300.0, 600.0, 1200.0, 2400.0, 3600.0)
MAX_HINT = 86400.0  # a receiver's hint is capped at a day

_HINT = re.compile(
    r"\b(?:try|retry|come back)(?:\s+again)?\s+(?:in|after)\s+(\d+)\s*"
    r"(seconds?|secs?|s|minutes?|mins?|m|hours?|hrs?|h)\b",
    re.IGNORECASE,
)
_UNIT = {"s": 1.0, "m": 60.0, "h": 3600.0}


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    schedule: tuple[float, ...] = DEFAULT_SCHEDULE  # seconds; the last repeats
    max_age: float = 5 * 86400.0  # give up once a message has been queued this long
    jitter: float = 0.1  # up to +10%, so a restart does not retry everything at once


def delay_for_attempt(policy: RetryPolicy, attempts: int) -> float:
    """Delay after ``attempts`` failed attempts (1 → the first entry of the schedule)."""
    if attempts < 1:
        return 0.0
    return policy.schedule[min(attempts, len(policy.schedule)) - 1]


def retry_hint(text: str) -> float | None:
    """Seconds a receiver asked us to wait ("try again in 5 minutes"), if it said so."""
    m = _HINT.search(text)
    if m is None:
        return None
    unit = m.group(2)[0].lower()
    return min(float(m.group(1)) * _UNIT[unit], MAX_HINT)


def next_attempt_at(
    policy: RetryPolicy, attempts: int, queued_at: float, now: float, rng: random.Random, hint: float | None = None
) -> float | None:
    """The time of the next attempt after ``attempts`` failures, or None to give up (expired)."""
    if now - queued_at >= policy.max_age:
        return None
    if hint is not None:
        delay = hint
    else:
        delay = delay_for_attempt(policy, attempts)
        delay += delay * policy.jitter * rng.random()
    # One last attempt at the end of the lifetime rather than none at all.
    return min(now + delay, queued_at + policy.max_age)
