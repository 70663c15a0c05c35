"""The PostgreSQL foundation (relay/store/postgres/) against a private cluster on loopback (tests/pg.py):
the schema and its migrations, and PgDatabase's contract: durable group-committed writes, a bad operation
failing alone, driver errors translated, and reconnecting by itself after the server restarts."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import sqlite3
import time
from typing import Any

import psycopg
import pytest
from psycopg import AsyncConnection

from relay.errors import StoreFull, StoreUnavailable
from relay.store import schema as sqlite_schema
from relay.store import webhooks
from relay.store.copy_tables import SQLITE_ONLY
from relay.store.dialect import BINARY_ROWS, PLAN_EACH_TIME
from relay.store.postgres import schema
from relay.store.postgres.connection import PgConnection
from relay.store.postgres.db import PgDatabase, translate
from tests.pg import PostgresCluster, free_port, server_bin

pytestmark = pytest.mark.skipif(server_bin() is None, reason="PostgreSQL is not installed (make test installs it)")

_names = itertools.count()


@pytest.fixture(scope="module")
def cluster():
    c = PostgresCluster(fsync=True)  # durability is what is tested here
    c.start()
    yield c
    c.stop()


@pytest.fixture
def url(cluster):
    return cluster.create_database(f"pgdb_{next(_names)}")


@pytest.fixture
async def db(url):
    database = PgDatabase(url)
    yield database
    await database.close()


async def fetch(url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` on a connection of its own (not the database object's)."""
    async with await AsyncConnection.connect(url, autocommit=True) as conn:
        return await (await conn.execute(sql.encode(), params)).fetchall()


async def opened_and_closed(url: str) -> None:
    """Open a PgDatabase (which migrates) and close it again."""
    await PgDatabase(url).close()


def insert_message(message_id: str):
    """An operation queueing a message with one recipient; it returns the recipient's id."""

    def op(conn: PgConnection) -> int:
        conn.execute(
            "INSERT INTO messages (id, created_at, sender, size, source) VALUES (?, 0, 'a@example.com', 1, 'smtp')",
            (message_id,),
        )
        row = conn.execute(
            "INSERT INTO recipients (message_id, address, domain, state, updated_at)"
            " VALUES (?, 'b@example.org', 'example.org', 'queued', 0) RETURNING id",
            (message_id,),
        ).fetchone()
        assert row is not None
        return int(row[0])

    return op


def one(sql: str):
    """An operation returning the first column of the first row of ``sql``."""

    def op(conn: PgConnection) -> Any:
        row = conn.execute(sql).fetchone()
        assert row is not None
        return row[0]

    return op


# -- schema ------------------------------------------------------------------


async def test_the_schema_is_created_once_and_a_rerun_changes_nothing(url):
    with psycopg.connect(url) as conn:
        assert schema.migrate(conn) == len(schema.MIGRATIONS)
        assert schema.migrate(conn) == len(schema.MIGRATIONS)
    assert await fetch(url, "SELECT version FROM schema_migrations ORDER BY version") == [
        (n,) for n in range(1, len(schema.MIGRATIONS) + 1)
    ]
    db = PgDatabase(url)  # opening migrates again: nothing to do
    assert await db.read(lambda c: schema.schema_version(c.raw)) == len(schema.MIGRATIONS)
    await db.close()


async def test_the_schema_has_every_table_column_and_index_of_sqlite_at_its_current_version(url):
    assert len(sqlite_schema.MIGRATIONS) == schema.SQLITE_VERSION, "a SQLite migration needs its PostgreSQL twin"
    with contextlib.closing(sqlite3.connect(":memory:", isolation_level=None)) as lite:
        sqlite_schema.migrate(lite)
        tables = [r[0] for r in lite.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        tables = [t for t in tables if t not in SQLITE_ONLY]
        expected = {(t, c[1]) for t in tables for c in lite.execute(f"PRAGMA table_info({t})")}
        indexes = {
            r[0]
            for r in lite.execute("SELECT name, tbl_name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")
            if r[1] not in SQLITE_ONLY
        }
        triggers = {r[0] for r in lite.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")}
    await opened_and_closed(url)
    columns = await fetch(
        url, "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'public'"
    )
    assert expected == set(columns) - {("schema_migrations", "version"), ("schema_migrations", "applied_at")}
    pg_indexes = {r[0] for r in await fetch(url, "SELECT indexname FROM pg_indexes WHERE schemaname = 'public'")}
    assert indexes <= pg_indexes
    pg_triggers = {r[0] for r in await fetch(url, "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal")}
    assert triggers == pg_triggers
    due = await fetch(url, "SELECT pg_get_indexdef('recipients_due'::regclass)")
    assert due[0][0].endswith("(next_attempt_at) WHERE (next_attempt_at IS NOT NULL)")  # partial: only due work


async def test_the_triggers_count_events_and_queue_them_for_webhooks_as_sqlite_does(db, url):
    def setup(conn: PgConnection) -> None:
        insert_message("m1")(conn)
        conn.execute("INSERT INTO message_tags VALUES ('news', 'm1')")
        for hook, events, enabled in [
            ("w_all", "[]", True),
            ("w_bounced", '["bounced"]', True),
            ("w_off", "[]", False),
        ]:
            conn.execute(
                "INSERT INTO webhooks (id, url, events, enabled, secret, created_at, updated_at)"
                " VALUES (?, 'http://127.0.0.1/', ?, ?, 's', 0, 0)",
                (hook, events, enabled),
            )
        for kind, at in [("delivered", 7201.5), ("delivered", 7300.0), ("bounced", 3599.9)]:
            conn.execute("INSERT INTO events (at, kind, message_id) VALUES (?, ?, 'm1')", (at, kind))

    await db.write(setup)
    counts = await fetch(url, "SELECT hour, kind, tag, n FROM event_counts ORDER BY 1, 2, 3")
    assert counts == [
        (0, "bounced", "", 1),
        (0, "bounced", "news", 1),
        (7200, "delivered", "", 2),
        (7200, "delivered", "news", 2),
    ]
    queued = await fetch(url, "SELECT webhook_id, count(*) FROM webhook_deliveries GROUP BY 1 ORDER BY 1")
    assert queued == [("w_all", 3), ("w_bounced", 1)]


@pytest.mark.parametrize("writer", [True, False], ids=["the writer, counted at commit", "another session"])
async def test_the_triggers_count_every_row_of_a_statement_that_inserts_many_events(db, url, writer):
    """The triggers run once per statement over the rows it inserted: a statement of many events, some
    of the same hour, kind and tag, counts each one, and queues a delivery per event and webhook."""
    triggers = await fetch(url, "SELECT tgname, tgtype & 1 FROM pg_trigger WHERE NOT tgisinternal ORDER BY 1")
    assert triggers == [("events_counted", 0), ("events_to_webhooks", 0)]  # bit 0 unset: FOR EACH STATEMENT

    def setup(conn: PgConnection) -> None:
        for message, tags in [("m1", ["news", "weekly"]), ("m2", ["news"]), ("m3", [])]:
            insert_message(message)(conn)
            for tag in tags:
                conn.execute("INSERT INTO message_tags VALUES (?, ?)", (tag, message))
        for hook, events in [("w_all", "[]"), ("w_bounced", '["bounced"]')]:
            conn.execute(
                "INSERT INTO webhooks (id, url, events, enabled, secret, created_at, updated_at)"
                " VALUES (?, 'http://127.0.0.1/', ?, 1, 's', 0, 0)",
                (hook, events),
            )

    await db.write(setup)
    rows = [("m1", "delivered", 10.0), ("m2", "delivered", 20.0), ("m3", "delivered", 30.0)]
    rows += [("m1", "bounced", 3700.0), ("m2", "delivered", 3599.0), ("m1", "delivered", 40.0)]
    insert = "INSERT INTO events (at, kind, message_id) VALUES " + ", ".join(["(?, ?, ?)"] * len(rows))
    params = tuple(value for message, kind, at in rows for value in (at, kind, message))
    if writer:
        await db.write(lambda conn: conn.execute(insert, params))
    else:
        await fetch(url, insert.replace("?", "%s") + " RETURNING id", params)
    counts = await fetch(url, "SELECT hour, kind, tag, n FROM event_counts ORDER BY 1, 2, 3")
    assert counts == [
        (0, "delivered", "", 5),
        (0, "delivered", "news", 4),
        (0, "delivered", "weekly", 2),
        (3600, "bounced", "", 1),
        (3600, "bounced", "news", 1),
        (3600, "bounced", "weekly", 1),
    ]
    queued = await fetch(
        url,
        "SELECT d.webhook_id, e.kind, e.message_id FROM webhook_deliveries d JOIN events e ON e.id = d.event_id"
        " ORDER BY d.id",
    )
    assert queued == [("w_all", kind, message) for message, kind, _ in rows[:3]] + [
        ("w_all", "bounced", "m1"),
        ("w_bounced", "bounced", "m1"),
        ("w_all", "delivered", "m2"),
        ("w_all", "delivered", "m1"),
    ]
    if not writer:  # then counted as the statement ran: a second one adds to the same rows
        await fetch(url, insert.replace("?", "%s") + " RETURNING id", params)
        again = await fetch(url, "SELECT n FROM event_counts WHERE hour = 0 AND kind = 'delivered' AND tag = ''")
        assert again == [(10,)]


async def test_message_bodies_are_compressed_with_lz4_and_read_back_as_they_were(db, url):
    text = b"".join(b"line %d of a message body that compresses\r\n" % n for n in range(400))  # ~17 KB
    short = b"Subject: hi\r\n\r\nshort\r\n"  # under the 2 KB at which PostgreSQL compresses at all

    def store(conn: PgConnection) -> None:
        for message, raw in [("m1", text), ("m2", short)]:
            insert_message(message)(conn)
            conn.execute("INSERT INTO message_bodies (message_id, raw) VALUES (?, ?)", (message, raw))

    await db.write(store)
    stored = await fetch(
        url, "SELECT message_id, pg_column_compression(raw), raw FROM message_bodies ORDER BY message_id"
    )
    assert stored == [("m1", "lz4", text), ("m2", None, short)]


async def test_two_nodes_migrating_an_empty_database_at_once_apply_each_migration_once(url):
    def migrate_on_a_connection_of_its_own() -> int:
        with psycopg.connect(url) as conn:
            return schema.migrate(conn)

    latest = len(schema.MIGRATIONS)
    both = await asyncio.gather(*(asyncio.to_thread(migrate_on_a_connection_of_its_own) for _ in range(2)))
    assert both == [latest, latest]
    assert await fetch(url, "SELECT version FROM schema_migrations ORDER BY version") == [
        (n,) for n in range(1, latest + 1)
    ]


async def test_a_schema_newer_than_the_code_is_refused(url):
    await opened_and_closed(url)
    newer = len(schema.MIGRATIONS) + 1
    await fetch(url, f"INSERT INTO schema_migrations VALUES ({newer}, 0) RETURNING version")
    with pytest.raises(StoreUnavailable, match=f"schema is at version {newer}, newer than this relay knows"):
        PgDatabase(url)


async def test_a_server_that_is_not_there_is_unavailable():
    with pytest.raises(StoreUnavailable):
        PgDatabase(f"postgresql://relay@127.0.0.1:{free_port()}/nothing")


# -- writes --------------------------------------------------------------------


async def test_a_write_returns_after_its_commit_with_synchronous_commit_on(cluster, url):
    cluster.psql("ALTER DATABASE " + url.rsplit("/", 1)[1] + " SET synchronous_commit = off")
    db = PgDatabase(url)
    recipient = await db.write(insert_message("m1"))
    # Another session sees it the moment the await returns: it was committed, not just sent.
    assert await fetch(url, "SELECT id, message_id FROM recipients") == [(recipient, "m1")]
    assert await db.write(one("SHOW synchronous_commit")) == "on"  # the writer's own, whatever the default
    await db.close()


@pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="SCHED_BATCH is Linux's")
async def test_the_writer_thread_is_a_batch_thread_and_the_loop_is_not(db):
    await db.write(one("SELECT 1"))  # the writer thread has set its policy before its first batch
    assert db._writer.native_id is not None
    assert os.sched_getscheduler(db._writer.native_id) == os.SCHED_BATCH  # relay.threads
    assert os.sched_getscheduler(0) != os.SCHED_BATCH


async def test_concurrent_writes_share_one_transaction_and_commit(db, url):
    writers, each = 50, 20

    async def writer(n: int) -> None:
        for i in range(each):
            await db.write(insert_message(f"m{n}-{i}"))

    commits_before = db.commits
    await asyncio.gather(*(writer(n) for n in range(writers)))
    commits = db.commits - commits_before
    writes = writers * each
    assert await fetch(url, "SELECT count(*) FROM recipients") == [(writes,)]
    print(f"\ngroup commit: {writes} writes, {writers} writers, {commits} commits")
    assert commits <= writes / 10


async def test_one_transaction_per_group_as_the_server_sees_it(db, url):
    def record(conn: PgConnection) -> None:
        conn.execute("INSERT INTO key_usage VALUES (pg_current_xact_id()::text, gen_random_uuid()::text, 1)")

    await asyncio.gather(*(db.write(record) for _ in range(100)))
    rows = await fetch(url, "SELECT count(DISTINCT api_key_id), count(*) FROM key_usage")
    assert rows[0][1] == 100
    assert rows[0][0] <= 2  # one transaction for all of them (two if the writer woke between two calls)


async def test_a_bad_operation_fails_alone_and_writes_nothing(db, url):
    await db.write(insert_message("taken"))

    def half_then_raises(conn: PgConnection) -> None:
        insert_message("half")(conn)
        raise ValueError("the operation's own bug")

    ops = [insert_message(f"ok{i}") for i in range(10)]
    ops[3] = insert_message("taken")  # primary key already there
    ops[7] = half_then_raises
    commits_before, reruns_before = db.commits, db.reruns
    results = await asyncio.gather(*(db.write(op) for op in ops), return_exceptions=True)
    assert isinstance(results[3], psycopg.errors.UniqueViolation)  # not a store error: reaches the caller as is
    assert isinstance(results[7], ValueError)
    assert all(isinstance(r, int) for i, r in enumerate(results) if i not in (3, 7))
    assert db.commits - commits_before == 1  # the good eight, together
    assert db.reruns - reruns_before == 2
    ids = {r[0] for r in await fetch(url, "SELECT message_id FROM recipients")}
    assert ids == {"taken"} | {f"ok{i}" for i in range(10) if i not in (3, 7)}
    assert await fetch(url, "SELECT count(*) FROM messages WHERE id = 'half'") == [(0,)]


async def test_placeholders_literal_percent_signs_flags_and_nul_characters(db):
    def op(conn: PgConnection) -> list[Any]:
        insert_message("m0")(conn)
        requeued = conn.execute("UPDATE recipients SET state = 'queued' WHERE message_id = ?", ("m0",)).rowcount
        like = conn.execute("SELECT count(*) FROM messages WHERE id LIKE 'm%' AND size % 2 = ?", (1,)).fetchone()[0]
        conn.execute("UPDATE messages SET sandbox = ?, subject = ? WHERE id = 'm0'", (True, "a\x00b"))
        flag, subject = conn.execute("SELECT sandbox, subject FROM messages WHERE id = 'm0'").fetchone()
        return [requeued, like, flag, subject]

    assert await db.write(op) == [1, 1, 1, "a\ufffdb"]


async def test_many_placeholders_are_numbered_in_order(db):
    """Statements go to PostgreSQL with its own $1, $2 … (psycopg's raw cursor): a multi-row VALUES of
    hundreds of parameters, as the queue's outcomes are written, keeps every value in its place."""
    values = [f"v{i}" for i in range(1, 301)]

    def op(conn: PgConnection) -> list[Any]:
        rows = ", ".join(["(?, ?, ?)"] * 100)
        return conn.execute(f"SELECT * FROM (VALUES {rows}) v (a, b, c)", values).fetchall()

    assert [value for row in await db.write(op) for value in row] == values


async def test_the_writer_walks_the_due_index_after_a_burst(db):
    """A burst of due webhook deliveries the statistics do not know of yet: the writer's claim walks the
    due index in order to its LIMIT (a bitmap scan read and sorted every due row: 14 ms a claim at 6,000)."""

    def burst(conn: PgConnection) -> None:
        conn.execute(
            "INSERT INTO webhooks (id, url, secret, created_at, updated_at) VALUES ('wh', 'http://x', '', 0, 0)"
        )
        conn.execute(
            "INSERT INTO webhook_deliveries (webhook_id, event_id, message_id, next_attempt_at, created_at, updated_at)"
            " SELECT 'wh', n, 'm' || (n / 2), n, 0, 0 FROM generate_series(1, 6000) n"
        )

    def plan(conn: PgConnection) -> str:
        explain = "EXPLAIN " + webhooks.DUE_FOR_ENDPOINT + " FOR UPDATE OF d SKIP LOCKED"
        return "\n".join(row[0] for row in conn.execute(explain, ("wh", 10_000.0, 24)).fetchall())

    await db.write(burst)
    shown = await db.write(plan)
    assert "Index Scan using webhook_deliveries_due" in shown, shown
    assert "Bitmap" not in shown and "Sort" not in shown, shown


async def test_a_statement_marked_to_be_planned_each_time_is_never_prepared(db):
    """psycopg prepares a statement run five times, and PostgreSQL then keeps one plan for it; a claim's
    statement (dialect.PLAN_EACH_TIME) is planned anew every time, with the tables of the moment."""
    marked = PLAN_EACH_TIME + "SELECT count(*) FROM messages WHERE id <> ?"
    plain = "SELECT count(*) FROM recipients WHERE id <> ?"
    for _ in range(8):
        await db.write(lambda c: (c.execute(marked, ("x",)).fetchall(), c.execute(plain, (0,)).fetchall()))
    prepared = await db.write(lambda c: [r[0] for r in c.execute("SELECT statement FROM pg_prepared_statements")])
    assert any("FROM recipients" in text for text in prepared), prepared
    assert not any("FROM messages" in text for text in prepared), prepared


@pytest.mark.parametrize("also_planned_each_time", [False, True])
async def test_a_statement_marked_for_binary_rows_reads_the_same_rows_sent_in_binary(db, also_planned_each_time):
    """Bodies come back in binary (dialect.BINARY_ROWS): in text a BYTEA travels as hex, twice its size."""
    body = bytes(range(256)) * 40 + b"\r\n.\r\n"  # every byte value, NUL and 8-bit ones among them
    await db.write(insert_message("m1"))
    await db.write(lambda c: c.execute("INSERT INTO message_bodies (message_id, raw) VALUES (?, ?)", ("m1", body)))
    query = "SELECT message_id, raw, octet_length(raw) FROM message_bodies WHERE message_id = ?"
    marked = (PLAN_EACH_TIME if also_planned_each_time else "") + BINARY_ROWS + query

    async def read(sql: str) -> tuple[list[Any], list[int]]:
        def op(conn: PgConnection) -> tuple[list[Any], list[int]]:
            cursor = conn.execute(sql, ("m1",))
            rows = cursor.fetchall()
            result = (cursor._cursor if conn.pipeline else cursor).pgresult  # the writer's: pipelined
            return rows, [result.fformat(n) for n in range(3)]

        return await db.write(op)

    assert await read(marked) == ([("m1", body, len(body))], [1, 1, 1])
    assert await read(query) == ([("m1", body, len(body))], [0, 0, 0])


async def test_a_nul_character_in_an_array_is_stored_as_in_a_text(db):
    """A message's tags go to PostgreSQL as one text[] (the enqueue's one statement): a NUL in one of them
    answered 500 (psycopg's DataError) where SQLite stored it."""

    def op(conn: PgConnection) -> list[Any]:
        insert_message("m0")(conn)
        conn.execute(
            "INSERT INTO message_tags (tag, message_id) SELECT unnest(CAST(? AS text[])), ?", (["a\x00b", "c"], "m0")
        )
        rows = conn.execute("SELECT tag FROM message_tags WHERE tag = ANY(?) ORDER BY tag", (["a\x00b", "c"],))
        return [r[0] for r in rows.fetchall()]

    assert await db.write(op) == ["a\ufffdb", "c"]


def test_driver_errors_are_translated():
    full = translate(psycopg.errors.DiskFull("could not extend file: No space left on device"))
    assert isinstance(full, StoreFull) and isinstance(full.__cause__, psycopg.errors.DiskFull)
    for exc in (
        psycopg.errors.AdminShutdown("terminating connection due to administrator command"),
        psycopg.OperationalError("connection failed: Connection refused"),
        psycopg.errors.CannotConnectNow("the database system is starting up"),
        psycopg.InterfaceError("the connection is closed"),
    ):
        assert isinstance(translate(exc), StoreUnavailable)
    unique = psycopg.errors.UniqueViolation("duplicate key")
    assert translate(unique) is unique


# -- outages -------------------------------------------------------------------


async def test_a_restart_during_writes_refuses_some_writes_and_the_next_ones_succeed(cluster, url):
    db = PgDatabase(url)
    outcomes: dict[str, str] = {}
    stop = asyncio.Event()

    async def writer(n: int) -> None:
        for i in itertools.count():
            if stop.is_set():
                return
            name = f"w{n}-{i}"
            try:
                await db.write(insert_message(name))
                outcomes[name] = "ok"
            except StoreUnavailable:
                outcomes[name] = "unavailable"
                await asyncio.sleep(0.05)

    writers = [asyncio.create_task(writer(n)) for n in range(5)]
    await asyncio.sleep(0.3)
    t0 = time.monotonic()
    await asyncio.to_thread(cluster.restart, 1.0)
    await asyncio.sleep(0.3)
    stop.set()
    await asyncio.gather(*writers)
    assert time.monotonic() - t0 < 15
    assert "unavailable" in outcomes.values()
    # Every acknowledged write is there; nothing is half-written (a message without its recipient).
    messages = {r[0] for r in await fetch(url, "SELECT id FROM messages")}
    recipients = {r[0] for r in await fetch(url, "SELECT message_id FROM recipients")}
    assert messages == recipients
    assert {name for name, how in outcomes.items() if how == "ok"} <= messages
    # The same object writes and reads again, without being recreated.
    await db.write(insert_message("after"))
    assert await db.read(one("SELECT count(*) FROM messages WHERE id = 'after'")) == 1
    await db.close()


async def test_the_first_write_and_read_after_a_restart_succeed_on_the_same_object(cluster, db):
    await db.write(insert_message("before"))
    assert await db.read(one("SELECT count(*) FROM messages")) == 1
    await asyncio.to_thread(cluster.restart, 0.2)
    await db.write(insert_message("after"))  # the stale connection fails before COMMIT: retried on a new one
    assert await db.read(one("SELECT count(*) FROM messages")) == 2


async def test_nothing_listens_beyond_loopback(cluster, db):
    assert cluster.psql("SHOW listen_addresses") == "127.0.0.1"
    assert await db.read(one("SELECT host(inet_server_addr())")) == "127.0.0.1"
