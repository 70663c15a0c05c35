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
import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from relay.clock import Clock, iso
from relay.config import Rate
from relay.delivery.shaping import TokenBucket
from relay.store import Store
from relay.store.events import Event
from relay.store.webhooks import AttemptOutcome, DueDelivery, Webhook

log = logging.getLogger(__name__)

# Seconds after each failed attempt: 5s, 30s, 2m, 5m, 15m, 30m, 1h, 2h, 4h, 8h, 8h — about 24h in all.
RETRY_SCHEDULE: tuple[float, ...] = (5, 30, 120, 300, 900, 1800, 3600, 7200, 14400, 28800, 28800)
MAX_RESPONSE_TEXT = 200


# -- signing and payloads (pure) --------------------------------------------------------------


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode("ascii")


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
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
    body = {"type": event.type, "timestamp": iso(event.at), "data": event_json(event)}
    return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()


def sample_event(now: float) -> Event:
    return Event(0, now, "delivered", "00000000000000000000000000", "test@example.com", 250, "sample event",
                 {"attempt": 1, "mx_host": "mx.example.com", "smtp_code": 250, "response": "2.0.0 OK", "test": True},
                 ["test"], {})  # fmt: skip


# -- where a webhook may point -------------------------------------------------------------------


class TargetError(ValueError):
    """A webhook URL relay will not call."""


def check_url_syntax(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TargetError("url must be an http:// or https:// URL with a host")
    if parts.username or parts.password:
        raise TargetError("url must not carry credentials; put a token in the path or query")
    return url


async def check_target(url: str, allow_private: bool) -> None:
    """Refuse loopback, private, link-local and other non-public addresses (SSRF) unless allowed."""
    check_url_syntax(url)
    if allow_private:
        return
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port)
    except OSError as exc:
        raise TargetError(f"cannot resolve {host}: {exc.strerror or exc}") from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not address.is_global:
            raise TargetError(f"{host} resolves to {address}, a non-public address ([webhooks] allow_private_targets)")


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


class WebhookSender:
    def __init__(self, store: Store, clock: Clock, settings: SenderSettings,
                 session: aiohttp.ClientSession | None = None) -> None:  # fmt: skip
        self.store = store
        self.clock = clock
        self.settings = settings
        self._session = session
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._buckets: dict[str, TokenBucket] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._stopping = False
        self.sent = 0
        self.failed = 0

    async def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            timeout = aiohttp.ClientTimeout(total=self.settings.timeout)
            self._session = aiohttp.ClientSession(timeout=timeout, auto_decompress=False)
        return self._session

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        while not self._stopping:
            self._wake.clear()
            try:
                if await self.run_once():
                    continue  # the next event of a message may be due now
            except Exception:
                log.exception("webhook sender failed; retrying")
            try:
                await asyncio.wait_for(self._wake.wait(), self.settings.poll_interval)
            except TimeoutError:
                pass

    async def run_once(self) -> int:
        """Send every due delivery (respecting the per-endpoint caps) and wait for them."""
        due = await self.store.claim_webhook_deliveries(self.settings.batch, self.settings.lease)
        if not due:
            return 0
        hooks = {h.id: h for h in await self.store.webhooks()}
        tasks = [asyncio.create_task(self._deliver(d, hooks[d.webhook_id])) for d in due if d.webhook_id in hooks]
        self._tasks.update(tasks)
        try:
            await asyncio.gather(*tasks)
        finally:
            self._tasks.difference_update(tasks)
        return len(tasks)

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    async def _deliver(self, delivery: DueDelivery, hook: Webhook) -> None:
        body = delivery.payload
        if body is None:
            event = await self.store.event(delivery.event_id)
            if event is None:  # pruned before it could be sent
                outcome = AttemptOutcome(delivery.id, hook.id, delivery.event_id, None, "event no longer exists", 0.0,
                                         None)  # fmt: skip
                await self.store.record_webhook_attempt(outcome, self.settings.disable_after)
                return
            body = payload(event)
            await self.store.set_webhook_payload(delivery.id, body)
        async with self._slot(hook.id):
            await self._pace(hook.id)
            status, error, latency = await self.post(hook, f"evt_{delivery.event_id}", body)
        next_at = None
        ok = status is not None and 200 <= status < 300
        if not ok and delivery.attempts < len(self.settings.retry_schedule):
            next_at = self.clock.now() + self.settings.retry_schedule[delivery.attempts]
        outcome = AttemptOutcome(delivery.id, hook.id, delivery.event_id, status, error, latency, next_at)
        disabled = await self.store.record_webhook_attempt(outcome, self.settings.disable_after)
        if ok:
            self.sent += 1
        else:
            self.failed += 1
            log.warning("webhook %s to %s: %s%s", f"evt_{delivery.event_id}", hook.url, error or status,
                        "; giving up" if next_at is None else "")  # fmt: skip
        if disabled:
            log.error("webhook %s (%s) %s", hook.id, hook.url, disabled)

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
            bucket = self._buckets[hook_id] = TokenBucket(self.settings.max_rate, time.monotonic())
        wait = bucket.reserve(time.monotonic())
        if wait > 0:
            await asyncio.sleep(wait)

    async def post(self, hook: Webhook, msg_id: str, body: bytes) -> tuple[int | None, str | None, float]:
        """One signed POST: (status, error text, latency in ms). Never raises for network trouble."""
        started = time.monotonic()
        try:
            await check_target(hook.url, self.settings.allow_private_targets)
            session = await self._http()
            headers = signed_headers(hook.secret, msg_id, body, self.clock.now())
            async with session.post(hook.url, data=body, headers=headers, allow_redirects=False) as response:
                text = (await response.content.read(MAX_RESPONSE_TEXT)).decode("utf-8", "replace")
                error = None if 200 <= response.status < 300 else f"HTTP {response.status}: {text}".strip()
                return response.status, error, (time.monotonic() - started) * 1000
        except TargetError as exc:
            return None, str(exc), (time.monotonic() - started) * 1000
        except TimeoutError:
            return None, f"timed out after {self.settings.timeout:g}s", (time.monotonic() - started) * 1000
        except aiohttp.ClientError as exc:
            return None, f"{type(exc).__name__}: {exc}"[:300], (time.monotonic() - started) * 1000

    async def send_test(self, hook: Webhook) -> AttemptOutcome:
        """A sample event, sent now (not queued); recorded among the endpoint's attempts."""
        body = payload(sample_event(self.clock.now()))
        status, error, latency = await self.post(hook, f"evt_test_{secrets.token_hex(6)}", body)
        outcome = AttemptOutcome(None, hook.id, None, status, error, latency, None)
        await self.store.record_webhook_attempt(outcome, self.settings.disable_after)
        return outcome
