#!/usr/bin/env python3
"""Throughput benchmark: inject N messages over K concurrent SMTP sessions, deliver to a sink.

Starts relay (a subprocess, its own temp data dir) with ``smarthost`` pointing
at a sink, injects the messages (one connection per message), and prints:

- accepted msgs/s: messages / time until the last 250 to DATA
- end-to-end msgs/s: messages / time until the queue shows every one delivered
- CPU seconds used by relay, per message, and of them the kernel's
- context switches per message over every thread of relay's processes (/proc: voluntary and involuntary)
- how busy the whole machine was from the first connection to the last delivery (/proc/stat: 100% less
  idle and I/O wait), and, with smtp-source and smtp-sink, their CPU per message: with every core busy
  the rate follows the CPU a message costs everything on the machine, relay and this harness both

``--store postgresql`` runs relay on a private PostgreSQL cluster (tests/pg.py: a temporary directory,
loopback, fsync on) instead of SQLite, and adds the database server's CPU per message and, from
pg_stat_statements, the statements (each a round trip) and the writer's commits per message.

The injector and sink are Postfix's smtp-source / smtp-sink when installed
(C programs that cost little CPU), else small asyncio ones in this file. Every
server listens on loopback; the run is bounded by --messages and --timeout.

    python bench/throughput.py --messages 5000 --sessions 20 --size 5000

``--target before --before DIR`` measures the relay of another checkout (its own ``.venv``) with this
harness, alternating with ``--target relay``: a before/after comparison on the same machine in the
same minutes, and the way to tell a slower machine from slower code (the VM's speed drifts through
a day; the code of an earlier day, run beside today's, says by how much)::

    git worktree add ../before REV && (cd ../before && python3 -m venv .venv && .venv/bin/pip install -e .)
    python bench/throughput.py --runs 3 --target before --target relay --before ../before

The interpreter counts: Debian's ``python3`` (built with PGO and LTO, what ``sudo python3 -m venv`` gives on a
server) ran relay here with ~6% less CPU a message than a Python built from source without
``--enable-optimizations --with-lto`` (pyenv's default). Each result names the interpreter; ``--python``
runs this checkout's relay with another one (its environment must have this checkout installed)::

    /usr/bin/python3 -m venv ../system-venv && ../system-venv/bin/pip install -e .
    python bench/throughput.py --python ../system-venv/bin/python

``--target signed`` is this checkout's relay with DKIM on (rsa-2048) whatever ``--dkim`` says; beside
``--target relay`` it gives DKIM's share of the unsigned rate, run by run::

    python bench/throughput.py --messages 10000 --runs 6 --target relay --target signed

With ``--together`` a run's targets run at the same time instead, each with its own injector and sink:
when the VM's speed changes from one minute to the next, both see the same change. Each has about half
the machine then, so the figures are for comparing the two (CPU per message), not for their rates. "while
both ran" is each one's CPU per message delivered up to the moment the first of them was done.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import resource
import shutil
import signal
import socket
import sqlite3
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RELAYS = ("relay", "before", "signed")  # targets that are a relay: this checkout's, --before's, or this one's signing


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_message(size: int) -> bytes:
    head = b"From: bench@example.com\r\nTo: sink@example.org\r\nSubject: bench\r\n\r\n"
    line = b"x" * 76 + b"\r\n"
    body = line * max(1, (size - len(head)) // len(line))
    return head + body


# --- injector and sink written here, for machines without Postfix's tools ---------------


async def expect_reply(reader: asyncio.StreamReader, code: bytes) -> bytes:
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("server closed the connection")
        if line[3:4] != b"-":
            if not line.startswith(code):
                raise RuntimeError(f"expected {code!r}, got {line!r}")
            return line


async def inject_python(
    port: int, total: int, sessions: int, message: bytes, login: tuple[str, str] | None = None
) -> int:
    """One connection per message; with ``login``: STARTTLS, then AUTH PLAIN, on every connection."""
    remaining = total
    sent = 0
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE

    async def session() -> None:
        nonlocal remaining, sent
        while remaining > 0:
            remaining -= 1
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            await expect_reply(reader, b"220")
            if login is not None:
                writer.write(b"EHLO bench.test\r\nSTARTTLS\r\n")
                await expect_reply(reader, b"250")
                await expect_reply(reader, b"220")
                await writer.start_tls(context)
                token = base64.b64encode(f"\0{login[0]}\0{login[1]}".encode())
                writer.write(b"EHLO bench.test\r\nAUTH PLAIN " + token + b"\r\n")
                await expect_reply(reader, b"250")
                await expect_reply(reader, b"235")
            else:
                writer.write(b"EHLO bench.test\r\n")
                await expect_reply(reader, b"250")
            for command, code in (
                (b"MAIL FROM:<bench@example.com>", b"250"),
                (b"RCPT TO:<sink@example.org>", b"250"),
                (b"DATA", b"354"),
            ):
                writer.write(command + b"\r\n")
                await expect_reply(reader, code)
            writer.write(message + b".\r\n")
            await expect_reply(reader, b"250")
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
    servers = [await asyncio.start_server(handle, "127.0.0.1", int(p), backlog=1024) for p in sys.argv[1:]]
    print("ready", flush=True)
    await asyncio.gather(*(server.serve_forever() for server in servers))
asyncio.run(main())
"""


WEBHOOK_RECEIVER_CODE = r"""
import asyncio, base64, hashlib, hmac, sys
from pathlib import Path
secret_file = Path(sys.argv[2])
counts = {"received": 0, "bad_signatures": 0}
key = []
async def handle(reader, writer):
    while True:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            break
        lines = head.split(b"\r\n")
        method = lines[0].split(b" ", 1)[0]
        fields = dict(line.split(b":", 1) for line in lines[1:] if b":" in line)
        headers = {k.strip().lower(): v.strip() for k, v in fields.items()}
        body = await reader.readexactly(int(headers.get(b"content-length", b"0")))
        if method == b"GET":
            text = b"%d %d" % (counts["received"], counts["bad_signatures"])
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(text), text))
            continue
        if not key:
            key.append(base64.b64decode(secret_file.read_text().strip().removeprefix("whsec_")))
        signed = headers[b"webhook-id"] + b"." + headers[b"webhook-timestamp"] + b"." + body
        mac = b"v1," + base64.b64encode(hmac.new(key[0], signed, hashlib.sha256).digest())
        counts["received"] += 1
        counts["bad_signatures"] += mac not in headers[b"webhook-signature"].split()
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
    writer.close()
async def main():
    servers = [await asyncio.start_server(handle, "127.0.0.1", int(p), backlog=1024) for p in sys.argv[1:2]]
    print("ready", flush=True)
    await asyncio.gather(*(server.serve_forever() for server in servers))
asyncio.run(main())
"""


class WebhookReceiver:
    """--webhook: an HTTP endpoint (its own process) that checks each POST's signature and counts them."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.secret_file = tmp / "webhook-secret"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WEBHOOK_RECEIVER_CODE, str(self.port), str(self.secret_file)]
        )
        wait_listening(self.port, lambda: self.proc.poll() is None)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/events"

    def counts(self) -> tuple[int, int]:
        """(POSTs received, of them with a wrong signature)."""
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/count", timeout=10) as response:
            received, bad = response.read().split()
        return int(received), int(bad)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def start_sink(kind: str, port: int) -> subprocess.Popen[bytes]:
    if kind == "smtp-sink":
        return subprocess.Popen(
            ["smtp-sink", "-c", "-u", "root", f"127.0.0.1:{port}", "1024"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    return subprocess.Popen([sys.executable, "-c", SINK_CODE, str(port)], stdout=subprocess.DEVNULL)


def cpu_seconds(pid: int, reaped_children: bool = False, kernel_only: bool = False) -> float:
    """utime + stime of a process (plus its reaped children's, for Postfix's master); stime alone if kernel_only."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    ticks = int(fields[12]) if kernel_only else int(fields[11]) + int(fields[12])
    if reaped_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / os.sysconf("SC_CLK_TCK")


def machine_ticks() -> tuple[int, int]:
    """(busy, all) clock ticks of every core so far (/proc/stat; idle and I/O wait are not busy)."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return sum(fields) - fields[3] - fields[4], sum(fields)


def busy_share(before: tuple[int, int], after: tuple[int, int]) -> float | None:
    """The share of the machine's time that was busy between two :func:`machine_ticks` readings."""
    ticks = after[1] - before[1]
    return round((after[0] - before[0]) / ticks, 2) if ticks > 0 else None


def children_cpu() -> float:
    """CPU seconds of this process's children that have been waited for (smtp-source, once it is done)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def descendants(pid: int) -> list[int]:
    """Children, their children and so on: an acceptor's signing process is relay's too."""
    found = children(pid)
    for child in list(found):
        found += descendants(child)
    return found


def wait_listening(port: int, alive: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise SystemExit("the server under test exited while starting")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on port {port}")


def context_switches(pids: list[int]) -> int:
    """Every thread's context switches so far, voluntary (it waited: a lock, the GIL, the disk, a socket) and
    involuntary (something else was given its core), summed over the processes."""
    total = 0
    for pid in pids:
        for status in Path(f"/proc/{pid}/task").glob("*/status"):
            try:
                lines = status.read_text().splitlines()
            except (FileNotFoundError, ProcessLookupError):  # a thread that has just ended
                continue
            total += sum(int(line.split()[1]) for line in lines if line.startswith(_SWITCHES))
    return total


_SWITCHES = ("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")


def pss_mb(pids: list[int]) -> float:
    """The processes' proportional set size together (shared pages divided among their sharers), MB."""
    total_kb = 0
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        match = re.search(r"^Pss:\s+(\d+) kB", text, re.MULTILINE)
        total_kb += int(match.group(1)) if match else 0
    return round(total_kb / 1024, 1)


def fsync_latency(directory: Path, samples: int = 300) -> tuple[float, float]:
    """p50 and p99 milliseconds of a small write + fsync in ``directory``: what a commit costs on this disk.

    Postfix fsyncs once per message and relay once per group of messages, so the ratio between them
    moves with this figure; it is printed beside every result.
    """
    path = directory / "fsync-probe"
    took = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for _ in range(samples):
            start = time.perf_counter()
            os.write(fd, b"x" * 512)
            os.fsync(fd)
            took.append((time.perf_counter() - start) * 1000)
    finally:
        os.close(fd)
        path.unlink()
    took.sort()
    return round(took[len(took) // 2], 3), round(took[min(len(took) - 1, int(len(took) * 0.99))], 3)


class Profiler:
    """py-spy (``--gil``: only samples holding the GIL, i.e. Python's own CPU) on each of ``pids`` until stopped.

    Each process's stacks are written in py-spy's raw (collapsed) form to ``directory/<name>-<pid>.txt``;
    bench/profile_summary.py reads them.
    """

    def __init__(self, directory: Path, name: str, pids: list[int]) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
        if spy is None:
            raise SystemExit("--profile needs py-spy (pip install py-spy)")
        self.procs = [
            subprocess.Popen(
                [
                    spy,
                    "record",
                    "--pid",
                    str(pid),
                    "--gil",
                    "--rate",
                    "200",
                    "--format",
                    "raw",
                    "--nonblocking",
                    "--output",
                    str(directory / f"{name}-{pid}.txt"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for pid in pids
        ]
        time.sleep(0.5)  # py-spy attaches

    def stop(self) -> None:
        for proc in self.procs:
            proc.send_signal(signal.SIGINT)
        for proc in self.procs:
            proc.wait(30)


def wait_started(log: Path, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """Until relay logs "relay started": the main process binds the ports before its acceptor processes
    have started (connections wait in the backlog meanwhile) and says so once they all answer."""
    deadline = time.monotonic() + timeout
    while b"relay started" not in log.read_bytes() and time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"relay exited while starting:\n{log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.05)


class Database:
    """A private PostgreSQL cluster for one run, with pg_stat_statements to count round trips."""

    def __init__(self) -> None:
        sys.path.insert(0, str(REPO))
        from tests.pg import PostgresCluster

        self.cluster = PostgresCluster(fsync=True, settings={"shared_preload_libraries": "'pg_stat_statements'"})
        self.cluster.start()
        self.url = self.cluster.create_database("bench")
        self.query("CREATE EXTENSION pg_stat_statements")

    def query(self, sql: str) -> list[tuple[object, ...]]:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            cursor = conn.execute(sql.encode())
            return cursor.fetchall() if cursor.description is not None else []

    def counters(self) -> tuple[int, int]:
        """(statements run, transactions committed) in the bench database so far."""
        statements = self.query(
            "SELECT coalesce(sum(s.calls), 0) FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid"
            " WHERE d.datname = 'bench'"
        )[0][0]
        # The writer's COMMITs (autocommit reads are transactions too, but not group commits).
        commits = self.query(
            "SELECT coalesce(sum(s.calls), 0) FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid"
            " WHERE d.datname = 'bench' AND upper(s.query) = 'COMMIT'"
        )[0][0]
        return int(str(statements)), int(str(commits))

    def top_statements(self, messages: int, limit: int = 20) -> list[str]:
        """The statements run most, per message: where the round trips go, and the server's time in each
        (planning and execution, in microseconds a message)."""
        rows = self.query(
            "SELECT s.calls, s.total_plan_time + s.total_exec_time,"
            " left(regexp_replace(s.query, '\\s+', ' ', 'g'), 100) FROM pg_stat_statements s"
            f" JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = 'bench' ORDER BY s.calls DESC LIMIT {limit}"
        )
        return [
            f"{int(str(calls)) / messages:6.2f} {float(str(ms)) * 1000 / messages:7.0f} us  {query}"
            for calls, ms, query in rows
        ]

    def pids(self) -> list[int]:
        postmaster = int((self.cluster.data / "postmaster.pid").read_text().split()[0])
        return [postmaster, *children(postmaster)]

    def cpu(self) -> float:
        return sum(cpu_seconds(p) for p in self.pids())

    def stop(self) -> None:
        self.cluster.stop()


class Cluster:
    """Several relay nodes (own data dir and ports each) on one PostgreSQL database; the load is split evenly."""

    name = "relay"

    def __init__(self, tmp: Path, sink_port: int, args: argparse.Namespace, database: Database) -> None:
        self.ports = [free_port() for _ in range(args.nodes)]
        self.nodes = []
        sys.path.insert(0, str(REPO))
        from relay.secrets import load_key_file

        key_file = tmp / "store.key"  # every node seals and opens the store's secrets with the same key
        load_key_file(key_file, create=True)
        for index, port in enumerate(self.ports):
            node_tmp = tmp / f"node{index}"
            node_tmp.mkdir()
            self.nodes.append(Relay(node_tmp, port, sink_port, args, database, key_file))
        self.login = None

    def exited(self) -> str | None:
        return next((log for node in self.nodes if (log := node.exited()) is not None), None)

    def cpu(self) -> float:
        return sum(node.cpu() for node in self.nodes)

    def memory(self) -> float:
        return sum(node.memory() for node in self.nodes)

    def delivered(self) -> int:
        return self.nodes[0].delivered()

    def webhooks_waiting(self) -> int:
        return self.nodes[0].webhooks_waiting()

    def webhooks_sent(self) -> int:
        return self.nodes[0].webhooks_sent()

    def add_webhook(self, url: str, secret_file: Path) -> None:
        self.nodes[0].add_webhook(url, secret_file)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def errors(self) -> int:
        return sum(node.errors() for node in self.nodes)


def relay_checkout(args: argparse.Namespace, target: str) -> tuple[str, Path]:
    """The Python and the source tree that run ``target``: this checkout's for relay (--python's interpreter if
    given), --before's for before."""
    if target != "before":
        return str(getattr(args, "python", None) or sys.executable), REPO  # (latency.py has no --python)
    python = args.before / ".venv" / "bin" / "python"
    if not python.exists():
        raise SystemExit(f"--before {args.before}: no .venv/bin/python there (make that checkout's virtualenv)")
    return str(python), args.before


def interpreter(python: str) -> str:
    """``python``'s version and where it really is (a virtualenv's python is a link to its base interpreter):
    a distribution's build (PGO and LTO) runs relay with ~6% less CPU than a plain source build."""
    out = subprocess.run(
        [python, "-c", "import os, platform, sys; print(platform.python_version(), os.path.realpath(sys.executable))"],
        capture_output=True,
        text=True,
        check=True,
    )
    version, _, path = out.stdout.strip().partition(" ")
    home = str(Path.home())
    if path.startswith(home + "/"):  # reports name no home directory
        path = "~" + path[len(home) :]
    return f"{version} {path}"


def check_python(python: Path) -> None:
    """--python must import relay from this checkout (the acceptor processes start with -P, off the source tree)."""
    out = subprocess.run(
        [str(python), "-P", "-c", "import relay; print(relay.__file__)"], capture_output=True, text=True, cwd="/"
    )
    found = Path(out.stdout.strip()).resolve() if out.returncode == 0 else None
    if found is None or REPO.resolve() not in found.parents:
        raise SystemExit(
            f"--python {python}: it must have this checkout installed (its pip install -e {REPO}); it imports "
            + (f"relay from {found.parent}" if found else "no relay")
        )


class Relay:
    """relay as a subprocess with its own temp data dir (and its store there, or in ``database``)."""

    name = "relay"  # or "before": another checkout's relay (--before); or "signed": this one's, DKIM on

    def __init__(
        self,
        tmp: Path,
        smtp_port: int,
        sink_port: int,
        args: argparse.Namespace,
        database: Database | None = None,
        key_file: Path | None = None,
        name: str = "relay",
    ) -> None:
        self.name = name
        self.tmp = tmp
        self.db = tmp / "data" / "relay.sqlite3"
        self.database = database
        self.log = tmp / "relay.log"
        config = self.config = tmp / "relay.toml"
        self.http_port = free_port()
        server_lines = "".join(f"{setting}\n" for setting in args.server)
        if not any(setting.split("=")[0].strip() == "log_level" for setting in args.server):
            server_lines = 'log_level = "info"\n' + server_lines  # (--server log_level=... instead)
        config.write_text(
            f"""
[server]
hostname = "relay.bench"
data_dir = "{tmp / "data"}"
acceptors = {args.acceptors if args.acceptors.isdigit() else '"auto"'}
{server_lines}[smtp]
listen = ["127.0.0.1:{smtp_port}"]
trusted_networks = {"[]" if args.auth else '["127.0.0.1/32"]'}
max_connections_per_ip = 10000
[http]
listen = "127.0.0.1:{self.http_port}"
[delivery]
smarthost = "127.0.0.1:{sink_port}"
concurrency = {args.concurrency}
"""
            + (self._dkim_section(tmp) if args.dkim or self.name == "signed" else "")
            + ("[webhooks]\nallow_private_targets = true\n" if args.webhook else "")
            + (f'[store]\nurl = "{database.url}"\n' if database is not None else "")
            + (f'secret_key_file = "{key_file}"\n' if database is not None and key_file is not None else "")
        )
        self.login: tuple[str, str] | None = None
        self.args = args
        python, repo = relay_checkout(args, self.name)
        if args.auth:
            out = subprocess.run(
                [python, "-m", "relay", "smtp-credentials", "create", "--json", "--config", str(config)],
                capture_output=True,
                text=True,
                check=True,
                cwd=repo,
            )
            created = json.loads(out.stdout)
            self.login = (created["username"], created["password"])
        with self.log.open("wb") as fh:
            self.proc = subprocess.Popen(
                [python, "-m", "relay", "serve", "--config", str(config)],
                stdout=fh,
                stderr=subprocess.STDOUT,
                cwd=repo,
            )
        wait_listening(smtp_port, lambda: self.proc.poll() is None)
        wait_started(self.log, self.proc)

    @property
    def pids(self) -> list[int]:
        """relay's processes now (a signing process starts with the first signature)."""
        return [self.proc.pid, *descendants(self.proc.pid)]

    @staticmethod
    def _dkim_section(tmp: Path) -> str:
        """--dkim: an RSA-2048 key for the messages' From: domain (example.com), so every one is signed."""
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = tmp / "example.com.pem"
        pem.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        pem.chmod(0o600)
        return f'[dkim.domains."example.com"]\nselector = "bench"\nprivate_key = "{pem}"\n'

    def exited(self) -> str | None:
        """The end of the log if relay has exited (a benchmark run must not wait for it)."""
        if self.proc.poll() is None:
            return None
        return self.log.read_text(errors="replace")[-2000:]

    def cpu(self) -> float:
        return sum(cpu_seconds(p) for p in self.pids)

    def kernel_cpu(self) -> float:
        """The part of cpu() spent in the kernel (system calls: sockets, the disk)."""
        return sum(cpu_seconds(p, kernel_only=True) for p in self.pids)

    def switches(self) -> int:
        """Context switches of every thread of relay's processes (see context_switches)."""
        return context_switches(self.pids)

    def main_cpu(self) -> float:
        """The main process's CPU (the delivery engine, and acceptance when it has no acceptor processes)."""
        return cpu_seconds(self.proc.pid)

    def memory(self) -> float:
        return pss_mb(self.pids)

    def count(self, sql: str) -> int:
        if self.database is not None:
            return int(str(self.database.query(sql)[0][0]))
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=10)
        try:
            return int(conn.execute(sql).fetchone()[0])
        finally:
            conn.close()

    def delivered(self) -> int:
        return self.count("SELECT count(*) FROM recipients WHERE state = 'delivered'")

    def webhooks_waiting(self) -> int:
        """Webhook deliveries not yet made (events of messages not yet delivered are not counted)."""
        return self.count("SELECT count(*) FROM webhook_deliveries WHERE next_attempt_at IS NOT NULL")

    def webhooks_sent(self) -> int:
        return self.count("SELECT count(*) FROM webhook_deliveries WHERE state = 'delivered'")

    def add_webhook(self, url: str, secret_file: Path) -> None:
        """A webhook for every event, created through the HTTP API as a user would; its secret to ``secret_file``."""
        import urllib.request

        python, repo = relay_checkout(self.args, self.name)
        out = subprocess.run(
            [python, "-m", "relay", "keys", "create", "--scope", "webhooks", "--json", "--config", str(self.config)],
            capture_output=True,
            text=True,
            check=True,
            cwd=repo,
        )
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.http_port}/v1/webhooks",
            data=json.dumps({"url": url}).encode(),
            headers={"Authorization": f"Bearer {json.loads(out.stdout)['key']}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            secret_file.write_text(json.loads(response.read())["secret"])

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(60)

    def errors(self) -> int:
        return sum(
            1 for line in self.log.read_text(errors="replace").splitlines() if re.search(r"ERROR|Traceback", line)
        )


class Postfix:
    """A private Postfix instance (own config, queue and log under the temp dir) relaying to the sink.

    Stock settings but for the relay route; as root, with Postfix installed. Postfix only
    runs an alternate config directory listed in the default one's alternate_config_directories,
    so that parameter is set in /etc/postfix/main.cf for the run and restored afterwards.
    """

    name = "postfix"

    def __init__(self, tmp: Path, smtp_port: int, sink_port: int, args: argparse.Namespace) -> None:
        if not shutil.which("postfix") or os.geteuid() != 0:
            raise SystemExit("--target postfix needs Postfix installed (apt-get install postfix) and root")
        self.conf, self.spool, self.data = tmp / "pf-conf", tmp / "pf-spool", tmp / "pf-data"
        self.log = tmp / "maillog"
        tmp.chmod(0o755)  # Postfix's unprivileged daemons must reach their queue
        for d in (self.conf, self.spool, self.data):
            d.mkdir()
        shutil.chown(self.data, "postfix")
        master = Path("/etc/postfix/master.cf").read_text()
        master = re.sub(r"(?m)^smtp(\s+inet\s+\S+\s+\S+\s+)\S+", rf"127.0.0.1:{smtp_port}\1n", master)
        master = re.sub(r"(?m)^(\S+\s+\S+\s+\S+\s+\S+\s+)y(\s)", r"\1n\2", master)  # no chroot
        (self.conf / "master.cf").write_text(master)
        (self.conf / "main.cf").write_text(
            f"""compatibility_level = 3.6
myhostname = postfix.bench
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
relayhost = [127.0.0.1]:{sink_port}
alias_maps =
alias_database =
queue_directory = {self.spool}
data_directory = {self.data}
maillog_file_prefixes = {tmp}
maillog_file = {self.log}
"""
        )
        # With a system main.cf, allow this config directory there for the run (and put it back after);
        # an unconfigured package (no main.cf, as make test installs it) needs nothing: root may use -c.
        self.saved_alternates = self._postconf("alternate_config_directories")
        if self.saved_alternates is not None:
            subprocess.run(["postconf", "-e", f"alternate_config_directories = {self.conf}"], check=True)
        subprocess.run(["postfix", "-c", str(self.conf), "start"], check=True, capture_output=True)
        wait_listening(smtp_port, lambda: True)
        self.master = int((self.spool / "pid" / "master.pid").read_text().split()[0])

    @staticmethod
    def _postconf(name: str) -> str | None:
        if not Path("/etc/postfix/main.cf").exists():
            return None
        out = subprocess.run(["postconf", "-h", name], capture_output=True, text=True, check=True).stdout
        return out.strip()

    def cpu(self) -> float:
        return cpu_seconds(self.master, reaped_children=True) + sum(cpu_seconds(p) for p in children(self.master))

    def memory(self) -> float:
        return pss_mb([self.master, *children(self.master)])

    def delivered(self) -> int:
        if not self.log.exists():
            return 0
        return self.log.read_text(errors="replace").count("status=sent")

    def stop(self) -> None:
        subprocess.run(["postfix", "-c", str(self.conf), "stop"], capture_output=True)
        if self.saved_alternates is not None:
            subprocess.run(["postconf", "-e", f"alternate_config_directories = {self.saved_alternates}"], check=True)

    def errors(self) -> int:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return len(re.findall(r"(?m)(fatal|panic|error):", text))


def inject(
    injector: str, port: int, message: bytes, tmp: Path, args: argparse.Namespace, login: tuple[str, str] | None
) -> None:
    if injector == "python":
        run = inject_python(port, args.messages, args.sessions, message, login)
        asyncio.run(asyncio.wait_for(run, args.timeout))
        return
    msg_file = tmp / "message.eml"
    msg_file.write_bytes(message.replace(b"\r\n", b"\n"))
    command = ["smtp-source", "-s", str(args.sessions), "-m", str(args.messages), "-r", str(args.recipients)]
    command += ["-f", "bench@example.com", "-t", "sink@example.org", "-F", str(msg_file), f"127.0.0.1:{port}"]
    subprocess.run(command, check=True, timeout=args.timeout)


def inject_split(injector: str, ports: list[int], message: bytes, tmp: Path, args: argparse.Namespace) -> None:
    """The messages and sessions divided between ``ports``, injected at the same time."""
    part = argparse.Namespace(**{**vars(args), "messages": args.messages // len(ports)})
    part.sessions = max(1, args.sessions // len(ports))
    threads = [
        threading.Thread(target=inject, args=(injector, port, message, tmp / f"inject{i}", part, None))
        for i, port in enumerate(ports)
    ]
    for i, thread in enumerate(threads):
        (tmp / f"inject{i}").mkdir()
        thread.start()
    for thread in threads:
        thread.join()


class SharedWindow:
    """--together: the moment the first target is done, every target's CPU so far and messages delivered.
    Its CPU per message over that window is measured while all of them ran (the slower one has the machine
    to itself after it)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._servers: dict[str, tuple[Relay | Cluster | Postfix, float]] = {}
        self.at_first_done: dict[str, tuple[float, int]] | None = None

    def started(self, target: str, server: Relay | Cluster | Postfix, cpu_before: float) -> None:
        with self._lock:
            self._servers[target] = (server, cpu_before)

    def finished(self) -> None:
        with self._lock:
            if self.at_first_done is None:
                self.at_first_done = {t: (s.cpu() - before, s.delivered()) for t, (s, before) in self._servers.items()}

    def cpu_ms_per_message(self, target: str) -> float | None:
        seen = (self.at_first_done or {}).get(target)
        if seen is None or seen[1] <= 0:
            return None
        return round(seen[0] * 1000 / seen[1], 3)


def run(args: argparse.Namespace, target: str, window: SharedWindow | None = None) -> dict[str, object]:
    tmp = Path(tempfile.mkdtemp(prefix=f"{target}-bench-"))
    smtp_port, sink_port = free_port(), free_port()
    sink_kind = args.sink if args.sink != "auto" else ("smtp-sink" if shutil.which("smtp-sink") else "python")
    injector = args.injector
    if injector == "auto":
        injector = "smtp-source" if shutil.which("smtp-source") and not args.auth else "python"
    if args.auth and (injector != "python" or target != "relay"):
        raise SystemExit("--auth needs the python injector and --target relay")
    if args.recipients > 1 and injector != "smtp-source":
        raise SystemExit("--recipients needs smtp-source as the injector")
    message = make_message(args.size)
    sink = start_sink(sink_kind, sink_port)
    if target == "ceiling":
        return _ceiling(args, injector, sink, sink_kind, sink_port, message, tmp)
    server: Relay | Cluster | Postfix | None = None
    receiver = WebhookReceiver(tmp) if args.webhook and target in RELAYS else None
    database = Database() if target in RELAYS and args.store == "postgresql" else None
    try:
        if target == "relay" and database is not None and args.nodes > 1:
            server = Cluster(tmp, sink_port, args, database)
        elif target in RELAYS:
            server = Relay(tmp, smtp_port, sink_port, args, database, name=target)
        else:
            server = Postfix(tmp, smtp_port, sink_port, args)
        if receiver is not None:
            assert isinstance(server, Relay | Cluster)
            server.add_webhook(receiver.url, receiver.secret_file)
        profiler = None
        if args.profile is not None and isinstance(server, Relay):
            profiler = Profiler(args.profile, target, server.pids)
        cpu_before = server.cpu()
        main_before = server.main_cpu() if isinstance(server, Relay) else None
        kernel_before = server.kernel_cpu() if isinstance(server, Relay) else None
        switches_before = server.switches() if isinstance(server, Relay) else None
        if window is not None:
            window.started(target, server, cpu_before)
        db_before = (database.cpu(), *database.counters()) if database is not None else None
        harness_before = (children_cpu(), cpu_seconds(sink.pid)) if window is None else None
        machine_before = machine_ticks()
        start = time.monotonic()
        if isinstance(server, Cluster):
            inject_split(injector, server.ports, message, tmp, args)
        else:
            inject(injector, smtp_port, message, tmp, args, getattr(server, "login", None))
        accepted_at = time.monotonic()
        deliveries = args.messages * args.recipients  # both count a delivery per recipient
        while (done := server.delivered()) < deliveries:
            if time.monotonic() > start + args.timeout:
                raise SystemExit(f"timed out: {done} of {deliveries} recipients delivered")
            if isinstance(server, Relay | Cluster) and (log := server.exited()) is not None:
                raise SystemExit(f"relay exited during the run ({done} of {deliveries} delivered):\n{log}")
            time.sleep(0.02)
        finished_at = time.monotonic()
        busy = busy_share(machine_before, machine_ticks())
        harness_cpu = None
        if harness_before is not None and injector == "smtp-source" and sink_kind == "smtp-sink":
            harness_cpu = children_cpu() - harness_before[0] + cpu_seconds(sink.pid) - harness_before[1]
        webhook_results: dict[str, object] = {}
        if receiver is not None:
            assert isinstance(server, Relay | Cluster)
            while (waiting := server.webhooks_waiting()) > 0:
                if time.monotonic() > start + args.timeout:
                    raise SystemExit(f"timed out: {waiting} webhook deliveries still waiting")
                time.sleep(0.02)
            webhooks_done_at = time.monotonic()
            sent = server.webhooks_sent()
            received, bad = receiver.counts()
            webhook_results = {
                "webhooks_per_message": round(sent / args.messages, 2),
                "webhooks_per_s": round(sent / (webhooks_done_at - start), 1),
                "webhook_lag_s": round(webhooks_done_at - finished_at, 2),
                "webhooks_received": received,
                "webhook_bad_signatures": bad,
                "with_webhooks_per_s": round(args.messages / (webhooks_done_at - start), 1),
            }
        if window is not None:
            window.finished()
        cpu = server.cpu() - cpu_before
        main_cpu = server.main_cpu() - main_before if isinstance(server, Relay) and main_before is not None else None
        kernel_cpu = (
            server.kernel_cpu() - kernel_before if isinstance(server, Relay) and kernel_before is not None else None
        )
        switches = (
            server.switches() - switches_before if isinstance(server, Relay) and switches_before is not None else None
        )
        memory = server.memory()  # after the run, before stopping: what the processes hold at its end
        if profiler is not None:
            profiler.stop()
        db_costs: dict[str, object] = {}
        if database is not None and db_before is not None:
            if args.statements:
                heading = "statements per message (including set-up), and the server's time in them:"
                print(heading, *database.top_statements(args.messages), sep="\n")
            db_cpu, statements, commits = database.cpu(), *database.counters()
            db_costs = {
                "db_cpu_ms_per_message": round((db_cpu - db_before[0]) * 1000 / args.messages, 3),
                "db_statements_per_message": round((statements - db_before[1]) / args.messages, 2),
                "db_commits_per_message": round((commits - db_before[2]) / args.messages, 3),
            }
    finally:
        if server is not None:
            server.stop()
        if database is not None:
            database.stop()
        if receiver is not None:
            receiver.stop()
        sink.terminate()
        sink.wait(10)
    result = {
        "target": target,
        "messages": args.messages,
        "sessions": args.sessions,
        "recipients": args.recipients,
        "auth": args.auth,
        "dkim": (args.dkim and target in RELAYS) or target == "signed",
        "acceptors": args.acceptors if target in RELAYS else None,
        "size": len(message),
        "injector": injector,
        "sink": sink_kind,
        "accepted_per_s": round(args.messages / (accepted_at - start), 1),
        "end_to_end_per_s": round(args.messages / (finished_at - start), 1),
        "cpu_ms_per_message": round(cpu * 1000 / args.messages, 3),
        "main_cpu_ms_per_message": None if main_cpu is None else round(main_cpu * 1000 / args.messages, 3),
        "kernel_cpu_ms_per_message": None if kernel_cpu is None else round(kernel_cpu * 1000 / args.messages, 3),
        "switches_per_message": None if switches is None else round(switches / args.messages, 1),
        "machine_busy": busy,
        "harness_cpu_ms_per_message": None if harness_cpu is None else round(harness_cpu * 1000 / args.messages, 3),
        "pss_mb": memory,
        "errors_logged": server.errors(),
        "store": args.store if target in RELAYS else None,
        "nodes": args.nodes if target in RELAYS else None,
        **db_costs,
        **webhook_results,
    }
    if target in RELAYS:
        result["python"] = interpreter(relay_checkout(args, target)[0])
    result["fsync_p50_ms"], result["fsync_p99_ms"] = fsync_latency(tmp)
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    return result


def _ceiling(
    args: argparse.Namespace,
    injector: str,
    sink: subprocess.Popen[bytes],
    sink_kind: str,
    sink_port: int,
    message: bytes,
    tmp: Path,
) -> dict[str, object]:
    """The injector straight into the sink: what this machine and client can do with no server between."""
    try:
        wait_listening(sink_port, lambda: sink.poll() is None)
        start = time.monotonic()
        inject(injector, sink_port, message, tmp, args, None)
        took = time.monotonic() - start
    finally:
        sink.terminate()
        sink.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    rate = round(args.messages / took, 1)
    return {
        "target": "ceiling",
        "messages": args.messages,
        "sessions": args.sessions,
        "auth": False,
        "acceptors": None,
        "size": len(message),
        "injector": injector,
        "sink": sink_kind,
        "accepted_per_s": rate,
        "end_to_end_per_s": rate,
        "cpu_ms_per_message": None,
        "errors_logged": 0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument(
        "--recipients", type=int, default=1, help="recipients per message (smtp-source -r; one domain, one transaction)"
    )
    parser.add_argument("--size", type=int, default=5000, help="message size in bytes")
    parser.add_argument("--concurrency", type=int, default=100, help="relay's [delivery] concurrency")
    parser.add_argument("--injector", choices=("auto", "smtp-source", "python"), default="auto")
    parser.add_argument("--sink", choices=("auto", "smtp-sink", "python"), default="auto")
    parser.add_argument("--timeout", type=float, default=600, help="give up after this many seconds")
    parser.add_argument(
        "--acceptors",
        default="auto",
        help="relay's [server] acceptors: a number of processes, or \"auto\" (the default configuration's)",
    )
    parser.add_argument(
        "--server",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a line for relay's [server] section, TOML (e.g. main_accepts=false); repeatable",
    )
    parser.add_argument("--profile", type=Path, help="py-spy --gil each relay process into this directory")
    parser.add_argument("--auth", action="store_true", help="STARTTLS + AUTH PLAIN on every connection (relay)")
    parser.add_argument("--dkim", action="store_true", help="relay DKIM-signs every message (rsa-2048)")
    parser.add_argument(
        "--webhook",
        action="store_true",
        help="relay posts every event to a webhook (a receiver on loopback that checks signatures); the run"
        " ends when the last one has been sent",
    )
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument(
        "--store",
        choices=("sqlite", "postgresql"),
        default="sqlite",
        help="relay's store (postgresql: a private cluster)",
    )
    parser.add_argument("--nodes", type=int, default=1, help="relay nodes on the one PostgreSQL (--store postgresql)")
    parser.add_argument("--statements", action="store_true", help="--store postgresql: print the top statements")
    parser.add_argument(
        "--target",
        action="append",
        choices=("relay", "postfix", "ceiling", "before", "signed"),
        help="what to measure (repeatable; default relay; ceiling: the injector straight into the sink;"
        " before: the relay of the checkout --before names; signed: this relay with DKIM on, whatever --dkim)."
        " Runs alternate, so peers share conditions",
    )
    parser.add_argument("--before", type=Path, help="--target before: another checkout of relay, with its .venv")
    parser.add_argument(
        "--python",
        type=Path,
        help="the interpreter that runs this checkout's relay (default: this one); its environment must have this"
        " checkout installed, e.g. a venv of the system's python3 with pip install -e .",
    )
    parser.add_argument(
        "--together",
        action="store_true",
        help="run a run's targets at the same time, each with its own injector and sink: a VM whose speed"
        " drifts slows them alike (for comparing CPU per message; each has about half the machine)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (config, log, queue)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if "before" in (args.target or []) and args.before is None:
        parser.error("--target before needs --before DIR")
    if args.python is not None:
        args.python = args.python.absolute()  # not resolved: a virtualenv's python is a link out of it
        check_python(args.python)
    if args.nodes > 1 and args.store != "postgresql":
        parser.error("--nodes needs --store postgresql (nodes share a database)")
    results = []
    for _ in range(args.runs):
        targets = args.target or ["relay"]
        if args.together:
            window = SharedWindow()
            with ThreadPoolExecutor(len(targets)) as pool:
                outcomes = list(pool.map(run, [args] * len(targets), targets, [window] * len(targets)))
            for outcome in outcomes:
                outcome["cpu_ms_per_message_together"] = window.cpu_ms_per_message(str(outcome["target"]))
        for target in targets:
            result = outcomes.pop(0) if args.together else run(args, target)
            results.append(result)
            if args.json:
                print(json.dumps(result), flush=True)
            else:
                print(
                    f"{target:8} {result['messages']} msgs x {result['size']} B, {result['sessions']} sessions"
                    + (f", {result['recipients']} recipients each" if result.get("recipients", 1) > 1 else "")
                    + (f", {result['acceptors']} acceptors, {result['store']}" if target in RELAYS else "")
                    + (f", {result['nodes']} nodes" if target == "relay" and args.nodes > 1 else "")
                    + (" straight into the sink" if target == "ceiling" else "")
                    + (", STARTTLS+AUTH" if result["auth"] else "")
                    + (", DKIM rsa-2048" if result.get("dkim") else "")
                    + f": accepted {result['accepted_per_s']}/s, end-to-end {result['end_to_end_per_s']}/s, "
                    + (
                        f"CPU {result['cpu_ms_per_message']} ms/msg, "
                        if result["cpu_ms_per_message"] is not None
                        else ""
                    )
                    + (
                        f"of it the main process {result['main_cpu_ms_per_message']}, "
                        if result.get("main_cpu_ms_per_message") is not None
                        and result["main_cpu_ms_per_message"] != result["cpu_ms_per_message"]
                        else ""
                    )
                    + (
                        f"in the kernel {result['kernel_cpu_ms_per_message']}, "
                        if result.get("kernel_cpu_ms_per_message") is not None
                        else ""
                    )
                    + (
                        f"{result['switches_per_message']} context switches a message, "
                        if result.get("switches_per_message") is not None
                        else ""
                    )
                    + (
                        f"database CPU {result['db_cpu_ms_per_message']} ms/msg, "
                        f"{result['db_statements_per_message']} statements and "
                        f"{result['db_commits_per_message']} commits per message, "
                        if "db_cpu_ms_per_message" in result
                        else ""
                    )
                    + (
                        f"while both ran {result['cpu_ms_per_message_together']} ms/msg, "
                        if result.get("cpu_ms_per_message_together") is not None
                        else ""
                    )
                    + (
                        f"webhooks {result['webhooks_per_message']} per message at {result['webhooks_per_s']}/s"
                        f" (received {result['webhooks_received']}, bad signatures {result['webhook_bad_signatures']}),"
                        f" the last {result['webhook_lag_s']} s after the last delivery:"
                        f" {result['with_webhooks_per_s']} msgs/s with their webhooks, "
                        if "webhooks_per_s" in result
                        else ""
                    )
                    + (f"machine busy {round(result['machine_busy'] * 100)}%, " if result.get("machine_busy") else "")
                    + (
                        f"smtp-source and smtp-sink {result['harness_cpu_ms_per_message']} ms/msg, "
                        if result.get("harness_cpu_ms_per_message") is not None
                        else ""
                    )
                    + (f"PSS {result['pss_mb']} MB, " if result.get("pss_mb") is not None else "")
                    + (f"Python {result['python']}, " if "python" in result else "")
                    + f"errors logged {result['errors_logged']}"
                    + (
                        f"; disk fsync p50 {result['fsync_p50_ms']} ms, p99 {result['fsync_p99_ms']} ms"
                        if "fsync_p50_ms" in result
                        else ""
                    ),
                    flush=True,
                )
    measured = {r["target"] for r in results}
    for peer in ("postfix", "before"):
        if {"relay", peer} <= measured and not args.json:
            for key in ("accepted_per_s", "end_to_end_per_s", "cpu_ms_per_message"):
                mean = {t: sum(r[key] for r in results if r["target"] == t) / args.runs for t in ("relay", peer)}
                print(f"relay/{peer} {key}: {mean['relay'] / mean[peer]:.2f}x")
    if {"relay", "signed"} <= measured and not args.json:  # DKIM's share of the unsigned rate, run by run
        for key in ("end_to_end_per_s", "cpu_ms_per_message_together"):
            pairs = [
                (signed[key], unsigned[key])
                for unsigned, signed in zip(
                    [r for r in results if r["target"] == "relay"],
                    [r for r in results if r["target"] == "signed"],
                    strict=True,
                )
                if signed.get(key) and unsigned.get(key)
            ]
            if pairs:
                ratios = [s / u for s, u in pairs]
                shown = " ".join(f"{r:.2f}" for r in ratios)
                print(f"signed/relay {key}: {sum(ratios) / len(ratios):.2f}x (per run: {shown})")


if __name__ == "__main__":
    main()
