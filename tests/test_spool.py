"""Big bodies in the spool beside a SQLite file (relay.store.spool): written once, before their rows commit,
read back by delivery, the dashboard and the sandbox, removed once retention has deleted every row of a
segment; small bodies stay in the database."""

from __future__ import annotations

import asyncio
import itertools
import os
import sqlite3
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay.clock import FakeClock
from relay.errors import StoreUnavailable
from relay.events import EventKind, State
from relay.message import NewMessage
from relay.store import Store, spool
from relay.store.db import spool_of
from relay.store.queue import AttemptResult
from relay.store.spool import SPOOL_MIN_BYTES, SUFFIX, BodySpool, spool_directory


def body(n: int, size: int) -> bytes:
    head = f"Message-ID: <{n}@example.com>\r\nSubject: m{n}\r\n\r\n".encode()
    line = f"{n:062d}\r\n".encode()
    return (head + line * (size // len(line) + 1))[:size]


def new(n: int, size: int, **fields: object) -> NewMessage:
    return NewMessage("a@example.com", (f"r{n}@one.example",), body(n, size), "smtp", **fields)  # type: ignore[arg-type]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def store(tmp_path: Path, clock: FakeClock):
    s = Store(tmp_path / "relay.sqlite3", clock)
    yield s
    await s.close()


def rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def segments(path: Path) -> list[str]:
    directory = spool_directory(path)
    return sorted(n for n in os.listdir(directory) if n.endswith(SUFFIX)) if directory.exists() else []


async def test_a_big_body_is_in_a_segment_and_a_small_one_in_the_database(store, tmp_path):
    path = tmp_path / "relay.sqlite3"
    big, small = new(1, 100_000), new(2, SPOOL_MIN_BYTES - 1)
    await store.queue.enqueue(big)
    await store.queue.enqueue(small)
    assert rows(path, "SELECT message_id FROM message_bodies") == [(small.id,)]
    ((mid, segment, start, length),) = rows(path, "SELECT message_id, segment, start, length FROM spooled_bodies")
    assert (mid, start, length) == (big.id, 0, len(big.raw))
    assert segments(path) == [segment]
    assert (spool_directory(path) / str(segment)).read_bytes() == big.raw
    assert oct(os.stat(spool_directory(path)).st_mode & 0o777) == "0o700"
    assert oct(os.stat(spool_directory(path) / str(segment)).st_mode & 0o777) == "0o600"
    claimed = {m.id: m.raw for m in await store.queue.claim_due(10, "node", lease=60)}
    assert claimed == {big.id: big.raw, small.id: small.raw}
    assert await store.bodies.raw_message(big.id) == big.raw
    assert await store.bodies.raw_message(small.id) == small.raw


async def test_bodies_queued_together_share_a_segment_one_after_the_other(store, tmp_path):
    path = tmp_path / "relay.sqlite3"
    messages = [new(n, 20_000 + n * 1000) for n in range(6)]
    await store.queue.enqueue_many(messages)
    assert len(segments(path)) == 1
    placed = rows(path, "SELECT start, length FROM spooled_bodies ORDER BY start")
    assert [start for start, _ in placed] == [0, *(sum(len(m.raw) for m in messages[:i]) for i in range(1, 6))]
    for m in messages:
        assert await store.bodies.raw_message(m.id) == m.raw


async def test_an_operation_that_fails_leaves_no_bytes_of_its_body(store, tmp_path):
    path = tmp_path / "relay.sqlite3"
    kept = new(1, 30_000)

    def fails(conn: sqlite3.Connection) -> None:
        spooler = spool_of(conn)
        assert spooler is not None
        spooler.stage(b"x" * 50_000)
        raise ValueError("no")

    db = store.db
    results = await asyncio.gather(store.queue.enqueue(kept), db.write(fails, light=True), return_exceptions=True)
    assert results[0] is None and isinstance(results[1], ValueError)
    (segment,) = segments(path)
    assert (spool_directory(path) / segment).read_bytes() == kept.raw, "only the committed body was written"


async def test_when_the_spool_cannot_be_written_nothing_is_queued(tmp_path, clock):
    path = tmp_path / "relay.sqlite3"
    spool_directory(path).write_bytes(b"a file where the directory should be")
    store = Store(path, clock)
    try:
        with pytest.raises(StoreUnavailable):
            await store.queue.enqueue(new(1, 40_000))
        assert rows(path, "SELECT count(*) FROM messages") == [(0,)], "no row without its body"
        small = new(2, 1000)
        await store.queue.enqueue(small)  # a body in the database needs no spool
        spool_directory(path).unlink()
        later = new(3, 40_000)
        await store.queue.enqueue(later)
        assert await store.bodies.raw_message(later.id) == later.raw
    finally:
        await store.close()


async def test_a_process_starts_a_new_segment_when_one_is_full(store, tmp_path, monkeypatch):
    path = tmp_path / "relay.sqlite3"
    monkeypatch.setattr(spool, "SEGMENT_BYTES", 70_000)
    messages = [new(n, 30_000) for n in range(5)]
    for m in messages:
        await store.queue.enqueue(m)
    assert len(segments(path)) == 3  # two bodies a segment
    for m in messages:
        assert await store.bodies.raw_message(m.id) == m.raw
    claimed = await store.queue.claim_due(10, "node", lease=60)
    assert sorted(m.raw for m in claimed) == sorted(m.raw for m in messages)


def test_a_segment_is_left_when_old_and_bodies_are_placed_where_staged(tmp_path, monkeypatch):
    writer = BodySpool(tmp_path / "bodies")
    first, _ = writer.stage(b"a" * 10)
    writer.flush()
    monkeypatch.setattr(spool, "SEGMENT_SECONDS", -1.0)  # every segment is old now
    second, start = writer.stage(b"b" * 10)
    assert (second != first, start) == (True, 0)
    mark = writer.mark()
    writer.stage(b"c" * 10)
    writer.unstage(mark)
    assert writer.stage(b"d" * 5) == (second, 10), "an unstaged body's place is given again"
    writer.flush()
    assert (tmp_path / "bodies" / second).read_bytes() == b"b" * 10 + b"d" * 5
    writer.close()


async def attempt(store: Store, state: State, code: int, reply: str) -> None:
    """Claim the one message due and record its one recipient's attempt ending in ``state``."""
    (m,) = await store.queue.claim_due(10, "node", lease=60)
    (r,) = m.recipients
    kind = EventKind.DELIVERED if state is State.DELIVERED else EventKind.BOUNCED
    await store.queue.record_attempts([AttemptResult(r.id, m.id, r.address, state, kind, None, code, reply, "mx.one")])


def age(file: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(file, (then, then))


async def test_retention_removes_a_segment_once_no_body_is_in_it(tmp_path, clock):
    path = tmp_path / "relay.sqlite3"
    store = Store(path, clock)
    sent = new(1, 40_000)
    await store.queue.enqueue(sent)
    await attempt(store, State.DELIVERED, 250, "ok")
    pending = new(2, 40_000)
    clock.advance(10)
    await store.queue.enqueue(pending)
    await store.close()
    (segment,) = segments(path)

    store = Store(path, clock)  # a new process: the segment is nobody's open one
    try:
        age(spool_directory(path) / segment, 7200)
        orphan = spool_directory(path) / f"0-1-abcdef{SUFFIX}"  # a crash's: bytes no row points at
        orphan.write_bytes(b"x" * 100)
        age(orphan, 7200)
        young = spool_directory(path) / f"1-1-abcdef{SUFFIX}"  # being written by another process
        young.write_bytes(b"y" * 100)
        clock.advance(100)
        assert await store.events.prune_history(clock.now() - 1e6, clock.now() - 50) == (0, 1)
        assert await store.events.prune_history(clock.now() - 1e6, clock.now() - 50) == (0, 0)  # then the sweep
        assert rows(path, "SELECT message_id FROM spooled_bodies") == [(pending.id,)]
        assert segments(path) == sorted([segment, young.name]), "the segment still holds a pending body"
        assert await store.bodies.raw_message(sent.id) is None

        await attempt(store, State.DELIVERED, 250, "ok")
        clock.advance(100)
        assert await store.events.prune_history(clock.now() - 1e6, clock.now() - 50) == (0, 1)
        assert await store.events.prune_history(clock.now() - 1e6, clock.now() - 50) == (0, 0)  # then the sweep
        assert segments(path) == [young.name], "no body left in it: the segment is gone"
    finally:
        await store.close()


async def test_a_missing_segment_is_an_absent_body_not_a_crash(store, tmp_path, caplog):
    path = tmp_path / "relay.sqlite3"
    lost = new(1, 40_000)
    await store.queue.enqueue(lost)
    (segment,) = segments(path)
    (spool_directory(path) / segment).unlink()
    assert await store.bodies.raw_message(lost.id) is None
    assert "missing" in caplog.text
    assert await store.queue.claim_due(10, "node", lease=60) == []


async def test_a_sandboxed_big_message_is_shown_whole(store):
    caught = new(1, 40_000, sandbox=True)
    await store.queue.enqueue(caught)
    found = await store.queue.sandbox_message(caught.id)
    assert found is not None and found[1] == caught.raw


async def test_a_bounced_big_message_can_be_sent_again(store):
    bounced = new(1, 40_000)
    await store.queue.enqueue(bounced)
    await attempt(store, State.BOUNCED, 550, "5.1.1 no")
    (again,) = await store.queue.resend(bounced.id)
    assert again.result == "queued"
    (m,) = await store.queue.claim_due(10, "node", lease=60)
    assert m.raw == bounced.raw


async def test_a_claim_in_the_same_group_commit_reads_the_body_not_yet_written(store, caplog):
    big = new(1, 100_000)
    _, claimed = await asyncio.gather(store.queue.enqueue(big), store.queue.claim_due(10, "node", lease=60))
    assert [m.raw for m in claimed] == [big.raw], "the claim ran in the transaction that queued the message"
    assert "segment" not in caplog.text


STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("stage"), st.binary(min_size=1, max_size=300)),
        st.tuples(st.just("op"), st.lists(st.binary(min_size=1, max_size=300), max_size=3), st.booleans()),
        st.tuples(st.just("flush")),
        st.tuples(st.just("discard")),
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(STEPS)
def test_every_flushed_body_reads_back_from_where_it_was_placed(tmp_path_factory, monkeypatch, steps):
    """A model of the group commit's use of the spool: bodies staged alone or by an operation that may fail
    (unstaged), groups flushed or discarded, segments full at 1 KB; every body of a flushed group reads back."""
    monkeypatch.setattr(spool, "SEGMENT_BYTES", 1024)
    monkeypatch.setattr(spool, "IOV_MAX", 3)  # a group's bodies in several writes
    directory = tmp_path_factory.mktemp("spool") / "bodies"
    writer = BodySpool(directory)
    group: list[tuple[str, int, bytes]] = []
    durable: list[tuple[str, int, bytes]] = []
    for step in steps:
        if step[0] == "stage":
            group.append((*writer.stage(step[1]), step[1]))
        elif step[0] == "op":
            mark, placed = writer.mark(), [(*writer.stage(b), b) for b in step[1]]
            if step[2]:
                group.extend(placed)
            else:
                writer.unstage(mark)
        elif step[0] == "flush":
            writer.flush()
            durable.extend(group)
            group = []
        else:
            writer.discard()
            group = []
    writer.flush()
    durable.extend(group)
    writer.close()
    for segment, start, raw in durable:
        assert spool.read_body(directory, segment, start, len(raw)) == raw
    places = sorted((segment, start, start + len(raw)) for segment, start, raw in durable)
    for (s1, _, end), (s2, start, _) in itertools.pairwise(places):
        assert s1 != s2 or end <= start, "two bodies in the same bytes"


def test_a_short_write_is_finished(tmp_path, monkeypatch):
    real = os.pwritev
    monkeypatch.setattr(spool.os, "pwritev", lambda fd, buffers, at: real(fd, [buffers[0][:5]], at))
    writer = BodySpool(tmp_path / "bodies")
    places = [writer.stage(body) for body in (b"a" * 100, b"b" * 50, b"c" * 7)]
    writer.flush()
    writer.close()
    segment = places[0][0]
    assert (tmp_path / "bodies" / segment).read_bytes() == b"a" * 100 + b"b" * 50 + b"c" * 7
