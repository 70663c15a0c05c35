"""What can go wrong in relay, named once.

Every error relay raises on purpose derives from :class:`RelayError`::

    RelayError
    ├── Refused                   relay will not take this request or message; says how, in SMTP and HTTP
    │   ├── Invalid               a request field is missing or wrong             — / 400 (code per case)
    │   ├── MessageTooLarge       bigger than [server] max_message_size           552 5.3.4 / 413
    │   ├── DomainNotVerified     From: domain not a verified sending domain      550 5.7.1 / 422
    │   ├── RecipientsSuppressed  every recipient is on the suppression list      550 5.7.1 / 422
    │   ├── QuotaExhausted        the API key's daily or monthly quota is used up 452 4.3.1 / 402
    │   └── Overloaded            the queue is too deep or the disk too full      452 4.3.1 / 503 + Retry-After
    ├── StoreError                the queue database could not do what was asked
    │   ├── StoreFull             the disk (or the database's quota) is full: retry later, nothing was written
    │   └── StoreUnavailable      the database cannot be read or written (locked past its timeout, I/O error)
    └── the errors of one part, defined beside the code that raises them:
        ConfigError, StartupError (start-up); FieldError (compose), RenderError (templates),
        RendererBusy; UnreadableFrom (message); DomainError (domains); TargetError (webhooks);
        HttpError (webhook_http); RouteError, StaleConnection (delivery); Throttled, BodyTooLarge,
        LineTooLong, OverBudget (submission); Busy (inbound); ClaimLost, BodyDeleted (store);
        CommandError (cli)

A :class:`Refused` carries both of its answers, so the SMTP handler and the HTTP
API each write ``exc.smtp_reply()`` or ``exc.http_status`` / ``exc.code`` and
never map a refusal themselves. The store raises the ``StoreError`` kinds instead
of its driver's exceptions, so nothing above ``relay/store/`` needs to know which
database is underneath.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping


class RelayError(Exception):
    """The base of every error relay raises on purpose."""


class Refused(RelayError):
    """Relay will not take this request or message. ``field`` names the request field at fault (HTTP),
    relative to the message; :meth:`within` prefixes it for one item of a batch."""

    smtp_code = 550
    smtp_status = "5.7.1"
    http_status = 400
    code = "refused"

    def __init__(self, message: str, field: str | None = None, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.retry_after = retry_after

    def smtp_text(self) -> str:
        return self.message

    def smtp_reply(self) -> str:
        """The whole SMTP reply line: code, enhanced status, text."""
        return f"{self.smtp_code} {self.smtp_status} {self.smtp_text()}"

    def http_message(self) -> str:
        return self.message

    def http_headers(self) -> dict[str, str]:
        return {} if self.retry_after is None else {"Retry-After": str(self.retry_after)}

    def within(self, prefix: str) -> Refused:
        """The same refusal with ``field`` seen from the whole request (``messages[3].`` + ``from``); one
        without a field names the item (``messages[3].``)."""
        if not prefix:
            return self
        moved = copy.copy(self)
        moved.field = prefix + (self.field or "")
        return moved


class Invalid(Refused):
    """A request field is missing or invalid. ``code`` is the JSON error code (``invalid_field``,
    ``missing_field``, ``template_render_failed`` …); an SMTP client never sees one."""

    smtp_code = 550
    smtp_status = "5.6.0"

    def __init__(
        self,
        code: str,
        message: str,
        field: str | None = None,
        *,
        http_status: int = 400,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message, field, retry_after=retry_after)
        self.code = code
        self.http_status = http_status


class MessageTooLarge(Refused):
    """Bigger than [server] max_message_size, counted as the client sent it."""

    smtp_code, smtp_status = 552, "5.3.4"
    http_status, code = 413, "message_too_large"

    def smtp_text(self) -> str:
        return "Message too big"


class DomainNotVerified(Refused):
    """The From: domain is not a verified sending domain ([domains] require_verified_domain)."""

    http_status, code = 422, "domain_not_verified"

    def __init__(self, message: str) -> None:
        super().__init__(message, "from")


class RecipientsSuppressed(Refused):
    """Every recipient is on the suppression list (``suppressed``: address → reason)."""

    http_status, code = 422, "recipients_suppressed"

    def __init__(self, suppressed: Mapping[str, str]) -> None:
        listed = ", ".join(f"{a}: {r}" for a, r in suppressed.items())
        super().__init__(f"every recipient is on the suppression list ({listed})", "to")
        self.suppressed = dict(suppressed)

    def smtp_text(self) -> str:
        return "; ".join(f"<{a}>: recipient is on the suppression list ({r})" for a, r in self.suppressed.items())


class QuotaExhausted(Refused):
    """The API key's daily or monthly sending quota is used up."""

    smtp_code, smtp_status = 452, "4.3.1"
    http_status, code = 402, "quota_exhausted"

    def __init__(self, period: str, limit: int) -> None:
        super().__init__(f"the {'daily' if period == 'd' else 'monthly'} quota of {limit} messages is used up")
        self.period = period  # "d" or "m"
        self.limit = limit

    def smtp_text(self) -> str:
        return "Insufficient system storage, try again later"


class Overloaded(Refused):
    """Submission is refused for now (queue depth, free disk); ``retry_after`` seconds is a fair wait."""

    smtp_code, smtp_status = 452, "4.3.1"
    http_status, code = 503, "service_unavailable"

    def __init__(self, reason: str, retry_after: int = 60) -> None:
        super().__init__(reason, retry_after=retry_after)

    def smtp_text(self) -> str:
        return "Insufficient system storage, try again later"

    def http_message(self) -> str:
        return f"submission is paused: {self.message}"


class StoreError(RelayError):
    """The queue database could not do what was asked; nothing was half-written."""


class StoreFull(StoreError):
    """The disk or database holding the queue is full."""


class StoreUnavailable(StoreError):
    """The queue database cannot be read or written just now."""
