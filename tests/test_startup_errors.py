"""``relay serve`` that cannot start: one line naming the listener or key, and an exit status per kind."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from relay.app import Relay
from relay.startup import EX_CANTCREAT, EX_CONFIG, EX_IOERR, EX_OSERR, StartupError
from tests.conftest import config_dict, make_config, run_cli, write_toml


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port something else is listening on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve(tmp_path: Path, **sections: dict) -> tuple[int, list[str]]:
    config = write_toml(tmp_path / "relay.toml", config_dict(tmp_path / "data", **sections))
    result = run_cli("serve", config=config)
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, result.stderr.strip().splitlines()


def test_a_busy_smtp_port_is_one_line_and_status_71(tmp_path, busy_port):
    status, lines = serve(tmp_path, smtp={"listen": [f"127.0.0.1:{busy_port}"]})
    assert status == EX_OSERR == 71
    assert lines == [f"relay: cannot listen on 127.0.0.1:{busy_port} ([smtp] listen): address already in use"]


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("smtp", "tls_listen", lambda port: [f"127.0.0.1:{port}"]),
        ("http", "listen", lambda port: f"127.0.0.1:{port}"),
        ("inbound", "listen", lambda port: [f"127.0.0.1:{port}"]),
    ],
)
def test_every_listener_names_its_key(tmp_path, busy_port, section, key, value):
    sections = {section: {key: value(busy_port)}}
    if section == "inbound":
        sections["inbound"]["bounce_domains"] = ["bounces.example.com"]
    status, lines = serve(tmp_path, **sections)
    assert status == EX_OSERR
    assert lines == [f"relay: cannot listen on 127.0.0.1:{busy_port} ([{section}] {key}): address already in use"]


def test_an_address_not_on_this_host(tmp_path):
    status, lines = serve(tmp_path, smtp={"listen": ["192.0.2.1:2587"]})  # TEST-NET-1: never local
    assert status == EX_OSERR
    assert lines == ["relay: cannot listen on 192.0.2.1:2587 ([smtp] listen): cannot assign requested address"]


def test_a_data_dir_that_cannot_be_created_is_status_73(tmp_path):
    (tmp_path / "data").write_text("a file where the directory should be\n")
    status, lines = serve(tmp_path)
    assert status == EX_CANTCREAT == 73
    assert lines == [f"relay: cannot write in the data directory {tmp_path / 'data'} ([server] data_dir): file exists"]


def test_a_queue_file_that_is_not_a_database_is_status_74(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "relay.sqlite3").write_bytes(b"this is not an SQLite database, " * 100)
    status, lines = serve(tmp_path)
    assert status == EX_IOERR == 74
    assert lines[-1] == f"relay: cannot open the queue database {tmp_path / 'data' / 'relay.sqlite3'}: " + (
        "file is not a database"
    )


def test_a_certificate_that_does_not_load_is_a_config_error(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("not a certificate\n")
    key.write_text("not a key\n")
    status, lines = serve(tmp_path, smtp={"tls_cert": str(cert), "tls_key": str(key)})
    assert status == EX_CONFIG == 78
    assert len(lines) == 1 and lines[0].startswith(f"relay: cannot use the certificate {cert} with the key {key}")
    assert lines[0].endswith("([smtp] tls_cert, tls_key): not a PEM certificate and its private key")


def test_a_bad_config_is_still_status_78(tmp_path):
    status, lines = serve(tmp_path, server={"acceptors": -1})
    assert status == 78 and len(lines) == 1 and "[server] acceptors" in lines[0]


async def test_a_failed_start_releases_the_ports_it_had_bound(tmp_path, busy_port):
    first = free_port()
    config = make_config(
        tmp_path / "data", smtp={"listen": [f"127.0.0.1:{first}"]}, http={"listen": f"127.0.0.1:{busy_port}"}
    )
    relay = Relay(config)
    with pytest.raises(StartupError) as failed:
        await relay.start()
    assert failed.value.status == EX_OSERR and "[http] listen" in str(failed.value)
    with socket.socket() as again:  # the SMTP port bound before the HTTP one failed was closed
        again.bind(("127.0.0.1", first))
