"""kill -9 under load: every message that got a 250 arrives at least once, at several kill points."""

from __future__ import annotations

import asyncio
import re
import smtplib
import threading
import time

import pytest

SESSIONS = 4


def text(n: int, lines: int) -> str:
    """Message number ``n``, with ``lines`` more lines of 64 characters that say which message they are in."""
    return f"Subject: msg-{n}\r\n\r\nnumber {n}\r\n" + f"{n:063d}\r\n" * lines


def inject(port: int, start: int, stop_at: float, acked: list[int], lock: threading.Lock, lines: int = 0) -> None:
    """Send numbered messages one per connection until the relay goes away or time runs out."""
    n = start
    while time.monotonic() < stop_at:
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=5) as smtp:
                smtp.sendmail("load@example.com", ["sink@one.example"], text(n, lines))
            with lock:
                acked.append(n)
        except (OSError, smtplib.SMTPException):
            return  # killed: whatever did not get its 250 is not owed
        n += SESSIONS


@pytest.mark.parametrize(
    ("kill_after", "server", "lines"),
    [
        (0.4, {}, 0),
        (1.0, {}, 0),
        (1.7, {}, 0),
        (1.0, {"acceptors": 0}, 0),  # the default ("auto"), and one process
        (1.0, {}, 800),  # 51 KB messages: their bodies are in the spool (relay.store.spool)
    ],
)
async def test_kill_9_under_load_loses_nothing_acknowledged(relay_process, sink, kill_after, server, lines):
    proc = relay_process(server=server, delivery={"smarthost": sink.address, "retry_schedule": ["1s"], "lease": "3s"})
    await proc.start()
    acked: list[int] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + 10
    injectors = [
        asyncio.create_task(asyncio.to_thread(inject, proc.smtp_port, i, stop_at, acked, lock, lines))
        for i in range(SESSIONS)
    ]
    await asyncio.sleep(kill_after)
    proc.kill()
    await asyncio.gather(*injectors)
    assert acked, "nothing was accepted before the kill"
    await proc.start()  # the same data dir: the queue, and the leases of the killed process
    deadline = time.monotonic() + 30
    while True:
        arrived = [
            int(m.group(1)) for r in sink.handler.received for m in [re.search(rb"Subject: msg-(\d+)", r.data)] if m
        ]
        missing = set(acked) - set(arrived)
        if not missing:
            break
        assert time.monotonic() < deadline, (
            f"{len(missing)} acknowledged messages never arrived: {sorted(missing)[:10]}"
        )
        await asyncio.sleep(0.1)
    duplicates = len(arrived) - len(set(arrived))
    for r in sink.handler.received:
        m = re.search(rb"Subject: msg-(\d+)", r.data)
        assert m is not None
        assert r.data.replace(b"\r\n", b"\n").endswith(
            text(int(m.group(1)), lines).split("\r\n\r\n", 1)[1].replace("\r\n", "\n").encode()
        ), "the body arrived whole"
    # A duplicate is a delivery the sink accepted while the relay died before recording it: at most the
    # deliveries in flight at the kill (one per open connection).
    assert duplicates <= 20, duplicates
    print(f"kill after {kill_after}s: {len(acked)} acknowledged, all arrived, {duplicates} duplicates")
    await proc.terminate()
