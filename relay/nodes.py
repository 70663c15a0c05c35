"""Nodes: the relay processes that deliver from one store (one per machine; its acceptor processes are
part of it). Each registers when it starts, beats every HEARTBEAT_SECONDS while it runs and says when it
stops; ``relay nodes`` and ``GET /v1/nodes`` show them. A node's id owns its delivery leases
(``relay.app.node_id``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from relay.clock import iso

HEARTBEAT_SECONDS = 30.0
MISSED_BEATS = 3  # then a node is silent: crashed, or cut off from the database

UP, SILENT, STOPPED = "up", "silent", "stopped"
STATUSES = (UP, SILENT, STOPPED)


@dataclasses.dataclass(frozen=True)
class NodeInfo:
    """What a node says of itself when it starts."""

    id: str
    host: str
    version: str
    pid: int


@dataclasses.dataclass(frozen=True)
class Node:
    id: str
    host: str
    version: str
    pid: int
    started_at: float
    heartbeat_at: float
    stopped_at: float | None

    def status(self, now: float, silent_after: float = MISSED_BEATS * HEARTBEAT_SECONDS) -> str:
        """``stopped`` (said so), ``silent`` (no heartbeat for ``silent_after`` seconds: crashed or cut off)
        or ``up``."""
        if self.stopped_at is not None:
            return STOPPED
        return SILENT if now - self.heartbeat_at > silent_after else UP

    def as_json(self, now: float) -> dict[str, Any]:
        """The node as ``GET /v1/nodes`` and ``relay nodes --json`` give it."""
        return {
            "id": self.id,
            "host": self.host,
            "version": self.version,
            "pid": self.pid,
            "status": self.status(now),
            "started_at": iso(self.started_at),
            "heartbeat_at": iso(self.heartbeat_at),
            "stopped_at": iso(self.stopped_at),
        }
