#!/usr/bin/env python3
"""How the queue behaves as it grows: enqueue and claim latency at 10k, 100k and 1M waiting recipients.

Fills a fresh SQLite queue (its own temp dir) with small messages, one
recipient each, due times spread over the next day (a tenth due now). At each
size it measures, with the real store (group-commit writer, fsync):

- enqueue: one more message, committed (mean of --samples)
- claim: lease 100 due recipients (then put them back), mean of --samples
- the process's peak RSS (the queue must not be held in memory)

    python bench/queue_scale.py --sizes 10000 100000 1000000
    python bench/queue_scale.py --store postgresql   # a private cluster (tests/pg.py), fsync on
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from relay.clock import SystemClock  # noqa: E402
from relay.message import NewMessage  # noqa: E402
from relay.store import Store  # noqa: E402
from relay.store import queue as q  # noqa: E402
from relay.store.postgres import PgStore  # noqa: E402
from relay.store.postgres.db import PgDatabase  # noqa: E402
from relay.store.repositories import SqlStore  # noqa: E402

BODY = b"From: a@example.com\r\nTo: b@example.org\r\nSubject: scale\r\n\r\n" + b"x" * 100 + b"\r\n"


def fill(conn, start: int, count: int, now: float) -> None:
    for i in range(start, start + count):
        message = NewMessage("a@example.com", (f"user{i}@d{i % 1000}.example",), BODY, "smtp")
        q.enqueue(conn, message, now)
    # Spread due times: a tenth due now, the rest over the next day.
    conn.execute(
        "UPDATE recipients SET next_attempt_at = ? + (id % 10) * 8640 WHERE id > ? AND next_attempt_at IS NOT NULL",
        (now, start),
    )


async def measure(store: SqlStore, samples: int) -> tuple[float, float]:
    enqueue = []
    for _ in range(samples):
        started = time.perf_counter()
        await store.queue.enqueue(NewMessage("a@example.com", ("probe@probe.example",), BODY, "smtp"))
        enqueue.append(time.perf_counter() - started)
    claim = []
    for _ in range(samples):
        started = time.perf_counter()
        leased = await store.queue.claim_due(100, "bench", 60)
        claim.append(time.perf_counter() - started)
        ids = [r.id for m in leased for r in m.recipients]
        await store.queue.postpone(ids, time.time())
    return statistics.mean(enqueue) * 1000, statistics.mean(claim) * 1000


def database_mb(store: SqlStore, tmp: Path) -> float:
    if store.backend == "postgresql":
        import psycopg

        assert isinstance(store.db, PgDatabase)
        with psycopg.connect(store.db.url) as conn:
            row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
        return float(row[0]) / 2**20 if row else 0.0
    return sum(p.stat().st_size for p in tmp.iterdir()) / 2**20


async def run(sizes: list[int], samples: int, backend: str) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="relay-queue-scale-"))
    cluster = None
    store: SqlStore
    if backend == "postgresql":
        from tests.pg import PostgresCluster

        cluster = PostgresCluster(fsync=True)
        cluster.start()
        store = PgStore(cluster.create_database("scale"), SystemClock())
    else:
        store = Store(tmp / "relay.sqlite3", SystemClock())
    filled = 0
    try:
        print(f"{'waiting':>10} {'enqueue ms':>11} {'claim 100 ms':>13} {'peak RSS MB':>12} {'db MB':>8} {'fill s':>7}")
        for size in sizes:
            started = time.perf_counter()
            while filled < size:
                batch = min(500, size - filled)  # per transaction: 5,000 made the fill of 1M take 30 minutes
                now = time.time()
                await store.db.write(lambda c, s=filled, n=batch, t=now: fill(c, s, n, t))
                filled += batch
            fill_s = time.perf_counter() - started
            enqueue_ms, claim_ms = await measure(store, samples)
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            db = database_mb(store, tmp)
            print(f"{size:10} {enqueue_ms:11.2f} {claim_ms:13.2f} {rss:12.0f} {db:8.0f} {fill_s:7.0f}", flush=True)
    finally:
        await store.close()
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--store", choices=("sqlite", "postgresql"), default="sqlite")
    args = parser.parse_args()
    asyncio.run(run(sorted(args.sizes), args.samples, args.store))


if __name__ == "__main__":
    main()
