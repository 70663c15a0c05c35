"""Suppressions and bounces (relay/dashboard/suppressions.py): search, add, remove with confirmation, the
allowlist, the bounce log and a bounce's raw report as text. HTTP-level tests over a store on a fake clock,
then a browser test against a real ``relay serve``."""

from __future__ import annotations

import re
from pathlib import Path

from relay.bounces.classify import Classification, Kind
from relay.clock import SystemClock
from relay.store import Store
from relay.store.suppressions import NewBounce
from tests.browser import Dashboard, in_thread, screenshot
from tests.test_dashboard_queue import site  # noqa: F401 - a fixture

HOSTILE_REPORT = (
    "Reporting-MTA: dns; mx.example\r\n\r\nFinal-Recipient: rfc822; gone@example.org\r\n"
    'Diagnostic-Code: smtp; 550 <script>alert("report")</script><img src=x onerror=alert(2)>\r\n'
)


def hard_bounce(recipient: str, report: str | None = None) -> NewBounce:
    return NewBounce(
        recipient,
        Classification(Kind.HARD, "user_unknown", "5.1.1"),
        "dsn" if report else "smtp",
        code=550,
        diagnostic="550 5.1.1 <b>no such user</b>",
        remote_mta="mx.example",
        report=report,
    )


# -- HTTP level --------------------------------------------------------------------------------------------


async def test_add_search_and_remove_a_suppression_with_confirmation(site):  # noqa: F811
    status, _, response = await site.post("/dashboard/suppressions", {"email": "Bob@Example.org", "note": "asked"})
    assert status == 303 and response.headers["Location"].startswith("/dashboard/suppressions?done=")
    s = await site.store.suppressions.suppression("bob@example.org")
    assert (s.reason, s.detail) == ("manual", "asked"), "as POST /v1/suppressions makes it"
    await site.store.suppressions.suppress(["carol@example.net"], "manual", "")
    _, html, _ = await site.admin.get(response.headers["Location"])
    assert "bob@example.org is suppressed" in html and "carol@example.net" in html
    _, html, _ = await site.admin.get("/dashboard/suppressions?search=bob")
    assert "bob@example.org" in html and "carol@example.net" not in html
    _, html, _ = await site.admin.get("/dashboard/suppressions?reason=hard_bounce")
    assert "bob@example.org" not in html and "No suppressed address matches" in html

    status, html, _ = await site.post("/dashboard/suppressions/remove", {"email": "bob@example.org"})
    assert status == 200 and "Remove bob@example.org from the suppression list?" in html
    assert await site.store.suppressions.suppression("bob@example.org") is not None, "not before the confirmation"
    status, _, _ = await site.post("/dashboard/suppressions/remove", {"email": "bob@example.org", "confirm": "yes"})
    assert status == 303 and await site.store.suppressions.suppression("bob@example.org") is None
    status, _, _ = await site.post("/dashboard/suppressions/remove", {"email": "bob@example.org", "confirm": "yes"})
    assert status == 404


async def test_a_bad_address_is_shown_next_to_its_field(site):  # noqa: F811
    status, html, _ = await site.post("/dashboard/suppressions", {"email": "not an address", "note": ""})
    assert status == 400
    assert re.search(r'<input id="f-email" name="email"[^>]*aria-invalid="true"', html), html
    assert re.search(r'<p class="error" id="[^"]+">not an email address', html), html
    assert 'value="not an address"' in html, "what was typed stays in the field"
    status, html, _ = await site.post("/dashboard/allowlist", {"entry": "a b", "allow_note": ""})
    assert status == 400 and re.search(r'<input id="f-entry" name="entry"[^>]*aria-invalid="true"', html)
    status, html, _ = await site.admin.get("/dashboard/bounces?kind=nonsense")
    assert status == 400 and "&#39;kind&#39; must be one of" in html


async def test_the_suppression_list_is_paged(site, monkeypatch):  # noqa: F811
    from relay.dashboard import suppressions

    monkeypatch.setattr(suppressions, "PAGE_SIZE", 2)
    await site.store.suppressions.suppress(["a@x.example", "b@x.example", "c@x.example"], "manual", "")
    _, html, _ = await site.admin.get("/dashboard/suppressions")
    assert "a@x.example" in html and "b@x.example" in html and "c@x.example" not in html
    (next_url,) = re.findall(r'<a href="([^"]+)">Next page</a>', html)
    _, html, _ = await site.admin.get(next_url.replace("&amp;", "&"))
    assert "c@x.example" in html and "a@x.example" not in html


async def test_the_allowlist_is_listed_added_to_and_removed_from(site):  # noqa: F811
    status, _, _ = await site.post("/dashboard/allowlist", {"entry": "VIP.example", "allow_note": "our CEO"})
    assert status == 303 and await site.store.suppressions.allowlist() == [
        ("vip.example", "our CEO", site.store.clock.now())
    ]
    _, html, _ = await site.admin.get("/dashboard/suppressions")
    assert "vip.example" in html and "our CEO" in html
    status, html, _ = await site.post("/dashboard/allowlist/remove", {"entry": "vip.example"})
    assert status == 200 and "Remove vip.example from the allowlist?" in html
    status, _, _ = await site.post("/dashboard/allowlist/remove", {"entry": "vip.example", "confirm": "yes"})
    assert status == 303 and await site.store.suppressions.allowlist() == []


async def test_bounces_are_listed_with_their_classification_and_the_raw_report_is_text(site):  # noqa: F811
    first, _ = await site.store.suppressions.record_bounce(hard_bounce("gone@example.org", HOSTILE_REPORT))
    await site.store.suppressions.record_bounce(hard_bounce("other@example.org"))
    _, html, _ = await site.viewer.get("/dashboard/bounces")
    assert html.count('href="/dashboard/bounces/') == 2 and "user_unknown" in html
    assert "&lt;b&gt;no such user&lt;/b&gt;" in html
    _, html, _ = await site.viewer.get("/dashboard/bounces?recipient=other@example.org")
    assert "gone@example.org" not in html and "other@example.org" in html
    status, html, _ = await site.viewer.get(f"/dashboard/bounces/{first}")
    assert status == 200 and "<script>alert" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(&#34;report&#34;)&lt;/script&gt;" in html
    for missing in ("999", "x", "-1", str(2**70)):
        assert (await site.viewer.get(f"/dashboard/bounces/{missing}"))[0] == 404, missing


async def test_a_viewer_sees_suppressions_without_actions_and_its_posts_are_refused(site):  # noqa: F811
    await site.store.suppressions.suppress(["bob@example.org"], "manual", "")
    await site.store.suppressions.allow("vip.example", "")
    status, html, _ = await site.viewer.get("/dashboard/suppressions")
    main = html.split("<main>")[1]
    assert status == 200 and "bob@example.org" in main and "vip.example" in main
    assert 'method="post"' not in main and "<button" not in main.replace('<button type="submit">Search</button>', "")
    for path, form in [
        ("/dashboard/suppressions", {"email": "x@example.org"}),
        ("/dashboard/suppressions/remove", {"email": "bob@example.org", "confirm": "yes"}),
        ("/dashboard/allowlist", {"entry": "x.example"}),
        ("/dashboard/allowlist/remove", {"entry": "vip.example", "confirm": "yes"}),
    ]:
        assert (await site.post(path, form, as_viewer=True))[0] == 403, path
    assert await site.store.suppressions.suppression("bob@example.org") is not None
    assert len(await site.store.suppressions.allowlist()) == 1


# -- in the browser ----------------------------------------------------------------------------------------


def record_bounce(data_dir: Path, bounce: NewBounce) -> int:
    """A bounce written into the running relay's database, as its inbound listener would."""

    async def write() -> int:
        store = Store(data_dir / "relay.sqlite3", SystemClock())
        try:
            bounce_id, _ = await store.suppressions.record_bounce(bounce)
            return bounce_id
        finally:
            await store.close()

    return in_thread(write)


def test_suppressions_add_search_remove_and_a_raw_report_shown_as_text(dashboard: Dashboard):
    page = dashboard.page
    page.on("dialog", lambda dialog: (_ for _ in ()).throw(AssertionError(f"a dialog opened: {dialog.message}")))
    page.goto(dashboard.url("/dashboard/suppressions"))
    for address in ("bob@example.org", "carol@example.net"):
        page.get_by_label("Address", exact=True).fill(address)
        page.get_by_label("Reason", exact=True).fill("asked <us>")
        page.get_by_role("button", name="Suppress").click()
        page.wait_for_url("**/dashboard/suppressions?done=*")
    assert page.get_by_role("status").inner_text() == "carol@example.net is suppressed"
    page.get_by_label("Address or domain").fill("vip.example")
    page.get_by_role("button", name="Allow").click()
    page.wait_for_url("**/dashboard/suppressions?done=*")
    screenshot(page, "suppressions")

    page.get_by_label("Address contains").fill("bob")
    page.get_by_role("button", name="Search").click()
    rows = page.locator("table.suppressions tbody tr")
    assert rows.count() == 1 and "asked <us>" in rows.first.inner_text()
    rows.first.get_by_role("button", name="Remove…").click()
    page.get_by_role("button", name="Yes, remove bob@example.org").click()
    page.wait_for_url("**/dashboard/suppressions?done=*")
    assert page.get_by_role("status").inner_text() == "bob@example.org is no longer suppressed"
    assert page.locator("table.suppressions").inner_text().count("@") == 1, "carol only"

    bounce_id = record_bounce(dashboard.config.parent / "data", hard_bounce("gone@example.org", HOSTILE_REPORT))
    page.get_by_role("link", name="Bounces").click()
    screenshot(page, "bounces")
    page.get_by_role("link", name="Details").first.click()
    page.wait_for_url(f"**/dashboard/bounces/{bounce_id}")
    assert '<script>alert("report")</script>' in page.locator("#raw-report").inner_text()
    assert page.locator("main script, main img").count() == 0, "the report is text, not markup"
    screenshot(page, "bounce")
