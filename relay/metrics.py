"""Prometheus metrics: queue and event counts read from the store at scrape time, plus this process's own.

Counts that matter across processes (queue depth by state, events by type,
webhook backlog) come from the store, so every process reports the same
numbers. The delivery latency histogram and the SMTP session gauge are kept
by the process that delivers or accepts; with ``[server] acceptors = N`` a
scrape answered by an acceptor shows its own sessions and no deliveries.

prometheus_client is imported for a scrape only: the histogram is kept here (as its Histogram keeps
one, and rendered the same), so a process that delivers but answers no scrape never loads it.
"""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from relay.store.protocols import Storage

if TYPE_CHECKING:
    from prometheus_client.core import Metric


class Histogram:
    """Observations counted into buckets (upper bounds, +Inf added), with their sum; what prometheus_client's
    Histogram without labels exposes, from :meth:`metric`."""

    def __init__(self, name: str, documentation: str, buckets: Sequence[float]) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = [*map(float, buckets), math.inf]
        self.counts = [0.0] * len(self.bounds)  # per bucket, not cumulative
        self.sum = 0.0
        self.created = time.time()

    def observe(self, amount: float) -> None:
        self.sum += amount
        self.counts[bisect.bisect_left(self.bounds, amount)] += 1  # the first bound >= amount

    def metric(self) -> Metric:
        """The samples prometheus_client's Histogram gives, in its order: cumulative buckets, count, sum,
        created (unless PROMETHEUS_DISABLE_CREATED_SERIES is set)."""
        from prometheus_client import metrics
        from prometheus_client.core import Metric
        from prometheus_client.utils import floatToGoString

        family = Metric(self.name, self.documentation, "histogram")
        total = 0.0
        for bound, count in zip(self.bounds, self.counts, strict=True):
            total += count
            family.add_sample(self.name + "_bucket", {"le": floatToGoString(bound)}, total)  # type: ignore[no-untyped-call]
        family.add_sample(self.name + "_count", {}, total)
        family.add_sample(self.name + "_sum", {}, self.sum)
        if getattr(metrics, "_use_created", True):
            family.add_sample(self.name + "_created", {}, self.created)
        return family


DELIVERY_SECONDS = Histogram(
    "relay_delivery_latency_seconds",
    "From acceptance to the receiving server's 2xx, per recipient",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 14400, 86400),
)


class _Snapshot:
    """A collector over values gathered (asynchronously) just before rendering."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self.families


async def render(store: Storage, smtp_sessions: Callable[[], int] | None = None) -> bytes:
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    summary = await store.queue.summary()
    totals = await store.events.event_totals()
    backlog = await store.webhooks.webhook_backlog()
    queue = GaugeMetricFamily("relay_queue_recipients", "Recipients in the queue by state", labels=["state"])
    for state, count in sorted(summary.by_state.items()):
        queue.add_metric([state], count)
    events = CounterMetricFamily("relay_events", "Events recorded, by type (accepted = queued)", labels=["type"])
    for kind, count in sorted(totals.items()):
        events.add_metric([kind], count)
    hooks = GaugeMetricFamily("relay_webhook_backlog", "Webhook deliveries waiting to be sent")
    hooks.add_metric([], sum(backlog.values()))
    families: list[Metric] = [queue, events, hooks]
    if smtp_sessions is not None:
        sessions = GaugeMetricFamily("relay_smtp_sessions", "Open SMTP submission connections in this process")
        sessions.add_metric([], smtp_sessions())
        families.append(sessions)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(families))
    process = CollectorRegistry(auto_describe=False)
    process.register(_Snapshot([DELIVERY_SECONDS.metric()]))
    return generate_latest(registry) + generate_latest(process)
