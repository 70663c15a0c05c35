"""Stored message bodies: where a message's raw text is (as accepted; delivery DKIM-signs it as it leaves), read back.

The queue writes a body with its message (relay.store.queue), in ``message_bodies`` or, on SQLite, a big
one in the spool beside the file (relay.store.spool, table ``spooled_bodies``); retention deletes it
(``[retention] bodies``, relay.store.events). Delivery reads it when it claims the message, operators on
the dashboard's message page and raw download.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from relay.store.db import spool_of
from relay.store.dialect import BINARY_ROWS, Connection, SqlDatabase, is_postgres
from relay.store.spool import read_body, spool_directory


def bodies_of(conn: Connection, message_ids: Sequence[str]) -> dict[str, bytes]:
    """The bodies of these messages that are stored (one deleted by retention has none)."""
    if not message_ids:
        return {}
    marks = ",".join("?" * len(message_ids))
    found = {
        mid: bytes(raw)
        for mid, raw in conn.execute(
            f"{BINARY_ROWS}SELECT message_id, raw FROM message_bodies WHERE message_id IN ({marks})", list(message_ids)
        )
    }
    if is_postgres(conn) or len(found) == len(message_ids):
        return found
    spooled = conn.execute(
        f"SELECT message_id, segment, start, length FROM spooled_bodies WHERE message_id IN ({marks})",
        list(message_ids),
    ).fetchall()
    if spooled:
        directory = spool_directory(database_file(conn))
        spool = spool_of(conn)  # the group commit's: its bodies staged in this transaction are not written yet
        for mid, segment, start, length in spooled:
            body = spool.staged_body(segment, start) if spool is not None and spool.pending else None
            if body is None:
                body = read_body(directory, segment, start, length)
            if body is not None:
                found[mid] = body
    return found


def has_body(conn: Connection, message_id: str) -> bool:
    """Whether the message's body is still stored."""
    if conn.execute("SELECT 1 FROM message_bodies WHERE message_id = ?", (message_id,)).fetchone() is not None:
        return True
    if is_postgres(conn):
        return False
    return conn.execute("SELECT 1 FROM spooled_bodies WHERE message_id = ?", (message_id,)).fetchone() is not None


def database_file(conn: Connection) -> Path:
    """The file of a SQLite connection's main database (its spool is beside it)."""
    for _, name, file in conn.execute("PRAGMA database_list"):
        if name == "main":
            return Path(file)
    raise RuntimeError("a SQLite connection without a main database")


def raw_message(conn: Connection, message_id: str) -> bytes | None:
    return bodies_of(conn, [message_id]).get(message_id)


class SqlBodies:
    """:class:`relay.store.protocols.BodyStore` over the shared database."""

    def __init__(self, db: SqlDatabase) -> None:
        self.db = db

    async def raw_message(self, message_id: str) -> bytes | None:
        return await self.db.read(lambda c: raw_message(c, message_id))
