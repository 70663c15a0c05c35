"""Tables for the pure decisions: what a reply means for a recipient (``relay.delivery.engine.decide``),
whether a bounce suppresses its address (``relay.suppression.decide``), which limits a destination gets
(``relay.delivery.shaping.shaping_for``), and whether a stored hard bounce is still hard today
(``relay.bounces.reclassify.wrongly_hard``). One row per rule, each saying which rule or real situation
it stands for; no I/O, no clock, no store."""

from __future__ import annotations

import random

import pytest

from relay.bounces.classify import Classification, Kind, Phase
from relay.bounces.reclassify import StoredBounce, wrongly_hard
from relay.config import Rate, Shaping
from relay.delivery.engine import decide as decide_outcome
from relay.delivery.outcome import Reply
from relay.delivery.retry import RetryPolicy
from relay.delivery.shaping import shaping_for
from relay.events import EventKind, State
from relay.store.queue import LeasedMessage, LeasedRecipient
from relay.store.suppressions import NewBounce
from relay.suppression import Decision, SuppressionPolicy
from relay.suppression import decide as decide_suppression

# -- engine.decide: one reply → delivered, bounced, deferred or failed ---------------------------------

NOW = 1_000_000.0
HOUR = 3600.0
# No jitter, so each deferral's next attempt is exact: 60 s after the 1st failure, 300 s after the 2nd and on.
POLICY = RetryPolicy(schedule=(60.0, 300.0), max_age=10 * HOUR, jitter=0.0)


def _attempt(reply: Reply, attempts: int = 0, age: float = 60.0, mx_host: str | None = None):
    recipient = LeasedRecipient(7, "bob@example.com", "example.com", attempts)
    message = LeasedMessage("msg-1", "app@sender.example", NOW - age, b"", (recipient,))
    return decide_outcome(reply, recipient, message, NOW, POLICY, random.Random(1), mx_host)


# reply, attempts so far, age of the message, MX host →
#   state, event, next attempt, recorded text, (kind, reason) of the refusal, phase of the bounce record
# fmt: off
OUTCOMES = [
    # 2xx: delivered, nothing to classify, nothing to keep in the bounce log.
    ((Reply(250, "2.0.0 Ok: queued as 4F2", Phase.AFTER_DATA), 0, 60.0, None),
     (State.DELIVERED, EventKind.DELIVERED, None, "2.0.0 Ok: queued as 4F2", None, None)),
    # 5xx "user unknown" at RCPT: bounced, hard (the one refusal that suppresses), logged with its phase.
    ((Reply(550, "5.1.1 <bob@example.com>: Recipient address rejected: User unknown", Phase.RCPT), 0, 60.0, None),
     (State.BOUNCED, EventKind.BOUNCED, None, "5.1.1 <bob@example.com>: Recipient address rejected: User unknown",
      (Kind.HARD, "user_unknown"), "rcpt")),
    # The router's own refusal of a domain that does not exist (no phase): bounced, hard.
    ((Reply(550, "5.1.2 domain nx.example does not exist"), 0, 60.0, None),
     (State.BOUNCED, EventKind.BOUNCED, None, "5.1.2 domain nx.example does not exist",
      (Kind.HARD, "domain_not_found"), "unknown")),
    # A null MX (RFC 7505): bounced, hard.
    ((Reply(556, "5.1.10 nullmx.example accepts no mail (null MX)"), 0, 60.0, None),
     (State.BOUNCED, EventKind.BOUNCED, None, "5.1.10 nullmx.example accepts no mail (null MX)",
      (Kind.HARD, "no_mail_accepted"), "unknown")),
    # "User unknown" after the data: the mailbox existed at RCPT, so a filter said it: bounced, not hard.
    ((Reply(550, "5.1.1 user unknown", Phase.AFTER_DATA), 0, 60.0, None),
     (State.BOUNCED, EventKind.BOUNCED, None, "5.1.1 user unknown", (Kind.SOFT, "filtered"), "after-data")),
    # Spam refusal after the data: bounced, the sender's problem (block), still logged.
    ((Reply(554, "5.7.1 Message rejected as spam", Phase.AFTER_DATA), 0, 60.0, None),
     (State.BOUNCED, EventKind.BOUNCED, None, "5.7.1 Message rejected as spam",
      (Kind.BLOCK, "spam_detected"), "after-data")),
    # Gmail's disabled account: bounced, but not hard (disabled accounts come back).
    ((Reply(550, "5.2.1 The email account that you tried to reach is disabled", Phase.RCPT), 0, 60.0, None),
     (State.BOUNCED, EventKind.BOUNCED, None, "5.2.1 The email account that you tried to reach is disabled",
      (Kind.SOFT, "mailbox_disabled"), "rcpt")),
    # The same words mean different things at different MX hosts: Microsoft 365 says "Access denied"
    # for an address it does not have; elsewhere it is an access-map policy.
    ((Reply(550, "5.7.1 Recipient address rejected: Access denied", Phase.RCPT), 0, 60.0, "mx.outlook.com"),
     (State.BOUNCED, EventKind.BOUNCED, None, "5.7.1 Recipient address rejected: Access denied",
      (Kind.SOFT, "user_unknown"), "rcpt")),
    ((Reply(550, "5.7.1 Recipient address rejected: Access denied", Phase.RCPT), 0, 60.0, "mx.example.net"),
     (State.BOUNCED, EventKind.BOUNCED, None, "5.7.1 Recipient address rejected: Access denied",
      (Kind.BLOCK, "policy_rejection"), "rcpt")),
    # A 5xx is final even past the queue lifetime: bounced, not expired.
    ((Reply(550, "5.1.1 user unknown", Phase.RCPT), 9, 11 * HOUR, None),
     (State.BOUNCED, EventKind.BOUNCED, None, "5.1.1 user unknown", (Kind.HARD, "user_unknown"), "rcpt")),
    # First 4xx: deferred by the first step of the schedule; a temporary refusal is not logged as a bounce.
    ((Reply(451, "4.3.0 temporary failure", Phase.RCPT), 0, 60.0, None),
     (State.DEFERRED, EventKind.DEFERRED, NOW + 60.0, "4.3.0 temporary failure",
      (Kind.SOFT, "temporary_failure"), None)),
    # Later 4xx: the schedule's last step repeats.
    ((Reply(451, "4.3.0 temporary failure", Phase.RCPT), 5, HOUR, None),
     (State.DEFERRED, EventKind.DEFERRED, NOW + 300.0, "4.3.0 temporary failure",
      (Kind.SOFT, "temporary_failure"), None)),
    # Greylisting with a hint: the receiver's "try again in 10 minutes" replaces the schedule.
    ((Reply(450, "4.2.0 greylisted, try again in 10 minutes", Phase.RCPT), 0, 60.0, None),
     (State.DEFERRED, EventKind.DEFERRED, NOW + 600.0, "4.2.0 greylisted, try again in 10 minutes",
      (Kind.SOFT, "temporary_failure"), None)),
    # A 4xx "user unknown" is temporary by its code: deferred, not hard, no bounce record.
    ((Reply(450, "4.1.1 user unknown", Phase.RCPT), 0, 60.0, None),
     (State.DEFERRED, EventKind.DEFERRED, NOW + 60.0, "4.1.1 user unknown", (Kind.SOFT, "user_unknown"), None)),
    # No reply at all (connection refused): deferred, a network error.
    ((Reply(None, "connect: ConnectionRefusedError: [Errno 111] Connect call failed", Phase.CONNECT), 0, 60.0, None),
     (State.DEFERRED, EventKind.DEFERRED, NOW + 60.0,
      "connect: ConnectionRefusedError: [Errno 111] Connect call failed", (Kind.SOFT, "network_error"), None)),
    # A failure without a reply whose text still names a dead address (a status code in an error text):
    # the one deferral that is kept as a bounce record, because it says the address is dead.
    ((Reply(None, "5.1.1 user unknown", Phase.RCPT), 0, 60.0, None),
     (State.DEFERRED, EventKind.DEFERRED, NOW + 60.0, "5.1.1 user unknown", (Kind.HARD, "user_unknown"), "rcpt")),
    # Near the end of the lifetime: one last attempt at the very end rather than none at all.
    ((Reply(451, "4.3.0 temporary failure", Phase.RCPT), 3, 10 * HOUR - 100.0, None),
     (State.DEFERRED, EventKind.DEFERRED, NOW + 100.0, "4.3.0 temporary failure",
      (Kind.SOFT, "temporary_failure"), None)),
    # A 4xx once the message has been queued max_age: relay gives up (4.4.7 expired, with the last
    # reply), and a final failure is always logged.
    ((Reply(451, "4.3.0 temporary failure", Phase.RCPT), 9, 10 * HOUR, None),
     (State.FAILED, EventKind.FAILED, None,
      "4.4.7 expired after 10h in the queue; last reply: 451 4.3.0 temporary failure",
      (Kind.SOFT, "expired"), "rcpt")),
    # Expired after a connection failure: the last "reply" is the error text alone; hours are rounded down.
    ((Reply(None, "connection to mx.example.com lost"), 9, 10 * HOUR + 3599.0, None),
     (State.FAILED, EventKind.FAILED, None,
      "4.4.7 expired after 10h in the queue; last reply: connection to mx.example.com lost",
      (Kind.SOFT, "expired"), "unknown")),
]
# fmt: on


@pytest.mark.parametrize(("given", "expected"), OUTCOMES, ids=[f"{g[0]} ({g[0].phase})" for g, _ in OUTCOMES])
def test_what_a_reply_means_for_a_recipient(given, expected):
    reply, attempts, age, mx_host = given
    state, event, next_at, text, refusal, bounce_phase = expected
    result = _attempt(reply, attempts, age, mx_host)
    assert (result.state, result.event, result.next_attempt_at, result.response) == (state, event, next_at, text)
    assert (result.recipient_id, result.address, result.code) == (7, "bob@example.com", reply.code)
    kind_reason = None if result.classification is None else (result.classification.kind, result.classification.reason)
    assert kind_reason == refusal
    assert (result.bounce.phase if result.bounce else None) == bounce_phase


def test_a_bounce_record_carries_the_refusal_and_where_it_came_from():
    reply = Reply(550, "5.1.1 user unknown", Phase.RCPT)
    result = _attempt(reply, mx_host="mx1.example.com")
    assert result.bounce == NewBounce(
        "bob@example.com",
        result.classification,
        "smtp",
        550,
        "5.1.1 user unknown",
        "mx1.example.com",
        "msg-1",
        phase="rcpt",
    )


def test_the_schedule_jitter_comes_from_the_injected_random():
    jittery = RetryPolicy(schedule=(60.0,), max_age=10 * HOUR, jitter=0.1)
    recipient = LeasedRecipient(7, "bob@example.com", "example.com", 0)
    message = LeasedMessage("msg-1", "app@sender.example", NOW - 60.0, b"", (recipient,))
    reply = Reply(451, "4.3.0 temporary failure")
    first, second = (decide_outcome(reply, recipient, message, NOW, jittery, random.Random(42)) for _ in range(2))
    assert first.next_attempt_at == second.next_attempt_at == NOW + 60.0 + 6.0 * random.Random(42).random()


# -- suppression.decide: does this bounce suppress its address, and until when ------------------------

SUPPRESSION = SuppressionPolicy(soft_bounce_limit=3, soft_bounce_window=7 * 86400.0, soft_bounce_suppression=86400.0)
NEVER_SOFT = SuppressionPolicy(soft_bounce_limit=0)

# kind of the bounce, soft bounces within the window (this one included), policy → decision
SUPPRESSIONS = [
    # A dead address (5.1.1 user unknown): suppressed until removed.
    (Kind.HARD, 1, SUPPRESSION, Decision("hard_bounce", None)),
    # A spam report from the recipient (ARF): suppressed until removed.
    (Kind.COMPLAINT, 0, SUPPRESSION, Decision("complaint", None)),
    # The third soft bounce in the window (a full mailbox, again): suppressed for a while.
    (Kind.SOFT, 3, SUPPRESSION, Decision("soft_bounces", NOW + 86400.0)),
    # More soft bounces than the limit: still for a while, counted from now.
    (Kind.SOFT, 10, SUPPRESSION, Decision("soft_bounces", NOW + 86400.0)),
    # The second soft bounce: below the limit, not suppressed.
    (Kind.SOFT, 2, SUPPRESSION, None),
    # soft_bounce_limit = 0 turns soft suppression off, however many.
    (Kind.SOFT, 100, NEVER_SOFT, None),
    # A hard bounce suppresses whatever the soft-bounce policy says.
    (Kind.HARD, 0, NEVER_SOFT, Decision("hard_bounce", None)),
    # A block (spam filter, blocklisted IP, DMARC): the sender has something to fix, the address is fine.
    (Kind.BLOCK, 10, SUPPRESSION, None),
    # An out-of-office reply never suppresses.
    (Kind.AUTO_REPLY, 10, SUPPRESSION, None),
    # A refusal nobody could read never suppresses.
    (Kind.UNKNOWN, 10, SUPPRESSION, None),
]


@pytest.mark.parametrize(("kind", "recent_soft", "policy", "decision"), SUPPRESSIONS)
def test_whether_a_bounce_suppresses(kind, recent_soft, policy, decision):
    assert decide_suppression(Classification(kind, "any_reason"), recent_soft, NOW, policy) == decision


def test_every_kind_that_suppresses_for_good_is_one_that_suppresses():
    """The suppression rule and ``Classification.suppresses`` (what the API shows) agree."""
    for kind in Kind:
        decision = decide_suppression(Classification(kind, "r"), 0, NOW, NEVER_SOFT)
        assert (decision is not None) == Classification(kind, "r").suppresses


# -- delivery.shaping.shaping_for: which limits a destination gets ------------------------------------

GMAIL_MX = ("aspmx.l.google.com", "alt1.aspmx.l.google.com")
OTHER_MX = ("mx.example.org",)
DEFAULT = Shaping()

# recipient domain, its MX hosts, the operator's overrides → the limits
# fmt: off
SHAPINGS = [
    # Nothing known about the site: the defaults.
    ("example.org", OTHER_MX, {}, DEFAULT),
    # A Google Workspace domain: Gmail's built-in limits, found by MX suffix.
    ("customer.example", GMAIL_MX, {}, Shaping(max_connections=5, max_messages_per_connection=50)),
    # The MX host's case and trailing dot do not matter.
    ("customer.example", ("ASPMX.L.GOOGLE.COM.",), {}, Shaping(max_connections=5, max_messages_per_connection=50)),
    # A suffix matches whole labels only: notgoogle.com is not google.com.
    ("x.example", ("mx.notgoogle.com",), {}, DEFAULT),
    # "default" changes the defaults of every site...
    ("example.org", OTHER_MX, {"default": {"max_connections": 2}}, Shaping(max_connections=2)),
    # ... under the built-in provider entry, which keeps its own keys and inherits the rest.
    ("gmail.com", GMAIL_MX, {"default": {"max_connections": 2, "max_connection_age": 60.0}},
     Shaping(max_connections=5, max_messages_per_connection=50, max_connection_age=60.0)),
    # An operator entry by MX suffix goes over the built-in one.
    ("gmail.com", GMAIL_MX, {"google.com": {"max_connections": 1, "max_rate": Rate(100, 3600.0)}},
     Shaping(max_connections=1, max_messages_per_connection=50, max_rate=Rate(100, 3600.0))),
    # An operator entry for the recipient domain goes over everything, whatever the domain's case.
    ("Gmail.COM", GMAIL_MX, {"google.com": {"max_connections": 1}, "gmail.com": {"max_connections": 3}},
     Shaping(max_connections=3, max_messages_per_connection=50)),
    # An entry for another domain at the same site does not apply.
    ("gmail.com", GMAIL_MX, {"customer.example": {"max_connections": 1}},
     Shaping(max_connections=5, max_messages_per_connection=50)),
    # MX hosts at two providers: one built-in entry applies, the first in the table's order (not the MX order).
    ("mixed.example", ("mx.example.outlook.com", "aspmx.l.google.com"), {},
     Shaping(max_connections=5, max_messages_per_connection=50)),
]
# fmt: on


@pytest.mark.parametrize(("domain", "mx_hosts", "overrides", "shaping"), SHAPINGS)
def test_which_limits_a_destination_gets(domain, mx_hosts, overrides, shaping):
    assert shaping_for(domain, mx_hosts, overrides) == shaping


# -- bounces.reclassify.wrongly_hard: is a stored hard bounce still hard today -------------------------


def _stored(kind: str, code: int | None, diagnostic: str, phase: str | None = "rcpt") -> StoredBounce:
    status = diagnostic.split(" ", 1)[0] if diagnostic[:1].isdigit() else None
    return StoredBounce("bob@example.com", kind, "user_unknown", code, status, diagnostic, None, "smtp", None, phase)


# the stored bounce → None (nothing to lift) or the kind and reason it gets now
# fmt: off
REREADS = [
    # A real dead address at RCPT: still hard, nothing to lift.
    (_stored("hard", 550, "5.1.1 user unknown"), None),
    # Stored before the phase was kept (migration 11): read as an unknown phase, still hard.
    (_stored("hard", 550, "5.1.1 user unknown", phase=None), None),
    # A disabled account stored as hard before issue 18: soft now, lift it.
    (_stored("hard", 550, "5.2.1 The email account that you tried to reach is disabled"),
     (Kind.SOFT, "mailbox_disabled")),
    # "User unknown" after the data was a filter, not a dead mailbox: soft now.
    (_stored("hard", 550, "5.1.1 user unknown", phase="after-data"), (Kind.SOFT, "filtered")),
    # A 4xx that said "user unknown" was never permanent: soft now.
    (_stored("hard", 450, "4.1.1 user unknown"), (Kind.SOFT, "user_unknown")),
    # A complaint is not a hard bounce: never lifted by this rule.
    (_stored("complaint", None, "abuse report"), None),
    # A soft bounce is not looked at.
    (_stored("soft", 552, "5.2.2 mailbox full"), None),
]
# fmt: on


@pytest.mark.parametrize(("stored", "now"), REREADS, ids=[f"{b.kind} {b.diagnostic} ({b.phase})" for b, _ in REREADS])
def test_whether_a_stored_hard_bounce_is_still_hard(stored, now):
    reading = wrongly_hard(stored)
    assert (None if reading is None else (reading.kind, reading.reason)) == now
