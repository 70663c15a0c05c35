"""The SMTP DATA phase read in chunks rather than line by line.

aiosmtpd reads a message body one line at a time in Python (a ``readuntil``, a
length check and a list append per line): for a 100 KB message that is ~1,300
trips through the loop, and it was the largest single cost in relay's profile
for large messages. :class:`ChunkedData` reads the body in socket-sized pieces
with ``StreamReader.readuntil(b".\\r\\n")`` (the C-level search does the
scanning; a body without such a line comes back through ``LimitOverrunError``
in one piece per buffer) and then checks line lengths and undoes dot-stuffing
on the whole body at once. Only the exact line ``.<CRLF>`` after a ``<CRLF>``
ends the data, as in aiosmtpd (a bare LF never does: no SMTP smuggling).

The replies are aiosmtpd's: 552 when the body passes ``data_size_limit``,
500 when a line is longer than ``line_length_limit`` (lines end at any LF here,
where aiosmtpd only counted CRLF), both after the whole
body has been read (RFC 5321 §4.2.5), and the handler's ``handle_DATA`` reply
otherwise.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from aiosmtpd.smtp import MISSING, SMTP

from relay.errors import RelayError
from relay.message import crlf_line_ends, dot_unstuff, has_line_over
from relay.submission.budget import SMTP_WEIGHT, Held, InflightBudget

log = logging.getLogger(__name__)

END = b"\r\n.\r\n"


class BodyTooLarge(RelayError):
    pass


class LineTooLong(RelayError):
    pass


class OverBudget(RelayError):
    """The body did not fit in the bodies-in-memory budget ([server] max_inflight_bytes)."""


TRY_LATER = "452 4.3.1 Insufficient system storage, try again later"


def declared_size(mail_options: list[str]) -> int | None:
    """The SIZE= the client declared at MAIL FROM, if any (aiosmtpd has checked it is digits)."""
    for option in mail_options:
        name, _, value = option.partition("=")
        if name.upper() == "SIZE" and value.isascii() and value.isdigit():
            return int(value)
    return None


class DataCollector:
    """Pure logic of the DATA phase: takes the stream in pieces (each ending where the reader
    stopped), tells when the end-of-data line has arrived, and gives the body."""

    def __init__(self, max_size: int | None, max_line: int, held: Held | None = None) -> None:
        self.max_size = max_size
        self.held = held  # the budget share this body holds, grown as it arrives
        self.over_budget = False
        self.max_line = max_line  # including the CRLF, like aiosmtpd's line_length_limit
        self.size = 0  # bytes of the stream so far, the end-of-data line included
        self._pieces: list[bytes] = []
        self._tail = b"\r\n"  # the stream's last bytes; the CRLF that ended "DATA" starts it

    @property
    def too_large(self) -> bool:
        return bool(self.max_size) and self.size - 3 > self.max_size  # type: ignore[operator]

    def add(self, piece: bytes) -> bool:
        """Take the next piece of the stream; True when it ends with the end-of-data line."""
        self._tail = (self._tail + piece[-5:])[-5:]
        self.size += len(piece)
        if not self.too_large and not self.over_budget and self.held is not None:
            self.over_budget = not self.held.grow_to(self.size)
        if self.too_large or self.over_budget:
            self._pieces.clear()  # read on to the end of the data, holding nothing
        else:
            self._pieces.append(piece)
        return self._tail == END

    def feed(self, data: bytes) -> int | None:
        """Take ``data`` as it came off the socket, up to and including the end-of-data line: how many of
        its bytes that was (what follows is the next command), or None if it took them all and the data
        goes on. Only <CRLF>.<CRLF> ends it, wherever the reads split it."""
        edge = self._tail[-4:] + data[:4]  # an end-of-data line across the previous piece and this one
        found = edge.find(END)
        if found != -1:
            end = found + len(END) - len(self._tail[-4:])
        else:
            found = data.find(END)
            end = -1 if found == -1 else found + len(END)
        if end == -1:
            self.add(data)
            return None
        self.add(data if end == len(data) else data[:end])
        return end

    def _drop_last(self, count: int) -> None:
        """Drop the stream's last ``count`` bytes (they may span pieces when reads split them)."""
        pieces = self._pieces
        while count and pieces:
            last = pieces[-1]
            if len(last) <= count:
                count -= len(last)
                pieces.pop()
            else:
                pieces[-1] = last[:-count]
                count = 0

    def body(self) -> bytes:
        """The message without the final "." line, each line's leading dot removed
        (RFC 5321 §4.5.2). Raises BodyTooLarge or LineTooLong."""
        if self.too_large:
            raise BodyTooLarge
        if self.over_budget:
            raise OverBudget
        self._drop_last(3)  # the end-of-data line's ".\r\n", without a copy of the whole
        data = b"".join(self._pieces)
        self._pieces.clear()
        # Lines split at LF (a bare LF ends a line for every reader of the message): the CR is
        # counted, the LF not, so "longer than max_line with its CRLF" is "longer than max_line - 1".
        if has_line_over(data, self.max_line - 1):
            raise LineTooLong
        # A bare LF (or lone CR) ends a line, as for Postfix: the stored message is all CRLF, and a
        # dot after a bare LF is unstuffed like one after a CRLF. Only <CRLF>.<CRLF> ends the data.
        return dot_unstuff(crlf_line_ends(data))


DATA_PIECE = 64 * 1024  # the most one read of the body takes (the reader's limit while DATA lasts)


async def read_data(reader: asyncio.StreamReader, collector: DataCollector) -> None:
    """Read from ``reader`` through the end-of-data line into ``collector``; what follows it stays
    in the reader for the next command. Raises IncompleteReadError if the client goes away.

    The reader's limit (a command line's length) is raised to DATA_PIECE meanwhile: with aiosmtpd's
    1001 bytes, a body whose lines seldom end in a dot came in pieces of 1 KB, each found by a
    LimitOverrunError, ~100 for a 100 KB message. The lines' lengths are checked in
    :meth:`DataCollector.body`."""
    limit = reader._limit  # type: ignore[attr-defined]  # asyncio's StreamReader keeps it here (since 3.4)
    reader._limit = max(limit, DATA_PIECE)  # type: ignore[attr-defined]
    try:
        while True:
            try:
                piece = await reader.readuntil(b".\r\n")
            except asyncio.LimitOverrunError as exc:
                # No ".\r\n" within the reader's limit: take what was scanned, all but its last bytes.
                piece = await reader.readexactly(exc.consumed)
            if collector.add(piece):
                return
    finally:
        reader._limit = limit  # type: ignore[attr-defined]


class ChunkedData(SMTP):
    """An aiosmtpd SMTP server whose DATA command reads the body with :func:`read_data`.

    Requires ``decode_data=False`` (the handler gets bytes in ``envelope.content``)."""

    _receiving_data = False
    budget: InflightBudget | None = None  # shared with the other submissions of this process; None: no ceiling

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """aiosmtpd's reading of a MAIL/RCPT/VRFY path, with what the email package's parser cannot
        read (cut off: ``"``, ``<``; it raises IndexError or AttributeError there) as no address."""
        try:
            return super()._getaddr(arg)
        except (IndexError, AttributeError):
            return None, None

    def _getparams(self, params: Sequence[str]) -> dict[str, str | bool] | None:
        """aiosmtpd's MAIL/RCPT parameters, with a SIZE of other digits than ASCII's (``²``, which
        str.isdigit takes and int() does not) as malformed (RFC 1870: ASCII digits)."""
        result = super()._getparams(params)
        size = None if result is None else result.get("SIZE")
        if isinstance(size, str) and not size.isascii():
            return None
        return result

    def data_received(self, data: bytes) -> None:
        if self._receiving_data:  # the idle timeout counts from the last bytes, not from the DATA command
            self._reset_timeout()
        super().data_received(data)

    async def smtp_DATA(self, arg: str) -> None:
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None and not self._decode_data
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        held = Held(self.budget, SMTP_WEIGHT)
        try:
            await self._receive(held)
        finally:
            held.release()  # the message is on disk or refused: its body may go

    async def _receive(self, held: Held) -> None:
        assert self.envelope is not None
        declared = declared_size(self.envelope.mail_options)
        if declared and not await held.take(declared):  # room for what the client announced, before it sends it
            log.warning("refused DATA of %d bytes: bodies in memory at [server] max_inflight_bytes", declared)
            await self.push(TRY_LATER)
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        collector = DataCollector(self.data_size_limit, self.line_length_limit, held)
        try:
            self._receiving_data = True
            await read_data(self._reader, collector)
        except asyncio.CancelledError:  # aiosmtpd cancels the session when the connection is lost
            log.info("Connection lost during DATA")
            self._writer.close()
            raise
        except asyncio.IncompleteReadError:
            log.info("Connection closed during DATA")
            self._writer.close()
            return
        finally:
            self._receiving_data = False
        try:
            content = collector.body()
        except LineTooLong:
            await self.push("500 Line too long (see RFC5321 4.5.3.1.6)")
            self._set_post_data_state()  # type: ignore[no-untyped-call]  # aiosmtpd leaves it unannotated
            return
        except BodyTooLarge:
            await self.push("552 Error: Too much mail data")
            self._set_post_data_state()  # type: ignore[no-untyped-call]  # aiosmtpd leaves it unannotated
            return
        except OverBudget:
            log.warning(
                "refused a message of %d bytes: bodies in memory at [server] max_inflight_bytes", collector.size - 3
            )
            await self.push(TRY_LATER)
            self._set_post_data_state()  # type: ignore[no-untyped-call]  # aiosmtpd leaves it unannotated
            return
        self.envelope.content = content
        self.envelope.original_content = content
        self.envelope.relay_data_size = collector.size - 3  # type: ignore[attr-defined]  # what the client sent
        status = await self._call_handler_hook("DATA") if "DATA" in self._handle_hooks else MISSING
        self._set_post_data_state()  # type: ignore[no-untyped-call]  # aiosmtpd leaves it unannotated
        await self.push("250 OK" if status is MISSING else status)

    async def handle_exception(self, error: Exception) -> str:
        """The reply when a command fails inside aiosmtpd: never the exception's text (it told clients
        about relay's internals, e.g. ``500 Error: (ValueError) Separator is found, but chunk is longer
        than limit`` for an over-long AUTH line)."""
        if isinstance(error, asyncio.LimitOverrunError | ValueError) and "limit" in str(error):
            return "500 5.5.2 Line too long"
        log.exception("SMTP session error from %s", self.session.peer if self.session else "?")
        return "451 4.3.0 Temporary failure, please try again later"

    for _attr in ("__smtp_syntax__", "__smtp_syntax_extended__", "__smtp_syntax_when__"):  # HELP texts
        setattr(smtp_DATA, _attr, getattr(SMTP.smtp_DATA, _attr))
    del _attr
