"""The PostgreSQL foundation (relay/store/postgres/) against a private cluster on loopback (tests/pg.py):
the schema and its migrations, and PgDatabase's contract: durable group-committed writes, a bad operation
failing alone, driver errors translated, and reconnecting by itself after the server restarts."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
import time
from typing import Any

import psycopg
import pytest
from psycopg import AsyncConnection

from relay.errors import StoreFull, StoreUnavailable
from relay.store import schema as sqlite_schema
from relay.store.postgres import schema
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
    await database.open()
    yield database
    await database.close()


async def fetch(url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` on a connection of its own (not the database object's)."""
    async with await AsyncConnection.connect(url, autocommit=True) as conn:
        return await (await conn.execute(sql.encode(), params)).fetchall()


def insert_message(message_id: str):
    async def op(conn: AsyncConnection[Any]) -> int:
        await conn.execute(
            "INSERT INTO messages (id, created_at, sender, size, source) VALUES (%s, 0, 'a@example.com', 1, 'smtp')",
            (message_id,),
        )
        row = await (
            await conn.execute(
                "INSERT INTO recipients (message_id, address, domain, state, updated_at)"
                " VALUES (%s, 'b@example.org', 'example.org', 'queued', 0) RETURNING id",
                (message_id,),
            )
        ).fetchone()
        assert row is not None
        return int(row[0])

    return op


# -- schema ------------------------------------------------------------------


async def test_the_schema_is_created_once_and_a_rerun_changes_nothing(url):
    async with await AsyncConnection.connect(url) as conn:
        assert await schema.migrate(conn) == len(schema.MIGRATIONS)
        assert await schema.migrate(conn) == len(schema.MIGRATIONS)
    assert await fetch(url, "SELECT version FROM schema_migrations ORDER BY version") == [
        (n,) for n in range(1, len(schema.MIGRATIONS) + 1)
    ]
    async with PgDatabase(url) as db:  # opening migrates again: nothing to do
        assert await db.read(schema.schema_version) == len(schema.MIGRATIONS)


async def test_the_schema_has_every_table_column_and_index_of_sqlite_at_its_current_version(url):
    assert len(sqlite_schema.MIGRATIONS) == schema.SQLITE_VERSION, "a SQLite migration needs its PostgreSQL twin"
    lite = sqlite3.connect(":memory:", isolation_level=None)
    sqlite_schema.migrate(lite)
    tables = [r[0] for r in lite.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    expected = {(t, c[1]) for t in tables for c in lite.execute(f"PRAGMA table_info({t})")}
    indexes = {r[0] for r in lite.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")}
    triggers = {r[0] for r in lite.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")}
    async with PgDatabase(url):
        pass
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
    async def setup(conn: AsyncConnection[Any]) -> None:
        await insert_message("m1")(conn)
        await conn.execute("INSERT INTO message_tags VALUES ('news', 'm1')")
        for hook, events, enabled in [
            ("w_all", "[]", True),
            ("w_bounced", '["bounced"]', True),
            ("w_off", "[]", False),
        ]:
            await conn.execute(
                "INSERT INTO webhooks (id, url, events, enabled, secret, created_at, updated_at)"
                " VALUES (%s, 'http://127.0.0.1/', %s, %s, 's', 0, 0)",
                (hook, events, enabled),
            )
        for kind, at in [("delivered", 7201.5), ("delivered", 7300.0), ("bounced", 3599.9)]:
            await conn.execute("INSERT INTO events (at, kind, message_id) VALUES (%s, %s, 'm1')", (at, kind))

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


async def test_two_nodes_migrating_an_empty_database_at_once_apply_each_migration_once(url):
    a = await AsyncConnection.connect(url)
    b = await AsyncConnection.connect(url)
    try:
        latest = len(schema.MIGRATIONS)
        assert await asyncio.gather(schema.migrate(a), schema.migrate(b)) == [latest, latest]
    finally:
        await a.close()
        await b.close()
    assert await fetch(url, "SELECT version FROM schema_migrations ORDER BY version") == [
        (n,) for n in range(1, latest + 1)
    ]


async def test_a_schema_newer_than_the_code_is_refused(url):
    async with PgDatabase(url):
        pass
    newer = len(schema.MIGRATIONS) + 1
    await fetch(url, f"INSERT INTO schema_migrations VALUES ({newer}, 0) RETURNING version")
    database = PgDatabase(url)
    with pytest.raises(StoreUnavailable, match=f"schema is at version {newer}, newer than this relay knows"):
        await database.open()
    await database.close()


async def test_a_server_that_is_not_there_is_unavailable():
    database = PgDatabase(f"postgresql://relay@127.0.0.1:{free_port()}/nothing")
    with pytest.raises(StoreUnavailable):
        await database.open()
    await database.close()


# -- writes --------------------------------------------------------------------


async def test_a_write_returns_after_its_commit_with_synchronous_commit_on(cluster, url):
    cluster.psql("ALTER DATABASE " + url.rsplit("/", 1)[1] + " SET synchronous_commit = off")
    async with PgDatabase(url) as db:
        recipient = await db.write(insert_message("m1"))
        # Another session sees it the moment the await returns: it was committed, not just sent.
        assert await fetch(url, "SELECT id, message_id FROM recipients") == [(recipient, "m1")]
        setting = await db.write(lambda c: _one(c, "SHOW synchronous_commit"))
        assert setting == "on"  # the writer's own setting, whatever the database's default says


async def _one(conn: AsyncConnection[Any], sql: str) -> Any:
    row = await (await conn.execute(sql.encode())).fetchone()
    assert row is not None
    return row[0]


@pytest.mark.parametrize("pipelined", [False, True])
async def test_concurrent_writes_share_one_transaction_and_commit(db, url, pipelined):
    writers, each = 50, 20

    async def writer(n: int) -> None:
        for i in range(each):
            await db.write(insert_message(f"m{n}-{i}"), pipelined=pipelined)

    commits_before = db.commits
    await asyncio.gather(*(writer(n) for n in range(writers)))
    commits = db.commits - commits_before
    writes = writers * each
    assert await fetch(url, "SELECT count(*) FROM recipients") == [(writes,)]
    print(f"\ngroup commit (pipelined={pipelined}): {writes} writes, {writers} writers, {commits} commits")
    assert commits <= writes / 10


async def test_one_transaction_per_group_as_the_server_sees_it(db, url):
    async def record(conn: AsyncConnection[Any]) -> None:
        await conn.execute("INSERT INTO key_usage VALUES (pg_current_xact_id()::text, gen_random_uuid()::text, 1)")

    await asyncio.gather(*(db.write(record) for _ in range(100)))
    rows = await fetch(url, "SELECT count(DISTINCT api_key_id), count(*) FROM key_usage")
    assert rows[0][1] == 100
    assert rows[0][0] <= 2  # one transaction for all of them (two if the writer woke between two calls)


@pytest.mark.parametrize("pipelined", [False, True])
async def test_a_bad_operation_fails_alone_and_writes_nothing(db, url, pipelined):
    await db.write(insert_message("taken"))

    async def half_then_raises(conn: AsyncConnection[Any]) -> None:
        await insert_message("half")(conn)
        raise ValueError("the operation's own bug")

    ops = [insert_message(f"ok{i}") for i in range(10)]
    ops[3] = insert_message("taken")  # primary key already there
    ops[7] = half_then_raises
    commits_before, reruns_before = db.commits, db.reruns
    results = await asyncio.gather(*(db.write(op, pipelined=pipelined) for op in ops), return_exceptions=True)
    assert isinstance(results[3], psycopg.errors.UniqueViolation)  # not a store error: reaches the caller as is
    assert isinstance(results[7], ValueError)
    assert all(isinstance(r, int) for i, r in enumerate(results) if i not in (3, 7))
    assert db.commits - commits_before == 1  # the good eight, together
    assert db.reruns - reruns_before == 2
    ids = {r[0] for r in await fetch(url, "SELECT message_id FROM recipients")}
    assert ids == {"taken"} | {f"ok{i}" for i in range(10) if i not in (3, 7)}
    assert await fetch(url, "SELECT count(*) FROM messages WHERE id = 'half'") == [(0,)]


async def test_an_operation_that_is_not_pipelined_sees_its_rowcount_amid_pipelined_ones(db):
    await db.write(insert_message("m0"))

    async def requeue(conn: AsyncConnection[Any]) -> int:
        cursor = await conn.execute("UPDATE recipients SET state = 'queued' WHERE message_id = 'm0'")
        return cursor.rowcount

    results = await asyncio.gather(
        db.write(insert_message("m1"), pipelined=True),
        db.write(requeue),
        db.write(insert_message("m2"), pipelined=True),
    )
    assert results[1] == 1


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
    await db.open()
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
    assert await db.read(lambda c: _one(c, "SELECT count(*) FROM messages WHERE id = 'after'")) == 1
    await db.close()


async def test_the_first_write_and_read_after_a_restart_succeed_on_the_same_object(cluster, db):
    await db.write(insert_message("before"))
    assert await db.read(lambda c: _one(c, "SELECT count(*) FROM messages")) == 1
    await asyncio.to_thread(cluster.restart, 0.2)
    await db.write(insert_message("after"))  # the stale connection fails before COMMIT: retried on a new one
    assert await db.read(lambda c: _one(c, "SELECT count(*) FROM messages")) == 2


async def test_nothing_listens_beyond_loopback(cluster, db):
    assert cluster.psql("SHOW listen_addresses") == "127.0.0.1"
    assert await db.read(lambda c: _one(c, "SELECT host(inet_server_addr())")) == "127.0.0.1"
