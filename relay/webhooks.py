"""Signed webhooks: event payloads, Standard Webhooks signatures, and the sender that drains the queue.

Signatures follow the Standard Webhooks specification, so receivers can check
them with the ``standardwebhooks`` or svix libraries in any language: the
secret is ``whsec_`` + base64 of random bytes; ``webhook-signature`` is
``v1,`` + base64(HMAC-SHA256(secret, "<webhook-id>.<webhook-timestamp>.<body>")).
``webhook-id`` is the event's id, the same on every retry, for de-duplication.

Deliveries are rows in the store (queued by a trigger with the event itself),
so a restart loses none. Failures retry on RETRY_SCHEDULE (about a day), then
the delivery is given up; an endpoint failing for ``disable_after`` is
disabled, with the reason visible on the endpoint.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import functools
import hashlib
import hmac
import ipaddress
import logging
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast
from urllib.parse import urlsplit

from relay import strictjson
from relay.clock import Clock, iso
from relay.config import Rate
from relay.errors import RelayError
from relay.ratelimit import TokenBucket
from relay.store.events import Event
from relay.store.protocols import Storage
from relay.store.webhooks import AttemptOutcome, DueDelivery, Webhook
from relay.webhook_http import Client, HttpError

log = logging.getLogger(__name__)

# Seconds after each failed attempt: 5s, 30s, 2m, 5m, 15m, 30m, 1h, 2h, 4h, 8h, 8h — about 24h in all.
RETRY_SCHEDULE: tuple[float, ...] = (5, 30, 120, 300, 900, 1800, 3600, 7200, 14400, 28800, 28800)
MAX_RESPONSE_TEXT = 200


# -- signing and payloads (pure) --------------------------------------------------------------


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode("ascii")


@functools.lru_cache(maxsize=256)
def _secret_key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix("whsec_"))


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(_secret_key(secret), f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode("ascii")


def signed_headers(secret: str, msg_id: str, body: bytes, now: float) -> dict[str, str]:
    timestamp = int(now)
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, msg_id, timestamp, body),
        "user-agent": "relay-webhooks/1",
    }


def event_id(event: Event) -> str:
    return f"evt_{event.id}"


TIME_DETAILS = frozenset({"send_at", "next_attempt_at"})  # stored as unix seconds, shown like every other time


def _details(event: Event) -> dict[str, Any]:
    details = {k: iso(v) if k in TIME_DETAILS and isinstance(v, int | float) else v for k, v in event.details.items()}
    return {**details, **({"description": event.detail} if event.detail else {})}


def event_json(event: Event) -> dict[str, Any]:
    """An event as the API and webhooks show it."""
    return {
        "id": event_id(event),
        "type": event.type,
        "timestamp": iso(event.at),
        "message_id": event.message_id,
        "recipient": event.recipient,
        "tags": event.tags,
        "metadata": event.metadata,
        "details": _details(event),
    }


def payload(event: Event) -> bytes:
    data = event_json(event)
    body = {"type": event.type, "timestamp": data["timestamp"], "data": data}
    return strictjson.dumps(body, separators=(",", ":"), sort_keys=True).encode()


def sample_event(now: float) -> Event:
    return Event(
        0,
        now,
        "delivered",
        "00000000000000000000000000",
        "test@example.com",
        250,
        "sample event",
        {"attempt": 1, "mx_host": "mx.example.com", "smtp_code": 250, "response": "2.0.0 OK", "test": True},
        ["test"],
        {},
    )


# -- where a webhook may point -------------------------------------------------------------------


class TargetError(RelayError, ValueError):
    """A webhook URL relay will not call."""


def check_url_syntax(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TargetError("url must be an http:// or https:// URL with a host")
    if parts.username or parts.password:
        raise TargetError("url must not carry credentials; put a token in the path or query")
    return url


Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Lookup = Callable[[str, int], Awaitable[list[str]]]  # (host, port) → addresses

# IPv6 prefixes that carry an IPv4 address in their last 32 bits: IPv4-compatible (deprecated),
# IPv4-mapped, IPv4-translated (SIIT), and the NAT64 prefixes (RFC 6052, RFC 8215). Such an address
# reaches the IPv4 address inside it, so it is as public as that address.
_EMBEDDING_V4 = [
    ipaddress.IPv6Network(n) for n in ("::/96", "::ffff:0:0/96", "::ffff:0:0:0/96", "64:ff9b::/96", "64:ff9b:1::/48")
]
_6TO4 = ipaddress.IPv6Network("2002::/16")  # 2002:AABB:CCDD::/48 routes to AA.BB.CC.DD


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address in _6TO4:
        return ipaddress.IPv4Address((int(address) >> 80) & 0xFFFFFFFF)
    if any(address in net for net in _EMBEDDING_V4):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def is_public(address: Address) -> bool:
    """Whether a webhook may be sent to ``address``: a global unicast address, and for an IPv6 address
    with an IPv4 address inside it, that IPv4 address is one too."""
    if not address.is_global or address.is_multicast or address.is_reserved or address.is_unspecified:
        return False
    if isinstance(address, ipaddress.IPv6Address):
        inner = embedded_ipv4(address)
        if inner is not None or address in _EMBEDDING_V4[0]:
            return inner is not None and is_public(inner) and address not in _EMBEDDING_V4[0]
    return True


async def system_lookup(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


async def checked_addresses(host: str, port: int, allow_private: bool, lookup: Lookup = system_lookup) -> list[str]:
    """The addresses of ``host``, every one of them public (unless allowed). Raises TargetError."""
    try:
        literal: Address | None = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        literal = None
    if literal is not None:
        addresses = [str(literal)]
    else:
        try:
            addresses = await lookup(host, port)
        except OSError as exc:
            raise TargetError(f"cannot resolve {host}: {exc.strerror or exc}") from None
        except UnicodeError:  # the IDNA encoding, before any lookup: a label empty or over 63 characters
            raise TargetError(f"cannot resolve {host}: not a host name (a label is empty or too long)") from None
        if not addresses:
            raise TargetError(f"cannot resolve {host}: no addresses")
    if not allow_private:
        for text in addresses:
            address = ipaddress.ip_address(text.split("%", 1)[0])
            if not is_public(address):
                raise TargetError(
                    f"{host} resolves to {address}, a non-public address ([webhooks] allow_private_targets)"
                )
    return addresses


async def check_target(url: str, allow_private: bool, lookup: Lookup = system_lookup) -> None:
    """Refuse loopback, private, link-local, multicast and other non-public addresses (SSRF) unless allowed."""
    check_url_syntax(url)
    parts = urlsplit(url)
    await checked_addresses(
        parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80), allow_private, lookup
    )


# -- the sender ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SenderSettings:
    timeout: float = 10.0
    max_concurrency: int = 4  # requests in flight per endpoint
    max_rate: Rate | None = None  # requests per period per endpoint
    disable_after: float = 3 * 86400.0  # an endpoint failing this long is disabled
    allow_private_targets: bool = False
    poll_interval: float = 1.0
    batch: int = 200
    lease: float = 120.0
    retry_schedule: Sequence[float] = RETRY_SCHEDULE


@dataclasses.dataclass
class _Lane:
    """An endpoint's own sender loop (see :meth:`WebhookSender.run`)."""

    hook: Webhook
    wake: asyncio.Event
    task: asyncio.Task[None] = dataclasses.field(init=False)
    recording: asyncio.Task[None] | None = None  # the write of its last outcomes
    claim_seconds: float = 0.0  # what its last claim took


class WebhookSender:
    def __init__(
        self,
        store: Storage,
        clock: Clock,
        settings: SenderSettings,
        lookup: Lookup = system_lookup,
    ) -> None:
        self.lookup = lookup
        self.store = store
        self.clock = clock
        self.settings = settings
        self._http = Client(self._checked, settings.timeout)
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._buckets: dict[str, TokenBucket] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._recording: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._stopping = False
        self._lanes: dict[str, _Lane] = {}  # the running sender's, by endpoint
        self._urls_checked: set[str] = set()
        self.sent = 0
        self.failed = 0

    async def _checked(self, host: str, port: int) -> list[str]:
        """The addresses a new connection to ``host`` may go to, every one public unless allowed: the
        connection goes to one of these, looked up and checked for it (no DNS-rebinding window)."""
        return await checked_addresses(host, port, self.settings.allow_private_targets, self.lookup)

    def wake(self) -> None:
        """Look for due deliveries now, for every endpoint (one was enabled or changed)."""
        self._wake.set()
        for lane in self._lanes.values():
            lane.wake.set()

    @property
    def claim_limit(self) -> int:
        """Deliveries an endpoint's pass leases at once: as many as it surely sends within half the lease
        (each may take the whole timeout, ``max_concurrency`` at a time, and wait its turn under
        ``max_rate``), so that no other node takes one back while it still waits here."""
        s = self.settings
        each = s.timeout / s.max_concurrency + (s.max_rate.period / s.max_rate.limit if s.max_rate else 0.0)
        return max(1, min(s.batch, int(s.lease / 2 / each)))

    async def run(self) -> None:
        """A lane for each enabled endpoint, which sends its deliveries on its own: a slow or failing
        endpoint delays only its own events. The endpoints are looked at every ``poll_interval``."""
        try:
            while not self._stopping:
                self._wake.clear()
                try:
                    hooks = {h.id: h for h in await self.store.webhooks.list_all() if h.enabled}
                except Exception:
                    log.exception("webhook sender failed; retrying")
                else:
                    self._keep_lanes(hooks)
                await self.clock.wait(self._wake, self.settings.poll_interval)
        finally:
            lanes = [lane.task for lane in self._lanes.values()]
            self._lanes.clear()
            for task in lanes:
                task.cancel()
            await asyncio.gather(*lanes, return_exceptions=True)

    def _keep_lanes(self, hooks: dict[str, Webhook]) -> None:
        for hook_id in self._lanes.keys() - hooks.keys():  # deleted or disabled: what it holds is leased, sent later
            self._lanes.pop(hook_id).task.cancel()
        for hook_id, hook in hooks.items():
            lane = self._lanes.get(hook_id)
            if lane is None:
                lane = self._lanes[hook_id] = _Lane(hook, asyncio.Event())
                lane.task = asyncio.create_task(self._run_lane(lane), name=f"relay-webhooks-{hook_id}")
            lane.hook = hook  # a new secret or URL from the next pass on

    async def _run_lane(self, lane: _Lane) -> None:
        """Claim, post, claim: the next lease is taken while a pass's requests are out, and a pass's
        outcomes are recorded while the next one posts (in turn: one write at a time per endpoint), so
        the endpoint waits for the store only when it has nothing to send."""
        claiming: asyncio.Task[list[DueDelivery]] | None = None
        sent = False  # since the last claim that found nothing
        try:
            while not self._stopping:
                lane.wake.clear()
                try:
                    due = await (claiming or self._timed_claim(lane))
                except Exception:
                    log.exception("webhook sender failed for %s; retrying", lane.hook.id)
                    due = []
                claiming = None
                if not due:
                    if sent and lane.recording is not None:  # its outcomes may make the next events of
                        sent = False  # their messages due: once more when they are recorded
                        await asyncio.wait([lane.recording])
                        continue
                    sent = False
                    await self.clock.wait(lane.wake, self._idle_wait(lane))
                    continue
                claiming = asyncio.create_task(self._timed_claim(lane))
                outcomes = await self._send(due, lane.hook)
                self._record_in_turn(lane, outcomes)
                sent = True
        finally:
            if claiming is not None:
                claiming.cancel()  # what it leased is sent when the lease ends

    async def _timed_claim(self, lane: _Lane) -> list[DueDelivery]:
        started = time.monotonic()  # the database's time, not the clock's: what the claim cost
        try:
            return await self._claim(lane.hook)
        finally:
            lane.claim_seconds = time.monotonic() - started

    def _idle_wait(self, lane: _Lane) -> float:
        """How long a lane whose claim found nothing waits before the next: ``poll_interval``, or longer
        when finding nothing was costly. An endpoint that has been failing has events due that must wait
        for an earlier event of their message (each one looked at by every claim): with a backlog of
        millions that is a second of the database's time at each look, so it looks at most 1/50 of the
        time (and at least once a minute)."""
        return max(self.settings.poll_interval, min(60.0, 50 * lane.claim_seconds))

    async def run_once(self) -> int:
        """One pass for every enabled endpoint, at the same time: returns the deliveries attempted."""
        hooks = [h for h in await self.store.webhooks.list_all() if h.enabled]
        return sum(await asyncio.gather(*(self._pass(hook) for hook in hooks)))

    async def _pass(self, hook: Webhook) -> int:
        """Lease the endpoint's due deliveries, post them and record the outcomes."""
        due = await self._claim(hook)
        if due:
            await self._record(None, hook, await self._send(due, hook))
        return len(due)

    async def _claim(self, hook: Webhook) -> list[DueDelivery]:
        return await self.store.webhooks.claim_webhook_deliveries(hook.id, self.claim_limit, self.settings.lease)

    async def _send(self, due: list[DueDelivery], hook: Webhook) -> list[AttemptOutcome]:
        """Post every one, ``max_concurrency`` at a time: as many workers, each taking the next delivery
        (not a task each waiting for a place: a task, a wait and a wake-up less a delivery)."""
        outcomes: list[AttemptOutcome | None] = [None] * len(due)
        turns = iter(enumerate(due))

        async def work() -> None:
            for i, delivery in turns:
                outcomes[i] = await self._attempt(delivery, hook)

        workers = [asyncio.create_task(work()) for _ in range(min(len(due), self.settings.max_concurrency))]
        self._tasks.update(workers)
        try:
            await asyncio.gather(*workers)
        finally:
            self._tasks.difference_update(workers)
        return cast(list[AttemptOutcome], outcomes)  # each filled in by the worker that took it

    def _record_in_turn(self, lane: _Lane, outcomes: list[AttemptOutcome]) -> None:
        lane.recording = task = asyncio.create_task(self._record(lane.recording, lane.hook, outcomes))
        self._recording.add(task)
        task.add_done_callback(self._recording.discard)

    async def _record(self, after: asyncio.Task[None] | None, hook: Webhook, outcomes: list[AttemptOutcome]) -> None:
        """Every outcome in one write (after the endpoint's write before it). A write that fails leaves
        the deliveries leased: they are posted again when the lease ends."""
        if after is not None:
            await asyncio.wait([after])
        try:
            disabled = await self.store.webhooks.record_webhook_attempts(outcomes, self.settings.disable_after)
        except Exception:
            log.exception("webhook sender could not record %d attempts to %s", len(outcomes), hook.id)
            return
        for outcome in outcomes:
            self._count(outcome, hook)
        if hook.id in disabled:
            log.error("webhook %s (%s) %s", hook.id, hook.url, disabled[hook.id])

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*self._recording, return_exceptions=True)  # what was posted is recorded
        await self._http.close()

    async def _attempt(self, delivery: DueDelivery, hook: Webhook) -> AttemptOutcome:
        body = delivery.payload
        if body is None:
            if delivery.event is None:  # pruned before it could be sent
                return AttemptOutcome(
                    delivery.id, hook.id, delivery.event_id, None, "event no longer exists", 0.0, None
                )
            body = payload(delivery.event)
        async with self._slot(hook.id):
            await self._pace(hook.id)
            status, error, latency = await self.post(hook, f"evt_{delivery.event_id}", body)
        next_at = None
        ok = status is not None and 200 <= status < 300
        if not ok and delivery.attempts < len(self.settings.retry_schedule):
            next_at = self.clock.now() + self.settings.retry_schedule[delivery.attempts]
        return AttemptOutcome(delivery.id, hook.id, delivery.event_id, status, error, latency, next_at, body)

    def _count(self, outcome: AttemptOutcome, hook: Webhook) -> None:
        if outcome.ok:
            self.sent += 1
            return
        self.failed += 1
        log.warning(
            "webhook %s to %s: %s%s",
            f"evt_{outcome.event_id}",
            hook.url,
            outcome.error or outcome.status,
            "; giving up" if outcome.next_attempt_at is None else "",
        )

    def _slot(self, hook_id: str) -> asyncio.Semaphore:
        slot = self._slots.get(hook_id)
        if slot is None:
            slot = self._slots[hook_id] = asyncio.Semaphore(self.settings.max_concurrency)
        return slot

    async def _pace(self, hook_id: str) -> None:
        if self.settings.max_rate is None:
            return
        bucket = self._buckets.get(hook_id)
        if bucket is None:
            bucket = self._buckets[hook_id] = TokenBucket(self.settings.max_rate, self.clock.monotonic())
        wait = bucket.reserve(self.clock.monotonic())
        if wait > 0:
            await self.clock.sleep(wait)

    async def post(self, hook: Webhook, msg_id: str, body: bytes) -> tuple[int | None, str | None, float]:
        """One signed POST: (status, error text, latency in ms). Never raises for network trouble."""
        started = self.clock.monotonic()
        try:
            if hook.url not in self._urls_checked:  # once per URL, not per request
                check_url_syntax(hook.url)
                if len(self._urls_checked) >= 1000:  # endpoints are few; URLs that changed go
                    self._urls_checked.clear()
                self._urls_checked.add(hook.url)
            headers = signed_headers(hook.secret, msg_id, body, self.clock.now())
            response = await self._http.post(hook.url, headers, body, MAX_RESPONSE_TEXT)
            text = response.body.decode("utf-8", "replace")
            error = None if 200 <= response.status < 300 else f"HTTP {response.status}: {text}".strip()
            return response.status, error, (self.clock.monotonic() - started) * 1000
        except TargetError as exc:
            return None, str(exc), (self.clock.monotonic() - started) * 1000
        except TimeoutError:
            return None, f"timed out after {self.settings.timeout:g}s", (self.clock.monotonic() - started) * 1000
        except (HttpError, OSError) as exc:
            return None, str(exc)[:300], (self.clock.monotonic() - started) * 1000

    async def send_test(self, hook: Webhook) -> AttemptOutcome:
        """A sample event, sent now (not queued); recorded among the endpoint's attempts."""
        body = payload(sample_event(self.clock.now()))
        status, error, latency = await self.post(hook, f"evt_test_{secrets.token_hex(6)}", body)
        outcome = AttemptOutcome(None, hook.id, None, status, error, latency, None)
        await self.store.webhooks.record_webhook_attempts([outcome], self.settings.disable_after)
        return outcome
