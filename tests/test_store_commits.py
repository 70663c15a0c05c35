"""SQLite's group commit: where the statements and the COMMIT run, and that every write still lands."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from pathlib import Path

from relay.errors import StoreUnavailable
from relay.store.db import AUTOCHECKPOINT_PAGES, QUICK_COMMITS_PER_CHECKPOINT, Database, open_database
from relay.store.schema import MIGRATIONS, schema_version


async def test_writes_light_and_heavy_land_together(tmp_path: Path) -> None:
    db = Database(tmp_path / "relay.sqlite3")
    await db.write(lambda c: c.execute("CREATE TABLE t (v INTEGER, thread TEXT)"))

    def insert(v: int):
        def op(c: sqlite3.Connection) -> None:
            c.execute("INSERT INTO t VALUES (?, ?)", (v, threading.current_thread().name))

        return op

    loop_thread = threading.current_thread().name
    bad = db.write(lambda c: c.execute("INSERT INTO nowhere VALUES (1)"), light=True)
    writes = [db.write(insert(v), light=v % 2 == 0) for v in range(40)]
    outcomes = await asyncio.gather(*writes[:20], bad, *writes[20:], return_exceptions=True)
    assert isinstance(outcomes.pop(20), StoreUnavailable)  # it fails alone: its neighbours are committed
    assert all(not isinstance(o, BaseException) for o in outcomes), outcomes
    assert db.commits < 40, "the writes waiting together were committed together"
    rows = await db.read(lambda c: c.execute("SELECT v, thread FROM t ORDER BY v").fetchall())
    await db.close()
    assert [v for v, _ in rows] == list(range(40))
    assert all((thread == loop_thread) == (v % 2 == 0) for v, thread in rows), "light ones on the loop's thread"
    with contextlib.closing(sqlite3.connect(tmp_path / "relay.sqlite3")) as again:  # committed: another reads them
        assert again.execute("SELECT count(*) FROM t").fetchone()[0] == 40


def _synchronous(c: sqlite3.Connection) -> int:
    """The synchronous setting the transaction running ``c`` will commit with (1 NORMAL, 2 FULL)."""
    return int(c.execute("PRAGMA synchronous").fetchone()[0])


async def test_a_group_of_writes_that_need_not_survive_power_loss_commits_without_fsync(tmp_path: Path) -> None:
    db = Database(tmp_path / "relay.sqlite3")
    await db.write(lambda c: c.execute("CREATE TABLE t (v INTEGER)"))

    def insert(v: int):
        def op(c: sqlite3.Connection) -> int:
            c.execute("INSERT INTO t VALUES (?)", (v,))
            return _synchronous(c)

        return op

    quick = await asyncio.gather(*(db.write(insert(v), light=True, durable=False) for v in range(5)))
    assert quick == [1] * 5, "only durable=False writes: committed with synchronous=NORMAL (no fsync)"
    assert db.quick_commits >= 1
    mixed = await asyncio.gather(db.write(insert(10), light=True, durable=False), db.write(insert(11), light=True))
    assert mixed == [2, 2], "one durable write in the group: the whole group is fsynced"
    alone = await db.write(insert(12))
    assert alone == 2, "a durable write after quick ones: FULL again"
    quick_alone = await db.write(insert(13), light=True, durable=False)
    assert quick_alone == 1
    await db.close()
    with contextlib.closing(sqlite3.connect(tmp_path / "relay.sqlite3")) as again:  # committed: another reads them
        assert [v for (v,) in again.execute("SELECT v FROM t ORDER BY v")] == [0, 1, 2, 3, 4, 10, 11, 12, 13]


async def test_quick_commits_leave_checkpoints_to_the_reader_thread(tmp_path: Path) -> None:
    """A durable commit checkpoints as SQLite does (in the writer thread); a quick one, on the event loop's
    thread, never does: after QUICK_COMMITS_PER_CHECKPOINT of them in a row, the reader thread does."""
    db = Database(tmp_path / "relay.sqlite3")
    await db.write(lambda c: c.execute("CREATE TABLE t (v BLOB)"))

    def insert(c: sqlite3.Connection) -> int:
        c.execute("INSERT INTO t VALUES (?)", (b"x" * 5000,))
        return int(c.execute("PRAGMA wal_autocheckpoint").fetchone()[0])

    assert await db.write(insert, light=True) == AUTOCHECKPOINT_PAGES
    assert await db.write(insert, light=True, durable=False) == 0
    for _ in range(QUICK_COMMITS_PER_CHECKPOINT):
        await db.write(insert, light=True, durable=False)
    for _ in range(100):  # the checkpoint runs in the reader thread
        if db.checkpoints:
            break
        await asyncio.sleep(0.01)
    assert db.checkpoints == 1
    copied = (tmp_path / "relay.sqlite3").stat().st_size  # before close (the last close checkpoints too)
    await db.close()
    assert copied > QUICK_COMMITS_PER_CHECKPOINT * 5000, "the log's pages were copied into the database file"


def test_processes_opening_a_new_file_at_once_take_turns(tmp_path: Path) -> None:
    """Openers of a file no one has made yet (relay serve and relay migrate started together, two nodes of a
    test) all get a migrated database: switching the new file to WAL answered "database is locked" at once
    to all but one of them, SQLite's busy timeout notwithstanding (one round in three with two openers)."""
    for round_ in range(15):
        path = tmp_path / f"round{round_}.sqlite3"
        barrier = threading.Barrier(4)
        outcomes: list[object] = []
        threads = [threading.Thread(target=_open_at_once, args=(path, barrier, outcomes)) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert outcomes == [len(MIGRATIONS)] * 4, (round_, outcomes)


def _open_at_once(path: Path, barrier: threading.Barrier, outcomes: list[object]) -> None:
    barrier.wait(timeout=10)
    try:
        conn = open_database(path)
        outcomes.append(schema_version(conn))
        conn.close()
    except Exception as exc:
        outcomes.append(exc)
