#!/usr/bin/env python3
"""What counting rate limits in the database costs: acceptances per second, memory counter vs store counter.

Each "request" is what an HTTP send does with the store: one rate-limit hit for its API key, then one
enqueue (a message of 5 KB to one recipient). ``--writers`` requests run at once, for ``--seconds``,
with the limit high enough never to refuse. The limiter is either ``RateLimiter`` (memory) or
``SharedLimiter`` over the store's rate counters (one more durable write per request, in the same
group-commit writer as the enqueues). SQLite always; ``--pg`` also runs both on a private PostgreSQL
cluster on loopback (tests/pg.py, fsync on).

    python bench/rate_counters.py --seconds 3
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from relay.clock import SystemClock  # noqa: E402
from relay.config import Rate  # noqa: E402
from relay.message import NewMessage  # noqa: E402
from relay.ratelimit import Limiter, RateLimiter, SharedLimiter  # noqa: E402
from relay.store import Store  # noqa: E402

RATE = Rate(10**12, 3600.0)
RAW = b"Subject: bench\r\n\r\n" + b"x" * 5000 + b"\r\n"
_ids = itertools.count()


async def run(store: Any, limiter: Limiter, writers: int, seconds: float) -> tuple[float, float]:
    """(requests per second, mean latency in ms) for ``writers`` concurrent requests."""
    done, latency = 0, 0.0
    deadline = time.perf_counter() + seconds

    async def writer(n: int) -> None:
        nonlocal done, latency
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            decision = await limiter.hit(f"key_{n % 4}", RATE, time.time())
            assert decision.allowed
            message = NewMessage("a@example.com", ("b@example.org",), RAW, "http", id=f"m{next(_ids):09d}")
            await store.queue.enqueue(message)
            latency += time.perf_counter() - t0
            done += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(writer(n) for n in range(writers)))
    return done / (time.perf_counter() - t0), 1000 * latency / max(1, done)


async def compare(name: str, store: Any, args: argparse.Namespace) -> None:
    for writers in args.writers:
        memory = await run(store, RateLimiter(), writers, args.seconds)
        shared = await run(store, SharedLimiter(store.rate_counters, "api"), writers, args.seconds)
        print(
            f"| {name} | {writers} | {memory[0]:,.0f} ({memory[1]:.2f} ms) | {shared[0]:,.0f} ({shared[1]:.2f} ms)"
            f" | {shared[0] / memory[0]:.2f}x |"
        )


async def main(args: argparse.Namespace) -> None:
    print("| store | concurrent requests | memory counter: req/s (latency) | store counter: req/s (latency) | ratio |")
    print("|---|---|---|---|---|")
    tmp = Path(tempfile.mkdtemp(prefix="relay-bench-"))
    try:
        store = Store(tmp / "relay.sqlite3", SystemClock())
        await compare("SQLite", store, args)
        await store.close()
        if args.pg:
            from relay.store.postgres import PgStore
            from tests.pg import PostgresCluster

            cluster = PostgresCluster(fsync=True)
            cluster.start()
            try:
                pg = PgStore(cluster.create_database("bench"), SystemClock())
                await compare("PostgreSQL", pg, args)
                await pg.close()
            finally:
                cluster.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--writers", type=int, nargs="+", default=[1, 50])
    parser.add_argument("--pg", action="store_true", help="also on a private PostgreSQL cluster")
    asyncio.run(main(parser.parse_args()))
