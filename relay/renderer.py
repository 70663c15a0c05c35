"""Template rendering in render processes, off the event loop, with limits that a thread could not enforce.

A small pool of ``python -m relay.renderer`` processes (started on first use, never with the parent's file
descriptors). Each limits its own address space (RLIMIT_AS: MEMORY_BYTES above what it needs at start), so an
allocation the sandbox did not foresee fails with MemoryError there, not in relay. The parent waits for each
render at most its time budget plus GRACE_SECONDS, then kills the process (a render stuck in one C call cannot
be interrupted otherwise) and carries on with a fresh one. One request sends all its renders in one task
(a personalised batch is hundreds of renders of the same template): the templates once, then the variables of
each item; the process answers item by item, each item being that item's success or error.

Frames both ways: 4 bytes of length (big-endian), then UTF-8 JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import json
import logging
import os
import struct
import sys
import time
from typing import Any, BinaryIO

from relay.errors import RelayError
from relay.templates import RENDER_SECONDS, OutOfTime, Rendered, RenderError, render

log = logging.getLogger(__name__)

WORKERS = 2  # render processes per relay process
MEMORY_BYTES = 256 * 1024 * 1024  # address space a render process may add to what it needs at start
GRACE_SECONDS = 0.5  # past a render's budget before its process is killed
REQUEST_SECONDS = 10.0  # all the renders of one request (a batch), together
WAIT_SECONDS = 10.0  # for a free render process, then 503
START_SECONDS = 30.0  # for a new render process to be ready
_HEADER = struct.Struct(">I")


class RendererBusy(RelayError):
    """Every render process stayed busy for WAIT_SECONDS."""


@dataclasses.dataclass(frozen=True)
class Source:
    """One template: its three parts."""

    subject: str
    html: str | None
    text: str | None


@dataclasses.dataclass(frozen=True)
class Job:
    """One render: which of the request's sources, with which variables."""

    source: int
    variables: dict[str, Any]


def _frame(obj: Any) -> bytes:
    data = json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()
    return _HEADER.pack(len(data)) + data


def _result(reply: dict[str, Any]) -> Rendered | RenderError:
    if "ok" in reply:
        ok = reply["ok"]
        return Rendered(ok["subject"], ok["html"], ok["text"])
    return RenderError(reply["error"]["part"], reply["error"]["message"])


class _Process:
    """One render process and its pipes."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls) -> _Process:
        """A new render process, once it has said it is ready (its start-up is not part of any render's budget).
        Raises RendererBusy if it cannot be started."""
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "relay.renderer", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
            )  # close_fds: the child holds none of relay's sockets or files
        except OSError as exc:
            raise RendererBusy(f"cannot start a template render process: {exc}") from None
        process = cls(proc)
        try:
            ready = await asyncio.wait_for(process.receive(), START_SECONDS)
        except (TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
            await process.kill()
            raise RendererBusy(f"a template render process did not start: {exc!r}") from None
        if ready != {"ready": True}:
            await process.kill()
            raise RendererBusy(f"a template render process did not start: {ready!r}")
        return process

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send(self, obj: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(_frame(obj))

    async def receive(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        (size,) = _HEADER.unpack(await self.proc.stdout.readexactly(_HEADER.size))
        reply: dict[str, Any] = json.loads(await self.proc.stdout.readexactly(size))
        return reply

    async def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        await self.proc.wait()


class Renderer:
    """The pool: ``render_many`` is the only way in. ``workers`` processes at most, started on demand."""

    def __init__(
        self,
        workers: int = WORKERS,
        seconds: float = RENDER_SECONDS,
        request_seconds: float = REQUEST_SECONDS,
        wait_seconds: float = WAIT_SECONDS,
    ) -> None:
        self.seconds = seconds
        self.request_seconds = request_seconds
        self.wait_seconds = wait_seconds
        self._slots = asyncio.Semaphore(workers)
        self._idle: list[_Process] = []
        self._busy: set[_Process] = set()
        self.killed = 0  # render processes killed for running over (for tests and logs)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in [*self._idle, *self._busy]]

    async def render(self, source: Source, variables: dict[str, Any]) -> Rendered:
        """One render; raises RenderError."""
        (result,) = await self.render_many([source], [Job(0, variables)])
        if isinstance(result, RenderError):
            raise result
        return result

    async def render_many(self, sources: list[Source], jobs: list[Job]) -> list[Rendered | RenderError]:
        """Every job's result, in order; a failure is that job's RenderError. Raises RendererBusy."""
        if not jobs:
            return []
        try:
            await asyncio.wait_for(self._slots.acquire(), self.wait_seconds)
        except TimeoutError:
            raise RendererBusy(f"every template render process stayed busy for {self.wait_seconds:g}s") from None
        try:
            return await self._run(sources, jobs)
        finally:
            self._slots.release()

    async def _run(self, sources: list[Source], jobs: list[Job]) -> list[Rendered | RenderError]:
        results: list[Rendered | RenderError] = []
        deadline: float | None = None
        while len(results) < len(jobs):
            process = await self._idle_or_new()
            if deadline is None:  # the request's budget starts once a process is ready (not while one starts)
                # Real time, not relay.clock: the budget bounds the CPU time of a worker process.
                deadline = time.monotonic() + self.request_seconds
            self._busy.add(process)
            clean = False
            try:
                results += await self._feed(process, sources, jobs[len(results) :], deadline)
                clean = True
            except _Partial as lost:  # the job that ran over failed; the rest go to another process
                results += lost.results
            finally:
                self._busy.discard(process)
                if clean:
                    self._idle.append(process)
                else:  # killed, dead, or this request was cancelled with replies still to come
                    await process.kill()
        return results

    async def _idle_or_new(self) -> _Process:
        while self._idle:
            process = self._idle.pop()
            if process.proc.returncode is None:
                return process
            await process.kill()  # died while idle (killed from outside): reap it
        return await _Process.start()

    async def _feed(
        self, process: _Process, sources: list[Source], jobs: list[Job], deadline: float
    ) -> list[Rendered | RenderError]:
        """Results until every job is answered (and the process is clean), or until one runs over: that one's
        error is the last result and the process is killed (by raising to the caller)."""
        results: list[Rendered | RenderError] = []
        try:
            process.send(
                {
                    "sources": [dataclasses.asdict(s) for s in sources],
                    "jobs": [[j.source, j.variables] for j in jobs],
                    "seconds": self.seconds,
                    "request_seconds": max(0.0, deadline - time.monotonic()),
                    "request_budget": self.request_seconds,
                }
            )
        except (ConnectionError, RuntimeError) as exc:
            results.append(self._lost(process, exc))
            raise _Partial(results) from None
        for _ in jobs:
            wait = min(self.seconds, max(0.0, deadline - time.monotonic())) + GRACE_SECONDS
            try:
                reply = await asyncio.wait_for(process.receive(), wait)
            except (TimeoutError, asyncio.IncompleteReadError, ConnectionError, ValueError) as exc:
                results.append(self._lost(process, exc))
                await process.kill()
                raise _Partial(results) from None
            results.append(_result(reply))
        return results

    def _lost(self, process: _Process, exc: BaseException) -> RenderError:
        if isinstance(exc, TimeoutError):
            self.killed += 1
            log.warning("template render process %d ran over its %gs budget: killed", process.pid, self.seconds)
            return RenderError("template", f"the template ran longer than {self.seconds:g}s")
        log.warning("template render process %d died: %r", process.pid, exc)
        return RenderError("template", "the template needs more memory or time than a render may use")

    async def close(self) -> None:
        for process in [*self._idle, *self._busy]:
            await process.kill()
        self._idle.clear()
        self._busy.clear()


class _Partial(Exception):  # noqa: N818 (not an error: the results so far, and the process is gone)
    def __init__(self, results: list[Rendered | RenderError]) -> None:
        super().__init__("a render process was lost")
        self.results = results


# ---------------------------------------------------------------------------
# The render process


def _vm_size() -> int:
    """This process's address space now, in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def limit_memory(extra: int = MEMORY_BYTES) -> None:
    import resource

    limit = _vm_size() + extra
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def render_jobs(request: dict[str, Any]) -> Any:
    """The replies to one request, one per job, as they are made."""
    sources = [Source(**s) for s in request["sources"]]
    seconds, request_seconds = float(request["seconds"]), float(request["request_seconds"])
    deadline = time.monotonic() + request_seconds
    budget = request.get("request_budget", REQUEST_SECONDS)
    for index, variables in request["jobs"]:
        left = deadline - time.monotonic()
        used_up = {
            "error": {"part": "template", "message": f"this request used up its {budget:g}s of template rendering"}
        }
        if left <= 0:
            yield used_up
            continue
        source = sources[index]
        try:
            r = render(source.subject, source.html, source.text, variables, min(seconds, left))
        except OutOfTime as exc:
            reply = used_up if left < seconds else {"error": {"part": exc.part, "message": exc.message}}
        except RenderError as exc:
            reply = {"error": {"part": exc.part, "message": exc.message}}
        except MemoryError:
            reply = {"error": {"part": "template", "message": "the template needs more memory than a render may use"}}
        else:
            yield {"ok": {"subject": r.subject, "html": r.html, "text": r.text}}
            continue
        gc.collect()  # a failed render's traceback is a cycle that holds what the template made (maybe 200 MB)
        yield reply


def _read_exactly(stream: BinaryIO, size: int) -> bytes | None:
    data = stream.read(size)
    return data if len(data) == size else None


def main(stdin: BinaryIO, stdout: BinaryIO) -> int:
    import relay.template_sandbox  # noqa: F401 (jinja2: loaded before the limit, which is for rendering)

    limit_memory()
    stdout.write(_frame({"ready": True}))
    stdout.flush()
    while True:
        header = _read_exactly(stdin, _HEADER.size)
        if header is None:
            return 0  # relay closed the pipe
        body = _read_exactly(stdin, _HEADER.unpack(header)[0])
        if body is None:
            return 0
        for reply in render_jobs(json.loads(body)):
            stdout.write(_frame(reply))
            stdout.flush()


if __name__ == "__main__":
    os.environ.pop("RELAY_CONFIG", None)  # nothing of relay's configuration is needed or read here
    sys.exit(main(sys.stdin.buffer, sys.stdout.buffer))
