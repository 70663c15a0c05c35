"""Where mail for a domain goes: the smarthost, or the domain's MX hosts (RFC 5321 §5.1).

MX records are tried in preference order (equal preferences shuffled); a
domain without MX records is its own implicit MX (A/AAAA); a null MX
(RFC 7505) or a domain that does not exist is a permanent failure; DNS
trouble is a temporary one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import ipaddress
import logging
import math
import random
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from relay.config import RouteConfig
from relay.delivery.outcome import Reply
from relay.errors import RelayError

if TYPE_CHECKING:  # dnspython is imported with the first resolver: a relay with a smarthost never loads it
    import dns.asyncresolver

log = logging.getLogger(__name__)

MAX_ADDRESSES = 6  # addresses tried per domain per attempt
# Mail host names looked up per attempt: a domain's DNS is anyone's, and 250 MX records whose names have no
# address cost 500 lookups each time (Postfix tries 5 addresses, smtp_mx_address_limit).
MAX_EXCHANGES = 10
MAX_SITE = 200  # characters of MX names in a site's name; past them a digest of all (a key in the database)


class RouteError(RelayError):
    """No usable route; ``reply`` says why and whether it is permanent (5xx) or not."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(str(reply))
        self.reply = reply


def make_resolver(nameservers: Sequence[tuple[str, int]], timeout: float) -> dns.asyncresolver.Resolver:
    import dns.asyncresolver
    import dns.nameserver
    import dns.resolver

    if nameservers:
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = [dns.nameserver.Do53Nameserver(host, port) for host, port in nameservers]
    else:
        resolver = dns.asyncresolver.Resolver()
    resolver.lifetime = timeout
    resolver.cache = dns.resolver.Cache()  # answers are kept for their TTL
    return resolver


def site_of(exchanges: Sequence[str]) -> str:
    """A destination's name: its MX host names, in order, whatever order DNS gave them in. A set too long to
    name in full (it is a key of PostgreSQL's per-site tables, whose index entries hold 2,704 bytes) is named by
    its beginning and a digest of all of it."""
    names = ",".join(sorted({name.lower() for name in exchanges}))
    if len(names) <= MAX_SITE:
        return "mx " + names
    return f"mx {names[:MAX_SITE]}... #{hashlib.sha256(names.encode()).hexdigest()[:16]}"


def order_mx(records: Sequence[tuple[int, str]], rng: random.Random) -> list[str]:
    """Exchanges by preference, equal preferences in random order. Pure."""
    shuffled = list(records)
    rng.shuffle(shuffled)
    return [host for _, host in sorted(shuffled, key=lambda r: r[0])]


@dataclasses.dataclass(frozen=True)
class Host:
    address: str  # IP address (or the smarthost's name) to connect to
    port: int
    name: str  # the MX host name: TLS server name for verification


@dataclasses.dataclass(frozen=True)
class Route:
    site: str  # the destination's identity: same MX set → same site → shared limits and connections
    hosts: tuple[Host, ...]
    mx_names: tuple[str, ...]
    auth: tuple[str, str] | None = None  # smarthost AUTH username and password
    tls: str | None = None  # TLS mode the route insists on; None = the configured policy


@dataclasses.dataclass(frozen=True)
class Found:
    """What DNS said of a domain's mail hosts, kept (Router) until the first of its answers expires."""

    records: tuple[tuple[int, str], ...]  # (preference, exchange) as published; (0, domain): an implicit MX
    addresses: Mapping[str, tuple[str, ...]]  # exchange → its addresses, for those looked up
    expires: float  # time.time() when the first of the answers expires


MAX_LOOKUPS = 50  # domains looked up at once (each a few queries, a socket each): more wait their turn
IMPLICIT_MX_SECONDS = 60.0  # how long "no MX: the domain itself" is kept (no answer carries a TTL)
MAX_FOUND = 10_000  # domains whose answers are kept; past it the expired go, and if none had, all


class Router:
    def __init__(
        self,
        smarthost: tuple[str, int] | None,
        mx_port: int,
        resolver: dns.asyncresolver.Resolver | None,
        rng: random.Random | None = None,
        routes: Mapping[str, RouteConfig] | None = None,
    ) -> None:
        self.smarthost = smarthost
        self.set_routes(routes or {})

        self.mx_port = mx_port
        self.resolver = resolver
        self.rng = rng or random.Random()
        self._lookups: dict[str, asyncio.Task[Route]] = {}  # by domain, the lookups under way (see route)
        self._found: dict[str, Found] = {}  # by domain, what DNS said, until it expires (see route_now)
        self._lookup_turns: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None  # MAX_LOOKUPS at once

    def set_routes(self, routes: Mapping[str, RouteConfig]) -> None:
        """Configured routes by recipient domain; ``smarthost`` is the route for "*" unless one is given."""
        self.routes = dict(routes)
        if self.smarthost is not None and "*" not in self.routes:
            self.routes["*"] = RouteConfig(self.smarthost)

    async def hosts_for(self, domain: str) -> list[tuple[str, int]]:
        """Addresses to try, in order. Raises RouteError."""
        return [(h.address, h.port) for h in (await self.route(domain)).hosts]

    async def route(self, domain: str) -> Route:
        """Where mail for ``domain`` goes: the destination site and the hosts to try, in order. Calls for a
        domain whose lookup is under way wait for that one (the messages of one claim to a domain not in
        the resolver's cache would each ask DNS the same questions at once)."""
        known = self.route_now(domain)
        if known is not None:
            return known
        key = domain.lower()
        lookup = self._lookups.get(key)
        if lookup is None or lookup.get_loop() is not asyncio.get_running_loop():
            lookup = asyncio.get_running_loop().create_task(self._look_up(domain))
            self._lookups[key] = lookup
            lookup.add_done_callback(lambda done: self._looked_up(key, done))
        return await asyncio.shield(lookup)  # a caller that gives up leaves the lookup to the others

    def _looked_up(self, key: str, done: asyncio.Task[Route]) -> None:
        if self._lookups.get(key) is done:
            del self._lookups[key]
        if not done.cancelled():
            done.exception()  # looked at, even if every caller gave up waiting

    async def _look_up(self, domain: str) -> Route:
        """A claim of a thousand messages to as many new domains asked DNS 3,000 questions at once: past the
        process's open files (each query a socket) and a local resolver's queue, the lookups failed and
        the messages waited for their retry. MAX_LOOKUPS domains are looked up at once, the rest in turn."""
        loop = asyncio.get_running_loop()
        if self._lookup_turns is None or self._lookup_turns[0] is not loop:
            self._lookup_turns = (loop, asyncio.Semaphore(MAX_LOOKUPS))
        async with self._lookup_turns[1]:
            return await self._look_up_now(domain)

    async def _look_up_now(self, domain: str) -> Route:
        records, expires = await self._exchanges(domain)
        exchanges = order_mx(records, self.rng)
        addresses: dict[str, tuple[str, ...]] = {}
        count = 0
        for name in exchanges[:MAX_EXCHANGES]:
            found, until = await self._addresses(name)
            addresses[name] = tuple(found)
            expires = min(expires, until)
            count += len(found)
            if count >= MAX_ADDRESSES:
                break
        route = self._route(domain, exchanges, addresses)
        self._keep(domain.lower(), Found(tuple(records), addresses, expires))
        return route

    def _route(self, domain: str, exchanges: list[str], addresses: Mapping[str, tuple[str, ...]]) -> Route:
        """The hosts of ``exchanges`` (in that order) that have addresses, up to MAX_ADDRESSES. Raises RouteError."""
        hosts: list[Host] = []
        for name in exchanges[:MAX_EXCHANGES]:
            for ip in addresses.get(name, ()):
                if all(h.address != ip for h in hosts):
                    hosts.append(Host(ip, self.mx_port, name))
            if len(hosts) >= MAX_ADDRESSES:
                break
        if not hosts:
            raise RouteError(Reply(451, f"4.4.4 no address found for the mail hosts of {domain}"))
        return Route(site_of(exchanges), tuple(hosts[:MAX_ADDRESSES]), tuple(exchanges))

    def _keep(self, key: str, found: Found) -> None:
        if len(self._found) >= MAX_FOUND:
            now = time.time()
            self._found = {k: f for k, f in self._found.items() if f.expires > now}
            if len(self._found) >= MAX_FOUND:
                self._found.clear()
        self._found[key] = found

    def route_now(self, domain: str) -> Route | None:
        """The route for ``domain`` if no DNS lookup is needed (a configured route or smarthost, an address
        literal, or what DNS said before and is still current), else None."""
        configured = self.routes.get(domain.lower()) or self.routes.get("*")
        if configured is not None:
            host, port = configured.smarthost
            auth = (configured.username, configured.password) if configured.username else None
            return Route(f"smarthost {host}:{port}", (Host(host, port, host),), (host,), auth, configured.tls)
        literal = _address_literal(domain)
        if literal is not None:
            return Route(f"literal {literal}", (Host(literal, self.mx_port, literal),), (literal,))
        found = self._found.get(domain.lower())
        if found is None or found.expires <= time.time():
            return None
        try:  # the exchanges of equal preference in a new random order each time, as from DNS
            return self._route(domain, order_mx(found.records, self.rng), found.addresses)
        except RouteError:
            return None

    async def _exchanges(self, domain: str) -> tuple[list[tuple[int, str]], float]:
        """The MX records of ``domain`` ((0, domain) if it has none) and when the answer expires."""
        import dns.exception
        import dns.name
        import dns.resolver

        assert self.resolver is not None
        try:
            answer = await self.resolver.resolve(domain, "MX", search=False)
        except dns.resolver.NXDOMAIN:
            raise RouteError(Reply(550, f"5.1.2 domain {domain} does not exist")) from None
        except (dns.exception.SyntaxError, dns.name.NameTooLong, dns.name.IDNAException) as exc:  # never a query
            raise RouteError(Reply(550, f"5.1.2 {domain} is not a domain name: {exc}")) from None
        except dns.resolver.NoAnswer:
            return [(0, domain)], time.time() + IMPLICIT_MX_SECONDS  # implicit MX
        except (dns.exception.Timeout, dns.resolver.NoNameservers, dns.exception.DNSException) as exc:
            raise RouteError(Reply(451, f"4.4.3 DNS lookup of MX for {domain} failed: {exc}")) from None
        records = [(r.preference, r.exchange.to_text(omit_final_dot=True)) for r in answer]
        if len(records) == 1 and records[0][1] in ("", "."):
            raise RouteError(Reply(556, f"5.1.10 {domain} accepts no mail (null MX)"))
        return [r for r in records if r[1] not in ("", ".")], answer.expiration

    async def _addresses(self, host: str) -> tuple[list[str], float]:
        """The A and AAAA addresses of ``host``, and when the first answer expires (never, with none)."""
        import dns.exception

        assert self.resolver is not None
        found: list[str] = []
        expires = math.inf
        for rdtype in ("A", "AAAA"):
            try:
                answer = await self.resolver.resolve(host, rdtype, search=False)
            except dns.exception.DNSException as exc:
                log.debug("no %s for %s: %s", rdtype, host, exc)
                continue
            found.extend(r.to_text() for r in answer)
            expires = min(expires, answer.expiration)
        return found, expires


def _address_literal(domain: str) -> str | None:
    """``[192.0.2.1]`` or ``[IPv6:2001:db8::1]`` → the address (RFC 5321 §4.1.3)."""
    if not (domain.startswith("[") and domain.endswith("]")):
        return None
    text = domain[1:-1]
    if text.lower().startswith("ipv6:"):
        text = text[5:]
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise RouteError(Reply(501, f"5.1.2 bad address literal {domain}")) from None
