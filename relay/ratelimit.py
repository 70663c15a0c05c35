"""Rate primitives: the caller passes the time in.

- A :class:`Limiter` answers "may this request proceed?" for the HTTP API (per API key) and SMTP (per
  credential): a fixed window per key, aligned to the wall clock (``X-RateLimit-*`` and ``Retry-After``
  come from its ``Decision``). Two of them, chosen from the store's backend in :func:`limiter_for`:
  ``RateLimiter`` counts in memory (SQLite: one machine; with ``[server] acceptors = N`` each process
  enforces its share (1/N) of a key's limit, the kernel spreading connections about evenly between
  them); ``SharedLimiter`` counts in the database (PostgreSQL: the limit holds exactly for every
  process of every node).
- ``TokenBucket`` answers "how long until the next one may go?" for outbound
  pacing: the delivery engine's ``max_rate`` per destination and the webhook
  sender's ``max_rate`` per endpoint. It reads a monotonic time, and never
  refuses: the caller sleeps for the wait it returns.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Protocol

from relay.config import Rate

if TYPE_CHECKING:
    from relay.store.protocols import RateCounters


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


def window_start(now: float, period: float) -> float:
    """The start of the fixed window ``now`` falls in (windows are aligned to the epoch)."""
    return now - (now % period)


def counted(rate: Rate, now: float, result: tuple[int, float] | None) -> Decision:
    """The decision for a hit counted in a shared window: ``result`` is (the count with this hit, the window's
    start), or None when the window was full (nothing counted)."""
    if result is None:
        reset_at = window_start(now, rate.period) + rate.period
        return Decision(False, rate.limit, 0, reset_at, max(1, math.ceil(reset_at - now)))
    count, start = result
    return Decision(True, rate.limit, max(0, rate.limit - count), start + rate.period, 0)


class Limiter(Protocol):
    async def hit(self, key_id: str, rate: Rate, now: float) -> Decision:
        """Count one request for ``key_id`` at ``now`` and say whether it may proceed."""
        ...


class RateLimiter:
    """Counts in this process's memory (its ``share`` of each limit)."""

    def __init__(self, share: float = 1.0) -> None:
        self.share = share
        self._windows: dict[str, tuple[float, int]] = {}  # key id → (window start, count)

    async def hit(self, key_id: str, rate: Rate, now: float) -> Decision:
        limit = max(1, math.floor(rate.limit * self.share))
        start = window_start(now, rate.period)
        counted_from, count = self._windows.get(key_id, (start, 0))
        if counted_from != start:
            count = 0
        reset_at = start + rate.period
        if count >= limit:
            return Decision(False, rate.limit, 0, reset_at, max(1, math.ceil(reset_at - now)))
        count += 1
        self._windows[key_id] = (start, count)
        remaining = max(0, rate.limit - math.ceil(count / self.share))
        return Decision(True, rate.limit, remaining, reset_at, 0)


class SharedLimiter:
    """Counts in the database's rate counters, under ``prefix:key id``: exact across processes and nodes."""

    def __init__(self, counters: RateCounters, prefix: str) -> None:
        self.counters = counters
        self.prefix = prefix

    async def hit(self, key_id: str, rate: Rate, now: float) -> Decision:
        return await self.counters.hit(f"{self.prefix}:{key_id}", rate, now)


def shared_counters(backend: str) -> bool:
    """Whether rate limits are counted in the database rather than in each process's memory.

    PostgreSQL: several nodes share it, and only the database sees every request. SQLite: one machine,
    where memory costs nothing, and a write per request would queue behind the messages' commits
    (measured: see the commit that made this choice); acceptor processes split the limit instead.
    """
    return backend == "postgresql"


def limiter_for(backend: str, counters: RateCounters, prefix: str, share: float = 1.0) -> Limiter:
    """The limiter for a store of ``backend``: in memory (with ``share``) or in the store's ``counters``."""
    if shared_counters(backend):
        return SharedLimiter(counters, prefix)
    return RateLimiter(share)


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
