"""relay store rekey: the store's sealed values under a new key file, or, the old file lost, forgotten and
replaced (new DKIM keys to publish); on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from relay.clock import SystemClock
from relay.nodes import NodeInfo
from relay.secrets import Keyring, SecretsError, dkim_context, load_key_file, secret_context
from relay.store import Store
from relay.store.repositories import SqlStore
from relay.store.secrets import SealedValuesChanged
from tests.conftest import STORE_BACKENDS, config_dict, run_cli, write_toml
from tests.test_dkim_storage import Database, node


@pytest.fixture(params=STORE_BACKENDS)
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    pg = request.getfixturevalue("pg_cluster") if request.param == "postgresql" else None
    db = Database(request.param, tmp_path, pg)
    yield db
    for store in db.opened:
        await store.close()


def relay_config(tmp_path: Path, db: Database, key: Path) -> Path:
    store = {"url": db.url, "secret_key_file": str(key)}
    return write_toml(tmp_path / "relay.toml", config_dict(tmp_path / "data", store=store))


async def register_now(db: Database, info: NodeInfo) -> None:
    """A node up now on the real clock (the CLI reads heartbeats on it)."""
    if db.backend == "sqlite":
        store: SqlStore = Store(db.path, SystemClock())
    else:
        from relay.store.postgres import PgStore

        store = PgStore(db.url, SystemClock())
    try:
        await store.nodes.register(info)
    finally:
        await store.close()


async def seeded(db: Database, key: Path) -> tuple[SqlStore, bytes, bytes]:
    """A store with a sending domain (its key sealed) and a shared secret, under ``key``: (store, PEM, secret)."""
    store = db.open()
    domains, _ = node(store, key)
    domain = await domains.add("example.com")
    secret = await domains.keyring.shared("verp", lambda: os.urandom(32))
    assert domain.active_key is not None and domain.active_key.sealed is not None
    pem = domains.keyring.sealer.open(domain.active_key.sealed, dkim_context(domain.id, domain.active_key.selector))
    return store, pem, secret


async def test_rekey_seals_every_value_again_under_the_new_key(database: Database, tmp_path: Path) -> None:
    old, new = tmp_path / "old.key", tmp_path / "new.key"
    load_key_file(old, create=True)
    store, pem, secret = await seeded(database, old)
    before = await store.secrets.sealed_values()
    assert {v.name for v in before if not v.is_dkim_key} == {"key_check", "verp"}

    done = run_cli("store", "rekey", "--new-key-file", str(new), "--json", config=relay_config(tmp_path, database, old))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["resealed"] == len(before) == 3
    assert new.stat().st_mode & 0o777 == 0o600

    after = await store.secrets.sealed_values()
    assert [(v.name, v.domain_id) for v in after] == [(v.name, v.domain_id) for v in before]
    sealer = load_key_file(new, create=False)
    await Keyring(sealer, store.secrets).check()  # a node given the new file starts
    assert await Keyring(sealer, store.secrets).shared("verp", lambda: b"not this") == secret  # same secret
    (domain,) = await store.domains.list_all()
    assert domain.active_key is not None and domain.active_key.sealed is not None
    # The same private key (the published record stays right), now opened by the new file only.
    assert sealer.open(domain.active_key.sealed, dkim_context(domain.id, domain.active_key.selector)) == pem
    with pytest.raises(SecretsError):
        load_key_file(old, create=False).open(domain.active_key.sealed, dkim_context(domain.id, "s1"))
    with pytest.raises(SecretsError):
        await Keyring(load_key_file(old, create=False), store.secrets).check()  # the old file stops a node


async def test_rekey_lost_forgets_what_the_lost_key_sealed_and_makes_new_keys(
    database: Database, tmp_path: Path
) -> None:
    old, new = tmp_path / "old.key", tmp_path / "new.key"
    load_key_file(old, create=True)
    store, _, _ = await seeded(database, old)
    config = relay_config(tmp_path, database, old)
    old.unlink()

    refused = run_cli("store", "rekey", "--new-key-file", str(new), config=config)
    assert refused.returncode != 0 and "--lost" in refused.stderr  # without the old key, it says what to do
    assert not new.exists() and len(await store.secrets.sealed_values()) == 3

    done = run_cli("store", "rekey", "--lost", "--new-key-file", str(new), "--json", config=config)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    (published,) = report["new_dkim_keys"]
    assert report["forgotten_dkim_keys"] == 1
    assert published["domain"] == "example.com" and published["name"].endswith("._domainkey.example.com")

    (domain,) = await store.domains.list_all()
    assert domain.active_key is None  # nothing signs until the new record is published and verified
    assert domain.pending_key is not None and domain.pending_key.public_key == published["value"]
    sealer = load_key_file(new, create=False)
    sealer.open(domain.pending_key.sealed or b"", dkim_context(domain.id, domain.pending_key.selector))
    await Keyring(sealer, store.secrets).check()  # the next start seals a new key check with the new file
    names = {v.name for v in await store.secrets.sealed_values() if not v.is_dkim_key}
    assert names == {"key_check"}  # the VERP secret is made again at the next start


async def test_rekey_refuses_while_a_node_is_up_and_an_existing_new_key_file(
    database: Database, tmp_path: Path
) -> None:
    old, new = tmp_path / "old.key", tmp_path / "new.key"
    load_key_file(old, create=True)
    store, _, _ = await seeded(database, old)
    config = relay_config(tmp_path, database, old)
    await register_now(database, NodeInfo("node-a", "host-a", "test", 1))
    before = await store.secrets.sealed_values()

    running = run_cli("store", "rekey", "--new-key-file", str(new), config=config)
    assert running.returncode != 0 and "node-a on host-a" in running.stderr and not new.exists()
    new.write_text("taken\n")
    taken = run_cli("store", "rekey", "--new-key-file", str(new), "--force", config=config)
    assert taken.returncode != 0 and "exists already" in taken.stderr
    assert await store.secrets.sealed_values() == before  # nothing changed
    new.unlink()
    assert run_cli("store", "rekey", "--new-key-file", str(new), "--force", config=config).returncode == 0


async def test_replacing_sealed_values_is_all_or_none(store: Any) -> None:
    await store.secrets.add_secret("a", b"sealed a")
    await store.secrets.add_secret("b", b"sealed b")
    values = await store.secrets.sealed_values()
    stale = [(v, b"new " + v.value) for v in values]
    await store.secrets.replace_sealed([(values[1], b"changed meanwhile")])
    with pytest.raises(SealedValuesChanged):
        await store.secrets.replace_sealed(stale)
    assert [v.value for v in await store.secrets.sealed_values()] == [b"sealed a", b"changed meanwhile"]
    assert await store.secrets.replace_sealed([(v, b"new " + v.value) for v in await store.secrets.sealed_values()])
    assert await store.secrets.secret("a") == b"new sealed a"
    assert secret_context("a") == "secrets:a"
