"""Real servers on loopback for the tests: a scriptable SMTP sink, a DNS server, the relay itself."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import os
import re
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
import uvloop
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from relay import config as config_mod
from relay import message as message_mod
from relay.app import Relay
from relay.clock import FakeClock
from relay.config import Config
from relay.store import Store
from relay.store.db import Database
from relay.store.repositories import SqlStore
from relay.suppression import SuppressionPolicy

pytest_plugins = ["tests.browser"]  # the browser fixtures: browser, page, dashboard

if sys.version_info < (3, 12):
    # From Python 3.12 asyncio.wait_for runs on asyncio.timeout, which refuses to start outside a task; 3.11's
    # does not care. relay's SMTP server runs a command's first step outside any task (relay.submission.server):
    # a wait_for there works on 3.11 and fails with RuntimeError on the Python of Debian 13 or Ubuntu 24.04.
    # The tests hold 3.11 to the newer rule.
    _wait_for = asyncio.wait_for

    async def _wait_for_inside_a_task(fut: Any, timeout: float | None) -> Any:
        if asyncio.current_task() is None:
            raise RuntimeError("Timeout should be used inside a task")
        return await _wait_for(fut, timeout)

    asyncio.wait_for = _wait_for_inside_a_task


def pytest_asyncio_loop_factories(config: Any, item: Any) -> dict[str, Any]:
    """Run every async test on uvloop, the loop relay serves with by default."""
    return {"uvloop": uvloop.new_event_loop}


@pytest.fixture(autouse=True)
def _fresh_message_ids() -> None:
    """Message ids never go back in time within a process; a test that made ids at a fake future time
    must not leave later tests with ids from that future (retention compares ids with times)."""
    message_mod._last_id = (0, 0)


# ---------------------------------------------------------------------------
# The store

# tests/test_store_contract.py runs against every backend; the other tests against TEST_STORE, SQLite
# unless RELAY_TEST_STORE=postgresql (a private cluster started for the session).
STORE_BACKENDS = ["sqlite", "postgresql"]
TEST_STORE = os.environ.get("RELAY_TEST_STORE", "sqlite")
PG_TEMPLATE = "relay_template"  # a database migrated once; each store's database is a copy of it
STORE_FIXTURES = {"store", "store_factory"}  # the fixtures that open the test store
RELAY_FIXTURES = {"relay_factory"}  # relays in this process: on the test store too, with --with-relays


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--with-relays",
        action="store_true",
        help="with RELAY_TEST_STORE=postgresql, also run the tests of in-process relays (relay_factory)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under RELAY_TEST_STORE=postgresql, keep only the tests that run on the test store: the others
    (and those parametrized over STORE_BACKENDS, already run on both) would repeat the SQLite run."""
    if TEST_STORE == "sqlite":
        return
    fixtures = STORE_FIXTURES | (RELAY_FIXTURES if config.getoption("--with-relays") else set())
    kept = [item for item in items if runs_on_test_store(item, fixtures)]
    if len(kept) < len(items):
        config.hook.pytest_deselected(items=[item for item in items if not runs_on_test_store(item, fixtures)])
        items[:] = kept


def runs_on_test_store(item: pytest.Item, fixtures: set[str]) -> bool:
    """Whether ``item`` uses one of ``fixtures`` (directly or through another fixture) without choosing
    its backend itself."""
    if fixtures.isdisjoint(getattr(item, "fixturenames", ())):
        return False
    callspec = getattr(item, "callspec", None)
    return callspec is None or callspec.params.get("backend") not in STORE_BACKENDS


@pytest.fixture(scope="session")
def pg_cluster() -> Any:
    """A private PostgreSQL cluster for the session (fsync off: durability is tested in test_pg_database),
    with a migrated template database; skips the test if PostgreSQL is not installed."""
    from relay.store.postgres.schema import migrate
    from tests.pg import PostgresCluster, server_bin

    if server_bin() is None:
        pytest.skip("PostgreSQL is not installed (make test installs it)")
    cluster = PostgresCluster(fsync=False)
    cluster.start()
    try:
        import psycopg

        with psycopg.connect(cluster.create_database(PG_TEMPLATE)) as conn:
            migrate(conn)
        yield cluster
    finally:
        cluster.stop()


_pg_databases = itertools.count()


def open_store(
    backend: str, path: Path, clock: FakeClock, policy: SuppressionPolicy | None = None, pg: Any = None
) -> SqlStore:
    """A fresh store of ``backend`` with a fake clock: a SQLite file at ``path``, or a new database of the
    PostgreSQL cluster ``pg``."""
    if backend == "sqlite":
        return Store(path, clock, policy)
    if backend == "postgresql":
        from relay.store.postgres import PgStore

        url = pg.create_database(f"store_{os.getpid()}_{next(_pg_databases)}", template=PG_TEMPLATE)
        return PgStore(url, clock, policy)
    raise ValueError(f"no store backend {backend!r}")


async def store_rows(store: SqlStore, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """The rows of ``sql`` (``?`` placeholders) read from ``store`` as tuples, on either backend."""
    found = await store.db.read(lambda conn: conn.execute(sql, params).fetchall())
    return [tuple(row) for row in found]


@pytest.fixture
def store_clock() -> FakeClock:
    """The clock of the ``store`` fixture; a module overrides it for another start time."""
    return FakeClock()


@pytest.fixture
def suppression_policy() -> SuppressionPolicy | None:
    """The ``store`` fixture's suppression policy (None: the defaults); a module may override it."""
    return None


@pytest.fixture
async def store_factory(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """``make(clock=None, policy=None, backend=TEST_STORE, restart=None)``: another store, closed after the
    test (and its PostgreSQL database dropped); with ``restart=`` an earlier (closed) store, a store over the
    same SQLite file or PostgreSQL database, as a restarted relay opens it."""
    made: list[SqlStore] = []
    databases: list[tuple[Any, str]] = []  # (cluster, name) of the PostgreSQL databases created

    def make(
        clock: FakeClock | None = None,
        policy: SuppressionPolicy | None = None,
        backend: str = TEST_STORE,
        restart: SqlStore | None = None,
    ) -> SqlStore:
        if restart is not None:
            store = reopen_store(restart, clock or FakeClock(), policy)
        else:
            pg = request.getfixturevalue("pg_cluster") if backend == "postgresql" else None
            store = open_store(backend, tmp_path / f"store{len(made)}.sqlite3", clock or FakeClock(), policy, pg)
            if pg is not None:
                databases.append((pg, store.db.url.rsplit("/", 1)[1]))
        made.append(store)
        return store

    yield make
    for store in made:
        await store.close()
    for pg, name in databases:
        pg.drop_database(name)


def reopen_store(store: SqlStore, clock: FakeClock, policy: SuppressionPolicy | None = None) -> SqlStore:
    """A new store over the database of ``store`` (its SQLite file or its PostgreSQL database)."""
    if isinstance(store.db, Database):
        return Store(store.db.path, clock, policy)
    from relay.store.postgres import PgStore

    return PgStore(store.db.url, clock, policy)


@pytest.fixture
async def store(store_factory: Any, store_clock: FakeClock, suppression_policy: SuppressionPolicy | None) -> SqlStore:
    """A store of its own on a fake clock (``store.clock``), closed after the test."""
    made: SqlStore = store_factory(store_clock, suppression_policy)
    return made


# ---------------------------------------------------------------------------
# SMTP sink


@dataclasses.dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    peer: str
    mail_options: list[str] = dataclasses.field(default_factory=list)  # MAIL FROM's parameters, as sent


class SinkHandler:
    """Replies are scripted by recipient local part:
    ``tempfail*`` → 451 at RCPT, ``permfail*`` → 550 at RCPT; everything else is accepted.
    ``data_reply`` overrides the reply to DATA; ``data_delay`` holds it back.
    """

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.data_reply = "250 2.0.0 Ok: sunk"
        self.rcpt_reply: str | None = None  # when set, every RCPT gets this reply
        self.connections = 0
        self.logins: list[str] = []
        self.arrival_times: list[float] = []
        self.open_now = 0
        self.max_open = 0
        self.transports: set[asyncio.BaseTransport] = set()  # of the connections open now
        self.none_open = asyncio.Event()
        self.data_delay = 0.0
        self.data_started = asyncio.Event()
        self.arrived = asyncio.Event()

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        local = address.split("@")[0].lower()
        if self.rcpt_reply is not None:
            if self.rcpt_reply.startswith("2"):
                envelope.rcpt_tos.append(address)
            return self.rcpt_reply
        if local.startswith("tempfail"):
            return "451 4.3.0 try again later"
        if local.startswith("permfail"):
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.data_started.set()
        if self.data_delay:
            await asyncio.sleep(self.data_delay)
        if self.data_reply.startswith("2"):
            peer = session.peer[0] if isinstance(session.peer, tuple) else str(session.peer)
            self.received.append(
                Received(
                    envelope.mail_from or "",
                    list(envelope.rcpt_tos),
                    envelope.original_content or b"",
                    peer,
                    list(envelope.mail_options),
                )
            )
            self.arrival_times.append(time.monotonic())
            self.arrived.set()
        return self.data_reply

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while sum(len(r.rcpt_tos) for r in self.received) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"sink got {len(self.received)} messages, expected {count} recipients")
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), max(0.01, deadline - time.monotonic()))
            except TimeoutError:
                pass
        return self.received


@dataclasses.dataclass
class Sink:
    handler: SinkHandler
    server: asyncio.Server
    port: int

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def stop(self) -> None:
        """Stop listening and close the sessions still open. The test's event loop is closed next, and a
        session whose client went away a moment before (a relay killed with -9) may not have noticed yet:
        uvloop then refused to close the loop (EBUSY), and the open transport's warnings failed a later test."""
        self.server.close()
        for transport in list(self.handler.transports):
            transport.close()
        for _ in range(3):  # the closes complete on the loop's next turns
            await asyncio.sleep(0)


class CountingSMTP(SMTP):
    """aiosmtpd's SMTP that counts connections: in total, open now, and at most at once."""

    handler: SinkHandler

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._original_transport is None:  # not the STARTTLS upgrade of a known connection
            h = self.handler
            h.connections += 1
            h.open_now += 1
            h.max_open = max(h.max_open, h.open_now)
            h.transports.add(transport)
            h.none_open.clear()
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        self.handler.open_now -= 1
        self.handler.transports.discard(self._original_transport or self.transport)
        if self.handler.open_now == 0:
            self.handler.none_open.set()
        super().connection_lost(error)


async def start_sink(
    port: int = 0,
    host: str = "127.0.0.1",
    tls_context: Any = None,
    logins: dict[str, str] | None = None,
    smtputf8: bool = False,
) -> Sink:
    """A sink on loopback; with ``logins`` (user → password) it requires AUTH (PLAIN/LOGIN, no TLS needed);
    with ``smtputf8`` it offers SMTPUTF8 (RFC 6531)."""
    handler = SinkHandler()
    loop = asyncio.get_running_loop()

    def authenticate(server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any) -> AuthResult:
        ok = isinstance(data, LoginPassword) and logins.get(data.login.decode()) == data.password.decode()
        if ok:
            handler.logins.append(data.login.decode())
        return AuthResult(success=ok)

    def factory() -> SMTP:
        extra: dict[str, Any] = {}
        if logins is not None:
            extra = dict(authenticator=authenticate, auth_required=True, auth_require_tls=False)
        with warnings.catch_warnings():  # AUTH without TLS: fine for a loopback test server
            warnings.simplefilter("ignore", UserWarning)
            smtp = CountingSMTP(
                handler,
                hostname="sink.test",
                tls_context=tls_context,
                require_starttls=False,
                enable_SMTPUTF8=smtputf8,
                **extra,
            )

        smtp.handler = handler
        return smtp

    # Controller(port=0) is broken in aiosmtpd; create the server ourselves.
    server = await loop.create_server(factory, host, port)
    return Sink(handler, server, server.sockets[0].getsockname()[1])


@pytest.fixture
async def sink() -> AsyncIterator[Sink]:
    s = await start_sink()
    yield s
    await s.stop()


# ---------------------------------------------------------------------------
# DNS server: answers from a dict, NXDOMAIN for names it does not know.


class DnsProtocol(asyncio.DatagramProtocol):
    def __init__(self, zone: dict[str, dict[str, list[str]]]) -> None:
        self.zone = zone
        self.transport: asyncio.DatagramTransport | None = None
        self.queries: list[tuple[str, str]] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        query = dns.message.from_wire(data)
        response = dns.message.make_response(query)
        question = query.question[0]
        name = question.name.to_text(omit_final_dot=True).lower()
        rdtype = dns.rdatatype.to_text(question.rdtype)
        self.queries.append((name, rdtype))
        records = self.zone.get(name)
        if records is None:
            response.set_rcode(dns.rcode.NXDOMAIN)
        elif records.get("SERVFAIL"):
            response.set_rcode(dns.rcode.SERVFAIL)
        elif rdtype in records:
            response.answer.append(dns.rrset.from_text_list(question.name, 60, "IN", rdtype, records[rdtype]))
        assert self.transport is not None
        self.transport.sendto(response.to_wire(), addr)


@dataclasses.dataclass
class DnsServer:
    protocol: DnsProtocol
    port: int

    @property
    def zone(self) -> dict[str, dict[str, list[str]]]:
        return self.protocol.zone


@pytest.fixture
async def dns_server() -> AsyncIterator[DnsServer]:
    loop = asyncio.get_running_loop()
    protocol = DnsProtocol({})
    transport, _ = await loop.create_datagram_endpoint(lambda: protocol, local_addr=("127.0.0.1", 0))
    yield DnsServer(protocol, transport.get_extra_info("sockname")[1])
    transport.close()


# ---------------------------------------------------------------------------
# Relay configuration and instances


def config_dict(data_dir: Path, **sections: dict[str, Any]) -> dict[str, Any]:
    base: dict[str, dict[str, Any]] = {
        "server": {"hostname": "relay.test", "data_dir": str(data_dir), "shutdown_grace": "5s"},
        "smtp": {"listen": ["127.0.0.1:0"]},
        "http": {"listen": "127.0.0.1:0"},
        "delivery": {
            "poll_interval": "100ms",
            "retry_schedule": ["1m"],
            "connect_timeout": "5s",
            "command_timeout": "10s",
        },
    }
    for name, values in sections.items():
        base.setdefault(name, {}).update(values)
    return base


def make_config(data_dir: Path, **sections: dict[str, Any]) -> Config:
    return config_mod.from_dict(config_dict(data_dir, **sections), environ={})


@pytest.fixture
async def relay_factory(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """``start(**sections)``: a relay in this process, stopped after the test. Every relay of a test shares
    one data_dir and one store: the SQLite file in it, or under RELAY_TEST_STORE=postgresql one database
    (dropped after the test), unless ``store=`` names another."""
    started: list[Relay] = []
    database: list[tuple[Any, str]] = []  # (cluster, name), once made

    def test_store_url() -> str:
        if not database:
            pg = request.getfixturevalue("pg_cluster")
            database.append((pg, f"relay_{os.getpid()}_{next(_pg_databases)}"))
            pg.create_database(database[0][1], template=PG_TEMPLATE)
        pg, name = database[0]
        return str(pg.url(name))

    async def start(**sections: dict[str, Any]) -> Relay:
        if TEST_STORE == "postgresql" and "store" not in sections:
            sections["store"] = {"url": test_store_url()}
        relay = Relay(make_config(tmp_path / "data", **sections))
        await relay.start()
        started.append(relay)
        return relay

    yield start
    for relay in started:
        await relay.stop()
    for pg, name in database:
        pg.drop_database(name)


def write_toml(path: Path, data: dict[str, Any]) -> Path:
    lines = []
    for section, values in data.items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            lines.append(f"{key} = {toml_value(value)}")
    path.write_text("\n".join(lines) + "\n")
    return path


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_value(k)} = {toml_value(v)}" for k, v in value.items()) + "}"

    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


# ---------------------------------------------------------------------------
# The relay as a real process, for crash and signal tests


class RelayProcess:
    def __init__(self, config_path: Path, log_path: Path) -> None:
        self.config_path = config_path
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.smtp_port = 0
        self.http_port = 0

    async def start(self, timeout: float = 15.0, cwd: Path | None = None) -> None:
        """``cwd``: start it there through the ``relay`` script, as systemd's ExecStart does (``python -m
        relay`` would import whatever ``relay`` package the directory holds)."""
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = self.log_path.open("ab")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("RELAY_CONFIG", None)
        command = [str(Path(sys.executable).parent / "relay")] if cwd is not None else [sys.executable, "-m", "relay"]
        self.proc = subprocess.Popen(
            [*command, "serve", "--config", str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log_path.read_bytes()[offset:].decode(errors="replace")
            smtp = re.search(r"listening for SMTP on 127\.0\.0\.1:(\d+)", text)
            http = re.search(r"listening for HTTP on 127\.0\.0\.1:(\d+)", text)
            if smtp and http and "relay started" in text:
                self.smtp_port, self.http_port = int(smtp.group(1)), int(http.group(1))
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"relay exited with {self.proc.returncode}:\n{text}")
            await asyncio.sleep(0.05)
        raise AssertionError(f"relay did not start:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    async def terminate(self, timeout: float = 15.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                self.proc.kill()
                raise AssertionError("relay did not stop on SIGTERM")
            await asyncio.sleep(0.05)
        return self.proc.returncode

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def relay_process(tmp_path: Path) -> Any:
    procs: list[RelayProcess] = []

    def make(**sections: dict[str, Any]) -> RelayProcess:
        path = write_toml(tmp_path / "relay.toml", config_dict(tmp_path / "data", **sections))
        proc = RelayProcess(path, tmp_path / "relay.log")
        procs.append(proc)
        return proc

    yield make
    for p in procs:
        p.cleanup()


async def smtp_reply(reader: asyncio.StreamReader, timeout: float = 10.0) -> str:
    """One SMTP reply, all its lines (``250-...`` continued up to ``250 ...``)."""
    text = b""
    while True:
        line = await asyncio.wait_for(reader.readline(), timeout)
        text += line
        if line[3:4] != b"-":
            return text.decode()


def run_cli(*args: str, config: Path | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "relay", *args]
    if config is not None:
        cmd += ["--config", str(config)]
    env = {k: v for k, v in os.environ.items() if k != "RELAY_CONFIG"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)


async def wait_for_states(store: Any, message_id: str, expected: list[str], timeout: float = 10.0) -> list[Any]:
    """Poll the store until the message's recipients reach ``expected`` states (in recipient order)."""
    deadline = time.monotonic() + timeout
    while True:
        statuses = await store.queue.message_status(message_id)
        if [s.state for s in statuses] == expected:
            return statuses
        if time.monotonic() > deadline:
            raise AssertionError(f"states {[(s.address, s.state) for s in statuses]}, expected {expected}")
        await asyncio.sleep(0.02)


def write_store_key(path: Path) -> Path:
    """A store key file ([store] secret_key_file) for nodes that share a database: every node needs the same."""
    import secrets

    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_hex(32) + "\n")
    return path
