"""The nodes that serve this store: each registers at start, beats while it runs, and says when it stops.

One machine has one node (its acceptor processes are part of it). With a shared database (issue 20)
several nodes register here, and ``relay nodes`` / ``GET /v1/nodes`` show them all. A node's id is the
one that owns its delivery leases (``relay.app.node_id``).
"""

from __future__ import annotations

from relay.clock import Clock
from relay.nodes import Node, NodeInfo
from relay.store.dialect import Connection, SqlDatabase

_COLUMNS = "id, host, version, pid, started_at, heartbeat_at, stopped_at"


def register(conn: Connection, node: NodeInfo, now: float) -> None:
    conn.execute(
        "INSERT INTO nodes (id, host, version, pid, started_at, heartbeat_at, stopped_at)"
        " VALUES (?, ?, ?, ?, ?, ?, NULL) ON CONFLICT (id) DO UPDATE SET host = excluded.host,"
        " version = excluded.version, pid = excluded.pid, started_at = excluded.started_at,"
        " heartbeat_at = excluded.heartbeat_at, stopped_at = NULL",
        (node.id, node.host, node.version, node.pid, now, now),
    )


def beat(conn: Connection, node_id: str, now: float) -> bool:
    cur = conn.execute("UPDATE nodes SET heartbeat_at = ? WHERE id = ? AND stopped_at IS NULL", (now, node_id))
    return cur.rowcount > 0


def stop(conn: Connection, node_id: str, now: float) -> None:
    conn.execute("UPDATE nodes SET stopped_at = ? WHERE id = ?", (now, node_id))


def list_all(conn: Connection) -> list[Node]:
    rows = conn.execute(f"SELECT {_COLUMNS} FROM nodes ORDER BY started_at DESC, id").fetchall()
    return [Node(*row) for row in rows]


class SqlNodes:
    """:class:`relay.store.protocols.NodeStore` over the shared database."""

    def __init__(self, db: SqlDatabase, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    async def register(self, node: NodeInfo) -> None:
        now = self.clock.now()
        await self.db.write(lambda c: register(c, node, now))

    async def beat(self, node_id: str) -> bool:
        now = self.clock.now()
        return await self.db.write(lambda c: beat(c, node_id, now))

    async def stop(self, node_id: str) -> None:
        now = self.clock.now()
        await self.db.write(lambda c: stop(c, node_id, now))

    async def list_all(self) -> list[Node]:
        return await self.db.read(list_all)
