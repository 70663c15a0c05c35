from __future__ import annotations

import json

from tests.conftest import config_dict, run_cli, write_toml


def test_help_lists_every_command():
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("serve", "check-config", "keys", "queue", "send"):
        assert command in result.stdout
    assert "--config" in run_cli("queue", "--help").stdout
    assert "--json" in run_cli("keys", "create", "--help").stdout


def test_keys_create_list_revoke(tmp_path):
    config = write_toml(tmp_path / "relay.toml", config_dict(tmp_path / "data"))
    created = run_cli(
        "keys",
        "create",
        "--name",
        "billing",
        "--scope",
        "send",
        "--scope",
        "read",
        "--allow-ip",
        "10.0.0.0/8",
        "--daily-quota",
        "500",
        "--json",
        config=config,
    )
    assert created.returncode == 0, created.stderr
    key = json.loads(created.stdout)
    assert key["key"].startswith("rly_live_") and key["scopes"] == ["send", "read"]
    assert key["allowed_ips"] == ["10.0.0.0/8"] and key["daily_quota"] == 500

    listed = json.loads(run_cli("keys", "list", "--json", config=config).stdout)
    assert [(k["id"], k["name"], k["revoked_at"]) for k in listed] == [(key["id"], "billing", None)]
    assert key["key"] not in run_cli("keys", "list", config=config).stdout

    assert run_cli("keys", "revoke", key["id"], config=config).returncode == 0
    again = run_cli("keys", "revoke", key["id"], config=config)
    assert again.returncode == 1 and "no active key" in again.stderr
    assert json.loads(run_cli("keys", "list", "--json", config=config).stdout)[0]["revoked_at"] is not None


def test_keys_create_rejects_unknown_scope(tmp_path):
    config = write_toml(tmp_path / "relay.toml", config_dict(tmp_path / "data"))
    result = run_cli("keys", "create", "--scope", "everything", config=config)
    assert result.returncode == 2 and "invalid choice" in result.stderr


def test_queue_on_an_empty_queue(tmp_path):
    config = write_toml(tmp_path / "relay.toml", config_dict(tmp_path / "data"))
    summary = json.loads(run_cli("queue", "--json", config=config).stdout)
    assert summary["by_domain"] == {} and set(summary["by_state"].values()) == {0}
    text = run_cli("queue", config=config).stdout
    assert "recipients by state" in text and "delivered" in text


def test_check_config_prints_effective_settings(tmp_path):
    config = write_toml(
        tmp_path / "relay.toml", config_dict(tmp_path / "data", delivery={"smarthost": "127.0.0.1:2525"})
    )
    data = json.loads(run_cli("check-config", "--json", config=config).stdout)
    assert data["delivery"]["smarthost"] == "127.0.0.1:2525"
    assert data["server"]["hostname"] == "relay.test"


async def test_send_goes_through_the_running_relay(relay_process, sink):
    import asyncio

    proc = relay_process(delivery={"smarthost": sink.address})
    await proc.start()
    result = await asyncio.to_thread(
        run_cli,
        "send",
        "--from",
        "me@example.com",
        "--to",
        "you@example.org",
        "--server",
        f"127.0.0.1:{proc.smtp_port}",
        "--json",
        config=proc.config_path,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["accepted"] == ["you@example.org"]
    (m,) = await sink.handler.wait_for(1)
    assert m.rcpt_tos == ["you@example.org"] and b"Subject: relay test message" in m.data


def test_send_reports_a_refused_connection(tmp_path):
    config = write_toml(tmp_path / "relay.toml", config_dict(tmp_path / "data"))
    result = run_cli(
        "send", "--from", "a@example.com", "--to", "b@example.org", "--server", "127.0.0.1:9", config=config
    )
    assert result.returncode == 1 and "sending failed" in result.stderr


def test_smtp_credentials_create_list_revoke(tmp_path):
    import sqlite3

    config = write_toml(tmp_path / "relay.toml", config_dict(tmp_path / "data"))
    created = run_cli(
        "smtp-credentials", "create", "--allowed-from", "Example.com", "--tag", "app", "--json", config=config
    )
    assert created.returncode == 0, created.stderr
    cred = json.loads(created.stdout)
    assert cred["username"].startswith("relay-") and len(cred["password"]) == 32 and cred["password"].isalnum()
    assert cred["allowed_from"] == ["example.com"] and cred["tags"] == ["app"]
    listing = run_cli("smtp-credentials", "list", config=config).stdout
    assert cred["username"] in listing and cred["password"] not in listing and "********" in listing
    conn = sqlite3.connect(tmp_path / "data" / "relay.sqlite3")
    (stored,) = conn.execute("SELECT password_hash FROM smtp_credentials").fetchone()
    conn.close()
    assert stored.startswith("$argon2id$") and cred["password"] not in stored
    assert run_cli("smtp-credentials", "revoke", cred["id"], config=config).returncode == 0
    assert run_cli("smtp-credentials", "revoke", cred["id"], config=config).returncode == 1
    bad = run_cli("smtp-credentials", "create", "--allowed-from", "not a domain", config=config)
    assert bad.returncode == 2 and "not a domain" in bad.stderr


def test_json_log_lines_carry_message_and_recipient():
    import json
    import logging

    from relay.cli import JsonFormatter

    record = logging.LogRecord(
        "relay.delivery.engine", logging.INFO, __file__, 1, "%s delivered to=<%s>", ("01abc", "a@x"), None
    )
    record.message_id, record.recipient = "01abc", "a@x"
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "01abc delivered to=<a@x>" and line["level"] == "info"
    assert (line["message_id"], line["recipient"], line["logger"]) == ("01abc", "a@x", "relay.delivery.engine")


def test_json_log_time_is_rfc3339_utc_with_milliseconds():
    import logging

    from relay.cli import JsonFormatter

    record = logging.LogRecord("relay", logging.INFO, __file__, 1, "hello", (), None)
    record.created = 1796121149.123  # 2026-12-01 10:32:29.123 UTC
    assert json.loads(JsonFormatter().format(record))["time"] == "2026-12-01T10:32:29.123Z"
    record.created = 1796121149.9996  # rounds up into the next second, never to ".1000"
    assert json.loads(JsonFormatter().format(record))["time"] == "2026-12-01T10:32:30.000Z"
