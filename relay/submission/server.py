"""Relay's SMTP submission server (RFC 5321, 6409): an ``asyncio.Protocol`` that parses each command
line as it arrives and writes its reply at once.

Most commands need nothing but the bytes in hand, so they are answered there and then in
``data_received``: no stream reader, no task per connection, no future per command. A client that
pipelines (RFC 2920) gets the replies to everything it sent in one write. Four steps really wait —
AUTH's password check, MAIL's per-credential rate limit, RCPT's suppression lookup, DATA's queueing
(and the budget wait of a declared SIZE, and the STARTTLS handshake) — and each runs as one task;
input that comes meanwhile is kept (reading pauses past ``PAUSE_AT``) and taken in order after it.

The body after ``354`` goes straight to a :class:`~relay.submission.data.DataCollector`: only
``<CRLF>.<CRLF>`` ends it, and what follows it in the same read is the next command. The handler
(``relay.submission.smtp.SubmissionHandler``) holds relay's rules; this module holds the protocol.
Replies are byte for byte those relay gave on aiosmtpd (``relay.submission.commands``).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable, Coroutine, Generator
from typing import TYPE_CHECKING, Any

from relay.admission import Refusal
from relay.submission import sasl
from relay.submission.auth import Throttled
from relay.submission.budget import SMTP_WEIGHT, Held
from relay.submission.commands import (
    AUTH_AGAIN,
    AUTH_EXTRA,
    AUTH_INVALID,
    AUTH_LINE_TOO_LONG,
    AUTH_NEEDS_TLS,
    AUTH_NOT_EXTENDED,
    AUTH_OK,
    AUTH_THROTTLED,
    BAD_HELO,
    BAD_SYNTAX,
    BOGUS_LIMIT,
    BYE,
    COMMAND_LIMIT,
    COMMAND_LINE_LIMIT,
    DATA_LINE_TOO_LONG,
    EXPN_NO,
    LINE_LIMIT,
    MAIL_EXTRA,
    MALFORMED,
    MECHANISMS,
    NEED_MAIL,
    NEED_RCPT,
    NESTED_MAIL,
    NO_TLS,
    OK,
    PLAIN_SYNTAX,
    RCPT_PARAMS,
    SEND_EHLO,
    SEND_HELO,
    START_DATA,
    START_TLS,
    SYNTAX_ERRORS,
    TEMPORARY,
    TLS_ACTIVE,
    TOO_BUSY,
    TOO_LONG,
    TOO_MANY_BOGUS,
    TOO_MANY_CONNECTIONS,
    TOO_MUCH_DATA,
    VRFY_CANNOT,
    getaddr,
    getparams,
    help_reply,
    is_trusted,
    mail_params_fault,
    split_command,
    strip_keyword,
    unknown_command,
    valid_helo_name,
    with_enhanced_code,
)
from relay.submission.data import (
    TRY_LATER,
    BodyTooLarge,
    DataCollector,
    LineTooLong,
    OverBudget,
    declared_size,
)
from relay.submission.session import Envelope, Session

if TYPE_CHECKING:
    from relay.submission.smtp import Sessions, SubmissionHandler

log = logging.getLogger(__name__)

PAUSE_AT = 64 * 1024  # input kept while a step waits, past which reading pauses
TRY_LATER_REPLY = TRY_LATER.encode() + b"\r\n"

Step = Coroutine[Any, Any, bytes | None]  # a waiting step: its reply, or None (it wrote its own or none)


def reply_bytes(reply: str) -> bytes:
    """A handler's reply, ready to write (with an enhanced code if it had none)."""
    return with_enhanced_code(reply).encode() + b"\r\n"


class ConnectionFactory:
    """What every connection of one listener shares: made once, and called (by ``loop.create_server``) to
    make the protocol object of each new connection."""

    def __init__(
        self,
        handler: SubmissionHandler,
        sessions: Sessions,
        *,
        max_size: int,
        idle_timeout: float,
        tls_context: ssl.SSLContext | None,
        implicit_tls: bool = False,
    ) -> None:
        self.handler = handler
        self.sessions = sessions
        self.policy = handler.policy
        self.max_size = max_size
        self.idle_timeout = idle_timeout
        self.tls_context = None if implicit_tls else tls_context  # offered as STARTTLS
        self.implicit_tls = implicit_tls
        self.budget = handler.acceptor.budget
        self.greeting = f"220 {self.policy.hostname} relay\r\n".encode()
        self.helo = f"250 {self.policy.hostname}\r\n".encode()
        self.ehlo = {(tls, auth): self._ehlo(tls, auth) for tls in (False, True) for auth in (False, True)}

    def _ehlo(self, starttls: bool, auth: bool) -> bytes:
        lines = [f"250-{self.policy.hostname}"]
        if self.max_size:
            lines.append(f"250-SIZE {self.max_size}")
        lines += ["250-8BITMIME", "250-SMTPUTF8"]
        if starttls:
            lines.append("250-STARTTLS")
        if auth:
            lines.append(f"250-AUTH {' '.join(MECHANISMS)}")
        lines += ["250-PIPELINING", "250-ENHANCEDSTATUSCODES", "250 HELP"]
        return "\r\n".join(lines).encode() + b"\r\n"

    def __call__(self) -> SubmissionProtocol:
        return SubmissionProtocol(self)


class SubmissionProtocol(asyncio.Protocol):
    """One SMTP submission connection."""

    transport: Any  # uvloop's transports do not subclass asyncio's, but they have the same methods

    def __init__(self, listener: ConnectionFactory) -> None:
        self.listener = listener
        self.handler = listener.handler
        self.transport = None
        self.session = Session(None, "unknown")
        self.envelope = Envelope()
        self._loop = asyncio.get_running_loop()
        self._ip = ""
        self._auth_anywhere = False  # AUTH allowed without TLS (implicit TLS, plaintext_auth_networks)
        self._buffer = bytearray()
        self._out: list[bytes] = []  # replies gathered while input lasts
        self._step: asyncio.Task[None] | None = None
        self._collector: DataCollector | None = None
        self._held: Held | None = None
        self._challenge: Callable[[bytes], None] | None = None  # takes the next line of an AUTH exchange
        self._discarding = False  # inside a line too long to keep
        self._bogus = BOGUS_LIMIT
        self._closing = False  # QUIT, a refusal or the connection's end: no more input taken
        self._paused = False
        self._counted = False  # in the listener's Sessions
        self._last = 0.0  # the loop's time of the last command or piece of data
        self._timer: asyncio.TimerHandle | None = None

    # -- the connection ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self._ip = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        sessions, policy = self.listener.sessions, self.listener.policy
        counts = sessions.counts
        reserved = counts.open >= counts.total and is_trusted(self._ip, policy.trusted)  # asked only when full
        refusal = counts.admit(self._ip, reserved)
        if refusal is not None:
            log.warning("refused a connection from %s: %s", self._ip, refusal.value)
            self._closing = True
            self.transport.write(TOO_MANY_CONNECTIONS if refusal is Refusal.ADDRESS else TOO_BUSY)
            self.transport.close()
            return
        sessions.open.add(self)
        self._counted = True
        implicit = self.listener.implicit_tls
        self._auth_anywhere = implicit or is_trusted(self._ip, policy.plaintext_auth)
        self.session = Session(peer, self._ip or "unknown", tls=implicit, implicit_tls=implicit)
        self._last = self._loop.time()
        self._timer = self._loop.call_at(self._last + self.listener.idle_timeout, self._on_timer)
        self.transport.write(self.listener.greeting)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._step is not None:
            self._step.cancel()  # what the client will never hear the end of, as on aiosmtpd
        self._forget()

    def _forget(self) -> None:
        """The connection is gone: drop what it held and take it off the listener's sessions."""
        self._closing = True
        self._collector = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._held is not None:
            self._held.release()
            self._held = None
        if self._counted:
            self._counted = False
            sessions = self.listener.sessions
            sessions.open.discard(self)
            sessions.counts.release(self._ip)

    def eof_received(self) -> bool | None:
        return False  # the client is done sending: close (a reply could not be acted on anyway)

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        if self._collector is not None and self._step is None and not self._buffer:
            self._take_data(data)  # the body, without a copy into the buffer
        else:
            self._buffer += data
        if self._step is None:
            self._process()
        elif len(self._buffer) > PAUSE_AT and not self._paused:
            self._paused = True
            self.transport.pause_reading()

    def _close(self) -> None:
        self._closing = True
        self._flush()
        self.transport.close()

    def _on_timer(self) -> None:
        self._timer = None
        if self._closing:
            return
        now = self._loop.time()
        due = self._last + self.listener.idle_timeout
        if now < due or self._step is not None:  # active since it was set, or waiting on relay's side
            self._timer = self._loop.call_at(due if now < due else now + self.listener.idle_timeout, self._on_timer)
            return
        log.debug("closing an idle SMTP connection from %s", self._ip)
        self._close()

    # -- input -----------------------------------------------------------------------------------

    def _process(self) -> None:
        """Take every complete line (or piece of data) in the buffer, then write the replies."""
        buffer = self._buffer
        while buffer and self._step is None and not self._closing:
            if self._collector is not None:
                data = bytes(buffer)
                buffer.clear()
                self._take_data(data)
                continue
            end = buffer.find(b"\n")
            if end < 0:
                if len(buffer) > COMMAND_LINE_LIMIT:
                    self._discarding = True  # too long already: keep none of it
                    buffer.clear()
                break
            line = bytes(buffer[: end + 1])
            del buffer[: end + 1]
            if self._discarding or end > COMMAND_LINE_LIMIT:
                self._discarding = False
                self._too_long()
                continue
            try:
                if self._challenge is not None:
                    challenge, self._challenge = self._challenge, None
                    challenge(line)
                else:
                    self._command(line)
            except Exception as exc:
                self._out.append(self._failure(exc))
        self._flush()
        if self._closing:
            return
        if self._step is not None and len(buffer) > PAUSE_AT and not self._paused:
            self._paused = True
            self.transport.pause_reading()
        elif self._paused and self._step is None and len(buffer) <= PAUSE_AT:
            self._paused = False
            self.transport.resume_reading()

    def _flush(self) -> None:
        out = self._out
        if out:
            if self.transport is not None and not self.transport.is_closing():
                self.transport.write(out[0] if len(out) == 1 else b"".join(out))
            out.clear()

    def _too_long(self) -> None:
        if self._challenge is not None:  # an AUTH response: the exchange is over
            self._challenge = None
            self._out.append(AUTH_LINE_TOO_LONG)
        else:
            self._out.append(TOO_LONG)

    def _failure(self, exc: BaseException) -> bytes:
        """The reply when a command fails unexpectedly: never the exception's text."""
        log.error("SMTP session error from %s", self._ip, exc_info=exc)
        return TEMPORARY

    def _wait(self, step: Step) -> None:
        """Run ``step`` (a command that may wait) at once, up to its first real wait: one that answers
        without waiting (SQLite's inline suppression look-up, the in-memory rate limit) costs no task.
        One that waits goes on in a task, and input is taken again once it has replied."""
        try:
            waited = step.send(None)
        except StopIteration as done:
            if done.value:
                self._out.append(done.value)
            return
        except Exception as exc:
            self._out.append(self._failure(exc))
            return
        self._step = self._loop.create_task(self._run(_resumed(step, waited)))

    async def _run(self, step: Step) -> None:
        try:
            reply = await step
        except Exception as exc:
            reply = self._failure(exc)
        finally:
            self._step = None
        if self._closing:
            return
        self._last = self._loop.time()  # the time it waited was not the client's
        if reply:
            self._out.append(reply)
        self._process()

    def _command(self, line: bytes) -> None:
        stripped = line.rstrip(b"\r\n")
        if not stripped:
            self._out.append(BAD_SYNTAX)
            return
        parsed = split_command(stripped)
        if parsed is None:
            self._out.append(BAD_SYNTAX)
            return
        command, arg = parsed
        limit = COMMAND_LIMIT
        if command == "MAIL" and self.session.extended_smtp:
            limit += MAIL_EXTRA
            if len(stripped) > limit and b"AUTH=" in stripped.upper():
                limit += AUTH_EXTRA
        if len(stripped) > limit:
            self._out.append(TOO_LONG)
            return
        method = COMMANDS.get(command)
        if method is None:
            self._bogus -= 1
            if self._bogus < 1:
                log.warning("closed a connection from %s: too many unrecognized commands", self._ip)
                self._out.append(TOO_MANY_BOGUS)
                self._close()
                return
            self._out.append(unknown_command(command))
            return
        self._last = self._loop.time()
        method(self, arg)

    # -- commands ---------------------------------------------------------------------------------

    def smtp_helo(self, arg: str | None) -> None:
        if self._hello("HELO", arg, extended=False):
            self._out.append(self.listener.helo)

    def smtp_ehlo(self, arg: str | None) -> None:
        if self._hello("EHLO", arg, extended=True):
            session = self.session
            starttls = self.listener.tls_context is not None and not session.tls
            self._out.append(self.listener.ehlo[(starttls, self._auth_anywhere or session.tls)])

    def _hello(self, verb: str, arg: str | None, extended: bool) -> bool:
        """HELO's or EHLO's name checked, and a new session state; False with the refusal written."""
        if arg and not valid_helo_name(arg):
            self._out.append(BAD_HELO[verb])
            return False
        if not arg:
            self._out.append(PLAIN_SYNTAX[verb])
            return False
        self.envelope = Envelope()
        self.session.extended_smtp = extended
        self.session.host_name = arg
        return True

    def smtp_noop(self, arg: str | None) -> None:
        self._out.append(OK)

    def smtp_rset(self, arg: str | None) -> None:
        if arg:
            self._out.append(SYNTAX_ERRORS[("RSET", False)])
            return
        self.envelope = Envelope()
        self._out.append(OK)

    def smtp_quit(self, arg: str | None) -> None:
        if arg:
            self._out.append(SYNTAX_ERRORS[("QUIT", False)])
            return
        self._out.append(BYE)
        self._close()

    def smtp_help(self, arg: str | None) -> None:
        self._out.append(help_reply(arg, self.session.extended_smtp, self.listener.tls_context is not None))

    def smtp_vrfy(self, arg: str | None) -> None:
        if not arg:
            self._out.append(SYNTAX_ERRORS[("VRFY", False)])
            return
        address, _ = getaddr(arg)
        self._out.append(reply_bytes(f"502 Could not VRFY {arg}") if address is None else VRFY_CANNOT)

    def smtp_expn(self, arg: str | None) -> None:
        self._out.append(EXPN_NO)

    def smtp_mail(self, arg: str | None) -> None:
        session, envelope = self.session, self.envelope
        if not session.host_name:
            self._out.append(SEND_HELO)
            return
        syntax = SYNTAX_ERRORS[("MAIL", session.extended_smtp)]
        path = self._path(arg, "FROM:", syntax)
        if path is None:
            return
        address, rest = path
        if envelope.mail_from:
            self._out.append(NESTED_MAIL)
            return
        options = rest.upper().split()
        params = getparams(options)
        fault = syntax if params is None else mail_params_fault(params, self.listener.max_size, syntax)
        if fault is not None:
            self._out.append(fault)
            return
        self._answer(self.handler.mail(session, envelope, address, options))

    def smtp_rcpt(self, arg: str | None) -> None:
        session, envelope = self.session, self.envelope
        if not session.host_name:
            self._out.append(SEND_HELO)
            return
        if not envelope.mail_from:
            self._out.append(NEED_MAIL)
            return
        syntax = SYNTAX_ERRORS[("RCPT", session.extended_smtp)]
        path = self._path(arg, "TO:", syntax)
        if path is None:
            return
        address, rest = path
        options = rest.upper().split()
        params = getparams(options)
        if params is None:
            self._out.append(syntax)
            return
        if params:
            self._out.append(RCPT_PARAMS)
            return
        self._answer(self.handler.rcpt(session, envelope, address, options))

    def _path(self, arg: str | None, keyword: str, syntax: bytes) -> tuple[str, str] | None:
        """MAIL's or RCPT's ``KEYWORD:<address> parameters``: (address, parameters), or None with the
        reply written (``syntax``, or 553 for an address that does not parse)."""
        arg = None if arg is None else strip_keyword(keyword, arg)
        if arg is None:
            self._out.append(syntax)
            return None
        address, rest = getaddr(arg)
        if address is None or rest is None:
            self._out.append(MALFORMED)
            return None
        if not address or (rest and not self.session.extended_smtp):
            self._out.append(syntax)
            return None
        return address, rest

    def _answer(self, result: str | Coroutine[Any, Any, str]) -> None:
        """A handler's reply, or the step that will make it."""
        if isinstance(result, str):
            self._out.append(reply_bytes(result))
        else:
            self._wait(_replied(result))

    def smtp_data(self, arg: str | None) -> None:
        if not self.session.host_name:
            self._out.append(SEND_HELO)
            return
        if not self.envelope.rcpt_tos:
            self._out.append(NEED_RCPT)
            return
        if arg:
            self._out.append(SYNTAX_ERRORS[("DATA", False)])
            return
        held = self._held = Held(self.listener.budget, SMTP_WEIGHT)
        declared = declared_size(self.envelope.mail_options)
        if declared and not held.grow_to(declared):  # no room now for what the client announced: wait a moment
            self._wait(self._room_for(held, declared))
            return
        self._start_data(held)

    async def _room_for(self, held: Held, declared: int) -> bytes | None:
        if not await held.take(declared):
            log.warning("refused DATA of %d bytes: bodies in memory at [server] max_inflight_bytes", declared)
            held.release()
            self._held = None
            return TRY_LATER_REPLY
        self._start_data(held)
        return None

    def _start_data(self, held: Held) -> None:
        self._collector = DataCollector(self.listener.max_size, LINE_LIMIT, held)
        self._out.append(START_DATA)

    def _take_data(self, data: bytes) -> None:
        collector = self._collector
        assert collector is not None
        self._last = self._loop.time()
        end = collector.feed(data)
        if end is None:
            return
        if end < len(data):
            self._buffer[:0] = data[end:]  # the next commands
        self._collector = None
        held, self._held = self._held, None
        assert held is not None
        try:
            content = collector.body()
        except (LineTooLong, BodyTooLarge, OverBudget) as exc:
            held.release()
            self.envelope = Envelope()
            self._out.append(self._data_refusal(exc, collector))
            return
        self.envelope.content = content
        self.envelope.data_size = collector.size - 3  # what the client sent, the end-of-data line aside
        self._wait(self._queue(held))

    @staticmethod
    def _data_refusal(exc: Exception, collector: DataCollector) -> bytes:
        if isinstance(exc, LineTooLong):
            return DATA_LINE_TOO_LONG
        if isinstance(exc, BodyTooLarge):
            return TOO_MUCH_DATA
        log.warning(
            "refused a message of %d bytes: bodies in memory at [server] max_inflight_bytes", collector.size - 3
        )
        return TRY_LATER_REPLY

    async def _queue(self, held: Held) -> bytes:
        try:
            reply = await self.handler.data(self.session, self.envelope)
        finally:
            held.release()  # the message is on disk or refused: its body may go
            self.envelope = Envelope()
        return reply_bytes(reply)

    def smtp_starttls(self, arg: str | None) -> None:
        if arg:
            self._out.append(SYNTAX_ERRORS[("STARTTLS", False)])
            return
        if self.listener.tls_context is None:
            self._out.append(NO_TLS)
            return
        if self.session.tls:
            self._out.append(TLS_ACTIVE)
            return
        self._out.append(START_TLS)
        self._flush()
        self._buffer.clear()  # what came in plain text after STARTTLS is not to be trusted (RFC 3207 §6)
        self.transport.pause_reading()  # the handshake's bytes go to TLS, not to this parser
        self._wait(self._start_tls())

    async def _start_tls(self) -> bytes | None:
        context = self.listener.tls_context
        assert context is not None
        plain = self.transport
        try:
            self.transport = await self._loop.start_tls(plain, self, context, server_side=True)
        except (OSError, ssl.SSLError, EOFError, TimeoutError) as exc:
            log.info("TLS handshake with %s failed: %s", self._ip, exc)
            plain.close()
            self._forget()
            return None
        self.session = Session(self.session.peer, self.session.ip, tls=True)  # a new session (RFC 3207 §4.2)
        self.envelope = Envelope()
        self._buffer.clear()
        return None

    def smtp_auth(self, arg: str | None) -> None:
        session = self.session
        if not session.host_name:
            self._out.append(SEND_EHLO)
            return
        if not session.extended_smtp:
            self._out.append(AUTH_NOT_EXTENDED)
            return
        if not (self._auth_anywhere or session.tls):
            self._out.append(AUTH_NEEDS_TLS)
            return
        if session.authenticated:
            self._out.append(AUTH_AGAIN)
            return
        self._sasl(sasl.start(arg))

    def _sasl(self, step: sasl.Step) -> None:
        """Take a step of the AUTH exchange: ask, refuse, or check the credentials (relay.submission.sasl)."""
        if isinstance(step, sasl.Challenge):
            self._out.append(step.reply)
            self._challenge = lambda line: self._sasl(step.answer(line))
        elif isinstance(step, sasl.Refusal):
            self._out.append(step.reply)
        else:
            self._wait(self._login(step.login, step.password))

    async def _login(self, login: bytes, password: bytes) -> bytes:
        username = login.decode("utf-8", errors="replace")
        try:
            cred = await self.handler.authenticator.login(
                self._ip, username, password.decode("utf-8", errors="replace")
            )
        except Throttled:
            return AUTH_THROTTLED
        if cred is None:
            return AUTH_INVALID
        self.session.authenticated = True
        self.session.credential = cred
        log.info("AUTH ok: %s as %s", self._ip, cred.username)
        return AUTH_OK


class _Yield:
    """Awaiting it yields ``future`` to the task, as the coroutine that waits on it did (asyncio's
    protocol: a coroutine yields the future it waits on, or None to let others run)."""

    __slots__ = ("future",)

    def __init__(self, future: Any) -> None:
        self.future = future

    def __await__(self) -> Generator[Any, None, None]:
        yield self.future


async def _resumed(coro: Step, waited: Any) -> bytes | None:
    """Go on with ``coro``, started by hand and now waiting on ``waited``, as its own task would: once
    ``waited`` is done the coroutine is resumed and takes its outcome (result, exception or cancellation)."""
    while True:
        error: BaseException | None = None
        try:
            await _Yield(waited)
        except asyncio.CancelledError as exc:
            if waited is None or not waited.cancelled():
                error = exc  # this task was cancelled, not the future: the coroutine is cancelled where it waits
        except Exception:
            pass  # the future's exception: the coroutine gets it from the future
        try:
            waited = coro.send(None) if error is None else coro.throw(error)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]


async def _replied(result: Coroutine[Any, Any, str]) -> bytes:
    return reply_bytes(await result)


COMMANDS: dict[str, Callable[[SubmissionProtocol, str | None], None]] = {
    "HELO": SubmissionProtocol.smtp_helo,
    "EHLO": SubmissionProtocol.smtp_ehlo,
    "NOOP": SubmissionProtocol.smtp_noop,
    "RSET": SubmissionProtocol.smtp_rset,
    "QUIT": SubmissionProtocol.smtp_quit,
    "HELP": SubmissionProtocol.smtp_help,
    "VRFY": SubmissionProtocol.smtp_vrfy,
    "EXPN": SubmissionProtocol.smtp_expn,
    "MAIL": SubmissionProtocol.smtp_mail,
    "RCPT": SubmissionProtocol.smtp_rcpt,
    "DATA": SubmissionProtocol.smtp_data,
    "STARTTLS": SubmissionProtocol.smtp_starttls,
    "AUTH": SubmissionProtocol.smtp_auth,
}
