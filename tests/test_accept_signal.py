"""The delivery engine hears of new mail once per group commit, not once per message (a datagram each from
an acceptor process)."""

from __future__ import annotations

import asyncio

from relay.message import NewMessage
from relay.submission.accept import Acceptor


def _message(n: int) -> NewMessage:
    return NewMessage("app@example.com", (f"r{n}@example.org",), b"Subject: s\r\n\r\nbody\r\n", "smtp")


async def test_messages_queued_together_signal_the_engine_once(store) -> None:
    signals = []
    acceptor = Acceptor(store, 10_000_000, on_queued=lambda: signals.append(len(signals)))
    await asyncio.gather(*(acceptor.submit(_message(n)) for n in range(10)))
    await asyncio.sleep(0)  # the signal goes out at the loop's next turn
    assert acceptor.accepted == 10
    assert 1 <= len(signals) < 10, signals
    await acceptor.submit(_message(10))  # later mail: a signal of its own
    await asyncio.sleep(0)
    assert len(signals) >= 2
    assert acceptor.accepted == 11


async def test_a_failing_signal_does_not_fail_the_submission(store) -> None:
    def broken() -> None:
        raise OSError("the engine's socket is gone")

    acceptor = Acceptor(store, 10_000_000, on_queued=broken)
    assert await acceptor.submit(_message(1))  # on disk: the submission succeeds whatever the signal does
    await asyncio.sleep(0)
    assert acceptor.accepted == 1
