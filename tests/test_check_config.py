"""relay check-config prints every section as TOML that loads back to the same settings (secrets aside)."""

from __future__ import annotations

import dataclasses
import json
import tomllib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from relay import config as config_mod
from relay.config import Config, ConfigError, auto_acceptors, available_cores
from relay.config_toml import duration_text, size_text
from tests.conftest import config_dict, run_cli

SECTIONS = [f.name for f in dataclasses.fields(Config) if f.name != "source"]


def dkim_key(path: Path) -> Path:
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return path


def busy_config(tmp_path: Path) -> Path:
    """A config that sets something other than the default in every section, tables of tables included."""
    key = dkim_key(tmp_path / "example.com.pem")
    text = f"""
[server]
hostname = "relay.test"
data_dir = "{tmp_path / "data"}"
shutdown_grace = "45s"
acceptors = "auto"
min_free_disk = "1GB"
log_format = "json"
[smtp]
listen = ["127.0.0.1:2587", "[::1]:2587"]
tls_listen = ["127.0.0.1:2465"]
trusted_networks = ["10.0.0.0/8", "2001:db8::/32"]
max_message_size = "10MB"
auth_failure_window = "90s"
[http]
listen = "127.0.0.1:8125"
rate_limit = "100/m"
max_attachments_size = 1000
idempotency_ttl = "36h"
[delivery]
smarthost = "smtp.example.net:587"
retry_schedule = ["30s", "1h30m", "250ms"]
tls_policy = {{ "bank.example" = "verify" }}
[delivery.routes."partner.example"]
smarthost = "smtp.partner.example:587"
username = "relay"
password = "s3cret-route-password"
tls = "required"
[delivery.routes."*"]
smarthost = "fallback.example"
[delivery.shaping.default]
max_connections = 5
max_rate = "6000/min"
max_connection_age = "2m"
[delivery.shaping."gmail.com"]
max_connections = 3
[dns]
nameservers = ["127.0.0.1:5353", "[::1]"]
timeout = "2s"
[dkim.domains."example.com"]
selector = "s1"
private_key = "{key}"
[inbound]
listen = ["127.0.0.1:2525"]
bounce_domains = ["bounces.example.com"]
feedback_addresses = ["fbl@bounces.example.com"]
max_message_size = "5MB"
[suppression]
soft_bounce_limit = 5
soft_bounce_window = "14d"
[webhooks]
max_rate = "50/s"
allow_private_targets = true
[retention]
events = "60d"
redact_subjects = true
[domains]
outbound_ips = ["203.0.113.5"]
spf_include = "_spf.relay.example.com"
selector = "sel1"
"""
    path = tmp_path / "relay.toml"
    path.write_text(text)
    return path


def without_secrets(config: Config) -> Config:
    routes = {d: dataclasses.replace(r, password="") for d, r in config.delivery.routes.items()}
    return dataclasses.replace(config, delivery=dataclasses.replace(config.delivery, routes=routes), source=None)


def test_the_printed_toml_loads_back_to_the_same_settings(tmp_path):
    path = busy_config(tmp_path)
    result = run_cli("check-config", config=path)
    assert result.returncode == 0, result.stderr
    printed = tmp_path / "printed.toml"
    printed.write_text(result.stdout)
    original, again = config_mod.load(path, environ={}), config_mod.load(printed, environ={})
    assert without_secrets(again) == without_secrets(original)
    assert again.delivery.routes["partner.example"].password == "********"
    assert "s3cret-route-password" not in result.stdout
    # Printed again, it prints the same (the first line names the file).
    second = run_cli("check-config", config=printed)
    assert second.stdout.splitlines()[1:] == result.stdout.splitlines()[1:]


def test_every_section_is_printed_and_values_are_written_as_in_a_config_file(tmp_path):
    result = run_cli("check-config", config=busy_config(tmp_path))
    data = tomllib.loads(result.stdout)
    assert list(data) == SECTIONS
    for section in SECTIONS:
        assert f"\n[{section}]\n" in result.stdout
        assert set(data[section]) == {f.name for f in dataclasses.fields(getattr(Config(), section))}
    assert data["server"]["shutdown_grace"] == "45s" and data["server"]["min_free_disk"] == "1GB"
    assert data["smtp"]["listen"] == ["127.0.0.1:2587", "[::1]:2587"]
    assert data["smtp"]["trusted_networks"] == ["10.0.0.0/8", "2001:db8::/32"]
    assert data["smtp"]["max_message_size"] == "10MB" and data["http"]["max_attachments_size"] == "1000B"
    assert data["http"]["rate_limit"] == "100/m" and data["http"]["listen"] == "127.0.0.1:8125"
    assert data["delivery"]["retry_schedule"] == ["30s", "90m", "250ms"]
    assert data["delivery"]["routes"]["*"] == {"smarthost": "fallback.example:25", "username": "", "password": ""}
    assert data["delivery"]["shaping"]["default"] == {
        "max_connections": 5,
        "max_rate": "6000/m",
        "max_connection_age": "2m",
    }
    assert data["dns"]["nameservers"] == ["127.0.0.1:5353", "[::1]:53"]
    assert data["dkim"]["domains"]["example.com"]["selector"] == "s1"
    assert data["webhooks"]["max_rate"] == "50/s" and data["retention"]["events"] == "60d"
    assert data["inbound"]["bounce_domains"] == ["bounces.example.com"]
    assert data["suppression"]["soft_bounce_window"] == "14d" and data["domains"]["selector"] == "sel1"


def test_json_is_the_same_data_with_what_auto_resolves_to(tmp_path):
    path = busy_config(tmp_path)
    text = run_cli("check-config", config=path).stdout
    data = json.loads(run_cli("check-config", "--json", config=path).stdout)
    resolved = data.pop("resolved")
    assert data == tomllib.loads(text)
    expected = auto_acceptors(available_cores())
    sign_at = "delivery" if expected <= 1 else "acceptance"
    assert resolved == {"server.acceptors": expected, "dkim.sign_at": sign_at}
    assert f'acceptors = "auto"  # resolves to {expected} here' in text
    assert f'sign_at = "auto"  # resolves to {sign_at} here' in text


@pytest.mark.parametrize(
    ("sign_at", "acceptors", "resolved"),
    [
        ("auto", 0, "delivery"),
        ("auto", 1, "delivery"),
        ("auto", 2, "acceptance"),
        ("auto", 4, "acceptance"),
        ("delivery", 4, "delivery"),
        ("acceptance", 0, "acceptance"),
    ],
)
def test_dkim_signs_at_delivery_unless_acceptors_can_share_the_signing(tmp_path, sign_at, acceptors, resolved):
    data = config_dict(tmp_path, server={"acceptors": acceptors}, dkim={"sign_at": sign_at})
    assert config_mod.from_dict(data, environ={}).dkim_signs_at == resolved
    environ = {"RELAY_DKIM_SIGN_AT": sign_at, "RELAY_SERVER_ACCEPTORS": str(acceptors)}
    assert config_mod.from_dict(config_dict(tmp_path), environ=environ).dkim_signs_at == resolved


def test_an_unknown_sign_at_is_refused_naming_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r'\[dkim\] sign_at must be "auto", "delivery" or "acceptance"'):
        config_mod.from_dict(config_dict(tmp_path, dkim={"sign_at": "later"}), environ={})


def test_the_example_config_round_trips(tmp_path):
    example = Path(__file__).resolve().parent.parent / "config" / "relay.toml"
    result = run_cli("check-config", config=example)
    assert result.returncode == 0, result.stderr
    printed = tmp_path / "printed.toml"
    printed.write_text(result.stdout)
    again = config_mod.load(printed, environ={})
    assert without_secrets(again) == without_secrets(config_mod.load(example, environ={}))
    assert f'acceptors = "auto"  # resolves to {auto_acceptors(available_cores())} here' in result.stdout


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.1, "100ms"),
        (1.5, "1500ms"),
        (30, "30s"),
        (90, "90s"),
        (600, "10m"),
        (5400, "90m"),
        (86400, "1d"),
        (604800, "7d"),
        (0.0005, "0.0005s"),
    ],
)
def test_durations_are_written_in_the_largest_exact_unit(seconds, text):
    assert duration_text(seconds) == text
    assert config_mod.parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("size", "text"),
    [(0, "0B"), (1000, "1000B"), (1024, "1KB"), (25 * 1024**2, "25MB"), (3 * 1024**3, "3GB"), (1536 * 1024, "1536KB")],
)
def test_sizes_are_written_in_the_largest_exact_unit(size, text):
    assert size_text(size) == text and config_mod.parse_size(text) == size
