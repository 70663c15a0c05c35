"""A dashboard page: its title in the nav, its path, and its routes (the page and its actions)."""

from __future__ import annotations

import dataclasses

from aiohttp import web


@dataclasses.dataclass(frozen=True)
class Page:
    title: str  # in the nav
    path: str  # under /dashboard: "/" is /dashboard/, "/settings" is /dashboard/settings
    routes: list[web.RouteDef]  # GET path, and whatever else the page serves (its POST actions, sub-pages)
