"""The queue's values, shared by every backend: leased messages, attempt results, listings, selections."""

from __future__ import annotations

import dataclasses
from typing import Any

from relay.bounces.classify import Classification
from relay.errors import RelayError
from relay.events import EventKind, State
from relay.store.suppressions import NewBounce


@dataclasses.dataclass(frozen=True)
class LeasedRecipient:
    id: int
    address: str
    domain: str
    attempts: int


@dataclasses.dataclass(frozen=True)
class LeasedMessage:
    """A message with the recipients a worker has leased for one attempt."""

    id: str
    sender: str
    created_at: float
    raw: bytes
    recipients: tuple[LeasedRecipient, ...]
    sandbox: bool = False  # captured, never delivered


@dataclasses.dataclass(frozen=True)
class AttemptResult:
    """The outcome of one attempt for one recipient, as the queue records it."""

    recipient_id: int
    message_id: str
    address: str
    state: State
    event: EventKind
    next_attempt_at: float | None
    code: int | None
    response: str
    mx_host: str | None = None  # where the attempt went (None: no connection was made)
    ip: str | None = None
    tls: str | None = None  # TLS version, None for plain text or no connection
    bounce: NewBounce | None = None  # a refusal to keep in the bounce log (and maybe suppress)
    classification: Classification | None = None  # what a refusal means (every outcome but delivered)
    sandbox: bool = False  # captured in the sandbox: no connection was made
    attempt: int | None = None  # which attempt this was (the leased recipient's attempts + 1), if known


@dataclasses.dataclass(frozen=True)
class Quota:
    api_key_id: str
    daily: int | None
    monthly: int | None


@dataclasses.dataclass(frozen=True)
class Attempt:
    at: float
    mx_host: str | None
    ip: str | None
    tls: str | None
    code: int | None
    enhanced: str | None
    text: str | None


@dataclasses.dataclass(frozen=True)
class QueueSummary:
    by_state: dict[str, int]
    by_domain: dict[str, dict[str, int]]  # domain → state → count, for recipients not yet final


@dataclasses.dataclass(frozen=True)
class RecipientStatus:
    address: str
    state: str
    attempts: int
    next_attempt_at: float | None
    last_code: int | None
    last_response: str | None
    updated_at: float


@dataclasses.dataclass(frozen=True)
class MessageRecord:
    id: str
    created_at: float
    sender: str
    size: int
    source: str
    subject: str
    tags: list[str]
    metadata: dict[str, Any]
    api_key_id: str | None
    recipients: list[RecipientStatus]
    send_at: float | None = None
    sandbox: bool = False


@dataclasses.dataclass(frozen=True)
class MessageFilter:
    before: str | None = None  # cursor: the last id of the previous page
    status: str | None = None  # messages with at least one recipient in this state
    recipient: str | None = None
    tag: str | None = None
    since: float | None = None
    until: float | None = None
    api_key_id: str | None = None  # submitted with this key
    sender: str | None = None  # the envelope sender: an address (with "@"), or every address of a domain
    subject: str | None = None  # the subject contains this (case-insensitive)
    message_id: str | None = None  # relay's id or the Message-ID header (with or without its angle brackets)


@dataclasses.dataclass(frozen=True)
class MessagePage:
    """One page of a message search, newest first. ``next_cursor`` (the ``before`` of the next page) is set when
    there may be more: after a full page, or after a page a bounded subject search cut short."""

    messages: list[MessageRecord]
    next_cursor: str | None


@dataclasses.dataclass(frozen=True)
class DomainQueue:
    domain: str
    queued: int
    deferred: int
    sending: int
    scheduled: int  # deferred and due later than now
    oldest: float | None  # creation time of the oldest message still waiting
    suspended_until: float | None


@dataclasses.dataclass(frozen=True)
class Selection:
    """Which waiting recipients an operator command applies to; no field set means all of them."""

    message_id: str | None = None
    domain: str | None = None
    sender: str | None = None
    recipient: str | None = None
    created_before: float | None = None  # messages accepted before this time

    @property
    def is_everything(self) -> bool:
        return all(getattr(self, f.name) is None for f in dataclasses.fields(self))


class BodyDeleted(RelayError):
    """The message's body is gone (``[retention] bodies``): it cannot be sent again."""


@dataclasses.dataclass(frozen=True)
class Resent:
    """What a resend did to one recipient: ``queued`` again, left ``suppressed``, or ``unchanged``
    (not bounced or failed)."""

    address: str
    previous: str
    result: str
    reason: str | None = None


RESEND_RESULTS = ("queued", "suppressed", "unchanged")  # Resent.result


@dataclasses.dataclass(frozen=True)
class ReturnedTarget:
    """The recipient of one of our messages that a returned report is about."""

    message_id: str
    recipient_id: int
    address: str
    state: str
