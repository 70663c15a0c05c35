"""SMTP submission: an aiosmtpd handler that relays only for trusted clients.

Authorization is decided at RCPT (as Postfix does with ``permit_mynetworks,
reject_unauth_destination``): a client outside ``trusted_networks`` gets
``554 5.7.1 Relay access denied``. The ``250`` to DATA is sent only once the
message is committed to disk; a client that disconnects mid-DATA leaves nothing.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Callable, Sequence

from aiosmtpd.smtp import SMTP, Envelope, Session

from relay.clock import Clock
from relay.config import Config, Network
from relay.message import (
    NewMessage,
    header_value,
    missing_standard_headers,
    new_message_id,
    prepend_headers,
    received_header,
    split_address,
)
from relay.submission.accept import Acceptor, MessageTooLarge
from relay.submission.capacity import Overloaded

log = logging.getLogger(__name__)


def is_trusted(peer_ip: str, networks: Sequence[Network]) -> bool:
    try:
        address = ipaddress.ip_address(peer_ip.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return any(address in net for net in networks)


class SubmissionHandler:
    def __init__(self, acceptor: Acceptor, config: Config, clock: Clock) -> None:
        self.acceptor = acceptor
        self.hostname = config.server.hostname
        self.trusted = config.smtp.trusted_networks
        self.max_recipients = config.smtp.max_recipients
        self.clock = clock

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if not is_trusted(_peer_ip(session), self.trusted):
            log.warning("relay denied: client %s, recipient <%s>", _peer_ip(session), address)
            return f"554 5.7.1 <{address}>: Relay access denied"
        if split_address(address) is None:
            return "501 5.1.3 Bad recipient address syntax"
        if len(envelope.rcpt_tos) >= self.max_recipients:
            return "452 4.5.3 Too many recipients"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        now = self.clock.now()
        queue_id = new_message_id(now)
        recipients = tuple(envelope.rcpt_tos)
        trace = received_header(
            helo=session.host_name or "",
            peer_ip=_peer_ip(session),
            hostname=self.hostname,
            protocol="ESMTP" if session.extended_smtp else "SMTP",
            queue_id=queue_id,
            recipient=recipients[0] if len(recipients) == 1 else None,
            now=now,
        )
        raw = prepend_headers(raw, [trace, *missing_standard_headers(raw, self.hostname, now)])
        subject = header_value(raw, "Subject") or ""
        message = NewMessage(envelope.mail_from or "", recipients, raw, "smtp", queue_id, subject=subject)
        try:
            await self.acceptor.submit(message)
        except MessageTooLarge:
            return "552 5.3.4 Message too big"
        except Overloaded as exc:
            log.warning("refused a message from %s: %s", _peer_ip(session), exc)
            return "452 4.3.1 Insufficient system storage, try again later"
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("could not queue a message from %s", _peer_ip(session))
            return "451 4.3.0 Temporary failure, please try again later"
        log.info("queued %s from=<%s> rcpts=%d size=%d via smtp", queue_id, message.sender, len(recipients), len(raw))
        return f"250 2.0.0 Ok: queued as {queue_id}"


def _peer_ip(session: Session) -> str:
    peer = session.peer
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return "unknown"


class Sessions:
    """The open SMTP connections, so that a stop can let transactions in progress finish."""

    def __init__(self) -> None:
        self.open: set[SMTP] = set()

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


class _SubmissionSMTP(SMTP):
    sessions: Sessions

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.sessions.open.add(self)

    def connection_lost(self, error: Exception | None) -> None:
        self.sessions.open.discard(self)
        super().connection_lost(error)


def make_smtp_factory(handler: SubmissionHandler, config: Config, sessions: Sessions) -> Callable[[], SMTP]:
    """A protocol factory for ``loop.create_server``."""

    def factory() -> SMTP:
        smtp = _SubmissionSMTP(
            handler,
            hostname=config.server.hostname,
            ident="relay",
            data_size_limit=config.smtp.max_message_size,
            enable_SMTPUTF8=True,
            decode_data=False,
        )
        smtp.sessions = sessions
        return smtp

    return factory
