#!/usr/bin/env python3
"""What storing a message body costs PostgreSQL with each way it can keep a column (issue 22).

On a private cluster (tests/pg.py: loopback, fsync on), inserts --rows bodies of --size bytes into a
table like ``message_bodies`` (ten a transaction, as a group commit would), once for each of PostgreSQL's
compressions (pglz, its own and the default; lz4) and for none (``STORAGE EXTERNAL``), with three kinds
of body: plain text (words and line ends, as most mail is), base64 (an attachment: random bytes, which
neither compresses) and the benchmarks' lines of x. Prints the server backend's CPU, the WAL written and
the table's size per row.

    python bench/body_compression.py --size 5000 --rows 2000
    python bench/body_compression.py --size 102400 --rows 300
"""

from __future__ import annotations

import argparse
import base64
import os
import random
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.throughput import Database, cpu_seconds  # noqa: E402

WORDS = (
    "the of and to in is you that it he was for on are as with his they at be this have from or one had by"
    " word but not what all were we when your can said there use an each which she do how their if will up"
    " other about out many then them these so some her would make like him into time has look two more"
).split()


def text_body(size: int) -> bytes:
    lines: list[str] = []
    length = 0
    while length < size:
        lines.append(" ".join(random.choice(WORDS) for _ in range(12)) + "\r\n")
        length += len(lines[-1])
    return "".join(lines).encode()[:size]


def base64_body(size: int) -> bytes:
    return base64.encodebytes(os.urandom(size * 3 // 4)).replace(b"\n", b"\r\n")[:size]


def x_body(size: int) -> bytes:
    return (b"x" * 76 + b"\r\n") * max(1, size // 78)


BODIES: dict[str, Callable[[int], bytes]] = {"text": text_body, "base64": base64_body, "x": x_body}
STORAGE = {
    "pglz": "ALTER TABLE b ALTER COLUMN raw SET COMPRESSION pglz",
    "lz4": "ALTER TABLE b ALTER COLUMN raw SET COMPRESSION lz4",
    "none": "ALTER TABLE b ALTER COLUMN raw SET STORAGE EXTERNAL",
}


def one(conn: psycopg.Connection[tuple[Any, ...]], sql: str, params: tuple[Any, ...] = ()) -> Any:
    row = conn.execute(sql.encode(), params).fetchone()
    assert row is not None
    return row[0]


def measure(conn: psycopg.Connection[tuple[Any, ...]], storage: str, bodies: list[bytes]) -> str:
    """Insert the bodies into a new table kept that way: the server's CPU, WAL and size per row."""
    conn.execute(b"DROP TABLE IF EXISTS b")
    conn.execute(b"CREATE TABLE b (id TEXT PRIMARY KEY, raw BYTEA NOT NULL)")
    conn.execute(STORAGE[storage].encode())
    pid = one(conn, "SELECT pg_backend_pid()")
    wal_before = one(conn, "SELECT pg_current_wal_lsn()")
    cpu_before = cpu_seconds(pid)
    for start in range(0, len(bodies), 10):
        with conn.transaction():
            for n in range(start, min(len(bodies), start + 10)):
                conn.execute(b"INSERT INTO b VALUES (%s, %s)", (f"m{n:06d}", bodies[n]), prepare=True)
    cpu = (cpu_seconds(pid) - cpu_before) * 1e6 / len(bodies)
    wal = one(conn, "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)", (wal_before,))
    size = one(conn, "SELECT pg_total_relation_size('b')")
    return f"{cpu:6.0f} us CPU, {float(wal) / len(bodies):7.0f} B of WAL, {size / len(bodies):7.0f} B stored a row"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=5000, help="body size in bytes")
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    database = Database()
    try:
        with psycopg.connect(database.url, autocommit=True) as conn:
            for kind, make in BODIES.items():
                bodies = [make(args.size) for _ in range(args.rows)]
                for storage in STORAGE:
                    for _ in range(args.runs):
                        print(f"{kind:6} {args.size} B, {storage:4}: {measure(conn, storage, bodies)}", flush=True)
    finally:
        database.stop()


if __name__ == "__main__":
    main()
