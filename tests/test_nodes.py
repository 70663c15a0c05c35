"""A relay registers itself as a node, beats while it runs and says when it stops; relay nodes and
GET /v1/nodes show it (issue 20: with a shared database, every node appears)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator

import aiohttp
import pytest

from relay import __version__
from relay.app import Relay
from relay.clock import VirtualClock
from relay.keys import create_api_key
from relay.nodes import HEARTBEAT_SECONDS, MISSED_BEATS
from tests.conftest import config_dict, make_config, write_toml


@pytest.fixture
async def relay(tmp_path) -> AsyncIterator[Relay]:
    relay = Relay(make_config(tmp_path / "data"), VirtualClock())
    await relay.start()
    yield relay
    await relay.stop()


async def get_nodes(relay: Relay, roles: tuple[str, ...] = ("admin",)) -> tuple[int, dict]:
    _, secret = await create_api_key(relay.store.keys, relay.store.clock, "ops", roles)
    host, port = relay.http_address
    async with aiohttp.ClientSession() as s:
        async with s.get(f"http://{host}:{port}/v1/nodes", headers={"Authorization": f"Bearer {secret}"}) as r:
            return r.status, await r.json()


async def test_a_running_relay_is_an_up_node_that_beats(relay):
    status, body = await get_nodes(relay)
    assert status == 200
    (node,) = body["data"]
    assert node["id"] == relay.node and node["id"].startswith("node-")
    assert (node["status"], node["host"], node["version"]) == ("up", socket.gethostname(), __version__)
    assert (node["pid"], node["stopped_at"]) == (os.getpid(), None)
    first = node["heartbeat_at"]
    await relay.clock.run_for(HEARTBEAT_SECONDS * 4)  # four beats: up, and its heartbeat moved on
    # A beat is a write on the database's own thread: give the last one (real) time to commit.
    for _ in range(100):
        (node,) = (await get_nodes(relay))[1]["data"]
        if node["heartbeat_at"] > first:
            break
        await asyncio.sleep(0.05)
    assert node["status"] == "up" and node["heartbeat_at"] > first


async def test_a_node_that_stops_beating_is_silent(relay):
    assert relay._heartbeat_task is not None
    relay._heartbeat_task.cancel()  # as if the process hung, or lost its database
    relay.clock.advance(HEARTBEAT_SECONDS * MISSED_BEATS + 1)
    (node,) = (await get_nodes(relay))[1]["data"]
    assert node["status"] == "silent"


async def test_nodes_needs_the_admin_scope(relay):
    status, body = await get_nodes(relay, ("send",))
    assert (status, body["error"]["code"]) == (403, "missing_scope")


async def test_relay_nodes_shows_a_stopped_node(tmp_path):
    config = write_toml(tmp_path / "relay.toml", config_dict(tmp_path / "data"))
    relay = Relay(make_config(tmp_path / "data"))
    await relay.start()
    node = relay.node
    await relay.stop()

    def relay_nodes(*options: str) -> str:
        command = [sys.executable, "-m", "relay", "nodes", *options, "--config", str(config)]
        return subprocess.run(command, capture_output=True, text=True, timeout=60, check=True).stdout

    (shown,) = json.loads(relay_nodes("--json"))
    assert (shown["id"], shown["status"]) == (node, "stopped") and shown["stopped_at"] is not None
    header, line = relay_nodes().splitlines()
    assert header.split()[:3] == ["id", "status", "host"] and line.split()[:2] == [node, "stopped"]
