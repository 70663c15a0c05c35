"""``relay users``: operators made, listed, removed and given new passwords from the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from relay.clock import FakeClock
from relay.dashboard import accounts
from relay.store import Store, copy_tables
from tests.conftest import config_dict, run_cli, write_toml


def users(config: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    if stdin is None:
        return run_cli("users", *args, config=config)
    env = {k: v for k, v in os.environ.items() if k != "RELAY_CONFIG"}
    cmd = [sys.executable, "-m", "relay", "users", *args, "--config", str(config)]
    return subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=60, env=env)


async def login(config: Path, name: str, password: str) -> bool:
    store = Store(config.parent / "data" / "relay.sqlite3", FakeClock())
    try:
        return await accounts.check_login(store.operators, name, password) is not None
    finally:
        await store.close()


async def test_create_prints_a_generated_password_once_that_signs_in(tmp_path):
    config = write_toml(tmp_path / "relay.toml", config_dict(tmp_path / "data"))
    made = users(config, "create", "alice", "--role", "admin")
    assert made.returncode == 0, made.stderr
    password = next(line.split(": ", 1)[1] for line in made.stdout.splitlines() if line.startswith("password: "))
    assert "not shown again" in made.stdout
    assert await login(config, "alice", password)
    listed = users(config, "list")
    assert "alice" in listed.stdout and "admin" in listed.stdout and password not in listed.stdout
    again = users(config, "create", "alice", "--role", "viewer")
    assert (again.returncode, again.stderr.strip()) == (1, "relay: user alice exists")


async def test_password_stdin_json_set_password_and_remove(tmp_path):
    config = write_toml(tmp_path / "relay.toml", config_dict(tmp_path / "data"))
    made = users(config, "create", "bob", "--role", "viewer", "--password-stdin", "--json", stdin="a long password\n")
    assert made.returncode == 0, made.stderr
    data = json.loads(made.stdout)
    assert (data["name"], data["role"]) == ("bob", "viewer") and "password" not in data
    assert await login(config, "bob", "a long password")
    short = users(config, "create", "carol", "--role", "viewer", "--password-stdin", stdin="short\n")
    assert short.returncode == 2 and "at least 12 characters" in short.stderr
    bad_role = users(config, "create", "carol", "--role", "root")
    assert bad_role.returncode == 2
    [listed] = json.loads(users(config, "list", "--json").stdout)
    assert listed["name"] == "bob" and "password_hash" not in listed

    changed = json.loads(users(config, "set-password", "bob", "--json").stdout)
    assert await login(config, "bob", changed["password"]) and not await login(config, "bob", "a long password")
    assert users(config, "set-password", "nobody").returncode == 1
    assert users(config, "remove", "bob").returncode == 0
    assert not await login(config, "bob", changed["password"])
    assert users(config, "remove", "bob").returncode == 1


def test_a_copy_takes_the_operators_but_not_their_sessions():
    names = {t.name for t in copy_tables.reference_tables()}
    assert "operators" in names and "operator_sessions" not in names
