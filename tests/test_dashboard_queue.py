"""The queue page (relay/dashboard/queue.py): destinations with their last error, suspend / resume / retry /
bounce / purge (bounce and purge confirmed first), a viewer's refusals. HTTP-level tests against the
dashboard over a store on a fake clock, with a real delivery engine and sink making the deferrals; then a
browser test against a real ``relay serve``.

:func:`site` (the dashboard over the ``store`` fixture, an admin and a viewer signed in) is shared by the
overview and suppressions tests.
"""

from __future__ import annotations

import dataclasses
import random
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from relay.dashboard import accounts
from relay.dashboard import app as dashboard_app
from relay.dashboard.deps import DashboardDeps
from relay.delivery.client import SmtpClient
from relay.delivery.engine import Engine, EngineSettings
from relay.delivery.mx import Router
from relay.delivery.retry import RetryPolicy
from relay.message import NewMessage
from relay.submission.auth import LocalFailures
from tests.browser import VIEWER_PASSWORD, VIEWPORT, Dashboard, PageProblems, screenshot
from tests.conftest import make_config, run_cli
from tests.test_dashboard_access import Client

PASSWORD = "a good long password"


@dataclasses.dataclass
class Site:
    """The dashboard over ``store``: an admin and a viewer signed in, and the engine wake-ups it asked for."""

    store: Any
    admin: Client
    viewer: Client
    wakeups: list[int]

    async def post(self, path: str, form: dict[str, str], as_viewer: bool = False) -> tuple[int, str, Any]:
        """``form`` posted the way the page's own form does: with the session's CSRF token."""
        client = self.viewer if as_viewer else self.admin
        return await client.post(path, {**form, "csrf_token": await client.csrf("/dashboard/")})


@pytest.fixture
async def site(store, tmp_path) -> AsyncIterator[Site]:
    wakeups: list[int] = []
    deps = DashboardDeps(
        store, store.clock, make_config(tmp_path / "data"), LocalFailures(5, 600), lambda: wakeups.append(1)
    )
    app = web.Application()
    dashboard_app.mount(app, deps)
    runner = web.AppRunner(app)
    await runner.setup()
    tcp = web.TCPSite(runner, "127.0.0.1", 0)
    await tcp.start()
    port = runner.addresses[0][1]
    await accounts.create_operator(store.operators, store.clock, "alice", "admin", PASSWORD)
    await accounts.create_operator(store.operators, store.clock, "victor", "viewer", PASSWORD)
    admin, viewer = Client(f"http://127.0.0.1:{port}"), Client(f"http://127.0.0.1:{port}")
    try:
        assert (await admin.login("alice", PASSWORD))[0] == 303
        assert (await viewer.login("victor", PASSWORD))[0] == 303
        yield Site(store, admin, viewer, wakeups)
    finally:
        await admin.close()
        await viewer.close()
        await runner.cleanup()


def engine_for(store: Any, sink_port: int) -> Engine:
    """A delivery engine to the sink, one pass at a time (``run_once``), on the store's clock."""
    settings = EngineSettings(
        owner="n",
        concurrency=10,
        lease=300,
        poll_interval=0.05,
        retry=RetryPolicy((600,), 86400, jitter=0.0),
        idle_timeout=0.2,
    )
    client = SmtpClient("relay.test", connect_timeout=2, command_timeout=5)
    return Engine(store, Router(("127.0.0.1", sink_port), 25, None), client, store.clock, settings, random.Random(0))


async def deliver(store: Any, sink_port: int, *rcpts: str) -> NewMessage:
    """One message to ``rcpts`` through one engine pass (``tempfail@`` defers, ``permfail@`` bounces)."""
    m = NewMessage("sender@example.com", rcpts, b"Subject: q\r\n\r\nx\r\n", "smtp")
    await store.queue.enqueue(m)
    engine = engine_for(store, sink_port)
    await engine.run_once()
    await engine.stop(1)
    return m


def row(html: str, domain: str) -> str:
    found = re.search(rf'<tr id="{re.escape(domain)}".*?</tr>', html, re.S)
    assert found, f"no row for {domain}"
    return found.group(0)


# -- HTTP level --------------------------------------------------------------------------------------------


async def test_the_queue_page_shows_each_destination_with_its_last_error(site, sink):
    await deliver(site.store, sink.port, "tempfail1@slow.example", "tempfail2@slow.example", "ok@fine.example")
    status, html, _ = await site.admin.get("/dashboard/queue")
    assert status == 200
    slow = row(html, "slow.example")
    cells = re.findall(r"<td[^>]*>(.*?)</td>", slow, re.S)
    assert cells[1:5] == ["0", "2", "0", "2"], "waiting, deferred, in flight, scheduled"
    assert "451 4.3.0 try again later" in slow, "the sink's reply is the last error"
    assert "fine.example" not in html, "delivered: nothing waits for it"
    assert "Retry now" in slow and "/dashboard/queue/slow.example/retry" in slow


async def test_suspend_then_resume_a_domain_wakes_the_engine_on_resume(site, sink):
    await deliver(site.store, sink.port, "tempfail@slow.example")
    status, _, response = await site.post("/dashboard/queue/slow.example/suspend", {"duration": "2h", "reason": "x"})
    assert status == 303 and response.headers["Location"].startswith("/dashboard/queue?done=")
    (q,) = await site.store.queue.domain_queues()
    assert q.suspended_until == site.store.clock.now() + 7200
    status, html, _ = await site.admin.get(response.headers["Location"])
    assert "slow.example is suspended until" in html and "Resume" in row(html, "slow.example")
    assert site.wakeups == []
    status, _, response = await site.post("/dashboard/queue/slow.example/resume", {})
    assert status == 303 and (await site.store.queue.domain_queues())[0].suspended_until is None
    assert site.wakeups == [1], "resuming wakes the engine, as the API does"


async def test_a_bad_duration_or_reason_is_shown_next_to_its_field(site, sink):
    await deliver(site.store, sink.port, "tempfail@slow.example")
    status, html, _ = await site.post("/dashboard/queue/slow.example/suspend", {"duration": "soon", "reason": ""})
    assert status == 400
    assert re.search(r'<p class="error" id="e-duration">[^<]*must be like &#34;30m&#34;', html), html
    status, html, _ = await site.post("/dashboard/queue/slow.example/suspend", {"duration": "40d"})
    assert status == 400 and "between 1s and 30d" in html
    status, html, _ = await site.post("/dashboard/queue/slow.example/bounce", {"reason": "x" * 501})
    assert status == 400 and 'id="e-bounce-reason"' in html and 'id="e-reason"' not in html
    assert (await site.store.queue.domain_queues())[0].suspended_until is None


async def test_retry_now_makes_the_deferred_due_and_wakes_the_engine(site, sink):
    m = await deliver(site.store, sink.port, "tempfail@slow.example")
    (before,) = await site.store.queue.message_status(m.id)
    status, _, response = await site.post("/dashboard/queue/slow.example/retry", {})
    assert status == 303 and "1+recipient" in response.headers["Location"]
    (after,) = await site.store.queue.message_status(m.id)
    assert after.next_attempt_at == site.store.clock.now() < before.next_attempt_at
    assert site.wakeups == [1]


async def test_purge_and_bounce_ask_for_confirmation_first(site, sink):
    m = await deliver(site.store, sink.port, "tempfail@slow.example", "tempfail@other.example")
    status, html, _ = await site.post("/dashboard/queue/slow.example/purge", {})
    assert status == 200 and "Purge the queue for slow.example?" in html and 'name="confirm" value="yes"' in html
    assert [s.state for s in await site.store.queue.message_status(m.id)] == ["deferred", "deferred"]
    status, _, response = await site.post("/dashboard/queue/slow.example/purge", {"confirm": "yes"})
    assert status == 303
    status, html, _ = await site.post("/dashboard/queue/other.example/bounce", {"reason": "moved <away>"})
    assert status == 200 and "with the reason “moved &lt;away&gt;”" in html
    assert 'name="reason" value="moved &lt;away&gt;"' in html
    status, _, _ = await site.post("/dashboard/queue/other.example/bounce", {"reason": "moved", "confirm": "yes"})
    assert status == 303
    states = {s.address: (s.state, s.last_response) for s in await site.store.queue.message_status(m.id)}
    assert states["tempfail@slow.example"][0] == "cancelled"
    assert states["tempfail@other.example"] == ("bounced", "5.0.0 bounced by the operator: moved")


async def test_a_viewer_sees_the_queue_without_actions_and_its_posts_are_refused(site, sink):
    await deliver(site.store, sink.port, "tempfail@slow.example")
    status, html, _ = await site.viewer.get("/dashboard/queue")
    assert status == 200 and "slow.example" in html
    assert "<form" not in html.split("<main>")[1] and "Actions" not in html
    status, html, _ = await site.viewer.get("/dashboard/queue/slow.example")
    assert status == 200 and "<form" not in html.split("<main>")[1]
    for action in ("suspend", "resume", "retry", "bounce", "purge"):
        form = {"confirm": "yes", "duration": "1h"}
        status, _, _ = await site.post(f"/dashboard/queue/slow.example/{action}", form, as_viewer=True)
        assert status == 403, action
    (q,) = await site.store.queue.domain_queues()
    assert (q.deferred, q.suspended_until) == (1, None)


async def test_the_queue_is_paged(site, monkeypatch):
    from relay.dashboard import queue

    monkeypatch.setattr(queue, "PAGE_SIZE", 2)
    for name in ("a", "b", "c"):
        await site.store.queue.suspend_domain(f"{name}.example", 3600, "")
    _, html, _ = await site.admin.get("/dashboard/queue")
    assert "a.example" in html and "b.example" in html and "c.example" not in html
    assert 'href="/dashboard/queue?offset=2"' in html and "1–2 of 3 domains" in html
    _, html, _ = await site.admin.get("/dashboard/queue?offset=2")
    assert "c.example" in html and "a.example" not in html
    for offset in ("-5", "x", "\u00b2", "9" * 30):
        assert (await site.admin.get(f"/dashboard/queue?offset={offset}"))[0] == 200, offset


async def test_a_domain_from_outside_is_escaped_and_its_links_quoted(site):
    await site.store.queue.suspend_domain('a"b<i>x</i>.example', 3600, "")
    _, html, _ = await site.admin.get("/dashboard/queue")
    assert "<i>x</i>" not in html and "a&#34;b&lt;i&gt;x&lt;/i&gt;.example" in html
    assert 'href="/dashboard/queue/a%22b%3Ci%3Ex%3C%2Fi%3E.example"' in html
    status, html, _ = await site.admin.get("/dashboard/queue/a%22b%3Ci%3Ex")
    assert status == 200 and "not suspended" in html, "another domain: nothing known about it"
    status, _, _ = await site.post("/dashboard/queue/a%22b%3Ci%3Ex%3C%2Fi%3E.example/resume", {})
    assert status == 303 and await site.store.queue.domain_queues() == []


# -- in the browser ----------------------------------------------------------------------------------------


def send(dashboard: Dashboard, *rcpts: str) -> None:
    """``relay send`` to the relay under test, over SMTP."""
    args = ["send", "--server", f"127.0.0.1:{dashboard.relay.smtp_port}", "--from", "app@example.com"]
    args += [a for r in rcpts for a in ("--to", r)]
    sent = run_cli(*args, config=dashboard.config)
    assert sent.returncode == 0, sent.stderr


def wait_for_sink_idle(dashboard: Dashboard, timeout: float = 15.0) -> None:
    """Wait until the relay has closed its connections to the sink (after [delivery] idle_timeout, 5 s):
    the fixture stops the sink's loop right after the relay, and a connection still open then leaves a
    socket and a task behind that warn (and fail) in whichever test the garbage collector meets them."""
    import time

    deadline = time.monotonic() + timeout
    while dashboard.sink.handler.open_now > 0:
        assert time.monotonic() < deadline, "the relay kept its connection to the sink open"
        dashboard.page.wait_for_timeout(100)


def wait_for_text(page: Any, url: str, text: str, timeout: float = 15.0) -> None:
    """Reload ``url`` until ``text`` is on the page (the relay delivers in its own time)."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        page.goto(url)
        if text in page.inner_text("main"):
            return
        assert time.monotonic() < deadline, f"{text!r} never showed on {url}"
        page.wait_for_timeout(200)


def viewer_cannot_purge(dashboard: Dashboard, browser: Any) -> None:
    """A viewer sees the queue pages without a button or form, and its POST (CSRF token and all) is refused."""
    problems = PageProblems()
    problems.allowed_statuses.add(403)
    context = browser.new_context(viewport=VIEWPORT)
    context.on("page", problems.watch)
    try:
        page = context.new_page()
        dashboard.sign_in(page, "viewer", VIEWER_PASSWORD)
        for path in ["/dashboard/", "/dashboard/queue", "/dashboard/queue/deferred.example"]:
            page.goto(dashboard.url(path))
            assert "deferred.example" in page.inner_text("main"), path
            assert page.locator("main button, main form[method=post]").count() == 0, path
        screenshot(page, "queue-viewer")
        token = page.locator('meta[name="csrf-token"]').get_attribute("content")
        refused = page.request.post(
            dashboard.url("/dashboard/queue/deferred.example/purge"), form={"csrf_token": token, "confirm": "yes"}
        )
        assert refused.status == 403
    finally:
        problems.close(context)
    assert not problems.found, problems.found


def test_a_deferred_destination_is_suspended_resumed_and_purged_from_the_queue_page(dashboard: Dashboard, browser):
    page = dashboard.page
    send(dashboard, "tempfail@deferred.example", "tempfail2@deferred.example")
    wait_for_text(page, dashboard.url("/dashboard/queue"), "451 4.3.0 try again later")
    line = page.locator('tr[data-domain="deferred.example"]')
    assert line.locator("td").nth(2).inner_text() == "2", "two deferred"
    screenshot(page, "queue")

    line.get_by_role("link", name="Suspend, bounce, purge…").click()
    page.get_by_label("Duration").fill("2h")
    page.get_by_label("Reason", exact=True).first.fill("their MX is down")
    page.get_by_role("button", name="Suspend", exact=True).click()
    page.wait_for_url("**/dashboard/queue?done=*")
    assert "deferred.example is suspended until" in page.get_by_role("status").inner_text()
    assert line.locator("td.suspended").inner_text() != "-"
    screenshot(page, "queue-suspended")

    line.get_by_role("button", name="Resume").click()
    page.wait_for_url("**/dashboard/queue?done=*")
    assert page.get_by_role("status").inner_text() == "deferred.example is resumed"
    assert line.locator("td.suspended").inner_text() == "-"
    viewer_cannot_purge(dashboard, browser)

    page.goto(dashboard.url("/dashboard/queue/deferred.example"))
    screenshot(page, "queue-domain")
    page.get_by_role("button", name="Purge…").click()
    assert page.get_by_role("heading", name="Purge the queue for deferred.example?").is_visible()
    screenshot(page, "queue-purge-confirm")
    page.get_by_role("link", name="Cancel").click()
    page.goto(dashboard.url("/dashboard/queue"))
    assert line.count() == 1, "cancelled: still queued"
    page.goto(dashboard.url("/dashboard/queue/deferred.example"))
    page.get_by_role("button", name="Purge…").click()
    page.get_by_role("button", name="Yes, purge deferred.example").click()
    page.wait_for_url("**/dashboard/queue?done=*")
    assert page.get_by_role("status").inner_text() == "2 recipient(s) for deferred.example purged from the queue"
    assert line.count() == 0
    wait_for_sink_idle(dashboard)
