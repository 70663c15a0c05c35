"""Browser tests: Debian's chromium driven by Playwright's sync API, against a real ``relay serve``.

Fixtures (a pytest plugin, loaded by tests/conftest.py):

* ``browser``    one headless chromium for the test session (``/usr/bin/chromium``; ``make test`` installs it)
* ``page``       a new context (1280×800) and page per test; console errors, page errors and failed requests
                 on any page of the context fail the test at teardown
* ``dashboard``  a relay process with a sink, an admin and a viewer made with ``relay users create``, and
                 ``page`` signed in as the admin (:class:`Dashboard`)

Playwright's sync API cannot run inside an asyncio loop: browser tests are plain ``def`` tests. While the
browser is open, the main thread's event loop is Playwright's: so the tests that use the browser run after
all the others (:func:`pytest_collection_modifyitems`), and the relay and the sink they need are started
on threads of their own.
:func:`screenshot` writes ``tests/screenshots/<name>.png`` (git-ignored) for a reviewer to look at.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.conftest import RelayProcess, Sink, config_dict, run_cli, start_sink, write_toml

T = TypeVar("T")
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1280, "height": 800}
TIMEOUT_MS = 10_000  # what a locator waits for (Playwright's default, 30 s, only slows a failing test down)
SCREENSHOTS = Path(__file__).parent / "screenshots"
ADMIN_PASSWORD = "admin password 123"
VIEWER_PASSWORD = "viewer password 123"


@pytest.hookimpl(trylast=True)  # after any shuffling of the order
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The tests that use the browser last: once it is open, an asyncio test could not run its loop."""
    items.sort(key=lambda item: "browser" in getattr(item, "fixturenames", ()))


def screenshot(page: Any, name: str) -> Path:
    """The page as it looks now, full length, in tests/screenshots/<name>.png."""
    SCREENSHOTS.mkdir(exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make test`, which installs Debian's chromium", pytrace=False)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed: run `make test` (it installs the dev extras)", pytrace=False)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


class PageProblems:
    """Console errors, page errors and failed requests seen on the pages of one context."""

    def __init__(self) -> None:
        self.found: list[str] = []
        self.allowed_statuses: set[int] = set()  # a test expecting a 403 page says so
        self.closed = False  # requests a closing context aborts are not the pages' problems

    def watch(self, page: Any) -> None:
        page.on("console", self._console)
        page.on("pageerror", lambda error: self._add(f"page error: {error}"))
        page.on("requestfailed", self._request_failed)

    def _request_failed(self, request: Any) -> None:
        # ERR_ABORTED: the page navigated away first (a favicon still loading when a link is followed).
        if request.failure != "net::ERR_ABORTED":
            self._add(f"request failed: {request.url} {request.failure}")

    def _add(self, problem: str) -> None:
        if not self.closed:
            self.found.append(problem)

    def close(self, context: Any) -> None:
        """Close ``context`` once its pages are idle (a page still loading would be a problem)."""
        for open_page in context.pages:
            open_page.wait_for_load_state("networkidle")
        self.closed = True
        context.close()

    def _console(self, message: Any) -> None:
        if message.type != "error" or self.closed:
            return
        text = message.text
        # Chromium reports every 4xx/5xx response on the console; those a test expects are not problems.
        if any(f"status of {status}" in text for status in self.allowed_statuses):
            return
        self._add(f"console error: {text}")


@pytest.fixture
def page_problems() -> PageProblems:
    return PageProblems()


@pytest.fixture
def page(browser: Any, page_problems: PageProblems) -> Iterator[Any]:
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(TIMEOUT_MS)
    context.on("page", page_problems.watch)
    opened = context.new_page()
    yield opened
    if not page_problems.closed:
        page_problems.close(context)
    assert not page_problems.found, "\n".join(page_problems.found)


def in_thread(start: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to its end on a thread of its own: Playwright's sync API holds this thread's loop."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(start())).result()


class SinkThread:
    """The scriptable SMTP sink (tests/conftest.py) on an event loop of its own thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="sink", daemon=True)
        self.thread.start()
        self.sink: Sink = asyncio.run_coroutine_threadsafe(start_sink(), self.loop).result(10)

    def stop(self) -> None:
        """Stop after the relay has: its connections end first, so no socket or task is left for the
        garbage collector to warn about in a later test."""
        asyncio.run_coroutine_threadsafe(self._close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    async def _close(self) -> None:
        self.sink.server.close()
        handler = self.sink.handler
        if handler.open_now > 0:  # the relay has stopped: its side is closed, or closing
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(handler.none_open.wait(), 5)
        for transport in list(handler.transports):
            transport.close()
        others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)


@dataclasses.dataclass
class Dashboard:
    """A relay serving the dashboard: its base URL (``url("/dashboard/")``), the page, signed in as admin."""

    relay: RelayProcess
    sink: Sink
    page: Any
    config: Path
    base: str

    def url(self, path: str) -> str:
        return self.base + path

    def sign_in(self, page: Any, username: str, password: str) -> None:
        """Sign in through the login form, by its labels."""
        page.goto(self.url("/dashboard/login"))
        page.get_by_label("Username").fill(username)
        page.get_by_label("Password").fill(password)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_load_state()

    def open(self, page: Any, title: str) -> None:
        """Go to a page by its link in the nav."""
        page.get_by_role("navigation", name="Pages").get_by_role("link", name=title).click()
        page.wait_for_load_state()

    def sign_out(self, page: Any) -> None:
        page.get_by_role("button", name="Log out").click()
        page.wait_for_url("**/dashboard/login")


def create_user(config: Path, name: str, role: str, password: str) -> None:
    """``relay users create NAME --role ROLE --password-stdin``."""
    env = {k: v for k, v in os.environ.items() if k != "RELAY_CONFIG"}
    cmd = [sys.executable, "-m", "relay", "users", "create", name, "--role", role, "--password-stdin"]
    made = subprocess.run(
        [*cmd, "--config", str(config)], input=password + "\n", capture_output=True, text=True, timeout=60, env=env
    )
    assert made.returncode == 0, made.stderr


@pytest.fixture
def dashboard(tmp_path: Path, page: Any, page_problems: PageProblems) -> Iterator[Dashboard]:
    sink = SinkThread()
    config = write_toml(
        tmp_path / "relay.toml",
        config_dict(tmp_path / "data", server={"acceptors": 0}, delivery={"smarthost": sink.sink.address}),
    )
    relay = RelayProcess(config, tmp_path / "relay.log")
    try:
        in_thread(relay.start)
        create_user(config, "admin", "admin", ADMIN_PASSWORD)
        create_user(config, "viewer", "viewer", VIEWER_PASSWORD)
        assert "admin" in run_cli("users", "list", config=config).stdout
        made = Dashboard(relay, sink.sink, page, config, f"http://127.0.0.1:{relay.http_port}")
        made.sign_in(page, "admin", ADMIN_PASSWORD)
        yield made
        page_problems.close(page.context)  # before the relay stops
    finally:
        relay.cleanup()
        sink.stop()
