"""A psycopg connection that runs the repositories' SQL (written with ``?`` placeholders) on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from functools import lru_cache
from typing import Any

import psycopg

from relay.store.dialect import BINARY_ROWS, PLAN_EACH_TIME, Params


@lru_cache(maxsize=4096)
def to_native(sql: str) -> bytes:
    """``?`` placeholders as PostgreSQL's own ``$1``, ``$2`` …, the text encoded as it is sent.

    Statements run on psycopg's raw cursor, which sends the text unparsed: its ``%s`` form is split with a
    regular expression again for every statement of more than 50 parameters (psycopg caches only smaller
    ones), which a multi-row VALUES of the queue's outcomes always has. The repositories write no ``?``
    inside string literals, so every ``?`` is a placeholder.
    """
    parts = sql.split("?")
    numbered = [parts[0]]
    for number, part in enumerate(parts[1:], 1):
        numbered.append(f"${number}")
        numbered.append(part)
    return "".join(numbered).encode()


def _params(parameters: Params) -> tuple[Any, ...]:
    """Flags as SQLite stores them (0/1): the schema's flags are SMALLINT in both databases. A NUL in a text
    (a receiver's garbled reply, a returned report), alone or in an array, becomes U+FFFD: PostgreSQL's text
    cannot hold one."""
    return tuple(_param(p) for p in parameters)


def _param(value: Any) -> Any:
    if value is True or value is False:
        return int(value)
    if isinstance(value, str) and "\x00" in value:
        return value.replace("\x00", "\ufffd")
    if isinstance(value, list):  # an array (``CAST(? AS text[])``, ``= ANY(?)``): the same, element by element
        return [_param(v) for v in value]
    return value


class PgConnection:
    """:class:`relay.store.dialect.Connection` over a psycopg connection (in a transaction or autocommit).

    In a pipeline (``pipeline`` set by the writer) statements are sent without waiting for their
    results: an operation that fetches rows waits for them (psycopg does), and one that reads a
    ``rowcount`` gets a cursor that syncs the pipeline first, so every operation reads what it would
    have read one statement at a time.
    """

    __slots__ = ("notifications", "pipeline", "raw")

    def __init__(self, raw: psycopg.Connection[Any], pipeline: psycopg.Pipeline | None = None) -> None:
        self.raw = raw
        self.pipeline = pipeline
        self.notifications: set[str] = set()  # channels to NOTIFY before this transaction commits

    def notify(self, channel: str) -> None:
        """NOTIFY ``channel`` when the transaction commits (the writer sends it once, before COMMIT)."""
        self.notifications.add(channel)

    def execute(self, sql: str, parameters: Params = (), /) -> Any:
        cursor = psycopg.RawCursor(self.raw)
        marks = sql[: len(PLAN_EACH_TIME) + len(BINARY_ROWS)]
        prepare = False if PLAN_EACH_TIME in marks else None  # None: psycopg's own choice
        cursor.execute(to_native(sql), _params(parameters), prepare=prepare, binary=BINARY_ROWS in marks)
        return cursor if self.pipeline is None else _PipelinedCursor(cursor, self.pipeline)

    def executemany(self, sql: str, seq_of_parameters: Iterable[Params], /) -> Any:
        cursor = psycopg.RawCursor(self.raw)
        cursor.executemany(to_native(sql), [_params(p) for p in seq_of_parameters])
        return cursor if self.pipeline is None else _PipelinedCursor(cursor, self.pipeline)


class _PipelinedCursor:
    """A cursor whose statement may still be in flight: ``rowcount`` waits for it."""

    __slots__ = ("_cursor", "_pipeline")

    def __init__(self, cursor: psycopg.Cursor[Any], pipeline: psycopg.Pipeline) -> None:
        self._cursor = cursor
        self._pipeline = pipeline

    @property
    def rowcount(self) -> int:
        if self._cursor.pgresult is None:
            self._pipeline.sync()
        return self._cursor.rowcount

    def fetchone(self) -> Any:
        return self._cursor.fetchone()

    def fetchall(self) -> list[Any]:
        return self._cursor.fetchall()

    def __iter__(self) -> Iterator[Any]:
        return iter(self._cursor)
