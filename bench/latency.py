#!/usr/bin/env python3
"""Latency from acceptance to arrival: p50/p99 at a steady rate, half the measured maximum.

Starts relay (a subprocess, as bench/throughput.py does, smarthost pointing at a
sink in this script's own process; ``--target postfix``: a private Postfix
instead, as root), first sends --probe messages as fast as it takes them to
measure the maximum rate (arrivals per second at the sink), then sends
--messages numbered messages at half that rate (or --rate) over --sessions
concurrent SMTP sessions, one connection per message. The injector and the sink
each run in a process of their own and answer from ``asyncio.Protocol``
callbacks (no streams, no task per connection): with aiosmtpd and asyncio
streams they spent ~0.5 ms of CPU per message each, as much as relay, on a
machine of two cores. For each message the injector notes when relay answered
250 to DATA and the sink when its data ended, and the script prints the p50,
p90, p99 and max of the difference. A difference below zero is a message that
reached the sink before the injector read relay's 250 (relay answers and wakes
its delivery after the same commit; answering the twenty clients of one group
commit takes a while). Every server listens on loopback; the run is bounded by
--messages and --timeout.

    python bench/latency.py --messages 5000 [--target postfix]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import multiprocessing
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import Postfix, Relay, free_port  # noqa: E402

SUBJECT = re.compile(rb"Subject: n-(\d+)")


class SinkProtocol(asyncio.Protocol):
    """One SMTP connection to the sink, answered from ``data_received`` (no stream, no task): it notes
    when each message's end of data arrives. Commands may come pipelined (relay pipelines MAIL, RCPT and
    DATA); the data is searched for its end, which may come split across reads."""

    def __init__(self, arrived: dict[int, float], done: Callable[[], None]) -> None:
        self.arrived = arrived
        self.done = done
        self.buffer = b""
        self.in_data = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(b"220 sink.bench ESMTP\r\n")  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buffer += data
        replies = []
        while True:
            if self.in_data:
                end = self.buffer.find(b"\r\n.\r\n")
                if end < 0:
                    break
                body, self.buffer = self.buffer[:end], self.buffer[end + 5 :]
                found = SUBJECT.search(body, 0, 2000)
                if found:
                    self.arrived.setdefault(int(found.group(1)), time.monotonic())
                    self.done()
                self.in_data = False
                replies.append(b"250 2.0.0 ok\r\n")
                continue
            line, sep, rest = self.buffer.partition(b"\n")
            if not sep:
                break
            self.buffer = rest
            verb = line[:4].upper()
            if verb == b"EHLO":
                replies.append(b"250-sink.bench\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
            elif verb == b"DATA":
                replies.append(b"354 go ahead\r\n")
                self.in_data = True
                self.buffer = b"\r\n" + self.buffer  # the CRLF ending DATA starts the data's end search
            elif verb == b"QUIT":
                replies.append(b"221 bye\r\n")
                self.transport.write(b"".join(replies))
                self.transport.close()
                return
            else:  # MAIL, RCPT, RSET, NOOP, HELO
                replies.append(b"250 ok\r\n")
        if replies:
            self.transport.write(b"".join(replies))


class InjectorProtocol(asyncio.Protocol):
    """One message over one connection, driven from ``data_received``: EHLO, then MAIL, RCPT and DATA in
    one write, then the data; ``done`` gets the time of relay's 250 to the data (or the error)."""

    STAGES = (b"220", b"250", b"250", b"250", b"354", b"250")  # the final reply each step waits for

    def __init__(self, message: bytes, done: asyncio.Future[float]) -> None:
        self.message = message
        self.done = done
        self.buffer = b""
        self.stage = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buffer += data
        while not self.done.done():
            line, sep, rest = self.buffer.partition(b"\n")
            if not sep:
                return
            self.buffer = rest
            if line[3:4] == b"-":
                continue  # a multi-line reply goes on
            if not line.startswith(self.STAGES[self.stage]):
                self.done.set_exception(RuntimeError(f"expected {self.STAGES[self.stage]!r}, got {line!r}"))
                self.transport.close()
                return
            self.stage += 1
            if self.stage == 1:
                self.transport.write(b"EHLO bench.test\r\n")
            elif self.stage == 2:
                self.transport.write(b"MAIL FROM:<bench@example.com>\r\nRCPT TO:<sink@example.org>\r\nDATA\r\n")
            elif self.stage == 5:
                self.transport.write(self.message)
            elif self.stage == 6:
                self.done.set_result(time.monotonic())
                self.transport.write(b"QUIT\r\n")
                self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(ConnectionError(f"relay closed the connection: {exc}"))


def run_sink(port: int, expected: int, timeout: float, results: Any) -> None:
    """The sink in its own process (uvloop): arrival times, at the end."""

    async def serve() -> None:
        arrived: dict[int, float] = {}
        finished = asyncio.Event()

        def done() -> None:
            if len(arrived) >= expected:
                finished.set()

        server = await asyncio.get_running_loop().create_server(lambda: SinkProtocol(arrived, done), "127.0.0.1", port)
        try:
            await asyncio.wait_for(finished.wait(), timeout)
        except TimeoutError:
            pass
        server.close()
        results.put(arrived)

    import uvloop

    uvloop.run(serve())


async def inject(port: int, total: int, sessions: int, rate: float | None, start: float) -> dict[int, float]:
    """Message n (Subject n-<n>) leaves at start + n / rate (at once when rate is None), one connection
    per message, MAIL/RCPT/DATA pipelined; returns when relay answered 250 to each one's data."""
    accepted: dict[int, float] = {}
    numbers = iter(range(total))
    body = b"x" * 70 + b"\r\n"
    loop = asyncio.get_running_loop()

    async def session() -> None:
        await asyncio.sleep(max(0.0, start - time.monotonic()))  # everyone starts at ``start``
        for n in numbers:
            if rate is not None:
                await asyncio.sleep(max(0.0, start + n / rate - time.monotonic()))
            message = b"Subject: n-%d\r\n\r\n%s.\r\n" % (n, body * 60)
            done: asyncio.Future[float] = loop.create_future()
            await loop.create_connection(functools.partial(InjectorProtocol, message, done), "127.0.0.1", port)
            accepted[n] = await done

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
    parser.add_argument(
        "--target", choices=("relay", "postfix"), default="relay", help="postfix: a private Postfix (as root)"
    )
    args = parser.parse_args()
    args.auth, args.dkim, args.concurrency, args.webhook, args.server = False, False, 100, False, []
    tmp = Path(tempfile.mkdtemp(prefix="relay-latency-"))
    sink_port, smtp_port = free_port(), free_port()
    server = (Postfix if args.target == "postfix" else Relay)(tmp, smtp_port, sink_port, args)
    print(f"{args.target}:")
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
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
