"""SMTP submission (RFC 6409) on aiosmtpd: STARTTLS or implicit TLS, AUTH, relay rules, limits.

The SMTP front door: each transaction becomes one ``NewMessage`` for the
``Acceptor`` (``relay.submission.accept``), which screens and queues it; a
refusal (``relay.errors.Refused``) carries its own SMTP reply.

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
import functools
import inspect
import ipaddress
import logging
import re
import ssl
import types
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from email._header_value_parser import get_addr_spec, get_angle_addr
from email.errors import HeaderParseError
from email.utils import parsedate_to_datetime
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session, _AuthMechAttr

from relay import strictjson
from relay.clock import Clock
from relay.config import Config, Network, Rate
from relay.credentials import SmtpCredential
from relay.errors import RecipientsSuppressed, Refused, StoreError
from relay.message import (
    PLAIN_ADDRESS,
    NewMessage,
    NoFrom,
    UnreadableFrom,
    address_fault,
    from_addresses,
    header_value,
    missing_standard_headers,
    new_message_id,
    prepend_headers,
    received_header,
    remove_headers,
    split_address,
)
from relay.ratelimit import Limiter, RateLimiter
from relay.submission.accept import Acceptor
from relay.submission.auth import SmtpAuthenticator, Throttled
from relay.submission.data import ChunkedData

log = logging.getLogger(__name__)

TAGS_HEADER = "X-Relay-Tags"
METADATA_HEADER = "X-Relay-Metadata"
SEND_AT_HEADER = "X-Relay-Send-At"


@functools.lru_cache(maxsize=4096)  # parsed at every RCPT; clients come back from the same few addresses
def _address(peer_ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(peer_ip.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def valid_helo_name(name: str) -> bool:
    """Whether an EHLO/HELO argument may stand in relay's Received: header: one word of printable
    characters (RFC 5321 §4.1.1.1 asks for a domain or address literal; clients' names vary, so only
    what could break or forge a header is refused: CR, LF, NUL, other controls and spaces)."""
    if _PLAIN_HELO.fullmatch(name):  # printable ASCII: what nearly every client sends
        return True
    return len(name) <= 255 and all(c.isprintable() and not c.isspace() for c in name)


_PLAIN_HELO = re.compile(r"[!-~]{1,255}")


def is_trusted(peer_ip: str, networks: Sequence[Network]) -> bool:
    address = _address(peer_ip)
    return address is not None and any(address in net for net in networks)


def parse_relay_headers(raw: bytes) -> tuple[tuple[str, ...], dict[str, Any]]:
    """Tags and metadata from X-Relay-Tags / X-Relay-Metadata. Raises ValueError with a reason."""
    tags_text = header_value(raw, TAGS_HEADER)
    tags = tuple(dict.fromkeys(t.strip() for t in (tags_text or "").split(",") if t.strip()))
    if len(tags) > 10 or any(len(t) > 128 for t in tags):
        raise ValueError(f"{TAGS_HEADER}: at most 10 tags of up to 128 characters")
    metadata_text = header_value(raw, METADATA_HEADER)
    metadata: dict[str, Any] = {}
    if metadata_text:
        try:
            metadata = strictjson.loads(metadata_text)
        except ValueError:
            raise ValueError(f"{METADATA_HEADER} is not valid JSON") from None
        if not isinstance(metadata, dict) or any(
            not isinstance(v, str | int | float | bool) and v is not None for v in metadata.values()
        ):
            raise ValueError(f"{METADATA_HEADER} must be a flat JSON object")
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
    max_connections_per_ip: int
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
            s.max_connections_per_ip,
            s.received_show_auth,
            config.server.max_schedule_ahead,
        )


def _credential(session: Session) -> SmtpCredential | None:
    data = session.auth_data if session.authenticated else None
    return data if isinstance(data, SmtpCredential) else None


def hook_names(obj: object, prefixes: tuple[str, ...]) -> list[str]:
    """What ``dir(obj)`` needs to show aiosmtpd: it finds its handle_*, auth_* and smtp_* methods with
    dir() and inspect.getmembers() on every new connection, which evaluates every attribute of the
    server and the handler (~10% of relay's CPU with one connection per message)."""
    cls = type(obj)
    names = cls.__dict__.get("_hook_names")
    if names is None:
        names = [n for n in object.__dir__(obj) if n.startswith(prefixes)]
        cls._hook_names = names  # type: ignore[attr-defined]
    return list(names)


# <local@domain> and what follows: the path every client sends, taken without the full parser.
_SIMPLE_PATH = re.compile(rf"<({PLAIN_ADDRESS})>[ \t]*(.*)", re.DOTALL)


class SubmissionHandler:
    def __dir__(self) -> list[str]:
        return hook_names(self, ("handle_", "auth_"))

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

    async def handle_AUTH(self, server: SubmissionSMTP, session: Session, envelope: Envelope, args: list[str]) -> Any:
        """AUTH once aiosmtpd has checked it may happen (EHLO, TLS, a known mechanism): see ``authenticate``."""
        return await server.authenticate(args)

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        return [*responses[:-1], "250-PIPELINING", "250-ENHANCEDSTATUSCODES", responses[-1]]

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, mail_options: list[str]
    ) -> str:
        cred = _credential(session)
        if cred is not None:
            if not cred.may_send_as(address):
                return f"550 5.7.1 Sender <{address}> is not allowed for this SMTP credential"
            if cred.rate_limit:
                decision = await self.limiter.hit(cred.id, Rate(cred.rate_limit, 3600.0), self.clock.now())
                if not decision.allowed:
                    return f"450 4.7.1 Sending rate limit reached; try again in {decision.retry_after}s"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 Ok"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if not session.authenticated and not is_trusted(_peer_ip(session), self.policy.trusted):
            log.warning("relay denied: client %s, recipient <%s>", _peer_ip(session), address)
            return f"554 5.7.1 <{address}>: Relay access denied"
        if split_address(address) is None:
            return "501 5.1.3 Bad recipient address syntax"
        if len(envelope.rcpt_tos) >= self.policy.max_recipients:
            return "452 4.5.3 Too many recipients"
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

        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
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
            message = self._message(session, envelope, raw, cred, tags, metadata)
        except ValueError:  # a header relay writes would not be one header: refuse, never write it
            log.exception("could not make the trace headers for a message from %s", _peer_ip(session))
            return "451 4.3.0 Temporary failure, please try again later"
        message = dataclasses.replace(message, send_at=send_at)
        try:
            await self.acceptor.submit(message)
        except Refused as exc:  # its reply is its own (relay.errors)
            if exc.smtp_code < 500:
                log.warning("refused a message from %s: %s", _peer_ip(session), exc)
            return exc.smtp_reply()
        except asyncio.CancelledError:
            raise
        except StoreError as exc:  # the database is down or restarting: nothing was written
            log.warning("could not queue a message from %s: %s", _peer_ip(session), exc)
            return "451 4.3.0 Temporary failure, please try again later"
        except Exception:
            log.exception("could not queue a message from %s", _peer_ip(session))
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
    ) -> NewMessage:
        now = self.clock.now()
        queue_id = new_message_id(now)
        recipients = tuple(envelope.rcpt_tos)
        protocol = "ESMTP" if session.extended_smtp else "SMTP"
        if session.ssl is not None or getattr(session, "relay_implicit_tls", False):
            protocol += "S"
        if cred is not None:
            protocol += "A"  # RFC 3848
        trace = received_header(
            helo=session.host_name or "",
            peer_ip=_peer_ip(session),
            hostname=self.policy.hostname,
            protocol=protocol,
            queue_id=queue_id,
            recipient=recipients[0] if len(recipients) == 1 else None,
            now=now,
            authenticated_as=cred.username if cred is not None and self.policy.show_auth else None,
        )
        raw = prepend_headers(raw, [trace, *missing_standard_headers(raw, self.policy.hostname, now)])
        return NewMessage(
            envelope.mail_from or "",
            recipients,
            raw,
            "smtp",
            queue_id,
            subject=header_value(raw, "Subject") or "",
            tags=tuple(dict.fromkeys((*(cred.tags if cred else ()), *tags))),
            metadata=metadata,
            sandbox=cred is not None and cred.test,
            client_size=getattr(envelope, "relay_data_size", None),
        )


# aiosmtpd reads handle_EHLO's signature on every new connection (to tell its two hook styles
# apart); a signature given once makes that lookup a dictionary read.
SubmissionHandler.handle_EHLO.__signature__ = inspect.signature(SubmissionHandler.handle_EHLO)  # type: ignore[attr-defined]


def _peer_ip(session: Session) -> str:
    peer = session.peer
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return "unknown"


class Sessions:
    """The open SMTP connections: per-address counts, and a drain for stopping."""

    def __init__(self) -> None:
        self.open: set[SMTP] = set()
        self.per_ip: Counter[str] = Counter()

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


@dataclasses.dataclass(frozen=True)
class _DeferredAuth:
    """Returned by the (synchronous) aiosmtpd authenticator hook; checked asynchronously after."""

    login: bytes
    password: bytes


def _defer_auth(server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any) -> Any:
    if isinstance(data, LoginPassword):
        return _DeferredAuth(data.login, data.password)
    return AuthResult(success=False, handled=False)


# RFC 2034 enhanced codes for the replies aiosmtpd writes itself (ours carry them already).
_ENHANCED_CODES = {
    "500": "5.5.2",
    "501": "5.5.4",
    "502": "5.5.1",
    "503": "5.5.1",
    "504": "5.5.4",
    "530": "5.7.0",
    "552": "5.3.4",
    "553": "5.1.3",
    "454": "4.7.0",
}
_HAS_ENHANCED = re.compile(r"\d{3}[ -][245]\.\d{1,3}\.\d{1,3}\b")


def with_enhanced_code(reply: str) -> str:
    """``552 Error: Too much mail data`` → ``552 5.3.4 Error: Too much mail data``."""
    if len(reply) < 4 or reply[3] != " " or reply[0] not in "245" or _HAS_ENHANCED.match(reply):
        return reply
    code = reply[:3]
    return f"{code} {_ENHANCED_CODES.get(code, code[0] + '.0.0')} {reply[4:]}"


class SubmissionSMTP(ChunkedData):
    """aiosmtpd's SMTP with relay's per-connection rules.

    aiosmtpd decides "AUTH needs TLS" once per server and checks credentials
    synchronously; relay decides per client address, and checks argon2 hashes
    off the event loop.
    """

    handler: SubmissionHandler
    sessions: Sessions
    implicit_tls: bool = False
    _refused = False
    _ip = ""

    def __dir__(self) -> list[str]:
        return hook_names(self, ("auth_", "smtp_"))

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """aiosmtpd's own, with a fast path for the usual ``<local@domain> PARAMS`` and without the
        typing.Protocol class it defines on every call (the email package's address parser and that
        class were ~8% of relay's CPU under load)."""
        if not arg:
            return "", ""
        simple = _SIMPLE_PATH.match(arg)
        if simple and not simple.group(2).startswith("("):
            address, rest = simple.group(1), simple.group(2)
        else:
            try:
                parsed, rest = get_angle_addr(arg) if arg.lstrip().startswith("<") else get_addr_spec(arg)
            except HeaderParseError:
                return None, None
            address = parsed.addr_spec
        if address_fault(address) is not None:
            return None, None  # 553 5.1.3: RFC 5321 §4.5.3.1 limits; a control could never be delivered
        return address, rest

    _plain_replies = False  # greeting and HELO/EHLO replies carry no enhanced codes (RFC 2034)
    _held: list[str] | None = None  # the lines of a multi-line reply being gathered, to send in one write

    async def push(self, status: Any) -> None:
        text = status if isinstance(status, str) else status.decode("utf-8", errors="replace")
        if not self._plain_replies and not text.startswith("220 "):
            text = with_enhanced_code(text)
        if self._held is not None:
            self._held.append(text)
            return
        await super().push(text)

    async def _one_write(self, reply: Awaitable[None]) -> None:
        """Run ``reply`` (a command's handler), sending the lines it pushes in one write, not a write each:
        aiosmtpd writes each line of the EHLO reply by itself, and on loopback each write() costs a
        round of the receiver's TCP processing, inside the sender's system call."""
        self._held = []
        try:
            await reply
        finally:
            held, self._held = self._held, None
        if held:
            await super().push("\r\n".join(held))

    async def smtp_EHLO(self, hostname: str) -> None:
        if hostname and not valid_helo_name(hostname):
            await self.push("501 5.5.4 Syntax: EHLO hostname (a domain or address literal, no spaces or controls)")
            return
        self._plain_replies = True
        try:
            await self._one_write(super().smtp_EHLO(hostname))
        finally:
            self._plain_replies = False

    async def smtp_HELO(self, hostname: str) -> None:
        if hostname and not valid_helo_name(hostname):
            await self.push("501 5.5.4 Syntax: HELO hostname (a domain or address literal, no spaces or controls)")
            return
        self._plain_replies = True
        try:
            await super().smtp_HELO(hostname)
        finally:
            self._plain_replies = False

    for _name in ("smtp_EHLO", "smtp_HELO"):  # keep aiosmtpd's HELP texts
        for _attr in ("__smtp_syntax__", "__smtp_syntax_extended__", "__smtp_syntax_when__"):
            setattr(locals()[_name], _attr, getattr(getattr(SMTP, _name), _attr))
    del _name, _attr

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._original_transport is not None:  # the STARTTLS upgrade of a connection we know
            super().connection_made(transport)
            return
        peer = transport.get_extra_info("peername")
        self._ip = str(peer[0]) if isinstance(peer, tuple) else ""
        if self.sessions.per_ip[self._ip] >= self.handler.policy.max_connections_per_ip:
            log.warning("refused a connection from %s: too many connections", self._ip)
            self._refused = True
            # uvloop's transports do not subclass asyncio.WriteTransport, but they write.
            transport.write(b"421 4.7.0 Too many connections from your address, try again later\r\n")  # type: ignore[attr-defined]
            transport.close()
            return
        self.sessions.per_ip[self._ip] += 1
        self.sessions.open.add(self)
        plaintext_ok = is_trusted(self._ip, self.handler.policy.plaintext_auth)
        self._auth_require_tls = not (plaintext_ok or self.implicit_tls)
        super().connection_made(transport)
        if self.implicit_tls and self.session is not None:
            self.session.relay_implicit_tls = True  # type: ignore[attr-defined]

    def connection_lost(self, error: Exception | None) -> None:
        if self._refused:
            return
        if self in self.sessions.open:
            self.sessions.open.discard(self)
            self.sessions.per_ip[self._ip] -= 1
            if self.sessions.per_ip[self._ip] <= 0:
                del self.sessions.per_ip[self._ip]
        super().connection_lost(error)

    def data_received(self, data: bytes) -> None:
        if not self._refused:
            super().data_received(data)

    def eof_received(self) -> bool | None:
        return False if self._refused else super().eof_received()

    async def authenticate(self, args: list[str]) -> str | None:
        """Run the AUTH mechanism and apply its result: the reply to send (None: it was sent already).

        aiosmtpd's smtp_AUTH would do this too, but it also sets the deprecated ``Session.login_data``
        on every success, which logs a deprecation warning per login; relay keeps the credential in
        ``Session.auth_data`` only.
        """
        assert self.session is not None
        result = await self._auth_methods[args[0]].method(self, args)
        if not isinstance(result, AuthResult):  # only AuthResult-style mechanisms are registered
            raise TypeError(f"AUTH {args[0]} returned {result!r}, not an AuthResult")
        if result.success:
            self.session.authenticated = True
            self.session.auth_data = result.auth_data
            return result.message or "235 2.7.0 Authentication successful"
        if result.handled:
            return None
        return result.message or "535 5.7.8 Authentication credentials invalid"

    async def auth_PLAIN(self, _: Any, args: list[str]) -> Any:
        return await self._check(await super().auth_PLAIN(_, args))

    async def auth_LOGIN(self, _: Any, args: list[str]) -> Any:
        return await self._check(await super().auth_LOGIN(_, args))

    async def _check(self, result: Any) -> Any:
        if not isinstance(result, _DeferredAuth):
            return result
        username = result.login.decode("utf-8", errors="replace")
        password = result.password.decode("utf-8", errors="replace")
        try:
            cred = await self.handler.authenticator.login(self._ip, username, password)
        except Throttled:
            return AuthResult(
                success=False,
                handled=False,
                message="454 4.7.0 Too many failed authentication attempts, try again later",
            )
        if cred is None:
            return AuthResult(success=False, handled=False)
        log.info("AUTH ok: %s as %s", self._ip, cred.username)
        return AuthResult(success=True, auth_data=cred)


class ConnectionFactory:
    """Makes the protocol object of each new connection for ``loop.create_server``.

    aiosmtpd's SMTP.__init__ works out, for every connection, what is the same for every connection
    of a listener: it walks the handler's and the server's attributes for hook and command methods
    (dir(), inspect.getmembers(), inspect.signature()) and logs the AUTH mechanisms; ~13% of an
    acceptor's CPU with one connection per message (py-spy, bench/throughput.py --profile). The first
    connection is made by SMTP.__init__ itself; the attributes it set beyond those of
    asyncio.StreamReaderProtocol are kept, and each later connection gets a new StreamReaderProtocol
    part and those attributes, with the server's own methods bound to it.
    tests/test_smtp_factory.py checks that both ways make the same object.
    """

    REBOUND = ("_smtp_methods", "_auth_methods")  # dicts holding methods bound to the server object

    def __init__(self, make: Callable[[], SubmissionSMTP]) -> None:
        self._make = make
        self._shared: dict[str, Any] | None = None
        self._commands: dict[str, Callable[..., Any]] = {}

    def __call__(self) -> SubmissionSMTP:
        if self._shared is None:
            smtp = self._make()
            own = set(vars(_stream_protocol(SubmissionSMTP.__new__(SubmissionSMTP), smtp.loop)))
            self._shared = {k: v for k, v in vars(smtp).items() if k not in own}
            self._commands = {name: method.__func__ for name, method in smtp._smtp_methods.items()}
            return smtp
        return self._clone(self._shared, self._commands)

    @staticmethod
    def _clone(shared: dict[str, Any], commands: dict[str, Callable[..., Any]]) -> SubmissionSMTP:
        smtp = _stream_protocol(SubmissionSMTP.__new__(SubmissionSMTP), shared["loop"])
        smtp.__dict__.update(shared)
        smtp.command_size_limits.clear()  # as SMTP.__init__ does (a class-level dict EHLO adds to)
        smtp._smtp_methods = BoundMethods(commands, smtp)  # type: ignore[assignment]
        smtp._auth_methods = {
            name: _AuthMechAttr(types.MethodType(a.method.__func__, smtp), True) if a.is_builtin else a
            for name, a in shared["_auth_methods"].items()
        }
        return smtp


class BoundMethods(Mapping[str, Any]):
    """A name → method mapping that binds each method to ``owner`` when it is looked up (a connection
    looks up a handful of its ~20 commands; binding them all up front cost ~4% of an acceptor's CPU)."""

    __slots__ = ("_functions", "_owner")

    def __init__(self, functions: dict[str, Callable[..., Any]], owner: object) -> None:
        self._functions = functions
        self._owner = owner

    def __getitem__(self, name: str) -> Any:
        return types.MethodType(self._functions[name], self._owner)

    def __iter__(self) -> Iterator[str]:
        return iter(self._functions)

    def __len__(self) -> int:
        return len(self._functions)


def _stream_protocol(smtp: SubmissionSMTP, loop: asyncio.AbstractEventLoop) -> SubmissionSMTP:
    """The asyncio.StreamReaderProtocol part of a server object, made as SMTP.__init__ makes it."""
    reader = asyncio.StreamReader(loop=loop, limit=smtp.line_length_limit)
    asyncio.StreamReaderProtocol.__init__(smtp, reader, client_connected_cb=smtp._cb_client_connected, loop=loop)
    return smtp


def make_smtp_factory(
    handler: SubmissionHandler,
    config: Config,
    sessions: Sessions,
    tls_context: ssl.SSLContext | None,
    implicit_tls: bool = False,
) -> ConnectionFactory:
    """A protocol factory for ``loop.create_server``: STARTTLS offered with ``tls_context``,
    or (``implicit_tls``) the server socket itself is TLS."""

    def make() -> SubmissionSMTP:
        smtp = SubmissionSMTP(
            handler,
            hostname=config.server.hostname,
            ident="relay",
            data_size_limit=config.smtp.max_message_size,
            enable_SMTPUTF8=True,
            decode_data=False,
            tls_context=None if implicit_tls else tls_context,
            require_starttls=False,
            auth_require_tls=True,
            authenticator=_defer_auth,
            timeout=config.smtp.idle_timeout,
        )
        smtp.handler = handler
        smtp.budget = handler.acceptor.budget
        smtp.sessions = sessions
        smtp.implicit_tls = implicit_tls
        return smtp

    return ConnectionFactory(make)


__all__ = [
    "ConnectionFactory",
    "SubmissionHandler",
    "SubmissionSMTP",
    "Sessions",
    "Policy",
    "make_smtp_factory",
    "is_trusted",
]
