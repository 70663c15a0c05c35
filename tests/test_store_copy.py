"""``relay store copy``: a relay filled through its real repositories on SQLite, copied to PostgreSQL (and
back), reads the same through the repositories there; leases are released, triggers do not fire, ids
do not collide, a second run changes nothing, an interrupted run is finished by the next one."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest

from relay import credentials as creds
from relay.bounces.classify import Classification, Kind
from relay.cli.output import Report
from relay.cli.store import ProgressLine, _copy_report
from relay.clock import FakeClock
from relay.config import parse_rate, parse_store_url
from relay.domains import DkimKey
from relay.errors import StoreUnavailable
from relay.events import EventKind, State
from relay.keys import create_api_key
from relay.message import NewMessage
from relay.nodes import NodeInfo
from relay.store import Store, copy_sides, copy_tables, schema
from relay.store import copy as copy_mod
from relay.store.copy import Copied, CopyRefused, TableCount, TableProgress, copy_store
from relay.store.idempotency import Completion
from relay.store.operators import Operator
from relay.store.postgres import PgStore
from relay.store.postgres import schema as pg_schema
from relay.store.queue import AttemptResult, Quota
from relay.store.spool import spool_directory
from relay.store.suppressions import NewBounce
from relay.store.webhooks import AttemptOutcome, Webhook
from tests.conftest import run_cli

HARD = Classification(Kind.HARD, "user_unknown", "5.1.1")


@dataclasses.dataclass
class Filled:
    """What the test needs to know about the relay it filled."""

    secret: str
    username: str
    password: str
    leased_message: str
    totals: dict[str, int]
    backlog: dict[str, int]
    event_counts: list[tuple[int, str, int]]


# A body big enough for SQLite's spool: a copy reads it from there as a row of message_bodies.
BIG_BODY = b"Message-ID: <big@example.com>\r\nSubject: big\r\n\r\n" + b"0123456789abcdef" * 2048 + b"\r\n"


def message(*rcpts: str, **fields: Any) -> NewMessage:
    raw = b"Message-ID: <m1@example.com>\r\nSubject: t\r\n\r\n" + b"body\r\n" * 100
    return NewMessage("a@example.com", rcpts, raw, "http", **fields)


async def fill(store: Any) -> Filled:
    """Something in every table, written through the repositories: queued, leased, delivered and bounced
    recipients, events, keys and their usage, credentials, domains with keys, suppressions, the
    allowlist, templates with versions, webhooks with pending and leased deliveries, idempotency records."""
    clock = store.clock
    now = clock.now()
    early = message("early@example.org", send_at=now + 86400)  # scheduled: never claimed here
    await store.queue.enqueue(early)  # before the webhook: no delivery for its event
    clock.advance(10)
    await store.webhooks.create_webhook(Webhook("wh_1", "https://hooks.example/x", [], True, "", "whsec_x", now, now))
    key, secret = await create_api_key(store.keys, clock, "ci", ("send",), daily_quota=100)
    cred, password = await creds.create_smtp_credential(store.credentials, clock, allowed_from=("example.com",))
    assert await store.idempotency.claim_idempotency_key(key.id, "k1", "hash", 3600) is None
    done = message("x@one.example", "y@two.example", "v@five.example", tags=("news",), api_key_id=key.id)
    await store.queue.enqueue(
        done, quota=Quota(key.id, 100, None), completion=Completion(key.id, "k1", 202, "{}", done.id)
    )
    (first,) = await store.queue.claim_due(10, "old-node", lease=600)
    x, y, v = first.recipients
    await store.queue.record_attempts(
        [
            AttemptResult(x.id, done.id, x.address, State.DELIVERED, EventKind.DELIVERED, None, 250, "ok", "mx.one"),
            AttemptResult(
                y.id,
                done.id,
                y.address,
                State.BOUNCED,
                EventKind.BOUNCED,
                None,
                550,
                "5.1.1 no",
                "mx.two",
                bounce=NewBounce("y@two.example", HARD, "smtp", 550, "5.1.1 no", message_id=done.id),
                classification=HARD,
            ),
            AttemptResult(v.id, done.id, v.address, State.DEFERRED, EventKind.DEFERRED, now + 3600, 451, "busy"),
        ]
    )
    leased = message("z@three.example")
    await store.queue.enqueue(leased)
    await store.queue.claim_due(10, "old-node", lease=600)  # z stays leased: 'sending'
    big = NewMessage("a@example.com", ("w@four.example",), BIG_BODY, "smtp")
    await store.queue.enqueue(big)  # queued; its body in the spool (relay.store.spool)
    await store.queue.suspend_domain("four.example", 3600, "maintenance")
    await store.sites.acquire_slot("mx.four.example", 2, "old-node")  # a connection slot held
    await store.sites.record_pushback("mx.four.example", 0.5, now + 300)
    await store.rate_counters.hit(f"api:{key.id}", parse_rate("100/h"), now)  # a rate-limit window
    await store.suppressions.suppress(["manual@example.org"], "manual", "by hand")
    await store.suppressions.allow("example.net", "partner")
    created = await store.domains.create_domain(
        "dom_1", "example.com", DkimKey("s1", "active", now, "v=DKIM1; p=A", b"k1")
    )
    await store.domains.add_dkim_key(created.id, DkimKey("s2", "pending", now, "v=DKIM1; p=B", b"k2"))
    await store.secrets.add_secret("verp", b"sealed verp secret")
    await store.templates.create_template("tpl_1", "welcome", "Hi {{name}}", "<p>hi</p>", None)
    await store.templates.update_template("tpl_1", None, "Hello {{name}}", None, "v2")
    (due,) = await store.webhooks.claim_webhook_deliveries("wh_1", 1, lease=30)
    failed = AttemptOutcome(due.id, "wh_1", due.event_id, 500, "oops", 12.0, now + 600, b'{"event": 1}')
    await store.webhooks.record_webhook_attempts([failed], disable_after=86400)  # its payload kept for the retry
    (other,) = await store.webhooks.claim_webhook_deliveries("wh_1", 1, lease=30)
    ok = AttemptOutcome(other.id, "wh_1", other.event_id, 200, None, 3.0, None)
    await store.webhooks.record_webhook_attempts([ok], disable_after=86400)  # delivered
    await store.webhooks.claim_webhook_deliveries("wh_1", 1, lease=30)  # another one leased
    assert await store.idempotency.claim_idempotency_key(key.id, "k2", "hash", 3600) is None  # pending
    await store.nodes.register(NodeInfo("old-node", "mx1.example", "0.1.0", 100))
    await store.nodes.stop("old-node")
    await store.operators.add_operator(Operator("op_1", "alice", "admin", now), "argon2-hash")
    assert await store.events.prune_history(now + 5, 0) == (1, 0)  # early's event: its count stays
    hour = 3600
    counts = await store.events.event_counts(now - hour, now + hour, hour, None)
    return Filled(
        secret,
        cred.username,
        password,
        leased.id,
        await store.events.event_totals(),
        await store.webhooks.webhook_backlog(),
        sorted(counts),
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def source(tmp_path: Path, clock: FakeClock) -> tuple[str, Filled]:
    """A SQLite relay with something in every table, closed: its URL and what was put in it."""
    path = tmp_path / "source.sqlite3"
    store = Store(path, clock)
    try:
        filled = await fill(store)
    finally:
        await store.close()
    return f"sqlite:///{path}", filled


@pytest.fixture
def empty_pg(pg_cluster: Any) -> Any:
    """``make()``: the URL of a new, empty database of the test cluster."""
    return lambda: pg_cluster.create_database(f"copy_{uuid.uuid4().hex[:12]}")


def sqlite_counts(path: str) -> dict[str, int]:
    """Every table's row count, read from the catalog (not from the copy's list of tables); the bodies in the
    spool (``spooled_bodies``) counted as rows of ``message_bodies``, which is where a copy puts them."""
    conn = sqlite3.connect(parse_store_url(path).path)
    try:
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        counts = {
            n: conn.execute(f'SELECT count(*) FROM "{n}"').fetchone()[0] for n in names if not n.startswith("sqlite_")
        }
    finally:
        conn.close()
    counts["message_bodies"] += counts.pop("spooled_bodies")
    return counts


def spooled(path: str) -> int:
    conn = sqlite3.connect(parse_store_url(path).path)
    try:
        return int(conn.execute("SELECT count(*) FROM spooled_bodies").fetchone()[0])
    finally:
        conn.close()


def pg_counts(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        names = [
            r[0]
            for r in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
                " AND table_name <> 'schema_migrations'"
            )
        ]
        return {n: conn.execute(f'SELECT count(*) FROM "{n}"').fetchone()[0] for n in names}  # type: ignore[index]


def copy(source: str, target: str, now: float, **options: Any) -> Copied:
    return copy_store(parse_store_url(source), parse_store_url(target), now, **options)


# -- SQLite to PostgreSQL ---------------------------------------------------------------------------------


async def test_a_whole_relay_copied_to_postgresql_reads_the_same(source, empty_pg, clock):
    src, filled = source
    target = empty_pg()
    copied = copy(src, target, clock.now())
    assert copied.ok
    counts = sqlite_counts(src)
    empty = [t for t, n in counts.items() if n == 0 and t not in copy_tables.NOT_COPIED]
    assert not empty, f"fill() must put rows in every table, so that the copy of each is tested: {empty}"
    assert spooled(src) == 1, "fill() puts a body in the spool, so that reading it from there is tested"
    assert pg_counts(target) == counts, "every table of the schema is copied, row for row"
    with psycopg.connect(target) as conn:
        row = conn.execute("SELECT count(*) FROM message_bodies WHERE raw = %s", (BIG_BODY,)).fetchone()
        assert row is not None and row[0] == 1, "the spooled body is copied as it is"
    assert {t.table: t.copied for t in copied.tables} == {
        t: n for t, n in counts.items() if t not in copy_tables.NOT_COPIED
    }

    store = PgStore(target, clock)
    try:
        key = await store.keys.authenticate(filled.secret)
        assert key is not None and key.name == "ci"
        assert await store.queue.key_usage(key.id) == (1, 1)
        login = await store.credentials.smtp_credential_for_login(filled.username)
        assert login is not None and creds.verify_password(login[1], filled.password)
        (status,) = await store.queue.message_status(filled.leased_message)
        assert (status.state, status.next_attempt_at) == ("queued", clock.now()), "the lease is released"
        claimed = await store.queue.claim_due(10, "new-node", lease=60)
        assert filled.leased_message in {m.id for m in claimed}, "the leased recipient is due again"
        assert await store.events.event_totals() == filled.totals
        hour = 3600
        counts_now = await store.events.event_counts(clock.now() - hour, clock.now() + hour, hour, None)
        assert sorted(counts_now) == filled.event_counts, "events did not count themselves again"
        assert await store.webhooks.webhook_backlog() == filled.backlog, "events queued no new deliveries"
        due = await store.webhooks.claim_webhook_deliveries("wh_1", 10, lease=30)
        # One per message (a message's events go out in order): the retrying one and the leased one are due now.
        assert [d.attempts for d in due] == [1, 0]
        assert (await store.suppressions.suppression("manual@example.org")).reason == "manual"
        assert (await store.suppressions.suppression("y@two.example")).reason == "hard_bounce"
        assert [e for e, _, _ in await store.suppressions.allowlist()] == ["example.net"]
        domain = await store.domains.domain("example.com")
        assert domain is not None and [k.selector for k in domain.keys] == ["s1", "s2"]
        assert [v.version for v in await store.templates.template_versions("tpl_1")] == [2, 1]
        assert (await store.idempotency.idempotency_record(key.id, "k1")).status == 202
        assert [n.id for n in await store.nodes.list_all()] == ["old-node"]

        new = message("v@five.example")
        await store.queue.enqueue(new)  # ids continue after the copied ones: no collision
        assert [s.state for s in await store.queue.message_status(new.id)] == ["queued"]
        assert (await store.events.event_totals())["queued"] == filled.totals["queued"] + 1, "the triggers are on again"
        assert (await store.webhooks.webhook_backlog())["wh_1"] == filled.backlog["wh_1"] + 1
    finally:
        await store.close()


async def test_running_the_copy_again_changes_nothing(source, empty_pg, clock):
    src, _ = source
    target = empty_pg()
    copy(src, target, clock.now())
    before = pg_counts(target)
    again = copy(src, target, clock.now() + 60)
    assert again.ok and {t.copied for t in again.tables} == {0}
    assert pg_counts(target) == before


async def test_an_interrupted_copy_is_finished_by_running_it_again(source, empty_pg, clock):
    src, filled = source
    target = empty_pg()
    seen: list[TableProgress] = []

    def stop_after_some_batches(p: TableProgress) -> None:
        seen.append(p)
        if p.table == "events" and p.done >= 4:
            raise KeyboardInterrupt  # Ctrl-C half way

    with pytest.raises(KeyboardInterrupt):
        copy(src, target, clock.now(), batch_rows=2, progress=stop_after_some_batches)
    half = pg_counts(target)
    assert half["events"] == 4 and half["webhooks"] == 0, "batches before the stop were committed, the rest not"
    assert half["event_counts"] == 0, "the triggers did not fire for the events copied"

    finished = copy(src, target, clock.now(), batch_rows=2)
    assert finished.ok
    assert pg_counts(target) == sqlite_counts(src)
    events = next(t for t in finished.tables if t.table == "events")
    assert events.copied == events.source - 4, "the rows copied before the stop were skipped"
    store = PgStore(target, clock)
    try:
        hour = 3600
        counts_now = await store.events.event_counts(clock.now() - hour, clock.now() + hour, hour, None)
        assert sorted(counts_now) == filled.event_counts
    finally:
        await store.close()


async def test_copied_back_to_sqlite_the_counts_are_equal(source, empty_pg, clock, tmp_path):
    src, filled = source
    middle = empty_pg()
    copy(src, middle, clock.now())
    back = f"sqlite:///{tmp_path / 'back.sqlite3'}"
    copied = copy(middle, back, clock.now())
    assert copied.ok
    assert sqlite_counts(back) == pg_counts(middle) == sqlite_counts(src)
    conn = sqlite3.connect(parse_store_url(back).path)
    try:
        assert conn.execute("SELECT count(*) FROM message_bodies WHERE raw = ?", (BIG_BODY,)).fetchone()[0] == 1
    finally:
        conn.close()
    store = Store(parse_store_url(back).path, clock)
    try:
        assert await store.events.event_totals() == filled.totals, "events did not count themselves again"
        await store.queue.enqueue(message("v@five.example"))
        assert (await store.events.event_totals())["queued"] == filled.totals["queued"] + 1, "triggers recreated"
        assert (await store.webhooks.webhook_backlog())["wh_1"] == filled.backlog["wh_1"] + 1
        assert (await store.keys.authenticate(filled.secret)) is not None
    finally:
        await store.close()


# -- refusals -------------------------------------------------------------------------------------------------


async def test_a_body_missing_from_the_spool_stops_the_copy_saying_which(source, tmp_path, clock):
    src, _ = source
    path = parse_store_url(src).path
    assert path is not None
    (segment,) = spool_directory(path).iterdir()
    segment.unlink()
    with pytest.raises(StoreUnavailable, match=f"missing from the spool .*{segment.name}"):
        copy(src, f"sqlite:///{tmp_path / 'copy.sqlite3'}", clock.now())


async def test_a_target_with_another_relays_rows_is_refused_unless_forced(source, empty_pg, clock):
    src, _ = source
    target = empty_pg()
    other = PgStore(target, clock)
    try:
        await create_api_key(other.keys, clock, "someone else's", ("send",))
        await other.suppressions.suppress(["other@example.org"], "manual")
    finally:
        await other.close()
    with pytest.raises(CopyRefused, match=r"api_keys 1, suppressions 1"):
        copy(src, target, clock.now())
    assert pg_counts(target)["messages"] == 0, "nothing copied"
    forced = copy(src, target, clock.now(), force=True)
    assert forced.ok
    keys = next(t for t in forced.tables if t.table == "api_keys")
    assert (keys.source, keys.target, keys.foreign) == (1, 2, 1)


async def test_a_source_at_another_schema_version_is_refused(tmp_path, empty_pg, clock):
    old = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(old)
    conn.execute(f"PRAGMA user_version = {len(schema.MIGRATIONS) - 1}")
    conn.close()
    latest = len(schema.MIGRATIONS)
    with pytest.raises(
        CopyRefused, match=f"schema at version {latest - 1}, this relay's is {latest}: run relay migrate on it"
    ):
        copy(f"sqlite:///{old}", f"sqlite:///{tmp_path / 'target.sqlite3'}", clock.now())
    assert not (tmp_path / "target.sqlite3").exists(), "refused before the target is made"
    with pytest.raises(CopyRefused, match="no such file"):
        copy(f"sqlite:///{tmp_path / 'missing.sqlite3'}", empty_pg(), clock.now())
    with pytest.raises(CopyRefused, match="the same store"):
        copy(f"sqlite:///{old}", f"sqlite:///{tmp_path}/./old.sqlite3", clock.now())


async def test_a_source_a_relay_still_runs_on_is_refused(tmp_path, empty_pg, clock):
    path = tmp_path / "live.sqlite3"
    store = Store(path, clock)
    await store.nodes.register(NodeInfo("live-node", "mx9.example", "0.1.0", 100))
    await store.close()
    with pytest.raises(CopyRefused, match="a relay is running on it .live-node on mx9.example"):
        copy(f"sqlite:///{path}", empty_pg(), clock.now() + 10)
    assert copy(f"sqlite:///{path}", empty_pg(), clock.now() + 3600).ok, "a node silent for an hour is not running"


# -- the schema: a new table is copied without a change to the copy -----------------------------------------


async def test_a_table_added_by_a_later_migration_is_copied(tmp_path, empty_pg, clock, monkeypatch):
    monkeypatch.setattr(
        schema, "MIGRATIONS", [*schema.MIGRATIONS, "CREATE TABLE later (id INTEGER PRIMARY KEY, blob BLOB NOT NULL);"]
    )
    monkeypatch.setattr(
        pg_schema,
        "MIGRATIONS",
        [
            *pg_schema.MIGRATIONS,
            "CREATE TABLE later (id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, blob BYTEA NOT NULL);",
        ],
    )
    path = tmp_path / "later.sqlite3"
    store = Store(path, clock)
    await store.close()
    conn = sqlite3.connect(path)
    conn.executemany("INSERT INTO later (id, blob) VALUES (?, ?)", [(7, b"\x00\xff"), (9, "C:\\text in a blob column")])
    conn.commit()
    conn.close()
    target = empty_pg()
    copied = copy(f"sqlite:///{path}", target, clock.now())
    assert copied.ok and next(t for t in copied.tables if t.table == "later").target == 2
    with psycopg.connect(target) as pg:
        assert pg.execute("SELECT id, blob FROM later ORDER BY id").fetchall() == [
            (7, b"\x00\xff"),
            (9, b"C:\\text in a blob column"),
        ]
        pg.execute("INSERT INTO later (blob) VALUES ('\\x01')")
        assert pg.execute("SELECT max(id) FROM later").fetchone() == (10,), "the identity continues after the copy"


def test_tables_come_parents_first():
    names = [t.name for t in copy_tables.reference_tables()]
    assert set(names) >= {"messages", "recipients", "attempts", "webhooks", "webhook_deliveries", "domains"}
    assert names.index("messages") < names.index("recipients") < names.index("attempts")
    assert names.index("webhooks") < names.index("webhook_deliveries")
    assert names.index("domains") < names.index("dkim_keys")
    assert names.index("templates") < names.index("template_versions")


def test_batches_are_bounded_in_rows_and_bytes():
    big = b"x" * (20 * 1024 * 1024)
    rows = iter([(i, big) for i in range(5)])
    assert [len(b) for b in copy_mod._batches(rows, 1000)] == [2, 2, 1], "about 32 MB at most"
    assert [len(b) for b in copy_mod._batches(iter([(i,) for i in range(5)]), 2)] == [2, 2, 1]


# -- the command ---------------------------------------------------------------------------------------------------


def test_relay_store_copy_on_the_command_line(source, empty_pg):
    src, _ = source
    target = empty_pg()
    done = run_cli("store", "copy", "--from", src, "--to", target)
    assert done.returncode == 0, done.stderr
    assert "recipients" in done.stderr and "100.0%" in done.stderr, "one progress line per table"
    assert "every table has the source's count" in done.stdout
    assert any(
        line.split()[:1] == ["recipients"] and line.split()[1] == line.split()[2] for line in done.stdout.splitlines()
    )
    again = run_cli("store", "copy", "--from", src, "--to", target, "--json")
    assert again.returncode == 0, again.stderr
    data = json.loads(again.stdout)
    assert data["ok"] is True and {t["copied"] for t in data["tables"]} == {0}
    refused = run_cli("store", "copy", "--from", src, "--to", src)
    assert (refused.returncode, refused.stderr.strip()) == (1, "relay: the source and the target are the same store")
    missing = run_cli("store", "copy", "--from", src)
    assert (missing.returncode, missing.stderr.strip()) == (2, "relay: relay store copy needs --from URL and --to URL")
    bad = run_cli("store", "copy", "--from", "mysql://x", "--to", target)
    assert bad.returncode == 2 and "--from: must start with sqlite:/// or postgresql://" in bad.stderr


def test_different_counts_exit_with_status_1():
    copied = Copied([TableCount("messages", 3, 3, 3), TableCount("events", 5, 4, 4)])
    url = parse_store_url("sqlite:///a.sqlite3")
    report: Report = _copy_report(url, url, copied)
    assert (report.status, report.error) == (1, "counts differ in events")
    assert [line.split()[-1] for line in report.text[1:]] == ["3", "DIFFERENT"]


def test_progress_is_rewritten_in_place_on_a_terminal_only():
    class Stream:
        def __init__(self, tty: bool) -> None:
            self.written = ""
            self.tty = tty

        def isatty(self) -> bool:
            return self.tty

        def write(self, text: str) -> None:
            self.written += text

        def flush(self) -> None:
            pass

    steps = [
        TableProgress("events", 0, 4, False),
        TableProgress("events", 2, 4, False),
        TableProgress("events", 4, 4, True),
    ]
    plain, tty = Stream(False), Stream(True)
    for step in steps:
        ProgressLine(plain)(step)  # type: ignore[arg-type]
        ProgressLine(tty)(step)  # type: ignore[arg-type]
    assert plain.written.splitlines() == ["events                            4/4 rows 100.0%"]
    assert tty.written.count("\r\x1b[K") == 3 and "2/4 rows  50.0%" in tty.written and tty.written.endswith("\n")


def test_a_failed_batch_leaves_the_sqlite_triggers_in_place(tmp_path):
    path = tmp_path / "target.sqlite3"
    side = copy_sides.SqliteSide(parse_store_url(f"sqlite:///{path}"), target=True)
    try:
        events = next(t for t in copy_tables.reference_tables() if t.name == "events")
        good = dict.fromkeys(events.columns) | {"id": 1, "at": 1.0, "kind": "queued", "message_id": "m"}
        bad = good | {"id": 2, "kind": None}  # NOT NULL
        with pytest.raises(sqlite3.IntegrityError):
            side.insert(events, [tuple(good[c] for c in events.columns), tuple(bad[c] for c in events.columns)])
        triggers = side.conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger' ORDER BY name").fetchall()
        assert triggers == [("events_counted",), ("events_to_webhooks",)]
        assert side.conn.execute("SELECT count(*) FROM events").fetchone() == (0,), "the whole batch rolled back"
    finally:
        side.close()
