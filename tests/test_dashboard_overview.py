"""The overview (relay/dashboard/home.py) and its charts (relay/dashboard/charts.py): pure chart tests, the
page and its live fragment over a store on a fake clock, then a browser test of the charts and the refresh."""

from __future__ import annotations

import re
import time

import pytest

from relay.dashboard import charts
from tests.browser import Dashboard, screenshot
from tests.test_dashboard_queue import (  # noqa: F401 - site is a fixture
    deliver,
    send,
    site,
    wait_for_sink_idle,
    wait_for_text,
)

HOUR = 3600

# -- charts: data in, SVG out -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "top"), [(0, 1), (1, 1), (2, 2), (3, 5), (7, 10), (10, 10), (11, 20), (180, 200), (501, 1000)]
)
def test_the_y_axis_ends_on_a_round_number(value, top):
    assert charts.nice_ceiling(value) == top


def test_buckets_cover_every_interval_with_zeros_where_nothing_happened():
    now = 10 * HOUR + 120  # 10:02 on the first day of 1970
    starts = charts.interval_starts(now, HOUR, 3)
    assert starts == [8 * HOUR, 9 * HOUR, 10 * HOUR]
    rows = [(8 * HOUR, "delivered", 4), (10 * HOUR, "bounced", 1), (10 * HOUR, "delivered", 2), (5 * HOUR, "x", 9)]
    buckets = charts.fill_buckets(rows, starts, "%H:00")
    assert [(b.label, dict(b.counts)) for b in buckets] == [
        ("08:00", {"delivered": 4}),
        ("09:00", {}),
        ("10:00", {"bounced": 1, "delivered": 2}),
    ]
    assert charts.totals(buckets) == {"delivered": 6, "bounced": 1}


def test_a_chart_has_one_bar_per_nonzero_count_scaled_to_the_axis():
    buckets = [charts.Bucket(0, "a", {"delivered": 10, "bounced": 5}), charts.Bucket(HOUR, "b", {})]
    svg = str(charts.bar_chart("Events", buckets, ["delivered", "bounced"]))
    bars = re.findall(r'<rect class="bar series-(\w+)"[^>]*height="([\d.]+)"', svg)
    plot = charts.HEIGHT - charts.TOP - charts.BOTTOM
    assert [(name, float(h)) for name, h in bars] == [("delivered", plot), ("bounced", plot / 2)]
    assert "<title>a: 10 delivered</title>" in svg


def test_chart_labels_are_escaped_and_carry_no_script_or_style():
    hostile = '<script>alert(1)</script>" onload="x'
    buckets = [charts.Bucket(0, hostile, {hostile: 1})]
    svg = str(charts.bar_chart(hostile, buckets, [hostile]))
    assert "<script" not in svg and 'onload="' not in svg and "style=" not in svg
    assert "&lt;script&gt;" in svg


# -- the page, over a store ---------------------------------------------------------------------------------


async def test_the_overview_shows_states_queue_depth_charts_and_top_destinations(site, sink):  # noqa: F811
    await deliver(site.store, sink.port, "ok@fine.example", "permfail@fine.example", "tempfail@slow.example")
    status, html, _ = await site.admin.get("/dashboard/")
    assert status == 200 and "<title>Overview · relay</title>" in html
    assert re.search(r'id="queue-depth">1<', html), "one recipient waiting"
    header = re.findall(r'<th scope="col">(\w+)</th>', html.split('class="by-state"')[1].split("</thead>")[0])
    counts = re.findall(r"<td>(\d+)</td>", html.split('class="by-state"')[1].split("</tbody>")[0])
    by_state = dict(zip(header, map(int, counts), strict=True))
    assert {k: by_state[k] for k in ("delivered", "bounced", "deferred", "queued")} == {
        "delivered": 1,
        "bounced": 1,
        "deferred": 1,
        "queued": 0,
    }
    assert html.count("<svg") == 2
    for kind in ("delivered", "bounced", "deferred"):
        assert len(re.findall(rf'<rect class="bar series-{kind}"', html)) == 2, f"one bar per chart for {kind}"
    assert "delivered 1, deferred 1, bounced 1, complained 0" in html
    assert 'href="/dashboard/queue#slow.example">slow.example</a>' in html
    reasons = html.split('class="deferral-reasons"')[1].split("</section>")[0]
    assert "Top deferral reasons, last 24 hours" in reasons
    assert re.findall(r"<td>(\d+)</td>", reasons) == ["1"], "the one deferral, under its reason"


async def test_the_live_fragment_is_the_live_part_alone_and_needs_a_session(site, sink):  # noqa: F811
    await deliver(site.store, sink.port, "tempfail@slow.example")
    status, html, _ = await site.viewer.get("/dashboard/overview/live")
    assert status == 200 and html.lstrip().startswith('<section class="live"') and "<html" not in html
    assert re.search(r'id="queue-depth">1<', html)
    site.store.clock.advance(2 * 86400)  # the hourly chart no longer has it; the daily one does
    await site.viewer.login("victor", "a good long password")  # the session has expired meanwhile
    _, html, _ = await site.viewer.get("/dashboard/overview/live")
    assert len(re.findall(r'<rect class="bar series-deferred"', html)) == 1
    anonymous = site.admin.__class__(site.admin.base)
    try:
        status, _, response = await anonymous.get("/dashboard/overview/live", allow_redirects=False)
        assert status == 303 and response.headers["Location"].startswith("/dashboard/login")
    finally:
        await anonymous.close()


# -- in the browser ----------------------------------------------------------------------------------------


def test_the_overview_draws_its_charts_and_refreshes_itself(dashboard: Dashboard):
    page = dashboard.page
    page.clock.install()  # the page's timers run when the test says so: no waiting 10 s
    send(dashboard, "ok@fine.example", "ok2@fine.example", "permfail@fine.example")
    wait_for_text(page, dashboard.url("/dashboard/"), "delivered 2, deferred 0, bounced 1")
    assert page.locator("svg.chart").count() == 2
    assert page.locator("svg.chart rect.bar.series-delivered").count() == 2
    assert page.locator("svg.chart rect.bar.series-bounced").count() == 2
    assert page.locator("#queue-depth").inner_text() == "0"
    screenshot(page, "overview")

    send(dashboard, "tempfail@slow.example")
    deadline = time.monotonic() + 15
    while 'id="queue-depth">1<' not in page.request.get(dashboard.url("/dashboard/overview/live")).text():
        assert time.monotonic() < deadline, "the relay never queued the message"
        page.wait_for_timeout(100)
    assert page.locator("#queue-depth").inner_text() == "0", "not refreshed yet"
    page.clock.run_for(10_000)
    page.wait_for_selector('#overview-live[data-swaps="1"]')
    assert page.locator("#queue-depth").inner_text() == "1"
    assert page.locator('a[href="/dashboard/queue#slow.example"]').count() == 1
    assert page.locator("svg.chart rect.bar.series-deferred").count() == 2
    wait_for_sink_idle(dashboard)
