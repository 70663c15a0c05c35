"""Several processes on one queue: pre-forked acceptors and a wake-up channel.

One Python process tops out at about one core. With ``[server] acceptors = N``
the main process binds the SMTP and HTTP ports, runs the delivery engine, and
starts N acceptor processes that inherit the listening sockets (the kernel
hands each new connection to one of them) and queue into the same SQLite file.
Each acceptor nudges the main process's engine over a Unix datagram socket
after every commit, so new mail is picked up at once, not at the next poll.
The nudge also says when the acceptor is saturated (:class:`LoopLoad`): the
main process then takes the connections it leaves waiting sooner
(relay.listening).

Acceptors die with the main process. Each one asks Linux for SIGTERM when its
parent dies (``prctl(PR_SET_PDEATHSIG)``), checks at once that its parent is
still the process that started it (the main process may have died before the
request was made), and looks at its parent's pid every second as well. An
acceptor whose main process has gone stops listening at once and finishes the
transactions in progress: what it acknowledged is in the queue, and a new main
process delivers it.
"""

from __future__ import annotations

import asyncio
import ctypes
import dataclasses
import hashlib
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

from relay.clock import Clock, SystemClock
from relay.listening import BUSY_SHARE
from relay.startup import EX_CONFIG

log = logging.getLogger(__name__)

LISTEN_FDS_ENV = "RELAY_LISTEN_FDS"  # "smtp=5,6;smtps=7;http=8": sockets an acceptor inherits
PARENT_PID_ENV = "RELAY_ACCEPTOR_PARENT"  # the pid of the main process that started the acceptor
PARENT_CHECK_SECONDS = 1.0  # how often an acceptor looks at its parent's pid (besides the death signal)
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
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


def set_parent_death_signal(sig: int = signal.SIGTERM) -> bool:
    """Ask Linux to send ``sig`` to this process when its parent dies; False where that cannot be done.

    Linux sends it when the *thread* that started this process exits: the main process starts acceptors
    from its event loop, which runs in its main thread, so that is when the process exits. The request
    survives exec but is made too late if the parent died first: check :func:`parent_gone` right after.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0:
            return True
        error = os.strerror(ctypes.get_errno())
    except (OSError, AttributeError) as exc:
        error = str(exc)
    log.warning(
        "cannot ask for a signal when the main process dies (%s); checking its pid every %.0fs instead",
        error,
        PARENT_CHECK_SECONDS,
    )
    return False


def expected_parent() -> int | None:
    """The main process's pid, as the supervisor passed it down; None if this is not an acceptor."""
    text = os.environ.get(PARENT_PID_ENV, "")
    return int(text) if text.isascii() and text.isdigit() else None


def process_exiting(pid: int) -> bool:
    """True once ``pid`` has exited or is exiting: no such process, or a zombie (Linux ``/proc``)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return Path("/proc/self/stat").exists()  # no /proc at all (not Linux): say nothing
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


class ParentWatch:
    """An acceptor's tie to its main process: calls ``on_gone`` once the main process has died.

    That shows in two ways: this process's parent pid is no longer ``expected`` (it has been re-parented,
    to init or a subreaper), or the main process is exiting. The second is what the first death signal
    meets: when the main process is killed, its main thread exits first and its children are handed to a
    thread of the same process that is still dying (same pid) before they go to init.
    """

    def __init__(
        self,
        expected: int,
        on_gone: Callable[[], None],
        interval: float = PARENT_CHECK_SECONDS,
        getppid: Callable[[], int] = os.getppid,
        exiting: Callable[[int], bool] = process_exiting,
        clock: Clock | None = None,
    ) -> None:
        self.expected = expected
        self.clock = clock or SystemClock()
        self.on_gone = on_gone
        self.interval = interval
        self.getppid = getppid
        self.exiting = exiting

    def gone(self) -> bool:
        return self.getppid() != self.expected or self.exiting(self.expected)

    async def run(self) -> None:
        while not self.gone():  # noqa: ASYNC110 (nothing signals a new parent pid but the death signal)
            await self.clock.sleep(self.interval)
        log.warning("the main process (pid %d) has gone: this acceptor stops", self.expected)
        self.on_gone()


READY = b"ready "  # + the pid: an acceptor process has started and answers on the listening sockets
WAKE = b"!"  # an acceptor committed new mail
WAKE_SATURATED = b"!saturated"  # the same, from an acceptor whose event loop is saturated
DOMAINS_CHANGED = b"domains"  # an acceptor changed the sending domains' keys (the main process signs)
LOAD_WINDOW = 0.05  # seconds over which an acceptor measures its event loop's load


class LoopLoad:
    """Whether this thread (an acceptor's event loop) was on the CPU :data:`BUSY_SHARE` of the time or more,
    over the last window of at least :data:`LOAD_WINDOW` seconds. ``now`` and ``cpu``: seconds of the wall
    clock and of this thread's CPU time."""

    def __init__(self, now: Callable[[], float] = time.monotonic, cpu: Callable[[], float] = time.thread_time) -> None:
        self.now, self.cpu = now, cpu
        self._since, self._cpu_since = now(), cpu()
        self._saturated = False

    def saturated(self) -> bool:
        now = self.now()
        if now - self._since >= LOAD_WINDOW:
            cpu = self.cpu()
            self._saturated = cpu - self._cpu_since >= BUSY_SHARE * (now - self._since)
            self._since, self._cpu_since = now, cpu
        return self._saturated


class WakeListener:
    """Calls ``on_wake`` whenever an acceptor reports new mail, ``on_saturated`` when it says it is
    saturated and ``on_domains`` when it has changed the sending domains; counts the acceptors that report
    ready."""

    def __init__(
        self,
        address: str,
        on_wake: Callable[[], None],
        on_saturated: Callable[[], None] = lambda: None,
        on_domains: Callable[[], None] = lambda: None,
    ) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.setblocking(False)
        self.on_wake = on_wake
        self.on_saturated = on_saturated
        self.on_domains = on_domains
        self.ready: set[bytes] = set()
        self._ready_changed = asyncio.Event()
        asyncio.get_running_loop().add_reader(self.sock.fileno(), self._readable)

    def _readable(self) -> None:
        try:
            while data := self.sock.recv(64):
                if data == WAKE_SATURATED:
                    self.on_saturated()
                elif data == DOMAINS_CHANGED:
                    self.on_domains()
                elif data.startswith(READY):
                    self.ready.add(data[len(READY) :])
                    self._ready_changed.set()
        except BlockingIOError:
            pass
        self.on_wake()

    async def wait_ready(self, count: int) -> None:
        """Wait until ``count`` acceptor processes have reported ready."""
        while len(self.ready) < count:
            self._ready_changed.clear()
            await self._ready_changed.wait()

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.sock.fileno())
        self.sock.close()


class WakeSender:
    """Nudges the main process (called on the event loop); with ``load``, says so when the loop is saturated."""

    def __init__(self, address: str, load: LoopLoad | None = None) -> None:
        self.address = address
        self.load = load
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setblocking(False)

    def __call__(self) -> None:
        self._send(WAKE_SATURATED if self.load is not None and self.load.saturated() else WAKE)

    def domains_changed(self) -> None:
        """Tell the main process to load the sending domains' keys again (it signs what it sends)."""
        self._send(DOMAINS_CHANGED)

    def ready(self) -> None:
        """Tell the main process this acceptor is listening (it says "relay started" once all are). The
        lines logged so far go out first (relay.logs holds a turn's lines until the turn ends), so that
        the log has this acceptor's "listening" lines before the main process's "relay started"."""
        for handler in logging.getLogger().handlers:
            handler.flush()
        self._send(READY + str(os.getpid()).encode())

    def _send(self, data: bytes) -> None:
        try:
            self.sock.sendto(data, self.address)
        except OSError:
            pass  # the main process is busy or restarting: it polls the queue anyway


RELAY_ROOT = str(Path(__file__).resolve().parent.parent)  # the directory this process's relay package is in


class Supervisor:
    """Starts, restarts and stops the acceptor processes."""

    def __init__(self, count: int, config_path: Path | None, listeners: Listeners, clock: Clock | None = None) -> None:
        self.count = count
        self.clock = clock or SystemClock()
        for sock in listeners.all():
            sock.set_inheritable(True)
        self.fds = listeners.fds()
        self.env = {
            **os.environ,
            LISTEN_FDS_ENV: listeners.describe(),
            PARENT_PID_ENV: str(os.getpid()),
            "PYTHONPATH": os.pathsep.join(filter(None, [RELAY_ROOT, os.environ.get("PYTHONPATH")])),
        }
        # -P: not the working directory first on the path (Python 3.11), so the acceptors import this
        # process's relay (from RELAY_ROOT), never a relay package the working directory happens to hold.
        self.argv = [sys.executable, "-P", "-m", "relay", "serve"]
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
            await self.clock.sleep(delay)
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
