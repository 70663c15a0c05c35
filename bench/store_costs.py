#!/usr/bin/env python3
"""What the queue's writes cost per message, and the share of the events' triggers in it.

Runs the SQLite store in this process (a temp file, fsync on) through a message's life as relay's hot
path does it: enqueue in groups of --group, claim due recipients 100 at a time, record each one
delivered. Prints this process's CPU time per message for each step, then the same with the two
triggers on ``events`` dropped (``events_counted``: the hourly counts the stats read;
``events_to_webhooks``: a delivery row per matching webhook). No webhooks exist here, so the second
trigger costs only its look-up of them.

    python bench/store_costs.py --messages 5000
    python bench/store_costs.py --messages 2000 --recipients 10   # ten recipients a message

``--store postgresql`` runs the same on a private PostgreSQL cluster (tests/pg.py: loopback, fsync on;
a new database each run) and prints, beside this process's CPU, the server's (every process of the
cluster): where a server store spends its time is mostly in the server.

    python bench/store_costs.py --store postgresql --messages 3000 --recipients 5
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from relay.clock import SystemClock  # noqa: E402
from relay.events import EventKind, State  # noqa: E402
from relay.message import NewMessage  # noqa: E402
from relay.store.postgres.store import PgStore  # noqa: E402
from relay.store.queue import AttemptResult  # noqa: E402
from relay.store.sqlite import Store  # noqa: E402

RAW = b"From: bench@example.com\r\nTo: sink@example.org\r\nSubject: bench\r\n\r\n" + (b"x" * 76 + b"\r\n") * 62


class Server:
    """A private PostgreSQL cluster (the one bench/throughput.py runs), a new database for each run."""

    def __init__(self) -> None:
        from bench.throughput import Database

        self.database = Database()
        self.runs = 0

    def new_database(self) -> str:
        self.runs += 1
        return self.database.cluster.create_database(f"costs{self.runs}")

    def cpu(self) -> float:
        return self.database.cpu()


async def run(
    messages: int, group: int, triggers: bool, recipients: int = 1, server: Server | None = None
) -> dict[str, tuple[float, float]]:
    """Each step's CPU per message in microseconds: (this process's, the database server's)."""
    tmp = Path(tempfile.mkdtemp(prefix="relay-store-costs-"))
    store = PgStore(server.new_database(), SystemClock()) if server else Store(tmp / "relay.sqlite3", SystemClock())
    server_cpu = server.cpu if server else lambda: 0.0
    try:
        if not triggers:
            on = " ON events" if server else ""
            for trigger in ("events_counted", "events_to_webhooks"):
                await store.queue.db.write(lambda c, t=trigger: c.execute(f"DROP TRIGGER {t}{on}"))
        costs: dict[str, tuple[float, float]] = {}
        started = time.process_time(), server_cpu()

        def took(step: str) -> None:
            nonlocal started
            now = time.process_time(), server_cpu()
            costs[step] = ((now[0] - started[0]) * 1e6 / messages, (now[1] - started[1]) * 1e6 / messages)
            started = now

        for start in range(0, messages, group):
            batch = [
                NewMessage("bench@example.com", addresses(n, recipients), RAW, "smtp", subject="bench")
                for n in range(start, min(messages, start + group))
            ]
            await asyncio.gather(*(store.queue.enqueue(m) for m in batch))  # concurrent: one group commit
        took("enqueue")
        claimed = []
        while batch := await store.queue.claim_due(100, "bench", 60.0):
            claimed += batch
        took("claim")
        outcomes = [
            AttemptResult(r.id, m.id, r.address, State.DELIVERED, EventKind.DELIVERED, None, 250, "2.0.0 Ok", attempt=1)
            for m in claimed
            for r in m.recipients
        ]
        for start in range(0, len(outcomes), group * recipients):
            await store.queue.record_attempts(outcomes[start : start + group * recipients])
        took("record")
        assert len(outcomes) == messages * recipients, len(outcomes)
        return costs
    finally:
        await store.close()
        shutil.rmtree(tmp, ignore_errors=True)


def addresses(n: int, recipients: int) -> tuple[str, ...]:
    return tuple(f"r{n}-{k}@example.org" for k in range(recipients)) if recipients > 1 else (f"r{n}@example.org",)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--group", type=int, default=10, help="messages per group commit")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--recipients", type=int, default=1, help="recipients per message")
    parser.add_argument("--store", choices=["sqlite", "postgresql"], default="sqlite")
    args = parser.parse_args()
    server = Server() if args.store == "postgresql" else None
    try:
        for _ in range(args.runs):
            for triggers in (True, False):
                costs = asyncio.run(run(args.messages, args.group, triggers, args.recipients, server))
                print(f"{'with' if triggers else 'without'} event triggers: " + describe(costs, server is not None))
    finally:
        if server:
            server.database.stop()


def describe(costs: dict[str, tuple[float, float]], with_server: bool) -> str:
    """One line: each step's CPU per message, this process's (and the server's, in parentheses)."""
    if not with_server:
        steps = ", ".join(f"{step} {us:.0f}" for step, (us, _) in costs.items())
        return f"µs CPU per message: {steps}; total {sum(us for us, _ in costs.values()):.0f}"
    steps = ", ".join(f"{step} {us:.0f} ({db:.0f})" for step, (us, db) in costs.items())
    here, there = sum(us for us, _ in costs.values()), sum(db for _, db in costs.values())
    return f"µs CPU per message, relay's (the server's): {steps}; total {here:.0f} ({there:.0f})"


if __name__ == "__main__":
    main()
