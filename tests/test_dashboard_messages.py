"""The Messages page and the message page (relay/dashboard/messages.py, message_page.py, message_source.py).

Pure functions first, then HTTP-level tests against an in-process relay delivering to a sink (both store
backends under ``make test``), then a few browser tests against a real ``relay serve`` (tests/browser.py).
"""

from __future__ import annotations

import html
import re
import smtplib
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from email.message import EmailMessage
from email.utils import parseaddr
from typing import Any

import aiosmtplib
import pytest

from relay.dashboard import accounts
from relay.dashboard.message_page import steps
from relay.dashboard.message_source import MAX_TEXT, read_source
from relay.dashboard.messages import message_filter, page_url
from relay.store.events import Event
from relay.store.queue import Attempt, MessageFilter
from relay.store.webhooks import Webhook
from tests.browser import VIEWER_PASSWORD, Dashboard, screenshot
from tests.conftest import Sink, wait_for_states
from tests.test_dashboard_access import Client

PASSWORD = "a good long password"
HOSTILE_SUBJECT = "<script>alert(1)</script> and <img src=x onerror=alert(2)>"
HOSTILE_NAME = "<script>alert(1)</script> <img src=x onerror=alert(2)>"


def mail(subject: str, to: list[str], sender: str = "app@example.com", name: str = "App", **extra: str) -> EmailMessage:
    m = EmailMessage()
    m["From"] = f'"{name}" <{sender}>'
    m["To"] = ", ".join(to)
    m["Subject"] = subject
    for header, value in extra.items():
        m[header.replace("_", "-")] = value
    m.set_content("Hello in plain text.\n")
    return m


# -- pure -----------------------------------------------------------------------------------------------------


def test_the_search_form_parses_each_field_as_the_api_does_and_keeps_each_error_by_its_field():
    cursor = "06h3cqgkch354232ya5xvz3amm"
    search, errors = message_filter({"recipient": " a@example.org ", "status": "deferred", "cursor": cursor})
    assert search == MessageFilter(before=cursor, recipient="a@example.org", status="deferred")
    assert not errors
    for odd in ("01ABC", "\x00", cursor.upper(), "z" * 5000):  # no link of relay's makes these: the first page
        assert message_filter({"cursor": odd})[0] == MessageFilter()
    search, errors = message_filter({"since": "2026-01-31 08:00", "until": "2026-01-31T10:00Z", "tag": ""})
    assert (search.since, search.until, search.tag) == (1769846400.0, 1769853600.0, None), "UTC when no zone"
    _, errors = message_filter({"since": "yesterday", "status": "lost", "recipient": "x@example.org"})
    assert errors.get("since") == "'since' must be an ISO 8601 time"
    assert errors.get("status").startswith("'status' must be one of queued, scheduled")
    assert errors.get("recipient") == ""
    search, errors = message_filter({"sender": "Example.COM", "subject": "Hello", "message_id": "<a@b>"})
    assert (search.sender, search.subject, search.message_id) == ("Example.COM", "Hello", "<a@b>") and not errors
    _, errors = message_filter({"sender": "not a domain", "message_id": "a b"})
    assert errors.get("sender") == "'sender' must be an address or a domain name"
    assert errors.get("message_id") == "'message_id' must not contain spaces"


def test_the_next_page_keeps_the_search_and_quotes_it():
    query = {"recipient": "a+b@example.org", "tag": "x&y", "cursor": "OLD", "limit": "5", "junk": "1"}
    assert (
        page_url(query, "01NEXT") == "/dashboard/messages?recipient=a%2Bb%40example.org&tag=x%26y&limit=5&cursor=01NEXT"
    )
    assert page_url({}, None) == "/dashboard/messages"


def test_the_source_shows_decoded_headers_both_bodies_and_attachments():
    m = EmailMessage()
    m["From"] = "=?utf-8?q?Z=C3=BCrich_Team?= <team@example.com>"
    m.set_content("the text")
    m.add_alternative("<p>the <b>html</b></p>", subtype="html")
    m.add_attachment(b"%PDF-1.4 ...", maintype="application", subtype="pdf", filename="invoice.pdf")
    source = read_source(b"Subject: a long subject\r\n folded in two\r\n" + m.as_bytes())
    assert ("From", "Zürich Team <team@example.com>") in source.headers
    assert ("Subject", "a long subject folded in two") in source.headers
    assert source.text == "the text\n" and source.html == "<p>the <b>html</b></p>\n"
    assert [(a.filename, a.content_type, a.size) for a in source.attachments] == [
        ("invoice.pdf", "application/pdf", 12)
    ]
    assert source.truncated == []


def test_the_source_is_bounded_and_never_fails_on_a_broken_message():
    big = read_source(b"Subject: big\r\n\r\n" + b"x" * (MAX_TEXT + 10))
    assert big.truncated == ["text"] and len(big.text or "") == MAX_TEXT
    broken = read_source(
        b"Subject: =?bogus-charset?q?x?=\r\nContent-Type: text/plain; charset=no-such-charset\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n!!!not base64\xff\r\n"
    )
    assert ("Subject", "=?bogus-charset?q?x?=") in broken.headers
    assert broken.text is not None and broken.html is None


def _event(at: float, kind: str, recipient: str, **details: Any) -> Event:
    return Event(1, at, kind, "m1", recipient, None, None, details, [], {})


def test_each_attempt_gets_the_outcome_and_classification_its_event_recorded():
    attempts = [
        Attempt(10.0, "mx.example.org", "192.0.2.1", "TLSv1.3", 451, "4.3.0", "4.3.0 try again later"),
        Attempt(70.0, "mx.example.org", "192.0.2.1", "TLSv1.3", 250, "2.0.0", "2.0.0 Ok"),
    ]
    events = [
        _event(10.0, "deferred", "a@example.org", attempt=1, classification="transient", reason="try_later"),
        _event(10.0, "deferred", "b@example.org", attempt=1, classification="other"),
        _event(70.0, "delivered", "a@example.org", attempt=2),
        _event(70.0, "queued", "a@example.org"),  # not an attempt's event
    ]
    first, second = steps("a@example.org", attempts, events)
    assert (first.outcome, first.classification, first.reason, first.reply) == (
        "deferred",
        "transient",
        "try_later",
        "451 4.3.0 try again later",
    )
    assert (second.outcome, second.classification, second.reply) == ("delivered", None, "250 2.0.0 Ok")
    assert steps("c@example.org", attempts[:1], events)[0].outcome is None


# -- HTTP level -------------------------------------------------------------------------------------------------


@pytest.fixture
async def relay(relay_factory, sink: Sink) -> Any:
    started = await relay_factory(delivery={"smarthost": sink.address})
    await accounts.create_operator(started.store.operators, started.clock, "alice", "admin", PASSWORD)
    await accounts.create_operator(started.store.operators, started.clock, "victor", "viewer", PASSWORD)
    return started


@pytest.fixture
async def admin(relay) -> AsyncIterator[Client]:
    made = Client("http://{}:{}".format(*relay.http_address))
    await made.login("alice", PASSWORD)
    yield made
    await made.close()


@pytest.fixture
async def viewer(relay) -> AsyncIterator[Client]:
    made = Client("http://{}:{}".format(*relay.http_address))
    await made.login("victor", PASSWORD)
    yield made
    await made.close()


async def submit(relay: Any, m: EmailMessage) -> str:
    """Over SMTP to the relay; the message id from its reply."""
    host, port = relay.smtp_addresses[0]
    to = [a.strip() for a in str(m["To"]).split(",")]
    sender = parseaddr(str(m["From"]))[1]
    _, reply = await aiosmtplib.send(m, hostname=host, port=port, sender=sender, recipients=to, start_tls=False)
    found = re.search(r"queued as (\S+)", reply)
    assert found, reply
    return found.group(1)


async def test_the_list_shows_messages_newest_first_and_searches_by_recipient_tag_and_status(relay, admin):
    first = await submit(relay, mail("first one", ["a@sink.test"], X_Relay_Tags="news"))
    second = await submit(relay, mail("second one", ["b@sink.test", "c@sink.test", "d@sink.test"]))
    deferred = await submit(relay, mail("third one", ["tempfail@sink.test"]))
    await wait_for_states(relay.store, deferred, ["deferred"])
    await wait_for_states(relay.store, second, ["delivered"] * 3)
    status, text, _ = await admin.get("/dashboard/messages")
    assert status == 200
    assert text.index("third one") < text.index("second one") < text.index("first one"), "newest first"
    assert "b@sink.test, c@sink.test" in text and "+1" in text and "d@sink.test" not in text
    assert f'href="/dashboard/messages/{second}"' in text
    assert "delivered ×3" in text
    status, text, _ = await admin.get("/dashboard/messages?recipient=a@sink.test")
    assert "first one" in text and "second one" not in text
    status, text, _ = await admin.get("/dashboard/messages?status=deferred")
    assert "third one" in text and "first one" not in text
    status, text, _ = await admin.get("/dashboard/messages?tag=news")
    assert "first one" in text and "third one" not in text and first
    status, text, _ = await admin.get("/dashboard/messages?subject=SECOND")
    assert "second one" in text and "first one" not in text and "third one" not in text
    status, text, _ = await admin.get(f"/dashboard/messages?message_id={first}")
    assert "first one" in text and "second one" not in text
    status, text, _ = await admin.get("/dashboard/messages?sender=nobody.example")
    assert status == 200 and "first one" not in text and "second one" not in text
    status, text, _ = await admin.get("/dashboard/messages?message_id=two+words")
    assert status == 400 and "&#39;message_id&#39; must not contain spaces" in text


async def test_the_list_is_paged_by_cursor(relay, admin):
    for n in range(5):
        await submit(relay, mail(f"message number {n}", ["a@sink.test"]))
    status, text, _ = await admin.get("/dashboard/messages?limit=2")
    assert status == 200 and "message number 4" in text and "message number 3" in text
    assert "message number 2" not in text and "Newest" not in text
    older = html.unescape(re.search(r'href="([^"]+)" rel="next"', text).group(1))
    status, text, _ = await admin.get(older)
    assert "message number 2" in text and "message number 1" in text and "message number 4" not in text
    assert "Newest" in text
    older = html.unescape(re.search(r'href="([^"]+)" rel="next"', text).group(1))
    status, text, _ = await admin.get(older)
    assert "message number 0" in text and 'rel="next"' not in text


def field_errors(text: str) -> dict[str, str]:
    """The errors shown in the form, by the label of the field they are under."""
    found = re.findall(
        r'<div class="field has-error">\s*<label for="[^"]+">([^<]+)</label>.*?<p class="error"[^>]*>([^<]+)</p>',
        text,
        re.DOTALL,
    )
    return {label: html.unescape(error) for label, error in found}


async def test_a_bad_search_field_shows_its_error_next_to_it_not_a_500(admin):
    status, text, _ = await admin.get("/dashboard/messages?since=yesterday&status=nope&limit=1000")
    assert status == 400
    errors = field_errors(text)
    assert errors["Since (UTC)"] == "'since' must be an ISO 8601 time"
    assert errors["Status"].startswith("'status' must be one of queued, scheduled")
    assert "Until (UTC)" not in errors
    assert "&#39;limit&#39; must be between 1 and 100" in text
    assert 'value="yesterday"' in text, "what was typed stays in the field"


async def test_the_message_page_shows_envelope_headers_timeline_events_and_webhook_deliveries(relay, admin, sink):
    now = relay.clock.now()
    hook = Webhook("wh_1", "http://127.0.0.1:9/hook", ["queued"], True, "", "whsec_x", now, now)
    await relay.store.webhooks.create_webhook(hook)
    m = mail("hello there", ["ok@sink.test", "permfail@sink.test"], X_Relay_Tags="welcome")
    message_id = await submit(relay, m)
    await wait_for_states(relay.store, message_id, ["delivered", "bounced"])
    status, text, _ = await admin.get(f"/dashboard/messages/{message_id}")
    assert status == 200
    assert "hello there" in text and "app@example.com" in text and "welcome" in text
    assert "250 2.0.0 Ok: sunk" in text, "the sink's reply to the delivered attempt"
    assert "550 5.1.1 no such user" in text and "hard" in text, "the refusal and its classification"
    assert "127.0.0.1" in text
    assert '<th scope="row">Subject</th>' in text, "the stored headers"
    assert "Hello in plain text." in text
    for kind in ("queued", "delivered", "bounced"):
        assert f'class="state state-{kind}">{kind}</span>' in text
    assert "http://127.0.0.1:9/hook" in text, "the deliveries of its events to the webhook"
    assert "Retry now" in text and "Download raw source" in text


async def test_hostile_subject_name_and_body_are_escaped_and_the_html_body_only_in_a_sandboxed_frame(relay, admin):
    m = mail(HOSTILE_SUBJECT, ["ok@sink.test"], name=HOSTILE_NAME)
    m.add_alternative('<a href="javascript:alert(3)">click</a><script>alert(4)</script>', subtype="html")
    message_id = await submit(relay, m)
    for path in ["/dashboard/messages", f"/dashboard/messages/{message_id}"]:
        _, text, _ = await admin.get(path)
        assert "<script>alert" not in text and "<img src=x" not in text and 'href="javascript:' not in text, path
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text, path
    frames = re.findall(r"<iframe[^>]*>", text)
    assert len(frames) == 1 and 'sandbox=""' in frames[0], frames
    assert "&lt;a href=&#34;javascript:alert(3)&#34;&gt;click&lt;/a&gt;" in frames[0], "escaped into srcdoc"


async def test_retry_now_makes_waiting_recipients_due_and_says_how_many(relay, admin):
    message_id = await submit(relay, mail("retry me", ["tempfail@sink.test"]))
    (before,) = await wait_for_states(relay.store, message_id, ["deferred"])
    assert before.next_attempt_at > relay.clock.now() + 30
    csrf = await admin.csrf(f"/dashboard/messages/{message_id}")
    status, _, response = await admin.post(f"/dashboard/messages/{message_id}/retry", {"csrf_token": csrf})
    assert (status, response.headers["Location"]) == (303, f"/dashboard/messages/{message_id}?done=retried&n=1")
    deadline = time.monotonic() + 10
    while (await relay.store.queue.message_status(message_id))[0].attempts < 2:
        assert time.monotonic() < deadline, "the retried recipient was not attempted again"
        await admin.get("/dashboard/")  # yield to the engine between looks
    _, text, _ = await admin.get(response.headers["Location"])
    assert "Retry now: 1 recipient(s) due again." in text


async def test_cancel_asks_first_then_cancels_what_is_not_delivered(relay, admin):
    message_id = await submit(relay, mail("cancel me", ["ok@sink.test", "tempfail@sink.test"]))
    await wait_for_states(relay.store, message_id, ["delivered", "deferred"])
    status, text, _ = await admin.get(f"/dashboard/messages/{message_id}/cancel")
    assert status == 200 and "Cancel this message?" in text
    assert [s.state for s in await relay.store.queue.message_status(message_id)] == ["delivered", "deferred"]
    csrf = await admin.csrf(f"/dashboard/messages/{message_id}/cancel")
    status, _, response = await admin.post(f"/dashboard/messages/{message_id}/cancel", {"csrf_token": csrf})
    assert (status, response.headers["Location"]) == (303, f"/dashboard/messages/{message_id}?done=cancelled&n=1")
    await wait_for_states(relay.store, message_id, ["delivered", "cancelled"])
    _, text, _ = await admin.get(response.headers["Location"])
    assert "Cancelled 1 recipient(s)." in text and "Cancel…" not in text
    status, _, response = await admin.post(f"/dashboard/messages/{message_id}/cancel", {"csrf_token": csrf})
    assert response.headers["Location"].endswith("?done=nothing-to-cancel")
    _, text, _ = await admin.get(f"/dashboard/messages/{message_id}?done=Your+account+is+locked&n=1")
    assert "account is locked" not in text and 'role="status"' not in text, "notices are ours, not the URL's"
    status, text, _ = await admin.get(f"/dashboard/messages/{message_id}?done=cancelled&n=%C2%B2")  # n=²
    assert status == 200 and "Cancelled 0 recipient(s)." in text, "a digit to str.isdigit, not to int()"


async def test_raw_source_downloads_the_stored_message_and_an_unknown_message_is_a_404(relay, admin):
    message_id = await submit(relay, mail("raw please", ["ok@sink.test"]))
    async with admin.http.get(f"{admin.base}/dashboard/messages/{message_id}/raw") as response:
        assert response.status == 200 and response.content_type == "message/rfc822"
        assert response.headers["Content-Disposition"] == f'attachment; filename="{message_id}.eml"'
        body = await response.read()
    assert body == await relay.store.bodies.raw_message(message_id) and b"Subject: raw please" in body
    for path in ["/dashboard/messages/NOSUCHMESSAGE", "/dashboard/messages/NOSUCHMESSAGE/raw"]:
        status, text, _ = await admin.get(path)
        assert status == 404 and "no such message" in text, path


async def test_a_viewer_sees_no_actions_and_cannot_retry_cancel_or_download(relay, viewer, admin):
    message_id = await submit(relay, mail("look only", ["tempfail@sink.test"]))
    await wait_for_states(relay.store, message_id, ["deferred"])
    status, text, _ = await viewer.get(f"/dashboard/messages/{message_id}")
    assert status == 200 and "look only" in text
    assert "Retry now" not in text and "Cancel" not in text and "/raw" not in text
    csrf = await viewer.csrf(f"/dashboard/messages/{message_id}")  # the logout form's token
    for action in ("retry", "cancel"):
        status, _, _ = await viewer.post(f"/dashboard/messages/{message_id}/{action}", {"csrf_token": csrf})
        assert status == 403, action
    for path in ("raw", "cancel"):
        status, _, _ = await viewer.get(f"/dashboard/messages/{message_id}/{path}")
        assert status == 403, path
    (status_now,) = await relay.store.queue.message_status(message_id)
    assert (status_now.state, status_now.attempts) == ("deferred", 1), "nothing changed"


# -- browser ------------------------------------------------------------------------------------------------------


class Listener:
    """A TCP listener on loopback that only counts the connections it gets (a remote image's server)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.running = True
        self.thread = threading.Thread(target=self._serve, name="listener", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while self.running:
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self.running = False
        self.thread.join(5)
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    made = Listener()
    yield made
    made.close()


def send(dashboard: Dashboard, m: EmailMessage) -> str:
    """Over SMTP (smtplib) to the dashboard's relay; the message id from its reply to DATA."""
    with smtplib.SMTP("127.0.0.1", dashboard.relay.smtp_port, local_hostname="client.test", timeout=10) as smtp:
        smtp.ehlo()
        assert smtp.mail("app@example.com")[0] == 250
        for address in str(m["To"]).split(","):
            assert smtp.rcpt(address.strip())[0] == 250
        code, reply = smtp.data(m.as_bytes())
    found = re.search(r"queued as (\S+)", reply.decode())
    assert code == 250 and found, reply
    return found.group(1)


def open_when(page: Any, url: str, text: str) -> None:
    """Load ``url`` again until it shows ``text`` (the relay records an outcome just after the sink's reply).
    Every navigation here waits for the network to settle: leaving a page still loading its favicon would
    abort that request, which the harness counts as a problem."""
    deadline = time.monotonic() + 15
    while True:
        page.goto(url, wait_until="networkidle")
        if page.get_by_text(text).count():
            return
        assert time.monotonic() < deadline, f"{url} never showed {text!r}"


def test_a_message_sent_over_smtp_is_listed_and_its_page_shows_the_delivered_attempt_and_a_viewer_cannot_act(
    dashboard, page_problems
):
    page = dashboard.page
    message_id = send(dashboard, mail("Quarterly report", ["ok@sink.test", "boss@sink.test"], X_Relay_Tags="reports"))
    waiting_id = send(dashboard, mail("Still waiting", ["tempfail@sink.test"]))
    open_when(page, dashboard.url("/dashboard/messages"), "delivered ×2")
    row = page.get_by_role("row").filter(has_text="Quarterly report")
    assert "ok@sink.test, boss@sink.test" in row.inner_text() and "reports" in row.inner_text()
    page.get_by_label("Recipient").fill("boss@sink.test")
    page.get_by_label("Status").select_option("delivered")
    page.get_by_role("button", name="Search").click()
    page.wait_for_url("**/dashboard/messages?*", wait_until="networkidle")
    assert page.get_by_role("link", name="Still waiting").count() == 0, "the search left it out"
    screenshot(page, "messages")
    page.get_by_role("link", name="Quarterly report").click()
    page.wait_for_url(f"**/dashboard/messages/{message_id}", wait_until="networkidle")
    timeline = page.get_by_role("region", name="Recipient boss@sink.test")
    assert "250 2.0.0 Ok: sunk" in timeline.inner_text(), "the sink's reply to the delivered attempt"
    assert "127.0.0.1" in timeline.inner_text()
    assert page.get_by_role("button", name="Retry now").count() == 1
    assert page.get_by_role("link", name="Download raw source").count() == 1
    screenshot(page, "message")

    dashboard.sign_out(page)
    dashboard.sign_in(page, "viewer", VIEWER_PASSWORD)
    open_when(page, dashboard.url(f"/dashboard/messages/{waiting_id}"), "451 4.3.0 try again later")
    assert page.get_by_role("button", name="Retry now").count() == 0
    assert page.get_by_role("link", name="Cancel…").count() == 0
    assert page.get_by_role("link", name="Download raw source").count() == 0
    page_problems.allowed_statuses.add(403)
    post = "url => relay.post(url).then(r => r.text().then(() => r.status))"
    assert page.evaluate(post, f"/dashboard/messages/{waiting_id}/retry") == 403
    response = page.goto(dashboard.url(f"/dashboard/messages/{waiting_id}/raw"), wait_until="networkidle")
    assert response is not None and response.status == 403


# Chromium reports on the console what the page's policy and the frame's sandbox stopped: those are the point.
EXPECTED_REFUSALS = {
    "image": re.compile(r"Loading the image 'http://127\.0\.0\.1:\d+/x' violates .*\"img-src 'self' data:\""),
    "script": re.compile(r"Blocked script execution in 'about:srcdoc' because the document's frame is sandboxed"),
    "link": re.compile(r"Running the JavaScript URL violates the following Content Security Policy directive"),
}
# Chromium sometimes also starts the image's request and fails it before it leaves (its error "csp"),
# sometimes not at all: either way nothing reaches the listener.
STOPPED_BY_THE_POLICY = re.compile(r"request failed: http://127\.0\.0\.1:\d+/x csp$")


def test_a_hostile_message_renders_inert_with_no_dialog_and_no_outside_request(dashboard, listener, page_problems):
    page = dashboard.page
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    stopped: list[str] = []  # requests the policy failed before they left (see STOPPED_BY_THE_POLICY)
    page.on("requestfailed", lambda request: stopped.append(request.url) if request.failure == "csp" else None)
    m = mail(HOSTILE_SUBJECT, ["ok@sink.test"], name=HOSTILE_NAME)
    m.add_alternative(
        f'<p>Dear customer</p><a href="javascript:alert(3)">click me</a>'
        f'<img src="http://127.0.0.1:{listener.port}/x" alt="tracker"><script>alert(4)</script>',
        subtype="html",
    )
    message_id = send(dashboard, m)
    open_when(page, dashboard.url("/dashboard/messages"), "delivered")
    page.get_by_role("link", name=HOSTILE_SUBJECT).click()
    page.wait_for_url(f"**/dashboard/messages/{message_id}", wait_until="networkidle")
    assert page.get_by_role("heading", level=1).inner_text() == HOSTILE_SUBJECT, "the subject shown as text"
    from_header = page.get_by_role("row").filter(has=page.get_by_role("rowheader", name="From", exact=True))
    assert HOSTILE_NAME in from_header.inner_text(), "the display name shown as text"
    frame = page.frame_locator("iframe.body-html")
    frame.get_by_text("Dear customer").wait_for()
    frame.get_by_role("link", name="click me").click()
    page.wait_for_load_state("networkidle")
    assert dialogs == []
    assert listener.connections == 0, "the remote image was fetched"
    outside = [u for u in requests if not u.startswith(dashboard.base) and not u.startswith(("about:", "data:"))]
    assert [u for u in outside if u not in stopped] == []
    refused = {what for what, r in EXPECTED_REFUSALS.items() for p in page_problems.found if r.search(p)}
    assert refused == set(EXPECTED_REFUSALS), page_problems.found  # the policy stopped each one
    page_problems.found[:] = [
        p
        for p in page_problems.found
        if not any(r.search(p) for r in EXPECTED_REFUSALS.values()) and not STOPPED_BY_THE_POLICY.search(p)
    ]
