from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from relay import config as config_mod
from relay.config import ConfigError, parse_duration, parse_hostport, parse_size
from tests.conftest import make_config, run_cli

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("text", "expected"),
    [("25MB", 25 * 1024**2), ("10kb", 10240), ("512", 512), ("1GB", 1024**3), ("1.5M", int(1.5 * 1024**2)), (100, 100)],
)
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "MB", "25XB", "-1MB", "ten"])
def test_parse_size_rejects(text):
    with pytest.raises(ValueError):
        parse_size(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("30s", 30), ("5m", 300), ("5d", 432000), ("1h30m", 5400), ("250ms", 0.25), (10, 10.0), ("2w", 1209600)],
)
def test_parse_duration(text, expected):
    assert parse_duration(text) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["", "5", "5 minutes", "m5", "5m garbage", "-5m"])
def test_parse_duration_rejects(text):
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:2587", ("127.0.0.1", 2587)),
        ("[::1]:25", ("::1", 25)),
        ("mail.example.com:587", ("mail.example.com", 587)),
    ],
)
def test_parse_hostport(text, expected):
    assert parse_hostport(text) == expected


def test_example_config_loads_as_is():
    config = config_mod.load(REPO / "config" / "relay.toml", environ={})
    assert config.server.hostname == "relay.example.com"
    assert config.server.data_dir == Path("var")
    assert config.smtp.listen == [("127.0.0.1", 2587)]
    assert config.http.listen == ("127.0.0.1", 8025)
    assert config.delivery.smarthost is None
    assert config.smtp.max_message_size == 25 * 1024**2
    assert config.delivery.max_age == 5 * 86400
    assert config.delivery.retry_schedule == [60, 300, 600, 1200, 2400, 3600]
    assert ipaddress.ip_network("127.0.0.1/32") in config.smtp.trusted_networks


def test_defaults_without_any_file_content(tmp_path):
    path = tmp_path / "empty.toml"
    path.write_text('[server]\nhostname = "mx.example.org"\n')
    config = config_mod.load(path, environ={})
    assert config.delivery.mx_port == 25
    assert config.dns.nameservers == []


def test_environment_overrides_paths_and_lists(tmp_path):
    path = tmp_path / "relay.toml"
    path.write_text('[server]\nhostname = "a.example.com"\ndata_dir = "./var"\n')
    env = {
        "RELAY_SERVER_DATA_DIR": "/srv/relay",
        "RELAY_DELIVERY_SMARTHOST": "smtp.example.net:2525",
        "RELAY_DNS_NAMESERVERS": "127.0.0.1:5353, 127.0.0.2",
        "RELAY_DELIVERY_CONCURRENCY": "7",
    }
    config = config_mod.load(path, environ=env)
    assert config.server.data_dir == Path("/srv/relay")
    assert config.delivery.smarthost == ("smtp.example.net", 2525)
    assert config.dns.nameservers == [("127.0.0.1", 5353), ("127.0.0.2", 53)]
    assert config.delivery.concurrency == 7


def test_relay_config_variable_names_the_file(tmp_path):
    path = tmp_path / "elsewhere.toml"
    path.write_text('[server]\nhostname = "b.example.com"\n')
    assert config_mod.load(None, environ={"RELAY_CONFIG": str(path)}).server.hostname == "b.example.com"


# Each bad config must be refused for the right reason: the error names the key.
BAD_CONFIGS = [
    ('[server]\nhostnme = "x.example"\n', r"unknown key \[server\] hostnme"),
    ('[sever]\nhostname = "x.example"\n', r"unknown section \[sever\]"),
    ('[smtp]\nlisten = "127.0.0.1:25"\n', r"\[smtp\] listen must be a list"),
    ('[smtp]\nmax_recipients = "many"\n', r"\[smtp\] max_recipients must be an integer"),
    ('[smtp]\nmax_message_size = "huge"\n', r"\[smtp\] max_message_size: expected a size"),
    ('[delivery]\nretry_schedule = ["1m", "soon"]\n', r"\[delivery\] retry_schedule: expected a duration"),
    ('[delivery]\nsmarthost = "mail.example.com:99999"\n', r"\[delivery\] smarthost: port out of range"),
    ("[delivery]\nconcurrency = 0\n", r"\[delivery\] concurrency must be greater than zero"),
    ("[delivery]\nretry_schedule = []\n", r"retry_schedule needs at least one positive duration"),
    ('[smtp]\ntrusted_networks = ["10.0.0.0/33"]\n', r"\[smtp\] trusted_networks: expected a network"),
    ('[dns]\nnameservers = ["127.0.0.1:x"]\n', r"\[dns\] nameservers"),
    ('[server]\nlog_level = "loud"\n', r"\[server\] log_level"),
    ('[server]\nevent_loop = "trio"\n', r"\[server\] event_loop"),
    ("[smtp]\nlisten = []\n", r"nothing would accept mail"),
    ("[server\n", r"invalid TOML"),
    ("[smtp]\nmax_message_size = 1.5\n", r"\[smtp\] max_message_size: expected a size"),
    ("[delivery]\nmax_age = [1]\n", r"\[delivery\] max_age must be"),
    ("[delivery]\nmx_port = true\n", r"\[delivery\] mx_port must be an integer"),
    ('[delivery.shaping."x.example"]\npipelining = "no"\n', r"pipelining must be true or false"),
    ("[delivery.shaping.default]\nmax_connections = true\n", r"max_connections must be a positive integer"),
]


@pytest.mark.parametrize(("text", "error"), BAD_CONFIGS)
def test_bad_config_is_refused_naming_the_key(tmp_path, text, error):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=error) as info:
        config_mod.load(path, environ={})
    assert str(path) in str(info.value)


def test_missing_file():
    with pytest.raises(ConfigError, match="config file not found"):
        config_mod.load("/nonexistent/relay.toml", environ={})


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ('[server]\nhostnme = "x.example"\n', "unknown key [server] hostnme"),
        ('[smtp]\nmax_recipients = "many"\n', "[smtp] max_recipients must be"),
        (None, "config file not found"),
    ],
)
def test_cli_exits_non_zero_with_a_one_line_error(tmp_path, text, error):
    path = tmp_path / "relay.toml"
    if text is not None:
        path.write_text(text)
    for command in (["serve"], ["check-config"]):
        result = run_cli(*command, config=path)
        assert result.returncode == 78
        assert result.stdout == ""
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and error in lines[0], result.stderr


def test_schema_lists_every_key_with_a_description():
    rows = config_mod.describe()
    keys = {(s, k) for s, k, _, _ in rows}
    for contract in [
        ("server", "hostname"),
        ("server", "data_dir"),
        ("smtp", "listen"),
        ("smtp", "tls_listen"),
        ("smtp", "trusted_networks"),
        ("http", "listen"),
        ("delivery", "smarthost"),
        ("dns", "nameservers"),
    ]:
        assert contract in keys
    assert all(doc for *_, doc in rows)


def test_a_reload_applies_delivery_policy_and_names_what_needs_a_restart(tmp_path):
    from relay.config import reloaded, restart_needed

    old = make_config(tmp_path)
    new = make_config(
        tmp_path,
        delivery={"shaping": {"default": {"max_connections": 3}}, "tls": "required"},
        smtp={"max_message_size": "1MB"},
        server={"log_level": "debug"},
    )
    assert restart_needed(old, new) == ["smtp.max_message_size"]
    now = reloaded(old, new)
    assert now.delivery.shaping == {"default": {"max_connections": 3}} and now.delivery.tls == "required"
    assert now.server.log_level == "debug"
    assert now.smtp.max_message_size == old.smtp.max_message_size  # still the running value
    assert restart_needed(now, new) == ["smtp.max_message_size"]


def test_shaping_overrides_stay_partial_until_a_destination_layers_them(tmp_path):
    """[delivery.shaping] holds checked overrides per key (not whole Shaping values): a key set for a domain
    goes over the built-in provider entry and the defaults, the keys it does not set come from those."""
    from relay.config import Rate, Shaping
    from relay.delivery.shaping import shaping_for

    overrides = {"default": {"max_connection_age": "1m"}, "Gmail.com": {"max_rate": "10/s"}}
    config = make_config(tmp_path, delivery={"shaping": overrides})
    assert config.delivery.shaping == {"default": {"max_connection_age": 60.0}, "gmail.com": {"max_rate": Rate(10, 1)}}
    assert shaping_for("gmail.com", ["aspmx.l.google.com"], config.delivery.shaping) == Shaping(
        max_connections=5, max_messages_per_connection=50, max_connection_age=60.0, max_rate=Rate(10, 1)
    )


def test_pipelining_can_be_turned_off_for_a_site(tmp_path):
    from relay.delivery.shaping import shaping_for

    config = make_config(tmp_path, delivery={"shaping": {"old.example": {"pipelining": False}}})
    assert config.delivery.shaping == {"old.example": {"pipelining": False}}
    assert not shaping_for("old.example", ["mx.old.example"], config.delivery.shaping).pipelining
    assert shaping_for("new.example", ["mx.new.example"], config.delivery.shaping).pipelining
