#!/usr/bin/env python3
"""Latency from acceptance to arrival: p50/p99 at a steady rate, half the measured maximum.

Starts relay (a subprocess, as bench/throughput.py does, smarthost pointing at a
sink in this script's own process), first sends --probe messages as fast as relay
takes them to measure the maximum rate (arrivals per second at the sink), then
sends --messages numbered messages at half that rate (or --rate) over --sessions
concurrent SMTP sessions, one connection per message. The injector is an asyncio
client in its own process. For each message it notes when relay answered 250 to
DATA and when the sink received it, and prints the p50, p90, p99 and max of the
difference. Every server listens on loopback; the run is bounded by --messages
and --timeout.

    python bench/latency.py --messages 5000
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import Relay, expect_reply, free_port  # noqa: E402


class Sink:
    def __init__(self, expected: int) -> None:
        self.arrived: dict[int, float] = {}
        self.expected = expected
        self.done = asyncio.Event()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        m = re.search(rb"Subject: n-(\d+)", (envelope.original_content or b"")[:2000])
        if m:
            self.arrived.setdefault(int(m.group(1)), time.monotonic())
            if len(self.arrived) >= self.expected:
                self.done.set()
        return "250 2.0.0 ok"


def run_sink(port: int, expected: int, timeout: float, results: Any) -> None:
    """The sink in its own process (uvloop): arrival times, at the end."""

    async def serve() -> None:
        sink = Sink(expected)
        server = await asyncio.get_running_loop().create_server(
            lambda: SMTP(sink, hostname="sink.bench"), "127.0.0.1", port
        )
        try:
            await asyncio.wait_for(sink.done.wait(), timeout)
        except TimeoutError:
            pass
        server.close()
        results.put(sink.arrived)

    import uvloop

    uvloop.run(serve())


async def inject(port: int, total: int, sessions: int, rate: float | None, start: float) -> dict[int, float]:
    """Message n (Subject n-<n>) leaves at start + n / rate (at once when rate is None), one connection
    per message, MAIL/RCPT/DATA pipelined; returns when relay answered 250 to each one's data."""
    accepted: dict[int, float] = {}
    numbers = iter(range(total))
    body = b"x" * 70 + b"\r\n"

    async def session() -> None:
        await asyncio.sleep(max(0.0, start - time.monotonic()))  # everyone starts at ``start``
        for n in numbers:
            if rate is not None:
                await asyncio.sleep(max(0.0, start + n / rate - time.monotonic()))
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            await expect_reply(reader, b"220")
            writer.write(b"EHLO bench.test\r\n")
            await expect_reply(reader, b"250")
            writer.write(b"MAIL FROM:<bench@example.com>\r\nRCPT TO:<sink@example.org>\r\nDATA\r\n")
            for code in (b"250", b"250", b"354"):
                await expect_reply(reader, code)
            writer.write(b"Subject: n-%d\r\n\r\n%s.\r\n" % (n, body * 60))
            await expect_reply(reader, b"250")
            accepted[n] = time.monotonic()
            writer.write(b"QUIT\r\n")
            writer.close()

    await asyncio.gather(*(session() for _ in range(sessions)))
    return accepted


def run_injector(port: int, total: int, sessions: int, rate: float | None, start: float, results: Any) -> None:
    """The injector in its own process (uvloop), so that it does not share a GIL with anything measured."""
    import uvloop

    results.put(uvloop.run(inject(port, total, sessions, rate, start)))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure(
    relay_port: int, sink_port: int, total: int, sessions: int, rate: float | None, timeout: float
) -> tuple[dict[int, float], dict[int, float], float]:
    """Send ``total`` messages (paced at ``rate``, or as fast as relay takes them) and wait for them at
    the sink; (accepted times, arrival times, when sending started)."""
    sink_results: Any = multiprocessing.Queue()
    sent_results: Any = multiprocessing.Queue()
    sink = multiprocessing.Process(target=run_sink, args=(sink_port, total, timeout, sink_results))
    sink.start()
    time.sleep(0.3)
    start = time.monotonic() + 0.3
    injector = multiprocessing.Process(
        target=run_injector, args=(relay_port, total, sessions, rate, start, sent_results)
    )
    injector.start()
    try:
        accepted = sent_results.get(True, timeout)
        arrived = sink_results.get(True, timeout)
    finally:
        for process in (injector, sink):
            process.join(5)
            if process.is_alive():
                process.kill()
    return accepted, arrived, start


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rate", type=float, default=None, help="messages per second; by default half the maximum measured first"
    )
    parser.add_argument("--probe", type=int, default=3000, help="messages sent to measure the maximum rate")
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument(
        "--acceptors", default="auto", help="relay's [server] acceptors (default \"auto\", the default configuration's)"
    )
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()
    args.auth, args.dkim, args.concurrency = False, False, 100
    tmp = Path(tempfile.mkdtemp(prefix="relay-latency-"))
    sink_port, smtp_port = free_port(), free_port()
    relay = Relay(tmp, smtp_port, sink_port, args)
    try:
        rate = args.rate
        if rate is None:
            _, arrived, start = measure(smtp_port, sink_port, args.probe, args.sessions, None, args.timeout)
            maximum = len(arrived) / (max(arrived.values()) - start)
            rate = maximum / 2
            print(f"maximum: {args.probe} messages arrived at {maximum:.0f}/s; measuring at half, {rate:.0f}/s")
        accepted, arrived, start = measure(smtp_port, sink_port, args.messages, args.sessions, rate, args.timeout)
        latencies = [(arrived[n] - accepted[n]) * 1000 for n in accepted if n in arrived]
        sent_for = max(accepted.values()) - start
        print(
            f"{len(accepted)} messages at {len(accepted) / sent_for:.0f}/s (asked {rate:.0f}/s),"
            f" {len(latencies)} arrived; acceptance to arrival:"
            f" p50 {percentile(latencies, 0.5):.1f} ms, p90 {percentile(latencies, 0.9):.1f} ms,"
            f" p99 {percentile(latencies, 0.99):.1f} ms, max {max(latencies):.1f} ms,"
            f" mean {statistics.mean(latencies):.1f} ms"
        )
    finally:
        relay.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
