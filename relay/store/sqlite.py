"""The storage boundary, SQLite edition: :class:`Store` opens one file and holds a repository per concept.

Submission, delivery, the HTTP API and the CLI talk to these repositories (``store.queue``,
``store.suppressions``, …), typed against the Protocols in :mod:`relay.store.protocols`; none of them
write SQL. :class:`relay.store.postgres.PgStore` provides the same repositories over PostgreSQL.
"""

from __future__ import annotations

from pathlib import Path

from relay.clock import Clock
from relay.store.db import Database
from relay.store.repositories import SqlStore
from relay.suppression import SuppressionPolicy


class Store(SqlStore):
    """:class:`relay.store.protocols.Storage` over one SQLite file (its group-commit :class:`Database`)."""

    backend = "sqlite"

    def __init__(
        self,
        path: Path,
        clock: Clock,
        suppression_policy: SuppressionPolicy | None = None,
        redact_subjects: bool = False,
    ) -> None:
        super().__init__(Database(path), clock, suppression_policy, redact_subjects)
