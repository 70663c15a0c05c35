"""What a storage backend provides: one Protocol per concept, each a repository over the backend's database.

relay's code above ``relay/store/`` is typed against these, never against a backend class. A backend
(SQLite today: :class:`relay.store.Store` bundles ``relay.store.*.Sqlite*`` over one group-commit
``Database``) provides all of them; ``tests/test_store_contract.py`` runs the same tests against each.

* :class:`QueueStore`        the mail queue: enqueue, lease due recipients, record attempts; listings;
                             operator control; returned mail; scheduling, quotas and the sandbox
* :class:`EventStore`        the event log, its stats and retention
* :class:`SuppressionStore`  bounces, the suppression list and its allowlist
* :class:`KeyStore`          API keys, stored as digests (:func:`relay.keys.create_api_key` makes them)
* :class:`CredentialStore`   SMTP credentials, stored as argon2 hashes (``credentials.create_smtp_credential``)
* :class:`DomainStore`       sending domains and their DKIM keys (private keys sealed by relay.secrets)
* :class:`SecretStore`       named secrets (the VERP secret), sealed by relay.secrets
* :class:`TemplateStore`     templates and their versions
* :class:`WebhookStore`      webhook endpoints and their durable delivery queue
* :class:`IdempotencyStore`  Idempotency-Key claims and the outcomes replayed to retries
* :class:`NodeStore`         the nodes serving the store and their heartbeats
* :class:`SiteStore`         per-destination-site connection slots and push-back, for a whole cluster; the
                             last error of each destination domain
* :class:`RateCounters`      fixed-window rate-limit counters shared by every process and node
* :class:`OperatorStore`     dashboard operators (argon2id password hashes) and their sessions (token digests)
* :class:`BodyStore`         the stored raw messages, read back (the dashboard's message page)
* :class:`Storage`           all of the above as attributes, plus the clock and ``close()``

Every write returns once it is durable. Errors: :class:`relay.errors.StoreFull` when the disk is full,
:class:`relay.errors.StoreUnavailable` when the database cannot be read or written; never a driver's own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from relay.clock import Clock
from relay.config import Rate
from relay.credentials import SmtpCredential
from relay.domains import DkimKey, Domain
from relay.keys import ApiKey
from relay.message import NewMessage
from relay.nodes import Node, NodeInfo
from relay.ratelimit import Decision
from relay.store.events import BounceStats, DeferralReason, Event, EventFilter
from relay.store.idempotency import Completion, IdempotencyRecord
from relay.store.operators import Operator, OperatorSession
from relay.store.queue.records import (
    Attempt,
    AttemptResult,
    DomainQueue,
    LeasedMessage,
    MessageFilter,
    MessagePage,
    MessageRecord,
    QueueSummary,
    Quota,
    RecipientStatus,
    Resent,
    ReturnedTarget,
    Selection,
)
from relay.store.reclassify import Reclassified
from relay.store.secrets import SealedValue
from relay.store.sites import LastError
from relay.store.suppressions import Bounce, BounceFilter, NewBounce, Suppression, SuppressionFilter
from relay.store.templates import Template, TemplateVersion
from relay.store.webhooks import AttemptOutcome, AttemptRecord, DueDelivery, MessageDelivery, Webhook


class QueueStore(Protocol):
    """The mail queue: life cycle (enqueue, claim, record), listings, operator control, returned mail, scheduling."""

    def watch(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (on this event loop) when any node queues work that is due now: every node's
        engine hears another's new mail at once on a shared database. SQLite: never (one machine)."""
        ...

    async def enqueue_many(
        self, messages: Sequence[NewMessage], quota: Quota | None = None, completion: Completion | None = None
    ) -> None:
        """Durably queue several messages in one transaction: all of them or, on an error, none."""
        ...

    async def enqueue(
        self, message: NewMessage, quota: Quota | None = None, completion: Completion | None = None
    ) -> None:
        """Durably queue a message; returns once it is committed to disk.

        ``quota``: count it against an API key's quota (raises QuotaExhausted).
        ``completion``: store the Idempotency-Key outcome in the same transaction.
        """
        ...

    async def claim_due(
        self, limit: int, owner: str, lease: float, max_bytes: int | None = None, first_fits: bool = True
    ) -> list[LeasedMessage]: ...

    async def record_attempts(self, results: list[AttemptResult]) -> None: ...

    async def postpone(self, recipient_ids: list[int], until: float) -> None: ...

    async def postpone_each(self, returns: Sequence[tuple[int, float]]) -> None: ...

    async def bring_forward(self, recipient_ids: list[int]) -> int: ...

    async def attempts(self, message_id: str, address: str) -> list[Attempt]: ...

    async def domain_queues(self) -> list[DomainQueue]: ...

    async def retry_now(self, selection: Selection) -> int: ...

    async def purge(self, selection: Selection) -> int: ...

    async def cancel_scheduled(self) -> tuple[int, int]:
        """Cancel every scheduled message not yet due: (messages, recipients)."""
        ...

    async def resend(self, message_id: str) -> list[Resent] | None:
        """Queue a message's bounced and failed recipients again unless suppressed now (None: no such message)."""
        ...

    async def suspend_domain(self, domain: str, duration: float, reason: str = "") -> float: ...

    async def resume_domain(self, domain: str) -> bool: ...

    async def admin_bounce(self, reason: str, selection: Selection) -> int: ...

    async def release_leases(self, owner: str | None = None) -> int:
        """Release ``owner``'s leases, or (owner None) every expired lease."""
        ...

    async def renew_leases(self, owner: str, lease: float, recipient_ids: Sequence[int]) -> int:
        """Extend ``owner``'s leases of ``recipient_ids`` that have not expired to ``lease`` seconds from now
        (it is alive and still working on them); an expired lease may be another node's already, so it
        stays expired, and so does any lease ``owner`` holds but did not name (an outcome it failed to record)."""
        ...

    async def next_due_at(self) -> float | None: ...

    async def summary(self) -> QueueSummary: ...

    async def message_status(self, message_id: str) -> list[RecipientStatus]: ...

    async def message(self, message_id: str) -> MessageRecord | None: ...

    async def messages(self, filter: MessageFilter, limit: int) -> list[MessageRecord]: ...

    async def search(self, filter: MessageFilter, limit: int) -> MessagePage:
        """A page of messages, newest first, with the cursor of the next page (relay.store.queue.search)."""
        ...

    async def state_counts(self) -> dict[str, int]:
        """Recipients in each state now (every state, 0 included)."""
        ...

    async def scheduled_messages(
        self, after: str | None, limit: int, api_key_id: str | None = None
    ) -> list[MessageRecord]: ...

    async def reschedule(self, message_id: str, send_at: float) -> int: ...

    async def cancel_message(self, message_id: str) -> list[str]: ...

    async def pending_count(self) -> int: ...

    async def check_quota(self, quota: Quota) -> None:
        """Raise QuotaExhausted if one more message would go over the quota; counts nothing (dry runs)."""
        ...

    async def key_usage(self, api_key_id: str) -> tuple[int, int]:
        """Messages counted against the key's quotas this UTC day and month."""
        ...

    async def sandbox_messages(
        self, before: str | None, limit: int, api_key_id: str | None = None
    ) -> list[MessageRecord]: ...

    async def sandbox_message(self, message_id: str) -> tuple[MessageRecord, bytes | None] | None:
        """A sandboxed message and its body (None once [retention] bodies has deleted it)."""
        ...

    async def returned_target(self, message_id: str, recipient_id: int) -> ReturnedTarget | None:
        """The recipient an authenticated return path names, if the message is still known."""
        ...

    async def targets_by_header_id(self, header_id: str) -> list[ReturnedTarget]:
        """The recipients of the message(s) with this Message-ID header."""
        ...

    async def record_returned(self, bounce: NewBounce, target: ReturnedTarget) -> tuple[int, Suppression | None]:
        """A returned report (DSN or complaint) about one recipient: bounce, suppression, event, state."""
        ...


class EventStore(Protocol):
    """The event log, its stats and retention."""

    async def query(self, filter: EventFilter, limit: int) -> list[Event]: ...

    async def message_events(self, message_id: str) -> list[Event]: ...

    async def event(self, event_id: int) -> Event | None: ...

    async def event_counts(
        self, since: float, until: float, interval: int, tag: str | None
    ) -> list[tuple[int, str, int]]: ...

    async def event_totals(self) -> dict[str, int]: ...

    async def bounce_stats(self, since: float, until: float) -> BounceStats: ...

    async def deferral_reasons(self, since: float, until: float, limit: int) -> list[DeferralReason]:
        """The most frequent reasons of the deferrals in [since, until), replies grouped by reason."""
        ...

    async def prune_history(self, events_before: float, bodies_before: float) -> tuple[int, int]:
        """One batch of old events (and webhook logs) and of bodies nothing will send again; repeat while > 0."""
        ...


class SuppressionStore(Protocol):
    """Bounces, the suppression list and its allowlist."""

    async def record_bounce(self, bounce: NewBounce) -> tuple[int, Suppression | None]: ...

    async def suppressed(self, addresses: Iterable[str]) -> dict[str, Suppression]: ...

    async def suppression(self, address: str) -> Suppression | None: ...

    async def query(self, filter: SuppressionFilter, limit: int) -> list[Suppression]: ...

    async def suppress(
        self, addresses: Sequence[str], reason: str = "manual", detail: str = "", expires_at: float | None = None
    ) -> list[Suppression]: ...

    async def unsuppress(self, address: str) -> bool: ...

    async def reclassify_suppressions(self, apply: bool) -> Reclassified:
        """Permanent hard-bounce suppressions the rule in force would not make: listed, or lifted (``apply``)."""
        ...

    async def allow(self, entry: str, note: str = "") -> str: ...

    async def disallow(self, entry: str) -> bool: ...

    async def allowlist(self) -> list[tuple[str, str, float]]: ...

    async def bounces(self, filter: BounceFilter, limit: int) -> list[Bounce]: ...

    async def bounce(self, bounce_id: int) -> Bounce | None: ...


class KeyStore(Protocol):
    """API keys (stored as digests)."""

    async def add_api_key(self, key: ApiKey, key_hash: str) -> None:
        """Store a key made by :func:`relay.keys.create_api_key`: its record and the digest of its secret."""
        ...

    async def api_key(self, key_id: str) -> ApiKey | None: ...

    async def authenticate(self, secret: str) -> ApiKey | None:
        """The active key with this secret, or None. Records last use at most once a minute."""
        ...

    async def list_api_keys(self) -> list[ApiKey]: ...

    async def revoke_api_key(self, key_id: str) -> bool: ...


class CredentialStore(Protocol):
    """SMTP credentials (stored as argon2 hashes)."""

    async def add_smtp_credential(self, cred: SmtpCredential, password_hash: str) -> None:
        """Store a credential made by :func:`relay.credentials.create_smtp_credential` and its password hash."""
        ...

    async def smtp_credential_for_login(self, username: str) -> tuple[SmtpCredential, str] | None: ...

    async def smtp_credential(self, cred_id: str) -> SmtpCredential | None: ...

    async def list_smtp_credentials(self) -> list[SmtpCredential]: ...

    async def revoke_smtp_credential(self, cred_id: str) -> bool: ...

    def touch_smtp_credential(self, cred_id: str) -> None:
        """Record use, at most once a minute per credential, without waiting for it."""
        ...


class DomainStore(Protocol):
    """Sending domains and their DKIM keys."""

    def changes(self) -> Callable[[], int]:
        """A count that moves after every change to the domains or their keys that any process commits
        (another node's once its notification has come): call it on the event loop that is to hear them."""
        ...

    async def create_domain(self, domain_id: str, name: str, key: DkimKey) -> Domain: ...

    async def domain(self, ident: str) -> Domain | None: ...

    async def list_all(self) -> list[Domain]: ...

    async def domain_page(self, limit: int, after: str | None = None) -> list[Domain]:
        """At most ``limit`` domains by name, those after the name ``after`` (keyset paging)."""
        ...

    async def delete_domain(self, ident: str) -> Domain | None: ...

    async def add_dkim_key(self, domain_id: str, key: DkimKey) -> None: ...

    async def store_file_key(self, domain_id: str, selector: str, sealed: bytes, public_key: str) -> bool:
        """A key still kept in its file, now in the store (sealed); False if another process moved it first."""
        ...

    async def record_domain_checks(
        self, domain: Domain, checks: dict[str, dict[str, str]], promote: str | None
    ) -> Domain: ...


class SecretStore(Protocol):
    """Named secrets, sealed by :mod:`relay.secrets` (the store never sees them in clear)."""

    async def secret(self, name: str) -> bytes | None: ...

    async def add_secret(self, name: str, value: bytes) -> bytes:
        """Store ``value`` unless ``name`` has one already; the value stored (the first one wins)."""
        ...

    async def sealed_values(self) -> list[SealedValue]:
        """Every sealed value the store keeps: the named secrets and the DKIM keys' private keys."""
        ...

    async def replace_sealed(self, changes: list[tuple[SealedValue, bytes]]) -> int:
        """Replace each value by its new sealing in one transaction (all or none; SealedValuesChanged if one
        is no longer as read)."""
        ...

    async def forget_sealed(self) -> list[tuple[str, str]]:
        """Delete every sealed value (the secrets, the DKIM keys kept in the store): (domain id, selector)s."""
        ...


class TemplateStore(Protocol):
    """Templates and their versions."""

    async def create_template(
        self, template_id: str, name: str, subject: str, html: str | None, text: str | None
    ) -> Template: ...

    async def template(self, template_id: str) -> Template | None: ...

    async def list_all(self) -> list[Template]: ...

    async def update_template(
        self,
        template_id: str,
        name: str | None,
        subject: str,
        html: str | None,
        text: str | None,
        note: str = "updated",
    ) -> Template | None: ...

    async def delete_template(self, template_id: str) -> bool: ...

    async def template_version(self, template_id: str, number: int) -> TemplateVersion | None: ...

    async def template_page(self, limit: int, after: str | None = None) -> list[Template]:
        """At most ``limit`` templates by name, those after the template ``after`` (an id: keyset paging)."""
        ...

    async def template_versions(
        self, template_id: str, limit: int | None = None, before: int | None = None
    ) -> list[TemplateVersion]:
        """Newest first: at most ``limit`` (None: all), older than version ``before``."""
        ...


class WebhookStore(Protocol):
    """Webhook endpoints and their delivery queue."""

    async def create_webhook(self, hook: Webhook) -> None: ...

    async def webhook(self, hook_id: str) -> Webhook | None: ...

    async def list_all(self) -> list[Webhook]: ...

    async def update_webhook(self, hook_id: str, changes: dict[str, object]) -> Webhook | None: ...

    async def delete_webhook(self, hook_id: str) -> bool: ...

    async def claim_webhook_deliveries(self, webhook_id: str, limit: int, lease: float) -> list[DueDelivery]:
        """Lease up to ``limit`` of the endpoint's due deliveries, at most one per message; those without a
        payload come with their event."""
        ...

    async def record_webhook_attempts(self, outcomes: Sequence[AttemptOutcome], disable_after: float) -> dict[str, str]:
        """Record attempts in one transaction (a retried one keeps its payload); returns the endpoints they
        disabled, with the reason."""
        ...

    async def webhook_attempts(self, hook_id: str, limit: int, before: int | None = None) -> list[AttemptRecord]: ...

    async def webhook_backlog(self) -> dict[str, int]: ...

    async def message_deliveries(self, message_id: str, limit: int) -> list[MessageDelivery]:
        """The deliveries the message's events caused, oldest first (at most ``limit``)."""
        ...


class IdempotencyStore(Protocol):
    """Idempotency-Key claims and the outcomes replayed to retries."""

    async def claim_idempotency_key(
        self, api_key_id: str, key: str, request_hash: str, ttl: float
    ) -> IdempotencyRecord | None:
        """None: claimed for a request of this process (hold it with :meth:`idempotency_lease`); else the
        record that holds the key (done, or pending with an owner that has not stopped)."""
        ...

    def idempotency_lease(self, api_key_id: str, key: str) -> AbstractAsyncContextManager[None]:
        """Hold a claim while its request runs: the lease is renewed every RENEW_EVERY seconds, the claim
        is released if the request fails, and it is no longer this process's running request after."""
        ...

    async def renew_idempotency_key(self, api_key_id: str, key: str) -> bool:
        """Extend this process's lease on a pending claim; False if it is no longer this process's."""
        ...

    async def complete_idempotency_key(self, completion: Completion) -> None: ...

    async def release_idempotency_key(self, api_key_id: str, key: str) -> None: ...

    async def idempotency_record(self, api_key_id: str, key: str) -> IdempotencyRecord | None: ...

    async def forget_idempotency_record(self, api_key_id: str, key: str) -> tuple[IdempotencyRecord | None, bool]:
        """Delete a finished record: (the record or None, whether it was deleted)."""
        ...

    async def prune(self) -> int:
        """Drop expired idempotency records."""
        ...


class NodeStore(Protocol):
    """The nodes serving this store: registered at start, beating while they run, stopped when they stop."""

    async def register(self, node: NodeInfo) -> None:
        """Add or restart ``node``: started and beating now, not stopped."""
        ...

    async def beat(self, node_id: str) -> bool:
        """Record that the node is alive; False if it is unknown or has stopped."""
        ...

    async def stop(self, node_id: str) -> None: ...

    async def list_all(self) -> list[Node]:
        """Newest start first."""
        ...


class SiteStore(Protocol):
    """Per-destination-site limits shared by every node: connection slots and receivers' push-back."""

    async def acquire_slot(self, site: str, limit: int, owner: str) -> int | None:
        """One of ``site``'s ``limit`` connection slots for ``owner`` (leased for SLOT_LEASE seconds), or
        None while every slot is held."""
        ...

    async def release_slot(self, site: str, slot: int, owner: str) -> None: ...

    async def renew_slots(self, owner: str, slots: Sequence[tuple[str, int]]) -> int:
        """Extend the leases of ``owner``'s unexpired ``slots`` ((site, slot) pairs it still holds)."""
        ...

    async def release_all_slots(self, owner: str) -> int:
        """Give back every slot ``owner`` holds (it starts or stops)."""
        ...

    async def record_pushback(self, site: str, factor: float, until: float) -> None:
        """``site`` pushed back: every node should use at most ``factor`` of its limits until ``until``."""
        ...

    async def pushbacks(self) -> dict[str, tuple[float, float]]:
        """Push-backs in force: site → (factor, until)."""
        ...

    async def last_errors(self, domains: Sequence[str]) -> dict[str, LastError]:
        """The newest reply that deferred a waiting recipient of each of ``domains`` (lower-cased; a domain
        with no deferred recipient is absent)."""
        ...


class RateCounters(Protocol):
    """Fixed windows aligned to the clock, counted in the database: ``rate.limit`` per ``rate.period`` holds
    for every process and node using it (each hit is one atomic statement)."""

    async def hit(self, key: str, rate: Rate, now: float) -> Decision:
        """Count one for ``key`` at ``now`` unless its window is full; whether it may proceed."""
        ...

    async def give_back(self, key: str, rate: Rate, now: float) -> None:
        """Take back one counted in the window of ``now`` (a failure that turned out not to be one)."""
        ...

    async def count(self, key: str, now: float) -> int:
        """What ``key`` has counted in its current window."""
        ...

    async def prune(self, now: float) -> int:
        """Drop the counters whose window has ended; how many."""
        ...


class OperatorStore(Protocol):
    """Dashboard operators and their sessions (:mod:`relay.store.operators`)."""

    async def add_operator(self, operator: Operator, password_hash: str) -> bool:
        """Store a new operator and its password hash; False if the name is taken (nothing stored)."""
        ...

    async def operator(self, name: str) -> Operator | None: ...

    async def operator_for_login(self, name: str) -> tuple[Operator, str] | None:
        """The operator called ``name`` and its password hash."""
        ...

    async def list_operators(self) -> list[Operator]:
        """By name."""
        ...

    async def remove_operator(self, name: str) -> bool:
        """Remove the operator and end its sessions; False if there is none by that name."""
        ...

    async def set_operator_password(self, name: str, password_hash: str) -> bool:
        """Replace the password hash and end the operator's sessions; False if there is none by that name."""
        ...

    async def start_session(self, operator_id: str, token_hash: str, csrf_token: str, lifetime: float) -> None:
        """A session of ``operator_id`` for ``lifetime`` seconds from now; records the login."""
        ...

    async def session(self, token_hash: str) -> OperatorSession | None:
        """The session stored under ``token_hash`` if it has not expired; notes that it was seen (at most
        once a minute)."""
        ...

    async def end_session(self, token_hash: str) -> bool: ...

    async def prune_sessions(self) -> int:
        """Delete the sessions that have expired; how many."""
        ...


class BodyStore(Protocol):
    """The raw messages as stored (written by the queue, deleted by retention)."""

    async def raw_message(self, message_id: str) -> bytes | None:
        """The message as accepted, or None: no such message, or its body is gone (``[retention] bodies``)."""
        ...


class Storage(Protocol):
    """Every repository of one backend, over one database."""

    # Read-only (properties), so a backend's own repository classes satisfy them.
    @property
    def clock(self) -> Clock: ...

    @property
    def queue(self) -> QueueStore: ...

    @property
    def events(self) -> EventStore: ...

    @property
    def suppressions(self) -> SuppressionStore: ...

    @property
    def keys(self) -> KeyStore: ...

    @property
    def credentials(self) -> CredentialStore: ...

    @property
    def domains(self) -> DomainStore: ...

    @property
    def templates(self) -> TemplateStore: ...

    @property
    def secrets(self) -> SecretStore: ...

    @property
    def webhooks(self) -> WebhookStore: ...

    @property
    def idempotency(self) -> IdempotencyStore: ...

    @property
    def nodes(self) -> NodeStore: ...

    @property
    def sites(self) -> SiteStore: ...

    @property
    def rate_counters(self) -> RateCounters: ...

    @property
    def operators(self) -> OperatorStore: ...

    @property
    def bodies(self) -> BodyStore: ...

    async def close(self) -> None:
        """Finish pending writes, then release the database."""
        ...
