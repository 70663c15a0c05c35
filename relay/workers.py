"""Several processes on one queue: pre-forked acceptors and a wake-up channel.

One Python process tops out at about one core. With ``[server] acceptors = N``
the main process binds the SMTP and HTTP ports, runs the delivery engine, and
starts N acceptor processes that inherit the listening sockets (the kernel
hands each new connection to one of them) and queue into the same SQLite file.
Each acceptor nudges the main process's engine over a Unix datagram socket
after every commit, so new mail is picked up at once, not at the next poll.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path

from relay.startup import EX_CONFIG

log = logging.getLogger(__name__)

LISTEN_FDS_ENV = "RELAY_LISTEN_FDS"  # "smtp=5,6;smtps=7;http=8": sockets an acceptor inherits
CONFIG_ERROR_EXIT = EX_CONFIG


@dataclasses.dataclass
class Listeners:
    """Bound listening sockets."""

    smtp: list[socket.socket]  # STARTTLS submission (587)
    smtps: list[socket.socket]  # implicit TLS submission (465)
    http: list[socket.socket]

    def all(self) -> list[socket.socket]:
        return [*self.smtp, *self.smtps, *self.http]

    def fds(self) -> list[int]:
        return [s.fileno() for s in self.all()]

    def describe(self) -> str:
        return ";".join(
            f"{kind}={','.join(str(s.fileno()) for s in socks)}"
            for kind, socks in (("smtp", self.smtp), ("smtps", self.smtps), ("http", self.http))
        )

    def close(self) -> None:
        for sock in self.all():
            sock.close()


def inherited_listeners() -> Listeners | None:
    """The listening sockets passed down by the main process, if this is an acceptor."""
    text = os.environ.get(LISTEN_FDS_ENV)
    if not text:
        return None
    parts = dict(part.split("=", 1) for part in text.split(";"))

    def sockets(kind: str) -> list[socket.socket]:
        return [socket.socket(fileno=int(fd)) for fd in parts.get(kind, "").split(",") if fd]

    return Listeners(smtp=sockets("smtp"), smtps=sockets("smtps"), http=sockets("http"))


def wake_address(db_path: Path) -> str:
    """An abstract-namespace socket name (Linux) unique to this queue file."""
    digest = hashlib.sha256(str(db_path.resolve()).encode()).hexdigest()[:16]
    return f"\0relay-wake-{digest}"


class WakeListener:
    """Calls ``on_wake`` whenever an acceptor reports new mail."""

    def __init__(self, address: str, on_wake: Callable[[], None]) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.setblocking(False)
        self.on_wake = on_wake
        asyncio.get_running_loop().add_reader(self.sock.fileno(), self._readable)

    def _readable(self) -> None:
        try:
            while self.sock.recv(64):
                pass
        except BlockingIOError:
            pass
        self.on_wake()

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.sock.fileno())
        self.sock.close()


class WakeSender:
    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setblocking(False)

    def __call__(self) -> None:
        try:
            self.sock.sendto(b"!", self.address)
        except OSError:
            pass  # the main process is busy or restarting: it polls the queue anyway


class Supervisor:
    """Starts, restarts and stops the acceptor processes."""

    def __init__(self, count: int, config_path: Path | None, listeners: Listeners) -> None:
        self.count = count
        for sock in listeners.all():
            sock.set_inheritable(True)
        self.fds = listeners.fds()
        self.env = {**os.environ, LISTEN_FDS_ENV: listeners.describe()}
        self.argv = [sys.executable, "-m", "relay", "serve"]
        if config_path is not None:
            self.argv += ["--config", str(config_path)]
        self._tasks: list[asyncio.Task[None]] = []
        self._procs: dict[int, asyncio.subprocess.Process] = {}
        self._stopping = False

    def start(self) -> None:
        for index in range(self.count):
            self._tasks.append(asyncio.create_task(self._keep_running(index), name=f"acceptor-{index}"))

    async def _keep_running(self, index: int) -> None:
        delay = 1.0
        while not self._stopping:
            proc = await asyncio.create_subprocess_exec(*self.argv, env=self.env, pass_fds=self.fds)
            self._procs[index] = proc
            log.info("started acceptor process %d (pid %d)", index + 1, proc.pid)
            code = await proc.wait()
            if self._stopping:
                return
            if code == 0:  # stopped deliberately (SIGTERM to the whole service, or to this process)
                log.info("acceptor process %d stopped", index + 1)
                return
            if code == CONFIG_ERROR_EXIT:
                log.error("acceptor process %d exited with a configuration error; not restarting", index + 1)
                return
            log.error("acceptor process %d exited with status %d; restarting in %.0fs", index + 1, code, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)

    async def stop(self, grace: float) -> None:
        self._stopping = True
        for proc in self._procs.values():
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        waits = [proc.wait() for proc in self._procs.values() if proc.returncode is None]
        if waits:
            await asyncio.wait([asyncio.ensure_future(w) for w in waits], timeout=grace)
            for proc in self._procs.values():
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
