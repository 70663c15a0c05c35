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
from relay.store.queue import AttemptResult  # noqa: E402
from relay.store.sqlite import Store  # noqa: E402

RAW = b"From: bench@example.com\r\nTo: sink@example.org\r\nSubject: bench\r\n\r\n" + (b"x" * 76 + b"\r\n") * 62


async def run(messages: int, group: int, triggers: bool, recipients: int = 1) -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix="relay-store-costs-"))
    store = Store(tmp / "relay.sqlite3", SystemClock())
    try:
        if not triggers:
            for trigger in ("events_counted", "events_to_webhooks"):
                await store.queue.db.write(lambda c, t=trigger: c.execute(f"DROP TRIGGER {t}"))
        costs: dict[str, float] = {}
        started = time.process_time()
        for start in range(0, messages, group):
            batch = [
                NewMessage("bench@example.com", addresses(n, recipients), RAW, "smtp", subject="bench")
                for n in range(start, min(messages, start + group))
            ]
            await asyncio.gather(*(store.queue.enqueue(m) for m in batch))  # concurrent: one group commit
        costs["enqueue"] = time.process_time() - started
        started = time.process_time()
        claimed = []
        while batch := await store.queue.claim_due(100, "bench", 60.0):
            claimed += batch
        costs["claim"] = time.process_time() - started
        started = time.process_time()
        outcomes = [
            AttemptResult(r.id, m.id, r.address, State.DELIVERED, EventKind.DELIVERED, None, 250, "2.0.0 Ok", attempt=1)
            for m in claimed
            for r in m.recipients
        ]
        for start in range(0, len(outcomes), group * recipients):
            await store.queue.record_attempts(outcomes[start : start + group * recipients])
        costs["record"] = time.process_time() - started
        assert len(outcomes) == messages * recipients, len(outcomes)
        return {step: seconds * 1e6 / messages for step, seconds in costs.items()}
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
    args = parser.parse_args()
    for _ in range(args.runs):
        for triggers in (True, False):
            costs = asyncio.run(run(args.messages, args.group, triggers, args.recipients))
            total = sum(costs.values())
            steps = ", ".join(f"{step} {us:.0f}" for step, us in costs.items())
            print(f"{'with' if triggers else 'without'} event triggers: µs CPU per message: {steps}; total {total:.0f}")


if __name__ == "__main__":
    main()
