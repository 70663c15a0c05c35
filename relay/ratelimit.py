"""Rate primitives, pure: the caller passes the time in, and the state is in memory.

- ``RateLimiter`` answers "may this request proceed?" for the HTTP API: a
  fixed window per API key, aligned to the wall clock (``X-RateLimit-*`` and
  ``Retry-After`` come from its ``Decision``). With ``[server] acceptors = N``
  each process enforces its share (1/N) of a key's limit; the kernel spreads
  connections about evenly between them.
- ``TokenBucket`` answers "how long until the next one may go?" for outbound
  pacing: the delivery engine's ``max_rate`` per destination and the webhook
  sender's ``max_rate`` per endpoint. It reads a monotonic time, and never
  refuses: the caller sleeps for the wait it returns.
"""

from __future__ import annotations

import dataclasses
import math

from relay.config import Rate


@dataclasses.dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset_at: float  # unix seconds when the window ends
    retry_after: int  # seconds; 0 when allowed

    def headers(self) -> dict[str, str]:
        headers = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(math.ceil(self.reset_at)),
        }
        if not self.allowed:
            headers["Retry-After"] = str(self.retry_after)
        return headers


class RateLimiter:
    def __init__(self, share: float = 1.0) -> None:
        self.share = share
        self._windows: dict[str, tuple[float, int]] = {}  # key id → (window start, count)

    def hit(self, key_id: str, rate: Rate, now: float) -> Decision:
        """Count one request for ``key_id`` at ``now`` and say whether it may proceed."""
        limit = max(1, math.floor(rate.limit * self.share))
        start = now - (now % rate.period)
        window_start, count = self._windows.get(key_id, (start, 0))
        if window_start != start:
            count = 0
        reset_at = start + rate.period
        if count >= limit:
            return Decision(False, rate.limit, 0, reset_at, max(1, math.ceil(reset_at - now)))
        count += 1
        self._windows[key_id] = (start, count)
        remaining = max(0, rate.limit - math.ceil(count / self.share))
        return Decision(True, rate.limit, remaining, reset_at, 0)


class TokenBucket:
    """Paces messages to ``rate``: bursts of about a second's worth, then one token per 1/rate seconds.

    ``reserve`` takes a token and says how long to wait for it; tokens may go
    negative, so concurrent callers queue up behind each other fairly.
    """

    def __init__(self, rate: Rate, now: float) -> None:
        self.per_second = rate.limit / rate.period
        self.burst = max(1.0, min(float(rate.limit), self.per_second))
        self.tokens = self.burst
        self.updated = now
        self.factor = 1.0  # lowered while the receiver pushes back

    def reserve(self, now: float) -> float:
        speed = self.per_second * self.factor
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * speed)
        self.updated = now
        self.tokens -= 1.0
        return 0.0 if self.tokens >= 0 else -self.tokens / speed
