#!/usr/bin/env python3
"""Durable writes per second and commits per write: PgDatabase (PostgreSQL) against Database (SQLite).

Each write inserts a message row and its recipient row, the smallest thing an acceptance commits.
For 1, 10 and 50 concurrent writers (each waits for its write to be committed before the next one),
both backends run for ``--seconds`` or ``--max-writes``, whichever comes first. Both run the same
operation (the repositories' SQL dialect, ``?`` placeholders). PostgreSQL is a private cluster on
loopback in a temporary directory (tests/pg.py) with fsync on; SQLite is a file in a temporary
directory with synchronous=FULL. Both fsync every commit on the same disk.

    python bench/pg_commit.py --seconds 3
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from relay.store.db import Database  # noqa: E402
from relay.store.dialect import Connection  # noqa: E402
from relay.store.postgres.db import PgDatabase  # noqa: E402
from tests.pg import PostgresCluster  # noqa: E402

MESSAGE = "INSERT INTO messages (id, created_at, sender, size, source) VALUES (?, 0, 'a@example.com', 5000, 'smtp')"
RECIPIENT = (
    "INSERT INTO recipients (message_id, address, domain, state, next_attempt_at, updated_at)"
    " VALUES (?, 'b@example.org', 'example.org', 'queued', 0, 0)"
)
_ids = itertools.count()


def insert(message_id: str) -> Callable[[Connection], None]:
    def op(conn: Connection) -> None:
        conn.execute(MESSAGE, (message_id,))
        conn.execute(RECIPIENT, (message_id,))

    return op


async def run(db: Any, writers: int, args: argparse.Namespace) -> str:
    """Writes per second and commits per write for ``writers`` concurrent writers, as one table cell."""
    commits0, done = db.commits, 0
    deadline = time.perf_counter() + args.seconds

    async def writer() -> None:
        nonlocal done
        while time.perf_counter() < deadline and done < args.max_writes:
            await db.write(insert(f"m{next(_ids)}"))
            done += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(writer() for _ in range(writers)))
    elapsed = time.perf_counter() - t0
    return f"{done / elapsed:>8,.0f}/s {(db.commits - commits0) / done:>6.3f}"


async def main(args: argparse.Namespace) -> None:
    cluster = PostgresCluster(fsync=True)
    cluster.start()
    tmp = Path(tempfile.mkdtemp(prefix="relay-bench-"))
    try:
        pg = PgDatabase(cluster.create_database("bench"))
        lite = Database(tmp / "relay.db")
        print("durable writes per second, commits per write")
        print(f"writers | {'PostgreSQL':<17} | SQLite")
        for writers in args.writers:
            cells = [await run(pg, writers, args), await run(lite, writers, args)]
            print(f"{writers:>7} | " + " | ".join(cells))
        await pg.close()
        await lite.close()
    finally:
        cluster.stop()
        shutil.rmtree(tmp)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per backend and concurrency (default 3)")
    parser.add_argument("--max-writes", type=int, default=50_000, help="per backend and concurrency")
    parser.add_argument("--writers", type=int, nargs="+", default=[1, 10, 50])
    asyncio.run(main(parser.parse_args()))
