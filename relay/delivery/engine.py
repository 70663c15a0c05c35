"""The delivery engine: lease due recipients, deliver, record each outcome.

For every leased message, recipients are grouped by domain and each group is
one SMTP transaction: route (smarthost or MX) → attempt → classify → record.
The outcome and its event are written in one transaction before anything
else happens. A worker that dies leaves leases that expire and return the
recipients to the queue (at-least-once delivery).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
from collections import defaultdict

from relay.clock import Clock
from relay.delivery.client import SmtpClient
from relay.delivery.mx import RouteError, Router
from relay.delivery.outcome import Reply, Verdict, classify
from relay.delivery.retry import RetryPolicy, next_attempt_at, retry_hint
from relay.events import EventKind, State
from relay.store import Store
from relay.store.queue import AttemptResult, LeasedMessage, LeasedRecipient

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class EngineSettings:
    owner: str  # lease owner: this node
    concurrency: int  # transactions in flight
    lease: float  # seconds a claim is held
    poll_interval: float  # seconds between looks at the queue when idle
    retry: RetryPolicy


def decide(
    reply: Reply,
    recipient: LeasedRecipient,
    message: LeasedMessage,
    now: float,
    policy: RetryPolicy,
    rng: random.Random,
) -> AttemptResult:
    """What one reply means for one recipient: delivered, bounced, deferred or expired. Pure."""
    verdict = classify(reply)
    state, event, next_at, text = State.DELIVERED, EventKind.DELIVERED, None, reply.text
    if verdict is Verdict.BOUNCED:
        state, event = State.BOUNCED, EventKind.BOUNCED
    elif verdict is Verdict.DEFERRED:
        hint = retry_hint(reply.text)
        next_at = next_attempt_at(policy, recipient.attempts + 1, message.created_at, now, rng, hint)
        if next_at is not None:
            state, event = State.DEFERRED, EventKind.DEFERRED
        else:
            state, event = State.FAILED, EventKind.EXPIRED
            text = f"4.4.7 expired after {int((now - message.created_at) // 3600)}h in the queue; last reply: {reply}"
    return AttemptResult(recipient.id, message.id, recipient.address, state, event, next_at, reply.code, text)


def group_by_domain(message: LeasedMessage) -> list[list[LeasedRecipient]]:
    groups: dict[str, list[LeasedRecipient]] = defaultdict(list)
    for r in message.recipients:
        groups[r.domain].append(r)
    return list(groups.values())


class Engine:
    def __init__(
        self,
        store: Store,
        router: Router,
        client: SmtpClient,
        clock: Clock,
        settings: EngineSettings,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.router = router
        self.client = client
        self.clock = clock
        self.settings = settings
        self.rng = rng or random.Random()
        self._wake = asyncio.Event()
        self._stopping = False
        self._inflight: set[asyncio.Task[None]] = set()
        self.delivered = 0
        self.attempts = 0

    def wake(self) -> None:
        """New mail was queued: look at the queue now rather than at the next poll."""
        self._wake.set()

    async def run(self) -> None:
        """Deliver until :meth:`stop`. Releases this node's stale leases first (a restart after a crash)."""
        released = await self.store.release_leases(self.settings.owner)
        if released:
            log.info("returned %d recipients leased before a restart to the queue", released)
        sweep_every = min(60.0, self.settings.lease / 2)
        next_sweep = self.clock.now() + sweep_every
        while not self._stopping:
            self._wake.clear()
            await self._claim_and_start()
            if self.clock.now() >= next_sweep:
                next_sweep = self.clock.now() + sweep_every
                expired = await self.store.release_leases()
                if expired:
                    log.warning("returned %d recipients with expired leases to the queue", expired)
            try:
                await asyncio.wait_for(self._wake.wait(), self.settings.poll_interval)
            except TimeoutError:
                pass

    async def run_once(self) -> int:
        """Burst mode for tests and tools: deliver everything due now, wait for it, return the count."""
        started = await self._claim_and_start()
        if self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)
        return started

    async def stop(self, grace: float) -> None:
        """Stop claiming; give in-flight deliveries ``grace`` seconds; release what is left."""
        self._stopping = True
        self._wake.set()
        if self._inflight:
            _, pending = await asyncio.wait(set(self._inflight), timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
                log.warning("stopped %d deliveries still in flight after %.0fs", len(pending), grace)
        released = await self.store.release_leases(self.settings.owner)
        if released:
            log.info("returned %d leased recipients to the queue", released)

    async def _claim_and_start(self) -> int:
        free = self.settings.concurrency - len(self._inflight)
        if free <= 0 or self._stopping:
            return 0
        messages = await self.store.claim_due(free, self.settings.owner, self.settings.lease)
        count = 0
        for message in messages:
            for group in group_by_domain(message):
                task = asyncio.create_task(self._deliver(message, group))
                self._inflight.add(task)
                task.add_done_callback(self._finished)
                count += len(group)
        return count

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._wake.set()

    async def _deliver(self, message: LeasedMessage, recipients: list[LeasedRecipient]) -> None:
        domain = recipients[0].domain
        addresses = [r.address for r in recipients]
        try:
            hosts = await self.router.hosts_for(domain)
            replies = await self.client.deliver(hosts, message.sender, addresses, message.raw)
        except RouteError as exc:
            replies = {a: exc.reply for a in addresses}
        except asyncio.CancelledError:
            raise  # shutdown: the lease is released by stop()
        except Exception as exc:
            log.exception("delivery of %s to %s failed unexpectedly", message.id, domain)
            replies = {a: Reply(None, f"internal error: {type(exc).__name__}") for a in addresses}
        now = self.clock.now()
        results = [
            decide(replies.get(r.address, Reply(None, "no reply")), r, message, now, self.settings.retry, self.rng)
            for r in recipients
        ]
        await self.store.record_attempts(results)
        self.attempts += len(results)
        for result in results:
            if result.state is State.DELIVERED:
                self.delivered += 1
            log.info(
                "%s %s to=<%s> attempt=%d reply=%s",
                message.id,
                result.state.value,
                result.address,
                next(r.attempts for r in recipients if r.id == result.recipient_id) + 1,
                replies.get(result.address),
            )
