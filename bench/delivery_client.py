#!/usr/bin/env python3
"""The delivery client alone: messages/s and CPU per message of ``Connection.send`` over kept
connections to a fast local sink, with the sink offering PIPELINING and without it, and pipelined with
a backlog (each message's MAIL, RCPT and DATA in the write of the body before it, ``send(...,
following=...)``, as the engine sends a site's waiting jobs).

``--rtt MS`` puts a proxy in this process between the client and the sink that holds what goes each way
for half of MS milliseconds: a link with that round trip, as to a remote MX (the CPU figures then include
the proxy's, so read the rates).

Starts Postfix's ``smtp-sink`` on loopback (``-p`` makes it not announce PIPELINING, so the
one-command-at-a-time path is measured on the same code), opens ``--connections`` connections
with relay's SmtpClient and sends ``--messages`` messages of ``--size`` bytes over them (one
recipient each unless ``--recipients``), on uvloop as relay serves. CPU is this process's own
(user + system), not the sink's. Bounded by the message count and a timeout per run.

    .venv/bin/python bench/delivery_client.py --messages 20000 --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time

import uvloop

from relay.delivery.client import Connection, SmtpClient
from relay.delivery.mx import Host


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_sink(port: int, pipelining: bool) -> subprocess.Popen[bytes]:
    flags = [] if pipelining else ["-p"]
    return subprocess.Popen(
        ["smtp-sink", *flags, "-u", "root", f"127.0.0.1:{port}", "1024"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def wait_for_port(port: int, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


def message(size: int) -> bytes:
    head = b"From: bench@src.test\r\nTo: rcpt@dst.test\r\nSubject: delivery client bench\r\n\r\n"
    line = b"x" * 76 + b"\r\n"
    return head + line * max(1, (size - len(head)) // len(line))


KINDS = ("one by one", "pipelined", "backlog")  # the sink offers PIPELINING to the last two


async def one_connection(client: SmtpClient, host: Host, count: int, raw: bytes, recipients: int, kind: str) -> int:
    conn = await client.connect([host])
    assert isinstance(conn, Connection), conn
    assert conn.smtp.supports_extension("pipelining") == (kind != "one by one")
    rcpts = [f"r{i}@dst.test" for i in range(recipients)]
    envelope = ("bench@src.test", rcpts, raw)
    sent = 0
    for n in range(count):
        following = None
        if kind == "backlog" and n + 1 < count:
            following = lambda: envelope if conn.can_follow(*envelope, 100) else None  # noqa: E731
        replies = await conn.send(*envelope, following=following)
        if any(r.code != 250 for r in replies.values()):
            raise SystemExit(f"unexpected replies: {replies}")
        sent += 1
    await conn.close()
    return sent


async def delaying_proxy(target: int, delay: float) -> asyncio.Server:
    """A listener that forwards each connection to 127.0.0.1:``target``, each chunk ``delay`` seconds late
    in either direction (in order: a link with a round trip of twice ``delay``)."""
    loop = asyncio.get_running_loop()

    async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                loop.call_later(delay, writer.write, data)
        except ConnectionError:
            pass
        loop.call_later(delay, writer.close)

    async def handle(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        sink_reader, sink_writer = await asyncio.open_connection("127.0.0.1", target)
        await asyncio.gather(pump(client_reader, sink_writer), pump(sink_reader, client_writer))

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def run(args: argparse.Namespace, kind: str) -> tuple[float, float]:
    port = free_port()
    sink = start_sink(port, kind != "one by one")
    proxy = None
    try:
        await wait_for_port(port)
        if args.rtt:
            proxy = await delaying_proxy(port, args.rtt / 2000)
            port = proxy.sockets[0].getsockname()[1]
        client = SmtpClient("bench.test", 5.0, 30.0)
        host = Host("127.0.0.1", port, "127.0.0.1")
        raw = message(args.size)
        share = args.messages // args.connections
        cpu0, t0 = time.process_time(), time.perf_counter()
        work = [one_connection(client, host, share, raw, args.recipients, kind) for _ in range(args.connections)]
        sent = sum(await asyncio.wait_for(asyncio.gather(*work), args.timeout))
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
    finally:
        if proxy is not None:
            proxy.close()
        sink.terminate()
        sink.wait(timeout=10)
    return sent / wall, cpu / sent * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=10000)
    parser.add_argument("--size", type=int, default=5000, help="message size in bytes")
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--recipients", type=int, default=1, help="recipients per message")
    parser.add_argument("--runs", type=int, default=3, help="runs of each kind, alternating")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per run at most")
    parser.add_argument("--rtt", type=float, default=0.0, help="a link with this round trip (ms) to the sink")
    args = parser.parse_args()
    if shutil.which("smtp-sink") is None:
        sys.exit("needs Postfix's smtp-sink (apt-get install postfix)")
    if os.geteuid() != 0:
        sys.exit("smtp-sink -u root needs root")
    results: dict[str, list[tuple[float, float]]] = {kind: [] for kind in KINDS}
    for _ in range(args.runs):
        for kind in KINDS:
            rate, cpu = uvloop.run(run(args, kind))
            results[kind].append((rate, cpu))
            print(f"{kind:10}: {rate:8.0f} msgs/s  {cpu:.3f} ms CPU/msg", flush=True)
    print(
        f"\n{args.messages} x {args.size} B, {args.recipients} recipient(s), {args.connections} connection(s),"
        f" round trip {args.rtt:g} ms;"
        f" median of {args.runs} runs"
    )
    for kind, rows in results.items():
        rate = statistics.median(r for r, _ in rows)
        cpu = statistics.median(c for _, c in rows)
        print(f"{kind:10}: {rate:8.0f} msgs/s  {cpu:.3f} ms CPU/msg")


if __name__ == "__main__":
    main()
