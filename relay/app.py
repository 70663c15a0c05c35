"""The one wiring place: Config → store, submission, delivery → start and stop."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import gc
import ipaddress
import logging
import os
import random
import signal
import socket
import ssl
import tempfile
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from relay import __version__, dkim, tls, workers
from relay import config as config_mod
from relay.bounces.verp import Verp
from relay.clock import Clock, SystemClock
from relay.config import Config, reloaded, restart_needed
from relay.delivery.mx import Router, make_resolver
from relay.dkim import Signer
from relay.domains import VERIFIED, Checker, Domains, SendingDomains
from relay.domains import Policy as DomainPolicy
from relay.errors import StoreError
from relay.listening import AcceptorLoad, BuiltOnFirstUse, OverflowServer
from relay.nodes import HEARTBEAT_SECONDS, NodeInfo
from relay.ratelimit import limiter_for, shared_counters
from relay.secrets import Keyring, Sealer, SecretsError, load_key_file
from relay.startup import (
    EX_CANTCREAT,
    EX_CONFIG,
    EX_IOERR,
    EX_OSERR,
    OTHER_FILES,
    StartupError,
    check_installed,
    raise_open_files_limit,
    reason,
)
from relay.store import Store
from relay.store.protocols import Storage
from relay.store.repositories import SqlStore
from relay.suppression import SuppressionPolicy
from relay.webhooks import SenderSettings, WebhookSender

if TYPE_CHECKING:  # imported where used: an acceptor process neither delivers nor takes returned mail, and a
    # main process whose acceptor processes serve SMTP and HTTP runs neither the API nor templates
    import dns.asyncresolver
    from aiohttp import web

    from relay.api.connections import ConnectionGuard
    from relay.delivery.engine import Engine, EngineSettings
    from relay.inbound.returned import ReturnedMail
    from relay.renderer import Renderer
    from relay.submission.accept import Acceptor
    from relay.submission.capacity import Capacity
    from relay.submission.smtp import ConnectionFactory, Sessions

log = logging.getLogger("relay")

SMTP_DRAIN_SECONDS = 10.0  # on stop, time for SMTP transactions in progress to complete
ORPHAN_DRAIN_SECONDS = 3.0  # the same for an acceptor whose main process has died
ORPHAN_STOP_SECONDS = 10.0  # ...which then exits, stopped cleanly or not, within this long
ACCEPTORS_READY_SECONDS = 30.0  # "relay started" waits this long at most for the acceptors to listen
HOUSEKEEPING_SECONDS = 600.0
DOMAINS_CHECK_SECONDS = 1.0  # sending domains changed by another process or node are seen within this long
DOMAINS_REFRESH_SECONDS = 30.0  # ...and loaded again this often regardless (a notification may be missed)
VERP_SECRET = "verp"  # its name in the store's secrets


def node_id(data_dir: Path) -> str:
    """A stable id for this node, kept in the data dir: it owns this node's delivery leases."""
    path = data_dir / "node-id"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        value = f"node-{uuid.uuid4().hex[:12]}"
        path.write_text(value + "\n")
        return value


def _format(address: tuple[str, int]) -> str:
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _bind(host: str, port: int, key: str) -> socket.socket:
    """A listening socket, or a StartupError naming the address and the config key it comes from."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
        return socket.create_server((host, port), family=family, backlog=1024)
    except OSError as exc:
        raise StartupError(f"cannot listen on {_format((host, port))} ({key}): {reason(exc)}", EX_OSERR) from None


def _bind_all(addresses: list[tuple[str, int]], key: str, bound: list[socket.socket]) -> list[socket.socket]:
    """Bind each address; on a failure close what this start-up bound so far (``bound``), then raise."""
    socks = []
    try:
        for host, port in addresses:
            socks.append(_bind(host, port, key))
    except StartupError:
        for sock in [*bound, *socks]:
            sock.close()
        raise
    bound.extend(socks)
    return socks


def bind_listeners(config: Config) -> workers.Listeners:
    """Bind every configured port (port 0 picks a free one). Fails before anything else starts."""
    bound: list[socket.socket] = []
    return workers.Listeners(
        smtp=_bind_all(config.smtp.listen, "[smtp] listen", bound),
        smtps=_bind_all(config.smtp.tls_listen, "[smtp] tls_listen", bound),
        http=_bind_all([config.http.listen], "[http] listen", bound),
    )


def prepare_data_dir(path: Path) -> None:
    """Create the data directory if needed and make sure this process can write in it."""
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise StartupError(
            f"cannot write in the data directory {path} ([server] data_dir): {reason(exc)}", EX_CANTCREAT
        ) from None


def make_signer(config: Config) -> Signer:
    """DKIM keys from [dkim.domains] (the config loader has checked them); sending domains add theirs."""
    keys = {
        domain: dkim.load_key(domain, entry.selector, entry.private_key)
        for domain, entry in config.dkim.domains.items()
    }
    return Signer(keys)


def domain_policy(config: Config) -> DomainPolicy:
    bounce_domains = config.inbound.bounce_domains

    def aligned_bounce_domain(domain: str) -> str | None:
        return next((b for b in bounce_domains if b == domain or b.endswith("." + domain)), None)

    d = config.domains
    relayed = config.delivery.routes.get("*")
    smarthost = config.delivery.smarthost or (relayed.smarthost if relayed else None)
    return DomainPolicy(
        tuple(d.outbound_ips),
        d.spf_include,
        d.inbound_host or config.server.hostname,
        aligned_bounce_domain,
        config.server.hostname,
        _format(smarthost) if smarthost else "",
    )


def store_key_path(config: Config) -> Path:
    """``[store] secret_key_file``, or store.key in data_dir."""
    configured = config.store.secret_key_file
    return Path(configured) if configured else config.server.data_dir / "store.key"


def store_sealer(config: Config, create: bool = True) -> Sealer:
    """The key sealing the store's secrets (see :func:`store_key_path`; the one in data_dir is made if missing
    and ``create``). SecretsError when it cannot be used."""
    return load_key_file(store_key_path(config), create and not config.store.secret_key_file)


def make_domains(
    config: Config, store: Storage, sending: SendingDomains | None, sealer: Sealer | None = None
) -> Domains:
    """The sending domains' service; ``sealer``: another key than the configured one (relay store rekey)."""
    resolver = cast("dns.asyncresolver.Resolver", CheckingResolver(config.dns.nameservers, config.dns.timeout))
    checker = Checker(resolver, domain_policy(config))
    return Domains(
        store.domains,
        store.clock,
        Keyring(sealer or store_sealer(config), store.secrets),
        checker,
        sending,
        config.domains.selector,
        config.domains.key_bits,
    )


class CheckingResolver:
    """The resolver domain checks use, made at their first lookup: dnspython is ~4 MB in a process, and a
    process that accepts mail checks domains only when asked to. It keeps no cache: a record published a
    minute ago must be seen."""

    def __init__(self, nameservers: Sequence[tuple[str, int]], timeout: float) -> None:
        self._settings = (list(nameservers), timeout)

    @functools.cached_property
    def _resolver(self) -> dns.asyncresolver.Resolver:
        resolver = make_resolver(*self._settings)
        resolver.cache = None
        return resolver

    def __getattr__(self, name: str) -> Any:  # resolve(), nameservers, lifetime, ...: the resolver's own
        return getattr(self._resolver, name)


def suppression_policy(config: Config) -> SuppressionPolicy:
    s = config.suppression
    return SuppressionPolicy(s.soft_bounce_limit, s.soft_bounce_window, s.soft_bounce_suppression)


def open_store(config: Config, clock: Clock) -> SqlStore:
    """The store ``[store] url`` names: SQLite (the file in data_dir by default) or PostgreSQL."""
    where = config.store_url
    policy, redact = suppression_policy(config), config.retention.redact_subjects
    if where.backend == "postgresql":
        from relay.store.postgres import PgStore

        return PgStore(where.url, clock, policy, redact, config.store.pool_size, config.store.statement_timeout)
    return Store(config.db_path, clock, policy, redact)


def webhook_settings(config: Config) -> SenderSettings:
    w = config.webhooks
    return SenderSettings(
        timeout=w.timeout,
        max_concurrency=w.max_concurrency,
        max_rate=w.max_rate,
        disable_after=w.disable_after,
        allow_private_targets=w.allow_private_targets,
    )


async def make_verp(config: Config, store: Storage) -> Verp | None:
    """Return paths on the bounce domains, with the secret every node shares, sealed in the store.

    First, the store key is checked against the store (a StartupError if it cannot be used). A store
    without the VERP secret takes the one an earlier relay kept in data_dir (so return paths already
    sent still verify), else a new one; nodes starting at once end with the one stored first.
    """
    try:
        keyring = Keyring(store_sealer(config), store.secrets)
        await keyring.check()
        if not config.inbound.bounce_domains:
            return None
        secret = await keyring.shared(VERP_SECRET, lambda: _file_verp_secret(config.server.data_dir / "verp.key"))
    except SecretsError as exc:
        raise StartupError(str(exc), EX_CONFIG) from None
    return Verp(secret, config.inbound.bounce_domains)


def _file_verp_secret(path: Path) -> bytes:
    """The secret an earlier relay kept in data_dir, or a new one (no file is made any more)."""
    try:
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        return os.urandom(32)
    except (OSError, ValueError) as exc:
        raise SecretsError(f"cannot read the VERP secret {path}: {exc}") from None


def smtp_certificate(config: Config) -> tuple[str, str]:
    """The configured certificate and key, or a self-signed pair kept in the data dir (made on first start).

    The main process calls this before starting acceptor processes, so only one process ever creates it.
    """
    if config.smtp.tls_cert:
        return config.smtp.tls_cert, config.smtp.tls_key
    cert_path = config.server.data_dir / "tls" / "smtp.crt"
    key_path = config.server.data_dir / "tls" / "smtp.key"
    if not (cert_path.exists() and key_path.exists()):
        try:
            tls.write_self_signed(cert_path, key_path, config.server.hostname)
        except OSError as exc:
            raise StartupError(
                f"cannot create a self-signed certificate in {cert_path.parent} ([smtp] tls_cert "
                f"is empty): {reason(exc)}",
                EX_CANTCREAT,
            ) from None
        log.warning(
            "no [smtp] tls_cert configured: created a self-signed certificate for %s in %s",
            config.server.hostname,
            cert_path,
        )
    return str(cert_path), str(key_path)


def smtp_tls_context(config: Config) -> ssl.SSLContext:
    return server_tls_context("[smtp] tls_cert, tls_key", *smtp_certificate(config))


def server_tls_context(keys: str, cert: str, key: str) -> ssl.SSLContext:
    try:
        return tls.server_context(cert, key)
    except ssl.SSLError as exc:
        problem = "not a PEM certificate and its private key" + (f" ({exc.reason})" if exc.reason else "")
    except OSError as exc:
        problem = reason(exc)
    raise StartupError(f"cannot use the certificate {cert} with the key {key} ({keys}): {problem}", EX_CONFIG)


def open_store_for_serving(config: Config, clock: Clock) -> SqlStore:
    """The store, or a StartupError when the queue database cannot be opened."""
    try:
        return open_store(config, clock)
    except StoreError as exc:  # also "file is not a database", "unable to open database file", "no server"
        where = config.store_url
        shown = config.db_path if where.backend == "sqlite" else where.shown
        raise StartupError(f"cannot open the queue database {shown}: {exc}", EX_IOERR) from None


class BatchBuilders(concurrent.futures.Executor):
    """A pool of ``workers`` processes (forkserver: safe beside threads), made on the first call: an acceptor
    that never takes a big batch does not load multiprocessing."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.pool: concurrent.futures.ProcessPoolExecutor | None = None

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        if self.pool is None:
            import multiprocessing

            context = multiprocessing.get_context("forkserver")
            self.pool = concurrent.futures.ProcessPoolExecutor(self.workers, mp_context=context)
        return self.pool.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait, cancel_futures=cancel_futures)


class Relay:
    """SMTP submission, the HTTP API and the delivery engine; any of them in one process.

    ``accept=False``: bind the listeners but leave accepting to acceptor processes.
    ``deliver=False``: an acceptor; ``on_queued`` is told of each new message.
    ``accepting_processes``: how many processes of ``relay serve`` accept, this one included (they share
    the HTTP rate limits counted in memory); 1 for a relay made in-process, which starts no acceptors.
    """

    def __init__(
        self,
        config: Config,
        clock: Clock | None = None,
        *,
        accept: bool = True,
        deliver: bool = True,
        listeners: workers.Listeners | None = None,
        on_queued: Callable[[], None] | None = None,
        accepting_processes: int = 1,
    ) -> None:
        self.config = config
        self.accepting_processes = accepting_processes
        self.clock = clock or SystemClock()
        self.accept = accept
        self.deliver = deliver
        self.listeners = listeners
        self.on_queued = on_queued
        self.store: SqlStore | None = None
        self.engine: Engine | None = None
        self.smtp_servers: list[asyncio.Server | OverflowServer] = []
        self.smtp_factories: list[ConnectionFactory] = []  # STARTTLS, implicit TLS
        self.verp: Verp | None = None
        self.domains: Domains | None = None
        self._domains_task: asyncio.Task[None] | None = None
        self._domains_due = asyncio.Event()  # set: the sending domains are to be loaded again now
        self.webhook_sender: WebhookSender | None = None
        self._builders: BatchBuilders | None = None
        self.renderer: Renderer | None = None
        self._webhook_task: asyncio.Task[None] | None = None
        self.inbound_servers: list[asyncio.Server] = []
        self.returned: ReturnedMail | None = None
        self._inbound_sockets: list[socket.socket] = []
        self._smtp_tls: ssl.SSLContext | None = None
        self._http_tls: ssl.SSLContext | None = None
        self.inbound_addresses: list[tuple[str, int]] = []
        self.smtp_sessions: Sessions | None = None  # the open SMTP connections, in a process that accepts
        self.capacity: Capacity | None = None
        self.smtp_addresses: list[tuple[str, int]] = []
        self.smtps_addresses: list[tuple[str, int]] = []
        self.http_address: tuple[str, int] | None = None
        self._http_runner: web.AppRunner | None = None
        self.http_overflow: list[OverflowServer] = []  # the main process beside acceptor processes
        self.acceptor_load = AcceptorLoad()  # when the overflow servers take what the acceptors leave waiting
        self._engine_task: asyncio.Task[None] | None = None
        self._housekeeping_task: asyncio.Task[None] | None = None
        self._heartbeat_task: asyncio.Task[None] | None = None
        self.node: str | None = None  # this node's id once registered (the process that delivers)

    @property
    def takes_overflow(self) -> bool:
        """Whether this process takes only the connections its acceptor processes leave waiting: the main
        process, when it accepts beside them (relay.listening)."""
        return self.deliver and self.accept and self.accepting_processes > 1

    def _acquire(self) -> SqlStore:
        """What start-up can fail on, in order, before anything runs: the data directory, the ports, the
        certificates, the queue database. A failure raises StartupError and releases what was taken."""
        config = self.config
        prepare_data_dir(config.server.data_dir)
        if self.listeners is None:  # this process owns the ports
            self.listeners = bind_listeners(config)
        try:
            if self.deliver and config.inbound.listen:
                self._inbound_sockets = _bind_all(config.inbound.listen, "[inbound] listen", [])
            self._smtp_tls = smtp_tls_context(config)  # made here (once) if self-signed: acceptors start later
            if self.accept and config.http.tls_cert:
                self._http_tls = server_tls_context(
                    "[http] tls_cert, tls_key", config.http.tls_cert, config.http.tls_key
                )
            return open_store_for_serving(config, self.clock)
        except StartupError:
            for sock in [*self.listeners.all(), *self._inbound_sockets]:
                sock.close()
            raise

    async def start(self) -> None:
        config = self.config
        self.store = store = self._acquire()
        assert self.listeners is not None
        self.smtp_addresses = [sock.getsockname()[:2] for sock in self.listeners.smtp]
        self.smtps_addresses = [sock.getsockname()[:2] for sock in self.listeners.smtps]
        self.http_address = self.listeners.http[0].getsockname()[:2]
        self.verp = await make_verp(config, store) if self.deliver else None
        if self.deliver:
            self.webhook_sender = WebhookSender(store, self.clock, webhook_settings(config))
        on_queued = self.on_queued or (lambda: None)
        # Keys sign where mail leaves (the engine: what is not signed yet) and where it is accepted (sandboxed
        # mail, or all of it with [dkim] sign_at = "acceptance").
        signer = make_signer(config)
        sending = SendingDomains(signer, config.domains.require_verified_domain)
        self.domains = make_domains(config, store, sending)
        await self.domains.refresh()
        self._domains_task = asyncio.create_task(self._refresh_domains(), name="domains")
        if self.deliver:
            self.engine = self._make_engine(store, signer)
            on_queued = self.engine.wake
            store.queue.watch(self.engine.wake)  # another node's new mail (a shared PostgreSQL)
        if self.accept:  # imported here: a main process whose acceptor processes accept never loads aiosmtpd
            from relay.submission.accept import Acceptor
            from relay.submission.budget import InflightBudget
            from relay.submission.capacity import Capacity

            self.capacity = Capacity(
                store.queue, config.server.data_dir, config.server.max_queue, config.server.min_free_disk
            )
            await self.capacity.refresh()
            self.capacity.start()
            acceptor = Acceptor(
                store,
                config.smtp.max_message_size,
                on_queued=on_queued,
                capacity=self.capacity,
                signer=signer,
                sending=sending,
                sandbox=config.delivery.mode == "sandbox",
                budget=InflightBudget(config.server.max_inflight_bytes),
                sign_all=config.dkim_signs_at == "acceptance",
            )
            await self._start_smtp(acceptor, self.listeners)
            await self._start_http(acceptor, store, self.listeners.http)
        if self.deliver and config.inbound.listen:
            await self._start_inbound(store)
        for address in self.smtp_addresses:
            log.info("listening for SMTP on %s", _format(address))
        for address in self.smtps_addresses:
            log.info("listening for SMTP with implicit TLS on %s", _format(address))
        log.info("listening for HTTP on %s", _format(self.http_address))
        if self.engine is not None:
            await self._register_node(store)
            self._engine_task = asyncio.create_task(self.engine.run(), name="delivery-engine")
            self._housekeeping_task = asyncio.create_task(self._housekeeping(), name="housekeeping")
        if self.deliver and self.webhook_sender is not None:
            self._webhook_task = asyncio.create_task(self.webhook_sender.run(), name="webhooks")
        if self.deliver and self.accept and self.accepting_processes == 1:  # alone: ready now
            await self.announce()  # else serve() says it once the acceptor processes answer

    async def announce(self) -> None:
        """The start-up lines of a relay that accepts and delivers: its modes, then "relay started"."""
        config = self.config
        assert self.store is not None
        route = f"smarthost {_format(config.delivery.smarthost)}" if config.delivery.smarthost else "MX"
        route += " (sandbox mode: only for mail accepted live)" if config.delivery.mode == "sandbox" else ""
        await self._warn_about_modes(self.store)
        where = config.db_path if config.store_url.backend == "sqlite" else config.store_url.shown
        log.info("relay started: hostname %s, data %s, delivery via %s", config.server.hostname, where, route)

    async def _warn_about_modes(self, store: SqlStore) -> None:
        """Loud start-up lines for what surprises a new user: mail that is not delivered, mail that is refused."""
        if self.config.delivery.mode == "sandbox":
            log.warning(
                "sandbox mode: mail is captured, not delivered; read it with relay sandbox list"
                " or GET /v1/sandbox/messages"
            )
        if self.config.domains.require_verified_domain:
            verified = ", ".join(d.name for d in await store.domains.list_all() if d.status == VERIFIED) or "none yet"
            log.warning(
                "[domains] require_verified_domain is on: mail From: a domain that is not a verified sending"
                " domain is refused (SMTP 550 5.7.1, HTTP 422 domain_not_verified); verified: %s. Add one with"
                " relay domains add DOMAIN, or set require_verified_domain = false"
                " (RELAY_DOMAINS_REQUIRE_VERIFIED_DOMAIN=false) to send without",
                verified,
            )

    async def _register_node(self, store: SqlStore) -> None:
        """This node in the store's list of nodes (relay nodes, GET /v1/nodes), beating while it runs."""
        self.node = node_id(self.config.server.data_dir)
        await store.nodes.register(NodeInfo(self.node, socket.gethostname(), __version__, os.getpid()))
        self._heartbeat_task = asyncio.create_task(self._heartbeat(store, self.node), name="heartbeat")

    async def _heartbeat(self, store: SqlStore, node: str) -> None:
        while True:
            await self.clock.sleep(HEARTBEAT_SECONDS)
            try:
                await store.nodes.beat(node)
            except Exception:
                log.exception("could not record this node's heartbeat")

    async def _housekeeping(self) -> None:
        """Periodic clean-up: expired Idempotency-Key records, rate counters and dashboard sessions, then events
        and bodies past their retention."""
        assert self.store is not None
        while True:
            try:
                pruned = await self.store.idempotency.prune()
                if pruned:
                    log.info("pruned %d expired idempotency records", pruned)
                await self.store.rate_counters.prune(self.clock.now())
                await self.store.operators.prune_sessions()
                await self.prune_history()
            except Exception:
                log.exception("housekeeping failed")
            await self.clock.sleep(HOUSEKEEPING_SECONDS)

    async def _refresh_domains(self) -> None:
        """Keys and verified domains changed by another process, node or the CLI are loaded within
        DOMAINS_CHECK_SECONDS: the store's count of domain changes is read that often (a read of memory
        shared by the machine's processes; PostgreSQL: moved by the other nodes' notifications). At once
        when an acceptor of this node says so (:meth:`domains_changed`), and every DOMAINS_REFRESH_SECONDS
        regardless."""
        assert self.store is not None
        changes = self.store.domains.changes()
        seen, loaded = changes(), self.clock.monotonic()
        while True:
            await self.clock.wait(self._domains_due, DOMAINS_CHECK_SECONDS)
            if not (
                self._domains_due.is_set()
                or changes() != seen
                or self.clock.monotonic() - loaded >= DOMAINS_REFRESH_SECONDS
            ):
                continue
            self._domains_due.clear()
            seen, loaded = changes(), self.clock.monotonic()  # a change during the reading is seen next time
            try:
                assert self.domains is not None
                await self.domains.refresh()
            except Exception:
                log.exception("could not refresh sending domains")

    def _sending_domains(self) -> Domains:
        """The sending domains' service start() made (every process has one: keys sign where mail leaves)."""
        if self.domains is None:
            raise RuntimeError("the sending domains are made by start()")
        return self.domains

    def domains_changed(self) -> None:
        """Another process of this node changed the sending domains' keys: load them now."""
        self._domains_due.set()

    async def prune_history(self) -> tuple[int, int]:
        """Delete events and bodies older than [retention] allows, in batches (other writers go between)."""
        assert self.store is not None
        r, now = self.config.retention, self.clock.now()
        events = bodies = 0
        while True:
            e, b = await self.store.events.prune_history(now - r.events, now - r.bodies)
            events, bodies = events + e, bodies + b
            if not e and not b:
                break
        if events or bodies:
            log.info("retention: pruned %d events and webhook log rows, %d message bodies", events, bodies)
        return events, bodies

    def _make_engine(self, store: SqlStore, signer: Signer | None = None) -> Engine:
        from relay.delivery.client import SmtpClient
        from relay.delivery.engine import Engine

        d = self.config.delivery
        needs_dns = not d.smarthost and "*" not in d.routes
        resolver = make_resolver(self.config.dns.nameservers, self.config.dns.timeout) if needs_dns else None
        router = Router(d.smarthost, d.mx_port, resolver, routes=d.routes)
        client = SmtpClient(self.config.server.hostname, d.connect_timeout, d.command_timeout, self.clock)
        cluster = self.config.store_url.backend == "postgresql"  # per-site limits hold for every node sharing it
        settings = self._engine_settings(self.config)
        return Engine(store, router, client, self.clock, settings, random.Random(), cluster=cluster, signer=signer)

    def _engine_settings(self, config: Config) -> EngineSettings:
        from relay.delivery.engine import EngineSettings
        from relay.delivery.retry import RetryPolicy

        d = config.delivery
        return EngineSettings(
            owner=node_id(config.server.data_dir),
            concurrency=d.concurrency,
            lease=d.lease,
            poll_interval=d.poll_interval,
            retry=RetryPolicy(tuple(d.retry_schedule), d.max_age),
            window=max(1000, d.concurrency * 10),
            max_bytes=config.server.max_inflight_bytes,
            idle_timeout=d.idle_timeout,
            max_rcpt=d.max_rcpt_per_transaction,
            tls=d.tls,
            tls_policy=d.tls_policy,
            shaping=d.shaping,
            verp=self.verp if config.inbound.verp else None,
        )

    def reload(self, new: Config) -> list[str]:
        """Apply what can change while running (SIGHUP); returns the changed keys that need a restart."""
        d = new.delivery
        if self.engine is not None:
            self.engine.reconfigure(self._engine_settings(new), d.routes)
        logging.getLogger().setLevel(new.server.log_level.upper())
        pending = restart_needed(self.config, new)
        self.config = reloaded(self.config, new)
        return pending

    async def _start_smtp(self, acceptor: Acceptor, listeners: workers.Listeners) -> None:
        from relay.admission import ConnectionCounts
        from relay.submission.auth import SharedFailures, SmtpAuthenticator
        from relay.submission.smtp import Policy, Sessions, SubmissionHandler, make_smtp_factory

        assert self.store is not None
        loop = asyncio.get_running_loop()
        s = self.config.smtp
        store = self.store
        shared = SharedFailures(store.rate_counters, s.max_auth_failures, s.auth_failure_window)
        authenticator = SmtpAuthenticator(
            store.credentials,
            self.clock,
            s.max_auth_failures,
            s.auth_failure_window,
            shared if shared_counters(store.backend) else None,
        )
        limiter = limiter_for(store.backend, store.rate_counters, "smtp")
        handler = SubmissionHandler(acceptor, Policy.from_config(self.config), self.clock, authenticator, limiter)
        context = self._smtp_tls
        assert context is not None
        sessions = self.smtp_sessions = Sessions(ConnectionCounts(s.max_connections_per_ip, s.max_connections))
        starttls = make_smtp_factory(handler, self.config, sessions, context)
        implicit = make_smtp_factory(handler, self.config, sessions, context, implicit_tls=True)
        self.smtp_factories = [starttls, implicit]
        if self.takes_overflow:
            delay = self.acceptor_load.delay
            self.smtp_servers += [OverflowServer(sock, starttls, delay=delay) for sock in listeners.smtp]
            self.smtp_servers += [OverflowServer(sock, implicit, context, delay) for sock in listeners.smtps]
            return
        for sock in listeners.smtp:
            self.smtp_servers.append(await loop.create_server(starttls, sock=sock, backlog=1024))
        for sock in listeners.smtps:
            self.smtp_servers.append(await loop.create_server(implicit, sock=sock, backlog=1024, ssl=context))

    async def _start_inbound(self, store: SqlStore) -> None:
        """Returned mail (bounces, complaints) on [inbound] listen; the process that delivers runs it."""
        from relay.inbound.returned import ReturnedMail, make_inbound_factory

        inbound = self.config.inbound
        returned = self.returned = ReturnedMail(store, self.verp, inbound.feedback_addresses)
        factory = make_inbound_factory(
            returned,
            self.config.server.hostname,
            inbound.max_message_size,
            self.config.smtp.idle_timeout,
            self._smtp_tls,
            inbound.max_connections_per_ip,
            inbound.max_connections,
        )
        loop = asyncio.get_running_loop()
        for sock in self._inbound_sockets:
            server = await loop.create_server(factory, sock=sock, backlog=1024)
            self.inbound_servers.append(server)
            address = server.sockets[0].getsockname()[:2]
            self.inbound_addresses.append(address)
            domains, feedback = ", ".join(inbound.bounce_domains) or "-", ", ".join(inbound.feedback_addresses) or "-"
            log.info(
                "listening for returned mail on %s (bounce domains: %s; feedback: %s)",
                _format(address),
                domains,
                feedback,
            )

    async def _start_http(self, acceptor: Acceptor, store: SqlStore, sockets: list[socket.socket]) -> None:
        """The HTTP API on ``sockets``. Beside acceptor processes the main process builds it only once it takes
        a connection they left waiting: until then it need not load aiohttp's server and the API (~14 MB)."""
        if self.takes_overflow:
            server = BuiltOnFirstUse(lambda: self._http_factory(acceptor, store))
            delay = self.acceptor_load.delay
            self.http_overflow = [OverflowServer(sock, server, self._http_tls, delay) for sock in sockets]
            return
        from relay.api.connections import GuardedSite

        guard = await self._build_http(acceptor, store)
        assert self._http_runner is not None
        for sock in sockets:
            site = GuardedSite(self._http_runner, sock, guard, backlog=1024, ssl_context=self._http_tls)
            await site.start()

    async def _http_factory(self, acceptor: Acceptor, store: SqlStore) -> Callable[[], asyncio.Protocol]:
        guard = await self._build_http(acceptor, store)
        assert self._http_runner is not None and self._http_runner.server is not None
        return guard.factory(self._http_runner.server)

    async def _build_http(self, acceptor: Acceptor, store: SqlStore) -> ConnectionGuard:
        """The API's application and runner (``self._http_runner``); returns the guard its connections pass.
        Imported here: a main process whose acceptor processes serve HTTP never loads the API, aiohttp's server
        or the template renderer (jinja2)."""
        from aiohttp import web

        from relay.api.app import BODY_BUDGET, ApiSettings, BodyBudget, make_app
        from relay.api.connections import ConnectionGuard, ConnectionLimits
        from relay.api.credentials import CredentialsView
        from relay.api.domains import DomainsView
        from relay.api.events import EventsView
        from relay.api.keys import KeysView
        from relay.api.messages import MessagesView
        from relay.api.nodes import NodesView
        from relay.api.queues import QueuesView
        from relay.api.sandbox import SandboxView
        from relay.api.suppressions import SuppressionsView
        from relay.api.templates import TemplatesView
        from relay.api.webhooks import WebhooksView
        from relay.compose import Limits
        from relay.renderer import Renderer
        from relay.submission.http import HttpSubmission

        http = self.config.http
        limits = Limits(max_recipients=http.max_recipients, max_attachments_size=http.max_attachments_size)
        server = self.config.server
        submission = HttpSubmission(
            acceptor,
            store,
            server.hostname,
            self.clock,
            limits,
            http.idempotency_ttl,
            server.max_schedule_ahead,
            http.max_batch,
        )
        # Big batches build their MIME messages in two worker processes (forkserver: safe beside threads).
        self._builders = BatchBuilders(2)
        submission.builders = self._builders
        self.renderer = submission.renderer = Renderer()  # template render processes, started when first needed
        messages = MessagesView(submission, store, self.clock)
        # The processes that accept share the rate limits, each counting its share in memory. On PostgreSQL the
        # limits are counted in the database instead, exactly, for every process and node.
        limiter = limiter_for(store.backend, store.rate_counters, "api", share=1 / self.accepting_processes)
        settings = ApiSettings(http.rate_limit, limiter, http.trust_proxy, http.require_tls, self.clock)
        queues = QueuesView(
            store.queue,
            on_change=self.engine.wake
            if self.engine
            else workers.WakeSender(workers.wake_address(self.config.db_path)),
        )
        if self.webhook_sender is None:  # an acceptor: a sender for test sends only (the main process drains)
            self.webhook_sender = WebhookSender(store, self.clock, webhook_settings(self.config))
        sender = self.webhook_sender
        routes = [
            *messages.routes(),
            *KeysView(store.keys, self.clock).routes(),
            *CredentialsView(store.credentials, self.clock).routes(),
            *queues.routes(),
            *SuppressionsView(store.suppressions).routes(),
            *EventsView(store, self.clock).routes(),
            *WebhooksView(store.webhooks, self.clock, sender).routes(),
            *TemplatesView(store, self.renderer).routes(),
            *DomainsView(self._sending_domains()).routes(),
            *SandboxView(store.queue).routes(),
            *NodesView(store.nodes, self.clock).routes(),
            web.get("/metrics", self._metrics),
        ]

        guard = ConnectionGuard(
            ConnectionLimits(
                http.header_timeout,
                http.body_timeout,
                http.keepalive_timeout,
                http.max_connections_per_ip,
                http.max_connections,
            )
        )
        app = make_app(store, settings, routes, max_body=http.max_body_size, outer=[guard.middleware])
        if self.config.dashboard.enabled:
            self._mount_dashboard(app, store, queues.on_change, sender)
        if acceptor.budget is not None:
            app[BODY_BUDGET] = BodyBudget(acceptor.budget, http.max_body_size)
        self._http_runner = runner = web.AppRunner(
            app, access_log=None, handle_signals=False, keepalive_timeout=http.keepalive_timeout
        )
        await runner.setup()
        return guard

    def _mount_dashboard(
        self, app: web.Application, store: SqlStore, on_change: Callable[[], None], sender: WebhookSender
    ) -> None:
        """The dashboard at /dashboard/, over the same objects as the API (relay/dashboard)."""
        from relay.dashboard import app as dashboard
        from relay.dashboard.deps import DashboardDeps

        s = self.config.smtp
        failures = dashboard.failures_for(
            store.backend, store.rate_counters, s.max_auth_failures, s.auth_failure_window
        )
        deps = DashboardDeps(
            store, self.clock, self.config, failures, on_change, sender, self._sending_domains(), self.renderer
        )
        dashboard.mount(app, deps)

    async def _metrics(self, request: web.Request) -> web.Response:
        """Prometheus text format; no API key, but only for [http] metrics_networks."""
        from aiohttp import web

        from relay.api.app import client_ip
        from relay.metrics import render

        ip = client_ip(request, self.config.http.trust_proxy)
        if not any(ipaddress.ip_address(ip) in net for net in self.config.http.metrics_networks):
            return web.json_response(
                {"error": {"code": "forbidden", "message": "not allowed to read metrics"}}, status=403
            )
        assert self.store is not None
        sessions = self.smtp_sessions
        body = await render(self.store, lambda: len(sessions.open) if sessions is not None else 0)
        return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    async def stop_listening(self) -> None:
        """Take no new connection (SMTP, HTTP, returned mail); those open go on."""
        for server in [*self.smtp_servers, *self.http_overflow, *self.inbound_servers]:
            server.close()
        if self._http_runner is not None:
            for site in list(self._http_runner.sites):  # requests already in progress go on
                await site.stop()

    async def stop(self, drain: float = SMTP_DRAIN_SECONDS) -> None:
        """Stop listening at once (SMTP and HTTP), give SMTP transactions in progress up to ``drain`` seconds
        (at most shutdown_grace), let deliveries finish within the grace period, release leases, close the
        store."""
        await self.stop_listening()
        if self.smtp_sessions is not None:
            await self.smtp_sessions.drain(min(self.config.server.shutdown_grace, drain))
        if self._http_runner is not None:
            await self._http_runner.cleanup()
        if self.capacity is not None:
            await self.capacity.stop()
        if self._builders is not None:
            self._builders.shutdown(wait=False, cancel_futures=True)
        if self.renderer is not None:
            await self.renderer.close()
        if self.returned is not None:
            self.returned.close()
        if self.engine is not None:
            await self.engine.stop(self.config.server.shutdown_grace)
        if self._engine_task is not None:
            await asyncio.gather(self._engine_task, return_exceptions=True)
        if self._domains_task is not None:
            self._domains_task.cancel()
            await asyncio.gather(self._domains_task, return_exceptions=True)
        if self.webhook_sender is not None:
            await self.webhook_sender.stop()
        if self._webhook_task is not None:
            await asyncio.gather(self._webhook_task, return_exceptions=True)
        if self._housekeeping_task is not None:
            self._housekeeping_task.cancel()
            await asyncio.gather(self._housekeeping_task, return_exceptions=True)
        if self._heartbeat_task is not None:
            self._heartbeat_task.cancel()
            await asyncio.gather(self._heartbeat_task, return_exceptions=True)
        if self.store is not None and self.node is not None:
            try:
                await self.store.nodes.stop(self.node)
            except Exception:
                log.exception("could not record that this node stopped")
        if self.store is not None:
            await self.store.close()
        if self.listeners is not None:
            self.listeners.close()
        log.info("relay stopped" if self.deliver else "acceptor stopped")


def _install_stop_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


def reload_from_disk(relay: Relay) -> None:
    """SIGHUP: read the config file again; apply it if it is valid, keep running on the old one if not."""
    if relay.config.source is None:
        log.warning("SIGHUP ignored: this configuration was not read from a file")
        return
    try:
        new = config_mod.load(relay.config.source)

    except config_mod.ConfigError as exc:
        log.error("reload refused, still running on the previous configuration: %s", exc)
        return
    pending = relay.reload(new)
    log.info("configuration reloaded from %s", relay.config.source)
    if pending:
        log.warning("changed but not applied until a restart: %s", ", ".join(pending))


def set_aside_startup_objects() -> None:
    """Keep the cycle collector off what start-up made (modules, classes, configuration: ~70,000 objects).

    They live as long as the process, yet each collection of the oldest generation walked them all: under
    load (bench/latency.py, 5,000 messages) each relay process paused 22-52 ms for it a few times; with them
    set aside (``gc.freeze``) such a collection takes ~2 ms. Only for
    ``relay serve``'s processes: a process that embeds relay keeps its own collector settings."""
    gc.freeze()


async def _serve_as_acceptor(config: Config, inherited: workers.Listeners) -> int:
    """Accept on the sockets the main process passed down, until SIGTERM or until the main process dies."""
    parent = workers.expected_parent()
    workers.set_parent_death_signal()  # first: from here on the main process's death sends SIGTERM
    stop = _install_stop_signals()
    watch = workers.ParentWatch(parent, stop.set) if parent is not None else None
    if watch is not None and watch.gone():  # it died before that: nobody would deliver
        log.warning("the main process (pid %d) has gone: this acceptor does not start", parent)
        inherited.close()
        return 0
    # A reload is the main process's business (it holds the delivery policy); survive a stray HUP.
    asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, lambda: None)
    watching = asyncio.create_task(watch.run(), name="parent-watch") if watch is not None else None
    wake = workers.WakeSender(workers.wake_address(config.db_path), workers.LoopLoad())

    processes = config.server.accepting_processes
    relay = Relay(config, deliver=False, listeners=inherited, on_queued=wake, accepting_processes=processes)
    await relay.start()
    if relay.domains is not None:
        relay.domains.on_change = wake.domains_changed
    set_aside_startup_objects()
    wake.ready()
    await stop.wait()
    if watching is not None:
        watching.cancel()
    if watch is None or not watch.gone():  # stopped by SIGTERM while the main process lives: the usual stop
        await relay.stop()
        return 0
    log.warning("the main process (pid %d) has gone: stopped listening; finishing transactions in progress", parent)
    try:  # what was acknowledged is in the queue; a new main process delivers it
        await asyncio.wait_for(relay.stop(drain=ORPHAN_DRAIN_SECONDS), ORPHAN_STOP_SECONDS)
    except TimeoutError:
        log.error("acceptor did not stop within %.0fs of its main process's death: exiting", ORPHAN_STOP_SECONDS)
        os._exit(1)
    return 0


def _open_files_for(config: Config) -> None:
    """Room for the connections the limits let in, and the delivery's own (see raise_open_files_limit)."""
    c = config
    inbound = c.inbound.max_connections if c.inbound.listen else 0
    needed = c.smtp.max_connections + c.http.max_connections + inbound + c.delivery.concurrency + OTHER_FILES
    short = raise_open_files_limit(needed)
    if short is not None:
        log.warning(
            "open files are limited to %d (ulimit -n, LimitNOFILE=): the connection limits let in %d connections;"
            " past the limit a connection is refused by the system, not answered",
            short,
            needed - OTHER_FILES,
        )


async def serve(config: Config) -> int:
    """Run until SIGTERM or SIGINT, then stop cleanly.

    With ``[server] acceptors = 0`` one process does everything. With N > 0
    this main process binds the ports and delivers, and N acceptor processes
    (see relay.workers) accept on the inherited sockets; with ``main_accepts``
    (the default) this one takes the connections they leave waiting
    (relay.listening).
    """
    check_installed()
    _open_files_for(config)
    inherited = workers.inherited_listeners()
    if inherited is not None:  # this is an acceptor process
        return await _serve_as_acceptor(config, inherited)
    stop = _install_stop_signals()

    server = config.server
    acceptors = server.acceptor_processes
    relay = Relay(config, accept=server.main_process_accepts, accepting_processes=server.accepting_processes)
    await relay.start()
    set_aside_startup_objects()
    asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, reload_from_disk, relay)
    if server.acceptors == "auto":  # after start-up problems (one line each, see relay.startup)
        too = "; the main process takes what they leave waiting" if acceptors and server.main_process_accepts else ""
        log.info(
            '[server] acceptors = "auto": %d acceptor processes (%d cores)%s',
            acceptors,
            config_mod.available_cores(),
            too,
        )

    supervisor = listener = None
    if acceptors > 0:
        assert relay.engine is not None and relay.listeners is not None
        address = workers.wake_address(config.db_path)
        listener = workers.WakeListener(
            address, relay.engine.wake, relay.acceptor_load.report_saturated, relay.domains_changed
        )
        supervisor = workers.Supervisor(acceptors, config.source, relay.listeners, relay.clock)
        supervisor.start()
        try:
            async with asyncio.timeout(ACCEPTORS_READY_SECONDS):
                await listener.wait_ready(acceptors)
        except TimeoutError:
            log.warning(
                "acceptor processes not all answering after %.0fs; connections wait for them", ACCEPTORS_READY_SECONDS
            )
        await relay.announce()
    await stop.wait()
    log.info("stopping")
    await relay.stop_listening()  # at once, as the acceptors do on the same SIGTERM
    if supervisor is not None:
        await supervisor.stop(config.server.shutdown_grace)
    if listener is not None:
        listener.close()
    await relay.stop()
    return 0
