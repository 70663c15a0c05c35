"""[store] url: which database relay uses (SQLite by default, or PostgreSQL), shown without its password,
and ``relay migrate`` on both."""

from __future__ import annotations

import contextlib
import json
import sqlite3

import pytest

from relay import config as config_mod
from relay.config import ConfigError, masked_url, parse_store_url
from relay.store import schema as sqlite_schema
from relay.store.postgres import schema as pg_schema
from tests.conftest import config_dict, run_cli, write_toml


def test_the_default_is_sqlite_in_the_data_directory(tmp_path):
    config = config_mod.from_dict(config_dict(tmp_path))
    assert config.store_url.backend == "sqlite"
    assert config.store_url.path == tmp_path / "relay.sqlite3" == config.db_path


@pytest.mark.parametrize(
    ("url", "backend"),
    [
        ("sqlite:////var/lib/relay/q.sqlite3", "sqlite"),
        ("sqlite:///var/q.sqlite3", "sqlite"),
        ("postgresql://relay:secret@db.internal:5432/relay", "postgresql"),
        ("postgres://relay@127.0.0.1/relay?sslmode=require", "postgresql"),
        ("postgresql://relay@/relay?host=/run/postgresql", "postgresql"),
    ],
)
def test_store_urls_that_are_taken(url, backend):
    assert parse_store_url(url).backend == backend


def test_a_sqlite_url_names_the_file(tmp_path):
    config = config_mod.from_dict(config_dict(tmp_path, store={"url": f"sqlite:///{tmp_path}/elsewhere.db"}))
    assert config.db_path == tmp_path / "elsewhere.db"


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("mysql://relay@db/relay", "must start with sqlite:/// or postgresql://"),
        ("/var/lib/relay.sqlite3", "must start with"),
        ("sqlite:///", "needs a file path"),
        ("postgresql://relay:secret@/", "needs a host"),
        ("postgresql://relay:secret@db.internal", "needs a database name"),
    ],
)
def test_a_bad_url_is_a_config_error_naming_the_key_without_the_password(tmp_path, url, says):
    with pytest.raises(ConfigError, match=r"\[store\] url") as caught:
        config_mod.from_dict(config_dict(tmp_path, store={"url": url}))
    assert says in str(caught.value)
    assert "secret" not in str(caught.value)


def test_the_url_comes_from_the_environment_too(tmp_path):
    url = "postgresql://relay:pw@db.internal/relay"
    config = config_mod.from_dict(config_dict(tmp_path), environ={"RELAY_STORE_URL": url})
    assert config.store_url.backend == "postgresql" and config.store_url.url == url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://relay:s3cr%40t@db:5432/relay", "postgresql://relay:***@db:5432/relay"),
        ("postgresql://relay:@db/relay", "postgresql://relay:***@db/relay"),
        ("postgresql://relay@db/relay?password=s3cret&sslmode=require", None),
        ("postgresql://db/relay", "postgresql://db/relay"),
        ("sqlite:////var/lib/relay/relay.sqlite3", "sqlite:////var/lib/relay/relay.sqlite3"),
    ],
)
def test_the_password_is_never_shown(url, shown):
    out = masked_url(url)
    assert "s3cr" not in out
    if shown is not None:
        assert out == shown
    else:
        assert "password=***" in out and "sslmode=require" in out


def test_check_config_masks_the_database_password(tmp_path):
    path = write_toml(
        tmp_path / "relay.toml", config_dict(tmp_path, store={"url": "postgresql://relay:hunter2@db/relay"})
    )
    result = run_cli("check-config", config=path)
    assert result.returncode == 0, result.stderr
    assert "hunter2" not in result.stdout
    assert 'url = "postgresql://relay:***@db/relay"' in result.stdout


def test_relay_migrate_on_sqlite_creates_then_finds_the_schema_up_to_date(tmp_path):
    path = write_toml(tmp_path / "relay.toml", config_dict(tmp_path))
    first = run_cli("migrate", "--json", config=path)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout) == {
        "store": "sqlite",
        "database": str(tmp_path / "relay.sqlite3"),
        "before": 0,
        "after": len(sqlite_schema.MIGRATIONS),
    }
    again = run_cli("migrate", config=path)
    assert again.returncode == 0 and "up to date" in again.stdout


def test_relay_migrate_refuses_a_newer_sqlite_schema(tmp_path):
    db = tmp_path / "relay.sqlite3"
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        conn.execute(f"PRAGMA user_version = {len(sqlite_schema.MIGRATIONS) + 1}")
    conn.close()
    result = run_cli("migrate", config=write_toml(tmp_path / "relay.toml", config_dict(tmp_path)))
    assert result.returncode == 74
    assert "newer than this relay knows" in result.stderr and "Traceback" not in result.stderr


def test_relay_migrate_on_postgresql_then_up_to_date(tmp_path, pg_cluster):
    url = pg_cluster.create_database("migrate_cli").replace("relay@", "relay:unused@")
    path = write_toml(tmp_path / "relay.toml", config_dict(tmp_path, store={"url": url}))
    first = run_cli("migrate", "--json", config=path)
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    assert (report["store"], report["before"], report["after"]) == ("postgresql", 0, len(pg_schema.MIGRATIONS))
    assert "unused" not in report["database"]
    again = run_cli("migrate", config=path)
    assert again.returncode == 0 and "up to date" in again.stdout


def test_an_unreachable_database_is_a_clear_error(tmp_path):
    from tests.pg import free_port

    url = f"postgresql://relay:pw@127.0.0.1:{free_port()}/relay"
    result = run_cli("migrate", config=write_toml(tmp_path / "relay.toml", config_dict(tmp_path, store={"url": url})))
    assert result.returncode == 74
    assert result.stderr.startswith("relay: the store:") and "Traceback" not in result.stderr
    assert ":pw@" not in result.stderr
