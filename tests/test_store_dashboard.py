"""Contract tests of what the dashboard reads, on every backend (STORE_BACKENDS): message search with each
filter (relay.store.queue.search), recipients by state, deferrals counted by reason; and the schema
migrations that brought them, applied to databases holding data (SQLite at 15, PostgreSQL at 5)."""

from __future__ import annotations

import dataclasses
import sqlite3

import psycopg
import pytest

from relay.clock import FakeClock
from relay.events import EventKind, State
from relay.message import NewMessage, new_message_id
from relay.store import Store, protocols
from relay.store import schema as sqlite_schema
from relay.store.postgres import PgStore
from relay.store.postgres import schema as pg_schema
from relay.store.queue import SUBJECT_SCAN, AttemptResult, MessageFilter
from relay.store.queue import search as search_module  # the module (the package does not export a name 'search')
from tests.conftest import STORE_BACKENDS


@pytest.fixture(params=STORE_BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def storage(store_factory, backend) -> protocols.Storage:
    made: protocols.Storage = store_factory(backend=backend)
    return made


def message(sender: str, *rcpts: str, subject: str = "hello", header: str | None = None, **fields) -> NewMessage:
    header_line = f"Message-ID: <{header}>\r\n" if header else ""
    raw = f"{header_line}Subject: {subject}\r\n\r\nbody\r\n".encode()
    return NewMessage(sender, rcpts, raw, "http", subject=subject, **fields)


async def ids(storage, limit: int = 10, **filters) -> list[str]:
    page = await storage.queue.search(MessageFilter(**filters), limit)
    return [m.id for m in page.messages]


async def deliver(storage, message_id: str, results: dict[str, tuple[State, int, str]]) -> None:
    """Claim what is due and record ``results`` (address → state, code, reply) for this message's recipients."""
    for leased in await storage.queue.claim_due(100, "node", lease=60):
        outcomes = []
        for r in leased.recipients:
            state, code, reply = results.get(r.address, (State.DELIVERED, 250, "ok"))
            due = storage.clock.now() + 600 if state == State.DEFERRED else None
            outcomes.append(AttemptResult(r.id, leased.id, r.address, state, EventKind(state.value), due, code, reply))
        await storage.queue.record_attempts(outcomes)


@pytest.fixture
async def mailbox(storage):
    """Five messages, a second apart (oldest first), with their senders, subjects, tags and outcomes."""
    made = [
        message("news@Brand.example", "ann@one.example", subject="Weekly NEWS #1", tags=("news",), header="n1@b"),
        message("bills@other.example", "bob@two.example", subject="Your invoice 100%_paid", header="i1@o"),
        message("news@brand.example", "ann@one.example", "cid@three.example", subject="Weekly news #2", tags=("news",)),
        message("", "dan@four.example", subject="Delivery Status Notification"),
        message("alerts@brand.example", "bob@two.example", subject="Password reset", tags=("alerts",)),
    ]
    for m in made:
        await storage.queue.enqueue(made_at(m, storage.clock.now()))
        storage.clock.advance(1)
    ordered = [m.id for m in await storage.queue.messages(MessageFilter(), 10)][::-1]
    await deliver(storage, ordered[2], {"cid@three.example": (State.DEFERRED, 452, "4.2.2 <cid@three.example> full")})
    return ordered


def made_at(m: NewMessage, at: float) -> NewMessage:
    """The message with an id made at ``at`` (the store's fake clock), so ids and creation times agree."""
    return dataclasses.replace(m, id=new_message_id(at))


async def test_search_by_sender_address_or_domain_any_case(storage, mailbox):
    first, second, third, fourth, fifth = mailbox
    assert await ids(storage, sender="news@brand.example") == [third, first]
    assert await ids(storage, sender="NEWS@BRAND.EXAMPLE") == [third, first]
    assert await ids(storage, sender="brand.example") == [fifth, third, first]
    assert await ids(storage, sender="Brand.Example") == [fifth, third, first]
    assert await ids(storage, sender="example") == []  # a domain is matched whole, not as a suffix
    assert await ids(storage, sender="bills@other.example") == [second]


async def test_search_by_subject_contains_any_case_with_like_characters_taken_literally(storage, mailbox):
    first, second, third, _, fifth = mailbox
    assert await ids(storage, subject="weekly news") == [third, first]
    assert await ids(storage, subject="RESET") == [fifth]
    assert await ids(storage, subject="100%_p") == [second]
    assert await ids(storage, subject="1%") == []  # % is a character here, not "anything"
    assert await ids(storage, subject="s_1") == []


async def test_search_by_relay_id_or_message_id_header(storage, mailbox):
    first, second, *_ = mailbox
    assert await ids(storage, message_id=first) == [first]
    assert await ids(storage, message_id="i1@o") == [second]
    assert await ids(storage, message_id="<n1@b>") == [first]
    assert await ids(storage, message_id="nothing@here") == []


async def test_search_by_recipient_tag_status_and_time_as_before(storage, mailbox):
    first, second, third, fourth, fifth = mailbox
    assert await ids(storage, recipient="ann@one.example") == [third, first]
    assert await ids(storage, tag="news") == [third, first]
    assert await ids(storage, status="deferred") == [third]
    assert await ids(storage, status="delivered") == [fifth, fourth, third, second, first]
    start = (await storage.queue.message(first)).created_at
    assert await ids(storage, since=start + 1, until=start + 3) == [third, second]


async def test_search_combines_filters_whichever_drives(storage, mailbox):
    first, second, third, fourth, fifth = mailbox
    assert await ids(storage, tag="news", status="deferred") == [third]
    assert await ids(storage, recipient="bob@two.example", sender="brand.example") == [fifth]
    assert await ids(storage, recipient="ann@one.example", subject="#1") == [first]
    assert await ids(storage, sender="brand.example", tag="alerts") == [fifth]
    assert await ids(storage, message_id=third, status="deferred") == [third]
    assert await ids(storage, message_id=third, tag="alerts") == []
    assert await ids(storage, status="delivered", sender="news@brand.example", recipient="cid@three.example") == [third]


async def test_search_pages_by_cursor_and_records_come_whole(storage, mailbox):
    first, second, third, fourth, fifth = mailbox
    page = await storage.queue.search(MessageFilter(status="delivered"), 2)
    assert [m.id for m in page.messages] == [fifth, fourth] and page.next_cursor == fourth
    page = await storage.queue.search(MessageFilter(status="delivered", before=page.next_cursor), 2)
    assert [m.id for m in page.messages] == [third, second] and page.next_cursor == second
    page = await storage.queue.search(MessageFilter(status="delivered", before=page.next_cursor), 2)
    assert [m.id for m in page.messages] == [first] and page.next_cursor is None
    record = (await storage.queue.search(MessageFilter(message_id=third), 1)).messages[0]
    assert record == await storage.queue.message(third)  # the same record as the message's own page
    assert [(r.address, r.state) for r in record.recipients] == [
        ("ann@one.example", "delivered"),
        ("cid@three.example", "deferred"),
    ]


async def test_a_subject_search_examines_a_bounded_window_and_says_where_to_go_on(storage, monkeypatch):
    monkeypatch.setattr(search_module, "SUBJECT_SCAN", 3)
    made = []
    for i in range(7):
        m = made_at(message("a@x.example", "b@y.example", subject=f"m{i}"), storage.clock.now())
        await storage.queue.enqueue(m)
        made.append(m.id)
        storage.clock.advance(1)
    page = await storage.queue.search(MessageFilter(subject="m1"), 10)  # newest first: m6 m5 m4 examined
    assert page.messages == [] and page.next_cursor == made[4]
    page = await storage.queue.search(MessageFilter(subject="m1", before=page.next_cursor), 10)  # m3 m2 m1
    assert [m.id for m in page.messages] == [made[1]] and page.next_cursor == made[1]
    page = await storage.queue.search(MessageFilter(subject="m1", before=page.next_cursor), 10)  # m0: the end
    assert page.messages == [] and page.next_cursor is None
    page = await storage.queue.search(MessageFilter(subject="m"), 2)  # a full page: continue after it
    assert [m.id for m in page.messages] == [made[6], made[5]] and page.next_cursor == made[5]
    assert SUBJECT_SCAN >= 10_000  # the real bound: see bench/dashboard_queries.py


async def test_recipients_by_state_counts_every_state(storage, mailbox):
    counts = await storage.queue.state_counts()
    assert counts == {s.value: 0 for s in State} | {"delivered": 5, "deferred": 1}
    assert counts == (await storage.queue.summary()).by_state


async def test_deferrals_are_counted_by_reason_over_a_window(storage):
    replies = [
        (452, "4.2.2 <a1@gmail.example>: mailbox full, id 8f3a9c2b1d"),
        (452, "4.2.2 <a2@gmail.example>: mailbox full, id 77c0ffee12"),
        (421, "4.7.0 [TSS04] Messages from 203.0.113.5 temporarily deferred"),
        (452, "4.2.2 <a3@gmail.example>: mailbox full, id 1a2b3c4d5e"),
    ]
    rcpts = [f"r{i}@dest.example" for i in range(len(replies))]
    m = message("a@x.example", *rcpts)
    await storage.queue.enqueue(m)
    await deliver(
        storage, m.id, {r: (State.DEFERRED, code, text) for r, (code, text) in zip(rcpts, replies, strict=True)}
    )
    now = storage.clock.now()
    full, tss = await storage.events.deferral_reasons(now - 3600, now + 1, 10)
    assert (full.reason, full.count) == ("452 4.2.2 <address>: mailbox full, id <id>", 3)
    assert full.example == "452 4.2.2 <a1@gmail.example>: mailbox full, id 8f3a9c2b1d"
    assert full.last_at == now
    assert (tss.reason, tss.count) == ("421 4.7.0 [TSS04] Messages from <ip> temporarily deferred", 1)
    assert await storage.events.deferral_reasons(now - 3600, now + 1, 1) == [full]
    storage.clock.advance(7200)  # two hours on, the same reason again: summed over the window
    await deliver(
        storage, m.id, {rcpts[0]: (State.DEFERRED, 452, "4.2.2 <zz@gmail.example>: mailbox full, id 9e8d7c6b5a")}
    )
    later = storage.clock.now()
    (again, _) = await storage.events.deferral_reasons(now - 3600, later + 1, 10)
    assert (again.reason, again.count, again.last_at) == (full.reason, 4, later)
    assert [r.count for r in await storage.events.deferral_reasons(later - 60, later + 1, 10)] == [1]
    assert await storage.events.deferral_reasons(now - 7200, now - 3600, 10) == []
    await storage.events.prune_history(later - 60, 0)  # the hours pruned with the events they counted
    assert [r.count for r in await storage.events.deferral_reasons(0, later + 1, 10)] == [1]


def version_15_with_data(path) -> None:
    """A SQLite database as relay left it at schema version 15, with a delivered message in it."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sqlite_schema, "MIGRATIONS", sqlite_schema.MIGRATIONS[:15])
        conn = sqlite3.connect(path, isolation_level=None)
        assert sqlite_schema.migrate(conn) == 15
    conn.execute(
        "INSERT INTO messages (id, created_at, sender, size, source, subject, header_id)"
        " VALUES ('01old', 1.0, 'Old@Brand.Example', 10, 'smtp', 'An old subject', 'old@brand')"
    )
    conn.execute(
        "INSERT INTO recipients (message_id, address, domain, state, updated_at)"
        " VALUES ('01old', 'x@dest.example', 'dest.example', 'delivered', 1.0)"
    )
    conn.close()


def test_migration_18_applies_to_a_database_at_version_15_with_data(tmp_path):
    version_15_with_data(tmp_path / "old.sqlite3")
    conn = sqlite3.connect(tmp_path / "old.sqlite3", isolation_level=None)
    assert sqlite_schema.migrate(conn) == len(sqlite_schema.MIGRATIONS)
    indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"recipients_state_message", "recipients_address_message", "messages_sender"} <= indexes
    assert "messages_sender_domain" in indexes and "recipients_address" not in indexes  # replaced
    assert conn.execute("SELECT count(*) FROM deferral_counts").fetchone() == (0,)
    assert conn.execute("SELECT id, sender FROM messages").fetchall() == [("01old", "Old@Brand.Example")]
    conn.close()


async def test_old_rows_are_found_by_the_new_filters_after_the_migration(tmp_path):
    """The searches read columns every version had (sender, subject, header_id): nothing to backfill."""
    version_15_with_data(tmp_path / "old.sqlite3")  # the store migrates it as it opens
    store = Store(tmp_path / "old.sqlite3", FakeClock())
    try:
        for f in (
            MessageFilter(sender="old@brand.example"),
            MessageFilter(sender="brand.example"),
            MessageFilter(subject="OLD SUBJ"),
            MessageFilter(message_id="<old@brand>"),
            MessageFilter(recipient="x@dest.example", status="delivered"),
        ):
            assert [m.id for m in (await store.queue.search(f, 10)).messages] == ["01old"], f
    finally:
        await store.close()


async def test_postgresql_migration_8_applies_to_a_database_at_version_5_with_data(pg_cluster):
    url = pg_cluster.create_database("dashboard_migration")
    try:
        with psycopg.connect(url) as conn:
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(pg_schema, "MIGRATIONS", pg_schema.MIGRATIONS[:5])
                assert pg_schema.migrate(conn) == 5
            conn.execute(
                "INSERT INTO messages (id, created_at, sender, size, source, subject, header_id)"
                " VALUES ('01old', 1.0, 'Old@Brand.Example', 10, 'smtp', 'An old subject', 'old@brand')"
            )
            conn.execute(
                "INSERT INTO recipients (message_id, address, domain, state, updated_at)"
                " VALUES ('01old', 'x@dest.example', 'dest.example', 'delivered', 1.0)"
            )
            conn.commit()
        store = PgStore(url, FakeClock())  # migrates as it opens
        try:
            for f in (
                MessageFilter(sender="brand.example"),
                MessageFilter(recipient="x@dest.example", status="delivered"),
            ):
                assert [m.id for m in (await store.queue.search(f, 10)).messages] == ["01old"], f
            assert await store.events.deferral_reasons(0, 2e9, 10) == []
        finally:
            await store.close()
    finally:
        pg_cluster.drop_database("dashboard_migration")
