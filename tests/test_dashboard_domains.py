"""The dashboard's Domains, Webhooks and Templates pages (issue 21, pages 4, 6 and 8).

HTTP-level tests first, against an in-process relay with a DNS server and a webhook receiver on loopback
(on SQLite, and on PostgreSQL in ``make test``'s second pass); then a few browser tests against a real
``relay serve`` (tests/browser.py): records with copy buttons, a test event's status and latency, a secret
shown once, a syntax error's line number, the live preview (inert for a ``<script>``), rollback, a viewer.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import html
import json
import re
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from relay.dashboard import access, accounts
from relay.domains import DkimKey
from relay.keys import create_api_key
from relay.store.operators import Operator
from relay.store.webhooks import AttemptOutcome
from tests.browser import (
    ADMIN_PASSWORD,
    VIEWER_PASSWORD,
    VIEWPORT,
    Dashboard,
    PageProblems,
    SinkThread,
    create_user,
    in_thread,
    screenshot,
)
from tests.conftest import DnsProtocol, DnsServer, RelayProcess, config_dict, write_toml
from tests.test_dashboard_access import Client
from tests.test_domains import publish

OUR_IP = "192.0.2.10"


def sections(dns_port: int) -> dict[str, dict[str, Any]]:
    """DNS from the test's server only (never the real one), a known sending address, loopback webhooks."""
    return {
        "dns": {"nameservers": [f"127.0.0.1:{dns_port}"], "timeout": "2s"},
        "domains": {"outbound_ips": [OUR_IP], "selector": "s1"},
        "webhooks": {"allow_private_targets": True, "timeout": "5s"},
    }


class Receiver:
    """A webhook endpoint on loopback: what it was sent, and what it answers (status, body)."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []  # the POSTs to /hook
        self.paths: list[str] = []  # every request's path
        self.status = 200
        self.body = "ok"
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.paths.append(request.path)
        if request.path != "/hook":
            return web.Response(status=404)
        self.received.append((dict(request.headers), await request.read()))
        return web.Response(status=self.status, text=self.body)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = self.runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/hook"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


def signature_ok(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """The Standard Webhooks signature, checked as a receiver would."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return expected in headers["webhook-signature"].split()


def main_html(text: str) -> str:
    return text.split("<main>", 1)[1].split("</main>", 1)[0]


def notice(text: str) -> str:
    found = re.search(r'<p class="notice" role="status">(.*?)</p>', text, re.S)
    assert found, main_html(text)
    return html.unescape(found.group(1))


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    made = Receiver()
    await made.start()
    yield made
    await made.stop()


@pytest.fixture
async def relay(relay_factory, dns_server):
    return await relay_factory(**sections(dns_server.port))


async def signed_in(relay, name: str, role: str) -> Client:
    """A client with a session of a new operator, made in the store (no argon2: tests of signing in are
    tests/test_dashboard_access.py's)."""
    operator = Operator(accounts.new_operator_id(), name, role, relay.clock.now())
    assert await relay.store.operators.add_operator(operator, "not a usable hash")
    token = accounts.new_token()
    await relay.store.operators.start_session(operator.id, accounts.token_digest(token), accounts.new_token(), 3600)
    client = Client("http://{}:{}".format(*relay.http_address))
    client.http.cookie_jar.update_cookies({access.SESSION_COOKIE: token}, URL(client.base))
    return client


@pytest.fixture
async def admin(relay) -> AsyncIterator[Client]:
    made = await signed_in(relay, "alice", "admin")
    yield made
    await made.close()


async def act(client: Client, path: str, form: dict[str, Any] | None = None, page: str = "") -> tuple[int, str, Any]:
    """POST a form of ``page`` (its CSRF token) to ``path``; a redirect is followed (its page returned)."""
    csrf = await client.csrf(page or "/dashboard/")
    status, text, response = await client.post(path, {**(form or {}), "csrf_token": csrf})
    if status == 303:
        return await client.get(response.headers["Location"])
    return status, text, response


async def api(relay, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
    _, key = await create_api_key(relay.store.keys, relay.clock, "t", ("admin",))
    async with aiohttp.ClientSession() as s:
        url = "http://{}:{}{}".format(*relay.http_address, path)
        async with s.request(method, url, headers={"Authorization": f"Bearer {key}"}, **kwargs) as r:
            return r.status, await r.json()


# -- Domains ------------------------------------------------------------------------------------------------


async def test_adding_a_domain_shows_its_records_with_a_copy_button_each(relay, admin):
    status, text, response = await act(admin, "/dashboard/domains", {"domain": "Example.COM"})
    assert status == 200 and re.fullmatch(r"/dashboard/domains/dom_[0-9a-f]+", response.url.path), text
    assert notice(text) == "example.com added: publish its records, then verify"
    _, shown = await api(relay, "GET", "/v1/domains/example.com")
    page = html.unescape(main_html(text))
    assert len(shown["records"]) == 3  # dkim, spf, dmarc (no bounce domain configured)
    for i, record in enumerate(shown["records"], 1):
        assert f'<code id="record-{i}-name">{record["name"]}</code>' in page
        assert f'id="record-{i}-value">{record["value"]}</code>' in page
        assert f'data-copy="record-{i}-value"' in page and f'data-copy="record-{i}-name"' in page
    assert "s1._domainkey.example.com" in page and f"v=spf1 ip4:{OUR_IP} ~all" in page
    assert "not checked yet" in page and "Verify now" in page and "Rotate DKIM key" in page
    status, text, _ = await admin.get("/dashboard/domains")
    assert 'href="/dashboard/domains/' + shown["id"] + '">example.com</a>' in text and "pending" in text


async def test_the_domain_list_is_paged(relay, admin):
    for i in range(52):
        await relay.store.domains.create_domain(f"dom_{i:02d}", f"d{i:02d}.example", DkimKey("s1", "active", 0.0, "k"))
    _, text, _ = await admin.get("/dashboard/domains")
    assert re.findall(r'">(d\d\d)\.example</a>', text) == [f"d{i:02d}" for i in range(50)]
    _, text, _ = await admin.get(re.search(r'<a href="([^"]+)">Next page', text).group(1))
    assert re.findall(r'">(d\d\d)\.example</a>', text) == ["d50", "d51"] and "Next page" not in text
    assert ">First page</a>" in text


async def test_a_refused_domain_is_shown_next_to_its_field(admin):
    status, text, _ = await act(admin, "/dashboard/domains", {"domain": "not a domain"})
    assert status == 400 and re.search(r'id="f-domain"[^>]* aria-invalid="true"', text), "marked by its field"
    assert "not a domain name: &#39;not a domain&#39;" in text, "the API's words, escaped"
    await act(admin, "/dashboard/domains", {"domain": "example.com"})
    status, text, _ = await act(admin, "/dashboard/domains", {"domain": "example.com"})
    assert status == 409 and "example.com is already a sending domain" in text


async def test_verify_now_shows_each_check_with_its_hint(relay, admin, dns_server):
    _, text, response = await act(admin, "/dashboard/domains", {"domain": "example.com"})
    path = response.url.path
    status, text, _ = await act(admin, f"{path}/verify", page=path)
    assert status == 200 and notice(text) == "example.com checked: pending"
    assert "no TXT record at s1._domainkey.example.com yet; publish the dkim record" in text
    assert "no DMARC record at _dmarc.example.com" in text

    _, shown = await api(relay, "GET", "/v1/domains/example.com")
    publish(dns_server, shown["records"])
    _, text, _ = await act(admin, f"{path}/verify", page=path)
    assert notice(text) == "example.com checked: verified"
    assert "the key at s1._domainkey.example.com matches" in text and f"SPF passes for {OUR_IP}" in text
    _, shown = await api(relay, "GET", "/v1/domains/example.com")
    assert shown["status"] == "verified", "the API sees what the page did"


async def test_rotation_then_a_second_rotation_is_refused_on_the_page(relay, admin):
    _, _, response = await act(admin, "/dashboard/domains", {"domain": "example.com"})
    path = response.url.path
    _, text, _ = await act(admin, f"{path}/rotate", page=path)
    assert notice(text) == "a new DKIM key for example.com: publish it, then verify"
    _, shown = await api(relay, "GET", "/v1/domains/example.com")
    pending = [k["selector"] for k in shown["dkim"] if k["state"] == "pending"]
    assert pending and f"{pending[0]}._domainkey.example.com" in text, "the next key's record is listed"
    status, text, _ = await act(admin, f"{path}/rotate", page=path)
    assert status == 409 and "already has a key waiting to be published" in text


async def test_removing_a_domain_asks_first(relay, admin):
    _, _, response = await act(admin, "/dashboard/domains", {"domain": "example.com"})
    path = response.url.path
    status, text, _ = await admin.get(f"{path}/remove")
    assert status == 200 and "Remove example.com?" in text and "cannot be undone" in text
    assert (await api(relay, "GET", "/v1/domains/example.com"))[0] == 200, "asking removed nothing"
    _, text, _ = await act(admin, f"{path}/remove", page=f"{path}/remove")
    assert notice(text) == "example.com removed, with its DKIM keys"
    assert (await api(relay, "GET", "/v1/domains/example.com"))[0] == 404
    assert (await admin.get(path))[0] == 404


# -- Webhooks -----------------------------------------------------------------------------------------------


async def create_hook(admin: Client, url: str, events: list[str] | None = None) -> tuple[str, str, str]:
    """Create a webhook through the form: its page path, the secret shown, the page."""
    csrf = await admin.csrf("/dashboard/webhooks")
    form = aiohttp.FormData([("csrf_token", csrf), ("url", url), ("description", "orders <app>")])
    for e in events or []:
        form.add_field("events", e)
    status, text, _ = await admin.post("/dashboard/webhooks", form)
    assert status == 200, text
    secret = re.search(r'id="webhook-secret">(whsec_[^<]+)<', text)
    path = re.search(r'action="(/dashboard/webhooks/wh_[0-9a-f]+)/test"', text)
    assert secret and path, text
    return path.group(1), secret.group(1), text


async def test_a_webhook_made_on_the_page_is_the_apis_and_its_secret_is_shown_once(relay, admin, receiver):
    path, secret, text = await create_hook(admin, receiver.url, ["delivered", "bounced"])
    assert "Shown this once" in text and "orders &lt;app&gt;" in text
    _, listed = await api(relay, "GET", "/v1/webhooks")
    (hook,) = listed["data"]
    assert (hook["url"], hook["events"], hook["description"]) == (
        receiver.url,
        ["bounced", "delivered"],
        "orders <app>",
    )
    assert (await relay.store.webhooks.webhook(hook["id"])).secret == secret
    status, text, _ = await admin.get(path)
    assert status == 200 and secret not in text and "whsec_" not in text, "never shown again"
    status, text, _ = await admin.get("/dashboard/webhooks")
    assert receiver.url in text and "bounced, delivered" in text and "whsec_" not in text


async def test_a_refused_url_or_event_is_shown_next_to_its_field(admin):
    csrf = await admin.csrf("/dashboard/webhooks")
    status, text, _ = await admin.post("/dashboard/webhooks", {"csrf_token": csrf, "url": "ftp://example.com/x"})
    assert status == 400 and re.search(r'id="f-url"[^>]* aria-invalid="true"', text) and "http:// or https://" in text
    assert 'value="ftp://example.com/x"' in text, "what was typed stays in the form"
    form = {"csrf_token": csrf, "url": "http://127.0.0.1:9/x", "events": "nonsense"}
    status, text, _ = await admin.post("/dashboard/webhooks", form)
    assert status == 400 and "&#39;events&#39; must be a list of:" in text


async def test_a_test_event_reaches_the_endpoint_and_the_page_shows_status_and_latency(relay, admin, receiver):
    path, secret, _ = await create_hook(admin, receiver.url)
    _, text, _ = await act(admin, f"{path}/test", page=path)
    assert re.fullmatch(r"test event accepted: HTTP 200 in \d+(\.\d+)? ms", notice(text)), notice(text)
    ((headers, body),) = receiver.received
    assert signature_ok(secret, headers, body) and json.loads(body)["data"]["details"]["test"] is True
    assert '<span class="status status-ok">HTTP 200</span>' in text and '<td class="mono">test</td>' in text

    receiver.status, receiver.body = 500, "<script>alert('x')</script>"
    _, text, _ = await act(admin, f"{path}/test", page=path)
    assert notice(text).startswith("test event refused: HTTP 500 in ")
    assert "<script>alert" not in main_html(text), "the receiver's answer is text"
    assert "HTTP 500: &lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in text


async def test_rotating_the_secret_shows_the_new_one_once_and_signs_with_it(relay, admin, receiver):
    path, old, _ = await create_hook(admin, receiver.url)
    _, text, _ = await act(admin, f"{path}/rotate", page=path)
    new = re.search(r'id="webhook-secret">(whsec_[^<]+)<', text).group(1)
    assert new != old and "a new secret, in force now" in text
    assert "whsec_" not in (await admin.get(path))[1]
    await act(admin, f"{path}/test", page=path)
    ((headers, body),) = receiver.received
    assert signature_ok(new, headers, body) and not signature_ok(old, headers, body)


async def test_disable_enable_and_delete_with_a_confirmation(relay, admin, receiver):
    path, _, _ = await create_hook(admin, receiver.url)
    hook_id = path.rsplit("/", 1)[1]
    _, text, _ = await act(admin, f"{path}/enabled", {"enabled": "false"}, page=path)
    assert notice(text) == "webhook disabled" and not (await relay.store.webhooks.webhook(hook_id)).enabled
    assert ">Enable</button>" in text
    _, text, _ = await act(admin, f"{path}/enabled", {"enabled": "true"}, page=path)
    assert notice(text) == "webhook enabled" and (await relay.store.webhooks.webhook(hook_id)).enabled
    status, text, _ = await admin.get(f"{path}/delete")
    assert status == 200 and "Delete this webhook?" in text and await relay.store.webhooks.webhook(hook_id)
    _, text, _ = await act(admin, f"{path}/delete", page=f"{path}/delete")
    assert notice(text) == f"webhook to {receiver.url} deleted"
    assert await relay.store.webhooks.webhook(hook_id) is None and (await admin.get(path))[0] == 404


async def test_the_delivery_log_is_paged(relay, admin, receiver):
    path, _, _ = await create_hook(admin, receiver.url)
    hook_id = path.rsplit("/", 1)[1]
    for i in range(30):
        outcome = AttemptOutcome(None, hook_id, None, 200 + i, None, float(i), None)
        await relay.store.webhooks.record_webhook_attempts([outcome], 86400)
    _, text, _ = await admin.get(path)
    statuses = re.findall(r"HTTP (\d+)</span>", text)
    assert statuses == [str(s) for s in range(229, 204, -1)], "newest first, 25 of them"
    older = re.search(r'<a href="([^"]+)">Older', text).group(1)
    _, text, _ = await admin.get(html.unescape(older))
    assert re.findall(r"HTTP (\d+)</span>", text) == ["204", "203", "202", "201", "200"]
    assert "Older" not in text and ">Newest</a>" in text


# -- Templates ----------------------------------------------------------------------------------------------

GOOD = {"name": "welcome", "subject": "Hi {{ name }}", "html": "<p>Hello {{ name }}</p>", "text": "Hello {{ name }}"}


async def create_template(admin: Client, **fields: str) -> tuple[str, str]:
    _, text, response = await act(admin, "/dashboard/templates", {**GOOD, **fields}, page="/dashboard/templates/new")
    assert re.fullmatch(r"/dashboard/templates/tpl_[0-9a-f]+", response.url.path), text
    return response.url.path, text


async def test_a_template_made_on_the_page_is_the_apis(relay, admin):
    path, text = await create_template(admin)
    assert notice(text) == "template welcome created (version 1)"
    _, listed = await api(relay, "GET", "/v1/templates")
    (made,) = listed["data"]
    assert {k: made[k] for k in GOOD} == GOOD and made["version"] == 1
    _, text, _ = await admin.get("/dashboard/templates")
    assert f'<a href="{path}">welcome</a>' in text
    for before in ("9" * 30, "-1", "x"):  # past what the database holds (it overflowed into a 500), or no number
        status, _, _ = await admin.get(f"{path}?before={before}")
        assert status == 400, before


async def test_syntax_errors_are_shown_with_their_line_numbers_and_nothing_is_saved(relay, admin):
    broken = {**GOOD, "html": "<p>\n<b>\n{{ name }\n</p>", "text": "ok\n{% if x %}"}
    status, text, _ = await act(admin, "/dashboard/templates", broken, page="/dashboard/templates/new")
    assert status == 400
    errors = [html.unescape(e) for e in re.findall(r'<p class="error syntax-error">(.*?)</p>', text)]
    assert errors[0].startswith("html line 3: unexpected '}'"), errors
    assert errors[1].startswith("text line 2: "), errors
    _, validated = await api(relay, "POST", "/v1/templates/validate", json=broken)
    assert [(e["field"], e["line"]) for e in validated["errors"]] == [("html", 3), ("text", 2)], "as the API says"
    assert "{{ name }\n</p></textarea>" in html.unescape(text), "what was typed stays in the form"
    assert (await api(relay, "GET", "/v1/templates"))[1]["data"] == []


async def test_the_preview_renders_the_sample_variables_as_the_api_does(relay, admin):
    path, _ = await create_template(admin)
    csrf = await admin.csrf(path)
    form = {**GOOD, "variables": '{"name": "<Ada>"}', "csrf_token": csrf, "format": "json"}
    status, text, _ = await admin.post(f"{path}/preview", form)
    shown = json.loads(text)
    assert status == 200 and (shown["subject"], shown["html"], shown["text"]) == (
        "Hi <Ada>",
        "<p>Hello &lt;Ada&gt;</p>",
        "Hello <Ada>",
    )
    _, by_api = await api(
        relay, "POST", f"/v1/templates/{path.rsplit('/', 1)[1]}/preview", json={"variables": {"name": "<Ada>"}}
    )
    assert {k: by_api[k] for k in ("subject", "html", "text")} == {k: shown[k] for k in ("subject", "html", "text")}

    del form["format"]  # without JavaScript: the editor page with the preview in it
    status, text, _ = await admin.post(f"{path}/preview", form)
    assert status == 200
    assert 'sandbox="" referrerpolicy="no-referrer"\n    srcdoc="&lt;p&gt;Hello &amp;lt;Ada&amp;gt;&lt;/p&gt;"' in text
    assert '<pre id="preview-text" class="preview-text">Hello &lt;Ada&gt;</pre>' in text
    assert (await api(relay, "GET", "/v1/templates"))[1]["data"][0]["version"] == 1, "a preview saves nothing"


async def test_preview_errors_bad_variables_and_render_failures(admin):
    path, _ = await create_template(admin)
    csrf = await admin.csrf(path)
    base = {**GOOD, "csrf_token": csrf, "format": "json"}
    shown = json.loads((await admin.post(f"{path}/preview", {**base, "variables": "{nope"}))[1])
    assert shown["variables_error"].startswith("not valid JSON")
    shown = json.loads((await admin.post(f"{path}/preview", {**base, "variables": "[1]"}))[1])
    assert shown["variables_error"] == "'variables' must be an object"
    shown = json.loads((await admin.post(f"{path}/preview", {**base, "html": "{{ 1 / 0 }}", "variables": "{}"}))[1])
    assert "html" in shown["error"] and shown["errors"] == [], shown
    shown = json.loads((await admin.post(f"{path}/preview", {**base, "subject": "{% for %}", "variables": "{}"}))[1])
    assert shown["errors"][0]["field"] == "subject" and shown["errors"][0]["line"] == 1
    status, text, _ = await admin.post(f"{path}/preview", {**base, "variables": "{nope", "format": ""})
    assert status == 200 and 'id="e-variables">not valid JSON' in text


async def test_saving_makes_a_version_and_rollback_asks_then_restores_version_1(relay, admin):
    path, _ = await create_template(admin)
    _, text, _ = await act(admin, path, {**GOOD, "subject": "Welcome, {{ name }}!"}, page=path)
    assert notice(text) == "saved as version 2"
    assert "Roll back to version 1" in text and f'href="{path}/versions/1/rollback"' in text
    status, text, _ = await admin.get(f"{path}/versions/1/rollback")
    assert status == 200 and "Roll back welcome to version 1?" in text and "saved as version 3" in text
    _, text, _ = await act(admin, f"{path}/versions/1/rollback", page=f"{path}/versions/1/rollback")
    assert notice(text) == "rolled back to version 1: it is current again, as version 3"
    _, current = await api(relay, "GET", f"/v1/templates/{path.rsplit('/', 1)[1]}")
    assert (current["version"], current["subject"], current["note"]) == (3, "Hi {{ name }}", "rollback to version 1")
    assert (await admin.get(f"{path}/versions/9/rollback"))[0] == 404


async def test_the_template_list_and_the_versions_are_paged(relay, admin):
    for i in range(52):
        await relay.store.templates.create_template(f"tpl_{i:02d}", f"t{i:02d}", "s", None, "x")
    for n in range(2, 24):
        await relay.store.templates.update_template("tpl_00", None, f"subject {n}", None, "x")
    _, text, _ = await admin.get("/dashboard/templates")
    names = re.findall(r'">(t\d\d)</a>', text)
    assert names == [f"t{i:02d}" for i in range(50)]
    _, text, _ = await admin.get(re.search(r'<a href="([^"]+)">Next page', text).group(1))
    assert re.findall(r'">(t\d\d)</a>', text) == ["t50", "t51"] and "Next page" not in text
    _, text, _ = await admin.get("/dashboard/templates/tpl_00")
    shown = [int(v) for v in re.findall(r"<tr(?: class=\"current\")?>\s*<td>(\d+)", text)]
    assert shown == list(range(23, 3, -1)), "the 20 newest versions"
    _, text, _ = await admin.get(html.unescape(re.search(r'<a href="([^"]+)">Older versions', text).group(1)))
    assert [int(v) for v in re.findall(r"<tr>\s*<td>(\d+)", text)] == [3, 2, 1] and "Older versions" not in text
    assert (await admin.get("/dashboard/templates/tpl_00?before=x"))[0] == 400


async def test_no_inline_script_style_or_handler_in_these_pages(relay, admin, receiver):
    _, _, response = await act(admin, "/dashboard/domains", {"domain": "example.com"})
    domain = response.url.path
    hook, _, created = await create_hook(admin, receiver.url)
    template, _ = await create_template(admin, html='<p style="x" onclick="y">{{ name }}</p><script>z</script>')
    csrf = await admin.csrf(template)
    _, previewed, _ = await admin.post(f"{template}/preview", {**GOOD, "csrf_token": csrf, "variables": "{}"})
    pages = [created, previewed]
    for path in ["/dashboard/domains", domain, f"{domain}/remove", "/dashboard/webhooks", hook, f"{hook}/delete"]:
        pages.append((await admin.get(path))[1])
    for path in ["/dashboard/templates", "/dashboard/templates/new", template, f"{template}/versions/1/rollback"]:
        pages.append((await admin.get(path))[1])
    for text in pages:  # the tags of each page (text in it, escaped, has no "<")
        tags = re.findall(r"<[a-zA-Z][^>]*>", text)
        assert [t for t in tags if re.search(r"\s(?:style|on[a-z]+)=", t)] == []
        assert [t for t in tags if t.startswith("<script") and " src=" not in t] == []
    assert "&lt;script&gt;z&lt;/script&gt;" in pages[-2], "the template's source is text in the page"


# -- a viewer -----------------------------------------------------------------------------------------------


async def test_a_viewer_sees_the_pages_without_actions_and_its_posts_are_refused(relay, admin, receiver):
    _, _, response = await act(admin, "/dashboard/domains", {"domain": "example.com"})
    domain = response.url.path
    hook, _, _ = await create_hook(admin, receiver.url)
    template, _ = await create_template(admin)
    viewer = await signed_in(relay, "victor", "viewer")
    try:
        for path in ["/dashboard/domains", domain, "/dashboard/webhooks", hook, "/dashboard/templates", template]:
            status, text, _ = await viewer.get(path)
            assert status == 200, path
            actions = re.findall(r'<form|<button(?! type="button" class="copy")', main_html(text))
            assert actions == [], f"{path}: only copy buttons"
        assert "example.com" in (await viewer.get(domain))[1] and "Hello {{ name }}" in (await viewer.get(template))[1]
        for path in [
            f"{domain}/remove",
            f"{hook}/delete",
            f"{template}/versions/1/rollback",
            "/dashboard/templates/new",
        ]:
            assert (await viewer.get(path))[0] == 403, path
        csrf = await viewer.csrf("/dashboard/")
        posts = [
            ("/dashboard/domains", {"domain": "other.example"}),
            (f"{domain}/verify", {}),
            (f"{domain}/rotate", {}),
            (f"{domain}/remove", {}),
            ("/dashboard/webhooks", {"url": receiver.url}),
            (f"{hook}/test", {}),
            (f"{hook}/enabled", {"enabled": "false"}),
            (f"{hook}/rotate", {}),
            (f"{hook}/delete", {}),
            ("/dashboard/templates", GOOD),
            (template, GOOD),
            (f"{template}/preview", {**GOOD, "format": "json"}),
            (f"{template}/versions/1/rollback", {}),
        ]
        for path, form in posts:
            status, text, _ = await viewer.post(path, {**form, "csrf_token": csrf})
            assert status == 403 and "viewer" in text, path
        assert receiver.received == [] and len((await api(relay, "GET", "/v1/domains"))[1]["data"]) == 1
        assert (await relay.store.webhooks.webhook(hook.rsplit("/", 1)[1])).enabled
    finally:
        await viewer.close()


# -- in the browser -----------------------------------------------------------------------------------------


class LoopThread:
    """An event loop on a thread of its own (Playwright's sync API holds the test's): the DNS server and the
    webhook receiver run on it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="servers", daemon=True)
        self.thread.start()

    def run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(10)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


async def _dns() -> tuple[DnsServer, asyncio.BaseTransport]:
    protocol = DnsProtocol({})
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: protocol, local_addr=("127.0.0.1", 0)
    )
    return DnsServer(protocol, transport.get_extra_info("sockname")[1]), transport


class Servers:
    """What a browser test's relay talks to: the DNS server and a webhook receiver, on loopback."""

    def __init__(self) -> None:
        self.thread = LoopThread()
        self.dns, self._transport = self.thread.run(_dns())
        self.receiver = Receiver()
        self.thread.run(self.receiver.start())

    def stop(self) -> None:
        self.thread.run(self.receiver.stop())
        self.thread.run(self._close())
        self.thread.stop()

    async def _close(self) -> None:
        self._transport.close()
        await asyncio.sleep(0)  # the transport closes on the loop's next turn


@pytest.fixture(scope="module")
def servers() -> Iterator[Servers]:
    made = Servers()
    yield made
    made.stop()


@pytest.fixture(scope="module")
def dash_relay(tmp_path_factory: pytest.TempPathFactory, servers: Servers) -> Iterator[tuple[RelayProcess, Any, Path]]:
    """One ``relay serve`` for this module's browser tests (each uses its own names): tests/browser.py's
    ``dashboard`` relay, with DNS from the test's server and loopback webhooks allowed."""
    tmp_path = tmp_path_factory.mktemp("dash")
    sink = SinkThread()
    settings = config_dict(
        tmp_path / "data",
        server={"acceptors": 0},
        delivery={"smarthost": sink.sink.address},
        **sections(servers.dns.port),
    )
    config = write_toml(tmp_path / "relay.toml", settings)
    relay = RelayProcess(config, tmp_path / "relay.log")
    try:
        in_thread(relay.start)
        create_user(config, "admin", "admin", ADMIN_PASSWORD)
        create_user(config, "viewer", "viewer", VIEWER_PASSWORD)
        yield relay, sink.sink, config
    finally:
        relay.cleanup()
        sink.stop()


@pytest.fixture
def dash(page: Any, dash_relay: tuple[RelayProcess, Any, Path]) -> Dashboard:
    relay, sink, config = dash_relay
    made = Dashboard(relay, sink, page, config, f"http://127.0.0.1:{relay.http_port}")
    made.sign_in(page, "admin", ADMIN_PASSWORD)
    page.wait_for_load_state("networkidle")
    return made


def visit(page: Any, url: str) -> None:
    """Go to ``url`` and wait for the page's last request (the favicon comes after the load event: leaving
    before it would abort it, a failed request for the page checks)."""
    page.goto(url)
    page.wait_for_load_state("networkidle")


def navigate(page: Any, action: Any) -> None:
    """Do what leads to another page (a click), and wait as :func:`visit` does."""
    with page.expect_navigation():
        action()
    page.wait_for_load_state("networkidle")


def test_adding_a_domain_shows_its_records_with_copy_buttons_and_verify_gives_hints(dash: Dashboard):
    page = dash.page
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=dash.base)
    visit(page, dash.url("/dashboard/domains"))
    page.get_by_label("Domain").fill("example.com")
    navigate(page, page.get_by_role("button", name="Add domain").click)
    page.wait_for_url(re.compile(r".*/dashboard/domains/dom_[0-9a-f]+\?done=.*"))
    assert page.get_by_role("status").inner_text() == "example.com added: publish its records, then verify"
    rows = page.locator("table.records tbody tr")
    assert rows.count() == 3
    assert page.locator("#record-1-name").inner_text() == "s1._domainkey.example.com"
    dkim = page.locator("#record-1-value").inner_text()
    assert dkim.startswith("v=DKIM1; k=rsa; p=")
    assert page.locator("#record-2-value").inner_text() == f"v=spf1 ip4:{OUR_IP} ~all"
    assert page.locator("table.records button.copy").count() == 6, "a copy button for each name and value"
    copy = page.get_by_role("button", name="Copy the value of record 1")
    copy.click()
    page.wait_for_function("document.querySelector('[data-copy=\"record-1-value\"]').textContent === 'Copied'")
    assert page.evaluate("navigator.clipboard.readText()") == dkim

    navigate(page, page.get_by_role("button", name="Verify now").click)
    page.wait_for_url(re.compile(r".*\?done=example\.com%20checked.*"))
    assert page.get_by_role("status").inner_text() == "example.com checked: pending"
    hint = page.locator("tr.check-dkim td").nth(2).inner_text()
    assert hint == "no TXT record at s1._domainkey.example.com yet; publish the dkim record"
    screenshot(page, "domain")
    visit(page, dash.url("/dashboard/domains"))
    assert page.locator("table.domains").get_by_role("link", name="example.com").is_visible()
    screenshot(page, "domains")


def test_a_webhook_made_in_the_browser_gets_a_test_event_and_its_rotated_secret_is_shown_once(
    dash: Dashboard, servers: Servers
):
    page, receiver = dash.page, servers.receiver
    visit(page, dash.url("/dashboard/webhooks"))
    page.get_by_label("URL").fill(receiver.url)
    page.get_by_label("delivered").check()
    page.get_by_label("bounced").check()
    navigate(page, page.get_by_role("button", name="Add webhook").click)
    first = page.locator("#webhook-secret").inner_text()
    assert first.startswith("whsec_") and page.get_by_text("Shown this once").is_visible()
    hook_path = page.locator("form[action$='/test']").get_attribute("action").removesuffix("/test")

    navigate(page, page.get_by_role("button", name="Send test event").click)
    page.wait_for_url(re.compile(r".*\?done=test.*"))
    shown = page.get_by_role("status").inner_text()
    assert re.fullmatch(r"test event accepted: HTTP 200 in \d+(\.\d+)? ms", shown), shown
    ((headers, body),) = receiver.received
    assert signature_ok(first, headers, body), "the secret shown is the one that signs"
    row = page.locator("table.attempts tbody tr").first
    assert "HTTP 200" in row.inner_text() and re.search(r"\d+(\.\d+)? ms", row.inner_text())
    assert page.locator("#webhook-secret").count() == 0, "the secret is not shown again"

    navigate(page, page.get_by_role("button", name="Rotate secret").click)
    second = page.locator("#webhook-secret").inner_text()
    assert second.startswith("whsec_") and second != first
    screenshot(page, "webhook")
    visit(page, dash.url(hook_path))
    assert page.locator("#webhook-secret").count() == 0 and "whsec_" not in page.content()
    visit(page, dash.url("/dashboard/webhooks"))
    assert page.locator("table.webhooks").get_by_text(receiver.url).is_visible()
    screenshot(page, "webhooks")


def settled(page: Any) -> None:
    """Wait for the editor's live preview to show what the fields hold now (templates.js)."""
    page.locator("#template-form:not([data-previewing])").wait_for()


def test_templates_syntax_error_line_live_preview_inert_script_and_rollback(
    dash: Dashboard, page_problems: PageProblems, servers: Servers
):
    page, receiver = dash.page, servers.receiver
    pixel = receiver.url.replace("/hook", "/pixel.png")
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page_problems.allowed_statuses.add(400)
    visit(page, dash.url("/dashboard/templates/new"))
    page.get_by_label("Name").fill("welcome")
    page.get_by_label("Subject").fill("Hi {{ name }}")
    page.get_by_label("HTML").fill("<p>\n{{ name }\n</p>")
    page.get_by_label("Text").fill("Hello {{ name }}")
    error = page.locator(".problems[data-part='html'] .syntax-error")
    settled(page)
    assert error.inner_text().startswith("html line 2: unexpected '}'"), "the live preview's check, as typed"
    navigate(page, page.get_by_role("button", name="Create template").click)
    assert error.inner_text().startswith("html line 2: unexpected '}'"), "the server says so too"

    source = "<h1 id=hi>Hello {{ name }}</h1><script>alert('xss')</script>"
    page.get_by_label("HTML").fill(f"{source}<img src='{pixel}'>")
    page.get_by_label("Sample variables (JSON)").fill('{"name": "Ada <3"}')
    settled(page)
    frame = page.frame_locator("#preview-html")
    assert frame.locator("h1").inner_text() == "Hello Ada <3"
    assert page.locator("#preview-text").inner_text() == "Hello Ada <3"
    assert page.locator("#preview-subject").inner_text() == "Hi Ada <3"
    assert error.count() == 0
    assert page.locator("#preview-html").get_attribute("sandbox") == ""
    screenshot(page, "template")

    navigate(page, page.get_by_role("button", name="Create template").click)
    page.wait_for_url(re.compile(r".*/dashboard/templates/tpl_[0-9a-f]+\?done=.*"))
    page.get_by_label("Subject").fill("Welcome, {{ name }}!")
    settled(page)
    navigate(page, page.get_by_role("button", name="Save as a new version").click)
    page.wait_for_url(re.compile(r".*\?done=saved.*"))
    assert page.get_by_role("status").inner_text() == "saved as version 2"
    navigate(page, page.get_by_role("link", name="Roll back to version 1").click)
    navigate(page, page.get_by_role("button", name="Roll back to version 1").click)
    page.wait_for_url(re.compile(r".*\?done=rolled.*"))
    assert page.get_by_label("Subject").input_value() == "Hi {{ name }}"
    assert "version 3" in page.locator("h1").inner_text()
    visit(page, dash.url("/dashboard/templates"))
    assert page.get_by_role("link", name="welcome").is_visible()
    screenshot(page, "templates")
    assert dialogs == [], "the previewed <script> never ran"
    assert "/pixel.png" not in receiver.paths, "the previewed remote image was never fetched"
    # Chromium reports the sandbox's refusal to run the previewed script, and the CSP's refusal to load the
    # remote image, on the console: that is the point.
    expected = ("about:srcdoc", pixel)
    page_problems.found[:] = [p for p in page_problems.found if not any(e in p for e in expected)]


def test_a_viewer_sees_the_pages_but_no_actions(dash: Dashboard, browser):
    page = dash.page
    visit(page, dash.url("/dashboard/domains"))
    page.get_by_label("Domain").fill("viewer.example")
    navigate(page, page.get_by_role("button", name="Add domain").click)
    page.wait_for_url(re.compile(r".*/dashboard/domains/dom_.*"))
    domain_path = page.url.split(dash.base, 1)[1].split("?", 1)[0]
    problems = PageProblems()
    context = browser.new_context(viewport=VIEWPORT)
    context.on("page", problems.watch)
    try:
        viewer = context.new_page()
        dash.sign_in(viewer, "viewer", VIEWER_PASSWORD)
        viewer.wait_for_load_state("networkidle")
        for path in ["/dashboard/domains", domain_path, "/dashboard/webhooks", "/dashboard/templates"]:
            visit(viewer, dash.url(path))
            assert viewer.locator("main form").count() == 0, path
            assert viewer.locator("main button:not(.copy)").count() == 0, path
            assert viewer.locator("main a.button").count() == 0, path
        visit(viewer, dash.url(domain_path))
        assert viewer.locator("#record-1-name").inner_text() == "s1._domainkey.viewer.example"
        screenshot(viewer, "domain-viewer")
    finally:
        problems.close(context)
    assert not problems.found, problems.found
