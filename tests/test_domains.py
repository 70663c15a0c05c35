"""Sending domains against a real DNS server on loopback: records, live checks with hints, signing, refusal."""

from __future__ import annotations

import asyncio
import json
import smtplib
import time

import aiohttp
import pytest

from relay import cli
from relay import domains as domains_mod
from relay.app import DOMAINS_CHECK_SECONDS, DOMAINS_REFRESH_SECONDS
from relay.domains import DkimKey, explain_outbound, route_source
from relay.keys import create_api_key
from tests.conftest import STORE_BACKENDS, config_dict, run_cli, write_toml
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
        async with s.request(
            method, f"http://{host}:{port}{path}", headers={"Authorization": f"Bearer {key}"}, **kwargs
        ) as r:
            return r.status, await r.json()


@pytest.fixture
async def relay_key(relay_factory, dns_server, sink):
    relay = await relay_factory(delivery={"smarthost": sink.address}, **sections(dns_server))
    _, key = await create_api_key(relay.store.keys, relay.store.clock, "t", ("admin",))
    return relay, key


def send_http(relay, key, sender: str):
    return call(
        relay,
        "POST",
        "/v1/messages",
        key,
        json={"from": sender, "to": "bob@one.example", "subject": "s", "text": "hello"},
    )


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
    assert records["return_path"] == {
        **records["return_path"],
        "type": "MX",
        "name": "bounces.example.com",
        "value": "10 relay.test.",
    }
    (stored,) = (await relay.store.domains.domain("example.com")).keys
    assert stored.sealed is not None and stored.path is None  # in the store, sealed; no file
    assert not (relay.config.server.data_dir / "dkim").exists()

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
        "dkim": "verified",
        "spf": "verified",
        "dmarc": "verified",
        "return_path": "verified",
    }
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
        (
            "dkim",
            {"s1._domainkey.example.com": {"TXT": [txt(OTHER_KEY)]}},
            "failed",
            "TXT found at s1._domainkey.example.com but its p= value does not match",
        ),
        (
            "spf",
            {"example.com": {"TXT": ['"v=spf1 ip4:198.51.100.7 -all"']}},
            "failed",
            f"does not authorise {OUR_IP}: fail",
        ),
        ("spf", {"example.com": {"TXT": ['"v=spf1 -all"', '"v=spf1 ~all"']}}, "failed", "has 2 SPF records"),
        ("spf", ELEVEN_INCLUDES, "failed", "more than 10 DNS lookups"),
        ("dmarc", {}, "pending", "no DMARC record at _dmarc.example.com"),
        ("dmarc", {"_dmarc.example.com": {"TXT": ['"v=DMARC1; p=maybe"']}}, "failed", "no valid p="),
        (
            "return_path",
            {"bounces.example.com": {"MX": ["10 elsewhere.example."]}},
            "failed",
            "bounces.example.com points at elsewhere.example, not at relay.test",
        ),
    ],
)
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
    assert status == 200 and [(k["selector"], k["state"]) for k in rotated["dkim"]] == [
        ("s1", "active"),
        ("s1b", "pending"),
    ]
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
    assert await relay.store.domains.domain(domain["id"]) is None
    _, send_only = await create_api_key(relay.store.keys, relay.store.clock, "s", ("send",))
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


# -- the addresses relay sends from, without [domains] outbound_ips ------------------------------

PUBLIC_IP = "1.2.3.4"  # what the DNS fixture says relay's hostname is; no packet ever goes anywhere


@pytest.mark.parametrize(
    ("sources", "named", "ips", "says"),
    [
        (["1.2.3.4", None], [], ("1.2.3.4",), "relay sends from 1.2.3.4 (the source address of its route"),
        (
            ["10.0.0.5", None],
            ["1.2.3.4", "10.0.0.5"],
            ("1.2.3.4",),
            "relay sends from 10.0.0.5, a private address (behind NAT?), so the record uses the address of "
            "[server] hostname relay.test, 1.2.3.4: check that",
        ),
        (["100.64.1.1", "fd00::2"], ["2a00:1450::1"], ("2a00:1450::1",), "100.64.1.1, a carrier-grade NAT address"),
        (["10.0.0.5"], ["192.168.1.1"], (), "relay cannot know the public address receivers see"),
        (["127.0.0.1"], [], (), "127.0.0.1, a loopback address (behind NAT?): relay cannot know"),
        ([None, None], ["1.2.3.4"], (), "relay found no route to the internet"),
    ],
)
def test_outbound_addresses_are_explained(sources, named, ips, says):
    found, note = explain_outbound(sources, named, "relay.test")
    assert found == ips and says in note, note
    assert ("set [domains] outbound_ips" in note) == (not ips or "NAT" in note)


def test_the_route_probe_reads_the_source_address_of_a_route():
    assert route_source("127.0.0.1") == "127.0.0.1"
    assert route_source("not an address") is None


def unconfigured(dns_server, **extra):
    """The example config's [domains]: verification required, no outbound_ips, no smarthost."""
    return dict(
        dns={"nameservers": [f"127.0.0.1:{dns_server.port}"], "timeout": "2s"},
        domains={"require_verified_domain": True, "selector": "s1"},
        inbound={"bounce_domains": ["bounces.example.com"]},
        **extra,
    )


@pytest.fixture
def loopback_probe(monkeypatch):
    """The route probe aims at loopback: its source address is 127.0.0.1, as behind NAT, a private one."""
    monkeypatch.setattr(domains_mod, "PROBE_TARGETS", ("127.0.0.1",))


async def test_behind_nat_the_hostname_address_is_listed_and_the_domain_verifies(
    relay_factory, dns_server, loopback_probe
):
    """Before: without outbound_ips the SPF record was "v=spf1 ~all" and SPF stayed pending: nothing could
    ever be sent with require_verified_domain = true."""
    dns_server.zone["relay.test"] = {"A": [PUBLIC_IP]}
    relay = await relay_factory(**unconfigured(dns_server))
    _, key = await create_api_key(relay.store.keys, relay.store.clock, "t", ("admin",))
    status, domain = await call(relay, "POST", "/v1/domains", key, json={"domain": "example.com"})
    assert status == 201
    spf_record = next(r for r in domain["records"] if r["purpose"].startswith("spf"))
    assert spf_record["value"] == f"v=spf1 ip4:{PUBLIC_IP} ~all"
    assert "relay sends from 127.0.0.1, a loopback address (behind NAT?)" in spf_record["purpose"]
    assert domain["outbound"]["ips"] == [PUBLIC_IP] and "[server] hostname relay.test" in domain["outbound"]["note"]
    publish(dns_server, domain["records"])
    status, checked = await call(relay, "POST", f"/v1/domains/{domain['id']}/verify", key)
    assert checked["checks"]["spf"] == {"status": "verified", "hint": f"SPF passes for {PUBLIC_IP}"}
    assert checked["status"] == "verified", checked["checks"]
    status, sent = await send_http(relay, key, "app@example.com")
    assert status == 202, sent


async def test_when_relay_cannot_know_its_address_it_says_so(relay_factory, dns_server, loopback_probe):
    dns_server.zone["relay.test"] = {"A": ["10.1.2.3"]}  # a private address: no help
    relay = await relay_factory(**unconfigured(dns_server))
    _, key = await create_api_key(relay.store.keys, relay.store.clock, "t", ("admin",))
    _, domain = await call(relay, "POST", "/v1/domains", key, json={"domain": "example.com"})
    status, shown = await call(relay, "GET", f"/v1/domains/{domain['id']}", key)
    assert status == 200
    spf_record = next(r for r in shown["records"] if r["purpose"].startswith("spf"))
    assert spf_record["value"] == "v=spf1 ip4:<the public address relay sends from> ~all"
    assert spf_record["purpose"].startswith("spf: replace the placeholder before publishing; relay sends from 127.0.0")
    assert "relay cannot know the public address receivers see" in spf_record["purpose"]
    assert shown["outbound"]["ips"] == [] and "set [domains] outbound_ips" in shown["outbound"]["note"]
    dns_server.zone["example.com"] = {"TXT": ['"v=spf1 ~all"']}
    _, checked = await call(relay, "POST", f"/v1/domains/{domain['id']}/verify", key)
    assert checked["checks"]["spf"]["status"] == "pending"
    assert checked["checks"]["spf"]["hint"].startswith("cannot check SPF: relay sends from 127.0.0.1")


async def test_through_a_smarthost_spf_names_its_provider(relay_factory, dns_server, sink):
    relay = await relay_factory(delivery={"smarthost": sink.address}, **unconfigured(dns_server))
    _, key = await create_api_key(relay.store.keys, relay.store.clock, "t", ("admin",))
    _, domain = await call(relay, "POST", "/v1/domains", key, json={"domain": "example.com"})
    spf_record = next(r for r in domain["records"] if r["purpose"].startswith("spf"))
    assert spf_record["value"] == "v=spf1 include:<your smarthost provider's SPF domain> ~all"
    assert f"relay delivers through the smarthost {sink.address}" in spf_record["purpose"]
    assert "set [domains] spf_include" in spf_record["purpose"]
    dns_server.zone["example.com"] = {"TXT": ['"v=spf1 mx ~all"']}
    _, checked = await call(relay, "POST", f"/v1/domains/{domain['id']}/verify", key)
    assert checked["checks"]["spf"]["status"] == "pending" and "smarthost" in checked["checks"]["spf"]["hint"]


async def test_through_a_smarthost_with_spf_include_the_domain_verifies(relay_factory, dns_server, sink):
    extra = unconfigured(dns_server)
    extra["domains"]["spf_include"] = "_spf.provider.example"
    relay = await relay_factory(delivery={"smarthost": sink.address}, **extra)
    _, key = await create_api_key(relay.store.keys, relay.store.clock, "t", ("admin",))
    _, domain = await call(relay, "POST", "/v1/domains", key, json={"domain": "example.com"})
    spf_record = next(r for r in domain["records"] if r["purpose"].startswith("spf"))
    assert spf_record["value"] == "v=spf1 include:_spf.provider.example ~all"
    dns_server.zone["example.com"] = {"TXT": ['"v=spf1 include:_spf.other.example ~all"']}
    _, checked = await call(relay, "POST", f"/v1/domains/{domain['id']}/verify", key)
    assert checked["checks"]["spf"] == {
        "status": "failed",
        "hint": "SPF at example.com does not include _spf.provider.example; add include:_spf.provider.example",
    }
    dns_server.zone.pop("example.com")
    publish(dns_server, domain["records"])
    _, checked = await call(relay, "POST", f"/v1/domains/{domain['id']}/verify", key)
    assert checked["status"] == "verified", checked["checks"]
    status, _ = await send_http(relay, key, "app@example.com")
    assert status == 202
    await sink.handler.wait_for(1)


async def test_cli_show_says_when_relay_cannot_know(tmp_path, dns_server, loopback_probe, capsys):
    config = write_toml(tmp_path / "relay.toml", config_dict(tmp_path / "data", **unconfigured(dns_server)))
    # In this process (the probe is aimed at loopback), in a thread: the DNS fixture answers from this loop.
    assert await asyncio.to_thread(cli.main, ["domains", "add", "example.com", "--config", str(config)]) == 0
    capsys.readouterr()
    assert await asyncio.to_thread(cli.main, ["domains", "show", "example.com", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "sending from: unknown (relay sends from 127.0.0.1, a loopback address (behind NAT?)" in out
    assert "v=spf1 ip4:<the public address relay sends from> ~all" in out
    assert "(spf: replace the placeholder before publishing;" in out


# -- a change made by another process (the CLI, an acceptor, another node) --------------------------


@pytest.fixture(params=STORE_BACKENDS)
def backend(request):
    return request.param


async def moved(count, since: int, tries: int = 300) -> bool:
    """Whether ``count`` has moved past ``since``; PostgreSQL: once the NOTIFY has come (a few ms)."""
    for _ in range(tries):
        if count() != since:
            return True
        await asyncio.sleep(0.01)
    return False


async def settled(count) -> int:
    """The count once no notification has come for 0.2 s (PostgreSQL delivers them a little later)."""
    value = count()
    while await moved(count, value, tries=20):
        value = count()
    return value


async def test_every_change_to_the_domains_moves_the_count_another_process_sees(store_factory, backend):
    """A second store on the same database stands for another process or node."""
    first = store_factory(backend=backend)
    second = store_factory(backend=backend, restart=first)
    count = first.domains.changes()
    key = DkimKey("s1", "active", 0.0, "v=DKIM1; k=rsa; p=AAAA", b"sealed")
    other = await second.domains.create_domain("dom_0", "example.net", key)
    for _ in range(100):  # PostgreSQL: the listening connection is made in the background; until it listens,
        since = count()  # a notification is missed (a running relay reloads every 30 s regardless)
        await second.domains.record_domain_checks(other, {}, None)
        if await moved(count, since, tries=10):
            break
    else:
        raise AssertionError("the count never moved")

    async def moves(change) -> object:
        since = await settled(count)
        result = await change
        assert await moved(count, since), f"{change} did not move the count"
        return result

    domain = await moves(second.domains.create_domain("dom_1", "example.com", key))
    await moves(second.domains.add_dkim_key("dom_1", DkimKey("s2", "pending", 1.0, "v=DKIM1; k=rsa; p=BBBB", b"x")))
    verified = {"status": domains_mod.VERIFIED, "hint": ""}
    await moves(second.domains.record_domain_checks(domain, {"dkim": verified, "spf": verified}, "s2"))
    lost = await moves(second.secrets.forget_sealed())  # the store key that opened them is lost
    assert lost == [("dom_0", "s1"), ("dom_1", "s1"), ("dom_1", "s2")]
    await moves(second.domains.delete_domain("example.com"))

    since = await settled(count)
    assert [d.name for d in await second.domains.list_all()] == ["example.net"]
    assert await second.domains.domain("example.com") is None
    assert await second.domains.delete_domain("example.com") is None  # nothing there: nothing changed
    assert not await moved(count, since)


async def test_a_domain_the_cli_verifies_is_sendable_from_a_running_relay_within_a_second(
    relay_key, dns_server, sink, tmp_path
):
    """`relay domains add` and `verify` run in processes of their own; the running relay refused the domain,
    and takes mail from it, signed with the new key, once it has read the change (DOMAINS_CHECK_SECONDS), not
    after its 30-second reload."""
    relay, key = relay_key
    status, error = await send_http(relay, key, "app@example.com")
    assert status == 422 and error["error"]["code"] == "domain_not_verified"
    config = write_toml(tmp_path / "cli.toml", config_dict(relay.config.server.data_dir, **sections(dns_server)))
    added = await asyncio.to_thread(run_cli, "domains", "add", "example.com", "--json", config=config)
    assert added.returncode == 0, added.stderr
    publish(dns_server, json.loads(added.stdout)["records"])
    verified = await asyncio.to_thread(run_cli, "domains", "verify", "example.com", config=config)
    assert verified.returncode == 0 and "example.com  verified" in verified.stdout, verified.stdout
    began = time.monotonic()
    while (status := (await send_http(relay, key, "App <app@example.com>"))[0]) == 422:
        assert time.monotonic() - began < 10 * DOMAINS_CHECK_SECONDS, "the running relay never saw the change"
        await asyncio.sleep(0.05)
    assert status == 202 and time.monotonic() - began < DOMAINS_REFRESH_SECONDS / 3
    (received,) = await sink.handler.wait_for(1)
    assert received.data.startswith(b"DKIM-Signature:") and b"d=example.com" in received.data[:600]
    assert await asyncio.to_thread(verifier(dns_server), received.data)
