"""Request rate limits per API key: fixed windows aligned to the clock. Pure; state is in memory.

With ``[server] acceptors = N`` each process enforces its share (1/N) of a
key's limit; the kernel spreads connections about evenly between them.
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
