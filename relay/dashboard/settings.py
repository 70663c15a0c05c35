"""Settings: the configuration in force, read-only, as ``relay check-config`` shows it (secrets masked)."""

from __future__ import annotations

import dataclasses

from aiohttp import web

from relay.config import describe
from relay.config_toml import effective, value_text
from relay.dashboard.access import signed_in
from relay.dashboard.deps import deps
from relay.dashboard.pages import Page
from relay.dashboard.render import render


@dataclasses.dataclass(frozen=True)
class Setting:
    key: str
    value: str  # as the config file writes it
    doc: str
    note: str = ""  # what an "auto" setting resolves to here


@signed_in
async def settings_page(request: web.Request) -> web.StreamResponse:
    config = deps(request).config
    shown = effective(config)  # the same function as relay check-config
    docs = {(section, key): doc for section, key, _, doc in describe()}
    notes = shown.notes
    tables = {
        name: [
            Setting(key, value_text(value), docs.get((name, key), ""), notes.get((name, key), ""))
            for key, value in values.items()
        ]
        for name, values in shown.sections.items()
    }
    return render(
        request,
        "settings.html",
        tables=tables,
        source=str(config.source or "(defaults)"),
        store=config.store_url.shown,
        toml=shown.toml(),
    )


PAGE = Page("Settings", "/settings", [web.get("/settings", settings_page)])
