"""relay.threads: the store's writer threads run under SCHED_BATCH (their wake-ups do not preempt the event
loop), the event loop's thread does not, and where the policy cannot be set nothing else changes."""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path

import pytest

from relay import threads
from relay.store.db import Database

linux = pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="SCHED_BATCH is Linux's")


def _policy(thread: threading.Thread) -> int:
    assert thread.native_id is not None
    return os.sched_getscheduler(thread.native_id)


@linux
async def test_the_sqlite_writer_thread_is_a_batch_thread_and_the_loop_is_not(tmp_path: Path) -> None:
    before = os.sched_getscheduler(0)
    db = Database(tmp_path / "relay.sqlite3")
    try:
        # a durable write: its COMMIT runs in the writer thread, which has set its policy by then
        await db.write(lambda c: c.execute("CREATE TABLE t (v INTEGER)"))
        assert _policy(db._writer._thread) == os.SCHED_BATCH
        assert os.sched_getscheduler(0) == before != os.SCHED_BATCH, "the event loop's thread is left as it was"
        rows = await db.read(lambda c: c.execute("SELECT count(*) FROM t").fetchall())
        assert rows == [(0,)]
    finally:
        await db.close()


@linux
def test_a_batch_thread_changes_only_itself() -> None:
    seen: list[tuple[bool, int]] = []
    before = os.sched_getscheduler(0)

    def body() -> None:
        seen.append((threads.run_as_batch(), os.sched_getscheduler(0)))

    worker = threading.Thread(target=body)
    worker.start()
    worker.join()
    assert seen == [(True, os.SCHED_BATCH)]
    assert os.sched_getscheduler(0) == before != os.SCHED_BATCH


def test_without_the_policy_a_thread_runs_as_before(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(os, "SCHED_BATCH", raising=False)
    assert threads.run_as_batch() is False


@linux
async def test_a_refused_policy_leaves_the_writer_working(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "sched_setscheduler", refuse)
    assert threads.run_as_batch() is False
    db = Database(tmp_path / "relay.sqlite3")
    try:
        await db.write(lambda c: c.execute("CREATE TABLE t (v INTEGER)"))
        await db.write(lambda c: c.execute("INSERT INTO t VALUES (1)"))
        assert _policy(db._writer._thread) == os.sched_getscheduler(0) != os.SCHED_BATCH
    finally:
        await db.close()
    with sqlite3.connect(tmp_path / "relay.sqlite3") as again:
        assert again.execute("SELECT v FROM t").fetchall() == [(1,)]
