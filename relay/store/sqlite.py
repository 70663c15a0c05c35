"""The storage boundary, SQLite edition.

Submission, delivery, the HTTP API and the CLI talk to a :class:`Store`; none
of them write SQL. A PostgreSQL store would offer the same methods.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from pathlib import Path

from relay import credentials as creds
from relay import keys as api_keys
from relay.clock import Clock
from relay.credentials import SmtpCredential
from relay.domains import DkimKey, Domain
from relay.errors import StoreError
from relay.keys import ApiKey
from relay.message import NewMessage
from relay.store import credentials as cred_rows
from relay.store import domains as dom
from relay.store import events as ev
from relay.store import idempotency as idem
from relay.store import keys as key_rows
from relay.store import queue as q
from relay.store import suppressions as sup
from relay.store import templates as tpl
from relay.store import webhooks as wh
from relay.store.db import Database
from relay.store.reclassify import Reclassified, reclassify
from relay.suppression import SuppressionPolicy

log = logging.getLogger(__name__)

KEY_TOUCH_INTERVAL = 60.0  # seconds between last_used_at writes for one key


class Store:
    def __init__(self, path: Path, clock: Clock, suppression_policy: SuppressionPolicy | None = None,
                 redact_subjects: bool = False) -> None:  # fmt: skip
        self.db = Database(path)
        self.redact_subjects = redact_subjects
        self.clock = clock
        self.suppression_policy = suppression_policy or SuppressionPolicy()
        self._key_touched: dict[str, float] = {}
        self._background: set[asyncio.Task[None]] = set()

    async def close(self) -> None:
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        await self.db.close()

    # -- queue ----------------------------------------------------------------

    async def enqueue_many(self, messages: Sequence[NewMessage], quota: q.Quota | None = None,
                           completion: idem.Completion | None = None) -> None:  # fmt: skip
        """Durably queue several messages in one transaction: all of them or, on an error, none."""
        now = self.clock.now()
        if self.redact_subjects:
            messages = [dataclasses.replace(m, subject="") for m in messages]

        def op(conn: sqlite3.Connection) -> None:
            for message in messages:
                q.enqueue(conn, message, now, quota)
            if completion is not None:
                idem.complete(conn, completion)

        await self.db.write(op)

    async def enqueue(
        self, message: NewMessage, quota: q.Quota | None = None, completion: idem.Completion | None = None
    ) -> None:
        """Durably queue a message; returns once it is committed to disk.

        ``quota``: count it against an API key's quota (raises QuotaExhausted).
        ``completion``: store the Idempotency-Key outcome in the same transaction.
        """
        now = self.clock.now()
        if self.redact_subjects and message.subject:
            message = dataclasses.replace(message, subject="")

        def op(conn: sqlite3.Connection) -> None:
            q.enqueue(conn, message, now, quota)
            if completion is not None:
                idem.complete(conn, completion)

        await self.db.write(op)

    async def claim_due(
        self, limit: int, owner: str, lease: float, max_bytes: int | None = None, first_fits: bool = True
    ) -> list[q.LeasedMessage]:
        now = self.clock.now()
        return await self.db.write(lambda c: q.claim_due(c, now, limit, owner, now + lease, max_bytes, first_fits))

    async def record_attempts(self, results: list[q.AttemptResult]) -> None:
        now = self.clock.now()
        policy = self.suppression_policy
        await self.db.write(lambda c: q.record_attempts(c, results, now, policy))

    async def postpone(self, recipient_ids: list[int], until: float) -> None:
        now = self.clock.now()
        await self.db.write(lambda c: q.postpone(c, recipient_ids, until, now))

    async def attempts(self, message_id: str, address: str) -> list[q.Attempt]:
        return await self.db.read(lambda c: q.attempts_of(c, message_id, address))

    async def domain_queues(self) -> list[q.DomainQueue]:
        now = self.clock.now()
        return await self.db.read(lambda c: q.domain_queues(c, now))

    async def retry_now(self, selection: q.Selection) -> int:
        now = self.clock.now()
        return await self.db.write(lambda c: q.retry_now(c, now, selection))

    async def purge(self, selection: q.Selection) -> int:
        now = self.clock.now()
        return await self.db.write(lambda c: q.purge(c, now, selection))

    async def cancel_scheduled(self) -> tuple[int, int]:
        """Cancel every scheduled message not yet due: (messages, recipients)."""
        now = self.clock.now()
        return await self.db.write(lambda c: q.cancel_scheduled(c, now))

    async def resend(self, message_id: str) -> list[q.Resent] | None:
        """Queue a message's bounced and failed recipients again unless suppressed now (None: no such message)."""
        now = self.clock.now()
        return await self.db.write(lambda c: q.resend(c, message_id, now))

    async def suspend_domain(self, domain: str, duration: float, reason: str = "") -> float:
        until = self.clock.now() + duration
        await self.db.write(lambda c: q.suspend_domain(c, domain, until, reason))
        return until

    async def resume_domain(self, domain: str) -> bool:
        return await self.db.write(lambda c: q.resume_domain(c, domain))

    async def admin_bounce(self, reason: str, selection: q.Selection) -> int:
        now = self.clock.now()
        return await self.db.write(lambda c: q.admin_bounce(c, now, reason, selection))

    async def release_leases(self, owner: str | None = None) -> int:
        """Release ``owner``'s leases, or (owner None) every expired lease."""
        now = self.clock.now()
        return await self.db.write(lambda c: q.release_leases(c, now, owner))

    async def next_due_at(self) -> float | None:
        return await self.db.read(q.next_due_at)

    async def summary(self) -> q.QueueSummary:
        return await self.db.read(q.summary)

    async def message_status(self, message_id: str) -> list[q.RecipientStatus]:
        return await self.db.read(lambda c: q.message_status(c, message_id))

    async def message(self, message_id: str) -> q.MessageRecord | None:
        return await self.db.read(lambda c: q.message_record(c, message_id))

    async def messages(self, filter: q.MessageFilter, limit: int) -> list[q.MessageRecord]:
        return await self.db.read(lambda c: q.list_messages(c, filter, limit))

    async def scheduled_messages(self, after: str | None, limit: int,
                                 api_key_id: str | None = None) -> list[q.MessageRecord]:  # fmt: skip
        return await self.db.read(lambda c: q.scheduled_messages(c, after, limit, api_key_id))

    async def reschedule(self, message_id: str, send_at: float) -> int:
        now = self.clock.now()
        return await self.db.write(lambda c: q.reschedule(c, message_id, send_at, now))

    async def cancel_message(self, message_id: str) -> list[str]:
        now = self.clock.now()
        return await self.db.write(lambda c: q.cancel_message(c, message_id, now))

    async def pending_count(self) -> int:
        return await self.db.read(q.pending_count)

    async def check_quota(self, quota: q.Quota) -> None:
        """Raise QuotaExhausted if one more message would go over the quota; counts nothing (dry runs)."""
        now = self.clock.now()
        await self.db.read(lambda c: q.check_quota(c, quota, now))

    # -- sandbox ----------------------------------------------------------------

    async def sandbox_messages(self, before: str | None, limit: int,
                               api_key_id: str | None = None) -> list[q.MessageRecord]:  # fmt: skip
        return await self.db.read(lambda c: q.sandbox_messages(c, before, limit, api_key_id))

    async def sandbox_message(self, message_id: str) -> tuple[q.MessageRecord, bytes | None] | None:
        """A sandboxed message and its body (None once [retention] bodies has deleted it)."""
        return await self.db.read(lambda c: q.sandbox_message(c, message_id))

    # -- idempotency ----------------------------------------------------------

    async def claim_idempotency_key(
        self, api_key_id: str, key: str, request_hash: str, ttl: float
    ) -> idem.IdempotencyRecord | None:
        """None: claimed for a request of this process (hold it with :meth:`idempotency_lease`); else the
        record that holds the key (done, or pending with an owner that has not stopped)."""
        now = self.clock.now()
        scope = str(self.db.path)
        try:
            return await self.db.write(lambda c: idem.claim(c, api_key_id, key, request_hash, now, ttl, scope))
        except BaseException:
            idem.finished_here(scope, api_key_id, key)  # not committed: not ours
            raise

    @contextlib.asynccontextmanager
    async def idempotency_lease(self, api_key_id: str, key: str) -> AsyncIterator[None]:
        """Hold a claim while its request runs: the lease is renewed every RENEW_EVERY seconds, the claim
        is released if the request fails, and it is no longer this process's running request after."""
        renewing = asyncio.create_task(self._renew_idempotency_key(api_key_id, key))
        try:
            yield
        except BaseException:
            await self.release_idempotency_key(api_key_id, key)
            raise
        finally:
            renewing.cancel()
            idem.finished_here(str(self.db.path), api_key_id, key)

    async def _renew_idempotency_key(self, api_key_id: str, key: str) -> None:
        while True:
            await asyncio.sleep(idem.RENEW_EVERY)
            try:
                if not await self.renew_idempotency_key(api_key_id, key):
                    return  # no longer ours (completed, released, or taken over)
            except Exception as exc:  # e.g. a full disk: the next renewal may work; the lease says the rest
                log.warning("could not renew the claim on Idempotency-Key %r: %s", key, exc)

    async def renew_idempotency_key(self, api_key_id: str, key: str) -> bool:
        """Extend this process's lease on a pending claim; False if it is no longer this process's."""
        now = self.clock.now()
        return await self.db.write(lambda c: idem.renew(c, api_key_id, key, now))

    async def complete_idempotency_key(self, completion: idem.Completion) -> None:
        await self.db.write(lambda c: idem.complete(c, completion))

    async def release_idempotency_key(self, api_key_id: str, key: str) -> None:
        try:
            await self.db.write(lambda c: idem.release(c, api_key_id, key))
        finally:
            idem.finished_here(str(self.db.path), api_key_id, key)

    async def idempotency_record(self, api_key_id: str, key: str) -> idem.IdempotencyRecord | None:
        now = self.clock.now()
        return await self.db.lookup(lambda c: idem.get(c, api_key_id, key, now))

    async def forget_idempotency_record(self, api_key_id: str, key: str
                                        ) -> tuple[idem.IdempotencyRecord | None, bool]:  # fmt: skip
        """Delete a finished record: (the record or None, whether it was deleted)."""
        now = self.clock.now()
        return await self.db.write(lambda c: idem.forget(c, api_key_id, key, now, str(self.db.path)))

    async def key_usage(self, api_key_id: str) -> tuple[int, int]:
        """Messages counted against the key's quotas this UTC day and month."""
        now = self.clock.now()
        return await self.db.read(lambda c: q.key_usage(c, api_key_id, now))

    async def prune(self) -> int:
        """Drop expired idempotency records."""
        now = self.clock.now()
        return await self.db.write(lambda c: idem.prune(c, now))

    # -- API keys ---------------------------------------------------------------

    async def create_api_key(
        self,
        name: str,
        scopes: tuple[str, ...],
        *,
        allowed_ips: tuple[str, ...] = (),
        rate_limit: int | None = None,
        daily_quota: int | None = None,
        monthly_quota: int | None = None,
        test: bool = False,
        own_messages: bool = False,
    ) -> tuple[ApiKey, str]:
        """Create a key; returns its record and the secret, which is never stored."""
        secret = api_keys.generate(test)
        key = ApiKey(
            api_keys.new_key_id(), name, scopes, self.clock.now(),
            allowed_ips=allowed_ips, rate_limit=rate_limit, daily_quota=daily_quota, monthly_quota=monthly_quota,
            test=test, own_messages=own_messages,
        )  # fmt: skip
        await self.db.write(lambda c: key_rows.create(c, key, api_keys.digest(secret)))
        return key, secret

    async def api_key(self, key_id: str) -> ApiKey | None:
        return await self.db.lookup(lambda c: key_rows.get(c, key_id))

    async def authenticate(self, secret: str) -> ApiKey | None:
        """The active key with this secret, or None. Records last use at most once a minute."""
        key = await self.db.lookup(lambda c: key_rows.find_active(c, api_keys.digest(secret)))
        if key is not None:
            now = self.clock.now()
            if now - self._key_touched.get(key.id, 0.0) > KEY_TOUCH_INTERVAL:
                self._key_touched[key.id] = now
                self._in_background(lambda c: key_rows.touch(c, key.id, now))
        return key

    def _in_background(self, fn: Callable[[sqlite3.Connection], object]) -> None:
        """A best-effort write nobody waits for (last-use times): a failure (a full disk) is logged, not raised."""

        async def run() -> None:
            try:
                await self.db.write(fn)
            except (sqlite3.Error, StoreError, RuntimeError) as exc:
                log.warning("could not record a last-use time: %s", exc)

        task = asyncio.get_running_loop().create_task(run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def list_api_keys(self) -> list[ApiKey]:
        return await self.db.read(key_rows.list_all)

    async def revoke_api_key(self, key_id: str) -> bool:
        now = self.clock.now()
        return await self.db.write(lambda c: key_rows.revoke(c, key_id, now))

    # -- SMTP credentials -------------------------------------------------------

    async def create_smtp_credential(
        self,
        *,
        username: str | None = None,
        allowed_from: tuple[str, ...] = (),
        rate_limit: int | None = None,
        tags: tuple[str, ...] = (),
        test: bool = False,
    ) -> tuple[SmtpCredential, str]:
        """Create a credential; returns it and its password, which is never stored."""
        password = creds.new_password()
        password_hash = await asyncio.to_thread(creds.hash_password, password)
        cred = SmtpCredential(creds.new_id(), username or creds.new_username(test), allowed_from, rate_limit, tags,
                              self.clock.now(), test=test)  # fmt: skip
        await self.db.write(lambda c: cred_rows.create(c, cred, password_hash))
        return cred, password

    async def smtp_credential_for_login(self, username: str) -> tuple[SmtpCredential, str] | None:
        return await self.db.lookup(lambda c: cred_rows.find_active(c, username))

    async def smtp_credential(self, cred_id: str) -> SmtpCredential | None:
        return await self.db.read(lambda c: cred_rows.get(c, cred_id))

    async def list_smtp_credentials(self) -> list[SmtpCredential]:
        return await self.db.read(cred_rows.list_all)

    async def revoke_smtp_credential(self, cred_id: str) -> bool:
        now = self.clock.now()
        return await self.db.write(lambda c: cred_rows.revoke(c, cred_id, now))

    def touch_smtp_credential(self, cred_id: str) -> None:
        """Record use, at most once a minute per credential, without waiting for it."""
        now = self.clock.now()
        if now - self._key_touched.get(cred_id, 0.0) <= KEY_TOUCH_INTERVAL:
            return
        self._key_touched[cred_id] = now
        self._in_background(lambda c: cred_rows.touch(c, cred_id, now))

    # -- bounces and suppressions -------------------------------------------------------

    async def record_bounce(self, bounce: sup.NewBounce) -> tuple[int, sup.Suppression | None]:
        now, policy = self.clock.now(), self.suppression_policy
        return await self.db.write(lambda c: sup.record_bounce(c, bounce, now, policy))

    async def returned_target(self, message_id: str, recipient_id: int) -> q.ReturnedTarget | None:
        """The recipient an authenticated return path names, if the message is still known."""
        return await self.db.read(lambda c: q.returned_target(c, message_id, recipient_id))

    async def targets_by_header_id(self, header_id: str) -> list[q.ReturnedTarget]:
        """The recipients of the message(s) with this Message-ID header."""
        return await self.db.read(lambda c: q.targets_by_header_id(c, header_id))

    async def record_returned(self, bounce: sup.NewBounce, target: q.ReturnedTarget
                              ) -> tuple[int, sup.Suppression | None]:  # fmt: skip
        """A returned report (DSN or complaint) about one recipient: bounce, suppression, event, state."""
        now, policy = self.clock.now(), self.suppression_policy
        return await self.db.write(lambda c: q.record_returned(c, bounce, target, now, policy))

    async def suppressed(self, addresses: Iterable[str]) -> dict[str, sup.Suppression]:
        now, wanted = self.clock.now(), list(addresses)
        read = self.db.lookup if len(wanted) <= 100 else self.db.read  # a long list waits in the thread
        return await read(lambda c: sup.suppressed(c, wanted, now))

    async def suppression(self, address: str) -> sup.Suppression | None:
        now = self.clock.now()
        return await self.db.read(lambda c: sup.get(c, address, now))

    async def suppressions(self, filter: sup.SuppressionFilter, limit: int) -> list[sup.Suppression]:
        now = self.clock.now()
        return await self.db.read(lambda c: sup.list_suppressions(c, filter, limit, now))

    async def suppress(self, addresses: Sequence[str], reason: str = "manual", detail: str = "",
                       expires_at: float | None = None) -> list[sup.Suppression]:  # fmt: skip
        now = self.clock.now()
        return await self.db.write(lambda c: sup.add(c, addresses, reason, detail, now, expires_at))

    async def unsuppress(self, address: str) -> bool:
        return await self.db.write(lambda c: sup.remove(c, address))

    async def reclassify_suppressions(self, apply: bool) -> Reclassified:
        """Permanent hard-bounce suppressions the rule in force would not make: listed, or lifted (``apply``)."""
        now = self.clock.now()
        run = self.db.write if apply else self.db.read
        return await run(lambda c: reclassify(c, now, apply))

    async def allow(self, entry: str, note: str = "") -> str:
        now = self.clock.now()
        return await self.db.write(lambda c: sup.allow(c, entry, note, now))

    async def disallow(self, entry: str) -> bool:
        return await self.db.write(lambda c: sup.disallow(c, entry))

    async def allowlist(self) -> list[tuple[str, str, float]]:
        return await self.db.read(sup.allowlist)

    async def bounces(self, filter: sup.BounceFilter, limit: int) -> list[sup.Bounce]:
        return await self.db.read(lambda c: sup.list_bounces(c, filter, limit))

    async def bounce(self, bounce_id: int) -> sup.Bounce | None:
        return await self.db.read(lambda c: sup.get_bounce(c, bounce_id))

    # -- events, stats, retention -----------------------------------------------------

    async def events(self, filter: ev.EventFilter, limit: int) -> list[ev.Event]:
        return await self.db.read(lambda c: ev.list_events(c, filter, limit))

    async def message_events(self, message_id: str) -> list[ev.Event]:
        return await self.db.read(lambda c: ev.message_events(c, message_id))

    async def event(self, event_id: int) -> ev.Event | None:
        return await self.db.read(lambda c: ev.get_event(c, event_id))

    async def event_counts(self, since: float, until: float, interval: int, tag: str | None
                           ) -> list[tuple[int, str, int]]:  # fmt: skip
        return await self.db.read(lambda c: ev.event_counts(c, since, until, interval, tag))

    async def event_totals(self) -> dict[str, int]:
        return await self.db.read(ev.totals)

    async def bounce_stats(self, since: float, until: float) -> ev.BounceStats:
        return await self.db.read(lambda c: ev.bounce_stats(c, since, until))

    async def prune_history(self, events_before: float, bodies_before: float) -> tuple[int, int]:
        """One batch of old events (and webhook logs) and of bodies nothing will send again; repeat while > 0."""

        def op(c: sqlite3.Connection) -> tuple[int, int]:
            return ev.prune_events(c, events_before) + ev.prune_webhook_log(c, events_before), ev.prune_bodies(
                c, bodies_before
            )

        return await self.db.write(op)

    # -- webhooks -----------------------------------------------------------------------

    async def create_webhook(self, hook: wh.Webhook) -> None:
        await self.db.write(lambda c: wh.create(c, hook))

    async def webhook(self, hook_id: str) -> wh.Webhook | None:
        return await self.db.read(lambda c: wh.get(c, hook_id))

    async def webhooks(self) -> list[wh.Webhook]:
        return await self.db.read(wh.list_all)

    async def update_webhook(self, hook_id: str, changes: dict[str, object]) -> wh.Webhook | None:
        now = self.clock.now()
        return await self.db.write(lambda c: wh.update(c, hook_id, changes, now))

    async def delete_webhook(self, hook_id: str) -> bool:
        return await self.db.write(lambda c: wh.delete(c, hook_id))

    async def claim_webhook_deliveries(self, limit: int, lease: float) -> list[wh.DueDelivery]:
        now = self.clock.now()
        return await self.db.write(lambda c: wh.claim_due(c, now, limit, lease))

    async def set_webhook_payload(self, delivery_id: int, payload: bytes) -> None:
        await self.db.write(lambda c: wh.set_payload(c, delivery_id, payload))

    async def record_webhook_attempt(self, outcome: wh.AttemptOutcome, disable_after: float) -> str | None:
        now = self.clock.now()
        return await self.db.write(lambda c: wh.record_attempt(c, outcome, now, disable_after))

    async def webhook_attempts(self, hook_id: str, limit: int, before: int | None = None) -> list[wh.AttemptRecord]:
        return await self.db.read(lambda c: wh.recent_attempts(c, hook_id, limit, before))

    async def webhook_backlog(self) -> dict[str, int]:
        return await self.db.read(wh.backlog)

    # -- sending domains ------------------------------------------------------------------

    async def create_domain(self, domain_id: str, name: str, key: DkimKey) -> Domain:
        now = self.clock.now()
        return await self.db.write(lambda c: dom.create(c, domain_id, name, key, now))

    async def domain(self, ident: str) -> Domain | None:
        return await self.db.read(lambda c: dom.get(c, ident))

    async def domains(self) -> list[Domain]:
        return await self.db.read(dom.list_all)

    async def delete_domain(self, ident: str) -> Domain | None:
        return await self.db.write(lambda c: dom.delete(c, ident))

    async def add_dkim_key(self, domain_id: str, key: DkimKey) -> None:
        await self.db.write(lambda c: dom.add_key(c, domain_id, key))

    async def record_domain_checks(self, domain: Domain, checks: dict[str, dict[str, str]], promote: str | None
                                   ) -> Domain:  # fmt: skip
        now = self.clock.now()
        return await self.db.write(lambda c: dom.record_checks(c, domain, checks, now, promote))

    # -- templates --------------------------------------------------------------------------

    async def create_template(self, template_id: str, name: str, subject: str, html: str | None,
                              text: str | None) -> tpl.Template:  # fmt: skip
        now = self.clock.now()
        return await self.db.write(lambda c: tpl.create(c, template_id, name, subject, html, text, now))

    async def template(self, template_id: str) -> tpl.Template | None:
        return await self.db.read(lambda c: tpl.get(c, template_id))

    async def templates(self) -> list[tpl.Template]:
        return await self.db.read(tpl.list_all)

    async def update_template(self, template_id: str, name: str | None, subject: str, html: str | None,
                              text: str | None, note: str = "updated") -> tpl.Template | None:  # fmt: skip
        now = self.clock.now()
        return await self.db.write(lambda c: tpl.update(c, template_id, name, subject, html, text, note, now))

    async def delete_template(self, template_id: str) -> bool:
        return await self.db.write(lambda c: tpl.delete(c, template_id))

    async def template_version(self, template_id: str, number: int) -> tpl.TemplateVersion | None:
        return await self.db.read(lambda c: tpl.version(c, template_id, number))

    async def template_versions(self, template_id: str) -> list[tpl.TemplateVersion]:
        return await self.db.read(lambda c: tpl.versions(c, template_id))
