"""What one SMTP submission connection knows: its session (who the client is) and its envelope (the
transaction in progress). Plain objects with slots: the server makes a new envelope per transaction."""

from __future__ import annotations

from relay.credentials import SmtpCredential


class Session:
    """One connection's state since its greeting (or since STARTTLS, which starts a new one)."""

    __slots__ = ("authenticated", "credential", "extended_smtp", "host_name", "implicit_tls", "ip", "peer", "tls")

    def __init__(self, peer: object, ip: str, *, tls: bool = False, implicit_tls: bool = False) -> None:
        self.peer = peer  # the transport's peername
        self.ip = ip  # the client's address, "unknown" when the transport had none
        self.tls = tls  # the connection is encrypted (STARTTLS done, or implicit TLS)
        self.implicit_tls = implicit_tls  # encrypted from the first byte (port 465)
        self.host_name: str | None = None  # the EHLO/HELO argument
        self.extended_smtp = False  # EHLO (not HELO) was the last greeting
        self.authenticated = False
        self.credential: SmtpCredential | None = None  # set by a good AUTH


class Envelope:
    """One mail transaction: MAIL FROM, its recipients, and (after DATA) the body."""

    __slots__ = ("content", "data_size", "mail_from", "mail_options", "rcpt_keys", "rcpt_options", "rcpt_tos")

    def __init__(self) -> None:
        self.mail_from: str | None = None
        self.mail_options: list[str] = []
        self.rcpt_tos: list[str] = []
        self.rcpt_keys: set[str] = set()  # relay.message.recipient_key of each of rcpt_tos: a repeat is taken once
        self.rcpt_options: list[str] = []
        self.content: bytes | None = None  # the body as received, dot-unstuffed, CRLF line ends
        self.data_size: int | None = None  # the bytes the client sent in DATA (before unstuffing)
