"""A ceiling on message bodies held in memory by submissions in progress, SMTP and HTTP together.

Each submission takes the size of its body from the budget before (or while) reading it and gives
it back once the message is on disk or refused. One that does not fit waits a moment for others to
finish, then is told to come back (SMTP ``452 4.3.1``, HTTP ``503`` with ``Retry-After``). When
nothing is held, any one body fits, so a budget smaller than the largest message never blocks it.
"""

from __future__ import annotations

import asyncio

WAIT_SECONDS = 2.0  # how long a submission that does not fit waits for room
# What one byte of body costs in memory while it is handled, as measured (peak Python allocations per body byte):
SMTP_WEIGHT = 3  # the body as read, the body with relay's headers on top, the pieces it was read in
HTTP_WEIGHT = 8  # the JSON text, the decoded strings and attachments, the MIME message the email package builds


class InflightBudget:
    def __init__(self, limit: int, wait: float = WAIT_SECONDS) -> None:
        self.limit = limit
        self.wait = wait
        self.used = 0
        self.refused = 0  # submissions told to come back, for the log and tests
        self._waiters: list[asyncio.Future[None]] = []

    def try_take(self, size: int, holding: int = 0) -> bool:
        """Take ``size`` more bytes if they fit now (by a holder of ``holding`` bytes: alone, anything fits)."""
        if self.used > holding and self.used + size > self.limit:
            return False
        self.used += size
        return True

    async def take(self, size: int) -> bool:
        """Take ``size`` bytes, waiting up to ``wait`` seconds for room; False if there was none."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait
        while not self.try_take(size):
            left = deadline - loop.time()
            if left <= 0:
                self.refused += 1
                return False
            waiter = loop.create_future()
            self._waiters.append(waiter)
            try:
                # asyncio.wait, not wait_for: an SMTP command runs its first step outside any task
                # (relay.submission.server), where wait_for raises RuntimeError on Python 3.12+.
                await asyncio.wait((waiter,), timeout=left)
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
        return True

    def give_back(self, size: int) -> None:
        self.used = max(0, self.used - size)
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)


class Held:
    """The share of the budget one submission holds: ``weight`` times the body bytes it has in hand (what
    its handling costs in memory per byte of body), taken up front for a declared size and grown as the
    body arrives."""

    def __init__(self, budget: InflightBudget | None, weight: int = 1) -> None:
        self.budget = budget
        self.weight = weight
        self.size = 0  # taken from the budget

    async def take(self, body: int) -> bool:
        """Hold room for a body of ``body`` bytes, waiting a moment for it (False: none came)."""
        if self.budget is None:
            return True
        if not await self.budget.take(body * self.weight):
            return False
        self.size += body * self.weight
        return True

    def grow_to(self, body: int) -> bool:
        """Hold room for ``body`` bytes in all, if the budget has it now."""
        size = body * self.weight
        if size <= self.size or self.budget is None:
            return True
        if not self.budget.try_take(size - self.size, holding=self.size):
            return False
        self.size = size
        return True

    def release(self) -> None:
        if self.budget is not None and self.size:
            self.budget.give_back(self.size)
        self.size = 0
