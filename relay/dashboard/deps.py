"""What the dashboard's pages reach: the objects relay/app.py made for the API, never copies of them."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from aiohttp import web

from relay.clock import Clock
from relay.config import Config
from relay.domains import Domains
from relay.renderer import Renderer
from relay.store.protocols import Storage
from relay.submission.auth import Failures, Turns
from relay.webhooks import WebhookSender


@dataclasses.dataclass(frozen=True)
class DashboardDeps:
    store: Storage
    clock: Clock
    config: Config
    failures: Failures  # failed logins per address: SMTP AUTH's counting (relay.submission.auth)
    on_queue_change: Callable[[], None] = lambda: None  # wake the delivery engine (as QueuesView does)
    webhook_sender: WebhookSender | None = None
    domains: Domains | None = None
    renderer: Renderer | None = None
    login_turns: Turns = dataclasses.field(default_factory=Turns)  # one password check per address at a time


DEPS: web.AppKey[DashboardDeps] = web.AppKey("dashboard", DashboardDeps)


def deps(request: web.Request) -> DashboardDeps:
    return request.app[DEPS]
