""":class:`SqlQueue`, the queue repository (:class:`relay.store.protocols.QueueStore`) over the shared database."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Sequence

from relay.clock import Clock
from relay.message import NewMessage
from relay.store import idempotency as idem
from relay.store.coalesce import Combiner
from relay.store.dialect import Connection, SqlDatabase
from relay.store.queue.control import (
    admin_bounce,
    cancel_message,
    purge,
    resend,
    resume_domain,
    retry_now,
    suspend_domain,
)
from relay.store.queue.lifecycle import (
    NEW_WORK,
    bring_forward,
    claim_due,
    enqueue,
    next_due_at,
    pending_count,
    postpone,
    postpone_each,
    record_attempts,
    release_leases,
    renew_leases,
)
from relay.store.queue.listings import (
    attempts_of,
    domain_queues,
    list_messages,
    message_record,
    message_status,
    sandbox_message,
    sandbox_messages,
    state_counts,
    summary,
)
from relay.store.queue.quotas import check_quota, give_back, key_usage, take
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
from relay.store.queue.returned import record_returned, returned_target, targets_by_header_id
from relay.store.queue.scheduling import cancel_scheduled, reschedule, scheduled_messages
from relay.store.queue.search import search
from relay.store.suppressions import NewBounce, Suppression
from relay.suppression import SuppressionPolicy

# Queueing up to this many messages at once is a light write (relay.store.db: run on the event loop's thread);
# a bigger batch (POST /v1/messages/batch) is written in the writer thread, leaving the loop free meanwhile.
LIGHT_MESSAGES = 10


class SqlQueue:
    """:class:`relay.store.protocols.QueueStore` over the shared database."""

    def __init__(
        self, db: SqlDatabase, clock: Clock, suppression_policy: SuppressionPolicy, redact_subjects: bool = False
    ) -> None:
        self.db = db
        self.clock = clock
        self.suppression_policy = suppression_policy
        self.redact_subjects = redact_subjects
        self._attempts: Combiner[AttemptResult] = Combiner(self._write_attempts)

    def watch(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` when any node queues work due now (PostgreSQL's LISTEN); SQLite: never."""
        self.db.listen(NEW_WORK, callback)

    async def enqueue_many(
        self, messages: Sequence[NewMessage], quota: Quota | None = None, completion: idem.Completion | None = None
    ) -> None:
        """Durably queue several messages in one transaction: all of them or, on an error, none."""
        now = self.clock.now()
        if self.redact_subjects:
            messages = [dataclasses.replace(m, subject="") for m in messages]

        def op(conn: Connection) -> None:
            for message in messages:
                enqueue(conn, message, now)
            if completion is not None:
                idem.complete(conn, completion)

        await self._counted(quota, len(messages), now, lambda: self.db.write(op, light=len(messages) <= LIGHT_MESSAGES))

    async def _counted(self, quota: Quota | None, count: int, now: float, queue: Callable[[], Awaitable[None]]) -> None:
        """Count the messages against the quota (if any) on its own (the key's rows are ones every writer
        updates: in a group transaction they would stay locked until its COMMIT), then queue them; taken
        back if queueing fails."""
        if quota is None:
            await queue()
            return
        await self.db.write_alone(lambda c: take(c, quota, now, count))
        try:
            await queue()
        except Exception:
            await self.db.write_alone(lambda c: give_back(c, quota, now, count))
            raise

    async def enqueue(
        self, message: NewMessage, quota: Quota | None = None, completion: idem.Completion | None = None
    ) -> None:
        """Durably queue a message; returns once it is committed to disk.

        ``quota``: count it against an API key's quota (raises QuotaExhausted).
        ``completion``: store the Idempotency-Key outcome in the same transaction.
        """
        now = self.clock.now()
        if self.redact_subjects and message.subject:
            message = dataclasses.replace(message, subject="")

        def op(conn: Connection) -> None:
            enqueue(conn, message, now)
            if completion is not None:
                idem.complete(conn, completion)

        await self._counted(quota, 1, now, lambda: self.db.write(op, light=True))

    async def claim_due(
        self, limit: int, owner: str, lease: float, max_bytes: int | None = None, first_fits: bool = True
    ) -> list[LeasedMessage]:
        now = self.clock.now()
        claim = lambda c: claim_due(c, now, limit, owner, now + lease, max_bytes, first_fits)  # noqa: E731
        # Not durable: a claim lost with the power leaves the recipients due, to be claimed again.
        return await self.db.write(claim, light=True, durable=False)

    async def record_attempts(self, results: list[AttemptResult]) -> None:
        if self.db.in_process:
            await self._write_attempts(results)
        else:  # a server: the outcomes of concurrent deliveries go in one statement (see relay.store.coalesce)
            await self._attempts.add(results)

    async def _write_attempts(self, results: list[AttemptResult]) -> None:
        now = self.clock.now()
        policy = self.suppression_policy
        # Not durable: an outcome lost with the power (not with a crash) means a second delivery, at least once.
        await self.db.write(lambda c: record_attempts(c, results, now, policy), light=True, durable=False)

    async def postpone(self, recipient_ids: list[int], until: float) -> None:
        now = self.clock.now()
        await self.db.write(lambda c: postpone(c, recipient_ids, until, now))

    async def postpone_each(self, returns: Sequence[tuple[int, float]]) -> None:
        """Put leased recipients back, each due at its own time: (recipient id, due) pairs. A few indexed
        statements, and they may be lost with the power (their leases then expire: they go out again)."""
        now = self.clock.now()
        await self.db.write(lambda c: postpone_each(c, returns, now), light=True, durable=False)

    async def bring_forward(self, recipient_ids: list[int]) -> int:
        now = self.clock.now()
        return await self.db.write(lambda c: bring_forward(c, recipient_ids, now), light=True, durable=False)

    async def attempts(self, message_id: str, address: str) -> list[Attempt]:
        return await self.db.read(lambda c: attempts_of(c, message_id, address))

    async def domain_queues(self) -> list[DomainQueue]:
        now = self.clock.now()
        return await self.db.read(lambda c: domain_queues(c, now))

    async def retry_now(self, selection: Selection) -> int:
        now = self.clock.now()
        return await self.db.write(lambda c: retry_now(c, now, selection))

    async def purge(self, selection: Selection) -> int:
        now = self.clock.now()
        return await self.db.write(lambda c: purge(c, now, selection))

    async def cancel_scheduled(self) -> tuple[int, int]:
        """Cancel every scheduled message not yet due: (messages, recipients)."""
        now = self.clock.now()
        return await self.db.write(lambda c: cancel_scheduled(c, now))

    async def resend(self, message_id: str) -> list[Resent] | None:
        """Queue a message's bounced and failed recipients again unless suppressed now (None: no such message)."""
        now = self.clock.now()
        return await self.db.write(lambda c: resend(c, message_id, now))

    async def suspend_domain(self, domain: str, duration: float, reason: str = "") -> float:
        until = self.clock.now() + duration
        await self.db.write(lambda c: suspend_domain(c, domain, until, reason))
        return until

    async def resume_domain(self, domain: str) -> bool:
        now = self.clock.now()
        return await self.db.write(lambda c: resume_domain(c, domain, now))

    async def admin_bounce(self, reason: str, selection: Selection) -> int:
        now = self.clock.now()
        return await self.db.write(lambda c: admin_bounce(c, now, reason, selection))

    async def release_leases(self, owner: str | None = None) -> int:
        """Release ``owner``'s leases, or (owner None) every expired lease."""
        now = self.clock.now()
        return await self.db.write(lambda c: release_leases(c, now, owner))

    async def renew_leases(self, owner: str, lease: float, recipient_ids: Sequence[int]) -> int:
        """Extend ``owner``'s unexpired leases of ``recipient_ids`` to ``lease`` seconds from now."""
        now = self.clock.now()
        return await self.db.write(lambda c: renew_leases(c, now, owner, now + lease, recipient_ids))

    async def next_due_at(self) -> float | None:
        return await self.db.read(next_due_at)

    async def summary(self) -> QueueSummary:
        return await self.db.read(summary)

    async def message_status(self, message_id: str) -> list[RecipientStatus]:
        return await self.db.read(lambda c: message_status(c, message_id))

    async def message(self, message_id: str) -> MessageRecord | None:
        return await self.db.read(lambda c: message_record(c, message_id))

    async def messages(self, filter: MessageFilter, limit: int) -> list[MessageRecord]:
        return await self.db.read(lambda c: list_messages(c, filter, limit))

    async def state_counts(self) -> dict[str, int]:
        return await self.db.read(state_counts)

    async def search(self, filter: MessageFilter, limit: int) -> MessagePage:
        return await self.db.read(lambda c: search(c, filter, limit))

    async def scheduled_messages(
        self, after: str | None, limit: int, api_key_id: str | None = None
    ) -> list[MessageRecord]:
        return await self.db.read(lambda c: scheduled_messages(c, after, limit, api_key_id))

    async def reschedule(self, message_id: str, send_at: float) -> int:
        now = self.clock.now()
        return await self.db.write(lambda c: reschedule(c, message_id, send_at, now))

    async def cancel_message(self, message_id: str) -> list[str]:
        now = self.clock.now()
        return await self.db.write(lambda c: cancel_message(c, message_id, now))

    async def pending_count(self) -> int:
        return await self.db.read(pending_count)

    async def check_quota(self, quota: Quota) -> None:
        """Raise QuotaExhausted if one more message would go over the quota; counts nothing (dry runs)."""
        now = self.clock.now()
        await self.db.read(lambda c: check_quota(c, quota, now))

    async def key_usage(self, api_key_id: str) -> tuple[int, int]:
        """Messages counted against the key's quotas this UTC day and month."""
        now = self.clock.now()
        return await self.db.read(lambda c: key_usage(c, api_key_id, now))

    async def sandbox_messages(
        self, before: str | None, limit: int, api_key_id: str | None = None
    ) -> list[MessageRecord]:
        return await self.db.read(lambda c: sandbox_messages(c, before, limit, api_key_id))

    async def sandbox_message(self, message_id: str) -> tuple[MessageRecord, bytes | None] | None:
        """A sandboxed message and its body (None once [retention] bodies has deleted it)."""
        return await self.db.read(lambda c: sandbox_message(c, message_id))

    async def returned_target(self, message_id: str, recipient_id: int) -> ReturnedTarget | None:
        """The recipient an authenticated return path names, if the message is still known."""
        return await self.db.read(lambda c: returned_target(c, message_id, recipient_id))

    async def targets_by_header_id(self, header_id: str) -> list[ReturnedTarget]:
        """The recipients of the message(s) with this Message-ID header."""
        return await self.db.read(lambda c: targets_by_header_id(c, header_id))

    async def record_returned(self, bounce: NewBounce, target: ReturnedTarget) -> tuple[int, Suppression | None]:
        """A returned report (DSN or complaint) about one recipient: bounce, suppression, event, state."""
        now, policy = self.clock.now(), self.suppression_policy
        return await self.db.write(lambda c: record_returned(c, bounce, target, now, policy))
