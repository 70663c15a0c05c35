"""The Credentials page: API keys and SMTP credentials listed, created (the secret shown once), revoked after
a confirmation; viewers see the lists and can change nothing."""

from __future__ import annotations

import json
import smtplib
import ssl
import urllib.error
import urllib.request
from typing import Any

from relay.dashboard.credentials import credential_request, key_request
from tests.browser import VIEWER_PASSWORD, VIEWPORT, Dashboard, PageProblems, screenshot


def send(dashboard: Dashboard, key: str) -> int:
    """POST /v1/messages with ``key``: the status."""
    payload = {"from": "app@example.com", "to": ["user@example.org"], "subject": "hi", "text": "hello\n"}
    request = urllib.request.Request(
        dashboard.url("/v1/messages"),
        data=json.dumps(payload).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def create_key(dashboard: Dashboard, page: Any, name: str) -> str:
    """Create a key with the form of the Credentials page; the secret the result page shows."""
    page.goto(dashboard.url("/dashboard/credentials"))
    page.get_by_text("Create an API key").click()
    page.get_by_label("Name").fill(name)
    page.get_by_label("send", exact=True).check()
    page.get_by_role("button", name="Create API key").click()
    page.wait_for_load_state()
    return page.locator("#secret").inner_text()


def test_a_key_created_in_the_ui_is_shown_once_works_and_stops_when_revoked(dashboard: Dashboard):
    page = dashboard.page
    dashboard.open(page, "Credentials")
    screenshot(page, "credentials")
    secret = create_key(dashboard, page, "from the dashboard")
    assert secret.startswith("rly_live_")
    assert "shown this once" in page.inner_text("main")
    screenshot(page, "credentials-key-created")
    assert send(dashboard, secret) == 202, "the key works against the API"

    page.get_by_role("link", name="Back to the credentials").click()
    page.wait_for_load_state()
    listing = page.inner_text("main")
    assert "from the dashboard" in listing and secret not in listing and secret[:16] not in page.content()
    row = page.get_by_role("row").filter(has_text="from the dashboard")
    row.get_by_role("link", name="Revoke").click()
    page.wait_for_load_state()
    assert page.get_by_role("heading", name="Revoke this API key?").is_visible()
    screenshot(page, "credentials-revoke-confirm")
    assert send(dashboard, secret) == 202, "nothing happens before the confirmation"
    page.get_by_role("button", name="Revoke").click()
    page.wait_for_load_state()
    assert "it no longer works" in page.inner_text("main")
    assert "revoked" in page.get_by_role("row").filter(has_text="from the dashboard").inner_text()
    assert send(dashboard, secret) == 401, "revoked in the UI, refused by the API"


def test_an_smtp_credential_created_in_the_ui_logs_in(dashboard: Dashboard):
    page = dashboard.page
    dashboard.open(page, "Credentials")
    page.get_by_text("Create an SMTP credential").click()
    page.get_by_label("May send as").fill("example.com")
    page.get_by_role("button", name="Create SMTP credential").click()
    page.wait_for_load_state()
    username, password = page.locator("#username").inner_text(), page.locator("#secret").inner_text()
    with smtplib.SMTP("127.0.0.1", dashboard.relay.smtp_port, timeout=10) as smtp:
        smtp.starttls(context=ssl._create_unverified_context())  # relay's self-signed certificate
        smtp.login(username, password)
    page.get_by_role("link", name="Back to the credentials").click()
    page.wait_for_load_state()
    assert password not in page.content()


def test_a_form_error_from_the_apis_parser_is_shown_by_its_field(dashboard: Dashboard, page_problems):
    page = dashboard.page
    page_problems.allowed_statuses.add(400)
    dashboard.open(page, "Credentials")
    page.get_by_text("Create an API key").click()
    page.get_by_label("Name").fill("bad networks")
    page.get_by_label("Allowed networks").fill("10.0.0.0/8 not-a-network")
    page.get_by_role("button", name="Create API key").click()
    page.wait_for_load_state()
    error = page.locator("#key-ips-error")
    assert error.inner_text() == "'not-a-network' is not an IP network", "the API's own message"
    assert page.get_by_label("Name").input_value() == "bad networks", "what was typed is kept"
    screenshot(page, "credentials-form-error")


def test_a_viewer_sees_the_lists_but_cannot_create_or_revoke(dashboard: Dashboard, browser):
    create_key(dashboard, dashboard.page, "listed")
    problems = PageProblems()
    problems.allowed_statuses.add(403)
    context = browser.new_context(viewport=VIEWPORT)
    context.on("page", problems.watch)
    try:
        page = context.new_page()
        dashboard.sign_in(page, "viewer", VIEWER_PASSWORD)
        dashboard.open(page, "Credentials")
        assert "listed" in page.inner_text("main")
        assert page.get_by_text("Create an API key").count() == 0
        assert page.get_by_role("link", name="Revoke").count() == 0
        assert page.locator("main form, main button").count() == 0, "no action at all"
        screenshot(page, "credentials-viewer")
        status = page.evaluate(
            "relay.post('/dashboard/credentials/api-keys', {name: 'sneaky', scopes: 'admin'})"
            ".then(r => r.text().then(() => r.status))"
        )
        assert status == 403
        page.goto(dashboard.url("/dashboard/credentials"))
        assert "sneaky" not in page.inner_text("main")
    finally:
        problems.close(context)
    assert not problems.found, problems.found


def test_forms_become_the_apis_requests():
    from multidict import MultiDict

    form = MultiDict(
        [
            ("name", " ci "),
            ("scopes", "send"),
            ("scopes", "read"),
            ("allowed_ips", "10.0.0.0/8, 192.0.2.1"),
            ("rate_limit", "100"),
            ("daily_quota", ""),
            ("monthly_quota", "lots"),
            ("test", "on"),
        ]
    )
    assert key_request(MultiDict([("rate_limit", "²")]))["rate_limit"] == "²"  # a digit to isdigit, not to int()
    assert key_request(form) == {
        "name": "ci",
        "scopes": ["send", "read"],
        "allowed_ips": ["10.0.0.0/8", "192.0.2.1"],
        "rate_limit": 100,
        "daily_quota": None,
        "monthly_quota": "lots",  # the API's parser refuses it, naming the field
        "test": True,
        "own_messages": False,
    }
    assert credential_request(MultiDict([("allowed_from", "a.example b@c.example"), ("tags", "x,y")])) == {
        "allowed_from": ["a.example", "b@c.example"],
        "rate_limit": None,
        "tags": ["x", "y"],
        "test": False,
    }
