"""Relay configuration: one TOML file parsed into frozen, validated settings.

Loading follows four steps: start from the defaults declared on the dataclasses,
merge the file, merge ``RELAY_<SECTION>_<KEY>`` environment overrides, then
validate. Unknown keys, wrong types and bad values raise :class:`ConfigError`
naming the key and the file, so the process stops before binding any port.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import socket
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from relay.errors import RelayError
from relay.message import domain_key

DEFAULT_CONFIG_PATH = Path("config/relay.toml")


class ConfigError(RelayError):
    """A configuration problem, phrased for the operator."""


# ---------------------------------------------------------------------------
# Value parsers: readable strings into typed values.

_SIZE_UNITS = {"": 1, "B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3}
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_size(value: str | int) -> int:
    """``"25MB"`` → bytes. Integers are taken as bytes. Units are binary (1KB = 1024)."""
    if isinstance(value, bool):
        raise ValueError('expected a size such as "25MB"')
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a size cannot be negative")
        return value
    if not isinstance(value, str):
        raise ValueError(f'expected a size such as "25MB", got {value!r}')
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]?)B?\s*", value.upper())
    if not m:
        raise ValueError(f'expected a size such as "25MB", got {value!r}')
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2) + "B" if m.group(2) else ""])


def parse_duration(value: str | int | float) -> float:
    """``"5m"``, ``"1h30m"``, ``"5d"`` → seconds. Numbers are taken as seconds."""
    if isinstance(value, bool):
        raise ValueError('expected a duration such as "5m"')
    if isinstance(value, int | float):
        if not 0 <= value < float("inf"):
            raise ValueError("a duration must be a finite number of seconds, not negative")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f'expected a duration such as "5m", got {value!r}')
    text = value.strip()
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)", text)
    if not parts or re.sub(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)|\s+", "", text):
        raise ValueError(f'expected a duration such as "30s", "5m" or "5d", got {value!r}')
    return sum(float(n) * _DURATION_UNITS[u] for n, u in parts)


@dataclasses.dataclass(frozen=True)
class Rate:
    """``limit`` events per ``period`` seconds."""

    limit: int
    period: float

    def __str__(self) -> str:
        return f"{self.limit}/{int(self.period)}s"


_RATE_PERIODS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600, "hour": 3600, "d": 86400, "day": 86400}


def parse_rate(value: str) -> Rate:
    """``"3600/h"``, ``"1_000/hour"``, ``"10/s"`` → Rate."""
    m = re.fullmatch(r"\s*(\d[\d_]*)\s*/\s*([a-z]+)\s*", value.lower())
    if not m or m.group(2) not in _RATE_PERIODS:
        raise ValueError(f"expected 'limit/period' such as \"3600/h\", got {value!r}")
    limit = int(m.group(1).replace("_", ""))
    if limit <= 0:
        raise ValueError("a rate limit must be positive")
    return Rate(limit, float(_RATE_PERIODS[m.group(2)]))


def parse_hostport(value: str, default_port: int | None = None) -> tuple[str, int]:
    """``"127.0.0.1:2587"``, ``"[::1]:25"``, ``"mail.example.com"`` (with a default port)."""
    m = re.fullmatch(r"\[([0-9a-fA-F:.]+)\](?::(\d+))?|([^:\[\]]+)(?::(\d+))?", value.strip())
    if not m:
        raise ValueError(f'expected "host:port", got {value!r}')
    host = m.group(1) or m.group(3)
    port_text = m.group(2) or m.group(4)
    if port_text is None:
        if default_port is None:
            raise ValueError(f'expected "host:port", got {value!r} (no port)')
        return host, default_port
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ValueError(f"port out of range in {value!r}")
    return host, port


def parse_network(value: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError(f'expected a network such as "127.0.0.1/32", got {value!r}') from None


ACCEPTORS_AUTO_MAX = 4  # "auto" starts at most this many: they all share one delivering process and SQLite writer


def parse_acceptors(value: int | str) -> int | str:
    """``[server] acceptors``: a number of processes, or ``"auto"`` (see :func:`auto_acceptors`)."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "auto":
            return "auto"
        if not text.isdigit():
            raise ValueError(f'expected a number of processes or "auto", got {value!r}')
        value = int(text)
    if value < 0:
        raise ValueError("must not be negative")
    return value


def main_process_accepts(setting: bool, acceptors: int) -> bool:
    """Whether the main process accepts SMTP/HTTP beside delivering: always with no acceptor processes, else
    as ``[server] main_accepts`` says; beside acceptors it takes only the connections they leave waiting
    (relay.listening)."""
    return acceptors == 0 or setting


def auto_acceptors(cores: int) -> int:
    """``acceptors = "auto"``: one acceptor per core beyond the delivering process's, at most
    ACCEPTORS_AUTO_MAX; none on a single core."""
    return min(ACCEPTORS_AUTO_MAX, max(0, cores - 1))


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity: taskset, cgroup cpusets), else all of them."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


# ---------------------------------------------------------------------------
# The settings. Every field has a default and a one-line description; the
# example config in config/relay.toml documents the same keys for operators.

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _field(default: Any, doc: str, parse: Callable[[Any], Any] | None = None) -> Any:
    meta = {"doc": doc, "parse": parse}
    if isinstance(default, list | dict):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _listof(parse: Callable[[Any], Any]) -> Callable[[Any], list[Any]]:
    def parse_list(values: Any) -> list[Any]:
        if not isinstance(values, list):
            raise ValueError("expected a list")
        return [parse(v) for v in values]

    return parse_list


def _hostport_or_empty(value: str) -> tuple[str, int] | None:
    return parse_hostport(value, default_port=25) if value.strip() else None


@dataclasses.dataclass(frozen=True)
class ServerConfig:
    hostname: str = _field(socket.gethostname(), "EHLO name and Message-ID domain")
    data_dir: Path = _field("./var", "directory for the SQLite queue, keys and certificates", Path)
    log_level: str = _field("info", "debug, info, warning or error")
    log_format: str = _field("text", "text, or json (one object per line)")
    shutdown_grace: float = _field("30s", "how long in-flight deliveries may finish on stop", parse_duration)
    event_loop: str = _field("uvloop", "uvloop (faster) or asyncio")
    acceptors: int | str = _field(
        "auto",
        'processes that accept SMTP/HTTP; 0 = the main process accepts and delivers; "auto" = one per spare core',
        parse_acceptors,
    )
    main_accepts: bool = _field(True, "the main process takes the connections its acceptor processes leave waiting")
    max_queue: int = _field(1_000_000, "pending recipients above which submission is refused (503 / 452)")
    min_free_disk: int = _field("500MB", "free space in data_dir below which submission is refused", parse_size)
    max_schedule_ahead: float = _field("30d", "how far ahead send_at / X-Relay-Send-At may be", parse_duration)
    max_inflight_bytes: int = _field(
        "256MB", "message bodies held in memory by submissions (452 / 503 beyond), and again by deliveries", parse_size
    )

    @property
    def acceptor_processes(self) -> int:
        """``acceptors`` resolved: the number of acceptor processes to start."""
        return auto_acceptors(available_cores()) if self.acceptors == "auto" else int(self.acceptors)

    @property
    def main_process_accepts(self) -> bool:
        """Whether the main process accepts: with no acceptor processes, or with ``main_accepts``."""
        return main_process_accepts(self.main_accepts, self.acceptor_processes)

    @property
    def accepting_processes(self) -> int:
        """How many processes accept SMTP/HTTP: the acceptors, and the main process when it does."""
        return self.acceptor_processes + int(self.main_process_accepts)


@dataclasses.dataclass(frozen=True)
class SmtpConfig:
    listen: list[tuple[str, int]] = _field(["127.0.0.1:2587"], "STARTTLS submission listeners", _listof(parse_hostport))
    tls_listen: list[tuple[str, int]] = _field([], "implicit TLS listeners (465)", _listof(parse_hostport))
    trusted_networks: list[Network] = _field(
        ["127.0.0.1/32", "::1/128"], "clients that may relay without AUTH", _listof(parse_network)
    )
    max_message_size: int = _field("25MB", "largest message accepted (SIZE)", parse_size)
    max_recipients: int = _field(1000, "recipients per message")
    tls_cert: str = _field("", "PEM certificate chain; empty = a self-signed one made in data_dir on first start")
    tls_key: str = _field("", "PEM private key for tls_cert")
    plaintext_auth_networks: list[Network] = _field(
        [], "clients that may AUTH without TLS (local development, benchmarks)", _listof(parse_network)
    )
    max_auth_failures: int = _field(5, "failed AUTH attempts per client address before AUTH is refused...")
    auth_failure_window: float = _field("10m", "...for this long", parse_duration)
    idle_timeout: float = _field("5m", "close a connection that sends nothing for this long", parse_duration)
    max_connections_per_ip: int = _field(50, "simultaneous connections from one address (421 beyond)")
    max_connections: int = _field(
        1000, "simultaneous connections in all, per process (421 beyond; trusted_networks are let in regardless)"
    )
    received_show_auth: bool = _field(False, "name the authenticated user in the Received header")


@dataclasses.dataclass(frozen=True)
class HttpConfig:
    listen: tuple[str, int] = _field("127.0.0.1:8025", "HTTP API listener", parse_hostport)
    max_body_size: int = _field("30MB", "largest request body (413 above)", parse_size)
    max_recipients: int = _field(50, "recipients per POST /v1/messages (to + cc + bcc)")
    max_batch: int = _field(500, "messages (or personalised recipients) per POST /v1/messages/batch")
    max_attachments_size: int = _field("20MB", "decoded attachments per message, together", parse_size)
    rate_limit: Rate = _field("3600/h", "requests per API key (429 above); a key may override it", parse_rate)
    idempotency_ttl: float = _field("24h", "how long an Idempotency-Key is remembered", parse_duration)
    header_timeout: float = _field(
        "10s", "request headers must be complete this long after their first byte (408, closed)", parse_duration
    )
    body_timeout: float = _field(
        "60s", "a request body must be complete this long after its headers (408)", parse_duration
    )
    keepalive_timeout: float = _field("75s", "close a connection idle between requests after this", parse_duration)
    max_connections_per_ip: int = _field(50, "simultaneous connections from one address (503 beyond)")
    max_connections: int = _field(1000, "simultaneous connections in all, per process (503 beyond)")
    trust_proxy: bool = _field(False, "take the client address from X-Forwarded-For (behind a reverse proxy)")
    require_tls: bool = _field(False, "refuse plain HTTP from clients other than loopback (403)")
    tls_cert: str = _field("", "PEM certificate chain: serve HTTPS on [http] listen")
    tls_key: str = _field("", "PEM private key for tls_cert")
    metrics_networks: list[Network] = _field(
        ["127.0.0.1/32", "::1/128"], "clients that may read GET /metrics (no API key)", _listof(parse_network)
    )


TLS_MODES = ("opportunistic", "required", "verify")
DELIVERY_MODES = ("live", "sandbox")


@dataclasses.dataclass(frozen=True)
class Shaping:
    """Limits for one destination site (the MX hosts a domain resolves to)."""

    max_connections: int = 20  # like Postfix's default_destination_concurrency_limit
    max_messages_per_connection: int = 100
    max_connection_age: float = 300.0
    max_rate: Rate | None = None  # messages per period to this site (token bucket); None = no limit
    pipelining: bool = True  # PIPELINING when the site offers it; false: one command at a time

    def merged(self, overrides: Mapping[str, Any]) -> Shaping:
        return dataclasses.replace(self, **overrides)


def _shaping_entry(name: str, values: object) -> dict[str, Any]:
    if not isinstance(values, dict):
        raise ValueError(f"[delivery.shaping.{name}] must be a table")
    known = {f.name for f in dataclasses.fields(Shaping)}
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key not in known:
            raise ValueError(f'unknown key {key!r} in [delivery.shaping."{name}"] (known: {", ".join(sorted(known))})')
        if key == "max_connection_age":
            out[key] = parse_duration(value)
        elif key == "max_rate":
            out[key] = parse_rate(value) if isinstance(value, str) else _bad_rate(name)
        elif key == "pipelining":
            if not isinstance(value, bool):
                raise ValueError(f'[delivery.shaping."{name}"] pipelining must be true or false')
            out[key] = value
        elif not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f'[delivery.shaping."{name}"] {key} must be a positive integer')
        else:
            out[key] = value
    return out


def _bad_rate(name: str) -> Rate:
    raise ValueError(f'[delivery.shaping."{name}"] max_rate must be a string such as "100/s"')


def _shaping_table(value: object) -> dict[str, Any]:
    """``{"default": {...}, "gmail.com": {...}}`` → overrides per key (validated, not yet merged)."""
    if not isinstance(value, dict):
        raise ValueError("expected a table of tables")
    return {domain_key(name): _shaping_entry(name, values) for name, values in value.items()}


@dataclasses.dataclass(frozen=True)
class RouteConfig:
    """Mail for a domain (or "*": every domain) goes to this smarthost instead of MX."""

    smarthost: tuple[str, int]
    username: str = ""
    password: str = ""
    tls: str | None = None  # None: the global/per-domain TLS mode


def _routes(value: object) -> dict[str, RouteConfig]:
    """``{"partner.example": {"smarthost": "smtp.partner.example:587", "username": ..., "tls": ...}}``."""
    if not isinstance(value, dict):
        raise ValueError('expected [delivery.routes."domain"] tables')
    out = {}
    for domain, entry in value.items():
        if not isinstance(entry, dict) or "smarthost" not in entry:
            raise ValueError(f'"{domain}" needs a smarthost = "host:port"')
        unknown = set(entry) - {"smarthost", "username", "password", "tls"}
        if unknown:
            raise ValueError(
                f'"{domain}": unknown key {sorted(unknown)[0]!r} (known: smarthost, username, password, tls)'
            )
        tls = entry.get("tls")
        if tls is not None and tls not in TLS_MODES:
            raise ValueError(f'"{domain}": tls must be one of {", ".join(TLS_MODES)}')
        username, password = entry.get("username", ""), entry.get("password", "")
        if not isinstance(username, str) or not isinstance(password, str) or bool(username) != bool(password):
            raise ValueError(f'"{domain}": username and password are strings and go together')
        out[domain_key(domain)] = RouteConfig(parse_hostport(str(entry["smarthost"]), 25), username, password, tls)
    return out


def _tls_policy(value: object) -> dict[str, str]:
    if not isinstance(value, dict):
        raise ValueError("expected a table of domain = mode")
    for domain, mode in value.items():
        if mode not in TLS_MODES:
            raise ValueError(f"{domain}: expected one of {', '.join(TLS_MODES)}, got {mode!r}")
    return {domain_key(domain): mode for domain, mode in value.items()}


@dataclasses.dataclass(frozen=True)
class DeliveryConfig:
    smarthost: tuple[str, int] | None = _field(
        "", '"host:port" to relay everything to instead of MX', _hostport_or_empty
    )
    mx_port: int = _field(25, "TCP port used when delivering to MX hosts")
    concurrency: int = _field(100, "SMTP transactions in flight at once")
    connect_timeout: float = _field("30s", "timeout to connect and read the greeting", parse_duration)
    command_timeout: float = _field("5m", "timeout for each SMTP command", parse_duration)
    retry_schedule: list[float] = _field(
        ["1m", "5m", "10m", "20m", "40m", "1h"],
        "delays after each failed attempt; the last repeats",
        _listof(parse_duration),
    )
    max_age: float = _field("5d", "give up on a recipient after this long in the queue (4.4.7)", parse_duration)
    lease: float = _field("10m", "how long a claimed recipient stays leased to one worker", parse_duration)
    poll_interval: float = _field("1s", "how often the queue is checked for due retries", parse_duration)
    tls: str = _field("opportunistic", "outbound TLS: opportunistic, required or verify")
    tls_policy: dict[str, str] = _field(
        {}, 'per recipient domain TLS mode, e.g. {"bank.example" = "verify"}', _tls_policy
    )
    max_rcpt_per_transaction: int = _field(100, "recipients per SMTP transaction")
    idle_timeout: float = _field("5s", "close an outbound connection idle this long", parse_duration)
    routes: dict[str, RouteConfig] = _field({}, 'smarthosts per recipient domain ("*" for all)', _routes)
    # Overrides per key, checked but not merged: relay.delivery.shaping.shaping_for layers them over the defaults.
    shaping: dict[str, dict[str, Any]] = _field(
        {}, "per destination limits: [delivery.shaping.default] and overrides", _shaping_table
    )
    mode: str = _field("live", "live: deliver; sandbox: capture every message instead (relay sandbox list)")


@dataclasses.dataclass(frozen=True)
class DkimDomain:
    selector: str
    private_key: Path


def _dkim_domains(value: object) -> dict[str, DkimDomain]:
    """``{"example.com": {"selector": "s1", "private_key": "/etc/relay/dkim/example.com.pem"}}``."""
    if not isinstance(value, dict):
        raise ValueError('expected [dkim.domains."example.com"] tables')
    out = {}
    for domain, entry in value.items():
        if not isinstance(entry, dict) or set(entry) != {"selector", "private_key"}:
            raise ValueError(f'"{domain}" needs exactly selector and private_key')
        selector, key = entry["selector"], entry["private_key"]
        if not isinstance(selector, str) or not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?", selector):
            raise ValueError(f'"{domain}": selector must be a DNS label, got {selector!r}')
        if not isinstance(key, str) or not key:
            raise ValueError(f'"{domain}": private_key must be a file path')
        out[domain.lower()] = DkimDomain(selector, Path(key))
    return out


SIGN_AT = ("auto", "delivery", "acceptance")


def signs_at(sign_at: str, acceptors: int) -> str:
    """``[dkim] sign_at`` resolved. ``"auto"``: at delivery with at most one acceptor process (measured on two
    cores, bench/RESULTS.md, twenty-fifth session: DKIM-signed mail 1.26x faster than signed at acceptance,
    at 0.79x the CPU), at acceptance with more, where the acceptors share the signing instead of the one
    main process doing all of it."""
    if sign_at != "auto":
        return sign_at
    return "delivery" if acceptors <= 1 else "acceptance"


@dataclasses.dataclass(frozen=True)
class DkimConfig:
    domains: dict[str, DkimDomain] = _field({}, "signing keys by From: domain", _dkim_domains)
    sign_at: str = _field(
        "auto", "delivery: as mail leaves; acceptance: as it is accepted; auto: delivery with at most one acceptor"
    )


@dataclasses.dataclass(frozen=True)
class DnsConfig:
    nameservers: list[tuple[str, int]] = _field(
        [], 'resolvers as "ip" or "ip:port"; empty = system resolver', _listof(lambda v: parse_hostport(v, 53))
    )
    timeout: float = _field("5s", "DNS query timeout", parse_duration)


def _domain_name(value: object) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"(?:[A-Za-z0-9-]+\.)+[A-Za-z0-9-]+\.?", value.strip()):
        raise ValueError(f'expected a domain name such as "bounces.example.com", got {value!r}')
    return value.strip().rstrip(".").lower()


def _mailbox(value: object) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[^\s@<>]+@(?:[A-Za-z0-9-]+\.)+[A-Za-z0-9-]+", value.strip()):
        raise ValueError(f'expected an address such as "fbl@bounces.example.com", got {value!r}')
    return value.strip().lower()


@dataclasses.dataclass(frozen=True)
class InboundConfig:
    listen: list[tuple[str, int]] = _field(
        [],
        "listeners for returned mail (bounces, complaints); port 25 in production; empty = none",
        _listof(parse_hostport),
    )
    bounce_domains: list[str] = _field(
        [],
        "domains whose every address takes bounces; outgoing mail gets a VERP return path on one of them",
        _listof(_domain_name),
    )
    feedback_addresses: list[str] = _field([], "addresses that take complaint reports (ARF)", _listof(_mailbox))
    verp: bool = _field(True, "send each recipient's mail with its own authenticated return path on a bounce domain")
    max_message_size: int = _field("10MB", "largest returned message accepted", parse_size)
    max_connections_per_ip: int = _field(50, "simultaneous connections from one address (421 beyond)")
    max_connections: int = _field(1000, "simultaneous connections in all, per process (421 beyond)")


@dataclasses.dataclass(frozen=True)
class SuppressionConfig:
    soft_bounce_limit: int = _field(3, "soft bounces within soft_bounce_window that suppress an address (0 = never)")
    soft_bounce_window: float = _field("7d", "...counted over this long", parse_duration)
    soft_bounce_suppression: float = _field("7d", "how long such a suppression lasts", parse_duration)


def _rate_or_none(value: str) -> Rate | None:
    return parse_rate(value) if value.strip() else None


@dataclasses.dataclass(frozen=True)
class WebhooksConfig:
    allow_private_targets: bool = _field(False, "allow webhook URLs on loopback or private networks (SSRF guard off)")
    timeout: float = _field("10s", "time for a receiver to answer", parse_duration)
    max_concurrency: int = _field(4, "requests in flight per endpoint")
    max_rate: Rate | None = _field("", 'requests per endpoint, e.g. "50/s"; empty = no cap', _rate_or_none)
    disable_after: float = _field("3d", "disable an endpoint that has failed for this long", parse_duration)


@dataclasses.dataclass(frozen=True)
class RetentionConfig:
    events: float = _field("30d", "keep events (and webhook delivery logs) this long", parse_duration)
    bodies: float = _field("7d", "keep message bodies this long once no recipient waits", parse_duration)
    redact_subjects: bool = _field(False, "never store subjects (the activity shows an empty subject)")


def _ip(value: object) -> str:
    try:
        return str(ipaddress.ip_address(str(value)))
    except ValueError:
        raise ValueError(f"expected an IP address, got {value!r}") from None


@dataclasses.dataclass(frozen=True)
class DomainsConfig:
    require_verified_domain: bool = _field(False, "refuse mail From: a domain that is not a verified sending domain")
    outbound_ips: list[str] = _field([], "addresses relay sends from: the SPF suggestion and check", _listof(_ip))
    spf_include: str = _field("", 'an SPF include for the suggestion, e.g. "_spf.relay.example.com"')
    inbound_host: str = _field("", "host bounce domains' MX should name; empty = [server] hostname")
    selector: str = _field("", "DKIM selector for new keys; empty = rlyYYYYMM")
    key_bits: int = _field(2048, "RSA key size for new DKIM keys")


# ---------------------------------------------------------------------------
# Where the store lives

STORE_SCHEMES = ("sqlite", "postgresql", "postgres")


@dataclasses.dataclass(frozen=True)
class StoreUrl:
    """A parsed ``[store] url``: ``backend`` "sqlite" (with ``path``) or "postgresql" (``url`` for libpq)."""

    backend: str
    url: str
    path: Path | None = None

    @property
    def shown(self) -> str:
        """The URL without its password, for logs and ``check-config``."""
        return masked_url(self.url)


def parse_store_url(url: str) -> StoreUrl:
    """``sqlite:///<relative path>``, ``sqlite:////<absolute path>`` or
    ``postgresql://user:password@host:port/dbname?...`` (a libpq URL, passed to the driver as written);
    ValueError saying what is wrong with anything else."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in STORE_SCHEMES:
        raise ValueError(f"must start with sqlite:/// or postgresql://, got {masked_url(url)!r}")
    if scheme == "sqlite":
        path = rest.removeprefix("/")  # sqlite:///relative/path, sqlite:////absolute/path (as SQLAlchemy reads them)
        if not rest.startswith("/") or not path.strip("/"):
            raise ValueError("sqlite:/// needs a file path, e.g. sqlite:////var/lib/relay/relay.sqlite3")
        return StoreUrl("sqlite", url, Path(path))
    parts = urlsplit(url)
    if not parts.hostname and "host=" not in parts.query:
        raise ValueError("a postgresql:// URL needs a host, e.g. postgresql://relay:PASSWORD@db.internal/relay")
    if not parts.path.strip("/"):
        raise ValueError("a postgresql:// URL needs a database name after the host, e.g. .../relay")
    return StoreUrl("postgresql", url)


_USERINFO = re.compile(r"^(?P<scheme>[a-z]+://)(?P<user>[^:@/]*):(?P<password>[^@/]*)@")


def masked_url(url: str) -> str:
    """``url`` with any password (``user:password@`` or ``?password=``) shown as ``***``."""
    shown = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:***@", url)
    parts = urlsplit(shown)
    if "password" in parts.query:
        query = [(k, "***" if k == "password" else v) for k, v in parse_qsl(parts.query, keep_blank_values=True)]
        shown = urlunsplit(parts._replace(query=urlencode(query, safe="*")))
    return shown


def _store_url(value: str) -> str:
    if value.strip():
        parse_store_url(value.strip())
    return value.strip()


@dataclasses.dataclass(frozen=True)
class StoreConfig:
    url: str = _field(
        "",
        'where the queue and all state live: empty = SQLite in data_dir; "sqlite:///<path>" or'
        ' "postgresql://user:password@host:5432/dbname" (several nodes share one PostgreSQL)',
        _store_url,
    )
    pool_size: int = _field(4, "PostgreSQL: read connections per process (writes one more, each change channel one)")
    statement_timeout: float = _field(
        "30s", "PostgreSQL: cancel a statement that runs longer; 0 = never", parse_duration
    )
    secret_key_file: str = _field(
        "",
        "the key sealing DKIM keys and the VERP secret in the store (a 0600 file; every node sharing the"
        " database needs a copy, and losing it loses the stored keys); empty = store.key in data_dir,"
        " made on first start",
    )


@dataclasses.dataclass(frozen=True)
class DashboardConfig:
    enabled: bool = _field(True, "serve the operators' dashboard at /dashboard/ on [http] listen (relay users create)")
    session_lifetime: float = _field("12h", "a dashboard login lasts this long, then asks again", parse_duration)


@dataclasses.dataclass(frozen=True)
class Config:
    server: ServerConfig = dataclasses.field(default_factory=ServerConfig)
    smtp: SmtpConfig = dataclasses.field(default_factory=SmtpConfig)
    http: HttpConfig = dataclasses.field(default_factory=HttpConfig)
    delivery: DeliveryConfig = dataclasses.field(default_factory=DeliveryConfig)
    dns: DnsConfig = dataclasses.field(default_factory=DnsConfig)
    dkim: DkimConfig = dataclasses.field(default_factory=DkimConfig)
    inbound: InboundConfig = dataclasses.field(default_factory=InboundConfig)
    suppression: SuppressionConfig = dataclasses.field(default_factory=SuppressionConfig)
    webhooks: WebhooksConfig = dataclasses.field(default_factory=WebhooksConfig)
    retention: RetentionConfig = dataclasses.field(default_factory=RetentionConfig)
    domains: DomainsConfig = dataclasses.field(default_factory=DomainsConfig)
    store: StoreConfig = dataclasses.field(default_factory=StoreConfig)
    dashboard: DashboardConfig = dataclasses.field(default_factory=DashboardConfig)
    source: Path | None = None

    @property
    def dkim_signs_at(self) -> str:
        """Where mail is DKIM-signed: "delivery" or "acceptance" (``[dkim] sign_at`` resolved)."""
        return signs_at(self.dkim.sign_at, self.server.acceptor_processes)

    @property
    def db_path(self) -> Path:
        """The SQLite file: ``[store] url``'s, or relay.sqlite3 in data_dir."""
        return self.store_url.path or self.server.data_dir / "relay.sqlite3"

    @property
    def store_url(self) -> StoreUrl:
        """``[store] url`` parsed; empty means SQLite in data_dir."""
        if not self.store.url:
            path = self.server.data_dir / "relay.sqlite3"
            return StoreUrl("sqlite", f"sqlite:///{path}", path)
        return parse_store_url(self.store.url)


_SECTIONS: dict[str, type] = {
    "server": ServerConfig,
    "smtp": SmtpConfig,
    "http": HttpConfig,
    "delivery": DeliveryConfig,
    "dns": DnsConfig,
    "dkim": DkimConfig,
    "inbound": InboundConfig,
    "suppression": SuppressionConfig,
    "webhooks": WebhooksConfig,
    "retention": RetentionConfig,
    "domains": DomainsConfig,
    "store": StoreConfig,
    "dashboard": DashboardConfig,
}

# ---------------------------------------------------------------------------
# Loading


def _expected_type(field: dataclasses.Field[Any]) -> tuple[type, ...]:
    """The TOML types a key accepts, derived from its default."""
    default = field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default
    if field.metadata.get("parse") is parse_acceptors:
        return (int, str)
    if isinstance(default, bool):
        return (bool,)
    if isinstance(default, list):
        return (list,)
    if isinstance(default, dict):
        return (dict,)
    if isinstance(default, int):
        return (int,)
    if field.metadata.get("parse") in (parse_duration, parse_size):
        return (str, int, float)
    return (str,)


def _build_section(name: str, cls: type, values: Mapping[str, Any], where: str) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key [{name}] {unknown[0]} (known: {', '.join(fields)})")
    kwargs: dict[str, Any] = {}
    for key, field in fields.items():
        raw = values[key] if key in values else _default(field)
        kwargs[key] = _convert(name, key, field, raw, where)
    return cls(**kwargs)


def _default(field: dataclasses.Field[Any]) -> Any:
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


def _convert(section: str, key: str, field: dataclasses.Field[Any], raw: Any, where: str) -> Any:
    types = _expected_type(field)
    if not isinstance(raw, types) or (isinstance(raw, bool) and bool not in types):
        names = {
            "str": "a string",
            "int": "an integer",
            "float": "a number",
            "list": "a list",
            "bool": "a boolean",
            "dict": "a table",
        }
        wanted = " or ".join(names[t.__name__] for t in types)
        raise ConfigError(f"{where}: [{section}] {key} must be {wanted}, got {raw!r}")
    parse = field.metadata.get("parse")
    try:
        value = parse(raw) if parse else raw
    except ValueError as exc:
        raise ConfigError(f"{where}: [{section}] {key}: {exc}") from None
    except (TypeError, AttributeError):  # an item of the wrong type inside a list or table
        raise ConfigError(f"{where}: [{section}] {key}: a value of the wrong type in {raw!r}") from None
    return value


def _env_overrides(environ: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """``RELAY_DELIVERY_SMARTHOST=host:25`` overrides ``[delivery] smarthost``.

    List keys take comma-separated values; integers are parsed as integers.
    """
    out: dict[str, dict[str, Any]] = {}
    for section, cls in _SECTIONS.items():
        for field in dataclasses.fields(cls):
            env_name = f"RELAY_{section}_{field.name}".upper()
            if env_name not in environ:
                continue
            text = environ[env_name]
            types = _expected_type(field)
            value: Any = text
            if types == (list,):
                value = [v.strip() for v in text.split(",") if v.strip()]
            elif types == (int,):
                try:
                    value = int(text)
                except ValueError:
                    raise ConfigError(f"{env_name}: expected an integer, got {text!r}") from None
            elif types == (bool,):
                value = text.lower() in ("1", "true", "yes", "on")
            out.setdefault(section, {})[field.name] = value
    return out


def load(path: Path | str | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Read, merge and validate the config. Raises :class:`ConfigError`."""
    environ = os.environ if environ is None else environ
    path = Path(path or environ.get("RELAY_CONFIG") or DEFAULT_CONFIG_PATH)
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except PermissionError:
        raise ConfigError(f"{path}: permission denied reading the config file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    return from_dict(data, source=path, environ=environ)


def from_dict(data: Mapping[str, Any], source: Path | None = None, environ: Mapping[str, str] | None = None) -> Config:
    where = str(source) if source else "config"
    unknown = sorted(set(data) - set(_SECTIONS))
    if unknown:
        raise ConfigError(f"{where}: unknown section [{unknown[0]}] (known: {', '.join(_SECTIONS)})")
    merged: dict[str, dict[str, Any]] = {}
    for name in _SECTIONS:
        section = data.get(name, {})
        if not isinstance(section, dict):
            raise ConfigError(f"{where}: [{name}] must be a table")
        merged[name] = dict(section)
    for name, values in _env_overrides(environ or {}).items():
        merged[name].update(values)
    sections = {name: _build_section(name, cls, merged[name], where) for name, cls in _SECTIONS.items()}
    config = Config(**sections, source=source)
    _validate(config, where)
    return config


def _validate(config: Config, where: str) -> None:
    if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?", config.server.hostname):
        raise ConfigError(f"{where}: [server] hostname must be a host name, got {config.server.hostname!r}")
    if config.server.log_level.lower() not in ("debug", "info", "warning", "error"):
        raise ConfigError(f"{where}: [server] log_level must be debug, info, warning or error")
    if config.domains.key_bits not in (1024, 2048, 3072, 4096):
        raise ConfigError(f"{where}: [domains] key_bits must be 1024, 2048, 3072 or 4096")
    if config.domains.selector and not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?", config.domains.selector):
        raise ConfigError(f"{where}: [domains] selector must be a DNS label")
    if config.server.log_format not in ("text", "json"):
        raise ConfigError(f'{where}: [server] log_format must be "text" or "json"')
    if config.webhooks.max_concurrency <= 0:
        raise ConfigError(f"{where}: [webhooks] max_concurrency must be greater than zero")
    if config.server.event_loop not in ("uvloop", "asyncio"):
        raise ConfigError(f'{where}: [server] event_loop must be "uvloop" or "asyncio"')
    if not config.smtp.listen and not config.smtp.tls_listen:
        raise ConfigError(f"{where}: [smtp] listen and tls_listen are both empty: nothing would accept mail")
    if bool(config.smtp.tls_cert) != bool(config.smtp.tls_key):
        raise ConfigError(f"{where}: [smtp] tls_cert and tls_key go together")
    if config.store.pool_size <= 0:
        raise ConfigError(f"{where}: [store] pool_size must be greater than zero")
    if config.server.min_free_disk < 0:
        raise ConfigError(f"{where}: [server] min_free_disk must not be negative")
    positive = {
        ("smtp", "max_recipients"): config.smtp.max_recipients,
        ("smtp", "max_auth_failures"): config.smtp.max_auth_failures,
        ("smtp", "idle_timeout"): config.smtp.idle_timeout,
        ("smtp", "max_connections_per_ip"): config.smtp.max_connections_per_ip,
        ("smtp", "max_connections"): config.smtp.max_connections,
        ("smtp", "max_message_size"): config.smtp.max_message_size,
        ("delivery", "concurrency"): config.delivery.concurrency,
        ("http", "max_recipients"): config.http.max_recipients,
        ("http", "max_body_size"): config.http.max_body_size,
        ("http", "header_timeout"): config.http.header_timeout,
        ("http", "body_timeout"): config.http.body_timeout,
        ("http", "keepalive_timeout"): config.http.keepalive_timeout,
        ("http", "max_connections_per_ip"): config.http.max_connections_per_ip,
        ("http", "max_connections"): config.http.max_connections,
        ("inbound", "max_connections_per_ip"): config.inbound.max_connections_per_ip,
        ("inbound", "max_connections"): config.inbound.max_connections,
        ("server", "max_queue"): config.server.max_queue,
        ("server", "max_inflight_bytes"): config.server.max_inflight_bytes,
        ("delivery", "lease"): config.delivery.lease,
        ("delivery", "poll_interval"): config.delivery.poll_interval,
        ("delivery", "max_age"): config.delivery.max_age,
        ("dashboard", "session_lifetime"): config.dashboard.session_lifetime,
    }
    for (section, key), value in positive.items():
        if value <= 0:
            raise ConfigError(f"{where}: [{section}] {key} must be greater than zero")
    if config.delivery.mode not in DELIVERY_MODES:
        raise ConfigError(f'{where}: [delivery] mode must be "live" or "sandbox", got {config.delivery.mode!r}')
    if config.delivery.tls not in TLS_MODES:
        raise ConfigError(f"{where}: [delivery] tls must be one of {', '.join(TLS_MODES)}")
    if not config.delivery.retry_schedule or min(config.delivery.retry_schedule) <= 0:
        raise ConfigError(f"{where}: [delivery] retry_schedule needs at least one positive duration")
    if bool(config.http.tls_cert) != bool(config.http.tls_key):
        raise ConfigError(f"{where}: [http] tls_cert and tls_key go together")
    for section, key in (("http", "tls_cert"), ("http", "tls_key"), ("smtp", "tls_cert"), ("smtp", "tls_key")):
        path = getattr(getattr(config, section), key)
        if path and not os.access(path, os.R_OK):
            raise ConfigError(f"{where}: [{section}] {key}: cannot read {path}")
    if config.dkim.sign_at not in SIGN_AT:
        raise ConfigError(
            f'{where}: [dkim] sign_at must be "auto", "delivery" or "acceptance", got {config.dkim.sign_at!r}'
        )
    for domain, entry in config.dkim.domains.items():
        problem = _check_private_key(entry.private_key)
        if problem:
            raise ConfigError(f'{where}: [dkim.domains."{domain}"] private_key: {problem}')
    if config.inbound.listen and not (config.inbound.bounce_domains or config.inbound.feedback_addresses):
        raise ConfigError(f"{where}: [inbound] listen is set but bounce_domains and feedback_addresses are empty")
    if config.suppression.soft_bounce_limit < 0:
        raise ConfigError(f"{where}: [suppression] soft_bounce_limit must not be negative")
    if not 0 < config.delivery.mx_port <= 65535:
        raise ConfigError(f"{where}: [delivery] mx_port must be a TCP port")


def _check_private_key(path: Path) -> str | None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror}"
    except (ValueError, TypeError):
        return f"{path} is not an unencrypted PEM private key"
    if not isinstance(key, rsa.RSAPrivateKey) or key.key_size < 1024:
        return f"{path} must be an RSA key of 1024 bits or more"
    return None


def describe() -> list[tuple[str, str, Any, str]]:
    """(section, key, default, description) for every key: the schema, for docs."""
    rows = []
    for section, cls in _SECTIONS.items():
        for f in dataclasses.fields(cls):
            rows.append((section, f.name, _default(f), f.metadata["doc"]))
    return rows


# ---------------------------------------------------------------------------
# Reloading (SIGHUP): delivery policy changes at once; listeners, storage and keys need a restart.

RELOADABLE: frozenset[tuple[str, str]] = frozenset(
    {("server", "log_level")}
    | {
        ("delivery", key)
        for key in (
            "shaping",
            "routes",
            "tls",
            "tls_policy",
            "retry_schedule",
            "max_age",
            "concurrency",
            "idle_timeout",
            "max_rcpt_per_transaction",
        )
    }
)


def _changed(old: Config, new: Config) -> list[tuple[str, str]]:
    return [
        (section, f.name)
        for section in _SECTIONS
        for f in dataclasses.fields(getattr(old, section))
        if getattr(getattr(old, section), f.name) != getattr(getattr(new, section), f.name)
    ]


def restart_needed(old: Config, new: Config) -> list[str]:
    """The changed keys a reload cannot apply, as "section.key"."""
    return [f"{s}.{k}" for s, k in _changed(old, new) if (s, k) not in RELOADABLE]


def reloaded(old: Config, new: Config) -> Config:
    """``old`` with the reloadable keys taken from ``new``: the configuration now in force."""
    sections: dict[str, Any] = {}
    for section, key in _changed(old, new):
        if (section, key) in RELOADABLE:
            sections.setdefault(section, {})[key] = getattr(getattr(new, section), key)
    return dataclasses.replace(
        old, **{s: dataclasses.replace(getattr(old, s), **values) for s, values in sections.items()}
    )
