"""The storage boundary, PostgreSQL edition: :class:`PgStore`, the same repositories over a shared database."""

from __future__ import annotations

from relay.clock import Clock
from relay.store.postgres.db import POOL_SIZE, PgDatabase
from relay.store.repositories import SqlStore
from relay.suppression import SuppressionPolicy


class PgStore(SqlStore):
    """:class:`relay.store.protocols.Storage` over one PostgreSQL database, which several nodes may share."""

    backend = "postgresql"

    def __init__(
        self,
        url: str,
        clock: Clock,
        suppression_policy: SuppressionPolicy | None = None,
        redact_subjects: bool = False,
        pool_size: int = POOL_SIZE,
        statement_timeout: float = 0.0,
    ) -> None:
        super().__init__(PgDatabase(url, pool_size, statement_timeout), clock, suppression_policy, redact_subjects)
