#!/usr/bin/env python3
"""Seconds for a burst queued at once: the delivery engine alone, on a real clock, into sinks on loopback.

- One site (``--sites 1``, the default) with ``max_connections = --connections``, into Postfix's
  smtp-sink: a site holds 20 jobs a connection, and the rest of a burst goes back to the queue until
  the site has room; this times how fast it comes back.
- Many sites (``--sites N``): the messages spread over N domains, each routed to a port of its own (a
  site each) of one small sink process, under ``--concurrency`` connections for all sites together:
  this times how the sites share the overall limit (a connection idle after its site is done, or one
  of a busy site's, makes way for a site that waits).

    .venv/bin/python bench/burst.py --messages 200 --connections 1 --runs 3
    .venv/bin/python bench/burst.py --messages 1000 --sites 500 --concurrency 100
    .venv/bin/python bench/burst.py --messages 2000 --sites 200 --mx   # routed by MX (a DNS server here)
    .venv/bin/python bench/burst.py --messages 20000 --connections 2 --slow 1 --for 15   # a backlog
    PYTHONPATH=../before .venv/bin/python bench/burst.py ...   # another checkout's engine

With ``--mx`` the sites are found through DNS, as without a smarthost: each domain has an MX record of its
own (a site each) answered by a small DNS server in this process, all addresses the one sink. Each run
also prints the process's CPU time a message while the engine delivered.

``--slow N --for T``: a backlog for a slow site. The sink waits N seconds before answering each DATA
(smtp-sink -w), so the one site takes ``--connections``/N messages a second; the engine runs for T
seconds and the run prints what it delivered, how many recipients it claimed and put back in the queue
meanwhile, and its CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from relay.clock import SystemClock
from relay.config import RouteConfig
from relay.delivery.client import SmtpClient
from relay.delivery.engine import Engine, EngineSettings
from relay.delivery.mx import Router, make_resolver
from relay.delivery.retry import RetryPolicy
from relay.message import NewMessage
from relay.store import Store

BODY = b"From: bench@example.com\r\nSubject: burst\r\n\r\n" + b"x" * 70 + b"\r\n"


def free_ports(count: int) -> list[int]:
    """``count`` distinct free ports on loopback (all held open while chosen, so none comes twice)."""
    held = [socket.socket() for _ in range(count)]
    try:
        for s in held:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in held]
    finally:
        for s in held:
            s.close()


def start_sink(port: int, slow: int = 0) -> subprocess.Popen[bytes]:
    """smtp-sink -c counts what it took; the count is read from the store instead (delivered recipients).
    ``slow``: seconds it waits before answering each DATA."""
    if shutil.which("smtp-sink") is None:
        raise SystemExit("bench/burst.py needs Postfix's smtp-sink (apt-get install postfix)")
    delay = ["-w", str(slow)] if slow else []
    proc = subprocess.Popen(["smtp-sink", "-u", "root", *delay, f"127.0.0.1:{port}", "1024"])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("smtp-sink did not start")


async def one_burst(
    directory: Path, ports: list[int], messages: int, connections: int, concurrency: int, sites: int, mx: bool
) -> tuple[float, float, int, int]:
    """Seconds until all are delivered, the process's CPU seconds meanwhile, and the recipients the engine
    claimed and put back."""
    clock = SystemClock()
    store = Store(directory / "queue.sqlite3", clock)
    for n in range(messages):
        domain = "one.example" if sites == 1 else f"d{n % sites}.example"
        await store.queue.enqueue(NewMessage("bench@example.com", [f"u{n}@{domain}"], BODY, "smtp"))
    settings = EngineSettings(
        owner="bench",
        concurrency=concurrency,
        lease=300,
        poll_interval=1.0,
        retry=RetryPolicy((60,), 3600, jitter=0.0),
        idle_timeout=5.0,
        shaping={"default": {"max_connections": connections}},
    )
    client = SmtpClient("relay.bench", connect_timeout=5, command_timeout=30, clock=clock)
    dns = None
    if mx:
        dns, _ = await asyncio.get_running_loop().create_datagram_endpoint(Zone, local_addr=("127.0.0.1", 0))
        router = Router(None, ports[0], make_resolver([("127.0.0.1", dns.get_extra_info("sockname")[1])], 5))
    elif sites == 1:
        router = Router(("127.0.0.1", ports[0]), 25, None)
    else:
        routes = {f"d{n}.example": RouteConfig(("127.0.0.1", port)) for n, port in enumerate(ports)}
        router = Router(None, 25, None, routes=routes)
    engine = Engine(store, router, client, clock, settings, random.Random(0))
    claimed, put_back = counted(store)
    start, cpu = time.monotonic(), time.process_time()
    running = asyncio.create_task(engine.run())
    try:
        while engine.delivered < messages:
            if time.monotonic() - start > 300:
                raise SystemExit(f"timed out: {engine.delivered} of {messages} delivered")
            await asyncio.sleep(0.01)
        return time.monotonic() - start, time.process_time() - cpu, claimed[0], put_back[0]
    finally:
        await engine.stop(5)
        await running
        await store.close()
        if dns is not None:
            dns.close()


def counted(store: Store) -> tuple[list[int], list[int]]:
    """Count what the engine claims from ``store``'s queue and puts back in it (recipients), as it goes."""
    queue = store.queue
    claim_due, postpone = queue.claim_due, queue.postpone
    postpone_each = getattr(queue, "postpone_each", None)  # (absent from the code before the nineteenth session)
    claimed, put_back = [0], [0]

    async def counted_claim(*args: Any, **kwargs: Any) -> Any:
        leased = await claim_due(*args, **kwargs)
        claimed[0] += sum(len(m.recipients) for m in leased)
        return leased

    async def counted_postpone(ids: list[int], until: float) -> None:
        put_back[0] += len(ids)
        await postpone(ids, until)

    async def counted_postpone_each(returns: list[tuple[int, float]]) -> None:
        put_back[0] += len(returns)
        assert postpone_each is not None
        await postpone_each(returns)

    queue.claim_due, queue.postpone = counted_claim, counted_postpone  # type: ignore[method-assign]
    if postpone_each is not None:
        queue.postpone_each = counted_postpone_each  # type: ignore[method-assign]
    return claimed, put_back


async def one_backlog(directory: Path, port: int, messages: int, connections: int, seconds: float) -> str:
    """Run the engine ``seconds`` on a backlog of ``messages`` for one slow site: what it did meanwhile."""
    clock = SystemClock()
    store = Store(directory / "queue.sqlite3", clock)
    batch = [NewMessage("bench@example.com", [f"u{n}@one.example"], BODY, "smtp") for n in range(messages)]
    for first in range(0, messages, 500):
        await store.queue.enqueue_many(batch[first : first + 500])
    settings = EngineSettings(
        owner="bench",
        concurrency=100,
        lease=300,
        poll_interval=1.0,
        retry=RetryPolicy((60,), 3600, jitter=0.0),
        shaping={"default": {"max_connections": connections}},
    )
    client = SmtpClient("relay.bench", connect_timeout=5, command_timeout=30, clock=clock)
    engine = Engine(store, Router(("127.0.0.1", port), 25, None), client, clock, settings, random.Random(0))
    claimed, put_back = counted(store)
    cpu = time.process_time()
    running = asyncio.create_task(engine.run())
    try:
        await asyncio.sleep(seconds)
    finally:
        await engine.stop(5)
        await running
        await store.close()
    return (
        f"{messages} messages to one site, max_connections {connections}, {seconds:.0f} s: delivered"
        f" {engine.delivered}, claimed {claimed[0]}, put back {put_back[0]}, CPU {time.process_time() - cpu:.2f} s"
    )


class Zone(asyncio.DatagramProtocol):
    """Answers MX for d<n>.example with mx.d<n>.example, and A for every mx.* name with 127.0.0.1."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        import dns.message
        import dns.rdatatype
        import dns.rrset

        query = dns.message.from_wire(data)
        response = dns.message.make_response(query)
        question = query.question[0]
        name = question.name.to_text(omit_final_dot=True)
        if question.rdtype == dns.rdatatype.MX and not name.startswith("mx."):
            response.answer.append(dns.rrset.from_text_list(question.name, 300, "IN", "MX", [f"10 mx.{name}."]))
        elif question.rdtype == dns.rdatatype.A and name.startswith("mx."):
            response.answer.append(dns.rrset.from_text_list(question.name, 300, "IN", "A", ["127.0.0.1"]))
        self.transport.sendto(response.to_wire(), addr)  # type: ignore[attr-defined]


def start_sinks(ports: list[int]) -> subprocess.Popen[bytes]:
    """One process listening on each of ``ports`` (a site each)."""
    from throughput import SINK_CODE  # bench/ is this script's directory: the same small sink, on every port

    proc = subprocess.Popen([sys.executable, "-c", SINK_CODE, *map(str, ports)], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != b"ready":
        proc.kill()
        raise SystemExit("the sinks did not start")
    return proc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--connections", type=int, default=1, help="each site's max_connections")
    parser.add_argument("--sites", type=int, default=1, help="sites the messages are spread over")
    parser.add_argument("--concurrency", type=int, default=100, help="[delivery] concurrency: all sites together")
    parser.add_argument("--mx", action="store_true", help="sites found by MX records (a DNS server here)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--slow", type=int, default=0, help="seconds the sink waits before answering each DATA")
    parser.add_argument("--for", dest="seconds", type=float, help="with --slow: run the engine this long")
    args = parser.parse_args()
    if args.slow:
        if args.seconds is None:
            raise SystemExit("--slow needs --for SECONDS")
        port = free_ports(1)[0]
        sink = start_sink(port, args.slow)
        try:
            for _ in range(args.runs):
                with tempfile.TemporaryDirectory() as tmp:
                    print(asyncio.run(one_backlog(Path(tmp), port, args.messages, args.connections, args.seconds)))
        finally:
            sink.terminate()
            sink.wait(10)
        return
    ports = free_ports(1 if args.mx else args.sites)
    sink = start_sink(ports[0]) if len(ports) == 1 else start_sinks(ports)
    try:
        times = []
        for _ in range(args.runs):
            with tempfile.TemporaryDirectory() as tmp:
                seconds, cpu, claimed, put_back = asyncio.run(
                    one_burst(Path(tmp), ports, args.messages, args.connections, args.concurrency, args.sites, args.mx)
                )
            times.append(seconds)
            print(
                f"{args.messages} messages to {args.sites} site(s){' by MX' if args.mx else ''},"
                f" max_connections {args.connections}, concurrency {args.concurrency}: {seconds:.2f} s,"
                f" CPU {cpu * 1000 / args.messages:.3f} ms a message; recipients claimed {claimed},"
                f" put back {put_back}",
                flush=True,
            )
        median = statistics.median(times)
        print(f"median {median:.2f} s, {args.messages / median:.0f} msgs/s")
    finally:
        sink.terminate()
        sink.wait(10)


if __name__ == "__main__":
    main()
