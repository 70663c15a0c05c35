"""The delivery engine: lease due recipients, route them, deliver over reused connections, record.

Flow: claim due recipients (bounded by ``window``) → group each message's
recipients by domain (one job) → route the job (smarthost or MX; the route
names a destination *site*) → queue it on that destination → the
destination's workers (at most its ``max_connections``, with several nodes this node's
share of them, and at most ``concurrency`` connections overall) take jobs one after another over the
same connection (RSET between), up to ``max_messages_per_connection`` or
``max_connection_age``, and close it after ``idle_timeout`` without work.

Each outcome and its event are written before anything else happens. A
destination that holds too many jobs, or is suspended after repeated
connection failures, gets new jobs put back in the queue for later without
counting an attempt, so one slow or dead site never holds the others back.
A worker that dies leaves leases that expire (at-least-once delivery); a live engine renews the leases
of what it holds every third of the lease, so a long wait for a connection never lets another node take them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import random
from collections import defaultdict, deque
from collections.abc import Mapping, Sequence
from typing import Any

from relay.bounces.classify import Classification, Kind
from relay.bounces.classify import classify as classify_bounce
from relay.bounces.verp import Verp, is_null_sender
from relay.clock import Clock
from relay.config import RouteConfig, Shaping
from relay.delivery.booking import Bookings
from relay.delivery.client import Connection, Envelope, Following, SmtpClient, StaleConnection
from relay.delivery.mx import Route, RouteError, Router
from relay.delivery.outcome import Reply, Verdict, classify
from relay.delivery.retry import RetryPolicy, next_attempt_at, retry_hint
from relay.delivery.shaping import is_pushback, shaping_for
from relay.dkim import Signer, sign_each
from relay.errors import StoreError
from relay.events import EventKind, State
from relay.metrics import DELIVERY_SECONDS
from relay.nodes import UP
from relay.ratelimit import TokenBucket
from relay.store.protocols import Storage
from relay.store.queue import AttemptResult, LeasedMessage, LeasedRecipient
from relay.store.suppressions import NewBounce

log = logging.getLogger(__name__)

UNSIGNED = Reply(None, "the message could not be DKIM-signed (relay's log says why): it goes when it can be")


@dataclasses.dataclass(frozen=True)
class EngineSettings:
    owner: str  # lease owner: this node
    concurrency: int  # outbound connections open at once, all destinations together
    lease: float  # seconds a claim is held
    poll_interval: float  # seconds between looks at the queue when idle
    retry: RetryPolicy
    window: int = 1000  # recipients claimed and not yet recorded, at most
    max_bytes: int | None = None  # bodies of the messages claimed and not yet recorded, at most (one always fits)
    idle_timeout: float = 5.0  # close a connection with no work after this long
    max_rcpt: int = 100  # recipients per SMTP transaction
    tls: str = "opportunistic"
    tls_policy: Mapping[str, str] = dataclasses.field(default_factory=dict)  # domain → TLS mode
    shaping: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)  # overrides
    verp: Verp | None = None  # each recipient gets its own authenticated return path (one transaction each)

    def tls_for(self, domain: str) -> str:
        return self.tls_policy.get(domain.lower(), self.tls)


SUSPEND_AFTER = 3  # consecutive connection failures before a destination is suspended
SUSPEND_FOR = 30.0  # seconds, doubling with further failures, at most SUSPEND_MAX
SUSPEND_MAX = 600.0
BOOK_AHEAD = 900.0  # a job a full destination cannot take comes back after this long at most (booked again then)
THROTTLE_UNTIMED = 0.5  # ...after this while the destination has no pace yet (nothing sent to time)
UNTIMED_PACE = 1.0  # ...and each one after that a second a connection later (slow on purpose: brought forward)
THROTTLE_MIN = 0.01  # ...and after this at least
BOOKED_KEPT = 1_000_000  # recipients put back a destination remembers to bring forward (16 bytes each)
BOOKED_SLACK = 0.05  # seconds: a booking due within this is left to come back by itself
RETURN_MARGIN = 0.002  # seconds after a put-back job's time that the claim for it is made (it is due by then)
FORGET_AFTER = 600.0  # seconds a destination with nothing going on is kept (forget_idle), with its pace
PACE_WEIGHT = 0.2  # the weight of the latest message in a destination's time a message (a moving average)
COOLDOWN = 300.0  # seconds at reduced limits after a receiver pushes back
MIN_FACTOR = 1 / 16
SHARED_EVERY = 1.0  # seconds between looks at what other nodes share (slots renewed, push-backs, node count)
SLOT_RETRY = 1.0  # seconds before a site whose cluster-wide connection slots are all taken is tried again
SANDBOX_REPLY = "2.0.0 captured in the sandbox, not delivered"


def decide(
    reply: Reply,
    recipient: LeasedRecipient,
    message: LeasedMessage,
    now: float,
    policy: RetryPolicy,
    rng: random.Random,
    mx_host: str | None = None,
    ip: str | None = None,
    tls: str | None = None,
) -> AttemptResult:
    """What one reply means for one recipient: delivered, bounced, deferred or expired; ``mx_host``, ``ip``
    and ``tls`` say where it was tried (kept with the attempt). Pure."""
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
            state, event = State.FAILED, EventKind.FAILED
            text = f"4.4.7 expired after {int((now - message.created_at) // 3600)}h in the queue; last reply: {reply}"
    classification = None if state is State.DELIVERED else classify_bounce(reply.code, None, text, mx_host, reply.phase)
    bounce = _bounce(reply, state, classification, recipient, message, text, mx_host)
    return AttemptResult(
        recipient.id,
        message.id,
        recipient.address,
        state,
        event,
        next_at,
        reply.code,
        text,
        bounce=bounce,
        classification=classification,
        attempt=recipient.attempts + 1,
        mx_host=mx_host,
        ip=ip,
        tls=tls,
    )


def _bounce(
    reply: Reply,
    state: State,
    classification: Classification | None,
    recipient: LeasedRecipient,
    message: LeasedMessage,
    text: str,
    mx_host: str | None,
) -> NewBounce | None:
    """A refusal worth a bounce record: every final failure, and a deferral that says the address is dead."""
    if classification is None:
        return None
    if state is State.DEFERRED and classification.kind is not Kind.HARD:
        return None
    return NewBounce(
        recipient.address, classification, "smtp", reply.code, text, mx_host, message.id, phase=reply.phase.value
    )


@dataclasses.dataclass
class Job:
    """Recipients of one message at one domain: one SMTP transaction."""

    message: LeasedMessage
    recipients: list[LeasedRecipient]
    route: Route
    tls: str


class Destination:
    """One destination site: its limits, its waiting jobs, its workers."""

    def __init__(self, site: str, shaping: Shaping, now: float, domain: str = "", mx_names: Sequence[str] = ()) -> None:
        self.site = site
        self.domain = domain  # the recipient domain and MX names that chose the shaping (for a reload)
        self.mx_names = tuple(mx_names)
        self.shaping = shaping

        self.bucket = TokenBucket(shaping.max_rate, now) if shaping.max_rate else None
        self.factor = 1.0  # share of the limits in force: halved when the receiver pushes back
        self.share = 1.0  # this node's share of max_rate and max_connections: 1/N with N nodes delivering
        self.cooldown_until = 0.0
        self.retry_slot_at = 0.0  # every cluster-wide connection slot was taken: look again then
        self.jobs: deque[Job] = deque()
        self.workers = 0
        self.idle: list[asyncio.Event] = []  # the waits of workers with nothing to do, the latest last
        self.failures = 0  # consecutive connection failures
        self.suspended_until = 0.0
        self.connections_opened = 0
        self.messages_sent = 0
        self.send_seconds: float | None = None  # a message's time on a connection (moving average)
        self.last_job_at = now  # (monotonic) when it was last given a job
        self.booked_until = 0.0  # (monotonic) when the jobs put back so far are expected to fit
        self.booked = Bookings()  # the recipients put back, in turn, with their (monotonic) return times
        self.bringing = False  # some of them are being brought forward (Engine._bring_forward)

    def job_arrived(self) -> None:
        """Wake one idle worker for a new job, not all of them (each would wake to find it taken): the one
        that went idle last, whose connection is the likeliest to be still open."""
        if self.idle:
            self.idle.pop().set()

    @property
    def capacity(self) -> int:
        """Jobs this destination may hold waiting: enough to keep its connections busy."""
        return self.shaping.max_connections * 20

    @property
    def max_connections(self) -> int:
        """Connections to the site from every node together (the shared slots, with several nodes)."""
        return max(1, int(self.shaping.max_connections * self.factor))

    @property
    def node_connections(self) -> int:
        """Connections this node opens: its share of :attr:`max_connections` (rounded up), so that a node
        cannot hold every slot while another waits with the work it claimed."""
        return max(1, math.ceil(self.max_connections * self.share))

    def sent(self, seconds: float) -> None:
        """A message went out, after ``seconds`` on its connection: counted, and timed for the pace."""
        self.messages_sent += 1
        if self.send_seconds is None:
            self.send_seconds = seconds
        else:
            self.send_seconds += PACE_WEIGHT * (seconds - self.send_seconds)

    def book_return(self, now: float, recipient_ids: Sequence[int] = ()) -> float:
        """Seconds until a job this full destination cannot take now is to come back, booked in turn: after
        the jobs it holds and those put back before this one, at its pace (a message's time on a
        connection, over its connections at work, or its max_rate), so that a backlog returns as the site can
        take it rather than all at once, and each job of it is put back once, not every few seconds. While
        nothing has been timed: after THROTTLE_UNTIMED, UNTIMED_PACE apart. At most BOOK_AHEAD (a backlog
        longer than that is booked again when it comes back). ``now`` is monotonic; ``recipient_ids`` are
        remembered (up to BOOKED_KEPT) so that :meth:`take_booked` can bring them forward."""
        workers = max(1, self.workers)
        if self.send_seconds is None:
            each = UNTIMED_PACE / workers
            start = max(now + THROTTLE_UNTIMED, self.booked_until)
        else:
            each = self.send_seconds / workers
            if self.bucket is not None:  # max_rate paces it too
                each = max(each, 1 / (self.bucket.per_second * self.bucket.factor))
            start = max(now + len(self.jobs) * each, self.booked_until)
        self.booked_until = start + each
        delay = min(BOOK_AHEAD, max(THROTTLE_MIN, start - now))
        if recipient_ids and len(self.booked) < BOOKED_KEPT:
            self.booked.add(now + delay, recipient_ids)
        return delay

    def take_booked(self, now: float) -> list[int]:
        """The recipients put back that are to be brought forward now that the site has run out of jobs
        before they were booked to return: its pace was slower than it turned out. Those due within
        BOOKED_SLACK come back by themselves; of the rest, as many as the site holds (:attr:`capacity`),
        the earliest first. None while some are being brought forward already, or while it fails to
        connect or cools down after a push-back (it asked for less). ``now`` is monotonic."""
        booked = self.booked
        booked.drop_until(now + BOOKED_SLACK)
        if not booked or self.jobs or self.bringing or self.factor < 1.0 or self.failures:
            return []
        ids = booked.take(self.capacity)
        if not booked:
            self.booked_until = now
        return ids

    def push_back(self, now: float) -> None:
        """The receiver said "slow down": halve connections and rate for a cool-down."""
        self.factor = max(MIN_FACTOR, self.factor / 2)
        self.cooldown_until = now + COOLDOWN
        self._pace()
        log.warning(
            "%s pushed back: now %d connections%s for %.0fs",
            self.site,
            self.max_connections,
            f", {self.factor:.0%} of max_rate" if self.bucket else "",
            COOLDOWN,
        )

    def reshape(self, shaping: Shaping, now: float) -> None:
        """New limits from a reload; the push-back state stays as it is."""
        if shaping.max_rate != self.shaping.max_rate:
            self.bucket = TokenBucket(shaping.max_rate, now) if shaping.max_rate else None
            self._pace()
        self.shaping = shaping

    def pushed_back_elsewhere(self, factor: float, until: float) -> None:
        """Another node saw this site push back: take its lower share until its cool-down ends."""
        if factor < self.factor:
            self.factor = factor
            self.cooldown_until = max(self.cooldown_until, until)
            self._pace()

    def set_share(self, share: float) -> None:
        """This node's share of the site's max_rate and connections (1/N of N delivering nodes)."""
        self.share = share
        self._pace()

    def _pace(self) -> None:
        if self.bucket is not None:
            self.bucket.factor = self.factor * self.share

    def forgettable(self, now: float, monotonic: float) -> bool:
        """Nothing going on for FORGET_AFTER and nothing to remember: no job, no connection, no failure,
        suspension, push-back or wait for a cluster slot."""
        return (
            not self.jobs
            and self.workers == 0
            and self.failures == 0
            and self.factor >= 1.0
            and max(self.suspended_until, self.cooldown_until, self.retry_slot_at) <= now
            and monotonic - self.last_job_at >= FORGET_AFTER
        )

    def recover(self, now: float) -> None:
        """After a quiet cool-down, grow back towards the configured limits, step by step."""
        if self.factor < 1.0 and now >= self.cooldown_until:
            self.factor = min(1.0, self.factor * 2)
            self.cooldown_until = now + COOLDOWN / 2
            self._pace()


def group_by_domain(message: LeasedMessage, one_each: bool = False) -> list[list[LeasedRecipient]]:
    """The transactions a message needs: one per domain, or (VERP) one per recipient."""
    if one_each:
        return [[r] for r in message.recipients]
    groups: dict[str, list[LeasedRecipient]] = defaultdict(list)
    for r in message.recipients:
        groups[r.domain].append(r)
    return list(groups.values())


class Engine:
    def __init__(
        self,
        store: Storage,
        router: Router,
        client: SmtpClient,
        clock: Clock,
        settings: EngineSettings,
        rng: random.Random | None = None,
        cluster: bool = False,
        signer: Signer | None = None,
    ) -> None:
        self.store = store
        self.signer = signer  # DKIM: each message claimed is signed for its From: domain (relay.dkim)
        # Several nodes on one store: connection slots and push-back are shared through the store, and
        # each node paces a site at its share of max_rate (see relay.store.sites).
        self.cluster = cluster
        self.rate_share = 1.0
        self._slots: set[tuple[str, int]] = set()  # the cluster-wide connection slots this node holds
        self._unreturned: set[tuple[str, int]] = set()  # slots closed while the database was away
        self.router = router
        self.client = client
        self.clock = clock
        self.settings = settings
        self.rng = rng or random.Random()
        self.destinations: dict[str, Destination] = {}
        self.connections = 0  # open or opening, all destinations
        # Under the overall limit (concurrency), a site with work and no connection waits in _starving
        # for the next free place, and an idle connection (in _idle, the longest idle first) makes way.
        self._idle: dict[asyncio.Event, Destination] = {}
        self._told_to_close: set[asyncio.Event] = set()
        self._starving: dict[Destination, None] = {}
        self._wanting: dict[Destination, None] = {}  # sites with work that the limit kept from more connections
        self.held = 0  # recipients claimed and not yet recorded
        self.held_bytes = 0  # the bodies of their messages
        self._held_messages: dict[int, list[int]] = {}  # id(leased message) → [recipients held, body bytes]
        self._held_recipients: dict[int, list[int]] = {}  # id(leased message) → its recipients' ids
        self._wake = asyncio.Event()
        self._wake_for_return_at = math.inf  # (monotonic) a claim is due then for jobs put back (_wake_at)
        # The last claim found nothing due: a recipient let go of (delivered, deferred, put back) makes nothing
        # due now, so it does not look again; new mail, a put-back's return and the poll do.
        self._nothing_due = False
        self._drained = asyncio.Event()
        self._drained.set()
        self._stopping = False
        self._tasks: set[asyncio.Task[None]] = set()
        self.delivered = 0
        self.attempts = 0
        self.captured = 0  # sandboxed recipients recorded delivered without a connection
        self.sent_ahead = 0  # jobs whose envelope went out with the body before them (Engine._following)

    def wake(self) -> None:
        """New mail was queued: look at the queue now rather than at the next poll."""
        self._wake.set()

    async def run(self) -> None:
        """Deliver until :meth:`stop`. Releases this node's stale leases first (a restart after a crash)."""
        released = await self.store.queue.release_leases(self.settings.owner)
        if released:
            log.info("returned %d recipients leased before a restart to the queue", released)
        if self.cluster:
            await self.store.sites.release_all_slots(self.settings.owner)
        next_shared = self.clock.now()
        sweep_every = min(60.0, self.settings.lease / 2)
        renew_every = self.settings.lease / 3
        next_sweep = self.clock.now() + sweep_every
        next_renewal = self.clock.now() + renew_every
        while not self._stopping:
            self._wake.clear()
            try:
                await self._claim_and_dispatch()
                now = self.clock.now()
                if now >= next_renewal:  # still alive and working on them: nobody else may take them
                    next_renewal = now + renew_every
                    held = [rid for ids in self._held_recipients.values() for rid in ids]
                    if held:
                        await self.store.queue.renew_leases(self.settings.owner, self.settings.lease, held)
                if now >= next_sweep:
                    next_sweep = now + sweep_every
                    self.forget_idle()
                    expired = await self.store.queue.release_leases()
                    if expired:
                        log.warning("returned %d recipients with expired leases to the queue", expired)
                if self.cluster and now >= next_shared:
                    next_shared = now + SHARED_EVERY
                    await self._share_limits()
            except StoreError as exc:  # the database is down or restarting: look again at the next poll
                log.warning("the queue database is unavailable: %s", exc)
            except Exception:  # a bug must cost one look at the queue, never the engine
                log.exception("the delivery engine's loop failed; looking again at the next poll")
            await self.clock.wait(self._wake, self.settings.poll_interval)

    async def _share_limits(self) -> None:
        """What the other nodes know of the sites: renew this node's connection slots, take the push-backs
        they saw, and pace each site at this node's share of its max_rate."""
        for site, slot in list(self._unreturned):
            await self.store.sites.release_slot(site, slot, self.settings.owner)
            self._unreturned.discard((site, slot))
        await self.store.sites.renew_slots(self.settings.owner, list(self._slots))
        for site, (factor, until) in (await self.store.sites.pushbacks()).items():
            dest = self.destinations.get(site)
            if dest is not None:
                dest.pushed_back_elsewhere(factor, until)
        now = self.clock.now()
        delivering = sum(1 for n in await self.store.nodes.list_all() if n.status(now) == UP)
        share = 1.0 / max(1, delivering)
        if share != self.rate_share:
            self.rate_share = share
            for dest in self.destinations.values():
                dest.set_share(share)

    async def run_once(self) -> int:
        """Burst mode for tests and tools: deliver everything due now, wait until it is recorded."""
        claimed = await self._claim_and_dispatch()
        await self._drained.wait()
        return claimed

    async def stop(self, grace: float) -> None:
        """Stop claiming; give work in hand ``grace`` seconds; close connections; release what is left."""
        self._stopping = True
        self._wake.set()
        try:  # real time, not the clock's: the grace bounds how long a stopping process takes
            await asyncio.wait_for(self._drained.wait(), grace)
        except TimeoutError:
            log.warning("stopping with %d recipients still in flight after %.0fs", self.held, grace)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        released = await self.store.queue.release_leases(self.settings.owner)
        if released:
            log.info("returned %d leased recipients to the queue", released)
        if self.cluster:
            await self.store.sites.release_all_slots(self.settings.owner)

    # -- claiming and routing ------------------------------------------------------

    async def _claim_and_dispatch(self) -> int:
        free = self.settings.window - self.held
        max_bytes = self.settings.max_bytes
        room = None if max_bytes is None else max_bytes - self.held_bytes
        if free <= 0 or self._stopping or (room is not None and room <= 0):
            return 0
        # Bodies in hand stay within max_bytes; when none is, the next message is taken however large.
        messages = await self.store.queue.claim_due(
            free, self.settings.owner, self.settings.lease, room, first_fits=self.held_bytes == 0
        )
        self._nothing_due = not messages and (room is None or self.held_bytes == 0)  # (not short of room)
        messages, unsigned = await self._signed(messages)
        count = 0
        put_back: list[tuple[LeasedMessage, list[LeasedRecipient], Destination]] = []
        for message in unsigned:  # signing failed (logged): not sent unsigned, tried again later
            self._hold(message, len(message.recipients))
            count += len(message.recipients)
            self._spawn(
                self._record(
                    message, list(message.recipients), dict.fromkeys((r.address for r in message.recipients), UNSIGNED)
                )
            )
        for message in messages:
            if message.sandbox:
                self._hold(message, len(message.recipients))
                self._spawn(self._capture(message))
                count += len(message.recipients)
                continue
            for group in group_by_domain(message, one_each=self._uses_verp(message)):
                self._hold(message, len(group))
                count += len(group)
                route = self.router.route_now(group[0].domain)
                dest = None if route is None else self._known_destination(route, group[0].domain)
                if route is None or dest is None:  # DNS first, or something went wrong (_dispatch records it)
                    self._spawn(self._dispatch(message, group, route))
                elif not self._queue_job(dest, message, group, route):  # full or suspended: it must wait
                    put_back.append((message, group, dest))
        if put_back:
            self._spawn(self._put_back(put_back))
        return count

    async def _signed(self, messages: list[LeasedMessage]) -> tuple[list[LeasedMessage], list[LeasedMessage]]:
        """``messages`` as they are to be sent: with a DKIM signature for their From: domain, if it has a key;
        and apart, those whose signing failed. Signed once a claim, for every recipient and site of it; one
        signed when it was accepted (sandboxed, or [dkim] sign_at = "acceptance") is left as it is."""
        to_sign = [m for m in messages if not m.sandbox]
        if self.signer is None or not self.signer.keys or not to_sign:
            return messages, []
        signed = iter(await sign_each(self.signer, [m.raw for m in to_sign]))
        ready, failed = [], []
        for m in messages:
            raw = m.raw if m.sandbox else next(signed)
            if raw is None:
                failed.append(m)
            else:
                ready.append(m if raw is m.raw else dataclasses.replace(m, raw=raw))
        return ready, failed

    def forget_idle(self) -> int:
        """Drop the destinations with nothing going on for FORGET_AFTER (Destination.forgettable): a relay
        that has sent to a hundred thousand sites keeps only those of the last minutes, in memory and in
        the loops over them when a connection frees a place. Returns how many were dropped."""
        now, monotonic = self.clock.now(), self.clock.monotonic()
        idle = [site for site, dest in self.destinations.items() if dest.forgettable(now, monotonic)]
        for site in idle:
            del self.destinations[site]
        return len(idle)

    def _uses_verp(self, message: LeasedMessage) -> bool:
        return self.settings.verp is not None and not is_null_sender(message.sender)  # the null sender stays null

    def _envelope_sender(self, job: Job) -> str:
        sender = job.message.sender
        if is_null_sender(sender):
            return ""  # MAIL FROM:<> (RFC 5321 §4.5.5), however it was stored
        verp = self.settings.verp
        if verp is None or len(job.recipients) != 1:
            return sender
        return verp.return_path(sender, job.message.id, job.recipients[0].id)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        """A background step that failed (recording an outcome on a full disk): its recipients keep their
        lease and go out again when it expires (at least once); the failure is logged."""
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "delivery step failed: %r (its recipients are retried when their lease expires)", task.exception()
            )

    def _hold(self, message: LeasedMessage, n: int) -> None:
        self.held += n
        entry = self._held_messages.setdefault(id(message), [0, len(message.raw)])
        if entry[0] == 0:
            self.held_bytes += entry[1]
            self._held_recipients[id(message)] = [r.id for r in message.recipients]
        entry[0] += n
        self._drained.clear()

    def _release(self, message: LeasedMessage, n: int) -> None:
        self.held -= n
        entry = self._held_messages.get(id(message))
        if entry is not None:
            entry[0] -= n
            if entry[0] <= 0:
                del self._held_messages[id(message)]
                self._held_recipients.pop(id(message), None)
                self.held_bytes -= entry[1]
        if self.held <= 0:
            self.held = 0
            self._drained.set()
        if not self._nothing_due:  # room for more of what the last claim left due
            self._wake.set()

    def _known_destination(self, route: Route, domain: str) -> Destination | None:
        """The destination of a route known without DNS (made if new), placed with no task of its own;
        None if anything went wrong (``_dispatch`` then records it)."""
        try:
            return self._destination(route, domain)
        except Exception:
            return None

    def _queue_job(
        self, dest: Destination, message: LeasedMessage, recipients: list[LeasedRecipient], route: Route
    ) -> bool:
        """Hand the job to ``dest``'s workers; False if ``dest`` cannot take it now (suspended, or full)."""
        if dest.suspended_until > self.clock.now() or len(dest.jobs) >= dest.capacity:
            return False
        dest.jobs.append(Job(message, recipients, route, route.tls or self.settings.tls_for(recipients[0].domain)))
        dest.last_job_at = self.clock.monotonic()
        dest.job_arrived()
        self._start_workers(dest)
        return True

    async def _dispatch(self, message: LeasedMessage, recipients: list[LeasedRecipient], known: Route | None) -> None:
        domain = recipients[0].domain
        try:
            route = known or await self.router.route(domain)
            dest = self._destination(route, domain)
        except RouteError as exc:
            await self._record(message, recipients, {r.address: exc.reply for r in recipients})
            return
        except Exception as exc:
            log.exception("routing %s failed unexpectedly", domain)
            failure = Reply(None, f"internal error: {type(exc).__name__}")
            await self._record(message, recipients, {r.address: failure for r in recipients})
            return

        if not self._queue_job(dest, message, recipients, route):
            await self._put_back([(message, recipients, dest)])

    async def _put_back(self, jobs: list[tuple[LeasedMessage, list[LeasedRecipient], Destination]]) -> None:
        """Jobs their sites cannot take now (full, or suspended) back in the queue, in one write, without an
        attempt: each booked at its site's pace (Destination.book_return), or until the suspension ends."""
        now, monotonic = self.clock.now(), self.clock.monotonic()
        returns: list[tuple[int, float]] = []
        soonest: float | None = None
        for _, recipients, dest in jobs:
            ids = [r.id for r in recipients]
            if dest.suspended_until > now:  # not booked at the site's pace, nor moving its booking
                delay = dest.suspended_until - now
            else:
                delay = dest.book_return(monotonic, ids)
                soonest = delay if soonest is None else min(soonest, delay)
            returns.extend((rid, now + delay) for rid in ids)
        try:  # if the database is away, the leases expire and they go out then
            await self.store.queue.postpone_each(returns)
        finally:
            for message, recipients, _ in jobs:
                self._release(message, len(recipients))
        if soonest is not None:
            self._wake_at(soonest)

    def _bring_forward(self, dest: Destination) -> None:
        """``dest`` is running out of jobs before the ones put back were booked to return (its pace was slower
        than it is): make the next of them due now, and claim."""
        ids = dest.take_booked(self.clock.monotonic())
        if ids:
            dest.bringing = True
            self._spawn(self._brought_forward(dest, ids))

    async def _brought_forward(self, dest: Destination, ids: list[int]) -> None:
        try:
            await self.store.queue.bring_forward(ids)
        finally:
            dest.bringing = False
        self.wake()

    def _wake_at(self, delay: float) -> None:
        """Claim again in ``delay`` seconds, when jobs put back come due, if that is before the next poll
        (a burst goes out at its site's pace, not a poll interval at a time)."""
        at = self.clock.monotonic() + delay
        if delay >= self.settings.poll_interval or at >= self._wake_for_return_at:
            return
        self._wake_for_return_at = at
        self._spawn(self._wake_after(delay + RETURN_MARGIN, at))

    async def _wake_after(self, delay: float, at: float) -> None:
        await self.clock.sleep(delay)
        if self._wake_for_return_at == at:
            self._wake_for_return_at = math.inf
        self._wake.set()

    def _destination(self, route: Route, domain: str) -> Destination:
        dest = self.destinations.get(route.site)
        if dest is None:
            shaping = shaping_for(domain, route.mx_names, self.settings.shaping)
            dest = Destination(route.site, shaping, self.clock.monotonic(), domain, route.mx_names)
            dest.set_share(self.rate_share)
            self.destinations[route.site] = dest
        return dest

    def reconfigure(self, settings: EngineSettings, routes: Mapping[str, RouteConfig] | None = None) -> None:
        """Apply reloaded settings (SIGHUP): limits of known destinations change now, work in hand goes on."""
        self.settings = settings
        if routes is not None:
            self.router.set_routes(routes)
        now = self.clock.monotonic()
        for dest in self.destinations.values():
            dest.reshape(shaping_for(dest.domain, dest.mx_names, settings.shaping), now)
            self._start_workers(dest)  # more connections may now be allowed

    async def _capture(self, message: LeasedMessage) -> None:
        """A sandboxed message: its recipients are recorded delivered, marked sandbox, without routing or
        connecting anywhere. The message and its body stay in the store to be read (relay sandbox list)."""
        results = [
            AttemptResult(
                r.id,
                message.id,
                r.address,
                State.DELIVERED,
                EventKind.DELIVERED,
                None,
                250,
                SANDBOX_REPLY,
                sandbox=True,
                attempt=r.attempts + 1,
            )
            for r in message.recipients
        ]
        try:
            await self.store.queue.record_attempts(results)
        finally:
            self._release(message, len(results))
        self.attempts += len(results)
        self.captured += len(results)
        for r in results:
            log.info(
                "%s delivered to=<%s> (sandbox: captured, not sent)",
                message.id,
                r.address,
                extra={"message_id": message.id, "recipient": r.address, "state": "delivered"},
            )

    # -- workers: one connection each, many messages per connection -------------------

    def _start_workers(self, dest: Destination) -> None:
        dest.recover(self.clock.now())
        if self.cluster and self.clock.now() < dest.retry_slot_at:
            self._starving.pop(dest, None)  # it waits for the cluster's slot, not for a place here
            return  # every slot of the cluster is taken: _retry_slots starts them later
        while (
            dest.jobs
            and dest.workers < dest.node_connections
            and self.connections < self.settings.concurrency
            and not self._stopping
        ):
            dest.workers += 1
            self.connections += 1
            self._spawn(self._worker(dest))
        limited = self.connections >= self.settings.concurrency and not self._stopping
        if limited and dest.jobs and dest.workers < dest.node_connections:
            self._wanting[dest] = None  # given more when a place frees (_worker_done)
        else:
            self._wanting.pop(dest, None)
        if dest.workers > 0 or not dest.jobs or self._stopping:
            self._starving.pop(dest, None)
        elif limited and dest not in self._starving:
            self._starving[dest] = None  # the first free place is this site's
            self._make_way()

    def _make_way(self) -> None:
        """Close the connection idle the longest, if any (its site has no work): a site waits for its place."""
        for signal, dest in self._idle.items():
            if not dest.jobs:
                del self._idle[signal]
                if signal in dest.idle:
                    dest.idle.remove(signal)
                self._told_to_close.add(signal)
                signal.set()
                return

    def _worker_done(self, dest: Destination, retry: bool = True) -> None:
        dest.workers -= 1
        self.connections -= 1
        if not retry:
            return
        # A place is free: the sites that have no connection and wait for one first, in turn, then those
        # the limit kept from more, then this one (not every destination: there may be many thousands).
        for waiting in list(self._starving):
            self._start_workers(waiting)
        for wanting in list(self._wanting):
            if self.connections >= self.settings.concurrency:
                break
            self._start_workers(wanting)
        if dest.jobs:
            self._start_workers(dest)

    async def _take_slot(self, dest: Destination) -> int | None:
        """One of the site's connection slots for the whole cluster; None (and a later retry) if all are held."""
        try:
            slot = await self.store.sites.acquire_slot(dest.site, dest.max_connections, self.settings.owner)
            if slot is not None:
                self._slots.add((dest.site, slot))
        except StoreError as exc:
            log.warning("cannot take a connection slot for %s: %s", dest.site, exc)
            slot = None
        if slot is None and dest.retry_slot_at <= self.clock.now():
            dest.retry_slot_at = self.clock.now() + SLOT_RETRY
            self._spawn(self._retry_slots(dest))
        return slot

    async def _retry_slots(self, dest: Destination) -> None:
        await self.clock.sleep(SLOT_RETRY)
        dest.retry_slot_at = 0.0
        self._start_workers(dest)

    async def _give_back_slot(self, dest: Destination, slot: int) -> None:
        self._slots.discard((dest.site, slot))  # no longer renewed: if the write fails, it expires
        try:
            await self.store.sites.release_slot(dest.site, slot, self.settings.owner)
        except StoreError as exc:  # given back at the next look at shared limits, or its lease runs out
            self._unreturned.add((dest.site, slot))
            log.warning("cannot give back a connection slot for %s: %s", dest.site, exc)

    async def _worker(self, dest: Destination) -> None:
        conn: Connection | None = None
        slot: int | None = None
        signal = asyncio.Event()  # set when a new job is for this worker
        ahead: list[Job] = []  # the job whose envelope went out with the last body on conn (at most one)
        if self.cluster:
            slot = await self._take_slot(dest)
            if slot is None:
                self._worker_done(dest, retry=False)
                return
        try:
            while True:
                if ahead:  # already on its way: it goes before anything else is decided
                    job = ahead.pop()
                    sent_ahead = conn is not None
                else:
                    if not dest.jobs:
                        if dest.booked:
                            self._bring_forward(dest)
                        if conn is None or not await self._wait_for_work(dest, signal):
                            return
                        continue
                    if dest.workers > dest.node_connections:
                        return  # the site pushed back, or another node started: fewer connections for now
                    if self._starving and dest.workers > 1:
                        return  # a site with none waits for a place under the overall limit: this one is it
                    job = dest.jobs.popleft()
                    sent_ahead = False
                try:
                    conn = await self._work(dest, job, conn, ahead, sent_ahead)
                except Exception as exc:  # a bug must cost one attempt, never a stuck job
                    log.exception("delivery of %s to %s failed unexpectedly", job.message.id, dest.site)
                    if conn is not None:
                        conn.broken = True
                        await conn.close()
                        conn = None
                    failure = Reply(None, f"internal error: {type(exc).__name__}")
                    await self._record(job.message, job.recipients, {r.address: failure for r in job.recipients})
        finally:
            if ahead:  # sent ahead on a connection that is closing now: waiting again, with the others
                dest.jobs.appendleft(ahead.pop())
            if conn is not None:
                await conn.close()
            if slot is not None:
                await self._give_back_slot(dest, slot)
            self._worker_done(dest)

    async def _work(
        self, dest: Destination, job: Job, conn: Connection | None, ahead: list[Job], sent_ahead: bool = False
    ) -> Connection | None:
        """Deliver one job, over ``conn`` or a new connection; returns the connection to keep using. The
        next job may be taken into ``ahead`` as it goes (:meth:`_following`); ``sent_ahead``: ``job`` was."""
        if dest.bucket is not None:
            wait = dest.bucket.reserve(self.clock.monotonic())
            if wait > 0:
                await self.clock.sleep(wait)
        if conn is not None and not sent_ahead and self._worn_out(conn, dest):
            await conn.close()
            conn = None
        if conn is not None:
            try:
                await self._deliver(conn, dest, job, ahead)
            except StaleConnection as exc:
                log.info(
                    "connection to %s closed while idle (%s); sending %s on a new one",
                    conn.host.name,
                    exc,
                    job.message.id,
                )
                await conn.close()
                conn = None
        if conn is None:
            conn = await self._open(dest, job)
            if conn is None:
                return None
            await self._deliver(conn, dest, job, ahead)  # a new connection is never stale
        if conn.broken:
            await conn.close()
            return None
        return conn

    async def _open(self, dest: Destination, job: Job) -> Connection | None:
        opened = await self.client.connect(job.route.hosts, job.tls, job.route.auth, dest.shaping.pipelining)
        if isinstance(opened, Reply):
            await self._connection_failed(dest, job, opened)
            return None
        dest.failures = 0
        dest.connections_opened += 1
        return opened

    async def _wait_for_work(self, dest: Destination, signal: asyncio.Event) -> bool:
        """Wait, idle, for ``dest.job_arrived`` to pick this worker (``signal`` is its own), at most the idle
        timeout; True if there may be work. False at once, or when told (_make_way), if a site with work
        waits for a place under the overall limit: this connection closes and the site has its place."""
        if self._starving:  # a site waits for a place: this one, with nothing to do, is it
            return False
        signal.clear()
        dest.idle.append(signal)
        self._idle[signal] = dest
        try:
            woken = await self.clock.wait(signal, self._idle_timeout(dest))
            if signal in self._told_to_close:  # another site waits for this place (_make_way)
                self._told_to_close.discard(signal)
                return False
            return woken or bool(dest.jobs)
        finally:
            self._idle.pop(signal, None)
            if signal in dest.idle:  # timed out or cancelled: no longer waiting
                dest.idle.remove(signal)

    def _idle_timeout(self, dest: Destination) -> float:
        """How long an idle connection waits for work. A node whose share of a site is less than one
        connection (fewer slots than nodes) keeps its slot idle at most SLOT_RETRY: the other nodes take
        turns with it, and their claimed mail waits for the slot."""
        if self.cluster and dest.max_connections * dest.share < 1:
            return min(self.settings.idle_timeout, SLOT_RETRY)
        return self.settings.idle_timeout

    @staticmethod
    def _worn_out(conn: Connection, dest: Destination) -> bool:
        s = dest.shaping
        return conn.messages >= s.max_messages_per_connection or conn.age >= s.max_connection_age

    def _following(self, dest: Destination, conn: Connection, ahead: list[Job]) -> Following:
        """What ``conn`` sends next, asked as a body is about to go: the site's next job, taken into
        ``ahead``, when the connection will carry it anyway (it stays open, the site is not paced by
        rate, no idle connection of the site would take the job sooner) and it fits one pipelined
        transaction. Its envelope then goes in the body's write: a message a write and a wait."""

        def following() -> Envelope | None:
            shaping = dest.shaping
            if (
                ahead
                or len(dest.jobs) <= len(dest.idle)
                or dest.bucket is not None
                or self._stopping
                or dest.workers > dest.node_connections
                or (self._starving and dest.workers > 1)
                or conn.messages + 2 > shaping.max_messages_per_connection
                or conn.age >= shaping.max_connection_age
            ):
                return None
            job = dest.jobs[0]
            sender, addresses = self._envelope_sender(job), [r.address for r in job.recipients]
            if not conn.can_follow(sender, addresses, job.message.raw, self.settings.max_rcpt):
                return None
            ahead.append(dest.jobs.popleft())
            self.sent_ahead += 1
            return sender, addresses, job.message.raw

        return following

    async def _deliver(self, conn: Connection, dest: Destination, job: Job, ahead: list[Job] | None = None) -> None:
        addresses = [r.address for r in job.recipients]
        began = self.clock.monotonic()
        following = self._following(dest, conn, ahead) if ahead is not None else None
        try:
            replies = await conn.send(
                self._envelope_sender(job), addresses, job.message.raw, self.settings.max_rcpt, following
            )
        except (asyncio.CancelledError, StaleConnection):
            conn.broken = True
            raise
        except Exception as exc:
            log.exception("delivery of %s to %s failed unexpectedly", job.message.id, dest.site)
            conn.broken = True
            replies = {a: Reply(None, f"internal error: {type(exc).__name__}") for a in addresses}
        dest.sent(self.clock.monotonic() - began)
        if any(is_pushback(reply.code, reply.text) for reply in replies.values()):
            dest.push_back(self.clock.now())
            if self.cluster:  # every node slows down, not only this one
                self._spawn(self.store.sites.record_pushback(dest.site, dest.factor, dest.cooldown_until))
        # Record in the background: the connection moves on to the next message while the
        # outcome commits (it is still written before anything else happens to these recipients).
        self._spawn(self._record(job.message, job.recipients, replies, conn.host.name, conn.host.address, conn.tls))

    async def _connection_failed(self, dest: Destination, job: Job, reply: Reply) -> None:
        await self._record(job.message, job.recipients, {r.address: reply for r in job.recipients})
        dest.failures += 1
        if dest.failures < SUSPEND_AFTER:
            return
        pause = min(SUSPEND_FOR * 2 ** (dest.failures - SUSPEND_AFTER), SUSPEND_MAX)
        dest.suspended_until = self.clock.now() + pause
        log.warning(
            "suspending delivery to %s for %.0fs after %d failed connections: %s",
            dest.site,
            pause,
            dest.failures,
            reply,
        )
        waiting = list(dest.jobs)
        dest.jobs.clear()
        ids = [r.id for j in waiting for r in j.recipients]
        if ids:
            try:  # if the database is away, their leases expire and they go out then
                await self.store.queue.postpone(ids, dest.suspended_until)
            finally:
                for j in waiting:
                    self._release(j.message, len(j.recipients))

    async def _record(
        self,
        message: LeasedMessage,
        recipients: list[LeasedRecipient],
        replies: Mapping[str, Reply],
        mx_host: str | None = None,
        ip: str | None = None,
        tls: str | None = None,
    ) -> None:
        now = self.clock.now()
        results = []
        for r in recipients:
            reply = replies.get(r.address, Reply(None, "no reply"))
            results.append(decide(reply, r, message, now, self.settings.retry, self.rng, mx_host, ip, tls))
        try:
            await self.store.queue.record_attempts(results)
        finally:
            self._release(message, len(recipients))
        self.attempts += len(results)
        for result, r in zip(results, recipients, strict=True):
            if result.state is State.DELIVERED:
                self.delivered += 1
                DELIVERY_SECONDS.observe(max(0.0, now - message.created_at))
            log.info(
                "%s %s to=<%s> attempt=%d via=%s reply=%s",
                message.id,
                result.state.value,
                result.address,
                r.attempts + 1,
                mx_host or "-",
                replies.get(r.address),
                extra={
                    "message_id": message.id,
                    "recipient": result.address,
                    "state": result.state.value,
                    "attempt": r.attempts + 1,
                    "mx_host": mx_host,
                },
            )
