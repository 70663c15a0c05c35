"""Backpressure: refuse new mail while the queue is too deep or the disk too full.

Checked on every submission against figures refreshed every couple of seconds
(a count on the due index and ``statvfs`` of the data directory), so the check
itself costs nothing per message.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from pathlib import Path

from relay.errors import Overloaded
from relay.store.protocols import QueueStore

log = logging.getLogger(__name__)

REFRESH_SECONDS = 2.0


class Capacity:
    def __init__(self, store: QueueStore, data_dir: Path, max_queue: int, min_free_disk: int) -> None:
        self.store = store
        self.data_dir = data_dir
        self.max_queue = max_queue
        self.min_free_disk = min_free_disk
        self.pending = 0
        self.free_disk = min_free_disk + 1
        self._task: asyncio.Task[None] | None = None

    def check(self) -> None:
        """Raise Overloaded when submission must wait."""
        if self.free_disk < self.min_free_disk:
            raise Overloaded(f"only {self.free_disk // 2**20} MB free in the data directory")
        if self.pending >= self.max_queue:
            raise Overloaded(f"the queue holds {self.pending} pending recipients (limit {self.max_queue})")

    async def refresh(self) -> None:
        self.pending = await self.store.pending_count()
        self.free_disk = shutil.disk_usage(self.data_dir).free

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="capacity")

    async def _run(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception:
                log.exception("could not refresh queue and disk figures")
            await asyncio.sleep(REFRESH_SECONDS)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
