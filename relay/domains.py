"""Sending domains: DKIM keys, the DNS records to publish, and live checks of what the world sees.

A domain is verified when its DKIM key is published as generated and its SPF
record passes for every outbound address relay sends from; DMARC and the
return-path record are checked and reported too, with a hint of what to fix.
Record building is pure; the checks query DNS (dnspython, and pyspf for SPF,
both through the configured resolvers).

The outbound addresses are ``[domains] outbound_ips`` when set; otherwise
relay finds them (:func:`discover`): the source address of its route to the
internet, and, when that is private (behind NAT), the public A/AAAA of
``[server] hostname``. Through a smarthost, receivers see the smarthost's
provider, which ``[domains] spf_include`` names. When relay cannot know, the
SPF record and check say so rather than suggest a record that authorises no one.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import ipaddress
import logging
import os
import re
import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from relay.clock import Clock
from relay.dkim import DomainKey, Signer, public_key_record
from relay.errors import RelayError
from relay.message import UnreadableFrom, from_domain, normalize_domain
from relay.secrets import Keyring, SecretsError, dkim_context

if TYPE_CHECKING:  # dnspython and pyspf are imported where used: only checking a domain's records needs them
    import dns.asyncresolver
    import dns.resolver

    from relay.store.protocols import DomainStore

log = logging.getLogger(__name__)

VERIFIED, PENDING, FAILED = "verified", "pending", "failed"
KEY_STATES = ("active", "pending", "retired")  # a DKIM key: signs, published and waiting, replaced
CHECKS = ("dkim", "spf", "dmarc", "return_path")
REQUIRED = ("dkim", "spf")  # what "verified" means for the domain


@dataclasses.dataclass(frozen=True)
class DkimKey:
    selector: str
    state: str  # active (signs), pending (published alongside, waiting to be verified), retired
    created_at: float
    public_key: str = ""  # the TXT record value; "" for a key still in its file (``path``)
    sealed: bytes | None = dataclasses.field(default=None, repr=False)  # the private key, sealed (relay.secrets)
    path: Path | None = None  # a key made before keys moved into the store: its file, until start-up moves it

    def record(self) -> str:
        """The TXT record value that publishes this key."""
        if self.public_key:
            return self.public_key
        if self.path is None:
            raise ValueError(f"the DKIM key {self.selector} has neither a public key nor a file")
        return public_key_record(self.path.read_bytes())


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

    outbound_ips: tuple[str, ...] = ()  # configured, or found by discover()
    spf_include: str = ""
    inbound_host: str = ""  # where bounce domains' MX must point
    bounce_domain_for: Callable[[str], str | None] = lambda domain: None
    hostname: str = ""  # [server] hostname: its A/AAAA stand in for relay's address behind NAT
    smarthost: str = ""  # "host:port" everything is relayed through ([delivery] smarthost or route "*")
    outbound_note: str = ""  # where outbound_ips come from, or why relay cannot know them (discover())


# -- keys and records (pure) ------------------------------------------------------------------------


def valid_domain(name: str) -> str | None:
    """``name`` as a sending domain is kept (lower case, A-labels for Unicode), or None if it is none."""
    name = normalize_domain(name)
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
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


SMARTHOST_PLACEHOLDER = "include:<your smarthost provider's SPF domain>"
ADDRESS_PLACEHOLDER = "ip4:<the public address relay sends from>"


def spf_value(policy: Policy) -> str:
    """The SPF record to publish. Never ``v=spf1 ~all`` (it authorises no one): when relay does not know
    what to authorise, a placeholder the purpose and the check explain stands in its place."""
    mechanisms = [f"ip6:{ip}" if ":" in ip else f"ip4:{ip}" for ip in policy.outbound_ips]
    if policy.spf_include:
        mechanisms.append(f"include:{policy.spf_include}")
    if not mechanisms:
        mechanisms.append(SMARTHOST_PLACEHOLDER if policy.smarthost else ADDRESS_PLACEHOLDER)
    return "v=spf1 " + " ".join([*mechanisms, "~all"])


def spf_purpose(policy: Policy) -> str:
    purpose = "spf (merge into an existing v=spf1 record: a domain has one)"
    if policy.outbound_ips or policy.spf_include:
        return f"{purpose}; {policy.outbound_note}" if policy.outbound_note else purpose
    return f"spf: replace the placeholder before publishing; {policy.outbound_note}"


# -- the addresses relay sends from --------------------------------------------------------------

# Any public addresses: connect() on a UDP socket picks the route and the source address and sends nothing.
PROBE_TARGETS: tuple[str, ...] = ("8.8.8.8", "2001:4860:4860::8888")


def route_source(target: str) -> str | None:
    """The source address of this host's route to ``target`` (None: no route). No packet is sent."""
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(target).version == 6 else socket.AF_INET
    except ValueError:
        return None  # not an address: never a name lookup
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.connect((target, 9))
            address: str = sock.getsockname()[0]
    except OSError:
        return None
    return address.split("%", 1)[0]  # an IPv6 scope (fe80::1%eth0)


def is_public(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_global
    except ValueError:
        return False


def _kind(address: str) -> str:
    ip = ipaddress.ip_address(address)
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip in ipaddress.ip_network("100.64.0.0/10"):
        return "a carrier-grade NAT address"
    return "a private address" if ip.is_private else "not a public address"


def _version(address: str) -> int:
    return 6 if ":" in address else 4


def explain_outbound(sources: Sequence[str | None], named: Sequence[str], hostname: str) -> tuple[tuple[str, ...], str]:
    """The public addresses relay sends from, and a sentence on how it knows or why it cannot. Pure.

    ``sources``: the source address of each route probed (None: no route); ``named``: the A/AAAA of
    ``hostname``. A public route source is what receivers see. A private one (behind NAT) tells nothing;
    then the hostname's public address of the same family is the best guess, and said to be one."""
    found: list[str] = []
    said: list[str] = []
    for source in dict.fromkeys(s for s in sources if s is not None):
        if is_public(source):
            found.append(source)
            said.append(f"relay sends from {source} (the source address of its route to the internet)")
            continue
        guess = [a for a in named if is_public(a) and _version(a) == _version(source) and a not in found]
        if guess:
            found.extend(guess)
            said.append(
                f"relay sends from {source}, {_kind(source)} (behind NAT?), so the record uses the address "
                f"of [server] hostname {hostname}, {', '.join(guess)}: check that receivers see mail come "
                "from it, or set [domains] outbound_ips"
            )
        else:
            said.append(
                f"relay sends from {source}, {_kind(source)} (behind NAT?): relay cannot know the public "
                f"address receivers see, and [server] hostname {hostname} has no public "
                f"{'AAAA' if _version(source) == 6 else 'A'} record to suggest one"
            )
    if not said:
        said.append("relay found no route to the internet from here, so it cannot know the address it sends from")
    if not found:
        said.append("set [domains] outbound_ips to the public address(es) receivers see, then verify")
    return tuple(found), "; ".join(said)


async def discover(
    policy: Policy, resolver: dns.asyncresolver.Resolver, probe_targets: Sequence[str] = PROBE_TARGETS
) -> Policy:
    """``policy`` with the outbound addresses filled in and explained (``outbound_note``)."""
    if policy.outbound_ips:
        return dataclasses.replace(policy, outbound_note="authorises [domains] outbound_ips")
    if policy.smarthost:
        return dataclasses.replace(policy, outbound_note=_smarthost_note(policy.smarthost, policy.spf_include))
    sources = [route_source(target) for target in probe_targets]
    named = await _host_addresses(resolver, policy.hostname) if policy.hostname else []
    found, note = explain_outbound(sources, named, policy.hostname)
    return dataclasses.replace(policy, outbound_ips=found, outbound_note=note)


def _smarthost_note(smarthost: str, spf_include: str) -> str:
    relayed = f"relay delivers through the smarthost {smarthost}"
    if spf_include:
        return f"{relayed}: include:{spf_include} authorises it"
    return (
        f"{relayed}: receivers see mail come from its provider's servers, not from relay; set [domains] "
        "spf_include to the SPF domain the provider documents (or outbound_ips to its sending addresses)"
    )


async def _host_addresses(resolver: dns.asyncresolver.Resolver, name: str) -> list[str]:
    import dns.exception

    found: list[str] = []
    for rdtype in ("A", "AAAA"):
        try:
            answer = await resolver.resolve(name, rdtype, search=False)
        except dns.exception.DNSException:
            continue
        found.extend(r.to_text() for r in answer)
    return found


def records(domain: Domain, policy: Policy) -> list[DnsRecord]:
    """What to publish: DKIM for the active (and any pending) key, SPF, DMARC, the return-path MX."""
    out = []
    for key in domain.keys:
        if key.state in ("active", "pending"):
            value = key.record()
            purpose = "dkim" if key.state == "active" else "dkim (next key: publish now, it takes over once seen)"
            out.append(DnsRecord("TXT", f"{key.selector}._domainkey.{domain.name}", value, purpose))
    out.append(DnsRecord("TXT", domain.name, spf_value(policy), spf_purpose(policy)))
    out.append(
        DnsRecord(
            "TXT",
            f"_dmarc.{domain.name}",
            f"v=DMARC1; p=none; rua=mailto:dmarc-reports@{domain.name}",
            "dmarc (p=none to start; move to quarantine/reject once reports look right)",
        )
    )
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
        import dns.resolver

        try:
            answer = await self.resolver.resolve(name, "TXT")
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return None
        return [b"".join(r.strings).decode("utf-8", "replace") for r in answer]

    async def run(self, domain: Domain) -> dict[str, dict[str, str]]:
        results = await asyncio.gather(
            self.dkim(domain), self.spf(domain), self.dmarc(domain), self.return_path(domain), return_exceptions=True
        )
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
        expected = dkim_tags(key.record())["p"]
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
            return _check(
                FAILED,
                f"{domain.name} has {len(texts)} SPF records; receivers treat that as an error, merge them into one",
            )
        if not self.policy.outbound_ips:
            return self._spf_without_addresses(domain, texts[0])
        failures = []
        for ip in self.policy.outbound_ips:
            result, explanation = await asyncio.to_thread(_spf_check, self.resolver, ip, domain.name)
            if result == "permerror" and "lookup" in explanation.lower():
                return _check(
                    FAILED,
                    f"the SPF record needs more than 10 DNS lookups ({explanation});"
                    " receivers fail it: flatten includes",
                )
            if result != "pass":
                failures.append(f"{ip}: {result}")
        if failures:
            wanted = spf_value(self.policy).removeprefix("v=spf1 ").removesuffix(" ~all")
            return _check(FAILED, f"SPF at {domain.name} does not authorise {', '.join(failures)}; add {wanted}")
        return _check(VERIFIED, f"SPF passes for {', '.join(self.policy.outbound_ips)}")

    def _spf_without_addresses(self, domain: Domain, record: str) -> dict[str, str]:
        """No address to evaluate: the configured include must be in the record; without one, relay cannot tell."""
        include = self.policy.spf_include
        if not include:
            return _check(PENDING, f"cannot check SPF: {self.policy.outbound_note}")
        terms = record.lower().split()
        if f"include:{include}".lower() in terms or f"redirect={include}".lower() in terms:
            return _check(VERIFIED, f"SPF at {domain.name} includes {include}")
        return _check(FAILED, f"SPF at {domain.name} does not include {include}; add include:{include}")

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
            aligned += (
                "; SPF does not align (return path outside the domain: add bounces."
                + domain.name
                + " to [inbound] bounce_domains)"
            )
        return _check(VERIFIED, f"DMARC p={policy}; {aligned}")

    async def return_path(self, domain: Domain) -> dict[str, str]:
        import dns.resolver

        bounce = self.policy.bounce_domain_for(domain.name)
        if not bounce or not (bounce == domain.name or bounce.endswith("." + domain.name)):
            return _check(
                PENDING,
                f"no bounce domain under {domain.name}: add bounces.{domain.name} to [inbound]"
                " bounce_domains for aligned return paths",
            )
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
_SPF_RESOLVER: contextvars.ContextVar[dns.resolver.Resolver | None] = contextvars.ContextVar(
    "spf_resolver", default=None
)


def _spf_lookup(name: str, qtype: str, strict: bool = True, timeout: float = 20) -> list[tuple[Any, Any]]:
    import dns.exception
    import dns.resolver
    import spf

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


def _spf_check(resolver: dns.asyncresolver.Resolver, ip: str, domain: str) -> tuple[str, str]:
    import dns.resolver
    import spf

    spf.DNSLookup = _spf_lookup
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

    def load(self, domains: Sequence[Domain], private_key: Callable[[Domain, DkimKey], bytes | None]) -> None:
        """Sign with each domain's active key; ``private_key`` opens it (None: it cannot, the domain goes unsigned)."""
        keys = {}
        for d in domains:
            key = d.active_key
            pem = private_key(d, key) if key is not None else None
            if key is not None and pem is not None:
                keys[d.name] = DomainKey(d.name, key.selector, pem)
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


POLICY_TTL = 300.0  # seconds the discovered outbound addresses are reused for showing records


class DomainError(RelayError, ValueError):
    """A domain request that cannot be done (bad name, already there, not found)."""


class Domains:
    """Adding, verifying, rotating and removing sending domains; the store holds them and their keys, sealed.

    Keys made before keys moved into the store are files; :meth:`refresh` moves each into the store (the
    file stays until the operator deletes it). Opened keys are kept in memory per (domain id, selector):
    a rotation on another node is a new selector, opened when it becomes the active one.
    """

    def __init__(
        self,
        store: DomainStore,
        clock: Clock,
        keyring: Keyring,
        checker: Checker,
        sending: SendingDomains | None = None,
        selector: str = "",
        bits: int = 2048,
        probe_targets: Sequence[str] | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.keyring = keyring
        self.checker = checker
        self.sending = sending
        self.selector = selector
        self.bits = bits
        self.configured = checker.policy  # before discovery
        self.probe_targets = tuple(PROBE_TARGETS if probe_targets is None else probe_targets)
        self._discovered: tuple[float, Policy] | None = None
        self._opened: dict[tuple[str, str], bytes] = {}  # (domain id, selector) → PEM
        self._logged: set[tuple[str, str, str]] = set()  # (what failed, domain id, selector): said once
        # Told after a change of the keys that sign (an acceptor tells its main process, which signs).
        self.on_change: Callable[[], None] = lambda: None

    async def policy(self, refresh: bool = False) -> Policy:
        """The policy with the outbound addresses found (see :func:`discover`); looked for again after
        POLICY_TTL, or now when ``refresh`` (a verification)."""
        now = self.clock.now()
        if refresh or self._discovered is None or now - self._discovered[0] >= POLICY_TTL:
            policy = await discover(self.configured, self.checker.resolver, self.probe_targets)
            self._discovered = (now, policy)
            self.checker.policy = policy
        return self._discovered[1]

    async def refresh(self) -> None:
        """Move file keys into the store, then reload the keys and verified set submission and signing use."""
        domains = await self.store.list_all()
        if await self._move_file_keys(domains):
            domains = await self.store.list_all()
        if self.sending is not None:
            self.sending.load(domains, self._private_key)
            active = {(d.id, d.active_key.selector) for d in domains if d.active_key is not None}
            self._opened = {ident: pem for ident, pem in self._opened.items() if ident in active}

    async def _changed(self) -> None:
        await self.refresh()
        self.on_change()

    def _private_key(self, domain: Domain, key: DkimKey) -> bytes | None:
        ident = (domain.id, key.selector)
        if ident not in self._opened and key.sealed is not None:
            try:
                self._opened[ident] = self.keyring.sealer.open(key.sealed, dkim_context(*ident))
            except SecretsError as exc:
                self._once(("open", *ident), "cannot sign for %s: %s", domain.name, exc)
        return self._opened.get(ident)

    def _once(self, what: tuple[str, str, str], message: str, *args: object) -> None:
        if what not in self._logged:
            self._logged.add(what)
            log.error(message, *args)

    async def _move_file_keys(self, domains: Sequence[Domain]) -> bool:
        """Seal the keys still kept in files into the store; whether any moved (here or by another process)."""
        moved = False
        for domain in domains:
            for key in domain.keys:
                if (
                    key.sealed is None
                    and key.path is not None
                    and ("move", domain.id, key.selector) not in self._logged
                ):
                    moved = await self._move_file_key(domain, key, key.path) or moved
        return moved

    async def _move_file_key(self, domain: Domain, key: DkimKey, path: Path) -> bool:
        ident = (domain.id, key.selector)
        try:
            pem = await asyncio.to_thread(path.read_bytes)
            public = public_key_record(pem)
        except (OSError, ValueError, TypeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not a PEM private key"
            self._once(
                ("move", *ident),
                "the DKIM key %s of %s cannot be moved into the store from %s: %s",
                key.selector,
                domain.name,
                path,
                reason,
            )
            return False
        await self.keyring.check()
        sealed = self.keyring.sealer.seal(pem, dkim_context(*ident))
        if await self.store.store_file_key(domain.id, key.selector, sealed, public):
            log.info(
                "the DKIM key %s of %s is now in the store: its file %s is no longer read and can be deleted",
                key.selector,
                domain.name,
                path,
            )
        return True

    async def add(self, name: str) -> Domain:
        domain = valid_domain(name)
        if domain is None:
            raise DomainError(f"not a domain name: {name!r}")
        if await self.store.domain(domain) is not None:
            raise DomainError(f"{domain} is already a sending domain")
        now = self.clock.now()
        domain_id = f"dom_{os.urandom(8).hex()}"
        key = await self._new_key(domain_id, new_selector(now, [], self.selector), "active", now)
        created = await self.store.create_domain(domain_id, domain, key)
        await self._changed()
        return created

    async def _new_key(self, domain_id: str, selector: str, state: str, now: float) -> DkimKey:
        """A new key, sealed for its row: only the store keeps it (no file)."""
        await self.keyring.check()
        pem = await asyncio.to_thread(generate_key, self.bits)
        sealed = self.keyring.sealer.seal(pem, dkim_context(domain_id, selector))
        return DkimKey(selector, state, now, public_key_record(pem), sealed)

    async def get(self, ident: str) -> Domain:
        domain = await self.store.domain(ident)
        if domain is None:
            raise DomainError(f"no sending domain {ident}")
        return domain

    async def verify(self, ident: str) -> Domain:
        """Run every check now and store the result; a pending (rotated) key found published takes over."""
        domain = await self.get(ident)
        await self.policy(refresh=True)
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
        await self._changed()
        return updated

    async def rotate(self, ident: str) -> Domain:
        """A new key under a new selector, published alongside the old; it signs once verify finds it."""
        domain = await self.get(ident)
        if domain.pending_key is not None:
            raise DomainError(
                f"{domain.name} already has a key waiting to be published ({domain.pending_key.selector})"
            )
        now = self.clock.now()
        selector = new_selector(now, [k.selector for k in domain.keys], self.selector)
        await self.store.add_dkim_key(domain.id, await self._new_key(domain.id, selector, "pending", now))
        return await self.get(domain.id)

    async def replace_lost_keys(self, lost: Sequence[tuple[str, str]]) -> list[Domain]:
        """After the keys ``lost`` (domain id, selector) were deleted with the store key that opened them:
        a new key for each domain that lost one, waiting to be published (it signs once verify finds it)."""
        replaced = []
        for domain_id in sorted({d for d, _ in lost}):
            domain = await self.store.domain(domain_id)
            if domain is not None and domain.pending_key is None:
                replaced.append(await self.rotate(domain_id))
        return replaced

    async def remove(self, ident: str) -> Domain:
        """Delete the domain and its keys (with the files of keys made before keys moved into the store)."""
        domain = await self.store.delete_domain(ident)
        if domain is None:
            raise DomainError(f"no sending domain {ident}")
        for key in domain.keys:
            if key.path is not None:
                key.path.unlink(missing_ok=True)
        await self._changed()
        return domain
