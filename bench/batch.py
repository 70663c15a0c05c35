#!/usr/bin/env python3
"""How long POST /v1/messages/batch takes to accept a full batch (500 by default), durably.

Starts relay as a subprocess (temp data dir, smarthost pointing at a closed
port so nothing leaves), then times, over --runs requests each:

- a personalised batch: one message with ``{{ name }}`` in subject and html,
  ``--size`` recipients each with their own variables (rendered per recipient)
- a batch of ``--size`` separate messages

Every 202 means the whole batch is committed to disk (one transaction).

    python bench/batch.py --size 500 --runs 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(tmp: Path, port: int) -> tuple[subprocess.Popen[bytes], str]:
    config = tmp / "relay.toml"
    config.write_text(
        f'[server]\nhostname = "relay.bench"\ndata_dir = "{tmp / "data"}"\n'
        f'[smtp]\nlisten = ["127.0.0.1:0"]\n[http]\nlisten = "127.0.0.1:{port}"\nrate_limit = "1000000/h"\n'
        f'[delivery]\nsmarthost = "127.0.0.1:{free_port()}"\nretry_schedule = ["1h"]\n'
    )
    env = {k: v for k, v in os.environ.items() if k != "RELAY_CONFIG"}
    run = [sys.executable, "-m", "relay"]
    out = subprocess.run(
        [*run, "keys", "create", "--scope", "send", "--json", "--config", str(config)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        cwd=ROOT,
    )
    key = json.loads(out.stdout)["key"]
    proc = subprocess.Popen(
        [*run, "serve", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        cwd=ROOT,
    )
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, key
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise SystemExit("relay did not start") from None
            time.sleep(0.05)


async def timed_posts(url: str, key: str, body: dict, runs: int) -> list[float]:
    times = []
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as s:
        for _ in range(runs):
            started = time.perf_counter()
            async with s.post(url, json=body) as r:
                result = await r.json()
                assert r.status == 202 and result["failed"] == 0, result
            times.append(time.perf_counter() - started)
    return times


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=500)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="relay-batch-"))
    port = free_port()
    proc, key = start(tmp, port)
    url = f"http://127.0.0.1:{port}/v1/messages/batch"
    try:
        personal = {
            "message": {
                "from": "app@example.com",
                "subject": "Hello {{ name }}",
                "html": "<p>Hi {{ name }}, your code is <b>{{ code }}</b>.</p>",
                "tags": ["bench"],
            },
            "recipients": [
                {"to": f"user{i}@d{i % 50}.example", "variables": {"name": f"User {i}", "code": i}}
                for i in range(args.size)
            ],
        }
        one = {"from": "app@example.com", "text": "Hello.\n"}
        separate = {
            "messages": [
                {**one, "to": f"user{i}@d{i % 50}.example", "subject": f"Message {i}"} for i in range(args.size)
            ]
        }
        for name, body in (("personalised", personal), ("separate messages", separate)):
            times = await timed_posts(url, key, body, args.runs)
            print(
                f"{name:18} {args.size} per batch: median {statistics.median(times) * 1000:.0f} ms,"
                f" max {max(times) * 1000:.0f} ms over {args.runs} batches"
                f" ({args.size / statistics.median(times):.0f} messages/s)"
            )
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
