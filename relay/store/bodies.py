"""Stored message bodies read back: the raw message as accepted (and DKIM-signed), for operators.

The queue writes a body with its message (relay.store.queue) and retention deletes it (``[retention]
bodies``, relay.store.events); this only reads it, for the dashboard's message page and raw download.
"""

from __future__ import annotations

from relay.store.dialect import Connection, SqlDatabase


def raw_message(conn: Connection, message_id: str) -> bytes | None:
    row = conn.execute("SELECT raw FROM message_bodies WHERE message_id = ?", (message_id,)).fetchone()
    return None if row is None else bytes(row[0])


class SqlBodies:
    """:class:`relay.store.protocols.BodyStore` over the shared database."""

    def __init__(self, db: SqlDatabase) -> None:
        self.db = db

    async def raw_message(self, message_id: str) -> bytes | None:
        return await self.db.read(lambda c: raw_message(c, message_id))
