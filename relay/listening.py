"""Taking connections on a listening socket that acceptor processes share: only those they leave waiting.

Every process polling a listening socket is woken for each new connection; one of them takes it. An
acceptor process takes it within a turn of its event loop. With ``[server] main_accepts`` the main
process, which delivers, polls the same sockets through an :class:`OverflowServer`: woken, it looks
again :data:`OVERFLOW_DELAY` later and takes what is still waiting, the connections its acceptors were
too busy to take. So it accepts when they are saturated (DKIM-signing, for one), and its deliveries do
not wait behind SMTP sessions the acceptors had time for.

The delay, measured (bench/RESULTS.md, 2026-12-03): taking every connection at once (no delay), the
main process's deliveries waited behind its SMTP sessions, and acceptance-to-arrival p99 at half the
maximum rate doubled (12 against 6 ms); at 2 ms it was 9.6-13.6 ms, at 5 ms 6.2 ms, at 10 ms 7.6 ms.

While an acceptor reports that it is saturated (:class:`AcceptorLoad`: its event loop's thread busy
:data:`BUSY_SHARE` of the time, as DKIM signing at acceptance makes it), the main process looks again after
:data:`SATURATED_DELAY` instead: a connection then waits less for a loop that is behind, and the two
processes share the signing sooner. Measured (bench/RESULTS.md, 2026-12-05): DKIM-signed +7-8% messages a
second; the same short delay all the time also put the p99 at half the maximum rate from ~4.5 to ~6.5 ms.

A protocol the main process may never need can be built when the first connection it takes needs it
(:class:`BuiltOnFirstUse`): the HTTP API (aiohttp's server and its views, ~14 MB a process) is built
there only once an HTTP connection is left waiting.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
import ssl
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

OVERFLOW_DELAY = 0.005  # seconds a new connection is left to the acceptors before the main process takes it
SATURATED_DELAY = 0.001  # the same while an acceptor reports itself saturated
BUSY_SHARE = 0.7  # an acceptor is saturated when its event loop's thread is on the CPU this share of the time
BUSY_HOLD = 0.25  # seconds an acceptor's report of being saturated holds
TAKEN_AT_ONCE = 16  # connections taken in one look, at most (the rest at the next)

ProtocolFactory = Callable[[], asyncio.BaseProtocol]


class BuiltOnFirstUse:
    """A protocol factory built once, when the first connection needs it; connections taken meanwhile wait
    for the same build. A build that fails is logged and tried again for the next connection."""

    def __init__(self, build: Callable[[], Awaitable[ProtocolFactory]]) -> None:
        self._build = build
        self._built: asyncio.Future[ProtocolFactory] | None = None

    async def factory(self) -> ProtocolFactory:
        if self._built is None:
            self._built = asyncio.ensure_future(self._build())
        try:
            return await asyncio.shield(self._built)
        except Exception:
            self._built = None  # the next connection tries again
            raise


class AcceptorLoad:
    """What the main process knows of its acceptors' load: whether one said it was saturated lately, and so
    how long a new connection is left to them. ``now``: seconds, monotonic."""

    def __init__(self, now: Callable[[], float] = time.monotonic) -> None:
        self.now = now
        self._saturated_until = float("-inf")

    def report_saturated(self) -> None:
        self._saturated_until = self.now() + BUSY_HOLD

    def delay(self) -> float:
        return SATURATED_DELAY if self.now() < self._saturated_until else OVERFLOW_DELAY


class OverflowServer:
    """Serves ``factory``'s protocol on connections that have waited ``delay`` seconds on ``sock`` (or what
    ``delay()`` says when woken; a :class:`BuiltOnFirstUse` is built when the first connection is taken).

    ``ssl_context``: a TLS server handshake first (implicit TLS). :meth:`close` stops taking connections and
    closes this process's copy of the socket; the connections taken go on."""

    def __init__(
        self,
        sock: socket.socket,
        factory: ProtocolFactory | BuiltOnFirstUse,
        ssl_context: ssl.SSLContext | None = None,
        delay: float | Callable[[], float] = OVERFLOW_DELAY,
    ) -> None:
        self.sock = sock
        self.factory = factory
        self.ssl_context = ssl_context
        self.delay = delay if callable(delay) else functools.partial(float, delay)
        self.taken = 0  # connections this server took
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        sock.setblocking(False)
        self._loop.add_reader(sock.fileno(), self._woken)

    def _woken(self) -> None:
        # Not polled meanwhile: the waiting connection would wake this loop on every turn until taken.
        self._loop.remove_reader(self.sock.fileno())
        self._timer = self._loop.call_later(self.delay(), self._take_waiting)

    def _take_waiting(self) -> None:
        self._timer = None
        if self._closed:
            return
        for _ in range(TAKEN_AT_ONCE):
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                break  # an acceptor took it
            except OSError as exc:  # out of file descriptors, a connection reset while waiting...
                log.warning("could not take a waiting connection: %s", exc)
                break
            self.taken += 1
            conn.setblocking(False)
            task = self._loop.create_task(self._serve(conn))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self._loop.add_reader(self.sock.fileno(), self._woken)

    async def _serve(self, conn: socket.socket) -> None:
        try:
            factory = await self.factory.factory() if isinstance(self.factory, BuiltOnFirstUse) else self.factory
        except Exception:
            log.exception("could not build what serves a connection the main process took")
            conn.close()
            return
        try:
            await self._loop.connect_accepted_socket(factory, conn, ssl=self.ssl_context)
        except (TimeoutError, OSError, ssl.SSLError) as exc:  # gone, or a TLS handshake that failed
            log.debug("connection dropped before it was served: %s", exc)
            conn.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.taken:
            host, port = self.sock.getsockname()[:2]
            where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            log.info("connections on %s the main process took, its acceptors busy: %d", where, self.taken)
        if self._timer is not None:
            self._timer.cancel()
        self._loop.remove_reader(self.sock.fileno())
        self.sock.close()
