"""Outbound PIPELINING (RFC 2920): MAIL, every RCPT and DATA in one write, their replies read in order.

aiosmtplib sends one command and waits for its reply before the next, and its protocol keeps
one reply at a time: what a server sends after it, before the next command is written, is
dropped. So when the server's EHLO offered PIPELINING, a :class:`Pipeline` writes the whole
envelope at once on the connection aiosmtplib opened and greeted, and a :class:`ReplyReader`,
put between the transport and aiosmtplib's protocol for the life of the connection, parses the
replies itself while a group is out (it passes everything through otherwise: RSET and QUIT
still go through aiosmtplib).

On a kept connection the next message's group may go in the same write as this one's body
(RFC 2920 §3.1 lets the message content be the first "command" of a group): one write and one
wait a message instead of two. Its :class:`Pipeline` is then made ``written`` and the reader
keeps collecting across the two transactions, so that replies that came together stay in order.

The replies are handed out one per command, as aiosmtplib's one-at-a-time commands would
have produced them: the same responses and exceptions, and the same side effects (aiosmtplib
closes the session on a 421, a lost connection or a timeout, after which a command fails with
"Server not connected"), so the caller's logic for a transaction is the same for both ways.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

import aiosmtplib
from aiosmtplib.protocol import SMTPProtocol

from relay.errors import RelayError

# aiosmtplib's limits (aiosmtplib/protocol.py), so that a reply it would refuse is refused here too.
MAX_LINE_LENGTH = 8192
MAX_RESPONSE_LENGTH = MAX_LINE_LENGTH * 4


class DataRefused(aiosmtplib.SMTPDataError, RelayError):
    """The reply to the end of the data was not 250: the message was refused, the transaction is over."""


def parse_replies(buffer: bytearray) -> tuple[list[aiosmtplib.SMTPResponse], aiosmtplib.SMTPException | None]:
    """Take every complete reply (multi-line ones joined as aiosmtplib joins them) off the front of
    ``buffer``; a partial one stays. A line too long or without a code gives, after the replies
    before it, the error aiosmtplib raises for it (SMTPResponseException, code -1)."""
    replies: list[aiosmtplib.SMTPResponse] = []
    error: aiosmtplib.SMTPException | None = None
    message: list[bytes] = []  # the lines so far of a multi-line reply
    taken = pos = 0
    lines = bytes(buffer[: buffer.rfind(b"\n") + 1]).split(b"\n")
    for line in lines[:-1]:  # each complete line, without its LF (a lone CR ends none)
        code = _code(line)
        if isinstance(code, aiosmtplib.SMTPException):
            error = code
            break
        pos += len(line) + 1
        text = line[4:].strip(b" \t\r\n")
        if line[3:4] == b"-":
            if text or message:  # as aiosmtplib does: empty leading lines add nothing
                message.append(text)
            continue
        if message:
            text = b"\n".join([*message, text])
            message = []
        replies.append(aiosmtplib.SMTPResponse(code, text.decode("utf-8", "surrogateescape")))
        taken = pos
    del buffer[:taken]
    if error is None and len(buffer) > MAX_RESPONSE_LENGTH:
        error = aiosmtplib.SMTPResponseException(-1, "Response too long")
    return replies, error


def _code(line: bytes) -> int | aiosmtplib.SMTPException:
    if len(line) >= MAX_LINE_LENGTH:  # with its LF, longer than aiosmtplib takes
        return aiosmtplib.SMTPResponseException(-1, "Response too long")
    try:
        return int(line[:3])
    except ValueError:
        text = (line + b"\n").decode("utf-8", errors="ignore")
        return aiosmtplib.SMTPResponseException(-1, f"Malformed SMTP response line: {text}")


class ReplyReader(asyncio.Protocol):
    """The connection's protocol in front of aiosmtplib's: everything goes through to it, except
    while :meth:`collect` is on, when replies are parsed and queued here, as many as come."""

    def __init__(self, inner: SMTPProtocol) -> None:
        self.inner = inner
        self.collecting = False
        self._loop = asyncio.get_running_loop()
        self._buffer = bytearray()
        self._replies: deque[aiosmtplib.SMTPResponse] = deque()
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None

    @classmethod
    def install(cls, inner: SMTPProtocol, transport: asyncio.BaseTransport) -> ReplyReader:
        """Put a reader between ``transport`` and aiosmtplib's protocol (``inner``) for good."""
        reader = cls(inner)
        transport.set_protocol(reader)
        return reader

    def collect(self, on: bool) -> None:
        """Start (or stop) taking the replies here; either way what is left from before is dropped."""
        self.collecting = on
        self._buffer.clear()
        self._replies.clear()
        self._error = None

    async def reply(self, limit: float | None) -> aiosmtplib.SMTPResponse:
        """The next reply, waiting at most ``limit`` seconds for all of it (as aiosmtplib's read_response)."""
        deadline = None if limit is None else self._loop.time() + limit
        while not self._replies:
            if self._error is not None:
                raise self._error
            await self._wait(deadline)
        return self._replies.popleft()

    async def _wait(self, deadline: float | None) -> None:
        """Until more data (or the end of the connection) comes, or the deadline passes."""
        waiter = self._waiter = self._loop.create_future()
        timer = None if deadline is None else self._loop.call_at(deadline, self._time_out, waiter)
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()

    @staticmethod
    def _time_out(waiter: asyncio.Future[None]) -> None:
        if not waiter.done():
            waiter.set_exception(aiosmtplib.SMTPReadTimeoutError("Timed out waiting for server response"))

    def _fail(self, exc: BaseException) -> None:
        if self._error is None:
            self._error = exc
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # asyncio.Protocol

    def data_received(self, data: bytes) -> None:
        if not self.collecting:
            self.inner.data_received(data)
            return
        if self._error is not None:
            return
        self._buffer += data
        replies, self._error = parse_replies(self._buffer)
        self._replies.extend(replies)
        self._wake()

    def eof_received(self) -> bool | None:
        if not self.collecting:
            return self.inner.eof_received()
        self._fail(aiosmtplib.SMTPServerDisconnected("Unexpected EOF received"))
        return False  # close the transport, as aiosmtplib does

    def connection_lost(self, exc: Exception | None) -> None:
        if self.collecting:
            lost = aiosmtplib.SMTPServerDisconnected("Connection lost")
            lost.__cause__ = exc
            self._fail(lost)
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


class Pipeline:
    """One transaction sent as a group: :meth:`mail` writes MAIL, the RCPTs and DATA and returns
    MAIL's reply, :meth:`rcpt` returns the next RCPT's, :meth:`data` DATA's and then sends the
    body; :meth:`finish` reads whatever the caller did not ask for (after a refused MAIL, or when
    no RCPT was accepted), sending only the end of data if DATA was answered 354 anyway
    (RFC 2920 §3.1), and hands the connection back to aiosmtplib."""

    def __init__(
        self,
        smtp: aiosmtplib.SMTP,
        reader: ReplyReader,
        sender: str,
        mail: bytes,
        rcpts: list[bytes],
    ) -> None:
        self.smtp = smtp
        self.reader = reader
        self.sender = sender
        self.group = mail + b"".join(rcpts) + b"DATA\r\n"
        self.written = False  # the group went out already, after the last message's body (:meth:`data`)
        self._pending = len(rcpts) + 2  # replies still to read: MAIL's, the RCPTs', DATA's
        self._closed = False  # aiosmtplib would have closed the session by now
        self._handed_on = False  # the next transaction's group followed the body: the reader stays on

    async def mail(self) -> aiosmtplib.SMTPResponse:
        if self.smtp.protocol is None:
            raise aiosmtplib.SMTPServerDisconnected("Server not connected")
        if not self.written:
            self.reader.collect(True)
        resp = await self._read(b"" if self.written else self.group)
        if resp.code != 250:
            raise aiosmtplib.SMTPSenderRefused(resp.code, resp.message, self.sender)
        return resp

    async def rcpt(self, recipient: str) -> aiosmtplib.SMTPResponse:
        resp = await self._read()
        if resp.code not in (250, 251):
            raise aiosmtplib.SMTPRecipientRefused(resp.code, resp.message, recipient)
        return resp

    async def data(self, wire: bytes, then: Callable[[], Pipeline | None] | None = None) -> aiosmtplib.SMTPResponse:
        """DATA's reply, then the body and its reply. ``then``, called once the body is certain to go,
        may give the next transaction, whose group is written with the body (see the module's doc)."""
        start = await self._read()
        if start.code != 354:
            raise aiosmtplib.SMTPDataError(start.code, start.message)
        following = then() if then is not None else None
        if following is not None:
            following.written = self._handed_on = True
            wire += following.group
        resp = await self._end_of_data(wire)
        if resp.code != 250:
            raise DataRefused(resp.code, resp.message)
        return resp

    async def finish(self) -> None:
        """Read the replies nobody asked for; a session that cannot be kept in step is closed."""
        try:
            while self._pending and not self._closed:
                resp = await self._read()
                if not self._pending and resp.code == 354:
                    await self._end_of_data(b".\r\n")  # DATA accepted without a recipient: no data
        except (TimeoutError, aiosmtplib.SMTPException, OSError):
            self.smtp.close()
        finally:
            if not self._handed_on:
                self.reader.collect(False)

    async def _read(self, write: bytes = b"") -> aiosmtplib.SMTPResponse:
        """The next reply, with what aiosmtplib's ``SMTP.execute_command`` does around it."""
        if self._closed:
            raise aiosmtplib.SMTPServerDisconnected("Server not connected")
        self._pending -= 1
        try:
            if write:
                self._write(write)
            resp = await self.reader.reply(self.smtp.timeout)
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError):
            self._close()
            raise
        if resp.code == 421:
            self._close()
        return resp

    async def _end_of_data(self, wire: bytes) -> aiosmtplib.SMTPResponse:
        """The body (or only its end) after a 354, and the reply to it (what relay's send_data does)."""
        try:
            self._write(wire)
            return await self.reader.reply(self.smtp.timeout)
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError):
            self._close()
            raise

    def _write(self, data: bytes) -> None:
        if self.smtp.protocol is None:
            raise aiosmtplib.SMTPServerDisconnected("Connection lost")
        self.smtp.protocol.write(data)

    def _close(self) -> None:
        self._closed = True
        self.smtp.close()
