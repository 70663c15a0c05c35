"""Last-use times for API keys and SMTP credentials: written at most once a minute per key, never waited for."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from relay.store.dialect import Connection, SqlDatabase

log = logging.getLogger(__name__)

TOUCH_INTERVAL = 60.0  # seconds between last_used_at writes for one key or credential


class LastUse:
    """Shared by the key and credential repositories; :meth:`drain` waits for writes still running."""

    def __init__(self, db: SqlDatabase) -> None:
        self.db = db
        self._touched: dict[str, float] = {}
        self._background: set[asyncio.Task[None]] = set()

    def due(self, ident: str, now: float) -> bool:
        """Whether ``ident``'s last use should be written now (and, if so, note that it is)."""
        if now - self._touched.get(ident, 0.0) <= TOUCH_INTERVAL:
            return False
        self._touched[ident] = now
        return True

    def write(self, fn: Callable[[Connection], object]) -> None:
        """A best-effort write nobody waits for: a failure (a full disk) is logged, not raised."""

        async def run() -> None:
            try:
                await self.db.write(fn)
            except Exception as exc:  # noqa: BLE001 - best effort: any failure is logged, none raised
                log.warning("could not record a last-use time: %s", exc)

        task = asyncio.get_running_loop().create_task(run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def drain(self) -> None:
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
