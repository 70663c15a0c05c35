"""``relay store copy``: a whole relay from one store to another (SQLite to PostgreSQL, or back), keeping ids.

Which tables: every table of the SQLite schema this relay knows (:data:`relay.store.schema.MIGRATIONS`,
applied to a database in memory and read from ``sqlite_master``), parents before the tables whose
foreign keys point at them; the columns and primary keys come from the same place. A table added by a
later migration is copied without a change here (the PostgreSQL twin has the same names).

How: the target is migrated first; the source must be at this relay's schema version. The source is
read in ONE read transaction (one snapshot of the whole relay) and streamed, row by row from a cursor
(a server-side one on PostgreSQL), into batches of at most ``batch_rows`` rows and BATCH_BYTES bytes,
each inserted in a transaction of its own with ``ON CONFLICT DO NOTHING``: a row already in the target
(same key) is skipped, so a copy that stopped half way is finished by running it again. Memory stays
bounded by one batch whatever the size of the message bodies.

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

Afterwards, each PostgreSQL identity sequence is set past the largest id copied (``setval``), and every
table is counted on both sides (:class:`Copied`).
"""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Callable, Generator, Iterator
from contextlib import AbstractContextManager, closing, contextmanager
from typing import Any, Protocol

import psycopg

from relay.config import StoreUrl
from relay.errors import RelayError, StoreError, StoreUnavailable
from relay.nodes import HEARTBEAT_SECONDS, MISSED_BEATS

BATCH_ROWS = 1000  # rows per transaction
BATCH_BYTES = 32 * 1024 * 1024  # and at most about this much data (message bodies are up to tens of MB)
KEYS_PER_LOOKUP = 300  # keys looked up at once when checking the target for rows the source lacks
BLOB_FETCH = 8  # rows a server-side cursor fetches at once from a table with blobs

Row = tuple[Any, ...]


class CopyRefused(RelayError):
    """The copy will not start: the message says why and what to do."""


@dataclasses.dataclass(frozen=True)
class Table:
    """A table as the copy sees it: its columns, its primary key, and which columns hold bytes."""

    name: str
    columns: tuple[str, ...]
    key: tuple[str, ...]
    blobs: frozenset[str]

    @property
    def quoted(self) -> str:
        return _quote(self.name)


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


# -- the schema --------------------------------------------------------------


def reference_tables() -> list[Table]:
    """The tables of this relay's SQLite schema, parents first (see the module docstring)."""
    from relay.store import schema

    conn = sqlite3.connect(":memory:", isolation_level=None)
    try:
        schema.migrate(conn)
        return tables_of(conn)
    finally:
        conn.close()


def tables_of(conn: sqlite3.Connection) -> list[Table]:
    """The tables of a SQLite database, each after the tables its foreign keys refer to."""
    names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY rowid")]
    names = [n for n in names if not n.startswith("sqlite_")]
    parents = {n: {r[2] for r in conn.execute(f"PRAGMA foreign_key_list({_quote(n)})")} - {n} for n in names}
    return [_table(conn, name) for name in _parents_first(names, parents)]


def _table(conn: sqlite3.Connection, name: str) -> Table:
    info = conn.execute(f"PRAGMA table_info({_quote(name)})").fetchall()  # cid, name, type, notnull, default, pk
    key = tuple(c[1] for c in sorted((c for c in info if c[5] > 0), key=lambda c: c[5]))
    if not key:
        raise RuntimeError(f"table {name} has no primary key: a copy could not be run again safely")
    blobs = frozenset(c[1] for c in info if str(c[2]).upper() == "BLOB")
    return Table(name, tuple(c[1] for c in info), key, blobs)


def _parents_first(names: list[str], parents: dict[str, set[str]]) -> list[str]:
    ordered: list[str] = []
    placed: set[str] = set()

    def place(name: str, seen: tuple[str, ...]) -> None:
        if name in placed or name not in parents:
            return
        if name in seen:
            raise RuntimeError(f"foreign keys form a cycle through {name}")
        for parent in sorted(parents[name] & set(names), key=names.index):
            place(parent, (*seen, name))
        placed.add(name)
        ordered.append(name)

    for name in names:
        place(name, ())
    return ordered


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


# -- the two databases ---------------------------------------------------------


class Side(Protocol):
    """One end of the copy, SQLite's or PostgreSQL's."""

    name: str

    def version(self) -> int: ...

    def latest(self) -> int: ...

    def snapshot(self) -> AbstractContextManager[None]: ...

    def count(self, table: Table) -> int: ...

    def rows(self, table: Table) -> Generator[Row, None, None]: ...

    def keys(self, table: Table) -> Iterator[list[Row]]: ...

    def present(self, table: Table, keys: list[Row]) -> int: ...

    def insert(self, table: Table, rows: list[Row]) -> int: ...

    def running_nodes(self, now: float) -> list[Row]: ...

    def finish(self, tables: list[Table]) -> None: ...

    def close(self) -> None: ...


def _insert_sql(table: Table) -> str:
    columns = ", ".join(_quote(c) for c in table.columns)
    marks = ", ".join("?" for _ in table.columns)
    return f"INSERT INTO {table.quoted} ({columns}) VALUES ({marks}) ON CONFLICT DO NOTHING"


def _present_sql(table: Table, n: int) -> str:
    key = ", ".join(_quote(c) for c in table.key)
    one = "(" + ", ".join("?" for _ in table.key) + ")"
    return f"SELECT count(*) FROM {table.quoted} WHERE ({key}) IN (VALUES {', '.join([one] * n)})"


def _select_sql(table: Table, columns: tuple[str, ...]) -> str:
    order = ", ".join(_quote(c) for c in table.key)
    return f"SELECT {', '.join(_quote(c) for c in columns)} FROM {table.quoted} ORDER BY {order}"


def _number(row: Row | None) -> int:
    assert row is not None  # a count(*) always has its row
    return int(row[0])


_RUNNING_SQL = "SELECT id, host, heartbeat_at FROM nodes WHERE stopped_at IS NULL AND heartbeat_at > ?"


class SqliteSide:
    """A SQLite file: the source (read only, in one read transaction) or the target (migrated first)."""

    def __init__(self, where: StoreUrl, target: bool) -> None:
        from relay.store.db import connect
        from relay.store.migrations import migrate

        assert where.path is not None
        self.name = str(where.path)
        if target:
            migrate(where)
            self.conn = connect(where.path)
        elif not where.path.exists():
            raise CopyRefused(f"{where.path}: no such file")
        else:
            self.conn = sqlite3.connect(f"file:{where.path}?mode=ro", uri=True, isolation_level=None)
        self._triggers = {
            table: [
                (name, sql)
                for name, sql in self.conn.execute(
                    "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = ?", (table,)
                )
            ]
            for (table,) in self.conn.execute("SELECT DISTINCT tbl_name FROM sqlite_master WHERE type = 'trigger'")
        }

    def version(self) -> int:
        from relay.store.schema import schema_version

        return schema_version(self.conn)

    def latest(self) -> int:
        from relay.store import schema

        return len(schema.MIGRATIONS)

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        self.conn.execute("BEGIN")
        try:
            yield
        finally:
            self.conn.execute("ROLLBACK")

    def count(self, table: Table) -> int:
        return _number(self.conn.execute(f"SELECT count(*) FROM {table.quoted}").fetchone())

    def rows(self, table: Table) -> Generator[Row, None, None]:
        yield from self.conn.execute(_select_sql(table, table.columns))

    def keys(self, table: Table) -> Iterator[list[Row]]:
        cursor = self.conn.execute(_select_sql(table, table.key))
        while chunk := cursor.fetchmany(KEYS_PER_LOOKUP):
            yield [tuple(k) for k in chunk]

    def present(self, table: Table, keys: list[Row]) -> int:
        params = [v for k in keys for v in k]
        return _number(self.conn.execute(_present_sql(table, len(keys)), params).fetchone())

    def insert(self, table: Table, rows: list[Row]) -> int:
        triggers = self._triggers.get(table.name, [])
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            for name, _ in triggers:
                self.conn.execute(f"DROP TRIGGER {_quote(name)}")
            inserted = self.conn.executemany(_insert_sql(table), rows).rowcount
            for _, sql in triggers:
                self.conn.execute(sql)
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        return inserted

    def running_nodes(self, now: float) -> list[Row]:
        return [tuple(r) for r in self.conn.execute(_RUNNING_SQL, (now - MISSED_BEATS * HEARTBEAT_SECONDS,))]

    def finish(self, tables: list[Table]) -> None:
        """Nothing to do: an INTEGER PRIMARY KEY's next value is the largest one plus one."""

    def close(self) -> None:
        self.conn.close()


class PgSide:
    """A PostgreSQL database: the source (one REPEATABLE READ, READ ONLY transaction, server-side cursors)
    or the target (migrated first; a transaction per batch)."""

    def __init__(self, where: StoreUrl, target: bool) -> None:
        from relay.store.migrations import migrate
        from relay.store.postgres.connection import PgConnection
        from relay.store.postgres.db import CONNECT_TIMEOUT

        self.name = where.shown
        if target:
            migrate(where)
        self.raw = psycopg.connect(where.url, connect_timeout=CONNECT_TIMEOUT, autocommit=True)
        self.conn = PgConnection(self.raw)
        self._triggered = {
            r[0]
            for r in self.raw.execute(
                "SELECT DISTINCT c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid"
                " WHERE NOT t.tgisinternal AND c.relnamespace = current_schema()::regnamespace"
            )
        }

    def version(self) -> int:
        from relay.store.postgres.schema import schema_version

        return schema_version(self.raw)

    def latest(self) -> int:
        from relay.store.postgres import schema

        return len(schema.MIGRATIONS)

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        with self.raw.transaction(force_rollback=True):
            self.raw.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            yield

    def count(self, table: Table) -> int:
        return _number(self.conn.execute(f"SELECT count(*) FROM {table.quoted}").fetchone())

    def rows(self, table: Table) -> Generator[Row, None, None]:
        with self.raw.cursor(name=f"copy_{table.name}") as cursor:
            cursor.itersize = BLOB_FETCH if table.blobs else BATCH_ROWS
            cursor.execute(_select_sql(table, table.columns))
            yield from cursor

    def keys(self, table: Table) -> Iterator[list[Row]]:
        with self.raw.transaction(), self.raw.cursor(name=f"keys_{table.name}") as cursor:
            cursor.execute(_select_sql(table, table.key))
            while chunk := cursor.fetchmany(KEYS_PER_LOOKUP):
                yield [tuple(k) for k in chunk]

    def present(self, table: Table, keys: list[Row]) -> int:
        params = [v for k in keys for v in k]
        return _number(self.conn.execute(_present_sql(table, len(keys)), params).fetchone())

    def insert(self, table: Table, rows: list[Row]) -> int:
        rows = [_bytes_for_blobs(table, row) for row in rows] if table.blobs else rows
        with self.raw.transaction():
            if table.name in self._triggered:
                self.raw.execute(f"ALTER TABLE {table.quoted} DISABLE TRIGGER USER")
            inserted = self.conn.executemany(_insert_sql(table), rows).rowcount
            if table.name in self._triggered:
                self.raw.execute(f"ALTER TABLE {table.quoted} ENABLE TRIGGER USER")
        return max(inserted, 0)

    def running_nodes(self, now: float) -> list[Row]:
        return [tuple(r) for r in self.conn.execute(_RUNNING_SQL, (now - MISSED_BEATS * HEARTBEAT_SECONDS,))]

    def finish(self, tables: list[Table]) -> None:
        """Set every identity sequence past the largest id copied, so new rows do not collide."""
        identities = self.raw.execute(
            "SELECT table_name, column_name FROM information_schema.columns"
            " WHERE is_identity = 'YES' AND table_schema = current_schema()"
        ).fetchall()
        with self.raw.transaction():
            for table, column in identities:
                self.raw.execute(
                    f"SELECT setval(pg_get_serial_sequence(%s, %s), coalesce(max({_quote(column)}), 0) + 1, false)"
                    f" FROM {_quote(table)}",
                    (_quote(table), column),
                )

    def close(self) -> None:
        self.raw.close()


def _bytes_for_blobs(table: Table, row: Row) -> Row:
    """SQLite may hold text in a BLOB column; PostgreSQL's bytea wants bytes."""
    return tuple(
        v.encode() if isinstance(v, str) and c in table.blobs else v for c, v in zip(table.columns, row, strict=True)
    )


def open_side(where: StoreUrl, target: bool) -> Side:
    return PgSide(where, target) if where.backend == "postgresql" else SqliteSide(where, target)


# -- leases --------------------------------------------------------------------


def _release_recipient(row: dict[str, Any], now: float) -> None:
    if row["state"] == "sending":
        row.update(
            state="queued" if row["attempts"] == 0 else "deferred",
            next_attempt_at=now,
            lease_owner=None,
            lease_until=None,
            updated_at=now,
        )


def _release_webhook_delivery(row: dict[str, Any], now: float) -> None:
    if row["state"] == "pending":
        due = row["next_attempt_at"]
        row.update(next_attempt_at=now if due is None else min(due, now), lease_until=None)


RELEASES: dict[str, Callable[[dict[str, Any], float], None]] = {
    "recipients": _release_recipient,
    "webhook_deliveries": _release_webhook_delivery,
}


def released(table: Table, rows: Iterator[Row], now: float) -> Iterator[Row]:
    """The rows of ``table`` with their leases released (as they are for tables without leases)."""
    release = RELEASES.get(table.name)
    if release is None:
        yield from rows
        return
    for row in rows:
        values = dict(zip(table.columns, row, strict=True))
        release(values, now)
        yield tuple(values[c] for c in table.columns)


# -- the copy ------------------------------------------------------------------


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
    try:
        source = open_side(source_url, target=False)
        try:
            target = open_side(target_url, target=True)
            try:
                return _copy(source, target, tables, now, force, batch_rows, progress or (lambda p: None))
            finally:
                target.close()
        finally:
            source.close()
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
    _check_version(source)
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
