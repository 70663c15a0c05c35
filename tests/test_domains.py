"""Sending domains against a real DNS server on loopback: records, live checks with hints, signing, refusal."""

from __future__ import annotations

import asyncio
import json
import smtplib

import aiohttp
import pytest

from tests.conftest import config_dict, run_cli, write_toml
from tests.test_dkim import verifier

OUR_IP = "192.0.2.10"


def txt(value: str) -> str:
    """A TXT rdata in zone syntax: quoted strings of at most 250 characters."""
    return " ".join(f'"{value[i : i + 250]}"' for i in range(0, len(value), 250))


def publish(dns_server, records: list[dict]) -> None:
    for r in records:
        value = txt(r["value"]) if r["type"] == "TXT" else r["value"]
        dns_server.zone.setdefault(r["name"], {}).setdefault(r["type"], []).append(value)


def sections(dns_server, **extra):
    return dict(
        dns={"nameservers": [f"127.0.0.1:{dns_server.port}"], "timeout": "2s"},
        domains={"require_verified_domain": True, "outbound_ips": [OUR_IP], "selector": "s1"},
        inbound={"bounce_domains": ["bounces.example.com"]},
        **extra,
    )


async def call(relay, method: str, path: str, key: str, **kwargs):
    host, port = relay.http_address
    async with aiohttp.ClientSession() as s:
        async with s.request(method, f"http://{host}:{port}{path}", headers={"Authorization": f"Bearer {key}"},
                             **kwargs) as r:  # fmt: skip
            return r.status, await r.json()


@pytest.fixture
async def relay_key(relay_factory, dns_server, sink):
    relay = await relay_factory(delivery={"smarthost": sink.address}, **sections(dns_server))
    _, key = await relay.store.create_api_key("t", ("admin",))
    return relay, key


def send_http(relay, key, sender: str):
    return call(relay, "POST", "/v1/messages", key, json={"from": sender, "to": "bob@one.example", "subject": "s",
                                                          "text": "hello"})  # fmt: skip


async def test_add_publish_verify_sign(relay_key, dns_server, sink):
    relay, key = relay_key
    status, domain = await call(relay, "POST", "/v1/domains", key, json={"domain": "Example.COM"})
    assert status == 201, domain
    assert domain["domain"] == "example.com" and domain["status"] == "pending"
    records = {r["purpose"].split()[0]: r for r in domain["records"]}
    assert records["dkim"]["name"] == "s1._domainkey.example.com"
    assert records["dkim"]["value"].startswith("v=DKIM1; k=rsa; p=")
    assert records["spf"] == {**records["spf"], "name": "example.com", "value": f"v=spf1 ip4:{OUR_IP} ~all"}
    assert records["dmarc"]["name"] == "_dmarc.example.com" and records["dmarc"]["value"].startswith("v=DMARC1; p=none")
    assert records["return_path"] == {**records["return_path"], "type": "MX", "name": "bounces.example.com",
                                      "value": "10 relay.test."}  # fmt: skip
    key_file = relay.config.server.data_dir / "dkim" / "example.com.s1.pem"
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"

    # Nothing published yet: pending, with hints; sending from it is refused.
    status, checked = await call(relay, "POST", f"/v1/domains/{domain['id']}/verify", key)
    assert status == 200 and checked["status"] == "pending"
    assert "no TXT record at s1._domainkey.example.com" in checked["checks"]["dkim"]["hint"]
    assert checked["checks"]["spf"]["status"] == "pending" and checked["checks"]["dmarc"]["status"] == "pending"
    status, error = await send_http(relay, key, "app@example.com")
    assert status == 422 and error["error"]["code"] == "domain_not_verified" and error["error"]["field"] == "from"

    publish(dns_server, domain["records"])
    status, checked = await call(relay, "GET", "/v1/domains/example.com/verify", key)
    assert status == 200 and checked["status"] == "verified", checked["checks"]
    assert {name: c["status"] for name, c in checked["checks"].items()} == {
        "dkim": "verified", "spf": "verified", "dmarc": "verified", "return_path": "verified"}  # fmt: skip
    assert "SPF aligns through the return path bounces.example.com" in checked["checks"]["dmarc"]["hint"]

    status, sent = await send_http(relay, key, "App <app@example.com>")
    assert status == 202, sent
    (received,) = await sink.handler.wait_for(1)
    assert received.data.startswith(b"DKIM-Signature:") and b"d=example.com" in received.data[:600]
    assert await asyncio.to_thread(verifier(dns_server), received.data)

    # SMTP submission is held to the same rule.
    with pytest.raises(smtplib.SMTPDataError) as refused:
        await asyncio.to_thread(smtp_send, relay.smtp_addresses[0][1], "From: app@unverified.example\r\n")
    assert refused.value.smtp_code == 550 and b"not a verified sending domain" in refused.value.smtp_error


def smtp_send(port: int, from_header: str) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
        smtp.sendmail("app@unverified.example", ["bob@one.example"], f"{from_header}To: bob@one.example\r\n\r\nhi\r\n")


OTHER_KEY = "v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAwrong"
ELEVEN_INCLUDES = {
    "example.com": {"TXT": [txt("v=spf1 " + " ".join(f"include:i{n}.example.com" for n in range(11)) + " -all")]},
    **{f"i{n}.example.com": {"TXT": ['"v=spf1 -all"']} for n in range(11)},
}


@pytest.mark.parametrize(
    ("check", "zone", "status", "hint"),
    [
        ("dkim", {"s1._domainkey.example.com": {"TXT": [txt(OTHER_KEY)]}},
         "failed", "TXT found at s1._domainkey.example.com but its p= value does not match"),
        ("spf", {"example.com": {"TXT": ['"v=spf1 ip4:198.51.100.7 -all"']}}, "failed",
         f"does not authorise {OUR_IP}: fail"),
        ("spf", {"example.com": {"TXT": ['"v=spf1 -all"', '"v=spf1 ~all"']}}, "failed", "has 2 SPF records"),
        ("spf", ELEVEN_INCLUDES,
         "failed", "more than 10 DNS lookups"),
        ("dmarc", {}, "pending", "no DMARC record at _dmarc.example.com"),
        ("dmarc", {"_dmarc.example.com": {"TXT": ['"v=DMARC1; p=maybe"']}}, "failed", "no valid p="),
        ("return_path", {"bounces.example.com": {"MX": ["10 elsewhere.example."]}}, "failed",
         "bounces.example.com points at elsewhere.example, not at relay.test"),
    ],
)  # fmt: skip
async def test_wrong_records_fail_with_a_hint(relay_key, dns_server, check, zone, status, hint):
    relay, key = relay_key
    _, domain = await call(relay, "POST", "/v1/domains", key, json={"domain": "example.com"})
    dns_server.zone.update(zone)
    _, checked = await call(relay, "POST", f"/v1/domains/{domain['id']}/verify", key)
    assert checked["checks"][check]["status"] == status, checked["checks"][check]
    assert hint in checked["checks"][check]["hint"]
    assert checked["status"] != "verified"


async def test_rotation_publishes_alongside_then_switches(relay_key, dns_server, sink):
    relay, key = relay_key
    _, domain = await call(relay, "POST", "/v1/domains", key, json={"domain": "example.com"})
    publish(dns_server, domain["records"])
    await call(relay, "POST", f"/v1/domains/{domain['id']}/verify", key)
    status, rotated = await call(relay, "POST", f"/v1/domains/{domain['id']}/rotate-dkim", key)
    assert status == 200 and [(k["selector"], k["state"]) for k in rotated["dkim"]] == [("s1", "active"),
                                                                                        ("s1b", "pending")]  # fmt: skip
    new = next(r for r in rotated["records"] if r["name"] == "s1b._domainkey.example.com")
    _, checked = await call(relay, "POST", f"/v1/domains/{domain['id']}/verify", key)
    assert checked["checks"]["dkim_next"]["status"] == "pending"  # not published yet: s1 still signs
    assert [k["state"] for k in checked["dkim"]] == ["active", "pending"]
    publish(dns_server, [new])
    _, checked = await call(relay, "POST", f"/v1/domains/{domain['id']}/verify", key)
    assert [(k["selector"], k["state"]) for k in checked["dkim"]] == [("s1b", "active"), ("s1", "retired")]
    await send_http(relay, key, "app@example.com")
    (received,) = await sink.handler.wait_for(1)
    assert b"s=s1b" in received.data[:800] and await asyncio.to_thread(verifier(dns_server), received.data)


async def test_api_errors_and_removal(relay_key):
    relay, key = relay_key
    for body, code in (({"domain": "not a domain"}, 400), ({}, 400)):
        status, error = await call(relay, "POST", "/v1/domains", key, json=body)
        assert status == code and error["error"]["field"] == "domain"
    _, domain = await call(relay, "POST", "/v1/domains", key, json={"domain": "example.com"})
    status, error = await call(relay, "POST", "/v1/domains", key, json={"domain": "EXAMPLE.com"})
    assert status == 409
    status, listed = await call(relay, "GET", "/v1/domains", key)
    assert [d["domain"] for d in listed["data"]] == ["example.com"]
    assert (await call(relay, "DELETE", f"/v1/domains/{domain['id']}", key))[0] == 200
    assert (await call(relay, "GET", f"/v1/domains/{domain['id']}", key))[0] == 404
    assert not (relay.config.server.data_dir / "dkim" / "example.com.s1.pem").exists()
    _, send_only = await relay.store.create_api_key("s", ("send",))
    assert (await call(relay, "GET", "/v1/domains", send_only))[0] == 403


async def test_cli_add_and_verify(tmp_path, dns_server):
    config = write_toml(tmp_path / "relay.toml", config_dict(tmp_path / "data", **sections(dns_server)))
    added = await asyncio.to_thread(run_cli, "domains", "add", "example.com", "--json", config=config)
    assert added.returncode == 0, added.stderr
    domain = json.loads(added.stdout)
    publish(dns_server, domain["records"])
    # The DNS server answers from this test's event loop: run the CLI in a thread so the loop keeps serving.
    verified = await asyncio.to_thread(run_cli, "domains", "verify", "example.com", config=config)
    assert verified.returncode == 0, verified.stderr
    assert "example.com  verified" in verified.stdout and "dkim         verified" in verified.stdout
    listed = await asyncio.to_thread(run_cli, "domains", "list", config=config)
    assert "verified" in listed.stdout
    rotated = await asyncio.to_thread(run_cli, "dkim", "rotate", "example.com", "--json", config=config)
    assert [k["state"] for k in json.loads(rotated.stdout)["dkim"]] == ["active", "pending"]
    removed = await asyncio.to_thread(run_cli, "domains", "remove", "example.com", config=config)
    assert removed.returncode == 0 and "removed" in removed.stdout
