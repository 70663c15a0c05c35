"""Sending domains: DKIM keys, the DNS records to publish, and live checks of what the world sees.

A domain is verified when its DKIM key is published as generated and its SPF
record passes for every outbound address relay sends from; DMARC and the
return-path record are checked and reported too, with a hint of what to fix.
Record building is pure; the checks query DNS (dnspython, and pyspf for SPF,
both through the configured resolvers).
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import os
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import dns.asyncresolver
import dns.exception
import dns.resolver
import spf
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from relay.dkim import DomainKey, Signer, public_key_record
from relay.message import UnreadableFrom, from_domain

VERIFIED, PENDING, FAILED = "verified", "pending", "failed"
CHECKS = ("dkim", "spf", "dmarc", "return_path")
REQUIRED = ("dkim", "spf")  # what "verified" means for the domain


@dataclasses.dataclass(frozen=True)
class DkimKey:
    selector: str
    path: Path
    state: str  # active (signs), pending (published alongside, waiting to be verified), retired
    created_at: float


@dataclasses.dataclass(frozen=True)
class Domain:
    id: str
    name: str
    created_at: float
    keys: tuple[DkimKey, ...]
    checks: dict[str, dict[str, str]] | None = None  # check → {"status", "hint"}
    checked_at: float | None = None
    verified_at: float | None = None

    @property
    def active_key(self) -> DkimKey | None:
        return next((k for k in self.keys if k.state == "active"), None)

    @property
    def pending_key(self) -> DkimKey | None:
        return next((k for k in self.keys if k.state == "pending"), None)

    @property
    def status(self) -> str:
        if self.checks is None:
            return PENDING
        states = [self.checks.get(name, {}).get("status", PENDING) for name in REQUIRED]
        return VERIFIED if all(s == VERIFIED for s in states) else FAILED if FAILED in states else PENDING


@dataclasses.dataclass(frozen=True)
class DnsRecord:
    type: str
    name: str
    value: str
    purpose: str


@dataclasses.dataclass(frozen=True)
class Policy:
    """What the records and checks are measured against ([domains] and [inbound] settings)."""

    outbound_ips: tuple[str, ...] = ()
    spf_include: str = ""
    inbound_host: str = ""  # where bounce domains' MX must point
    bounce_domain_for: Callable[[str], str | None] = lambda domain: None


# -- keys and records (pure apart from writing the key file) -------------------------------------


def valid_domain(name: str) -> str | None:
    name = name.strip().rstrip(".").lower()
    label = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
    if len(name) > 253 or not re.fullmatch(rf"(?:{label}\.)+[a-z][a-z0-9-]{{0,61}}[a-z0-9]", name):
        return None
    return name


def new_selector(now: float, taken: Sequence[str], configured: str = "") -> str:
    """The configured selector, else ``rlyYYYYMM``; a letter is added if it is taken (rotation)."""
    base = configured or time.strftime("rly%Y%m", time.gmtime(now))
    if base not in taken:
        return base
    for suffix in "bcdefghijklmnopqrstuvwxyz":
        if base + suffix not in taken:
            return base + suffix
    raise ValueError("no free selector")


def generate_key(bits: int = 2048) -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())  # fmt: skip


def write_key(directory: Path, domain: str, selector: str, pem: bytes) -> Path:
    """The private key in ``directory`` with mode 0600 (the directory 0700)."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = directory / f"{domain}.{selector}.pem"
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    return path


def spf_value(policy: Policy) -> str:
    mechanisms = [f"ip6:{ip}" if ":" in ip else f"ip4:{ip}" for ip in policy.outbound_ips]
    if policy.spf_include:
        mechanisms.append(f"include:{policy.spf_include}")
    return "v=spf1 " + " ".join([*mechanisms, "~all"]) if mechanisms else "v=spf1 ~all"


def records(domain: Domain, policy: Policy) -> list[DnsRecord]:
    """What to publish: DKIM for the active (and any pending) key, SPF, DMARC, the return-path MX."""
    out = []
    for key in domain.keys:
        if key.state in ("active", "pending"):
            value = public_key_record(key.path.read_bytes())
            purpose = "dkim" if key.state == "active" else "dkim (next key: publish now, it takes over once seen)"
            out.append(DnsRecord("TXT", f"{key.selector}._domainkey.{domain.name}", value, purpose))
    out.append(DnsRecord("TXT", domain.name, spf_value(policy),
                         "spf (merge into an existing v=spf1 record: a domain has one)"))  # fmt: skip
    out.append(DnsRecord("TXT", f"_dmarc.{domain.name}", f"v=DMARC1; p=none; rua=mailto:dmarc-reports@{domain.name}",
                         "dmarc (p=none to start; move to quarantine/reject once reports look right)"))  # fmt: skip
    bounce = policy.bounce_domain_for(domain.name)
    if bounce and policy.inbound_host:
        out.append(DnsRecord("MX", bounce, f"10 {policy.inbound_host}.", "return_path (bounces come back here)"))
    return out


# -- live checks -----------------------------------------------------------------------------------


def _check(status: str, hint: str) -> dict[str, str]:
    return {"status": status, "hint": hint}


def dkim_tags(text: str) -> dict[str, str]:
    tags = {}
    for part in text.split(";"):
        name, eq, value = part.partition("=")
        if eq:
            tags[name.strip().lower()] = re.sub(r"\s+", "", value)
    return tags


class Checker:
    def __init__(self, resolver: dns.asyncresolver.Resolver, policy: Policy) -> None:
        self.resolver = resolver
        self.policy = policy

    async def _txt(self, name: str) -> list[str] | None:
        """TXT strings at ``name``; None when the name does not exist or has none. Raises on DNS trouble."""
        try:
            answer = await self.resolver.resolve(name, "TXT")
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return None
        return [b"".join(r.strings).decode("utf-8", "replace") for r in answer]

    async def run(self, domain: Domain) -> dict[str, dict[str, str]]:
        results = await asyncio.gather(self.dkim(domain), self.spf(domain), self.dmarc(domain),
                                       self.return_path(domain), return_exceptions=True)  # fmt: skip
        out = {}
        for name, result in zip(CHECKS, results, strict=True):
            if isinstance(result, BaseException):
                out[name] = _check(PENDING, f"DNS lookup failed ({type(result).__name__}: {result}); try again later")
            else:
                out[name] = result
        return out

    async def dkim(self, domain: Domain, key: DkimKey | None = None) -> dict[str, str]:
        key = key or domain.active_key
        if key is None:
            return _check(FAILED, "the domain has no active DKIM key")
        name = f"{key.selector}._domainkey.{domain.name}"
        texts = await self._txt(name)
        expected = dkim_tags(public_key_record(key.path.read_bytes()))["p"]
        if not texts:
            return _check(PENDING, f"no TXT record at {name} yet; publish the dkim record")
        for text in texts:
            tags = dkim_tags(text)
            if tags.get("p") == expected and tags.get("k", "rsa") == "rsa":
                return _check(VERIFIED, f"the key at {name} matches")
        if any("p" in dkim_tags(t) for t in texts):
            return _check(FAILED, f"TXT found at {name} but its p= value does not match this domain's key")
        return _check(FAILED, f"TXT found at {name} but it is not a DKIM key record (v=DKIM1; k=rsa; p=...)")

    async def spf(self, domain: Domain) -> dict[str, str]:
        texts = [t for t in (await self._txt(domain.name) or []) if t.lower().startswith("v=spf1")]
        if not texts:
            return _check(PENDING, f"no SPF record (TXT v=spf1) at {domain.name}; publish the spf record")
        if len(texts) > 1:
            return _check(FAILED, f"{domain.name} has {len(texts)} SPF records; receivers treat that as an error,"
                                  " merge them into one")  # fmt: skip
        if not self.policy.outbound_ips:
            return _check(PENDING, "set [domains] outbound_ips to the addresses relay sends from, to check SPF")
        failures = []
        for ip in self.policy.outbound_ips:
            result, explanation = await asyncio.to_thread(_spf_check, self.resolver, ip, domain.name)
            if result == "permerror" and "lookup" in explanation.lower():
                return _check(FAILED, f"the SPF record needs more than 10 DNS lookups ({explanation});"
                                      " receivers fail it: flatten includes")  # fmt: skip
            if result != "pass":
                failures.append(f"{ip}: {result}")
        if failures:
            wanted = spf_value(self.policy).removeprefix("v=spf1 ").removesuffix(" ~all")
            return _check(FAILED, f"SPF at {domain.name} does not authorise {', '.join(failures)}; add {wanted}")
        return _check(VERIFIED, f"SPF passes for {', '.join(self.policy.outbound_ips)}")

    async def dmarc(self, domain: Domain) -> dict[str, str]:
        name = f"_dmarc.{domain.name}"
        texts = [t for t in (await self._txt(name) or []) if t.lower().replace(" ", "").startswith("v=dmarc1")]
        if not texts:
            return _check(PENDING, f"no DMARC record at {name}; publish the dmarc record (p=none to start)")
        tags = dkim_tags(texts[0])
        policy = tags.get("p", "").lower()
        if policy not in ("none", "quarantine", "reject"):
            return _check(FAILED, f"the DMARC record at {name} has no valid p= (none, quarantine or reject)")
        aligned = "DKIM aligns (d=" + domain.name + ")"
        bounce = self.policy.bounce_domain_for(domain.name)
        if bounce and (bounce == domain.name or bounce.endswith("." + domain.name)):
            aligned += f", SPF aligns through the return path {bounce}"
        else:
            aligned += "; SPF does not align (return path outside the domain: add bounces." + domain.name + \
                       " to [inbound] bounce_domains)"  # fmt: skip
        return _check(VERIFIED, f"DMARC p={policy}; {aligned}")

    async def return_path(self, domain: Domain) -> dict[str, str]:
        bounce = self.policy.bounce_domain_for(domain.name)
        if not bounce or not (bounce == domain.name or bounce.endswith("." + domain.name)):
            return _check(PENDING, f"no bounce domain under {domain.name}: add bounces.{domain.name} to [inbound]"
                                   " bounce_domains for aligned return paths")  # fmt: skip
        target = (self.policy.inbound_host or "").rstrip(".").lower()
        try:
            answer = await self.resolver.resolve(bounce, "MX")
            hosts = [r.exchange.to_text(omit_final_dot=True).lower() for r in answer]
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            hosts = []
        if not hosts:
            try:
                cname = await self.resolver.resolve(bounce, "CNAME")
                hosts = [r.target.to_text(omit_final_dot=True).lower() for r in cname]
            except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
                return _check(PENDING, f"no MX record at {bounce}; publish the return_path record")
        if target in hosts:
            return _check(VERIFIED, f"{bounce} points at {target}")
        return _check(FAILED, f"{bounce} points at {', '.join(hosts)}, not at {target}")


# pyspf does its own lookups through a module-level function; route them through the caller's resolver.
_SPF_RESOLVER: contextvars.ContextVar[dns.resolver.Resolver | None] = contextvars.ContextVar("spf_resolver",
                                                                                            default=None)  # fmt: skip


def _spf_lookup(name: str, qtype: str, strict: bool = True, timeout: float = 20) -> list[tuple[Any, Any]]:
    resolver = _SPF_RESOLVER.get() or dns.resolver.get_default_resolver()
    out: list[tuple[Any, Any]] = []
    try:
        for rdata in resolver.resolve(name, qtype, lifetime=timeout):
            if qtype in ("A", "AAAA"):
                out.append(((name, qtype), rdata.address))
            elif qtype == "MX":
                out.append(((name, qtype), (rdata.preference, rdata.exchange)))
            elif qtype == "PTR":
                out.append(((name, qtype), rdata.target.to_text(True)))
            elif qtype in ("TXT", "SPF"):
                out.append(((name, qtype), rdata.strings))
    except (dns.resolver.NoAnswer, dns.resolver.NXDOMAIN):
        pass
    except (dns.exception.Timeout, dns.resolver.NoNameservers) as exc:
        raise spf.TempError(f"DNS {exc}") from None
    return out


spf.DNSLookup = _spf_lookup


def _spf_check(resolver: dns.asyncresolver.Resolver, ip: str, domain: str) -> tuple[str, str]:
    sync = dns.resolver.Resolver(configure=False)
    sync.nameservers = list(resolver.nameservers)
    sync.lifetime, sync.timeout = resolver.lifetime, resolver.timeout
    token = _SPF_RESOLVER.set(sync)
    try:
        result, explanation = spf.check2(i=ip, s=f"postmaster@{domain}", h=domain)
    finally:
        _SPF_RESOLVER.reset(token)
    return result, explanation


# -- what submission and signing use -------------------------------------------------------------


class SendingDomains:
    """The domains' active keys (into the signer) and which are verified (for submission), from the store."""

    def __init__(self, signer: Signer, require_verified: bool = False) -> None:
        self.signer = signer
        self.static_keys = dict(signer.keys)  # [dkim.domains] in the config: they take precedence
        self.require_verified = require_verified
        self.verified: set[str] = set()

    def load(self, domains: Sequence[Domain]) -> None:
        keys = {}
        for d in domains:
            key = d.active_key
            if key is not None:
                try:
                    keys[d.name] = DomainKey(d.name, key.selector, key.path.read_bytes())
                except OSError:
                    continue
        self.signer.keys = {**keys, **self.static_keys}
        self.verified = {d.name for d in domains if d.status == VERIFIED}

    def refusal(self, raw: bytes) -> str | None:
        """Why a message may not be sent from its From: domain (None: it may)."""
        if not self.require_verified:
            return None
        try:
            domain = from_domain(raw)
        except UnreadableFrom as exc:
            return str(exc)
        if domain in self.verified:
            return None
        return (
            f"{domain} is not a verified sending domain: add it (POST /v1/domains or relay domains add),"
            " publish the records it lists, then verify it"
        )


class DomainError(ValueError):
    """A domain request that cannot be done (bad name, already there, not found)."""


class Domains:
    """Adding, verifying, rotating and removing sending domains (the store holds them, files hold the keys)."""

    def __init__(self, store: Any, key_dir: Path, checker: Checker, sending: SendingDomains | None = None,
                 selector: str = "", bits: int = 2048) -> None:  # fmt: skip
        self.store = store
        self.key_dir = key_dir
        self.checker = checker
        self.sending = sending
        self.selector = selector
        self.bits = bits

    async def refresh(self) -> None:
        """Reload the keys and verified set submission and signing use (this process)."""
        if self.sending is not None:
            self.sending.load(await self.store.domains())

    async def add(self, name: str) -> Domain:
        domain = valid_domain(name)
        if domain is None:
            raise DomainError(f"not a domain name: {name!r}")
        if await self.store.domain(domain) is not None:
            raise DomainError(f"{domain} is already a sending domain")
        now = self.store.clock.now()
        selector = new_selector(now, [], self.selector)
        key = await self._new_key(domain, selector, "active", now)
        created = await self.store.create_domain(f"dom_{os.urandom(8).hex()}", domain, key)
        await self.refresh()
        return created

    async def _new_key(self, domain: str, selector: str, state: str, now: float) -> DkimKey:
        pem = await asyncio.to_thread(generate_key, self.bits)
        path = await asyncio.to_thread(write_key, self.key_dir, domain, selector, pem)
        return DkimKey(selector, path, state, now)

    async def get(self, ident: str) -> Domain:
        domain = await self.store.domain(ident)
        if domain is None:
            raise DomainError(f"no sending domain {ident}")
        return domain

    async def verify(self, ident: str) -> Domain:
        """Run every check now and store the result; a pending (rotated) key found published takes over."""
        domain = await self.get(ident)
        checks = await self.checker.run(domain)
        promote = None
        pending = domain.pending_key
        if pending is not None:
            next_key = await self.checker.dkim(domain, pending)
            if next_key["status"] == VERIFIED:
                promote = pending.selector
                checks["dkim"] = _check(VERIFIED, f"the new key {pending.selector} is published and now signs")
            else:
                checks["dkim_next"] = next_key
        updated = await self.store.record_domain_checks(domain, checks, promote)
        await self.refresh()
        return updated

    async def rotate(self, ident: str) -> Domain:
        """A new key under a new selector, published alongside the old; it signs once verify finds it."""
        domain = await self.get(ident)
        if domain.pending_key is not None:
            raise DomainError(
                f"{domain.name} already has a key waiting to be published ({domain.pending_key.selector})"
            )
        now = self.store.clock.now()
        selector = new_selector(now, [k.selector for k in domain.keys], self.selector)
        await self.store.add_dkim_key(domain.id, await self._new_key(domain.name, selector, "pending", now))
        return await self.get(domain.id)

    async def remove(self, ident: str) -> Domain:
        domain = await self.store.delete_domain(ident)
        if domain is None:
            raise DomainError(f"no sending domain {ident}")
        for key in domain.keys:
            key.path.unlink(missing_ok=True)
        await self.refresh()
        return domain
