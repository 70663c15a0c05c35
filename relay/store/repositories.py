"""The repositories of a SQL database, bundled: :class:`SqlStore` provides :class:`relay.store.protocols.Storage`.

The repositories (``relay.store.*.Sql*``) keep their SQL in functions of a connection that SQLite and
PostgreSQL both run (:mod:`relay.store.dialect`), so one bundle serves both backends: ``Store`` opens
it over a SQLite file, ``PgStore`` over a PostgreSQL database.
"""

from __future__ import annotations

from relay.clock import Clock
from relay.store.bodies import SqlBodies
from relay.store.credentials import SqlCredentials
from relay.store.dialect import SqlDatabase
from relay.store.domains import SqlDomains
from relay.store.events import SqlEvents
from relay.store.idempotency import SqlIdempotency
from relay.store.keys import SqlKeys
from relay.store.lastuse import LastUse
from relay.store.nodes import SqlNodes
from relay.store.operators import SqlOperators
from relay.store.queue import SqlQueue
from relay.store.ratecounters import SqlRateCounters
from relay.store.secrets import SqlSecrets
from relay.store.sites import SqlSites
from relay.store.suppressions import SqlSuppressions
from relay.store.templates import SqlTemplates
from relay.store.webhooks import SqlWebhooks
from relay.suppression import SuppressionPolicy


class SqlStore:
    """Every repository over one database (``db``) and the clock they read the time from."""

    backend = "sql"

    def __init__(
        self,
        db: SqlDatabase,
        clock: Clock,
        suppression_policy: SuppressionPolicy | None = None,
        redact_subjects: bool = False,
    ) -> None:
        self.db = db
        self.clock = clock
        policy = suppression_policy or SuppressionPolicy()
        self._last_use = LastUse(db)
        self.queue = SqlQueue(db, clock, policy, redact_subjects)
        self.events = SqlEvents(db)
        self.suppressions = SqlSuppressions(db, clock, policy)
        self.keys = SqlKeys(db, clock, self._last_use)
        self.credentials = SqlCredentials(db, clock, self._last_use)
        self.domains = SqlDomains(db, clock)
        self.templates = SqlTemplates(db, clock)
        self.webhooks = SqlWebhooks(db, clock)
        self.idempotency = SqlIdempotency(db, clock)
        self.nodes = SqlNodes(db, clock)
        self.sites = SqlSites(db, clock)
        self.rate_counters = SqlRateCounters(db)
        self.secrets = SqlSecrets(db, clock)
        self.operators = SqlOperators(db, clock)
        self.bodies = SqlBodies(db)

    async def close(self) -> None:
        """Wait for last-use writes still running, finish every queued write, close the database."""
        await self._last_use.drain()
        await self.db.close()
