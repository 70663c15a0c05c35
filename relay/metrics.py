"""Prometheus metrics: queue and event counts read from the store at scrape time, plus this process's own.

Counts that matter across processes (queue depth by state, events by type,
webhook backlog) come from the store, so every process reports the same
numbers. The delivery latency histogram and the SMTP session gauge are kept
by the process that delivers or accepts; with ``[server] acceptors = N`` a
scrape answered by an acceptor shows its own sessions and no deliveries.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from relay.store.protocols import Storage

PROCESS = CollectorRegistry(auto_describe=True)
DELIVERY_SECONDS = Histogram(
    "relay_delivery_latency_seconds",
    "From acceptance to the receiving server's 2xx, per recipient",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 14400, 86400),
    registry=PROCESS,
)


class _Snapshot:
    """A collector over values gathered (asynchronously) just before rendering."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self.families


async def render(store: Storage, smtp_sessions: Callable[[], int] | None = None) -> bytes:
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
    return generate_latest(registry) + generate_latest(PROCESS)
