"""Taking returned mail in: the inbound SMTP listener for bounce domains and complaint addresses.

Only two kinds of address are accepted: any address at a bounce domain (the
VERP return paths outgoing mail carries) and the configured feedback
addresses; everything else gets 550, so this listener is neither a relay nor
a mailbox server. Each message is parsed and what it reports is recorded
before the 250 (bounce, suppression, event); a failure to record answers 451
so the sender tries again.

Which recipient a report is about: an authentic return path (VERP) says it
outright. A return path on a bounce domain that fails authentication is a
forgery or damage, and the report is ignored, so nobody can suppress an
address by mailing us a made-up bounce. Without a return path, the report's
original Message-ID must name one of our messages and the failed address must
be one of its recipients.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import ssl
from collections.abc import Callable, Sequence
from typing import Any, cast

from aiosmtpd.smtp import SMTP, Envelope, Session

from relay.admission import ConnectionCounts, Refusal
from relay.bounces.classify import Classification, Kind
from relay.bounces.parse import Parsed, Report, parse, reply_code
from relay.bounces.verp import PREFIX, ReturnPath, Verp
from relay.errors import RelayError
from relay.message import normalize_address
from relay.store.protocols import Storage
from relay.store.queue import ReturnedTarget
from relay.store.suppressions import NewBounce, Suppression
from relay.submission.data import ChunkedData

log = logging.getLogger(__name__)

MAX_RECIPIENTS = 50
PARSE_THREADS = 1  # returned messages read at once (parsing is linear: ~0.5 s per MB at worst)
PARSE_QUEUE = 8  # waiting beyond that; more get 451 4.3.2 and come back later


class Busy(RelayError):
    """The parser's queue is full."""


@dataclasses.dataclass(frozen=True)
class Recorded:
    """One report recorded against one of our recipients."""

    target: ReturnedTarget
    report: Report
    bounce_id: int
    suppression: Suppression | None


class ReturnedMail:
    """What the listener does with a message, apart from SMTP: parse, match, record."""

    def __init__(self, store: Storage, verp: Verp | None, feedback_addresses: Sequence[str]) -> None:
        self.store = store
        self.verp = verp
        self.feedback = {normalize_address(a) for a in feedback_addresses}
        # Anyone may send to this listener: its parsing runs on a thread of its own, with a short
        # queue, so it never waits in (or fills) the pool that DKIM signing and AUTH checks use.
        self._parser = concurrent.futures.ThreadPoolExecutor(PARSE_THREADS, thread_name_prefix="bounce-parse")
        self._parsing = asyncio.Semaphore(PARSE_THREADS + PARSE_QUEUE)

    def close(self) -> None:
        self._parser.shutdown(wait=False, cancel_futures=True)

    def accepts(self, address: str) -> bool:
        if normalize_address(address) in self.feedback:
            return True
        return self.verp is not None and self.verp.is_bounce_address(address)

    async def receive(self, raw: bytes, rcpt_tos: Sequence[str]) -> list[Recorded]:
        if self._parsing.locked():
            raise Busy("too many returned messages are being read")
        async with self._parsing:
            parsed = await asyncio.get_running_loop().run_in_executor(self._parser, parse, raw)
        if not parsed.reports:
            log.info("returned mail to %s: nothing to record (%s)", ", ".join(rcpt_tos), parsed.kind)
            return []
        return_path, forged = self._return_path([*rcpt_tos, *([parsed.return_path] if parsed.return_path else [])])
        if return_path is None and forged:
            log.warning(
                "ignored returned mail to %s: return path %s fails authentication (forged or damaged)",
                ", ".join(rcpt_tos),
                forged,
            )
            return []
        if return_path is not None:
            return await self._by_return_path(parsed, return_path, raw)
        return await self._by_message_id(parsed, raw, rcpt_tos)

    def _return_path(self, addresses: Sequence[str]) -> tuple[ReturnPath | None, str | None]:
        """The first authentic return path, or the first that claims to be one and is not."""
        forged = None
        for address in addresses:
            local = address.strip("<>").rpartition("@")[0].lower()
            if self.verp is None or not self.verp.is_bounce_address(address) or not local.startswith(PREFIX):
                continue
            verified = self.verp.verify(address)
            if verified is not None:
                return verified, None
            forged = forged or address
        return None, forged

    async def _by_return_path(self, parsed: Parsed, return_path: ReturnPath, raw: bytes) -> list[Recorded]:
        target = await self.store.queue.returned_target(return_path.message_id, return_path.recipient_id)
        if target is None:
            log.warning(
                "ignored returned mail for message %s recipient %d: no longer known",
                return_path.message_id,
                return_path.recipient_id,
            )
            return []
        wanted = normalize_address(target.address)
        # One recipient per return path: the report about it, or (forwarded mail) the first one.
        report = next(
            (r for r in parsed.reports if r.recipient and normalize_address(r.recipient) == wanted), parsed.reports[0]
        )
        return [await self._record(report, target, raw)]

    async def _by_message_id(self, parsed: Parsed, raw: bytes, rcpt_tos: Sequence[str]) -> list[Recorded]:
        if parsed.original_message_id is None:
            log.info("ignored returned mail to %s: no return path and no Message-ID of ours", ", ".join(rcpt_tos))
            return []
        targets = await self.store.queue.targets_by_header_id(parsed.original_message_id)
        if not targets:
            log.info("ignored returned mail about Message-ID <%s>: not a message of ours", parsed.original_message_id)
            return []
        by_address = {normalize_address(t.address): t for t in targets}
        recorded = []
        for report in parsed.reports:
            if report.recipient is not None:
                target = by_address.get(normalize_address(report.recipient))
            else:  # a redacted complaint: only a message with one recipient says whose it is
                target = targets[0] if len(targets) == 1 else None
            if target is None:
                log.info(
                    "ignored report about %s: not a recipient of message <%s>",
                    report.recipient,
                    parsed.original_message_id,
                )
                continue
            recorded.append(await self._record(report, target, raw))
        return recorded

    async def _record(self, report: Report, target: ReturnedTarget, raw: bytes) -> Recorded:
        complaint = report.classification is Kind.COMPLAINT
        bounce = NewBounce(
            recipient=target.address,
            classification=Classification(report.classification, report.reason, report.status),
            source="arf" if complaint else "dsn",
            code=reply_code(report.diagnostic),
            diagnostic=report.diagnostic,
            remote_mta=report.remote_mta,
            message_id=target.message_id,
            report=raw.decode("utf-8", "replace"),
        )
        bounce_id, suppression = await self.store.queue.record_returned(bounce, target)
        log.info(
            "%s %s to=<%s> %s/%s%s",
            target.message_id,
            "complaint" if complaint else "returned",
            target.address,
            report.classification.value,
            report.reason,
            f" suppressed ({suppression.reason})" if suppression else "",
        )
        return Recorded(target, report, bounce_id, suppression)


class InboundHandler:
    """aiosmtpd handler: RCPT only for returned-mail addresses; DATA parsed and recorded before 250."""

    def __init__(self, returned: ReturnedMail) -> None:
        self.returned = returned

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if not self.returned.accepts(address):
            return f"550 5.7.1 <{address}>: this server takes returned mail for its bounce domains only"
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return "452 4.5.3 too many recipients"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        try:
            recorded = await self.returned.receive(raw, envelope.rcpt_tos)
        except Busy:
            log.warning("returned mail to %s deferred: the parser is busy", ", ".join(envelope.rcpt_tos))
            return "451 4.3.2 too many reports being read now; try again later"
        except Exception:
            log.exception("could not record returned mail to %s", ", ".join(envelope.rcpt_tos))
            return "451 4.3.0 could not record this report now; try again later"
        return f"250 2.0.0 OK, {len(recorded)} report(s) recorded"


TOO_MANY_CONNECTIONS = b"421 4.7.0 too many connections from your address; try again later\r\n"
TOO_BUSY = b"421 4.7.0 too many connections; try again later\r\n"


class InboundSession(ChunkedData):
    """One session on the inbound port, which anyone may reach: the listener's ``counts`` cap them per
    client address (as Postfix's anvil, 50 by default) and in all (relay.admission); beyond either a client
    is told 421 and closed before a greeting, without a session's cost."""

    def __init__(self, *args: Any, counts: ConnectionCounts, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._counts = counts
        self._counted: str | None = None  # the address this session is counted under
        self._refused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.transport is None and not self._refused and self._counted is None:  # not the STARTTLS switch
            peer = transport.get_extra_info("peername")
            ip = str(peer[0]) if isinstance(peer, tuple) and peer else ""
            refusal = self._counts.admit(ip)
            if refusal is not None:
                log.warning("refused an inbound connection from %s: %s", ip, refusal.value)
                self._refused = True
                reply = TOO_MANY_CONNECTIONS if refusal is Refusal.ADDRESS else TOO_BUSY
                cast(asyncio.WriteTransport, transport).write(reply)  # uvloop's is no subclass
                transport.close()
                return
            self._counted = ip
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if self._refused:
            return
        if self._counted is not None:
            self._counts.release(self._counted)
            self._counted = None
        super().connection_lost(error)

    def data_received(self, data: bytes) -> None:
        if not self._refused:
            super().data_received(data)

    def eof_received(self) -> bool | None:
        return False if self._refused else super().eof_received()


def make_inbound_factory(
    returned: ReturnedMail,
    hostname: str,
    max_size: int,
    idle_timeout: float,
    tls_context: ssl.SSLContext | None,
    max_connections_per_ip: int = 50,
    max_connections: int = 1000,
) -> Callable[[], SMTP]:
    handler = InboundHandler(returned)
    counts = ConnectionCounts(max_connections_per_ip, max_connections)

    def factory() -> SMTP:
        return InboundSession(
            handler,
            counts=counts,
            hostname=hostname,
            ident="relay",
            data_size_limit=max_size,
            enable_SMTPUTF8=True,
            decode_data=False,
            tls_context=tls_context,
            require_starttls=False,
            timeout=idle_timeout,
        )

    return factory
