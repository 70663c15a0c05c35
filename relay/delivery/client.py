"""Outbound SMTP connections: open one to the first host that takes it, send many messages over it.

``SmtpClient.connect`` walks the route's hosts in order while the failure is
about the host (no connection, a 4xx/5xx greeting, TLS that policy requires
but cannot get). The TLS policy: ``opportunistic`` uses STARTTLS when
offered and falls back to plain text, on a fresh connection, only if the
handshake fails; ``required`` insists on TLS without checking the
certificate; ``verify`` also checks the certificate against the MX host name.

A ``Connection`` sends one transaction per message (RSET only after one that
ended before its data was answered); once recipients are given to a server
its replies are final for the attempt. When the server offers PIPELINING
(RFC 2920) MAIL, the RCPTs and DATA go in one write (relay/delivery/pipelining.py),
and the next message's MAIL, RCPTs and DATA may follow a body in its write when the
caller already knows what it sends next (``send(..., following=...)``); either way
one piece of code turns the replies into outcomes.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, TypeVar

import aiosmtplib

from relay.bounces.classify import Phase
from relay.bounces.verp import is_null_sender
from relay.clock import Clock, SystemClock
from relay.delivery.mx import Host
from relay.delivery.outcome import Reply
from relay.delivery.pipelining import DataRefused, Pipeline, ReplyReader
from relay.errors import RelayError
from relay.message import PLAIN_ADDRESS, ascii_domain_form, dot_stuff, utf8_header

log = logging.getLogger(__name__)

T = TypeVar("T")


def _reply(exc: aiosmtplib.SMTPResponseException, phase: Phase) -> Reply:
    return Reply(exc.code, " ".join(exc.message.split()), phase)


def _failure(host: Host, exc: BaseException, phase: Phase) -> Reply:
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return _reply(exc, Phase.HELO if isinstance(exc, aiosmtplib.SMTPHeloError) else phase)
    detail = str(exc) or type(exc).__name__
    where = f"{host.address}:{host.port}" if host.name == host.address else f"{host.name} [{host.address}]:{host.port}"
    return Reply(None, f"{where}: {type(exc).__name__}: {detail}", phase)


def wire_form(raw: bytes) -> bytes:
    """The message as DATA carries it (RFC 5321 §4.5.2): a dot doubled at the start of a line, a
    CRLF after the last line if it had none, then the end-of-data line.

    ``raw`` is a queued message, whose every line end is a CRLF already: acceptance makes it so
    (SMTP: :meth:`relay.submission.data.DataCollector.body`; HTTP: the composer writes CRLF) and
    schema version 19 (PostgreSQL: 9) made the bodies of older stores so. It is not scanned again here: that
    check was 150-300 us of the delivering process's CPU for a 100 KB message (8% more 100 KB
    messages a second without it, bench/throughput.py). aiosmtplib's ``data()`` would run two
    regular expressions over the whole message on every send."""
    if not raw.endswith(b"\r\n"):
        raw += b"\r\n"
    return dot_stuff(raw) + b".\r\n"


async def send_data(smtp: aiosmtplib.SMTP, wire: bytes) -> aiosmtplib.SMTPResponse:
    """DATA with a body already in :func:`wire_form`; aiosmtplib's ``data()`` without its re-encoding."""
    start = await smtp.execute_command(b"DATA")
    if start.code != 354:
        raise aiosmtplib.SMTPDataError(start.code, start.message)
    if smtp.protocol is None:
        raise aiosmtplib.SMTPServerDisconnected("Connection lost")
    try:
        smtp.protocol.write(wire)
        resp = await smtp.protocol.read_response(timeout=smtp.timeout)
    except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError):
        smtp.close()  # as aiosmtplib does: the session is out of step
        raise
    if resp.code != 250:
        raise DataRefused(resp.code, resp.message)
    return resp


_PLAIN_ADDRESS = re.compile(rf"(?:{PLAIN_ADDRESS})?")


def path_of(address: str) -> bytes | None:
    """``<address>`` for MAIL/RCPT when the address is a plain dot-atom one (or empty: the null
    sender), which is what aiosmtplib's quote_address would make of it after parsing it with the
    email package (~3% of relay's CPU); None for anything else, which goes through aiosmtplib."""
    return b"<" + address.encode("ascii") + b">" if _PLAIN_ADDRESS.fullmatch(address) else None


async def send_mail(smtp: aiosmtplib.SMTP, sender: str, options: list[str], encoding: str) -> aiosmtplib.SMTPResponse:
    """MAIL FROM; the null sender (stored as "" or "<>") as ``MAIL FROM:<>``, which aiosmtplib cannot write."""
    path = b"<>" if is_null_sender(sender) else path_of(sender)
    if path is None:
        return await smtp.mail(sender, options=options, encoding=encoding)
    resp = await smtp.execute_command(b"MAIL", b"FROM:" + path, *(o.encode("ascii") for o in options))
    if resp.code != 250:
        raise aiosmtplib.SMTPSenderRefused(resp.code, resp.message, sender)
    return resp


async def send_rcpt(smtp: aiosmtplib.SMTP, recipient: str, encoding: str) -> aiosmtplib.SMTPResponse:
    path = path_of(recipient)
    if path is None:
        return await smtp.rcpt(recipient, encoding=encoding)
    resp = await smtp.execute_command(b"RCPT", b"TO:" + path)
    if resp.code not in (250, 251):
        raise aiosmtplib.SMTPRecipientRefused(resp.code, resp.message, recipient)
    return resp


Envelope = tuple[str, Sequence[str], bytes]  # a message's sender, recipients and body, as send() takes them
Following = Callable[[], Envelope | None]  # what a connection sends next, taken at the end of this message


class Steps(Protocol):
    """The commands of one transaction, each returning its reply or raising what aiosmtplib raises."""

    async def mail(self) -> aiosmtplib.SMTPResponse: ...
    async def rcpt(self, recipient: str) -> aiosmtplib.SMTPResponse: ...
    async def data(self, wire: bytes, then: Callable[[], Pipeline | None] | None = None) -> aiosmtplib.SMTPResponse: ...
    async def finish(self) -> None: ...


class OneByOne:
    """Each command waits for its reply: for a server that did not offer PIPELINING."""

    def __init__(self, smtp: aiosmtplib.SMTP, sender: str, options: list[str], encoding: str) -> None:
        self.smtp = smtp
        self.sender = sender
        self.options = options
        self.encoding = encoding

    async def mail(self) -> aiosmtplib.SMTPResponse:
        return await send_mail(self.smtp, self.sender, self.options, self.encoding)

    async def rcpt(self, recipient: str) -> aiosmtplib.SMTPResponse:
        return await send_rcpt(self.smtp, recipient, self.encoding)

    async def data(self, wire: bytes, then: Callable[[], Pipeline | None] | None = None) -> aiosmtplib.SMTPResponse:
        return await send_data(self.smtp, wire)  # one command at a time: nothing follows a body

    async def finish(self) -> None:
        pass


class StaleConnection(RelayError):
    """A kept-open connection was found closed (or closing: 421) at the first command of the next
    message: the server dropped it while it was idle. The message can go on a new connection now."""


class Connection:
    """One open SMTP session to one host."""

    def __init__(self, smtp: aiosmtplib.SMTP, host: Host, tls: str | None, clock: Clock | None = None) -> None:
        self.smtp = smtp
        self.host = host
        self.tls = tls  # TLS version, or None for plain text
        self.pipelining = True  # False: one command at a time even if the server offers PIPELINING
        self.clock = clock or SystemClock()
        self.opened_at = self.clock.monotonic()
        self.messages = 0
        self.broken = False
        self._in_transaction = False  # MAIL was sent and no reply to the end of the data came back
        self._reader: ReplyReader | None = None  # installed at the first pipelined transaction
        self._ahead: tuple[str, Sequence[str], Pipeline] | None = None  # the next message's group, sent

    @property
    def age(self) -> float:
        return self.clock.monotonic() - self.opened_at

    async def send(
        self,
        sender: str,
        recipients: Sequence[str],
        raw: bytes,
        max_rcpt: int = 100,
        following: Following | None = None,
    ) -> dict[str, Reply]:
        """One transaction per ``max_rcpt`` recipients; a reply for every recipient. Raises
        StaleConnection if a reused connection turns out to be closed before the first one starts.

        ``following``, called when the last body is about to be written, may give the next message:
        one that :meth:`can_follow`, which this connection's next ``send`` must then be for. Its MAIL,
        RCPTs and DATA go out with the body (when the body goes out at all)."""
        replies: dict[str, Reply] = {}
        for start in range(0, len(recipients), max_rcpt):
            last = start + max_rcpt >= len(recipients)
            chunk = recipients[start : start + max_rcpt]
            replies.update(await self._transaction(sender, chunk, raw, start == 0, following if last else None))
            if self.broken:
                lost = Reply(None, f"connection to {self.host.name} lost")
                replies.update({r: lost for r in recipients if r not in replies})
                break
        return replies

    def can_follow(self, sender: str, recipients: Sequence[str], raw: bytes, max_rcpt: int) -> bool:
        """Whether a message could go out as the group that follows a body: one transaction, pipelined,
        with addresses written as they are (no SMTPUTF8 refusals to work out first)."""
        if self.broken or self._reader is None or not 0 < len(recipients) <= max_rcpt:
            return False  # (a reader: this connection pipelines)
        if not (sender.isascii() and all(r.isascii() for r in recipients)):
            return False
        plain_sender = is_null_sender(sender) or path_of(sender) is not None
        return plain_sender and all(path_of(r) is not None for r in recipients)

    async def _transaction(
        self, sender: str, recipients: Sequence[str], raw: bytes, first: bool, following: Following | None = None
    ) -> dict[str, Reply]:
        # The first command for a message on a kept connection is where a dropped session shows.
        probe = first and self.messages > 0
        ahead, self._ahead = self._ahead, None
        if ahead is not None and (ahead[0] != sender or list(ahead[1]) != list(recipients)):
            raise RuntimeError("a connection was given another message than the one it sent ahead")
        try:
            if ahead is None and self._in_transaction:  # the last one ended early: RSET (RFC 5321 §4.1.1.5)
                await self._first_command(self.smtp.rset(), probe, any_reply=True)
                probe = False
            return await self._mail_rcpt_data(sender, recipients, raw, probe, ahead[2] if ahead else None, following)
        except (TimeoutError, aiosmtplib.SMTPException, OSError) as exc:
            # A failed RSET or a lost connection: this session is done (replies are handled inside).
            self.broken = True
            reply = _failure(self.host, exc, Phase.MAIL)  # the RSET or MAIL that starts the transaction
            return {r: reply for r in recipients}
        finally:
            self.messages += 1

    async def _first_command(self, command: Awaitable[T], probe: bool, any_reply: bool = False) -> T:
        """Await ``command``; when ``probe``, a lost session (or a 421, or any refusal when
        ``any_reply``) raises StaleConnection: nothing of the message has been sent yet."""
        try:
            return await command
        except (TimeoutError, aiosmtplib.SMTPException, OSError) as exc:
            if not probe or (isinstance(exc, aiosmtplib.SMTPResponseException) and not any_reply and exc.code != 421):
                raise
            self.broken = True
            raise StaleConnection(f"{type(exc).__name__}: {exc}") from exc

    async def _mail_rcpt_data(
        self,
        sender: str,
        recipients: Sequence[str],
        raw: bytes,
        probe: bool,
        sent: Pipeline | None = None,
        following: Following | None = None,
    ) -> dict[str, Reply]:
        smtp = self.smtp
        if sent is not None:  # its group followed the last body (can_follow: nothing more to work out)
            replies = await self._exchange(sent, recipients, raw, probe, following)
            await sent.finish()
            return replies
        wire: Sequence[str] = recipients
        on_wire: dict[str, str] | None = None
        refused: dict[str, Reply] = {}
        if not (sender.isascii() and all(r.isascii() for r in recipients)):
            # An internationalised domain goes in A-labels: only a local part beyond ASCII needs SMTPUTF8.
            sender = ascii_domain_form(sender)
            on_wire = {r: ascii_domain_form(r) for r in recipients}
            if not smtp.supports_extension("smtputf8"):  # refuse what needs it, send the rest
                no = Reply(553, "5.6.7 the receiving server does not support SMTPUTF8 addresses", Phase.MAIL)
                refused = {r: no for r, w in on_wire.items() if not (w.isascii() and sender.isascii())}
                if len(refused) == len(recipients):
                    return refused
            wire = list(dict.fromkeys(w for r, w in on_wire.items() if r not in refused))  # two forms: one RCPT
        utf8 = on_wire is not None and (not sender.isascii() or not all(r.isascii() for r in wire))
        options = self._options(raw, utf8)
        encoding = "utf-8" if utf8 else "ascii"
        steps: Steps = self._pipeline(sender, wire, options) or OneByOne(smtp, sender, options, encoding)
        replies = await self._exchange(steps, wire, raw, probe, following)
        await steps.finish()
        if on_wire is None:
            return replies
        return {r: refused[r] if r in refused else replies[on_wire[r]] for r in recipients}

    def _options(self, raw: bytes, utf8: bool) -> list[str]:
        """MAIL's parameters for this body (and addresses that need SMTPUTF8 when ``utf8``)."""
        smtp = self.smtp
        options = []
        eight_bit = not raw.isascii()
        if utf8 or (eight_bit and utf8_header(raw) and smtp.supports_extension("smtputf8")):
            options.append("SMTPUTF8")  # also for UTF-8 in the header alone (RFC 6531 §3.4)
        if eight_bit and smtp.supports_extension("8bitmime"):
            options.append("BODY=8BITMIME")
        return options

    def _then(self, following: Following) -> Callable[[], Pipeline | None]:
        """For Pipeline.data: the next message's transaction, if ``following`` gives one, remembered as
        sent ahead (the next :meth:`send` reads its replies)."""

        def then() -> Pipeline | None:
            envelope = following()
            if envelope is None:
                return None
            sender, recipients, raw = envelope
            pipeline = self._pipeline(sender, recipients, self._options(raw, False))
            if pipeline is None:  # can_follow said it could: the caller did not ask
                raise RuntimeError("the following message cannot be pipelined")
            self._ahead = (sender, recipients, pipeline)
            return pipeline

        return then

    def _pipeline(self, sender: str, recipients: Sequence[str], options: list[str]) -> Pipeline | None:
        """The transaction as one group (RFC 2920) when the server offers PIPELINING and every
        address can be written here; None for one command at a time."""
        smtp = self.smtp
        protocol = smtp.protocol
        if not self.pipelining or protocol is None or protocol.transport is None:
            return None
        if not smtp.supports_extension("pipelining"):
            return None
        mail = b"<>" if is_null_sender(sender) else path_of(sender)
        rcpts = [path_of(r) for r in recipients]
        if mail is None or None in rcpts:
            return None
        if self._reader is None:
            self._reader = ReplyReader.install(protocol, protocol.transport)
        tail = b"".join(b" " + o.encode("ascii") for o in options)
        commands = [b"RCPT TO:" + p + b"\r\n" for p in rcpts if p is not None]
        return Pipeline(smtp, self._reader, sender, b"MAIL FROM:" + mail + tail + b"\r\n", commands)

    async def _exchange(
        self, steps: Steps, recipients: Sequence[str], raw: bytes, probe: bool, following: Following | None = None
    ) -> dict[str, Reply]:
        """MAIL, the RCPTs and DATA, and what each recipient's outcome is, whichever way they are sent."""
        self._in_transaction = True
        try:
            await self._first_command(steps.mail(), probe)
        except aiosmtplib.SMTPResponseException as exc:
            self._note_421(exc)
            return {r: _reply(exc, Phase.MAIL) for r in recipients}
        replies: dict[str, Reply] = {}
        accepted: list[str] = []
        for rcpt in recipients:
            try:
                resp = await steps.rcpt(rcpt)
                accepted.append(rcpt)
                replies[rcpt] = Reply(resp.code, " ".join(resp.message.split()), Phase.RCPT)
            except aiosmtplib.SMTPResponseException as exc:
                self._note_421(exc)
                replies[rcpt] = _reply(exc, Phase.RCPT)
        if not accepted:
            return replies
        try:
            resp = await steps.data(wire_form(raw), self._then(following) if following is not None else None)
            final = Reply(resp.code, " ".join(resp.message.split()), Phase.AFTER_DATA)
            self._in_transaction = False  # the end of the data ends the transaction: no RSET needed
        except aiosmtplib.SMTPResponseException as exc:
            self._note_421(exc)
            # After the data (or at DATA) the recipients had been accepted: a refusal is not about them.
            final = _reply(exc, Phase.AFTER_DATA if isinstance(exc, DataRefused) else Phase.DATA)
            self._in_transaction = not isinstance(exc, DataRefused)
        except (TimeoutError, aiosmtplib.SMTPException, OSError) as exc:
            # The message may or may not have arrived; retrying risks a duplicate, never a loss.
            self.broken = True
            final = Reply(None, f"connection lost during DATA: {type(exc).__name__}: {exc}", Phase.AFTER_DATA)
        for rcpt in accepted:
            replies[rcpt] = final
        return replies

    def _note_421(self, exc: aiosmtplib.SMTPResponseException) -> None:
        if exc.code == 421:  # the server is closing the session (RFC 5321 §3.8)
            self.broken = True

    async def close(self) -> None:
        smtp = self.smtp
        if not smtp.is_connected:
            return
        if self.broken:
            smtp.close()
            return
        try:
            await asyncio.wait_for(smtp.quit(), timeout=5)
        except Exception:
            smtp.close()


class SmtpClient:
    def __init__(
        self, ehlo_name: str, connect_timeout: float, command_timeout: float, clock: Clock | None = None
    ) -> None:
        self.clock = clock or SystemClock()  # the age of a connection (max_connection_age)
        self.ehlo_name = ehlo_name
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout

    async def connect(
        self,
        hosts: Sequence[Host],
        tls_mode: str = "opportunistic",
        auth: tuple[str, str] | None = None,
        pipelining: bool = True,
    ) -> Connection | Reply:
        """An open (and, with ``auth``, authenticated) connection to the first host that takes one;
        ``pipelining=False``: it sends one command at a time whatever the server offers."""
        last = Reply(None, "no host to deliver to")
        for host in hosts:
            result = await self._open(host, tls_mode)
            if isinstance(result, Connection) and auth is not None:
                result = await self._login(result, auth)
            if isinstance(result, Connection):
                result.pipelining = pipelining
                return result
            last = result
            log.info("host %s [%s]:%d failed: %s", host.name, host.address, host.port, last)
        return last

    async def deliver(
        self, hosts: Sequence[Host], sender: str, recipients: Sequence[str], raw: bytes, tls_mode: str = "opportunistic"
    ) -> dict[str, Reply]:
        """One message, one connection (opened and closed here)."""
        conn = await self.connect(hosts, tls_mode)
        if isinstance(conn, Reply):
            return {r: conn for r in recipients}
        try:
            return await conn.send(sender, recipients, raw)
        finally:
            await conn.close()

    async def _login(self, conn: Connection, auth: tuple[str, str]) -> Connection | Reply:
        try:
            await conn.smtp.login(*auth)
        except (TimeoutError, aiosmtplib.SMTPException, OSError) as exc:
            conn.broken = True
            await conn.close()
            # A refused login is a configuration problem here: defer rather than bounce everyone.
            failure = _failure(conn.host, exc, Phase.HELO)
            return Reply(451, f"4.7.0 AUTH at {conn.host.name} failed: {failure}", Phase.HELO)
        return conn

    async def _open(self, host: Host, tls_mode: str, *, plain: bool = False) -> Connection | Reply:
        smtp = aiosmtplib.SMTP(
            hostname=host.address,
            port=host.port,
            local_hostname=self.ehlo_name,
            timeout=self.command_timeout,
            start_tls=False,
        )
        try:
            await smtp.connect(timeout=self.connect_timeout)
            await smtp.ehlo()
            if plain or not smtp.supports_extension("starttls"):
                if tls_mode != "opportunistic":
                    smtp.close()
                    return Reply(451, f"4.7.4 {host.name} does not offer STARTTLS, and TLS is {tls_mode}", Phase.HELO)
                return Connection(smtp, host, None, self.clock)
        except asyncio.CancelledError:
            smtp.close()
            raise
        except (TimeoutError, aiosmtplib.SMTPException, OSError) as exc:
            smtp.close()
            return _failure(host, exc, Phase.CONNECT)
        return await self._starttls(smtp, host, tls_mode)

    async def _starttls(self, smtp: aiosmtplib.SMTP, host: Host, tls_mode: str) -> Connection | Reply:
        verify = tls_mode == "verify"
        try:
            await smtp.starttls(server_hostname=host.name, validate_certs=verify)
            await smtp.ehlo()
        except asyncio.CancelledError:
            smtp.close()
            raise
        except (TimeoutError, aiosmtplib.SMTPException, OSError, ssl.SSLError) as exc:
            smtp.close()
            if tls_mode == "opportunistic":
                log.info("TLS with %s failed (%s); trying again without TLS", host.name, exc)
                return await self._open(host, tls_mode, plain=True)
            return Reply(451, f"4.7.5 TLS with {host.name} failed and TLS is {tls_mode}: {exc}", Phase.HELO)
        ssl_object = smtp.transport.get_extra_info("ssl_object") if smtp.transport else None
        version = ssl_object.version() if ssl_object is not None else "TLS"
        return Connection(smtp, host, version, self.clock)
