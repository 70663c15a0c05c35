"""The one wiring place: Config → store, submission, delivery → start and stop."""

from __future__ import annotations

import asyncio
import logging
import random
import signal
import uuid
from pathlib import Path

from aiohttp import web

from relay.api import make_app
from relay.clock import Clock, SystemClock
from relay.config import Config
from relay.delivery.client import SmtpClient
from relay.delivery.engine import Engine, EngineSettings
from relay.delivery.mx import Router, make_resolver
from relay.delivery.retry import RetryPolicy
from relay.store import Store
from relay.submission.accept import Acceptor
from relay.submission.http import MessagesView
from relay.submission.smtp import SubmissionHandler, make_smtp_factory

log = logging.getLogger("relay")


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


class Relay:
    """SMTP submission, the HTTP API and the delivery engine in one process."""

    def __init__(self, config: Config, clock: Clock | None = None) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.store: Store | None = None
        self.engine: Engine | None = None
        self.smtp_servers: list[asyncio.Server] = []
        self.smtp_addresses: list[tuple[str, int]] = []
        self.http_address: tuple[str, int] | None = None
        self._http_runner: web.AppRunner | None = None
        self._engine_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        config = self.config
        config.server.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.store = store = Store(config.db_path, self.clock)
        self.engine = engine = self._make_engine(store)
        acceptor = Acceptor(store, config.smtp.max_message_size, on_queued=engine.wake)
        await self._start_smtp(acceptor)
        await self._start_http(acceptor, store)
        self._engine_task = asyncio.create_task(engine.run(), name="delivery-engine")
        route = f"smarthost {_format(config.delivery.smarthost)}" if config.delivery.smarthost else "MX"
        log.info("relay started: hostname %s, data %s, delivery via %s", config.server.hostname, config.db_path, route)

    def _make_engine(self, store: Store) -> Engine:
        d = self.config.delivery
        resolver = None if d.smarthost else make_resolver(self.config.dns.nameservers, self.config.dns.timeout)
        router = Router(d.smarthost, d.mx_port, resolver)
        client = SmtpClient(self.config.server.hostname, d.connect_timeout, d.command_timeout)
        settings = EngineSettings(
            owner=node_id(self.config.server.data_dir),
            concurrency=d.concurrency,
            lease=d.lease,
            poll_interval=d.poll_interval,
            retry=RetryPolicy(d.retry_initial, d.retry_max, d.max_queue_lifetime),
        )
        return Engine(store, router, client, self.clock, settings, random.Random())

    async def _start_smtp(self, acceptor: Acceptor) -> None:
        loop = asyncio.get_running_loop()
        handler = SubmissionHandler(acceptor, self.config, self.clock)
        factory = make_smtp_factory(handler, self.config)
        for host, port in self.config.smtp.listen:
            server = await loop.create_server(factory, host, port, reuse_address=True)
            self.smtp_servers.append(server)
            for sock in server.sockets:
                address = sock.getsockname()[:2]
                self.smtp_addresses.append(address)
                log.info("listening for SMTP on %s", _format(address))

    async def _start_http(self, acceptor: Acceptor, store: Store) -> None:
        view = MessagesView(acceptor, self.config.server.hostname, self.clock, self.config.smtp.max_recipients)
        app = make_app(store, view.routes(), max_body=self.config.smtp.max_message_size * 2)
        self._http_runner = runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        host, port = self.config.http.listen
        site = web.TCPSite(runner, host, port, reuse_address=True)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.http_address = sockets[0].getsockname()[:2] if sockets else (host, port)
        log.info("listening for HTTP on %s", _format(self.http_address))

    async def stop(self) -> None:
        """Stop accepting, let deliveries finish within the grace period, release leases, close the store."""
        for server in self.smtp_servers:
            server.close()
        if self._http_runner is not None:
            await self._http_runner.cleanup()
        if self.engine is not None:
            await self.engine.stop(self.config.server.shutdown_grace)
        if self._engine_task is not None:
            await asyncio.gather(self._engine_task, return_exceptions=True)
        if self.store is not None:
            await self.store.close()
        log.info("relay stopped")


async def serve(config: Config) -> int:
    """Run until SIGTERM or SIGINT, then stop cleanly."""
    relay = Relay(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await relay.start()
    await stop.wait()
    log.info("stopping")
    await relay.stop()
    return 0
