"""``relay nodes``: the nodes serving this store (one per machine; several on a shared database)."""

from __future__ import annotations

import argparse

from relay.cli.common import Parents, Subparsers, now, when, with_store
from relay.cli.output import Column, Report, table
from relay.config import Config
from relay.nodes import Node

Row = tuple[Node, str]  # the node, its status now

NODE_COLUMNS: list[Column[Row]] = [
    Column("id", lambda r: r[0].id, "<18"),
    Column("status", lambda r: r[1], "<8"),
    Column("host", lambda r: r[0].host, "<20"),
    Column("version", lambda r: r[0].version, "<8"),
    Column("pid", lambda r: r[0].pid, ">7"),
    Column("started", lambda r: when(r[0].started_at), gap="  "),
    Column("heartbeat", lambda r: when(r[0].heartbeat_at), gap="  "),
]


def add_commands(sub: Subparsers[argparse.ArgumentParser], parents: Parents) -> None:
    p = sub.add_parser("nodes", parents=parents.both, help="the relay nodes serving this store, with their heartbeats")
    p.set_defaults(func=list_nodes)


def list_nodes(args: argparse.Namespace, config: Config) -> Report:
    """Newest start first; a node is silent after three missed heartbeats, stopped when it said so."""
    nodes = with_store(config, lambda s: s.nodes.list_all())
    at = now()
    data = [n.as_json(at) for n in nodes]
    rows = [(n, d["status"]) for n, d in zip(nodes, data, strict=True)]
    return Report(data, table(rows, NODE_COLUMNS, header=True) if rows else ["no node has registered yet"])
