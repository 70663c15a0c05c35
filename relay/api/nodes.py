"""``GET /v1/nodes`` (scope admin): the nodes serving this store, with their heartbeats (relay.nodes)."""

from __future__ import annotations

from aiohttp import web

from relay.api.app import require
from relay.clock import Clock
from relay.store.protocols import NodeStore


class NodesView:
    def __init__(self, store: NodeStore, clock: Clock) -> None:
        self.store = store
        self.clock = clock

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/v1/nodes", require("admin")(self.index))]

    async def index(self, request: web.Request) -> web.Response:
        """Newest start first: up (beating), silent (three beats missed), stopped."""
        now = self.clock.now()
        return web.json_response({"data": [n.as_json(now) for n in await self.store.list_all()]})
