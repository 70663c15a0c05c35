"""Dashboard access: login, throttling, sessions (expiry on the relay's clock, logout), CSRF, viewers,
security headers, static files. HTTP-level tests against an in-process relay on a virtual clock, then
browser tests against a real ``relay serve`` (tests/browser.py)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from relay.app import Relay
from relay.clock import VirtualClock
from relay.dashboard import access, accounts
from relay.dashboard import app as dashboard_app
from relay.dashboard.pages import Page
from relay.dashboard.render import render
from tests.browser import ADMIN_PASSWORD, VIEWER_PASSWORD, VIEWPORT, Dashboard, PageProblems, screenshot
from tests.conftest import make_config

PASSWORD = "a good long password"

# -- HTTP level --------------------------------------------------------------------------------------------


class Client:
    """A browser-like client of one relay: a cookie jar, and forms posted with the CSRF token they carry."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))

    async def get(self, path: str, **kwargs: Any) -> tuple[int, str, Any]:
        async with self.http.get(self.base + path, **kwargs) as r:
            return r.status, await r.text(), r

    async def post(self, path: str, data: dict[str, str], **kwargs: Any) -> tuple[int, str, Any]:
        async with self.http.post(self.base + path, data=data, allow_redirects=False, **kwargs) as r:
            return r.status, await r.text(), r

    async def csrf(self, path: str) -> str:
        status, text, _ = await self.get(path)
        assert status == 200, text
        found = re.search(r'name="csrf_token" value="([^"]+)"', text)
        assert found, text
        return found.group(1)

    async def login(self, name: str, password: str, next_path: str = "/dashboard/") -> tuple[int, str, Any]:
        token = await self.csrf("/dashboard/login")
        form = {"username": name, "password": password, "csrf_token": token, "next": next_path}
        return await self.post("/dashboard/login", form)

    async def close(self) -> None:
        await self.http.close()


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
async def relay(tmp_path, clock) -> AsyncIterator[Relay]:
    started = Relay(
        make_config(tmp_path / "data", smtp={"max_auth_failures": 3}, dashboard={"session_lifetime": "1h"}), clock
    )
    await started.start()
    assert started.store is not None
    await accounts.create_operator(started.store.operators, clock, "alice", "admin", PASSWORD)
    await accounts.create_operator(started.store.operators, clock, "victor", "viewer", PASSWORD)
    yield started
    await started.stop()


@pytest.fixture
async def client(relay) -> AsyncIterator[Client]:
    host, port = relay.http_address
    made = Client(f"http://{host}:{port}")
    yield made
    await made.close()


async def test_a_good_login_opens_a_session_cookie_that_is_httponly_and_strict(client):
    status, _, response = await client.login("alice", PASSWORD)
    assert (status, response.headers["Location"]) == (303, "/dashboard/")
    cookie = response.cookies[access.SESSION_COOKIE]
    assert cookie["httponly"] and cookie["samesite"] == "Strict" and cookie["path"] == "/dashboard"
    assert not cookie["secure"], "plain HTTP: the browser would not send a Secure cookie back"
    status, text, _ = await client.get("/dashboard/")
    assert status == 200 and "alice" in text and "Log out" in text


async def test_the_cookie_is_secure_over_https_behind_a_trusted_proxy(tmp_path, clock):
    relay = Relay(make_config(tmp_path / "data", http={"trust_proxy": True}), clock)
    await relay.start()
    try:
        await accounts.create_operator(relay.store.operators, clock, "alice", "admin", PASSWORD)
        client = Client("http://{}:{}".format(*relay.http_address))
        try:
            token = await client.csrf("/dashboard/login")
            form = {"username": "alice", "password": PASSWORD, "csrf_token": token}
            _, _, response = await client.post("/dashboard/login", form, headers={"X-Forwarded-Proto": "https"})
            assert response.cookies[access.SESSION_COOKIE]["secure"]
        finally:
            await client.close()
    finally:
        await relay.stop()


async def test_a_wrong_password_or_unknown_user_is_refused_and_opens_no_session(client):
    for name, password in [("alice", "not the password"), ("nobody", PASSWORD)]:
        status, text, response = await client.login(name, password)
        assert status == 401 and "wrong username or password" in text
        assert access.SESSION_COOKIE not in response.cookies
    status, _, response = await client.get("/dashboard/", allow_redirects=False)
    assert (status, response.headers["Location"]) == (303, "/dashboard/login?next=/dashboard/")


async def test_logins_are_throttled_per_address_after_max_auth_failures(client):
    for _ in range(3):
        assert (await client.login("alice", "wrong password!"))[0] == 401
    status, text, _ = await client.login("alice", PASSWORD)
    assert status == 429 and "too many failed sign-ins" in text, "even the right password, while throttled"


async def test_operators_signing_in_at_once_from_one_address_are_not_throttled(relay):
    """Six sign-ins at once from one address (an office behind one NAT), three failures allowed: the ones
    still being checked do not count as failures for the others."""
    host, port = relay.http_address
    clients = [Client(f"http://{host}:{port}") for _ in range(6)]
    try:
        names = ["alice" if i % 2 else "victor" for i in range(len(clients))]
        results = await asyncio.gather(*(c.login(name, PASSWORD) for c, name in zip(clients, names, strict=True)))
        assert [status for status, _, _ in results] == [303] * 6
    finally:
        for c in clients:
            await c.close()


async def test_logout_ends_the_session_and_the_old_cookie_no_longer_works(client):
    await client.login("alice", PASSWORD)
    old = client.http.cookie_jar.filter_cookies(aiohttp.client.URL(client.base + "/dashboard/"))
    token = old[access.SESSION_COOKIE].value
    csrf = await client.csrf("/dashboard/")
    status, _, response = await client.post("/dashboard/logout", {"csrf_token": csrf})
    assert (status, response.headers["Location"]) == (303, "/dashboard/login")
    status, _, _ = await client.get("/dashboard/", cookies={access.SESSION_COOKIE: token}, allow_redirects=False)
    assert status == 303, "the old cookie's session is gone on the server"


async def test_a_session_expires_on_the_relays_clock(client, clock):
    await client.login("alice", PASSWORD)
    assert (await client.get("/dashboard/", allow_redirects=False))[0] == 200
    clock.advance(3599)
    assert (await client.get("/dashboard/", allow_redirects=False))[0] == 200
    clock.advance(1)
    status, _, response = await client.get("/dashboard/", allow_redirects=False)
    assert status == 303 and response.headers["Location"].startswith("/dashboard/login")


async def test_a_post_without_the_csrf_token_is_refused(client):
    no_token = {"username": "alice", "password": PASSWORD}
    await client.get("/dashboard/login")  # the login cookie is set, the form field is missing
    status, text, _ = await client.post("/dashboard/login", no_token)
    assert status == 403 and "CSRF" in text
    status, _, _ = await client.post("/dashboard/login", {**no_token, "csrf_token": "forged"})
    assert status == 403
    await client.login("alice", PASSWORD)
    assert (await client.post("/dashboard/logout", {}))[0] == 403
    assert (await client.get("/dashboard/", allow_redirects=False))[0] == 200, "still signed in"
    csrf = await client.csrf("/dashboard/")
    status, _, _ = await client.post("/dashboard/logout", {}, headers={access.CSRF_HEADER: csrf})
    assert status == 303, "the header does as well as the field (fetch)"


async def test_every_dashboard_response_has_the_security_headers(client):
    await client.login("alice", PASSWORD)
    for path in ["/dashboard/", "/dashboard/login", "/dashboard/no-such-page", "/dashboard/static/dashboard.css"]:
        _, _, response = await client.get(path, allow_redirects=False)
        assert response.headers["Content-Security-Policy"] == access.CONTENT_SECURITY_POLICY, path
        assert response.headers["X-Content-Type-Options"] == "nosniff", path
        assert response.headers["Referrer-Policy"] == "same-origin", path
    assert (await client.get("/dashboard/"))[2].headers["Cache-Control"] == "no-store"
    status, text, response = await client.get("/dashboard/no-such-page")
    assert status == 404 and response.content_type == "text/html" and "no such page" in text


async def test_static_files_are_served_with_their_types(client):
    for name, content_type in [("dashboard.css", "text/css"), ("dashboard.js", "text/javascript")]:
        status, text, response = await client.get(f"/dashboard/static/{name}")
        assert (status, response.content_type) == (200, content_type) and text
    assert (await client.get("/dashboard/static/favicon.svg"))[2].content_type == "image/svg+xml"


async def test_get_slash_redirects_to_the_dashboard(client):
    for path in ["/", "/dashboard"]:
        status, _, response = await client.get(path, allow_redirects=False)
        assert (status, response.headers["Location"]) == (302, "/dashboard/")


async def test_next_takes_only_dashboard_paths(client):
    cases = {
        "https://evil.example/": "/dashboard/",
        "//evil.example/x": "/dashboard/",
        "/v1/messages": "/dashboard/",
        "/dashboard\\..\\x": "/dashboard/",
        "/dashboard/settings?x=1": "/dashboard/settings?x=1",
    }
    for next_path, expected in cases.items():
        fresh = Client(client.base)
        try:
            _, _, response = await fresh.login("alice", PASSWORD, next_path=next_path)
            assert response.headers["Location"] == expected, next_path
        finally:
            await fresh.close()


async def test_the_dashboard_can_be_turned_off(tmp_path, clock):
    relay = Relay(make_config(tmp_path / "data", dashboard={"enabled": False}), clock)
    await relay.start()
    try:
        client = Client("http://{}:{}".format(*relay.http_address))
        try:
            assert (await client.get("/dashboard/login"))[0] == 404
            assert (await client.get("/", allow_redirects=False))[0] == 404
        finally:
            await client.close()
    finally:
        await relay.stop()


# A page of a test's own, mounted as a page helper mounts one: what the decorators let through.


@access.signed_in
async def _look(request: web.Request) -> web.StreamResponse:
    return web.Response(text="looked")


@access.admin
async def _change(request: web.Request) -> web.StreamResponse:
    return web.Response(text="changed")


@access.admin
async def _secret(request: web.Request) -> web.StreamResponse:
    return render(request, "error.html", message="the secret")


@pytest.fixture
def test_page(monkeypatch) -> None:
    page = Page("Test", "/test", [web.get("/test", _look), web.post("/test", _change), web.get("/secret", _secret)])
    monkeypatch.setattr(dashboard_app, "PAGES", [*dashboard_app.PAGES, page])


async def test_a_viewer_looks_but_its_posts_and_secret_pages_are_refused(tmp_path, clock, test_page):
    relay = Relay(make_config(tmp_path / "data2"), clock)
    await relay.start()
    try:
        await accounts.create_operator(relay.store.operators, clock, "victor", "viewer", PASSWORD)
        await accounts.create_operator(relay.store.operators, clock, "alice", "admin", PASSWORD)
        base = "http://{}:{}".format(*relay.http_address)
        viewer, admin = Client(base), Client(base)
        try:
            await viewer.login("victor", PASSWORD)
            status, text, _ = await viewer.get("/dashboard/test")
            assert (status, text) == (200, "looked")
            assert 'href="/dashboard/test"' in (await viewer.get("/dashboard/"))[1], "the page is in the nav"
            csrf = await viewer.csrf("/dashboard/")
            status, text, _ = await viewer.post("/dashboard/test", {"csrf_token": csrf})
            assert status == 403 and "viewer" in text
            assert (await viewer.get("/dashboard/secret"))[0] == 403
            status, _, _ = await viewer.post("/dashboard/logout", {"csrf_token": csrf})
            assert status == 303, "a viewer may sign out"

            await admin.login("alice", PASSWORD)
            csrf = await admin.csrf("/dashboard/")
            assert (await admin.post("/dashboard/test", {"csrf_token": csrf}))[1] == "changed"
            assert "the secret" in (await admin.get("/dashboard/secret"))[1]
            anonymous = Client(base)
            try:
                status, _, response = await anonymous.get("/dashboard/secret", allow_redirects=False)
                assert (status, response.headers["Location"]) == (303, "/dashboard/login?next=/dashboard/secret")
            finally:
                await anonymous.close()
        finally:
            await viewer.close()
            await admin.close()
    finally:
        await relay.stop()


# -- in the browser ----------------------------------------------------------------------------------------


def test_login_page_by_its_labels_then_home_and_logout(dashboard: Dashboard, browser):
    page = dashboard.page
    assert page.url == dashboard.url("/dashboard/")
    assert page.get_by_text("admin", exact=True).first.is_visible()
    dashboard.sign_out(page)
    screenshot(page, "login")
    assert page.get_by_label("Username").is_visible() and page.get_by_label("Password").is_visible()
    page.goto(dashboard.url("/dashboard/"))
    assert page.url.startswith(dashboard.url("/dashboard/login")), "signed out: back to the login page"


def test_a_wrong_password_is_refused_in_the_browser(dashboard: Dashboard, page_problems):
    page = dashboard.page
    dashboard.sign_out(page)
    page_problems.allowed_statuses.add(401)
    dashboard.sign_in(page, "admin", "wrong password")
    assert page.get_by_role("alert").inner_text() == "wrong username or password"
    screenshot(page, "login-refused")
    dashboard.sign_in(page, "admin", ADMIN_PASSWORD)
    assert page.url == dashboard.url("/dashboard/")
    screenshot(page, "home")


def test_a_viewer_sees_no_action_buttons(dashboard: Dashboard, browser):
    problems = PageProblems()
    context = browser.new_context(viewport=VIEWPORT)
    context.on("page", problems.watch)
    try:
        page = context.new_page()
        dashboard.sign_in(page, "viewer", VIEWER_PASSWORD)
        assert "you can look, not change" in page.inner_text("main")
        buttons = [b.inner_text() for b in page.locator("main button, main form").all()]
        assert buttons == [], "no actions for a viewer"
        assert page.get_by_role("button", name="Log out").is_visible()
        screenshot(page, "home-viewer")
    finally:
        problems.close(context)
    assert not problems.found, problems.found


def test_no_inline_script_or_style_in_the_pages(dashboard: Dashboard):
    page = dashboard.page
    for path in ["/dashboard/", "/dashboard/login"]:
        page.goto(dashboard.url(path))
        html = page.content()
        assert "style=" not in html and not re.search(r"<script(?![^>]*\bsrc=)", html), path
        assert not re.search(r"\son[a-z]+=", html), path
