"""SMTP submission (RFC 6409): STARTTLS or implicit TLS, AUTH, relay rules, limits.

The SMTP front door (the protocol itself is ``relay.submission.server``): each transaction becomes
one ``NewMessage`` for the ``Acceptor`` (``relay.submission.accept``), which screens and queues it;
a refusal (``relay.errors.Refused``) carries its own SMTP reply.

Who may relay: an authenticated client, or one in ``trusted_networks``
(like Postfix's ``permit_sasl_authenticated, permit_mynetworks,
reject_unauth_destination``). Everyone else gets ``554 5.7.1 Relay access
denied`` at RCPT. AUTH is offered only over TLS, except to
``plaintext_auth_networks``. A credential may be limited to sender domains or
addresses (checked at MAIL FROM and on the From: header) and to a number of
messages per hour.

The ``250`` to DATA is sent only once the message is committed to disk; a
client that disconnects mid-DATA leaves nothing. ``X-Relay-Tags: a, b`` and
``X-Relay-Metadata: {json}`` are stored with the message and removed from it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import ssl
from collections.abc import Coroutine, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from relay import strictjson
from relay.admission import ConnectionCounts
from relay.clock import Clock
from relay.compose import metadata_fault
from relay.config import Config, Network, Rate
from relay.credentials import SmtpCredential
from relay.errors import RecipientsSuppressed, Refused, StoreError
from relay.message import (
    NewMessage,
    NoFrom,
    UnreadableFrom,
    from_addresses,
    header_section_ended,
    header_value,
    missing_standard_headers,
    new_message_id,
    prepend_headers,
    received_header,
    recipient_key,
    remove_headers,
    split_address,
    tag_fault,
)
from relay.ratelimit import Limiter, RateLimiter
from relay.submission.accept import Acceptor
from relay.submission.auth import SmtpAuthenticator
from relay.submission.commands import is_trusted, valid_helo_name, with_enhanced_code
from relay.submission.server import ConnectionFactory, SubmissionProtocol
from relay.submission.session import Envelope, Session

log = logging.getLogger(__name__)

TAGS_HEADER = "X-Relay-Tags"
METADATA_HEADER = "X-Relay-Metadata"
SEND_AT_HEADER = "X-Relay-Send-At"


def parse_relay_headers(raw: bytes) -> tuple[tuple[str, ...], dict[str, Any]]:
    """Tags and metadata from X-Relay-Tags / X-Relay-Metadata. Raises ValueError with a reason."""
    tags_text = header_value(raw, TAGS_HEADER)
    tags = tuple(dict.fromkeys(t.strip() for t in (tags_text or "").split(",") if t.strip()))
    if len(tags) > 10:
        raise ValueError(f"{TAGS_HEADER}: at most 10 tags")
    for tag in tags:
        fault = tag_fault(tag)
        if fault is not None:
            raise ValueError(f"{TAGS_HEADER}: {fault}")
    metadata_text = header_value(raw, METADATA_HEADER)
    metadata: dict[str, Any] = {}
    if metadata_text:
        try:
            metadata = strictjson.loads(metadata_text)
        except ValueError:
            raise ValueError(f"{METADATA_HEADER} is not valid JSON") from None
        refused = metadata_fault(metadata)
        if refused is not None:  # the API's rule: a flat object of 10 KB at most (SMTP took any size)
            raise ValueError(f"{METADATA_HEADER}: {refused[1]}")
    return tags, metadata


def parse_send_at(raw: bytes, now: float, max_ahead: float) -> float | None:
    """X-Relay-Send-At: an ISO 8601 time or an RFC 5322 date; None when absent or past. Raises ValueError."""
    text = header_value(raw, SEND_AT_HEADER)
    if not text:
        return None
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError):
            raise ValueError(f"{SEND_AT_HEADER} is not an ISO 8601 or RFC 5322 time") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    at = when.timestamp()
    if at > now + max_ahead:
        raise ValueError(f"{SEND_AT_HEADER} may be at most {max_ahead / 86400:g} days ahead")
    return at if at > now else None


@dataclasses.dataclass(frozen=True)
class Policy:
    hostname: str
    trusted: Sequence[Network]
    plaintext_auth: Sequence[Network]
    max_recipients: int
    show_auth: bool
    max_schedule_ahead: float = 30 * 86400.0

    @classmethod
    def from_config(cls, config: Config) -> Policy:
        s = config.smtp
        return cls(
            config.server.hostname,
            s.trusted_networks,
            s.plaintext_auth_networks,
            s.max_recipients,
            s.received_show_auth,
            config.server.max_schedule_ahead,
        )


def _credential(session: Session) -> SmtpCredential | None:
    return session.credential if session.authenticated else None


class SubmissionHandler:
    """Relay's rules for a submission: who may send as whom, to whom, and what becomes of the message."""

    def __init__(
        self,
        acceptor: Acceptor,
        policy: Policy,
        clock: Clock,
        authenticator: SmtpAuthenticator,
        limiter: Limiter | None = None,
    ) -> None:
        self.acceptor = acceptor
        self.policy = policy
        self.clock = clock
        self.authenticator = authenticator
        self.limiter = limiter or RateLimiter()  # per credential (relay.ratelimit.limiter_for)

    def mail(
        self, session: Session, envelope: Envelope, address: str, mail_options: list[str]
    ) -> str | Coroutine[Any, Any, str]:
        """The reply to MAIL FROM, or (a credential with a rate limit) the step that makes it."""
        cred = _credential(session)
        if cred is not None:
            if not cred.may_send_as(address):
                return f"550 5.7.1 Sender <{address}> is not allowed for this SMTP credential"
            if cred.rate_limit:
                return self._mail_limited(cred, envelope, address, mail_options)
        return self._mail_from(envelope, address, mail_options)

    async def _mail_limited(
        self, cred: SmtpCredential, envelope: Envelope, address: str, mail_options: list[str]
    ) -> str:
        assert cred.rate_limit
        decision = await self.limiter.hit(cred.id, Rate(cred.rate_limit, 3600.0), self.clock.now())
        if not decision.allowed:
            return f"450 4.7.1 Sending rate limit reached; try again in {decision.retry_after}s"
        return self._mail_from(envelope, address, mail_options)

    @staticmethod
    def _mail_from(envelope: Envelope, address: str, mail_options: list[str]) -> str:
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 Ok"

    def rcpt(
        self, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str | Coroutine[Any, Any, str]:
        """The reply to RCPT TO, or the step (the suppression list's look-up) that makes it."""
        if not session.authenticated and not is_trusted(session.ip, self.policy.trusted):
            log.warning("relay denied: client %s, recipient <%s>", session.ip, address)
            return f"554 5.7.1 <{address}>: Relay access denied"
        if split_address(address) is None:
            return "501 5.1.3 Bad recipient address syntax"
        if recipient_key(address) in envelope.rcpt_keys:  # To and Cc alike (smtplib's send_message): once
            return "250 2.1.5 Ok"
        if len(envelope.rcpt_tos) >= self.policy.max_recipients:
            return "452 4.5.3 Too many recipients"
        return self._rcpt_unsuppressed(envelope, address, rcpt_options)

    async def _rcpt_unsuppressed(self, envelope: Envelope, address: str, rcpt_options: list[str]) -> str:
        try:
            suppressed = await self.acceptor.suppressed((address,))
        except StoreError as exc:  # the database is down or restarting
            log.warning("suppression lookup failed for <%s>: %s", address, exc)
            return "451 4.3.0 Temporary failure, please try again later"
        except Exception:
            log.exception("suppression lookup failed for <%s>", address)
            return "451 4.3.0 Temporary failure, please try again later"
        if suppressed:
            return RecipientsSuppressed(suppressed).smtp_reply()
        envelope.rcpt_tos.append(address)
        envelope.rcpt_keys.add(recipient_key(address))

        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 Ok"

    async def data(self, session: Session, envelope: Envelope) -> str:
        """The reply to the end of DATA: 250 once the message is on disk, or why it was refused."""
        raw = header_section_ended(envelope.content or b"")  # what every rule reads, and what is stored
        cred = _credential(session)
        if cred is not None:
            try:
                refused = [a for a in from_addresses(raw) if not cred.may_send_as(a)]
            except NoFrom:
                refused = []  # nothing to forge: MAIL FROM was checked
            except UnreadableFrom as exc:
                if cred.allowed_from:
                    return f"550 5.7.1 {exc}: this SMTP credential may send only from {', '.join(cred.allowed_from)}"
                refused = []
            if refused:
                return f"550 5.7.1 From: <{refused[0]}> is not allowed for this SMTP credential"
        try:
            tags, metadata = parse_relay_headers(raw)
            send_at = parse_send_at(raw, self.clock.now(), self.policy.max_schedule_ahead)
        except ValueError as exc:
            return f"550 5.6.0 {exc}"
        raw = remove_headers(raw, (TAGS_HEADER, METADATA_HEADER, SEND_AT_HEADER))
        try:
            message = self._message(session, envelope, raw, cred, tags, metadata, send_at)
        except ValueError:  # a header relay writes would not be one header: refuse, never write it
            log.exception("could not make the trace headers for a message from %s", session.ip)
            return "451 4.3.0 Temporary failure, please try again later"
        try:
            await self.acceptor.submit(message)
        except Refused as exc:  # its reply is its own (relay.errors)
            if exc.smtp_code < 500:
                log.warning("refused a message from %s: %s", session.ip, exc)
            return exc.smtp_reply()
        except asyncio.CancelledError:
            raise
        except StoreError as exc:  # the database is down or restarting: nothing was written
            log.warning("could not queue a message from %s: %s", session.ip, exc)
            return "451 4.3.0 Temporary failure, please try again later"
        except Exception:
            log.exception("could not queue a message from %s", session.ip)
            return "451 4.3.0 Temporary failure, please try again later"
        log.info(
            "queued %s from=<%s> rcpts=%d size=%d via smtp%s",
            message.id,
            message.sender,
            len(message.recipients),
            len(message.raw),
            f" user={cred.username}" if cred else "",
        )
        return f"250 2.0.0 Ok: queued as {message.id}"

    def _message(
        self,
        session: Session,
        envelope: Envelope,
        raw: bytes,
        cred: SmtpCredential | None,
        tags: tuple[str, ...],
        metadata: dict[str, Any],
        send_at: float | None,
    ) -> NewMessage:
        now = self.clock.now()
        queue_id = new_message_id(now)
        recipients = tuple(envelope.rcpt_tos)
        protocol = "ESMTP" if session.extended_smtp else "SMTP"
        if session.tls:
            protocol += "S"
        if cred is not None:
            protocol += "A"  # RFC 3848
        trace = received_header(
            helo=session.host_name or "",
            peer_ip=session.ip,
            hostname=self.policy.hostname,
            protocol=protocol,
            queue_id=queue_id,
            recipient=recipients[0] if len(recipients) == 1 else None,
            now=now,
            authenticated_as=cred.username if cred is not None and self.policy.show_auth else None,
        )
        raw = prepend_headers(raw, [trace, *missing_standard_headers(raw, self.policy.hostname, now)])
        message = NewMessage(
            envelope.mail_from or "",
            recipients,
            raw,
            "smtp",
            queue_id,
            subject=header_value(raw, "Subject") or "",
            tags=tuple(dict.fromkeys((*(cred.tags if cred else ()), *tags))),
            metadata=metadata,
            sandbox=cred is not None and cred.test,
            client_size=envelope.data_size,
            send_at=send_at,
        )
        _ = message.header_id  # now, from the fields read for the Subject (at the enqueue, other messages' are)
        return message


class Sessions:
    """The open SMTP connections: their counts (per address and in all), and a drain for stopping."""

    def __init__(self, counts: ConnectionCounts) -> None:
        self.open: set[SubmissionProtocol] = set()
        self.counts = counts

    def in_transaction(self) -> int:
        return sum(1 for smtp in self.open if smtp.envelope is not None and smtp.envelope.mail_from is not None)

    async def drain(self, grace: float) -> None:
        """Wait up to ``grace`` seconds for transactions in progress, then close every connection."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while self.in_transaction() and loop.time() < deadline:  # noqa: ASYNC110 (a short poll, only on stop)
            await asyncio.sleep(0.05)
        for smtp in list(self.open):
            if smtp.transport is not None:
                smtp.transport.close()


def make_smtp_factory(
    handler: SubmissionHandler,
    config: Config,
    sessions: Sessions,
    tls_context: ssl.SSLContext | None,
    implicit_tls: bool = False,
) -> ConnectionFactory:
    """A protocol factory for ``loop.create_server``: STARTTLS offered with ``tls_context``,
    or (``implicit_tls``) the server socket itself is TLS."""
    return ConnectionFactory(
        handler,
        sessions,
        max_size=config.smtp.max_message_size,
        idle_timeout=config.smtp.idle_timeout,
        tls_context=tls_context,
        implicit_tls=implicit_tls,
    )


__all__ = [
    "ConnectionFactory",
    "SubmissionHandler",
    "Sessions",
    "Policy",
    "make_smtp_factory",
    "is_trusted",
    "valid_helo_name",
    "with_enhanced_code",
]
