"""DKIM private keys and the VERP secret sealed in the store: every node signs with them, none holds them in clear."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import smtplib
import sqlite3
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import dkim
import dns.asyncresolver
import psycopg
import pytest

from relay import config as config_mod
from relay.app import make_verp
from relay.bounces.verp import ReturnPath, Verp
from relay.clock import FakeClock
from relay.dkim import Signer, public_key_record
from relay.domains import Checker, Domains, Policy, SendingDomains, generate_key
from relay.secrets import Keyring, Sealer, SecretsError, dkim_context, load_key_file
from relay.startup import EX_CONFIG, StartupError
from relay.store import Store
from relay.store.repositories import SqlStore
from relay.store.schema import MIGRATIONS, _statements
from tests.conftest import PG_TEMPLATE, STORE_BACKENDS, config_dict, make_config, run_cli, write_toml

MESSAGE = b"From: App <app@example.com>\r\nTo: bob@one.example\r\nSubject: hi\r\n\r\nhello\r\n"
BOUNCES = ["bounces.example.com"]
_names = itertools.count()


class Database:
    """One database of a backend that several store objects (nodes) open, plus raw SQL to look inside it."""

    def __init__(self, backend: str, tmp_path: Path, pg: Any) -> None:
        self.backend = backend
        self.opened: list[SqlStore] = []
        if backend == "sqlite":
            self.path = tmp_path / "shared.sqlite3"
            self.url = f"sqlite:///{self.path}"
        else:
            self.url = pg.create_database(f"dkimdb_{os.getpid()}_{next(_names)}", template=PG_TEMPLATE)

    def open(self) -> SqlStore:
        """A new node's store (not closed by the fixture when opened in another event loop: ``close``)."""
        if self.backend == "sqlite":
            store: SqlStore = Store(self.path, FakeClock())
        else:
            from relay.store.postgres import PgStore

            store = PgStore(self.url, FakeClock())
        self.opened.append(store)
        return store

    def sql(self, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if self.backend == "sqlite":
            with contextlib.closing(sqlite3.connect(self.path)) as conn, conn:  # closed, not only committed
                return conn.execute(statement, params).fetchall()
        with psycopg.connect(self.url, autocommit=True) as pg_conn:
            cur = pg_conn.execute(statement.replace("?", "%s"), params)  # type: ignore[arg-type]
            return cur.fetchall() if cur.description else []


@pytest.fixture(params=STORE_BACKENDS)
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    pg = request.getfixturevalue("pg_cluster") if request.param == "postgresql" else None
    db = Database(request.param, tmp_path, pg)
    yield db
    for store in db.opened:
        if not getattr(store, "closed_elsewhere", False):
            await store.close()


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    """The store key every node shares (copied once, like a TLS key)."""
    path = tmp_path / "store.key"
    load_key_file(path, create=True)
    return path


def node(store: SqlStore, key_file: Path) -> tuple[Domains, Signer]:
    """What a relay node builds to manage and sign for sending domains (relay.app.make_domains)."""
    signer = Signer({})
    checker = Checker(dns.asyncresolver.Resolver(configure=False), Policy())
    keyring = Keyring(load_key_file(key_file, create=False), store.secrets)
    return Domains(store.domains, store.clock, keyring, checker, SendingDomains(signer), "s1", 1024), signer


def verifies(signed: bytes, record: str) -> bool:
    """DKIM verification against ``record`` as the published TXT value."""
    return bool(dkim.verify(signed, dnsfunc=lambda name, timeout=5: record.encode()))


# -- sealing --------------------------------------------------------------------------------------


def test_a_sealed_value_opens_only_with_its_key_and_for_its_row(tmp_path):
    sealer = load_key_file(tmp_path / "store.key", create=True)
    sealed = sealer.seal(b"the private key", dkim_context("dom_1", "s1"))
    assert sealed[:1] == b"\x01" and b"the private key" not in sealed
    assert sealer.open(sealed, dkim_context("dom_1", "s1")) == b"the private key"
    with pytest.raises(SecretsError, match="does not open"):
        sealer.open(sealed, dkim_context("dom_2", "s1"))  # moved to another row
    with pytest.raises(SecretsError, match="is not the key"):
        Sealer(os.urandom(32), tmp_path / "other.key").open(sealed, dkim_context("dom_1", "s1"))
    with pytest.raises(SecretsError, match="not a sealed value"):
        sealer.open(b"\x02" + sealed[1:], dkim_context("dom_1", "s1"))


def test_the_key_file_is_made_once_0600_and_checked(tmp_path):
    path = tmp_path / "store.key"
    first = load_key_file(path, create=True)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    again = load_key_file(path, create=True)  # not made again: the same key opens what the first sealed
    assert again.open(first.seal(b"x", "c"), "c") == b"x"
    assert [p.name for p in tmp_path.iterdir()] == ["store.key"]  # no temporary file left behind
    path.chmod(0o640)
    with pytest.raises(SecretsError, match="readable by group or others: chmod 600 it"):
        load_key_file(path, create=True)
    path.write_text("not a key\n")
    path.chmod(0o600)
    with pytest.raises(SecretsError, match="is not a store key file"):
        load_key_file(path, create=True)
    with pytest.raises(SecretsError, match=r"does not exist: copy it from the node that made it"):
        load_key_file(tmp_path / "missing.key", create=False)
    assert repr(first) == f"Sealer({str(path)!r})"  # the path, never the key


def test_the_key_file_is_a_store_setting_and_an_environment_variable(tmp_path):
    path = write_toml(tmp_path / "relay.toml", config_dict(tmp_path / "data", store={"secret_key_file": "/a/k"}))
    assert config_mod.load(path, environ={}).store.secret_key_file == "/a/k"
    env = {"RELAY_STORE_SECRET_KEY_FILE": "/b/k"}
    assert config_mod.load(path, environ=env).store.secret_key_file == "/b/k"


def test_check_config_shows_the_key_file_path_only(tmp_path, key_file):
    path = write_toml(tmp_path / "relay.toml", config_dict(tmp_path / "data", store={"secret_key_file": str(key_file)}))
    shown = run_cli("check-config", config=path)
    assert shown.returncode == 0, shown.stderr
    assert str(key_file) in shown.stdout and key_file.read_text().strip() not in shown.stdout + shown.stderr


# -- DKIM keys in the store -------------------------------------------------------------------------


async def test_a_domain_added_on_one_node_signs_on_another(database, key_file):
    first, second = database.open(), database.open()
    a, _ = node(first, key_file)
    b, signer = node(second, key_file)
    created = await a.add("example.com")
    await b.refresh()
    signed = signer.sign(MESSAGE)
    assert b"s=s1;" in signed and verifies(signed, created.keys[0].public_key)

    # A rotation on the first node: the second signs with the new key once it is the active one.
    rotated = await a.rotate("example.com")
    pending = rotated.pending_key
    assert pending is not None and pending.selector == "s1b"
    await b.refresh()
    assert b"s=s1;" in signer.sign(MESSAGE)  # published, not yet verified: the old key signs
    await first.domains.record_domain_checks(rotated, {}, promote="s1b")
    await b.refresh()
    signed = signer.sign(MESSAGE)
    assert b"s=s1b;" in signed and verifies(signed, pending.public_key)


async def test_the_database_holds_no_private_key_in_clear(database, key_file):
    store = database.open()
    domains, _ = node(store, key_file)
    created = await domains.add("example.com")
    (sealed,) = database.sql("SELECT private_key FROM dkim_keys")[0]
    pem = load_key_file(key_file, create=False).open(bytes(sealed), dkim_context(created.id, "s1"))
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    lines = pem.splitlines()[1:-1]  # the base64 body
    columns = [
        bytes(v) if isinstance(v, bytes | memoryview) else str(v).encode()
        for row in database.sql("SELECT domain_id, selector, key_path, state, public_key, private_key FROM dkim_keys")
        for v in row
    ]
    columns += [bytes(v) for (v,) in database.sql("SELECT value FROM secrets")]
    for raw in columns:
        assert b"PRIVATE KEY" not in raw and not any(line in raw for line in lines)
    if database.backend == "sqlite":
        await store.close()
        store.closed_elsewhere = True  # type: ignore[attr-defined]
        on_disk = b"".join(p.read_bytes() for p in database.path.parent.glob("shared.sqlite3*"))
        assert b"PRIVATE KEY" not in on_disk and not any(line in on_disk for line in lines)


async def test_a_sealed_key_moved_to_another_row_does_not_sign(database, key_file, caplog):
    store = database.open()
    domains, signer = node(store, key_file)
    await domains.add("example.com")
    await domains.add("example.org")
    database.sql(
        "UPDATE dkim_keys SET private_key = (SELECT private_key FROM dkim_keys d JOIN domains n ON n.id = d.domain_id"
        " WHERE n.name = 'example.com') WHERE domain_id = (SELECT id FROM domains WHERE name = 'example.org')"
    )
    fresh, signer = node(database.open(), key_file)
    with caplog.at_level(logging.ERROR, logger="relay.domains"):
        await fresh.refresh()
    assert b"DKIM-Signature" in signer.sign(MESSAGE)
    assert signer.sign(MESSAGE.replace(b"example.com", b"example.org")).startswith(b"From:")  # unsigned
    assert "cannot sign for example.org" in caplog.text and "BEGIN" not in caplog.text


# -- keys made before: files in data_dir --------------------------------------------------------------


def old_file_key(data_dir: Path, domain: str, selector: str) -> tuple[Path, bytes]:
    """A key as relay kept it before keys moved into the store: a 0600 PEM file in data_dir/dkim."""
    (data_dir / "dkim").mkdir(parents=True, mode=0o700)
    path = data_dir / "dkim" / f"{domain}.{selector}.pem"
    pem = generate_key(1024)
    path.write_bytes(pem)
    path.chmod(0o600)
    return path, pem


async def test_a_file_key_moves_into_the_store_and_signs_with_its_selector(database, key_file, tmp_path, caplog):
    path, pem = old_file_key(tmp_path / "data", "example.com", "rly202611")
    store = database.open()  # migrated: the old row has no private_key (what schema 13 leaves of version 12)
    database.sql("INSERT INTO domains (id, name, created_at) VALUES ('dom_old', 'example.com', 1.0)")
    database.sql(
        "INSERT INTO dkim_keys (domain_id, selector, key_path, state, created_at)"
        " VALUES ('dom_old', 'rly202611', ?, 'active', 1.0)",
        (str(path),),
    )
    domains, signer = node(store, key_file)
    with caplog.at_level(logging.INFO, logger="relay.domains"):
        await domains.refresh()
        await domains.refresh()
    moved = [r.getMessage() for r in caplog.records if "can be deleted" in r.getMessage()]
    assert moved == [
        f"the DKIM key rly202611 of example.com is now in the store: its file {path} is no longer read and can be"
        " deleted"
    ]
    signed = signer.sign(MESSAGE)
    assert b"s=rly202611;" in signed and verifies(signed, public_key_record(pem))
    assert path.read_bytes() == pem  # kept until the operator deletes it

    path.unlink()  # then another node, which never had the file, signs with it too
    other, other_signer = node(database.open(), key_file)
    await other.refresh()
    assert verifies(other_signer.sign(MESSAGE), public_key_record(pem))
    (key,) = (await store.domains.domain("example.com")).keys
    assert key.public_key == public_key_record(pem) and key.sealed is not None


async def test_a_file_key_this_node_does_not_have_is_said_once_and_not_signed_with(
    database, key_file, tmp_path, caplog
):
    store = database.open()
    await store.domains.create_domain("dom_old", "example.com", _file_key(tmp_path / "elsewhere.pem"))
    domains, signer = node(store, key_file)
    with caplog.at_level(logging.INFO, logger="relay.domains"):
        await domains.refresh()
        await domains.refresh()
    said = [r.getMessage() for r in caplog.records]
    assert said == [
        f"the DKIM key s1 of example.com cannot be moved into the store from {tmp_path / 'elsewhere.pem'}:"
        " No such file or directory"
    ]
    assert signer.sign(MESSAGE) == MESSAGE


def test_schema_12_keeps_its_file_keys_through_the_migration(tmp_path):
    path = tmp_path / "relay.sqlite3"
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        for script in MIGRATIONS[:12]:
            for statement in _statements(script):
                conn.execute(statement)
        conn.execute("PRAGMA user_version = 12")
        conn.execute("INSERT INTO domains (id, name, created_at) VALUES ('dom_old', 'example.com', 1.0)")
        conn.execute(
            "INSERT INTO dkim_keys (domain_id, selector, key_path, state, created_at)"
            " VALUES ('dom_old', 's1', '/data/dkim/example.com.s1.pem', 'active', 1.0)"
        )
    store = Store(path, FakeClock())
    try:
        (key,) = asyncio.run(_domain_keys(store))
    finally:
        asyncio.run(store.close())
    assert (key.selector, key.path, key.sealed, key.public_key) == (
        "s1",
        Path("/data/dkim/example.com.s1.pem"),
        None,
        "",
    )


async def _domain_keys(store: SqlStore) -> Any:
    domain = await store.domains.domain("example.com")
    return domain.keys


async def test_a_relay_signs_with_the_key_an_older_install_kept_in_a_file(relay_factory, tmp_path, sink):
    """The whole path: an install whose key is a file starts, moves it into the store, and what it accepts
    reaches the receiver signed with the same selector."""
    data = tmp_path / "data"
    path, pem = old_file_key(data, "example.com", "s1")
    store = Store(data / "relay.sqlite3", FakeClock())
    await store.domains.create_domain("dom_old", "example.com", _file_key(path))
    await store.close()
    relay = await relay_factory(delivery={"smarthost": sink.address})
    assert oct((data / "store.key").stat().st_mode & 0o777) == "0o600"
    await asyncio.to_thread(smtp_send, relay.smtp_addresses[0][1])
    (received,) = await sink.handler.wait_for(1)
    assert b"s=s1;" in received.data[:800] and verifies(received.data, public_key_record(pem))
    (key,) = (await relay.store.domains.domain("example.com")).keys
    assert key.sealed is not None and path.exists()


def smtp_send(port: int) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
        smtp.sendmail("app@example.com", ["bob@one.example"], MESSAGE)


def _file_key(path: Path) -> Any:
    from relay.domains import DkimKey

    return DkimKey("s1", "active", 1.0, path=path)


# -- the VERP secret ------------------------------------------------------------------------------------


def verp_config(database: Database, data_dir: Path, key_file: Path) -> config_mod.Config:
    return make_config(
        data_dir, inbound={"bounce_domains": BOUNCES}, store={"url": database.url, "secret_key_file": str(key_file)}
    )


def _start_node(database: Database, data_dir: Path, key_file: Path, barrier: threading.Barrier) -> Verp | None:
    async def run() -> Verp | None:
        store = database.open()
        store.closed_elsewhere = True  # type: ignore[attr-defined]
        try:
            await store.domains.list_all()  # connected and migrated before the race
            barrier.wait(timeout=30)
            return await make_verp(verp_config(database, data_dir, key_file), store)
        finally:
            await store.close()

    return asyncio.run(run())


def test_two_nodes_starting_at_once_share_one_verp_secret(database, key_file, tmp_path):
    barrier = threading.Barrier(2)
    results: dict[int, Verp | None] = {}
    threads = [
        threading.Thread(
            target=lambda i=i: results.__setitem__(i, _start_node(database, tmp_path / f"node{i}", key_file, barrier))
        )
        for i in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    a, b = results[0], results[1]
    assert a is not None and b is not None
    assert a.return_path("app@example.com", "01jmessage0001", 1) == b.return_path(
        "app@example.com", "01jmessage0001", 1
    )
    assert [name for (name,) in database.sql("SELECT name FROM secrets ORDER BY name")] == ["key_check", "verp"]
    assert not (tmp_path / "node0" / "verp.key").exists()  # in the store only


async def test_the_verp_secret_of_an_older_install_is_kept(database, key_file, tmp_path):
    old = os.urandom(32)
    (tmp_path / "node0").mkdir()
    (tmp_path / "node0" / "verp.key").write_text(old.hex() + "\n")
    first = await make_verp(verp_config(database, tmp_path / "node0", key_file), database.open())
    second = await make_verp(verp_config(database, tmp_path / "node1", key_file), database.open())
    sent = Verp(old, BOUNCES).return_path("app@example.com", "01jmessage0001", 7)  # a return path already out there
    assert first is not None and second is not None
    assert first.verify(sent) == second.verify(sent) == ReturnPath("01jmessage0001", 7)


# -- refusing to start ----------------------------------------------------------------------------------


async def test_a_wrong_key_file_is_a_startup_error(database, key_file, tmp_path):
    await make_verp(verp_config(database, tmp_path / "node0", key_file), database.open())
    other = tmp_path / "other.key"
    load_key_file(other, create=True)
    with pytest.raises(StartupError) as failed:
        await make_verp(verp_config(database, tmp_path / "node1", other), database.open())
    assert failed.value.status == EX_CONFIG
    assert str(failed.value) == (
        f"the store key file {other} is not the key the store's secrets were sealed with (secrets:key_check does"
        " not open): every node sharing the database needs a copy of the same file"
    )


def serve(config: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "RELAY_CONFIG"}
    done = subprocess.run(
        [sys.executable, "-m", "relay", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done


def _first_start(data: Path) -> None:
    """What the first start leaves: the key file made in data_dir and the key check in the store."""
    config = make_config(data)
    store = Store(config.db_path, FakeClock())

    async def run() -> None:
        try:
            await make_verp(config, store)
        finally:
            await store.close()

    asyncio.run(run())


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (lambda path: path.write_text(os.urandom(32).hex() + "\n"), "is not the key the store's secrets were sealed"),
        (lambda path: path.chmod(0o644), "is readable by group or others: chmod 600 it"),
    ],
)
def test_relay_serve_refuses_a_key_file_it_cannot_use_in_one_line(tmp_path, change: Callable[[Path], Any], says):
    data = tmp_path / "data"
    _first_start(data)
    change(data / "store.key")
    done = serve(write_toml(tmp_path / "relay.toml", config_dict(data)))
    assert done.returncode == EX_CONFIG
    (line,) = [ln for ln in done.stderr.splitlines() if ln.startswith("relay: ")]
    assert line.startswith(f"relay: the store key file {data / 'store.key'} ") and says in line


def test_relay_domains_add_with_a_wrong_key_file_says_so_in_one_line(tmp_path):
    data = tmp_path / "data"
    _first_start(data)
    (data / "store.key").write_text(os.urandom(32).hex() + "\n")
    done = run_cli("domains", "add", "example.com", config=write_toml(tmp_path / "relay.toml", config_dict(data)))
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip() == (
        f"relay: the store key file {data / 'store.key'} is not the key the store's secrets were sealed with"
        " (secrets:key_check does not open): every node sharing the database needs a copy of the same file"
    )
