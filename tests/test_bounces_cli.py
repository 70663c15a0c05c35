"""`relay bounces parse`, `relay suppressions` and `relay allowlist` as an operator runs them."""

from __future__ import annotations

import json

from tests.bounce_samples import SAMPLES
from tests.conftest import config_dict, run_cli, write_toml


def sample(name: str) -> bytes:
    return next(s for s in SAMPLES if s.name == name).raw


def test_bounces_parse_prints_one_object_per_failed_recipient(tmp_path):
    path = tmp_path / "bounce.eml"
    path.write_bytes(sample("postfix-two-recipients"))
    result = run_cli("bounces", "parse", str(path))  # needs no config file
    assert result.returncode == 0, result.stderr
    reports = json.loads(result.stdout)
    assert [(r["recipient"], r["status"], r["classification"], r["reason"]) for r in reports] == [
        ("bob@example.net", "5.1.1", "hard", "user_unknown"),
        ("carol@example.net", "5.2.2", "soft", "mailbox_full"),
    ]
    assert set(reports[0]) == {
        "recipient",
        "status",
        "action",
        "classification",
        "reason",
        "diagnostic",
        "remote_mta",
        "original_message_id",
    }
    assert reports[0]["original_message_id"] == "orig-123@relay.example.com"


def test_bounces_parse_reads_stdin_and_says_what_it_saw(tmp_path):
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "relay", "bounces", "parse", "-", "--verbose"],
        input=sample("out-of-office"),
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 0
    out = json.loads(result.stdout)
    assert out["kind"] == "auto_reply" and out["reports"] == []


def test_bounces_parse_missing_file():
    result = run_cli("bounces", "parse", "/nonexistent/bounce.eml")
    assert result.returncode == 1 and "No such file" in result.stderr


def test_suppressions_and_allowlist_commands(tmp_path):
    config = write_toml(tmp_path / "relay.toml", config_dict(tmp_path / "data"))
    added = run_cli(
        "suppressions", "add", "Bob@Example.NET", "carol@example.net", "--for", "30d", "--json", config=config
    )
    assert added.returncode == 0, added.stderr
    assert [e["address"] for e in json.loads(added.stdout)] == ["bob@example.net", "carol@example.net"]
    refused = run_cli("suppressions", "add", "dan@example.net", "x" * 65 + "@example.net", config=config)
    assert refused.returncode == 2 and "local part longer than 64" in refused.stderr, refused.stderr
    assert run_cli("suppressions", "show", "dan@example.net", config=config).returncode == 1, "none of them added"
    shown = run_cli("suppressions", "show", "bob@example.net", config=config)
    assert shown.returncode == 0 and "manual" in shown.stdout and "until 20" in shown.stdout
    listed = json.loads(run_cli("suppressions", "list", "--search", "carol", "--json", config=config).stdout)
    assert [e["address"] for e in listed] == ["carol@example.net"]
    assert run_cli("suppressions", "remove", "BOB@example.net", config=config).returncode == 0
    assert run_cli("suppressions", "show", "bob@example.net", config=config).returncode == 1
    assert run_cli("suppressions", "remove", "bob@example.net", config=config).returncode == 1

    assert run_cli("allowlist", "add", "Partner.Example", "--note", "our own domain", config=config).returncode == 0
    entries = json.loads(run_cli("allowlist", "list", "--json", config=config).stdout)
    assert [(e["entry"], e["note"]) for e in entries] == [("partner.example", "our own domain")]
    assert run_cli("allowlist", "remove", "partner.example", config=config).returncode == 0
    assert json.loads(run_cli("allowlist", "list", "--json", config=config).stdout) == []
    assert json.loads(run_cli("bounces", "list", "--json", config=config).stdout) == []
