"""DKIM: signatures made through OpenSSL verify with dkimpy against the key served by a DNS server."""

from __future__ import annotations

import asyncio
import hashlib
import smtplib
import threading

import aiohttp
import dkim
import dns.resolver
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from relay import config as config_mod
from relay import dkim as relay_dkim
from relay.config import ConfigError
from relay.dkim import (
    SIGNED_AT_ONCE,
    SIGNED_IN_A_THREAD,
    DomainKey,
    Signer,
    _dkimpy_rsa_sign,
    _openssl_rsa_sign,
    public_key_record,
    sign_each,
    signed_by,
)
from relay.keys import create_api_key
from relay.message import NewMessage
from relay.store.queue import Selection
from tests.conftest import config_dict, wait_for_states

RAW = (
    b"From: Shop <news@example.com>\r\nTo: user@example.org\r\nSubject: Sale\r\n"
    b"Date: Fri, 15 Jan 2027 08:00:00 +0000\r\nMessage-ID: <m1@example.com>\r\n\r\nBig  sale   today.\r\n"
)


def new_key(tmp_path, name: str = "example.com.pem"):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    path = tmp_path / name
    path.write_bytes(pem)
    path.chmod(0o600)
    return path, pem


def publish(dns_server, selector: str, domain: str, pem: bytes) -> None:
    record = public_key_record(pem)
    chunks = " ".join(f'"{record[i : i + 250]}"' for i in range(0, len(record), 250))
    dns_server.zone[f"{selector}._domainkey.{domain}"] = {"TXT": [chunks]}


def verifier(dns_server):
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [dns.nameserver.Do53Nameserver("127.0.0.1", dns_server.port)]

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        answer = resolver.resolve(name.decode().rstrip("."), "TXT")
        return b"".join(b"".join(r.strings) for r in answer)

    return lambda message: dkim.verify(message, dnsfunc=dnsfunc)


def test_openssl_signs_exactly_like_dkimpy(tmp_path):
    _, pem = new_key(tmp_path)
    parsed = dkim.crypto.parse_pem_private_key(pem)
    digest = dkim.HashThrough(hashlib.sha256())  # what dkimpy hands the RSA step
    digest.update(b"the canonicalized headers")
    assert _openssl_rsa_sign(digest, parsed) == _dkimpy_rsa_sign(digest, parsed)
    assert dkim.RSASSA_PKCS1_v1_5_sign is _openssl_rsa_sign


async def test_signatures_verify_with_dkimpy_against_the_dns_key(tmp_path, dns_server):
    _, pem = new_key(tmp_path)
    publish(dns_server, "s1", "example.com", pem)
    signer = Signer({"example.com": DomainKey("example.com", "s1", pem)})
    from relay.dkim_sign import private_key

    before = private_key.cache_info()
    signed = signer.sign(RAW)
    after = private_key.cache_info()
    assert after.hits + after.misses > before.hits + before.misses  # relay's signer signed it, through OpenSSL
    assert signed.startswith(b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.com;")
    assert await asyncio.to_thread(verifier(dns_server), signed)
    tampered = signed.replace(b"Big  sale", b"Huge sale")
    assert not await asyncio.to_thread(verifier(dns_server), tampered)
    other = RAW.replace(b"news@example.com", b"news@elsewhere.example")
    assert signer.sign(other) == other  # no key for that domain: left alone


async def signing_relay(relay_factory, sink, dns_server, tmp_path, **dkim):
    """An in-process relay delivering to the sink that signs example.com's mail with selector relay1 (the key
    published in the DNS fixture); ``dkim``: more of the [dkim] section. Returns the relay and the PEM."""
    path, pem = new_key(tmp_path)
    publish(dns_server, "relay1", "example.com", pem)
    domains = {"example.com": {"selector": "relay1", "private_key": str(path)}}
    relay = await relay_factory(delivery={"smarthost": sink.address}, dkim={"domains": domains, **dkim})
    return relay, pem


async def submit(relay, recipients: list[str]) -> str:
    """RAW sent through relay's SMTP port; the id relay gave it."""

    def send() -> bytes:
        with smtplib.SMTP("127.0.0.1", relay.smtp_addresses[0][1], timeout=10) as smtp:
            smtp.ehlo()
            smtp.mail("news@example.com")
            for r in recipients:
                smtp.rcpt(r)
            code, text = smtp.data(RAW)
            assert code == 250, text
            return text

    return (await asyncio.to_thread(send)).decode().rsplit(" ", 1)[1]


async def test_relay_signs_smtp_and_http_mail_once(relay_factory, sink, dns_server, tmp_path):
    relay, _ = await signing_relay(relay_factory, sink, dns_server, tmp_path)
    await submit(relay, ["a@example.org", "b@example.net"])
    _, key = await create_api_key(relay.store.keys, relay.store.clock, "app", ("send",))
    host, port = relay.http_address
    payload = {"from": "news@example.com", "to": "c@example.org", "subject": "via http", "html": "<p>hi</p>"}
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"http://{host}:{port}/v1/messages", json=payload, headers={"Authorization": f"Bearer {key}"}
        ) as resp:
            assert resp.status == 202
    received = await sink.handler.wait_for(3)
    verify = verifier(dns_server)
    for m in received:
        assert m.data.count(b"DKIM-Signature:") == 1
        assert await asyncio.to_thread(verify, m.data), m.data[:600]
    smtp_copies = [m.data for m in received if b"Subject: Sale" in m.data]
    assert len(smtp_copies) == 2 and smtp_copies[0] == smtp_copies[1]  # one signature for both recipients


def test_bad_dkim_config_is_refused(tmp_path):
    missing = {"domains": {"example.com": {"selector": "s1", "private_key": str(tmp_path / "nope.pem")}}}
    with pytest.raises(ConfigError, match=r'\[dkim.domains."example.com"\] private_key: cannot read'):
        config_mod.from_dict(config_dict(tmp_path, dkim=missing), environ={})
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a key")
    bad = {"domains": {"example.com": {"selector": "s1", "private_key": str(garbage)}}}
    with pytest.raises(ConfigError, match="not an unencrypted PEM private key"):
        config_mod.from_dict(config_dict(tmp_path, dkim=bad), environ={})
    with pytest.raises(ConfigError, match="selector must be a DNS label"):
        config_mod.from_dict(
            config_dict(tmp_path, dkim={"domains": {"example.com": {"selector": "a b", "private_key": "x"}}}),
            environ={},
        )


def test_a_message_with_the_same_key_s_signature_on_top_is_not_signed_twice(tmp_path):
    """What a relay that signed at acceptance left in its queue: its signature is the first field."""
    _, pem = new_key(tmp_path)
    signer = Signer({"example.com": DomainKey("example.com", "s1", pem)})
    signed = signer.sign(RAW)
    key = signer.keys["example.com"]
    assert signed_by(signed, key) and not signed_by(RAW, key)
    assert b" s=s1;" not in signed.split(b"\r\n")[0]  # folded: s= is on a continuation line
    assert signer.sign(signed) == signed
    # Another selector or domain is another key: it signs (a rotation while the message waited).
    assert not signed_by(signed, DomainKey("example.com", "s2", pem))
    assert not signed_by(signed, DomainKey("example.org", "s1", pem))
    rotated = Signer({"example.com": DomainKey("example.com", "s2", pem)}).sign(signed)
    assert rotated.count(b"DKIM-Signature:") == 2 and b"s=s2;" in rotated.split(b"\r\nDKIM-Signature:")[0]
    # Below another field (a client's own signature under relay's Received:), it is not relay's own.
    assert not signed_by(b"Received: from x\r\n" + signed, key)
    assert signer.sign(b"Received: from x\r\n" + signed).count(b"DKIM-Signature:") == 2
    # A field that only looks like it: another tag holding "d=example.com" is not d=.
    lookalike = b"DKIM-Signature: v=1; x=d=example.com; s=s1; b=\r\n" + RAW
    assert not signed_by(lookalike, key)


async def test_signing_many_lets_the_event_loop_turn_between_a_few():
    turns: list[str] = []

    class CountingSigner(Signer):
        def sign(self, raw: bytes) -> bytes:
            turns.append("signed")
            return b"S" + raw

    done = asyncio.Event()

    async def other_work() -> None:
        while not done.is_set():
            turns.append("other")
            await asyncio.sleep(0)

    other = asyncio.create_task(other_work())
    await asyncio.sleep(0)  # it has begun
    signed = await sign_each(CountingSigner({}), [b"%d" % n for n in range(10)])
    done.set()
    await other
    assert signed == [b"S%d" % n for n in range(10)]
    runs = "".join("s" if t == "signed" else "o" for t in turns).split("o")
    assert max(len(run) for run in runs) == SIGNED_AT_ONCE  # never more in one turn


async def test_a_big_message_is_signed_in_a_thread_and_a_failure_is_none(caplog):
    threads: list[int] = []

    class RecordingSigner(Signer):
        def sign(self, raw: bytes) -> bytes:
            threads.append(threading.get_ident())
            if raw == b"bad":
                raise ValueError("cannot")
            return b"S" + raw[:1]

    big = b"x" * SIGNED_IN_A_THREAD
    assert await sign_each(RecordingSigner({}), [b"a", big, b"bad", b"b"]) == [b"Sa", b"Sx", None, b"Sb"]
    loop_thread = threading.get_ident()
    assert [t == loop_thread for t in threads] == [True, False, True, True]
    assert "could not DKIM-sign a message" in caplog.text


async def test_the_stored_message_is_as_accepted_and_what_leaves_is_signed(relay_factory, sink, dns_server, tmp_path):
    """Delivery signs (the store keeps the message as accepted); a message queued already signed by the same
    key, as a relay that signed at acceptance queued it, leaves with that one signature."""
    relay, pem = await signing_relay(relay_factory, sink, dns_server, tmp_path)
    message_id = await submit(relay, ["a@example.org"])
    (received,) = await sink.handler.wait_for(1)
    assert received.data.startswith(b"DKIM-Signature:") and await asyncio.to_thread(verifier(dns_server), received.data)
    stored = await relay.store.bodies.raw_message(message_id)
    assert stored is not None and b"DKIM-Signature" not in stored
    assert received.data.endswith(stored) and received.data.count(b"DKIM-Signature:") == 1

    old = Signer({"example.com": DomainKey("example.com", "relay1", pem)}).sign(b"Received: by relay\r\n" + RAW)
    await relay.store.queue.enqueue(NewMessage("news@example.com", ("b@example.org",), old, "smtp"))
    relay.engine.wake()
    second = (await sink.handler.wait_for(2))[1]
    assert second.data == old


async def test_a_message_deferred_then_sent_again_carries_one_signature_made_for_that_attempt(
    relay_factory, sink, dns_server, tmp_path
):
    relay, _ = await signing_relay(relay_factory, sink, dns_server, tmp_path)
    sink.handler.data_reply = "451 4.3.0 not now"
    await wait_for_states(relay.store, await submit(relay, ["a@example.org"]), ["deferred"])
    sink.handler.data_reply = "250 2.0.0 Ok: sunk"
    assert await relay.store.queue.retry_now(Selection()) == 1
    relay.engine.wake()
    (received,) = await sink.handler.wait_for(1)
    assert received.data.count(b"DKIM-Signature:") == 1
    assert await asyncio.to_thread(verifier(dns_server), received.data)


async def test_a_message_that_cannot_be_signed_is_deferred_not_sent_unsigned(
    relay_factory, sink, dns_server, tmp_path, monkeypatch, caplog
):
    relay, _ = await signing_relay(relay_factory, sink, dns_server, tmp_path)

    def broken(*args: object, **kwargs: object) -> bytes:
        raise RuntimeError("the signer broke")

    monkeypatch.setattr(relay_dkim, "sign_relaxed", broken)
    (status,) = await wait_for_states(relay.store, await submit(relay, ["a@example.org"]), ["deferred"])
    assert "could not be DKIM-signed" in (status.last_response or "")
    assert "the signer broke" in caplog.text
    assert sink.handler.received == []


async def test_with_sign_at_acceptance_the_stored_message_is_signed_and_leaves_with_that_one_signature(
    relay_factory, sink, dns_server, tmp_path
):
    relay, _ = await signing_relay(relay_factory, sink, dns_server, tmp_path, sign_at="acceptance")
    message_id = await submit(relay, ["a@example.org", "b@example.net"])
    received = await sink.handler.wait_for(2)
    stored = await relay.store.bodies.raw_message(message_id)
    assert stored is not None and stored.startswith(b"DKIM-Signature:")
    assert [m.data for m in received] == [stored, stored]
    assert await asyncio.to_thread(verifier(dns_server), stored)
