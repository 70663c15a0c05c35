"""The vocabulary shared by the queue, the logs, the webhooks and the tests."""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    """Where one recipient of one message stands."""

    QUEUED = "queued"  # waiting for its first attempt
    SCHEDULED = "scheduled"  # waiting for its send_at time (then like queued)
    DEFERRED = "deferred"  # a temporary failure; waiting for a retry
    SENDING = "sending"  # leased by a worker, attempt in flight
    DELIVERED = "delivered"  # the receiving server accepted it (2xx)
    BOUNCED = "bounced"  # the receiving server refused it for good (5xx)
    FAILED = "failed"  # relay gave up (queue lifetime exceeded, no route)
    SUPPRESSED = "suppressed"  # never attempted: the address is on the suppression list
    CANCELLED = "cancelled"  # removed from the queue by an operator


PENDING_STATES = (State.QUEUED, State.SCHEDULED, State.DEFERRED)
FINAL_STATES = (State.DELIVERED, State.BOUNCED, State.FAILED, State.SUPPRESSED, State.CANCELLED)
ACCEPTED_STATES = (State.QUEUED, State.SCHEDULED)  # where an accepted recipient starts (scheduled: it has a send_at)
# What a dry run (POST /v1/messages/dry-run) says a submission would do, by the state it would start in.
WOULD = {State.QUEUED: "would_queue", State.SCHEDULED: "would_schedule"}


class EventKind(StrEnum):
    """What happened to a recipient; one event row per state change."""

    QUEUED = "queued"
    DELIVERED = "delivered"
    DEFERRED = "deferred"
    BOUNCED = "bounced"
    FAILED = "failed"  # relay gave up: expired in the queue, or a permanent failure that is not a bounce
    SUPPRESSED = "suppressed"
    CANCELLED = "cancelled"
    COMPLAINED = "complained"  # the recipient reported the message as spam (a feedback report)
    UNSUPPRESSED = "unsuppressed"  # an automatic suppression lifted (relay suppressions reclassify)


EVENT_TYPES = tuple(k.value for k in EventKind)
STATS_INTERVALS = {"hour": 3600, "day": 86400}  # the buckets event counts come in (GET /v1/stats), in seconds
