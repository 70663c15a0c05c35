"""SQLite's group commit: where the statements and the COMMIT run, and that every write still lands."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

from relay.errors import StoreUnavailable
from relay.store.db import Database


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
    again = sqlite3.connect(tmp_path / "relay.sqlite3")  # committed: another connection reads them
    assert again.execute("SELECT count(*) FROM t").fetchone()[0] == 40
