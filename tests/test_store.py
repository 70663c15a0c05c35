from __future__ import annotations

import asyncio
import sqlite3

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.errors import StoreFull, StoreUnavailable
from relay.events import EventKind, State
from relay.message import NewMessage
from relay.store import queue as q
from relay.store.db import open_database
from relay.store.repositories import SqlStore
from relay.store.schema import MIGRATIONS, schema_version
from tests.conftest import store_rows as rows


def message(*rcpts: str, sender: str = "a@example.com") -> NewMessage:
    return NewMessage(sender, rcpts, b"Subject: t\r\n\r\nbody\r\n", "smtp")


async def test_enqueue_writes_message_body_recipients_and_events(store):
    m = message("x@one.example", "y@two.example")
    await store.queue.enqueue(m)
    assert await rows(store, "SELECT sender, source FROM messages WHERE id = ?", m.id) == [("a@example.com", "smtp")]
    assert await rows(store, "SELECT raw FROM message_bodies WHERE message_id = ?", m.id) == [(m.raw,)]
    assert await rows(store, "SELECT address, domain, state FROM recipients ORDER BY id") == [
        ("x@one.example", "one.example", "queued"),
        ("y@two.example", "two.example", "queued"),
    ]
    assert await rows(store, "SELECT kind, recipient FROM events ORDER BY id") == [
        ("queued", "x@one.example"),
        ("queued", "y@two.example"),
    ]


async def test_claim_leases_due_recipients_once(store):
    for i in range(5):
        await store.queue.enqueue(message(f"r{i}@example.org"))
    first = await store.queue.claim_due(3, "node-a", lease=60)
    second = await store.queue.claim_due(10, "node-b", lease=60)
    assert sum(len(m.recipients) for m in first) == 3
    assert sum(len(m.recipients) for m in second) == 2
    claimed = {r.address for m in first + second for r in m.recipients}
    assert claimed == {f"r{i}@example.org" for i in range(5)}
    assert await store.queue.claim_due(10, "node-c", lease=60) == []
    assert all(m.raw == b"Subject: t\r\n\r\nbody\r\n" for m in first)


async def test_claims_stop_at_a_byte_budget_of_message_bodies(store):
    """The engine holds the bodies of what it claims: a claim takes messages in due order while their sizes
    add up to at most max_bytes (a message's recipients count it once), and always at least one message."""
    for i in range(4):
        m = NewMessage("a@example.com", (f"a{i}@example.org", f"b{i}@example.org"), b"x" * 1000, "smtp")
        await store.queue.enqueue(m)
        store.clock.advance(1)
    first = await store.queue.claim_due(100, "n", lease=60, max_bytes=2500)
    assert [len(m.recipients) for m in first] == [2, 2] and sum(len(m.raw) for m in first) <= 2500
    assert await store.queue.claim_due(100, "n", lease=60, max_bytes=10, first_fits=False) == []
    (alone,) = await store.queue.claim_due(100, "n", lease=60, max_bytes=10)  # larger than the budget: taken alone
    assert len(alone.recipients) == 2
    rest = await store.queue.claim_due(100, "n", lease=60)
    assert [len(m.recipients) for m in rest] == [2]
    await assert_due_invariant(store)


async def test_deferred_recipients_are_not_due_before_their_time(store):
    await store.queue.enqueue(message("r@example.org"))
    (m,) = await store.queue.claim_due(10, "n", lease=60)
    r = m.recipients[0]
    later = store.clock.now() + 300
    result = q.AttemptResult(r.id, m.id, r.address, State.DEFERRED, EventKind.DEFERRED, later, 451, "busy")
    await store.queue.record_attempts([result])
    assert await store.queue.claim_due(10, "n", lease=60) == []
    assert await store.queue.next_due_at() == later
    store.clock.advance(301)
    (again,) = await store.queue.claim_due(10, "n", lease=60)
    assert again.recipients[0].attempts == 1
    await assert_due_invariant(store)


async def test_leases_return_to_the_queue_by_owner_and_by_expiry(store):
    await store.queue.enqueue(message("a@example.org"))
    await store.queue.enqueue(message("b@example.org"))
    await store.queue.claim_due(1, "crashed-node", lease=60)
    await store.queue.claim_due(1, "other-node", lease=600)
    assert await store.queue.release_leases("crashed-node") == 1
    assert await rows(store, "SELECT state FROM recipients WHERE address = 'a@example.org'") == [("queued",)]
    store.clock.advance(120)
    assert await store.queue.release_leases() == 0  # other-node's lease has not expired
    store.clock.advance(600)
    assert await store.queue.release_leases() == 1
    assert await rows(store, "SELECT count(*) FROM recipients WHERE state = 'queued'") == [(2,)]
    await assert_due_invariant(store)


async def assert_due_invariant(store: SqlStore) -> None:
    """next_attempt_at is set exactly for queued and deferred recipients."""
    bad = await rows(
        store,
        "SELECT id, state, next_attempt_at FROM recipients WHERE"
        " (state IN ('queued', 'deferred')) != (next_attempt_at IS NOT NULL)",
    )
    assert bad == []


async def test_group_commit_shares_transactions_between_concurrent_writers(store):
    await asyncio.gather(*(store.queue.enqueue(message(f"r{i}@example.org")) for i in range(200)))
    assert await rows(store, "SELECT count(*) FROM messages") == [(200,)]
    assert store.db.writes >= 200
    assert store.db.commits < 100, f"{store.db.commits} commits for 200 messages: writes are not grouped"


async def test_a_failing_write_does_not_undo_its_neighbours(store):
    good = message("ok@example.org")
    duplicate = message("dup@example.org")
    await store.queue.enqueue(duplicate)
    bad = NewMessage(duplicate.sender, duplicate.recipients, duplicate.raw, "smtp", duplicate.id)
    results = await asyncio.gather(store.queue.enqueue(good), store.queue.enqueue(bad), return_exceptions=True)
    assert results[0] is None
    assert isinstance(results[1], sqlite3.IntegrityError | psycopg.IntegrityError)
    assert await rows(store, "SELECT count(*) FROM messages") == [(2,)]
    assert await rows(store, "SELECT count(*) FROM recipients") == [(2,)]


async def test_a_group_with_a_failing_write_is_run_again_one_savepoint_each(store):
    """A group of light writes runs without a savepoint each; when one fails, all of them run again, one
    savepoint each: the others land once, with the big body one of them staged in the spool, readable."""
    duplicate = message("dup@example.org")
    await store.queue.enqueue(duplicate)
    big = NewMessage("a@example.com", ("big@example.org",), b"Subject: big\r\n\r\n" + b"y" * 70_000 + b"\r\n", "smtp")
    good = message("ok@example.org")
    bad = NewMessage(duplicate.sender, duplicate.recipients, duplicate.raw, "smtp", duplicate.id)
    results = await asyncio.gather(
        store.queue.enqueue(big), store.queue.enqueue(bad), store.queue.enqueue(good), return_exceptions=True
    )
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], sqlite3.IntegrityError | psycopg.IntegrityError)
    assert await rows(store, "SELECT count(*) FROM messages") == [(3,)]
    assert await rows(store, "SELECT count(*) FROM events WHERE kind = 'queued'") == [(3,)]
    assert await store.bodies.raw_message(big.id) == big.raw
    assert await store.bodies.raw_message(good.id) == good.raw


def test_due_scan_uses_the_partial_index(tmp_path, request):
    conn = open_database(tmp_path / "q.sqlite3")
    request.addfinalizer(conn.close)
    plan = conn.execute(
        "EXPLAIN QUERY PLAN SELECT id FROM recipients WHERE next_attempt_at <= ? ORDER BY next_attempt_at LIMIT 10",
        (0,),
    ).fetchall()
    text = " ".join(str(row[-1]) for row in plan)
    assert "recipients_due" in text and "TEMP B-TREE" not in text and "SCAN recipients " not in text, text
    plan = conn.execute(
        "EXPLAIN QUERY PLAN SELECT id FROM recipients WHERE state = 'sending' AND lease_until < ?", (0,)
    ).fetchall()
    text = " ".join(str(row[-1]) for row in plan)
    assert "USING INDEX" in text and "SCAN" not in text, text


def test_migrations_are_versioned_and_idempotent(tmp_path):
    path = tmp_path / "m.sqlite3"
    conn = open_database(path)
    assert schema_version(conn) == len(MIGRATIONS)
    conn.close()
    conn = open_database(path)
    assert schema_version(conn) == len(MIGRATIONS)
    conn.close()


def test_database_file_is_private(tmp_path):
    path = tmp_path / "data" / "relay.sqlite3"
    open_database(path).close()
    assert path.stat().st_mode & 0o077 == 0
    assert path.parent.stat().st_mode & 0o077 == 0


def test_durability_pragmas(tmp_path):
    conn = open_database(tmp_path / "p.sqlite3")
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    finally:
        conn.close()


def test_message_ids_sort_in_creation_order():
    from relay.message import new_message_id

    ids = [new_message_id(1_800_000_000.0 + i / 7000) for i in range(5000)]
    assert ids == sorted(ids) and len(set(ids)) == 5000
    assert new_message_id(1_900_000_000.0) > ids[-1]


@settings(max_examples=500)
@given(st.integers(0, 2**128 - 1), st.integers(0, 2**128 - 1))
def test_sortable_base32_is_rfc_4648_base32_in_the_sortable_alphabet_and_sorts_like_the_numbers(a, b):
    import base64

    from relay.message import SORTABLE_ALPHABET, sortable_base32

    rfc = base64.b32encode(a.to_bytes(16, "big")).decode().rstrip("=")
    assert sortable_base32(a) == rfc.translate(str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", SORTABLE_ALPHABET))
    assert (sortable_base32(a) < sortable_base32(b)) == (a < b)


async def test_async_tests_run_on_uvloop_like_the_server():
    import uvloop

    assert isinstance(asyncio.get_running_loop(), uvloop.Loop)


async def test_lookup_reads_inline_and_falls_back_to_the_reader_when_busy(tmp_path):
    """Database.lookup answers on the caller's thread; while the lookup connection is taken it
    (and any SQLite busy error) goes to the reader thread, with the same answer."""
    import threading

    from relay.store.db import Database

    db = Database(tmp_path / "q.db")
    try:
        await db.write(lambda c: c.execute("CREATE TABLE t (k TEXT PRIMARY KEY, v TEXT)"))
        await db.write(lambda c: c.execute("INSERT INTO t VALUES ('a', 'one')"))
        threads: list[str] = []

        def get(conn):
            threads.append(threading.current_thread().name)
            return conn.execute("SELECT v FROM t WHERE k = 'a'").fetchone()[0]

        assert await db.lookup(get) == "one"
        assert threads[-1] == threading.current_thread().name
        with db._lookup_lock:  # as if another thread were mid-lookup
            assert await db.lookup(get) == "one"
        assert threads[-1].startswith("relay-db-reader")
    finally:
        await db.close()


@pytest.mark.parametrize(
    ("driver_error", "relay_error"),
    [
        ("database or disk is full", StoreFull),
        ("database is locked", StoreUnavailable),
        ("disk I/O error", StoreUnavailable),
    ],
)
async def test_driver_errors_surface_as_store_errors(tmp_path, driver_error, relay_error):
    """A write or a read that SQLite refuses (disk full, locked, I/O) raises relay's StoreFull or
    StoreUnavailable, not sqlite3's error; other writes in the same group commit are not undone."""
    from relay.store.db import Database

    def fail(conn):
        raise sqlite3.OperationalError(driver_error)

    db = Database(tmp_path / "q.db")
    try:
        await db.write(lambda c: c.execute("CREATE TABLE t (k TEXT)"))
        results = await asyncio.gather(
            db.write(fail), db.write(lambda c: c.execute("INSERT INTO t VALUES ('a')")), return_exceptions=True
        )
        assert type(results[0]) is relay_error and isinstance(results[0].__cause__, sqlite3.OperationalError)
        assert str(results[0]) == driver_error and results[1] is not None
        with pytest.raises(relay_error):
            await db.read(fail)
        assert await db.read(lambda c: c.execute("SELECT k FROM t").fetchall()) == [("a",)]
    finally:
        await db.close()
