#!/usr/bin/env python3
"""What a webhook delivery costs relay: the sender alone, against a receiver on loopback.

Queues --messages messages in a SQLite store in this process (a temp file, fsync on), each making a
``queued`` event for one webhook (every event), then runs relay's webhook sender until every delivery
has been made to a receiver process on loopback (bench/throughput.py's: it checks each signature).
With ``--store postgresql`` the store is a private PostgreSQL cluster (bench/throughput.py's), and the
database's CPU a delivery and its top statements are printed too.
Prints deliveries per second and this process's CPU per delivery (the event loop and the store's
writer thread: claiming, the payload, signing, the POST, recording the outcome), and of it the event
loop's. ``--profile FILE``
writes cProfile's figures of the sending part.

    python bench/webhooks.py --messages 5000
    python bench/webhooks.py --messages 5000 --store postgresql
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from throughput import Database, WebhookReceiver  # noqa: E402

from relay.clock import SystemClock  # noqa: E402
from relay.message import NewMessage  # noqa: E402
from relay.store.postgres import PgStore  # noqa: E402
from relay.store.protocols import Storage  # noqa: E402
from relay.store.sqlite import Store  # noqa: E402
from relay.store.webhooks import Webhook  # noqa: E402
from relay.webhooks import SenderSettings, WebhookSender, new_secret  # noqa: E402

RAW = b"From: bench@example.com\r\nTo: sink@example.org\r\nSubject: bench\r\n\r\n" + (b"x" * 76 + b"\r\n") * 62


async def run(messages: int, concurrency: int, profile: Path | None, postgres: bool) -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix="relay-webhooks-bench-"))
    receiver = WebhookReceiver(tmp)
    database = Database() if postgres else None
    store: Storage = PgStore(database.url, SystemClock()) if database else Store(tmp / "relay.sqlite3", SystemClock())
    try:
        now = store.clock.now()
        hook = Webhook("wh_bench", receiver.url, [], True, "", new_secret(), now, now)
        receiver.secret_file.write_text(hook.secret)
        await store.webhooks.create_webhook(hook)
        for start in range(0, messages, 100):
            batch = [
                NewMessage("bench@example.com", (f"user{n}@example.org",), RAW, "smtp", subject="bench")
                for n in range(start, min(messages, start + 100))
            ]
            await store.queue.enqueue_many(batch)
        sender = WebhookSender(
            store, store.clock, SenderSettings(allow_private_targets=True, max_concurrency=concurrency)
        )
        profiler = cProfile.Profile() if profile is not None else None
        db_cpu = database.cpu() if database else 0.0
        cpu, wall, loop_cpu = time.process_time(), time.perf_counter(), time.thread_time()
        if profiler is not None:
            profiler.enable()
        running = asyncio.create_task(sender.run())
        deadline = time.monotonic() + 600  # bounded: a receiver that stops answering ends the run
        while sender.sent + sender.failed < messages:  # counted in memory: the run's CPU is the sender's alone
            if time.monotonic() > deadline:
                raise SystemExit("timed out")
            await asyncio.sleep(0.02)
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(profile)
        cpu, wall, loop_cpu = time.process_time() - cpu, time.perf_counter() - wall, time.thread_time() - loop_cpu
        db_cpu = database.cpu() - db_cpu if database else 0.0
        await sender.stop()
        running.cancel()
        received, bad = receiver.counts()
        if received != messages or bad or sender.failed:
            raise SystemExit(f"received {received} of {messages}, {bad} with a bad signature, {sender.failed} failed")
        result = {
            "deliveries": messages,
            "per_s": round(messages / wall, 1),
            "cpu_us_per_delivery": round(cpu * 1e6 / messages, 1),
            "of_it_event_loop_us": round(loop_cpu * 1e6 / messages, 1),
        }
        if database is not None:
            result["database_cpu_us_per_delivery"] = round(db_cpu * 1e6 / messages, 1)
            print("statements per delivery (including the set-up), and the server's time in them:", file=sys.stderr)
            print(*database.top_statements(messages, limit=8), sep="\n", file=sys.stderr)
        return result
    finally:
        await store.close()
        if database is not None:
            database.stop()
        receiver.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=4, help="[webhooks] max_concurrency")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--profile", type=Path, help="cProfile's figures of the sending part, to this file")
    parser.add_argument("--store", choices=("sqlite", "postgresql"), default="sqlite")
    args = parser.parse_args()
    import uvloop

    for _ in range(args.runs):
        result = uvloop.run(run(args.messages, args.concurrency, args.profile, args.store == "postgresql"))
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
