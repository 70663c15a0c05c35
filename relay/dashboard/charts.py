"""Charts drawn on the server as SVG: counts in, SVG text out (no script, no style attribute: classes only).

The overview draws event counts per hour and per day with :func:`bar_chart`. Every label is escaped here,
so the result is :class:`markupsafe.Markup` a template may insert as it is. Colours come from the page's
stylesheet by class: ``series-<name>`` on each bar and legend swatch.

:func:`fill_buckets` shapes ``EventStore.event_counts`` rows as ``GET /v1/stats`` does (counts by type per
interval start), with a zero bucket for every interval that has no events, so bars line up with time.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
from collections.abc import Iterable, Mapping, Sequence

from markupsafe import Markup, escape

WIDTH = 560
HEIGHT = 220
LEFT = 44  # room for the y axis labels
RIGHT = 8
TOP = 28  # room for the legend
BOTTOM = 24  # room for the x axis labels


@dataclasses.dataclass(frozen=True)
class Bucket:
    """One interval of a chart: its start (UTC seconds), its axis label, and counts by series name."""

    start: int
    label: str
    counts: Mapping[str, int]


def interval_starts(now: float, interval: int, count: int) -> list[int]:
    """The starts of the ``count`` intervals up to and including the one ``now`` is in, oldest first."""
    current = int(now // interval * interval)
    return [current - interval * i for i in range(count - 1, -1, -1)]


def fill_buckets(rows: Iterable[tuple[int, str, int]], starts: Sequence[int], label: str = "%H:00") -> list[Bucket]:
    """Rows of (interval start, event type, count), as ``event_counts`` gives them, as one bucket per start
    (``label`` is a strftime format, in UTC); rows outside ``starts`` are left out."""
    by_start: dict[int, dict[str, int]] = {start: {} for start in starts}
    for start, kind, n in rows:
        if start in by_start:
            by_start[start][kind] = by_start[start].get(kind, 0) + n
    return [
        Bucket(start, datetime.datetime.fromtimestamp(start, datetime.UTC).strftime(label), by_start[start])
        for start in starts
    ]


def totals(buckets: Iterable[Bucket]) -> dict[str, int]:
    """Counts by series over every bucket (the ``totals`` of ``GET /v1/stats``)."""
    summed: dict[str, int] = {}
    for bucket in buckets:
        for name, n in bucket.counts.items():
            summed[name] = summed.get(name, 0) + n
    return summed


def nice_ceiling(value: int) -> int:
    """The smallest of 1, 2, 5, 10, 20, 50 … that is at least ``value`` (at least 1): the top of the y axis."""
    if value <= 1:
        return 1
    power = int(10 ** math.floor(math.log10(value)))
    for step in (1, 2, 5, 10):
        if step * power >= value:
            return step * power
    return 10 * power  # pragma: no cover - the loop always returns


def bar_chart(title: str, buckets: Sequence[Bucket], series: Sequence[str], label_every: int = 1) -> Markup:
    """Grouped bars: for each bucket, one bar per series name (in ``series`` order), on a shared y axis.

    ``label_every`` labels every n-th bucket on the x axis. Each bar carries a ``<title>`` (its bucket, series
    and count) that browsers show on hover.
    """
    top = nice_ceiling(max((b.counts.get(s, 0) for b in buckets for s in series), default=0))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / max(len(buckets), 1)
    bar_w = max(slot * 0.8 / max(len(series), 1), 1.0)
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}"'
        ' xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
    ]
    parts += _axes(top, plot_w, plot_h)
    parts += _legend(series)
    for i, bucket in enumerate(buckets):
        x0 = LEFT + i * slot + slot * 0.1
        for j, name in enumerate(series):
            n = bucket.counts.get(name, 0)
            if n <= 0:
                continue
            h = max(plot_h * n / top, 1.0)
            parts.append(
                f'<rect class="bar series-{escape(name)}" x="{x0 + j * bar_w:.1f}" y="{TOP + plot_h - h:.1f}"'
                f' width="{bar_w:.1f}" height="{h:.1f}">'
                f"<title>{escape(bucket.label)}: {n} {escape(name)}</title></rect>"
            )
        if i % max(label_every, 1) == 0:
            parts.append(
                f'<text class="tick" x="{LEFT + i * slot + slot / 2:.1f}" y="{HEIGHT - 6}"'
                f' text-anchor="middle">{escape(bucket.label)}</text>'
            )
    parts.append("</svg>")
    return Markup("".join(parts))


def _axes(top: int, plot_w: float, plot_h: float) -> list[str]:
    lines = []
    for value in (0, top / 2, top):
        y = TOP + plot_h - plot_h * value / top
        shown = f"{value:g}" if value == int(value) else f"{value:.1f}"
        lines.append(f'<line class="grid" x1="{LEFT}" x2="{LEFT + plot_w:.1f}" y1="{y:.1f}" y2="{y:.1f}"/>')
        lines.append(f'<text class="tick" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{shown}</text>')
    return lines


def _legend(series: Sequence[str]) -> list[str]:
    items = []
    x = LEFT
    for name in series:
        items.append(f'<rect class="swatch series-{escape(name)}" x="{x}" y="8" width="10" height="10"/>')
        items.append(f'<text class="legend" x="{x + 14}" y="17">{escape(name)}</text>')
        x += 24 + 8 * len(name)
    return items
