"""relay send: TLS, AUTH, extra headers, attachments and CRLF line ends, against a real relay and sink."""

from __future__ import annotations

import argparse
import asyncio
import email
import email.policy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from relay.cli import build_parser
from relay.credentials import create_smtp_credential
from tests.conftest import config_dict, start_sink, write_toml

NOT_TRUSTED = {"trusted_networks": ["192.0.2.0/24"], "tls_listen": ["127.0.0.1:0"]}  # loopback must AUTH


def relay_send(*args: str, config: Path, password: str | None = None, stdin: str = "") -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("RELAY_CONFIG", "RELAY_SEND_PASSWORD")}
    if password is not None:
        env["RELAY_SEND_PASSWORD"] = password
    cmd = [sys.executable, "-m", "relay", "send", "--config", str(config), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env, input=stdin)


@pytest.fixture
async def auth_relay(relay_factory, sink, tmp_path):
    """A relay whose loopback clients must authenticate (STARTTLS and implicit TLS), delivering to the sink."""
    relay = await relay_factory(smtp=NOT_TRUSTED, delivery={"smarthost": sink.address})
    cred, password = await create_smtp_credential(
        relay.store.credentials, relay.store.clock, allowed_from=("example.com",)
    )
    config = write_toml(tmp_path / "cli.toml", config_dict(tmp_path / "cli-data"))
    return relay, cred.username, password, config


def parse(data: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(data, policy=email.policy.default)


async def test_starttls_auth_headers_and_attachments(auth_relay, sink, tmp_path):
    relay, user, password, config = auth_relay
    pdf, notes = tmp_path / "report.pdf", tmp_path / "notes.txt"
    pdf.write_bytes(b"%PDF-1.4\n" + bytes(range(256)))
    notes.write_text("line one\nline two\n")
    result = await asyncio.to_thread(
        relay_send,
        "--from",
        "app@example.com",
        "--to",
        "you@example.org",
        "--server",
        f"127.0.0.1:{relay.smtp_addresses[0][1]}",
        "--tls",
        "starttls",
        "--insecure",
        "--auth-user",
        user,
        "--header",
        "X-Campaign: spring",
        "--header",
        "Reply-To: Help <help@example.com>",
        "--header",
        "Subject: replaced subject",
        "--attach",
        str(pdf),
        "--attach",
        str(notes),
        "--json",
        config=config,
        password=password,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["accepted"] == ["you@example.org"] and (report["tls"], report["auth_user"]) == ("starttls", user)
    (m,) = await sink.handler.wait_for(1)
    assert b"with ESMTPSA" in m.data  # TLS and AUTH, as the relay's Received header says
    msg = parse(m.data)
    assert msg["X-Campaign"] == "spring" and msg["Reply-To"] == "Help <help@example.com>"
    assert msg.get_all("Subject") == ["replaced subject"] and msg["Message-ID"] == report["message_id"]
    parts = {p.get_filename(): p for p in msg.iter_attachments()}
    assert parts["report.pdf"].get_content_type() == "application/pdf"
    assert parts["report.pdf"].get_content() == pdf.read_bytes()
    assert parts["notes.txt"].get_content_type() == "text/plain"
    assert parts["notes.txt"].get_content().replace("\r\n", "\n") == "line one\nline two\n"


async def test_implicit_tls_on_a_port_with_the_password_from_the_prompt(auth_relay, sink):
    relay, user, password, config = auth_relay
    result = await asyncio.to_thread(
        relay_send,
        "--from",
        "app@example.com",
        "--to",
        "you@example.org",
        "--server",
        "127.0.0.1",
        "--port",
        str(relay.smtps_addresses[0][1]),
        "--tls",
        "implicit",
        "--insecure",
        "--auth-user",
        user,
        config=config,
        stdin=password + "\n",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"queued for you@example.org via 127.0.0.1:{relay.smtps_addresses[0][1]} ")
    assert f"(implicit, as {user})" in result.stdout
    (m,) = await sink.handler.wait_for(1)
    assert b"with ESMTPSA" in m.data


async def test_a_wrong_password_is_reported_and_nothing_is_sent(auth_relay, sink):
    relay, user, _, config = auth_relay
    result = await asyncio.to_thread(
        relay_send,
        "--from",
        "app@example.com",
        "--to",
        "you@example.org",
        "--server",
        f"127.0.0.1:{relay.smtp_addresses[0][1]}",
        "--tls",
        "starttls",
        "--insecure",
        "--auth-user",
        user,
        config=config,
        password="wrong",
    )
    assert result.returncode == 1
    assert result.stderr.strip() == "relay: authentication failed: 535 5.7.8 Authentication credentials invalid"
    assert (await relay.store.queue.summary()).by_domain == {}


async def test_the_certificate_is_verified_unless_insecure(auth_relay):
    relay, user, password, config = auth_relay
    result = await asyncio.to_thread(
        relay_send,
        "--from",
        "app@example.com",
        "--to",
        "you@example.org",
        "--server",
        f"127.0.0.1:{relay.smtp_addresses[0][1]}",
        "--tls",
        "starttls",
        "--auth-user",
        user,
        config=config,
        password=password,
    )
    assert result.returncode == 1 and "relay: sending failed: self-signed certificate" in result.stderr
    assert "--insecure" in result.stderr


async def test_the_message_has_crlf_line_ends_only(sink, tmp_path):
    config = write_toml(tmp_path / "cli.toml", config_dict(tmp_path / "data"))
    notes = tmp_path / "notes.txt"
    notes.write_text("one\ntwo\n")
    result = await asyncio.to_thread(
        relay_send,
        "--from",
        "a@example.com",
        "--to",
        "b@example.org",
        "--server",
        sink.address,
        "--body",
        "first line\nsecond line\n",
        "--attach",
        str(notes),
        config=config,
    )
    assert result.returncode == 0, result.stderr
    (m,) = await sink.handler.wait_for(1)
    assert b"first line\r\nsecond line\r\n" in m.data
    assert b"\n" not in m.data.replace(b"\r\n", b""), "a bare LF went out"
    assert b"\r" not in m.data.replace(b"\r\n", b"")


async def test_starttls_is_required_when_asked_for(tmp_path):
    plain = await start_sink()  # offers no STARTTLS
    try:
        config = write_toml(tmp_path / "cli.toml", config_dict(tmp_path / "data"))
        result = await asyncio.to_thread(
            relay_send,
            "--from",
            "a@example.com",
            "--to",
            "b@example.org",
            "--server",
            plain.address,
            "--tls",
            "starttls",
            config=config,
        )
        assert result.returncode == 1 and "STARTTLS extension not supported" in result.stderr
        assert plain.handler.received == []
    finally:
        plain.server.close()


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--header", "no colon here"], "--header 'no colon here': expected \"Name: value\""),
        (["--header", "Bad Name: x"], "--header 'Bad Name: x': expected \"Name: value\""),
        (["--attach", "/nonexistent/file.pdf"], "--attach /nonexistent/file.pdf: No such file or directory"),
        (["--port", "70000"], "--port must be between 1 and 65535"),
        (["--server", "[::1"], "--server: expected"),
    ],
)
def test_bad_options_are_usage_errors(tmp_path, args, error):
    config = write_toml(tmp_path / "cli.toml", config_dict(tmp_path / "data"))
    result = relay_send("--from", "a@example.com", "--to", "b@example.org", *args, config=config)
    assert result.returncode == 2 and result.stderr.startswith(f"relay: {error}"), result.stderr


def test_every_send_option_has_help():
    parser = build_parser()
    send = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["send"]
    options = [a for a in send._actions if a.option_strings]
    assert {"--port", "--tls", "--auth-user", "--header", "--attach", "--insecure"} <= {
        o for a in options for o in a.option_strings
    }
    assert all(a.help and a.help != argparse.SUPPRESS for a in options)
    assert "RELAY_SEND_PASSWORD" in send.format_help()
