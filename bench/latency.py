#!/usr/bin/env python3
"""Latency from acceptance to arrival: p50/p99 at a steady rate (half the measured maximum, by default 350/s).

Starts relay (a subprocess, as bench/throughput.py does, smarthost pointing at a
sink in this script), then sends --messages numbered messages at --rate per
second over --sessions concurrent SMTP sessions (one connection per message).
For each message it notes when relay answered 250 to DATA and when the sink
received it, and prints the p50, p90, p99 and max of the difference. Every
server listens on loopback; the run is bounded by --messages and --timeout.

    python bench/latency.py --rate 350 --messages 5000
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import re
import shutil
import smtplib
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import Relay, free_port  # noqa: E402


class Sink:
    def __init__(self, expected: int) -> None:
        self.arrived: dict[int, float] = {}
        self.expected = expected
        self.done = asyncio.Event()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        m = re.search(rb"Subject: n-(\d+)", envelope.original_content or b"")
        if m:
            self.arrived.setdefault(int(m.group(1)), time.monotonic())
            if len(self.arrived) >= self.expected:
                self.done.set()
        return "250 2.0.0 ok"


def run_sink(port: int, expected: int, timeout: float, results: Any) -> None:
    """The sink in its own process (so the injector's threads do not slow it): arrival times, at the end."""

    async def serve() -> None:
        sink = Sink(expected)
        server = await asyncio.get_running_loop().create_server(lambda: SMTP(sink, hostname="sink.bench"),
                                                                "127.0.0.1", port)  # fmt: skip
        try:
            await asyncio.wait_for(sink.done.wait(), timeout)
        except TimeoutError:
            pass
        server.close()
        results.put(sink.arrived)

    asyncio.run(serve())


def sender(port: int, numbers: list[int], start: float, rate: float, accepted: dict[int, float],
           lock: threading.Lock) -> None:  # fmt: skip
    body = "x" * 70 + "\r\n"
    for n in numbers:
        due = start + n / rate
        pause = due - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
            smtp.sendmail("bench@example.com", ["sink@example.org"], f"Subject: n-{n}\r\n\r\n{body * 60}")
        with lock:
            accepted[n] = time.monotonic()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=350.0, help="messages per second (half the maximum)")
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--acceptors", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()
    args.auth, args.concurrency = False, 100
    tmp = Path(tempfile.mkdtemp(prefix="relay-latency-"))
    sink_port, smtp_port = free_port(), free_port()
    results: Any = multiprocessing.Queue()
    sink_process = multiprocessing.Process(target=run_sink, args=(sink_port, args.messages, args.timeout, results))
    sink_process.start()
    relay = Relay(tmp, smtp_port, sink_port, args)
    accepted: dict[int, float] = {}
    lock = threading.Lock()
    try:
        start = time.monotonic() + 0.5
        groups = [list(range(i, args.messages, args.sessions)) for i in range(args.sessions)]
        threads = [asyncio.to_thread(sender, smtp_port, g, start, args.rate, accepted, lock) for g in groups]
        await asyncio.wait_for(asyncio.gather(*threads), args.timeout)
        arrived = await asyncio.to_thread(results.get, True, args.timeout)
        latencies = [(arrived[n] - accepted[n]) * 1000 for n in accepted if n in arrived]
        sent_for = max(accepted.values()) - start
        print(f"{len(accepted)} messages at {len(accepted) / sent_for:.0f}/s (asked {args.rate:.0f}/s),"
              f" {len(latencies)} arrived; acceptance to arrival:"
              f" p50 {percentile(latencies, 0.5):.1f} ms, p90 {percentile(latencies, 0.9):.1f} ms,"
              f" p99 {percentile(latencies, 0.99):.1f} ms, max {max(latencies):.1f} ms,"
              f" mean {statistics.mean(latencies):.1f} ms")  # fmt: skip
    finally:
        relay.stop()
        sink_process.join(5)
        if sink_process.is_alive():
            sink_process.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
