"""The Settings page: the configuration in force, read-only, secrets masked as relay check-config masks them."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from relay import config as config_mod
from relay.cli.check_config import check_config
from relay.dashboard import accounts
from relay.dashboard.app import make_dashboard
from relay.dashboard.deps import DashboardDeps
from relay.submission.auth import LocalFailures
from tests.browser import Dashboard, screenshot
from tests.conftest import config_dict

PASSWORD = "a good long password"


@pytest.fixture
async def served(store, tmp_path) -> AsyncIterator[tuple[str, config_mod.Config]]:
    """The dashboard alone, over a config with secrets in it (its store is the test's own)."""
    data = config_dict(
        tmp_path / "data",
        store={"url": "postgresql://relay:db-s3cret@db.internal:5432/relay"},
        delivery={
            "routes": {
                "partner.example": {
                    "smarthost": "smtp.partner.example:587",
                    "username": "u",
                    "password": "route-s3cret",
                }
            }
        },
    )
    config = config_mod.from_dict(data, environ={})
    deps = DashboardDeps(store, store.clock, config, LocalFailures(5, 60))
    await accounts.create_operator(store.operators, store.clock, "victor", "viewer", PASSWORD)
    app = web.Application()
    app.add_subapp("/dashboard", make_dashboard(deps))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}", config
    await runner.cleanup()


async def test_settings_show_every_section_with_secrets_masked_even_to_a_viewer(served):
    base, config = served
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        async with http.get(f"{base}/dashboard/login") as r:
            token = re.search(r'name="csrf_token" value="([^"]+)"', await r.text()).group(1)
        form = {"username": "victor", "password": PASSWORD, "csrf_token": token}
        async with http.post(f"{base}/dashboard/login", data=form) as r:
            assert r.status == 200
        async with http.get(f"{base}/dashboard/settings") as r:
            assert r.status == 200
            page = await r.text()
    assert "db-s3cret" not in page and "route-s3cret" not in page
    assert "postgresql://relay:***@db.internal:5432/relay" in page
    printed = check_config(None, config).text  # type: ignore[arg-type]
    for section in config_mod._SECTIONS:
        assert f'id="s-{section}"' in page, section
    assert "session_lifetime" in page and "&#34;12h&#34;" in page
    toml = re.search(r'<pre class="toml">(.*?)</pre>', page, re.S).group(1)
    assert toml.replace("&#34;", '"').replace("&amp;", "&").strip() == "\n".join(printed[1:]).strip(), (
        "the same text as relay check-config"
    )


def test_settings_page_in_the_browser(dashboard: Dashboard):
    page = dashboard.page
    dashboard.open(page, "Settings")
    assert page.url == dashboard.url("/dashboard/settings")
    assert page.get_by_role("heading", name="[dashboard]").is_visible()
    assert page.locator("#store-url").inner_text().startswith("sqlite:///")
    screenshot(page, "settings")
