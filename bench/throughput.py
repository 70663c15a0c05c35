#!/usr/bin/env python3
"""Throughput benchmark: inject N messages over K concurrent SMTP sessions, deliver to a sink.

Starts relay (a subprocess, its own temp data dir) with ``smarthost`` pointing
at a sink, injects the messages (one connection per message), and prints:

- accepted msgs/s: messages / time until the last 250 to DATA
- end-to-end msgs/s: messages / time until the queue shows every one delivered
- CPU seconds used by relay, per message

The injector and sink are Postfix's smtp-source / smtp-sink when installed
(C programs that cost little CPU), else small asyncio ones in this file. Every
server listens on loopback; the run is bounded by --messages and --timeout.

    python bench/throughput.py --messages 5000 --sessions 20 --size 5000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_message(size: int) -> bytes:
    head = b"From: bench@example.com\r\nTo: sink@example.org\r\nSubject: bench\r\n\r\n"
    line = b"x" * 76 + b"\r\n"
    body = line * max(1, (size - len(head)) // len(line))
    return head + body


# --- injector and sink written here, for machines without Postfix's tools ---------------


async def _expect(reader: asyncio.StreamReader, code: bytes) -> bytes:
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("server closed the connection")
        if line[3:4] != b"-":
            if not line.startswith(code):
                raise RuntimeError(f"expected {code!r}, got {line!r}")
            return line


async def inject_python(port: int, total: int, sessions: int, message: bytes) -> int:
    remaining = total
    sent = 0

    async def session() -> None:
        nonlocal remaining, sent
        while remaining > 0:
            remaining -= 1
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            await _expect(reader, b"220")
            for command, code in (
                (b"EHLO bench.test", b"250"),
                (b"MAIL FROM:<bench@example.com>", b"250"),
                (b"RCPT TO:<sink@example.org>", b"250"),
                (b"DATA", b"354"),
            ):
                writer.write(command + b"\r\n")
                await _expect(reader, code)
            writer.write(message + b".\r\n")
            await _expect(reader, b"250")
            writer.write(b"QUIT\r\n")
            await writer.drain()
            writer.close()
            sent += 1

    await asyncio.gather(*(session() for _ in range(sessions)))
    return sent


SINK_CODE = r"""
import asyncio, sys
async def handle(reader, writer):
    writer.write(b"220 sink ESMTP\r\n")
    in_data = False
    while True:
        line = await reader.readline()
        if not line:
            break
        if in_data:
            if line == b".\r\n":
                in_data = False
                writer.write(b"250 2.0.0 Ok\r\n")
            continue
        verb = line[:4].upper()
        if verb == b"EHLO":
            writer.write(b"250-sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE 100000000\r\n")
        elif verb == b"DATA":
            in_data = True
            writer.write(b"354 go\r\n")
        elif verb == b"QUIT":
            writer.write(b"221 bye\r\n")
            break
        else:
            writer.write(b"250 Ok\r\n")
    writer.close()
async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", int(sys.argv[1]), backlog=1024)
    await server.serve_forever()
asyncio.run(main())
"""


def start_sink(kind: str, port: int) -> subprocess.Popen[bytes]:
    if kind == "smtp-sink":
        return subprocess.Popen(
            ["smtp-sink", "-c", "-u", "root", f"127.0.0.1:{port}", "1024"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    return subprocess.Popen([sys.executable, "-c", SINK_CODE, str(port)])


def delivered_count(db: Path) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute("SELECT count(*) FROM recipients WHERE state = 'delivered'").fetchone()[0]
    finally:
        conn.close()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def wait_listening(port: int, log: Path, proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"relay exited:\n{log.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("relay did not start")


def run(args: argparse.Namespace) -> dict[str, object]:
    tmp = Path(tempfile.mkdtemp(prefix="relay-bench-"))
    smtp_port, http_port, sink_port = free_port(), free_port(), free_port()
    sink_kind = args.sink if args.sink != "auto" else ("smtp-sink" if shutil.which("smtp-sink") else "python")
    injector = (
        args.injector if args.injector != "auto" else ("smtp-source" if shutil.which("smtp-source") else "python")
    )
    config = tmp / "relay.toml"
    config.write_text(
        f"""
[server]
hostname = "relay.bench"
data_dir = "{tmp / "data"}"
log_level = "info"
acceptors = {args.acceptors}
[smtp]
listen = ["127.0.0.1:{smtp_port}"]
[http]
listen = "127.0.0.1:{http_port}"
[delivery]
smarthost = "127.0.0.1:{sink_port}"
concurrency = {args.concurrency}
"""
    )
    sink = start_sink(sink_kind, sink_port)
    log = tmp / "relay.log"
    with log.open("wb") as fh:
        relay = subprocess.Popen(
            [sys.executable, "-m", "relay", "serve", "--config", str(config)],
            stdout=fh,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
    try:
        wait_listening(smtp_port, log, relay)
        time.sleep(0.5 if args.acceptors else 0)  # let the acceptor processes bind
        pids = [relay.pid, *children(relay.pid)]
        cpu_before = sum(cpu_seconds(p) for p in pids)
        message = make_message(args.size)
        start = time.monotonic()
        if injector == "smtp-source":
            msg_file = tmp / "message.eml"
            msg_file.write_bytes(message.replace(b"\r\n", b"\n"))
            subprocess.run(
                [
                    "smtp-source",
                    "-s",
                    str(args.sessions),
                    "-m",
                    str(args.messages),
                    "-f",
                    "bench@example.com",
                    "-t",
                    "sink@example.org",
                    "-F",
                    str(msg_file),
                    f"127.0.0.1:{smtp_port}",
                ],
                check=True,
                timeout=args.timeout,
            )
        else:
            asyncio.run(asyncio.wait_for(inject_python(smtp_port, args.messages, args.sessions, message), args.timeout))
        accepted_at = time.monotonic()
        deadline = start + args.timeout
        db = tmp / "data" / "relay.sqlite3"
        while (done := delivered_count(db)) < args.messages:
            if time.monotonic() > deadline:
                raise SystemExit(f"timed out: {done} of {args.messages} delivered")
            time.sleep(0.02)
        finished_at = time.monotonic()
        cpu = sum(cpu_seconds(p) for p in pids) - cpu_before
    finally:
        relay.terminate()
        relay.wait(30)
        sink.terminate()
        sink.wait(10)
    errors = [line for line in log.read_text(errors="replace").splitlines() if re.search(r"ERROR|Traceback", line)]
    result = {
        "messages": args.messages,
        "sessions": args.sessions,
        "acceptors": args.acceptors,
        "size": len(message),
        "injector": injector,
        "sink": sink_kind,
        "accepted_per_s": round(args.messages / (accepted_at - start), 1),
        "end_to_end_per_s": round(args.messages / (finished_at - start), 1),
        "relay_cpu_ms_per_message": round(cpu * 1000 / args.messages, 3),
        "errors_logged": len(errors),
    }
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--size", type=int, default=5000, help="message size in bytes")
    parser.add_argument("--concurrency", type=int, default=100, help="relay's [delivery] concurrency")
    parser.add_argument("--injector", choices=("auto", "smtp-source", "python"), default="auto")
    parser.add_argument("--sink", choices=("auto", "smtp-sink", "python"), default="auto")
    parser.add_argument("--timeout", type=float, default=600, help="give up after this many seconds")
    parser.add_argument("--acceptors", type=int, default=0, help="relay's [server] acceptors (processes)")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (config, log, queue)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    for _ in range(args.runs):
        result = run(args)
        if args.json:
            print(json.dumps(result))
        else:
            print(
                f"{result['messages']} msgs x {result['size']} B, {result['sessions']} sessions, "
                f"{result['acceptors']} acceptor processes "
                f"({result['injector']} → relay → {result['sink']}): "
                f"accepted {result['accepted_per_s']}/s, end-to-end {result['end_to_end_per_s']}/s, "
                f"relay CPU {result['relay_cpu_ms_per_message']} ms/msg, errors logged {result['errors_logged']}"
            )


if __name__ == "__main__":
    main()
