"""The two ends of a copy: a SQLite file or a PostgreSQL database, each as source or target (:class:`Side`).

A source is read in one transaction (one snapshot of the whole relay), streamed from a cursor (a
server-side one on PostgreSQL, a few rows at a time where a table holds blobs). A target is migrated
when opened and written a batch per transaction, ``ON CONFLICT DO NOTHING``, with the table's triggers
switched off inside that transaction only (see :mod:`relay.store.copy`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Generator, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol

import psycopg

from relay.config import StoreUrl
from relay.errors import StoreUnavailable
from relay.nodes import HEARTBEAT_SECONDS, MISSED_BEATS
from relay.store.copy_tables import BATCH_ROWS, Row, Table, quote
from relay.store.spool import read_body, spool_directory

KEYS_PER_LOOKUP = 300  # keys looked up at once when checking the target for rows the source lacks
BLOB_FETCH = 8  # rows a server-side cursor fetches at once from a table with blobs


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
    columns = ", ".join(quote(c) for c in table.columns)
    marks = ", ".join("?" for _ in table.columns)
    return f"INSERT INTO {table.quoted} ({columns}) VALUES ({marks}) ON CONFLICT DO NOTHING"


def _present_sql(table: Table, n: int, relation: str | None = None) -> str:
    key = ", ".join(quote(c) for c in table.key)
    one = "(" + ", ".join("?" for _ in table.key) + ")"
    return f"SELECT count(*) FROM {relation or table.quoted} WHERE ({key}) IN (VALUES {', '.join([one] * n)})"


def _select_sql(table: Table, columns: tuple[str, ...], relation: str | None = None) -> str:
    order = ", ".join(quote(c) for c in table.key)
    return f"SELECT {', '.join(quote(c) for c in columns)} FROM {relation or table.quoted} ORDER BY {order}"


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
        self._bodies_view = False
        self._missing: str | None = None  # what a spooled body that could not be read said
        if target:
            migrate(where)
            self.conn = connect(where.path)
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
        return _number(self.conn.execute(f"SELECT count(*) FROM {self._read_from(table, keys_only=True)}").fetchone())

    def rows(self, table: Table) -> Generator[Row, None, None]:
        try:
            yield from self.conn.execute(_select_sql(table, table.columns, self._read_from(table)))
        except sqlite3.OperationalError as exc:
            if self._missing is None:
                raise
            raise StoreUnavailable(self._missing) from exc

    def keys(self, table: Table) -> Iterator[list[Row]]:
        cursor = self.conn.execute(_select_sql(table, table.key, self._read_from(table, keys_only=True)))
        while chunk := cursor.fetchmany(KEYS_PER_LOOKUP):
            yield [tuple(k) for k in chunk]

    def present(self, table: Table, keys: list[Row]) -> int:
        params = [v for k in keys for v in k]
        relation = self._read_from(table, keys_only=True)
        return _number(self.conn.execute(_present_sql(table, len(keys), relation), params).fetchone())

    def _read_from(self, table: Table, keys_only: bool = False) -> str:
        """What rows of ``table`` are read from: the table, but for ``message_bodies``, which also has the
        bodies in the spool (relay.store.spool) read here as its rows (temporary views: one of the ids
        only, which reads no segment, for counting and comparing keys)."""
        if table.name != "message_bodies":
            return table.quoted
        if not self._bodies_view:
            directory = spool_directory(self.name)

            def spooled_body(segment: str, start: int, length: int) -> bytes:
                body = read_body(directory, segment, start, length)
                if body is None:
                    self._missing = (
                        f"{self.name}: a message body is missing from the spool ({directory / segment},"
                        f" {length} bytes at {start}): restore the file, or delete its message, and copy again"
                    )
                    raise ValueError(self._missing)
                return body

            self.conn.create_function("spooled_body", 3, spooled_body)
            self.conn.execute(
                "CREATE TEMP VIEW every_message_body AS SELECT message_id, raw FROM main.message_bodies"
                " UNION ALL SELECT message_id, spooled_body(segment, start, length) FROM main.spooled_bodies"
            )
            self.conn.execute(
                "CREATE TEMP VIEW every_message_body_id AS SELECT message_id FROM main.message_bodies"
                " UNION ALL SELECT message_id FROM main.spooled_bodies"
            )
            self._bodies_view = True
        return "temp.every_message_body_id" if keys_only else "temp.every_message_body"

    def insert(self, table: Table, rows: list[Row]) -> int:
        triggers = self._triggers.get(table.name, [])
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            for name, _ in triggers:
                self.conn.execute(f"DROP TRIGGER {quote(name)}")
            inserted = int(self.conn.executemany(_insert_sql(table), rows).rowcount)
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
            inserted = int(self.conn.executemany(_insert_sql(table), rows).rowcount)
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
                    f"SELECT setval(pg_get_serial_sequence(%s, %s), coalesce(max({quote(column)}), 0) + 1, false)"
                    f" FROM {quote(table)}",
                    (quote(table), column),
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
