"""Deferral reasons: an SMTP reply with what varies per message taken out, so replies group into reasons. Pure.

"452 4.2.2 <bob@example.com>: mailbox full" from a thousand recipients is one reason, "452 4.2.2 <address>:
mailbox full", counted a thousand times. Taken out, in this order:

* continuation prefixes and the enhanced code repeated on every line of a multiline reply
  ("452-4.2.2 ...", or "4.2.2 " again after relay joined the lines), so a reply reads as one line;
* timestamps (ISO 8601 and RFC 5322 dates) → ``<time>``, e-mail addresses → ``<address>``,
  IPv4 and IPv6 addresses → ``<ip>``;
* per-message tokens: a word of eight characters or more mixing letters and digits (queue ids, Gmail's
  ``d2e1a72fcca58-...si123.45``, Outlook's server names ``DB5EUR03FT012``) → ``<id>``;
* standalone numbers → ``<n>``.

URLs are kept whole: a help page's address names the reason.

The reply code and the leading enhanced status code are kept as they came, and so are short codes that name
a reason (Yahoo's ``TSS04``, Outlook's ``S77719``) and host names without digits.
"""

from __future__ import annotations

import re

NO_REPLY = "(no reply)"  # the reason of a deferral without code or text
MAX_LENGTH = 200  # a reason longer than this is cut (with "…"): enough to tell reasons apart

_LEAD = re.compile(
    r"^\s*(?:(?P<code>[245]\d\d)(?![\d.])[ -]?)?\s*(?:(?P<enhanced>[245]\.\d{1,3}\.\d{1,3})(?![\d.]))?\s*"
)
_CONTINUATION = re.compile(r"(?:^|\s)[245]\d\d[ -](?=\S)")
_TIME = re.compile(
    r"\b\d{4}-\d\d-\d\d[T ]\d\d:\d\d(?::\d\d(?:\.\d+)?)?(?:Z|[+-]\d\d:?\d\d)?"
    r"|\b(?:(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun),\s*)?\d{1,2}\s+(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)\s+"
    r"\d{4}\s+\d\d:\d\d(?::\d\d)?(?:\s*(?:[+-]\d{4}|GMT|UTC))?",
    re.IGNORECASE,
)
_ADDRESS = re.compile(r"<?[^\s<>@\"':;,()\[\]]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}>?|<[^\s<>]*@[^\s<>]*>")
_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w.])")
_IPV6 = re.compile(r"(?<![\w:])(?:IPv6:)?(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")
_TOKEN = re.compile(r"(?<![\w<])(?=[\w+/=-]*\d)(?=[\w+/=-]*[A-Za-z])[\w+/=-]{8,}(?![\w>])")
_NUMBER = re.compile(r"(?<![\w<])(?<!\w\.)\d+(?:[.,]\d+)*(?![\w>])")
_URL = re.compile(r"\b(?:https?|ftp)://\S+", re.IGNORECASE)
_SPACES = re.compile(r"\s+")


def deferral_reason(code: int | None, text: str | None) -> str:
    """The reason a reply stands for: ``(452, "4.2.2 <a@b.example>: mailbox full")`` → ``"452 4.2.2 <address>:
    mailbox full"``. ``code`` is the reply code when it is stored apart from the text (None: none, or in the
    text); a reply without text is its code alone, and one without either :data:`NO_REPLY`."""
    text = _SPACES.sub(" ", text or "").strip()
    lead = _LEAD.match(text)
    assert lead is not None  # every part is optional: it matches at the start of any text
    first_code = lead.group("code") or (str(code) if code is not None else None)
    enhanced = lead.group("enhanced")
    rest = _one_line(text[lead.end() :], enhanced)
    pieces, urls = _URL.split(rest), _URL.findall(rest)
    rest = "".join(_variable_parts_out(piece) + (urls[i] if i < len(urls) else "") for i, piece in enumerate(pieces))
    reason = " ".join(part for part in (first_code, enhanced, _SPACES.sub(" ", rest).strip()) if part) or NO_REPLY
    return reason if len(reason) <= MAX_LENGTH else reason[: MAX_LENGTH - 1] + "…"


def _variable_parts_out(text: str) -> str:
    """Outside URLs (a help page's address names the reason, it does not vary per message)."""
    text = _TIME.sub("<time>", text)
    text = _ADDRESS.sub("<address>", text)
    text = _IPV4.sub("<ip>", text)
    text = _IPV6.sub(_ipv6, text)
    text = _TOKEN.sub("<id>", text)
    return _NUMBER.sub("<n>", text)


def _one_line(rest: str, enhanced: str | None) -> str:
    """Drop what a multiline reply repeats on each line: "452-" / "452 " prefixes and the enhanced code."""
    rest = _CONTINUATION.sub(" ", rest)
    if enhanced:
        rest = re.sub(rf"(?:^|\s){re.escape(enhanced)}(?=\s|$)", " ", rest)
    return rest


def _ipv6(match: re.Match[str]) -> str:
    """Only what has at least two groups of hex digits is an address (not "10:30", not "::")."""
    value = match.group(0)
    return "<ip>" if sum(1 for part in value.split(":") if part) >= 2 and value.count(":") >= 2 else value


def reply_text(code: int | None, text: str | None) -> str:
    """A reply as received, its code first: ``(452, "4.2.2 mailbox full")`` → ``"452 4.2.2 mailbox full"``."""
    return " ".join(str(part) for part in (code, text) if part not in (None, ""))
