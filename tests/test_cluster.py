"""Two relay nodes, real processes with a data directory each, on one PostgreSQL database (the private
cluster of the session) and one sink: issue 20's multi-node tests.

RELAY_CLUSTER_MESSAGES sets how many messages the exactly-once test submits (4,000 by default).
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import os
import re
import smtplib
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from relay.delivery.engine import SHARED_EVERY
from tests.conftest import RelayProcess, config_dict, run_cli, write_store_key, write_toml

MESSAGES = int(os.environ.get("RELAY_CLUSTER_MESSAGES", "4000"))
SUBJECT = re.compile(rb"Subject: msg-(\d+)")
_names = itertools.count()


class Cluster:
    """Nodes made by :meth:`node` share one new (empty) database; each has its own data_dir and log."""

    def __init__(self, tmp_path: Path, url: str, sink_address: str) -> None:
        self.tmp_path, self.url, self.sink_address = tmp_path, url, sink_address
        self.nodes: list[RelayProcess] = []
        self.key_file = write_store_key(tmp_path / "store.key")  # copied to every node, as the README says

    def node(self, name: str, **sections: dict[str, Any]) -> RelayProcess:
        delivery = {"smarthost": self.sink_address, "retry_schedule": ["1s"], "lease": "3s"}
        delivery.update(sections.pop("delivery", {}))
        server = {"acceptors": 0, **sections.pop("server", {})}
        store = {"url": self.url, "secret_key_file": str(self.key_file)}
        data = config_dict(self.tmp_path / name, store=store, delivery=delivery, server=server, **sections)
        proc = RelayProcess(write_toml(self.tmp_path / f"{name}.toml", data), self.tmp_path / f"{name}.log")
        self.nodes.append(proc)
        return proc

    def api_key(self, node: RelayProcess) -> str:
        done = run_cli("keys", "create", "--scope", "send", "--json", config=node.config_path)
        assert done.returncode == 0, done.stderr
        return str(json.loads(done.stdout)["key"])


@pytest.fixture
def cluster(tmp_path, pg_cluster, sink):
    made = Cluster(tmp_path, pg_cluster.create_database(f"cluster_{next(_names)}"), sink.address)
    yield made
    for proc in made.nodes:
        proc.cleanup()


def send_smtp(port: int, numbers: list[int], acked: list[int], lock: threading.Lock) -> None:
    """Numbered messages over one SMTP session (a new one after a refusal or a dropped connection)."""
    pending = list(numbers)
    deadline = time.monotonic() + 120
    while pending and time.monotonic() < deadline:
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
                while pending:
                    n = pending[0]
                    smtp.sendmail("load@example.com", [f"r{n}@example.org"], f"Subject: msg-{n}\r\n\r\nnumber {n}\r\n")
                    with lock:
                        acked.append(n)
                    pending.pop(0)
        except (OSError, smtplib.SMTPException):
            return


async def send_http(port: int, key: str, numbers: list[int], acked: list[int], concurrency: int = 8) -> None:
    queue = collections.deque(numbers)
    headers = {"Authorization": f"Bearer {key}"}

    async def worker(session: aiohttp.ClientSession) -> None:
        while queue:
            n = queue.popleft()
            payload = {"from": "api@example.com", "to": [f"r{n}@example.org"], "subject": f"msg-{n}", "text": "x"}
            async with session.post(f"http://127.0.0.1:{port}/v1/messages", json=payload, headers=headers) as resp:
                if resp.status == 202:
                    acked.append(n)

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))


def arrived(sink) -> list[int]:
    return [int(m.group(1)) for r in sink.handler.received for m in [SUBJECT.search(r.data)] if m]


async def wait_for_arrivals(sink, expected: set[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        got = arrived(sink)
        missing = expected - set(got)
        if not missing:
            return got
        assert time.monotonic() < deadline, (
            f"{len(missing)} acknowledged messages never arrived: {sorted(missing)[:10]}"
        )
        await asyncio.sleep(0.1)


async def test_two_nodes_deliver_every_message_exactly_once(cluster, sink):
    # A lease (60 s) that outlasts any wait for a write under load: with the 3 s of the kill test, a
    # loaded machine can delay a renewal past the lease, and another node then sends it again.
    a, b = cluster.node("a", delivery={"lease": "60s"}), cluster.node("b", delivery={"lease": "60s"})
    await asyncio.gather(a.start(), b.start())  # both migrate the empty database at once
    key = cluster.api_key(a)  # made through node A's config, used on node B: keys are shared
    smtp_numbers, http_numbers = list(range(0, MESSAGES, 2)), list(range(1, MESSAGES, 2))
    acked_smtp: list[int] = []
    lock = threading.Lock()
    t0 = time.monotonic()
    sessions = 4
    await asyncio.gather(
        *(
            asyncio.to_thread(send_smtp, a.smtp_port, smtp_numbers[i::sessions], acked_smtp, lock)
            for i in range(sessions)
        ),
        send_http(b.http_port, key, http_numbers, acked_http := []),
    )
    assert sorted(acked_smtp + acked_http) == list(range(MESSAGES))  # nothing refused
    got = await wait_for_arrivals(sink, set(range(MESSAGES)), timeout=60 + MESSAGES / 50)
    elapsed = time.monotonic() - t0
    counts = collections.Counter(got)
    assert [n for n, c in counts.items() if c > 1] == []  # exactly once
    delivered_by = collections.Counter(r.peer for r in sink.handler.received)
    print(f"\n{MESSAGES} messages through two nodes in {elapsed:.1f}s ({MESSAGES / elapsed:.0f}/s)")
    for node in (a, b):
        assert await node.terminate() == 0
    assert "delivered" in a.log() or "delivered" in b.log() or delivered_by


async def test_an_idempotency_key_used_on_both_nodes_makes_one_message(cluster, sink):
    a, b = cluster.node("a"), cluster.node("b")
    await asyncio.gather(a.start(), b.start())
    key = cluster.api_key(a)
    payload = {"from": "api@example.com", "to": ["once@example.org"], "subject": "msg-7", "text": "x"}
    headers = {"Authorization": f"Bearer {key}", "Idempotency-Key": "order-7"}
    answers = []
    async with aiohttp.ClientSession() as session:
        for node in (a, b):
            async with session.post(
                f"http://127.0.0.1:{node.http_port}/v1/messages", json=payload, headers=headers
            ) as r:
                answers.append((r.status, await r.json(), r.headers.get("Idempotent-Replayed")))
    (s1, body1, replayed1), (s2, body2, replayed2) = answers
    assert s1 == s2 == 202 and body1 == body2
    assert replayed2 == "true" and replayed1 in (None, "false")
    await sink.handler.wait_for(1)
    await asyncio.sleep(1.0)
    assert arrived(sink) == [7]


async def test_a_suppression_made_elsewhere_is_refused_at_rcpt_by_every_process_of_a_node(cluster, sink):
    """Each process keeps the suppression list in memory (relay.store.suppression_sieve): one added by
    another process (the CLI here, as another node would) reaches node b's main and acceptor processes by
    NOTIFY, and RCPT refuses it from then on, whichever of them takes the connection."""
    a, b = cluster.node("a"), cluster.node("b", server={"acceptors": 1})
    await asyncio.gather(a.start(), b.start())

    def rcpt(port: int, address: str) -> int:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
            smtp.ehlo()
            smtp.mail("app@example.com")
            code, _ = smtp.rcpt(address)
            smtp.rset()
            return code

    for _ in range(10):  # every process's filter read (the first look-ups start the reading)
        assert await asyncio.to_thread(rcpt, b.smtp_port, "later@example.org") == 250
    await asyncio.sleep(1.0)
    added = await asyncio.to_thread(run_cli, "suppressions", "add", "later@example.org", config=a.config_path)
    assert added.returncode == 0, added.stderr
    answers = []
    for _ in range(20):
        answers.append(await asyncio.to_thread(rcpt, b.smtp_port, "Later@Example.org"))
        if answers[-1] == 550 and answers[-3:] == [550] * 3:
            break
        await asyncio.sleep(0.05)
    assert answers[-3:] == [550, 550, 550], answers
    assert answers.count(250) <= 1, answers  # the NOTIFY takes a moment: at most the first may pass


async def test_a_node_killed_with_9_loses_nothing_acknowledged(cluster, sink):
    sink.handler.data_delay = 0.02  # deliveries are in flight when the kill comes
    a, b = cluster.node("a"), cluster.node("b")
    await asyncio.gather(a.start(), b.start())
    acked: list[int] = []
    lock = threading.Lock()
    total = 1200
    senders = [
        asyncio.to_thread(send_smtp, node.smtp_port, list(range(i, total, 4)), acked, lock)
        for i, node in enumerate([a, b, a, b])
    ]
    sending = asyncio.gather(*senders)
    await asyncio.sleep(1.5)
    a.kill()
    await sending  # A's sessions end at the kill; B's go on
    assert len(acked) > 100
    got = await wait_for_arrivals(sink, set(acked), timeout=90)  # B takes A's leases once they expire (3 s)
    duplicates = len(got) - len(set(got))
    print(f"\nkill -9 of one node: {len(acked)} acknowledged, all arrived, {duplicates} duplicates")
    # At most what A had delivered without its outcome committed at the kill: the transactions in flight on
    # its connections, and the outcomes its workers had handed to the store (recorded after each delivery,
    # in combined statements) that were not yet committed. Usually 0-13 here; 76 once in a full run on a
    # loaded machine, where the commits lag. Bounded by A's delivery concurrency (100 workers).
    assert duplicates <= 100
    assert await b.terminate() == 0


async def test_the_database_going_away_for_six_seconds_refuses_then_recovers(cluster, sink, pg_cluster):
    a = cluster.node("a")
    await a.start()
    acked: list[int] = []
    refused: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def load() -> None:
        n = itertools.count()
        while not stop.is_set():
            i = next(n)
            try:
                with smtplib.SMTP("127.0.0.1", a.smtp_port, timeout=10) as smtp:
                    smtp.sendmail("load@example.com", [f"r{i}@example.org"], f"Subject: msg-{i}\r\n\r\n{i}\r\n")
                with lock:
                    acked.append(i)
            except smtplib.SMTPResponseException as exc:  # at MAIL or DATA
                refused.append(f"{exc.smtp_code} {exc.smtp_error.decode()}")
                time.sleep(0.05)
            except smtplib.SMTPRecipientsRefused as exc:  # at RCPT (the suppression list cannot be read)
                refused.extend(f"{code} {text.decode()}" for code, text in exc.recipients.values())
                time.sleep(0.05)
            except (OSError, smtplib.SMTPException) as exc:
                refused.append(repr(exc))
                time.sleep(0.05)

    loader = asyncio.create_task(asyncio.to_thread(load))
    await asyncio.sleep(1.0)
    await asyncio.to_thread(pg_cluster.restart, 6.0)  # longer than a read waits for a pool connection (5 s)
    await asyncio.sleep(2.0)
    before = len(acked)
    await asyncio.sleep(1.0)
    stop.set()
    await loader
    # A session that waits out the end of the outage (reads wait up to 5 s for a connection) gets its 250:
    # under load every session may; any refusal is a temporary one.
    assert all(r.startswith("451 4.3.0") for r in refused), refused[:5]
    assert len(acked) > before  # accepting again, without a restart
    await wait_for_arrivals(sink, set(acked), timeout=60)
    assert a.proc is not None and a.proc.poll() is None
    assert await a.terminate() == 0


async def test_max_connections_holds_for_the_cluster(cluster, sink):
    sink.handler.data_delay = 0.03  # connections stay busy: each node would open its full share if it could
    shaping = {"shaping": {"default": {"max_connections": 2}}, "idle_timeout": "200ms"}
    a, b = cluster.node("a", delivery=shaping), cluster.node("b", delivery=shaping)
    await asyncio.gather(a.start(), b.start())
    acked: list[int] = []
    lock = threading.Lock()
    total = 300
    await asyncio.gather(
        *(
            asyncio.to_thread(send_smtp, node.smtp_port, list(range(i, total, 4)), acked, lock)
            for i, node in enumerate([a, b, a, b])
        )
    )
    await wait_for_arrivals(sink, set(range(total)), timeout=90)
    peers = {r.peer for r in sink.handler.received}
    print(f"\nmax_connections 2 across two nodes: at most {sink.handler.max_open} sessions open at once")
    assert sink.handler.max_open <= 2
    assert sink.handler.max_open == 2 and peers  # the limit is used, not undershot
    for node in (a, b):
        assert await node.terminate() == 0


async def test_each_node_opens_its_share_of_a_sites_connections(cluster, sink):
    """Both nodes claim from one queue, so each must be able to deliver what it claimed: a node that held
    every slot of a site (its idle connections kept them for the idle timeout) left the other's claimed
    mail waiting; two nodes moved ~100-200 msgs/s where one moved 620 (bench/throughput.py --nodes 2)."""
    import psycopg

    sink.handler.data_delay = 0.02  # connections stay busy: a node would open all it may
    shaping = {"shaping": {"default": {"max_connections": 4}}}  # idle_timeout: the default 5 s
    a, b = cluster.node("a", delivery=shaping), cluster.node("b", delivery=shaping)
    await asyncio.gather(a.start(), b.start())
    await asyncio.sleep(SHARED_EVERY + 1)  # each node has seen the other (a node that joins is counted so)
    total, acked, lock = 300, [], threading.Lock()
    held: collections.Counter[str] = collections.Counter()  # the most slots each node held at once
    sending = asyncio.gather(
        *(
            asyncio.to_thread(send_smtp, node.smtp_port, list(range(i, total, 4)), acked, lock)
            for i, node in enumerate([a, b, a, b])
        )
    )
    deadline = time.monotonic() + 120
    async with await psycopg.AsyncConnection.connect(cluster.url, autocommit=True) as conn:
        while not sending.done() or len(set(arrived(sink))) < total:
            rows = await (await conn.execute("SELECT owner, count(*) FROM site_slots GROUP BY owner")).fetchall()
            for owner, count in rows:
                held[owner] = max(held[owner], count)
            assert time.monotonic() < deadline, f"{len(set(arrived(sink)))} of {total} arrived"
            await asyncio.sleep(0.02)
    await sending
    assert sorted(acked) == list(range(total))
    assert len(held) == 2 and max(held.values()) <= 2, held  # each node at most half of the four
    for node in (a, b):
        assert await node.terminate() == 0


async def test_with_one_connection_for_two_nodes_an_idle_one_gives_the_slot_up_soon(cluster, sink):
    """max_connections 1 and two nodes: the node holding the slot used to keep it for the idle timeout
    (5 s) while the other node's claimed mail waited; an idle connection now gives it up within a second."""
    shaping = {"shaping": {"default": {"max_connections": 1}}}  # idle_timeout: the default 5 s
    a, b = cluster.node("a", delivery=shaping), cluster.node("b", delivery=shaping)
    await asyncio.gather(a.start(), b.start())
    await asyncio.sleep(SHARED_EVERY + 1)
    total, acked, lock = 60, [], threading.Lock()
    await asyncio.gather(
        *(
            asyncio.to_thread(send_smtp, node.smtp_port, list(range(i, total, 4)), acked, lock)
            for i, node in enumerate([a, b, a, b])
        )
    )
    await wait_for_arrivals(sink, set(range(total)), timeout=120)
    times = sink.handler.arrival_times
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert sink.handler.max_open == 1
    assert max(gaps) < 3.5, f"a wait of {max(gaps):.1f}s between two deliveries"
    for node in (a, b):
        assert await node.terminate() == 0


async def test_two_nodes_accepting_and_delivering_at_once_never_deadlock(cluster, sink):
    """Both nodes update rows every writer updates: the key's rate counter for each POST, the hourly
    event counts for each event. Updated inside each node's group transaction, they stayed locked until
    the group committed, and two groups that took two of them in opposite orders deadlocked (3-11 times
    in 8 s of bench/http_api.py --store postgresql, PostgreSQL stalling both writers a second each time;
    this test saw 2 and 11 with the counter fixed, then 1 in every other run). The counter now commits
    on its own and the event counts are added up at the end of each group in key order. 600 POSTs at
    once through two nodes are each counted once."""
    import psycopg

    http = {"rate_limit": "1000000/h"}
    a, b = cluster.node("a", http=http), cluster.node("b", http=http)
    await asyncio.gather(a.start(), b.start())
    key = cluster.api_key(a)
    acked: list[int] = []
    await asyncio.gather(
        send_http(a.http_port, key, list(range(0, 600, 2)), acked, concurrency=12),
        send_http(b.http_port, key, list(range(1, 600, 2)), acked, concurrency=12),
    )
    assert sorted(acked) == list(range(600))
    await wait_for_arrivals(sink, set(range(600)), timeout=120)
    async with await psycopg.AsyncConnection.connect(cluster.url, autocommit=True) as conn:
        cur = await conn.execute("SELECT count FROM rate_counters WHERE key LIKE 'api:%'")
        assert (await cur.fetchone()) == (600,)
        cur = await conn.execute("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
        assert (await cur.fetchone()) == (0,)
        cur = await conn.execute("SELECT kind, sum(n) FROM event_counts WHERE tag = '' GROUP BY kind ORDER BY kind")
        assert await cur.fetchall() == [("delivered", 600), ("queued", 600)], "every event counted once"
    for node in (a, b):
        assert await node.terminate() == 0


async def test_a_rate_limit_of_n_accepts_exactly_n_sent_to_both_nodes_at_once(cluster, sink):
    a, b = cluster.node("a"), cluster.node("b")
    await asyncio.gather(a.start(), b.start())
    done = run_cli("keys", "create", "--rate-limit", "10", "--json", config=a.config_path)
    assert done.returncode == 0, done.stderr
    headers = {"Authorization": f"Bearer {json.loads(done.stdout)['key']}"}

    async def post(session: aiohttp.ClientSession, node: RelayProcess, n: int) -> int:
        payload = {"from": "api@example.com", "to": [f"r{n}@example.org"], "subject": f"msg-{n}", "text": "x"}
        url = f"http://127.0.0.1:{node.http_port}/v1/messages"
        async with session.post(url, json=payload, headers=headers) as resp:
            return resp.status

    async with aiohttp.ClientSession() as session:
        statuses = await asyncio.gather(*(post(session, (a, b)[n % 2], n) for n in range(24)))
    assert sorted(statuses) == [202] * 10 + [429] * 14
    accepted = {n for n, status in enumerate(statuses) if status == 202}
    assert sorted(await wait_for_arrivals(sink, accepted, timeout=30)) == sorted(accepted)
