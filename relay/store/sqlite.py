"""The storage boundary, SQLite edition: :class:`Store` opens one database and holds a repository per concept.

Submission, delivery, the HTTP API and the CLI talk to these repositories (``store.queue``,
``store.suppressions``, …), typed against the Protocols in :mod:`relay.store.protocols`; none of them
write SQL. A PostgreSQL store would provide the same Protocols.
"""

from __future__ import annotations

from pathlib import Path

from relay.clock import Clock
from relay.store.credentials import SqliteCredentials
from relay.store.db import Database
from relay.store.domains import SqliteDomains
from relay.store.events import SqliteEvents
from relay.store.idempotency import SqliteIdempotency
from relay.store.keys import SqliteKeys
from relay.store.lastuse import LastUse
from relay.store.nodes import SqliteNodes
from relay.store.queue import SqliteQueue
from relay.store.suppressions import SqliteSuppressions
from relay.store.templates import SqliteTemplates
from relay.store.webhooks import SqliteWebhooks
from relay.suppression import SuppressionPolicy


class Store:
    """:class:`relay.store.protocols.Storage` over one SQLite file (its group-commit :class:`Database`)."""

    def __init__(
        self,
        path: Path,
        clock: Clock,
        suppression_policy: SuppressionPolicy | None = None,
        redact_subjects: bool = False,
    ) -> None:
        self.db = Database(path)
        self.clock = clock
        policy = suppression_policy or SuppressionPolicy()
        self._last_use = LastUse(self.db)
        self.queue = SqliteQueue(self.db, clock, policy, redact_subjects)
        self.events = SqliteEvents(self.db)
        self.suppressions = SqliteSuppressions(self.db, clock, policy)
        self.keys = SqliteKeys(self.db, clock, self._last_use)
        self.credentials = SqliteCredentials(self.db, clock, self._last_use)
        self.domains = SqliteDomains(self.db, clock)
        self.templates = SqliteTemplates(self.db, clock)
        self.webhooks = SqliteWebhooks(self.db, clock)
        self.idempotency = SqliteIdempotency(self.db, clock)
        self.nodes = SqliteNodes(self.db, clock)

    async def close(self) -> None:
        """Wait for last-use writes still running, finish every queued write, close the database."""
        await self._last_use.drain()
        await self.db.close()
