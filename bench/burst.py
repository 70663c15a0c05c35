#!/usr/bin/env python3
"""Seconds for a burst to a site that allows few connections: the delivery engine alone, on a real clock.

A site holds 20 jobs a connection; the rest of a burst goes back to the queue until the site has room.
This queues ``--messages`` messages to one site with ``max_connections = --connections``, starts the
engine, and times until Postfix's smtp-sink (or a small Python sink) has acknowledged all of them;
the messages a second is what the one connection moved, with the waits between claims counted.

    .venv/bin/python bench/burst.py --messages 200 --connections 1 --runs 3
    PYTHONPATH=../before .venv/bin/python bench/burst.py ...   # another checkout's engine
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from relay.clock import SystemClock
from relay.delivery.client import SmtpClient
from relay.delivery.engine import Engine, EngineSettings
from relay.delivery.mx import Router
from relay.delivery.retry import RetryPolicy
from relay.message import NewMessage
from relay.store import Store

BODY = b"From: bench@example.com\r\nSubject: burst\r\n\r\n" + b"x" * 70 + b"\r\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_sink(port: int) -> subprocess.Popen[bytes]:
    """smtp-sink -c counts what it took; the count is read from the store instead (delivered recipients)."""
    if shutil.which("smtp-sink") is None:
        raise SystemExit("bench/burst.py needs Postfix's smtp-sink (apt-get install postfix)")
    proc = subprocess.Popen(["smtp-sink", "-u", "root", f"127.0.0.1:{port}", "1024"])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("smtp-sink did not start")


async def one_burst(directory: Path, port: int, messages: int, connections: int) -> float:
    clock = SystemClock()
    store = Store(directory / "queue.sqlite3", clock)
    for n in range(messages):
        await store.queue.enqueue(NewMessage("bench@example.com", [f"u{n}@one.example"], BODY, "smtp"))
    settings = EngineSettings(
        owner="bench",
        concurrency=50,
        lease=300,
        poll_interval=1.0,
        retry=RetryPolicy((60,), 3600, jitter=0.0),
        idle_timeout=5.0,
        shaping={"default": {"max_connections": connections}},
    )
    client = SmtpClient("relay.bench", connect_timeout=5, command_timeout=30, clock=clock)
    engine = Engine(store, Router(("127.0.0.1", port), 25, None), client, clock, settings, random.Random(0))
    start = time.monotonic()
    running = asyncio.create_task(engine.run())
    try:
        while engine.delivered < messages:
            if time.monotonic() - start > 120:
                raise SystemExit(f"timed out: {engine.delivered} of {messages} delivered")
            await asyncio.sleep(0.01)
        return time.monotonic() - start
    finally:
        await engine.stop(5)
        await running
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--connections", type=int, default=1, help="the site's max_connections")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    port = free_port()
    sink = start_sink(port)
    try:
        times = []
        for _ in range(args.runs):
            with tempfile.TemporaryDirectory() as tmp:
                seconds = asyncio.run(one_burst(Path(tmp), port, args.messages, args.connections))
            times.append(seconds)
            print(f"{args.messages} messages, max_connections {args.connections}: {seconds:.2f} s", flush=True)
        median = statistics.median(times)
        print(f"median {median:.2f} s, {args.messages / median:.0f} msgs/s", file=sys.stdout)
    finally:
        sink.terminate()
        sink.wait(10)


if __name__ == "__main__":
    main()
