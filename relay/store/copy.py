"""``relay store copy``: a whole relay from one store to another (SQLite to PostgreSQL, or back), keeping ids.

Which tables: every table of the SQLite schema this relay knows (:data:`relay.store.schema.MIGRATIONS`,
applied to a database in memory and read from ``sqlite_master``), parents before the tables whose
foreign keys point at them; the columns and primary keys come from the same place. A table added by a
later migration is copied without a change here (the PostgreSQL twin has the same names).

How: the target is migrated first; the source must be at this relay's schema version. The source is
read in ONE read transaction (one snapshot of the whole relay) and streamed, row by row from a cursor
(a server-side one on PostgreSQL), into batches of at most ``batch_rows`` rows and BATCH_BYTES bytes,
each inserted in a transaction of its own with ``ON CONFLICT DO NOTHING``: a row already in the target
(same key) is skipped, so a copy that stopped half way is finished by running it again. (Skipped, not
updated: a relay run on the source between the two runs would leave rows copied before it stale, so
relay stays stopped until the copy is done.) Memory stays bounded by one batch whatever the size of
the message bodies.

On the way, leases are released as :func:`relay.store.queue.lifecycle.release_leases` releases them:
a recipient in state ``sending`` is ``queued`` (no attempt yet) or ``deferred``, due now, with no lease
owner; a pending webhook delivery is due now (a claimed one has its ``next_attempt_at`` pushed a lease
ahead, which cannot be told from a retry's; sending a retry early is harmless, waiting out a dead
node's lease is not).

Triggers do not fire: ``event_counts`` and ``webhook_deliveries`` are copied as they are, so events
must not count themselves again or queue new deliveries. A table's triggers are switched off INSIDE
each of its batch transactions and switched on again before the commit (PostgreSQL: ``ALTER TABLE
... DISABLE/ENABLE TRIGGER USER``, which the tables' owner may do, where ``session_replication_role``
needs a superuser; SQLite, which cannot disable a trigger: ``DROP TRIGGER`` and the same ``CREATE
TRIGGER`` again). Both databases' DDL is transactional, so nobody ever sees the triggers off, and an
interrupted batch rolls back with them on.

Refusals (:class:`CopyRefused`): the same store on both sides; a source at another schema version; a
source a relay node is still running on (heartbeat recent, not stopped); a target holding rows the
source does not have (another relay's data), unless ``force``. The relay must be stopped: the copy
does not hold SQLite's write lock for its whole duration, so a running relay's writes could be missed.

Modules: this one runs the copy; :mod:`relay.store.copy_tables` knows the tables and the leases,
:mod:`relay.store.copy_sides` the two databases.

Afterwards, each PostgreSQL identity sequence is set past the largest id copied (``setval``), and every
table is counted on both sides (:class:`Copied`).
"""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import ExitStack, closing

import psycopg

from relay.config import StoreUrl
from relay.errors import RelayError, StoreError, StoreUnavailable
from relay.store.copy_sides import Side, open_side
from relay.store.copy_tables import BATCH_ROWS, Row, Table, reference_tables, released

__all__ = ["BATCH_ROWS", "Copied", "CopyRefused", "TableCount", "TableProgress", "copy_store"]

BATCH_BYTES = 32 * 1024 * 1024  # and at most about this much data (message bodies are up to tens of MB)


class CopyRefused(RelayError):
    """The copy will not start: the message says why and what to do."""


@dataclasses.dataclass(frozen=True)
class TableProgress:
    """Where the copy of one table stands: rows read from the source so far, out of ``total``."""

    table: str
    done: int
    total: int
    finished: bool


Progress = Callable[[TableProgress], None]


@dataclasses.dataclass(frozen=True)
class TableCount:
    """One table after the copy: rows in the source and the target, rows inserted by this run, and rows
    the target had that the source has not (copied with ``force`` only)."""

    table: str
    source: int
    target: int
    copied: int
    foreign: int = 0

    @property
    def ok(self) -> bool:
        return self.target == self.source + self.foreign


@dataclasses.dataclass(frozen=True)
class Copied:
    tables: list[TableCount]

    @property
    def ok(self) -> bool:
        return all(t.ok for t in self.tables)


def copy_store(
    source_url: StoreUrl,
    target_url: StoreUrl,
    now: float,
    *,
    force: bool = False,
    batch_rows: int = BATCH_ROWS,
    progress: Progress | None = None,
) -> Copied:
    """Copy every table from ``source_url`` into ``target_url`` (see the module docstring); the counts.

    CopyRefused when it should not start; StoreError when a database fails on the way.
    """
    if _same(source_url, target_url):
        raise CopyRefused("the source and the target are the same store")
    tables = reference_tables()
    if source_url.path is not None and not source_url.path.exists():
        raise CopyRefused(f"{source_url.path}: no such file")
    try:
        with ExitStack() as stack:
            source = open_side(source_url, target=False)
            stack.callback(source.close)
            _check_version(source)  # before the target is created or migrated
            target = open_side(target_url, target=True)
            stack.callback(target.close)
            return _copy(source, target, tables, now, force, batch_rows, progress or (lambda p: None))
    except sqlite3.Error as exc:
        from relay.store.db import translate as translate_sqlite

        raise _store_error(translate_sqlite(exc)) from exc
    except psycopg.Error as exc:
        from relay.store.postgres.db import translate as translate_pg

        raise _store_error(translate_pg(exc)) from exc


def _store_error(exc: BaseException) -> StoreError:
    return exc if isinstance(exc, StoreError) else StoreUnavailable(f"{type(exc).__name__}: {exc}")


def _same(a: StoreUrl, b: StoreUrl) -> bool:
    if a.backend != b.backend:
        return False
    if a.path is not None and b.path is not None:
        return a.path.resolve() == b.path.resolve()
    return a.url == b.url


def _copy(
    source: Side, target: Side, tables: list[Table], now: float, force: bool, batch_rows: int, progress: Progress
) -> Copied:
    with source.snapshot():
        _check_not_running(source, now, force)
        foreign = {t.name: _foreign_rows(source, target, t) for t in tables}
        if any(foreign.values()) and not force:
            raise CopyRefused(_foreign_message(target, foreign))
        counts = []
        for table in tables:
            total = source.count(table)
            copied = _copy_table(source, target, table, total, now, batch_rows, progress)
            counts.append((table, total, copied))
        target.finish(tables)
        return Copied(
            [TableCount(t.name, total, target.count(t), copied, foreign[t.name]) for t, total, copied in counts]
        )


def _check_version(source: Side) -> None:
    version, latest = source.version(), source.latest()
    if version < latest:
        raise CopyRefused(
            f"{source.name}: schema at version {version}, this relay's is {latest}: run relay migrate on it first"
        )
    if version > latest:
        raise CopyRefused(f"{source.name}: schema at version {version}, newer than this relay knows ({latest})")


def _check_not_running(source: Side, now: float, force: bool) -> None:
    running = source.running_nodes(now)
    if running and not force:
        nodes = ", ".join(f"{node_id} on {host} (heartbeat {now - at:.0f}s ago)" for node_id, host, at in running)
        raise CopyRefused(
            f"{source.name}: a relay is running on it ({nodes}): stop relay first (--force to copy all the same)"
        )


def _foreign_rows(source: Side, target: Side, table: Table) -> int:
    """Rows of ``table`` in the target whose key the source does not have."""
    if target.count(table) == 0:
        return 0
    return sum(len(keys) - source.present(table, keys) for keys in target.keys(table))


def _foreign_message(target: Side, foreign: dict[str, int]) -> str:
    found = ", ".join(f"{table} {n}" for table, n in foreign.items() if n)
    return (
        f"{target.name} has rows the source does not ({found}): another relay's data?"
        " (--force to copy into it all the same)"
    )


def _copy_table(
    source: Side, target: Side, table: Table, total: int, now: float, batch_rows: int, progress: Progress
) -> int:
    done = copied = 0
    progress(TableProgress(table.name, 0, total, finished=False))
    with closing(source.rows(table)) as rows:
        for batch in _batches(released(table, rows, now), batch_rows):
            copied += target.insert(table, batch)
            done += len(batch)
            progress(TableProgress(table.name, done, total, finished=False))
    progress(TableProgress(table.name, done, total, finished=True))
    return copied


def _batches(rows: Iterator[Row], batch_rows: int) -> Iterator[list[Row]]:
    """``rows`` in lists of at most ``batch_rows`` rows and about BATCH_BYTES bytes."""
    batch: list[Row] = []
    size = 0
    for row in rows:
        batch.append(row)
        size += sum(len(v) for v in row if isinstance(v, bytes | str))
        if len(batch) >= batch_rows or size >= BATCH_BYTES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch
