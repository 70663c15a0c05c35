"""Acceptance shared by every submission path: screening, then one durable enqueue.

Both front doors end here — SMTP (``relay.submission.smtp``) and HTTP
(``relay.submission.http``) — so a message is treated the same whichever way it
arrived. The :class:`Acceptor` owns screening: the suppression list
(``suppressed``), size and verified sending domain (``check``), the queue's
capacity and the key's quota (``submit_many``; ``would_queue`` for dry runs).
What it refuses is a :class:`relay.errors.Refused`, which each front door turns
into its own answer. ``submit`` returns only after the message is on disk.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Sequence

from relay.dkim import Signer, sign_each
from relay.domains import SendingDomains
from relay.errors import DomainNotVerified, MessageTooLarge, Overloaded, StoreFull
from relay.message import NewMessage
from relay.store.idempotency import Completion
from relay.store.protocols import Storage
from relay.store.queue import Quota
from relay.submission.budget import InflightBudget
from relay.submission.capacity import Capacity

log = logging.getLogger(__name__)


class Acceptor:
    def __init__(
        self,
        store: Storage,
        max_size: int,
        on_queued: Callable[[], None] = lambda: None,
        capacity: Capacity | None = None,
        signer: Signer | None = None,
        sending: SendingDomains | None = None,
        sandbox: bool = False,
        budget: InflightBudget | None = None,
        sign_all: bool = False,
    ) -> None:
        self.sign_all = sign_all  # [dkim] sign_at = "acceptance": every message is signed here, not as it leaves
        self.budget = budget  # bodies in memory, SMTP and HTTP together ([server] max_inflight_bytes)
        self.sandbox = sandbox  # [delivery] mode = "sandbox": every message is captured, none delivered
        self.signer = signer
        self.sending = sending
        self.store = store
        self.max_size = max_size
        self.on_queued = on_queued
        self.capacity = capacity
        self.accepted = 0
        self._signal_due = False  # on_queued is to be called at the loop's next turn

    def check(self, message: NewMessage) -> None:
        """What refuses one message whatever else happens. Raises MessageTooLarge, DomainNotVerified."""
        size = len(message.raw) if message.client_size is None else message.client_size
        if size > self.max_size:  # what the client sent: the headers relay adds do not count against it
            raise MessageTooLarge(f"message is {size} bytes, the limit is {self.max_size}")
        if not message.recipients:
            raise ValueError("a message needs at least one recipient")
        refusal = self.sending.refusal(message.raw) if self.sending is not None else None
        if refusal is not None:
            raise DomainNotVerified(refusal)

    async def suppressed(self, addresses: Sequence[str]) -> dict[str, str]:
        """Which of ``addresses`` are on the suppression list: address → reason (one indexed read)."""
        return {a: s.reason for a, s in (await self.store.suppressions.suppressed(addresses)).items()}

    async def would_queue(self, quota: Quota | None) -> None:
        """Raise what ``submit_many`` would (Overloaded, QuotaExhausted), writing and counting nothing."""
        if self.capacity is not None:
            self.capacity.check()
        if quota is not None:
            await self.store.queue.check_quota(quota)

    async def submit(
        self, message: NewMessage, quota: Quota | None = None, completion: Completion | None = None
    ) -> str:
        """Queue ``message`` durably. Raises MessageTooLarge, DomainNotVerified, Overloaded, QuotaExhausted."""
        self.check(message)
        await self.submit_many([message], quota, completion)
        return message.id

    async def submit_many(
        self, messages: list[NewMessage], quota: Quota | None = None, completion: Completion | None = None
    ) -> None:
        """Queue checked messages in one durable transaction (all or none). Raises Overloaded, QuotaExhausted."""
        if self.capacity is not None:
            self.capacity.check()
        if self.sandbox:  # marked on the message, so it stays sandboxed whatever mode a restart brings
            messages = [dataclasses.replace(m, sandbox=True) for m in messages]
        if self.signer is not None and self.signer.keys and (self.sign_all or any(m.sandbox for m in messages)):
            # By default a message is signed as it leaves (relay.delivery.engine): one captured in the sandbox
            # never does, so it is signed here, to be shown as it would have been sent.
            messages = await self._sign(messages)
        try:
            await self.store.queue.enqueue_many(messages, quota, completion)
        except StoreFull as exc:
            raise Overloaded("the disk holding the queue is full") from exc
        self.accepted += len(messages)
        if not self._signal_due:  # once for every submission this group commit finished (a datagram each)
            self._signal_due = True
            asyncio.get_running_loop().call_soon(self._signal_queued)

    def _signal_queued(self) -> None:
        self._signal_due = False
        try:
            self.on_queued()
        except Exception:  # the messages are on disk: nothing after this point may turn it into a failure
            log.exception("could not signal the delivery engine about new messages")

    def sandboxed(self, message: NewMessage) -> bool:
        """Whether ``message`` would be captured in the sandbox rather than delivered."""
        return self.sandbox or message.sandbox

    async def _sign(self, messages: list[NewMessage]) -> list[NewMessage]:
        """The messages to sign here signed: every one (``sign_all``), or the sandboxed. One whose signing
        fails unexpectedly (logged) is queued as it is, and delivery tries to sign it again as it leaves."""
        assert self.signer is not None
        here = [m.sandbox or self.sign_all for m in messages]
        signed = iter(await sign_each(self.signer, [m.raw for m, sign in zip(messages, here, strict=True) if sign]))
        return [
            dataclasses.replace(m, raw=next(signed) or m.raw) if sign else m
            for m, sign in zip(messages, here, strict=True)
        ]
