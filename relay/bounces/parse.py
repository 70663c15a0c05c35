"""Reading returned mail: which recipients failed, why, and for which original message. Pure.

Three kinds of returned mail come back to a bounce address:

- delivery status notifications (RFC 3464: ``multipart/report;
  report-type=delivery-status``), one block of fields per recipient;
- complaint reports (ARF, RFC 5965: ``report-type=feedback-report``);
- bounces written in prose by MTAs that predate DSNs or ignore them (qmail,
  old Exim, Sendmail, Exchange, Lotus Notes, webmail providers), read with
  heuristics.

A delay warning is not a failure and an out-of-office answer is not a
bounce: both give no reports. The parser never raises on any input; what it
cannot read gives no reports, with ``kind`` saying why.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import email
import email.message
import quopri
import re
from collections.abc import Iterator
from email.policy import compat32
from typing import Any

from relay.bounces.classify import ENHANCED, Classification, Kind, Phase, classify, enhanced_status, phase_in_text

MAX_DIAGNOSTIC = 1000  # characters of remote text kept per recipient
MAX_CLASSIFIED = 4000  # characters of a diagnostic the classifier reads (a reply is a few lines)
# Characters of diagnostics one report has read in full (~1.5 us each); after them, each recipient's first
# SHORT_CLASSIFIED: a real report with many recipients repeats one short reply, which is read once.
CLASSIFIED_PER_REPORT = 200_000
SHORT_CLASSIFIED = 300
# Failed recipients read from one report, DSN or prose: as many as a message of relay's may have ([smtp]
# max_recipients' default). Anyone may send the inbound port a 10 MB report naming 100,000: 20,000 took 6 s
# of CPU, 2,400 with distinct 4 KB diagnostics 11 s, in the parser's thread but holding the GIL.
MAX_REPORTS = 1000


@dataclasses.dataclass(frozen=True)
class Report:
    """One failed recipient (or one complaint) in a returned message."""

    recipient: str | None  # None: the report does not say (a redacted complaint)
    status: str | None  # enhanced status code, e.g. "5.1.1"
    action: str  # "failed" or "complaint"
    classification: Kind
    reason: str
    diagnostic: str  # what the remote side said
    remote_mta: str | None
    original_message_id: str | None  # without angle brackets

    def as_json(self) -> dict[str, Any]:
        return {
            "recipient": self.recipient,
            "status": self.status,
            "action": self.action,
            "classification": self.classification.value,
            "reason": self.reason,
            "diagnostic": self.diagnostic,
            "remote_mta": self.remote_mta,
            "original_message_id": self.original_message_id,
        }


@dataclasses.dataclass(frozen=True)
class Parsed:
    kind: str  # dsn, arf, prose, delayed, auto_reply, not_a_bounce
    reports: list[Report]
    original_message_id: str | None = None
    original_recipients: tuple[str, ...] = ()  # To/Cc of the returned message, when it came back
    return_path: str | None = None  # the original envelope sender, as the report states it


def parse(raw: bytes) -> Parsed:
    """Parse one returned message (the bytes an inbound SMTP session received)."""
    try:
        msg = email.message_from_bytes(raw, policy=compat32)
    except Exception:  # the email package is lenient; this is for the cases it is not
        return Parsed("not_a_bounce", [])
    original = _returned_headers(msg) or _inline_original(msg)
    parsed = _parse(msg, original)
    if parsed.return_path is None and original is not None:  # the report did not say: the returned copy may
        parsed = dataclasses.replace(parsed, return_path=_address_value(_header(original, "return-path")))
    return parsed


def _parse(msg: email.message.Message, original: email.message.Message | None) -> Parsed:
    original_id = _message_id(original) if original is not None else None
    original_id = original_id or _message_id_in_text(_all_text(msg))
    recipients = _addresses(original, "to", "cc") if original is not None else ()
    senders = _addresses(original, "from", "sender", "reply-to", "return-path") if original is not None else ()
    feedback = _find_part(msg, "message/feedback-report")
    if feedback is not None:
        return _parse_arf(msg, feedback, original, original_id, recipients)
    status = _find_part(msg, "message/delivery-status", "message/global-delivery-status")
    fields = _text_of(status) if status is not None else _human_text(msg)
    parsed = _parse_dsn(msg, fields, original_id, recipients, senders)
    if parsed is not None:
        return parsed
    return _parse_prose(msg, original_id, recipients, senders)


# -- MIME helpers -----------------------------------------------------------------------


def _parts(msg: email.message.Message) -> Iterator[email.message.Message]:
    """Every part of the report itself, not descending into the returned message."""
    yield msg
    if msg.get_content_type() in ("message/rfc822", "message/global", "text/rfc822-headers"):
        return
    payload = msg.get_payload()
    if msg.is_multipart() and isinstance(payload, list):
        for part in payload:
            if isinstance(part, email.message.Message):
                yield from _parts(part)


def _find_part(msg: email.message.Message, *content_types: str) -> email.message.Message | None:
    for part in _parts(msg):
        if part.get_content_type() in content_types:
            return part
    return None


def _clean(text: str) -> str:
    """Text safe to store and print as UTF-8 (undecodable bytes become U+FFFD)."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeError:
        return text.encode("utf-8", "replace").decode("utf-8")


def _header(msg: email.message.Message, name: str) -> str:
    try:
        value = msg.get(name)
        return _clean(str(value)).strip() if value is not None else ""
    except Exception:
        return ""


def _text_of(part: email.message.Message) -> str:
    """A leaf part's content as text, transfer encoding and charset undone as well as they can be."""
    payload = part.get_payload()
    if isinstance(payload, list):  # message/* parsed into header blocks
        text = "\n\n".join(_block_text(p) for p in payload if isinstance(p, email.message.Message))
        return _undo_transfer_encoding(text, _header(part, "content-transfer-encoding").lower())
    try:
        data = part.get_payload(decode=True)
    except Exception:
        data = None
    if not isinstance(data, bytes):
        return _clean(payload) if isinstance(payload, str) else ""
    charset = part.get_content_charset() or "utf-8"
    try:
        return data.decode(charset, "replace")
    except LookupError:
        return data.decode("utf-8", "replace")


def _undo_transfer_encoding(text: str, encoding: str) -> str:
    """The email package splits message/delivery-status into header blocks before decoding it;
    an encoded report ends up as one block of encoded text, decoded here."""
    try:
        if encoding == "base64":
            return base64.b64decode(re.sub(r"\s+", "", text) + "==", validate=False).decode("utf-8", "replace")
        if encoding == "quoted-printable":
            return quopri.decodestring(text.encode("utf-8", "replace")).decode("utf-8", "replace")
    except (ValueError, binascii.Error):
        return text
    return text


def _block_text(block: email.message.Message) -> str:
    lines = [f"{name}: {_clean(str(value))}" for name, value in block.items()]
    body = block.get_payload()
    if isinstance(body, str) and body.strip():
        lines.append(_clean(body))
    return "\n".join(lines)


def _human_text(msg: email.message.Message) -> str:
    """The readable explanation: text/plain parts of the report (text/html as a fallback)."""
    plain, html = [], []
    for part in _parts(msg):
        if part.is_multipart():
            continue
        ctype = part.get_content_type()
        if ctype == "text/plain":
            plain.append(_text_of(part))
        elif ctype == "text/html":
            html.append(_strip_html(_text_of(part)))
    return "\n".join(plain or html)


def _all_text(msg: email.message.Message) -> str:
    texts = []
    for part in msg.walk():
        if not part.is_multipart():
            texts.append(_text_of(part))
    return "\n".join(texts)


def _strip_html(html: str) -> str:
    html = re.sub(r"(?is)<(script|style)\b.*?</\1>", " ", html)
    html = re.sub(r"(?i)<br\s*/?>|</p>|</div>|</tr>", "\n", html)
    text = re.sub(r"<[^>]*>", " ", html)
    for entity, char in (
        ("&lt;", "<"),
        ("&gt;", ">"),
        ("&nbsp;", " "),
        ("&quot;", '"'),
        ("&#39;", "'"),
        ("&amp;", "&"),
    ):
        text = text.replace(entity, char)
    return text


def _returned_headers(msg: email.message.Message) -> email.message.Message | None:
    """The headers of the message that bounced, when the report carries them."""
    for part in _parts(msg):
        ctype = part.get_content_type()
        if ctype in ("message/rfc822", "message/global"):
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], email.message.Message):
                return payload[0]
        elif ctype == "text/rfc822-headers":
            try:
                return email.message_from_string(_text_of(part), policy=compat32)
            except Exception:
                return None
    return None


def _inline_original(msg: email.message.Message) -> email.message.Message | None:
    """The copy of the message a prose bounce appends after a marker line, read as headers."""
    body = _human_text(msg) if msg.is_multipart() else _text_of(msg)
    parts = _COPY_MARKER.split(body, maxsplit=1)
    if len(parts) < 2:
        return None
    copy = parts[1].split("\n", 1)[1] if "\n" in parts[1] else ""
    try:
        headers = email.message_from_string(copy.lstrip("\r\n"), policy=compat32)
    except Exception:
        return None
    return headers if headers.keys() else None


_MESSAGE_ID = re.compile(r"(?im)^[ \t>]*message-id:[ \t]*(?:\r?\n[ \t]+)?<([^<>\s]+)>")


def _message_id(headers: email.message.Message) -> str | None:
    value = _header(headers, "message-id")
    match = re.search(r"<([^<>\s]+)>", value)
    return match.group(1) if match else (value or None)


def _message_id_in_text(text: str) -> str | None:
    """A Message-ID header quoted in the body (the copy of the message a prose bounce appends)."""
    matches = _MESSAGE_ID.findall(text)
    return matches[-1] if matches else None


# The lookbehind starts a match only where a local part can start: without it, a long run of
# local-part characters with no @ was scanned again from each of its positions (quadratic).
_ADDRESS = re.compile(
    r"(?<![A-Za-z0-9!#$%&'*+/=?^_`{|}~.-])[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@(?:[A-Za-z0-9-]+\.)+[A-Za-z0-9-]{2,}"
)


def _addresses(msg: email.message.Message, *names: str) -> tuple[str, ...]:
    found: list[str] = []
    for name in names:
        for address in _ADDRESS.findall(_header(msg, name)):
            if address.lower() not in found:
                found.append(address.lower())
    return tuple(found)


# -- fields (DSN and ARF) -------------------------------------------------------------------


def _fields(text: str) -> list[dict[str, str]]:
    """Blocks of ``Name: value`` fields separated by blank lines, continuation lines unfolded."""
    blocks: list[dict[str, str]] = []
    current: dict[str, str] = {}
    last = ""
    for line in text.replace("\r\n", "\n").split("\n"):
        if not line.strip():
            if current:
                blocks.append(current)
            current, last = {}, ""
            continue
        if line[0] in " \t" and last:
            current[last] += " " + line.strip()
            continue
        name, colon, value = line.partition(":")
        if not colon or not re.fullmatch(r"[A-Za-z0-9-]+", name.strip()):
            continue
        last = name.strip().lower()
        if last in ("final-recipient", "original-recipient") and last in current:
            blocks.append(current)  # a new recipient without the blank line between
            current = {}
        current[last] = value.strip()
    if current:
        blocks.append(current)
    return blocks


def _typed(value: str) -> str:
    """``"rfc822; bob@example.com"`` → ``"bob@example.com"``; ``"smtp; 550 ..."`` → ``"550 ..."``."""
    kind, semi, rest = value.partition(";")
    text = rest if semi and re.fullmatch(r"\s*[A-Za-z0-9-]+\s*", kind) else value
    return text.strip()


def _address_value(value: str) -> str | None:
    match = _ADDRESS.search(_typed(value))
    return match.group(0).lower() if match else None


# A reply code is not part of a word, a number or an address, and does not end a line that goes on: a
# number there is a value ("Size (bytes): 512" in Verizon's message details), not a reply.
_CODE = re.compile(r"(?<![\w.#-])([245]\d\d)(?![\w.])(?![ \t]*\r?\n)")


def reply_code(text: str) -> int | None:
    """The first SMTP reply code in a diagnostic ("550 5.1.1 ...", "said: 550-5.1.1 ...")."""
    match = _CODE.search(text)
    return int(match.group(1)) if match else None


def _classify(
    status: str | None, diagnostic: str, remote: str | None, permanent: bool, phase: Phase = Phase.UNKNOWN
) -> Classification:
    """The classifier, fed the most specific status there is: a x.0.0 Status field says less
    than a code in the diagnostic. Without any code, the report's own verdict stands in. ``phase``:
    the SMTP command the report says the reply answered (from the diagnostic when it names one)."""
    diagnostic = diagnostic[:MAX_CLASSIFIED]
    if phase is Phase.UNKNOWN:
        phase = phase_in_text(diagnostic)
    code = reply_code(diagnostic)
    in_text = _specific_status(diagnostic)
    if in_text is not None and in_text[0] == "2":  # a failure does not carry a success code ("#2.1.1" in LDAP errors)
        diagnostic = re.sub(r"(?<![\d.])2\.\d{1,3}\.\d{1,3}(?![\d.])", "", diagnostic)
        in_text = _specific_status(diagnostic)
    if status is not None and status[0] == "2":
        status = None
    if code is not None and code < 400:
        code = None
    if status is None or (_generic(status) and in_text is not None):
        status = in_text or status
    if code is None:
        klass = status[0] if status else ("5" if permanent else "4")
        code = 550 if klass == "5" else 450
    return classify(code, status, diagnostic, remote, phase)


def _generic(status: str) -> bool:
    """x.0.0 (other or undefined) and x.1.0 (other address status, Amazon WorkMail's wrapper) say less
    than the code of the reply they report."""
    return status.endswith((".0.0", ".1.0"))


def _specific_status(text: str) -> str | None:
    """The first enhanced status in ``text`` that is not generic, else the first one: WorkMail's
    "5.1.0 - Unknown address error 550-'5.1.1 ...'" reports a 5.1.1."""
    first = None
    for match in ENHANCED.finditer(text):
        status = ".".join(match.groups())
        if not _generic(status):
            return status
        first = first or status
    return first


# -- DSN ----------------------------------------------------------------------------------------


def _parse_dsn(
    msg: email.message.Message,
    fields_text: str,
    original_id: str | None,
    recipients: tuple[str, ...],
    senders: tuple[str, ...],
) -> Parsed | None:
    """Per-recipient fields, from a delivery-status part (or, for MTAs that put them in the text, from
    the text). None when there are none."""
    blocks = _fields(fields_text)
    per_message = blocks[0] if blocks and not _is_recipient_block(blocks[0]) else {}
    reporting = _typed(per_message.get("reporting-mta", "")) or None
    recipient_blocks = [b for b in blocks if _is_recipient_block(b) and ("action" in b or "status" in b)]
    del recipient_blocks[MAX_REPORTS:]
    if not recipient_blocks:
        return None
    human = _explanation(msg)
    reports, delayed, unnamed = [], False, 0
    sections: dict[str, str] | None = None  # what the human part says about each recipient, read once
    budget = CLASSIFIED_PER_REPORT  # characters of diagnostics still read in full
    readings: dict[tuple[str | None, str, str | None], tuple[Classification, Phase]] = {}  # one per distinct text
    for block in recipient_blocks:
        action = block.get("action", "").strip().lower()
        status = enhanced_status(block.get("status", ""))
        failed = action.startswith("fail") or (not action and status is not None and status[0] in "45")
        if action.startswith("delay"):
            delayed = True
        if not failed:
            continue
        recipient = _address_value(block.get("final-recipient", "")) or _address_value(
            block.get("original-recipient", "")
        )
        if recipient is None:  # an X.400 or redacted address: the prose may name it
            named = _failed_addresses(msg, human, recipients, senders, original_id)
            recipient = named[unnamed] if unnamed < len(named) else None
            unnamed += 1
        limit = MAX_CLASSIFIED if budget > 0 else SHORT_CLASSIFIED
        diagnostic = _typed(block.get("diagnostic-code", ""))[:limit]
        if not diagnostic and recipient:
            sections = sections if sections is not None else _dsn_sections(human, recipient_blocks, recipient)
            diagnostic = sections.get(recipient, "")[:limit]
        remote = _typed(block.get("remote-mta", "")) or _host_in(diagnostic)
        key = (status, diagnostic, remote or reporting)
        if key not in readings:
            budget -= len(diagnostic)
            phase = phase_in_text(diagnostic)
            readings[key] = _classify(status, diagnostic, remote or reporting, permanent=True, phase=phase), phase
        c, phase = readings[key]
        if c.kind is Kind.HARD and phase is Phase.UNKNOWN and recipient:  # the human part may say where it came
            sections = sections if sections is not None else _dsn_sections(human, recipient_blocks, recipient)
            section = sections.get(recipient, "")[:limit]
            budget -= len(section)
            said = phase_in_text(section)
            if said is not Phase.UNKNOWN:
                c = _classify(status, diagnostic, remote or reporting, permanent=True, phase=said)
        reports.append(
            Report(recipient, c.status or status, "failed", c.kind, c.reason, _squash(diagnostic), remote, original_id)
        )
    if reports:
        return Parsed("dsn", reports, original_id, recipients)
    return Parsed("delayed" if delayed else "dsn", [], original_id, recipients)


def _dsn_sections(human: str, blocks: list[dict[str, str]], recipient: str) -> dict[str, str]:
    """What the human part says about each failed recipient of a DSN (computed once per report)."""
    named = [a for b in blocks for a in [_address_value(b.get("final-recipient", ""))] if a]
    return _sections(human, list(dict.fromkeys([*named, recipient]))[:MAX_REPORTS])


def _is_recipient_block(block: dict[str, str]) -> bool:
    return "final-recipient" in block or "original-recipient" in block


def _squash(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()[:MAX_DIAGNOSTIC]


def _host_in(text: str) -> str | None:
    match = re.search(r"\bhost\s+([A-Za-z0-9.-]+\.[A-Za-z]{2,})\.?\s*\[", text)
    return match.group(1).lower() if match else None


# -- ARF ----------------------------------------------------------------------------------------


def _parse_arf(
    msg: email.message.Message,
    part: email.message.Message,
    original: email.message.Message | None,
    original_id: str | None,
    recipients: tuple[str, ...],
) -> Parsed:
    fields: dict[str, str] = {}
    for block in _fields(_text_of(part)):
        for name, value in block.items():
            fields.setdefault(name, value)
    feedback_type = fields.get("feedback-type", "abuse").strip().lower() or "abuse"
    if feedback_type == "not-spam":
        return Parsed("arf", [], original_id, recipients)
    # Original-Rcpt-To, else Removal-Recipient, else the returned message's only recipient; a redacted
    # form (the local part blanked out, or "redacted") names no one and gives way to the next.
    candidates = [
        _address_value(fields.get("original-rcpt-to", "")),
        _address_value(fields.get("removal-recipient", "")),
        recipients[0] if len(recipients) == 1 else None,
    ]
    recipient = next((a for a in candidates if a is not None and not _redacted(a)), None)
    detail = "; ".join(f"{n}: {fields[n]}" for n in ("feedback-type", "user-agent", "source-ip") if n in fields)
    remote = _typed(fields.get("reporting-mta", "")) or None
    report = Report(recipient, None, "complaint", Kind.COMPLAINT, feedback_type, _squash(detail), remote, original_id)
    return_path = _address_value(fields.get("original-mail-from", ""))
    return Parsed("arf", [report], original_id, recipients, return_path)


def _redacted(address: str) -> bool:
    local = address.partition("@")[0]
    return "redacted" in local or bool(re.fullmatch(r"x+|\*+", local))


# -- prose bounces --------------------------------------------------------------------------

_BOUNCE_SUBJECT = re.compile(
    r"undeliver|undelivered|returned mail|mail delivery (?:failed|failure|system)|delivery (?:status )?notification"
    r"|delivery fail|failure notice|could not be delivered|non[- ]?deliver|nicht zustellbar|unzustellbar"
    r"|non remis|no se puede entregar|delivery problem|rejected|mail system error|returned to sender",
    re.IGNORECASE,
)
_DAEMON = re.compile(r"mailer-daemon|postmaster|mail delivery (?:system|subsystem)|mail-daemon", re.IGNORECASE)
_DELAY = re.compile(
    r"has not yet been delivered|not been delivered yet|will (?:continue to )?(?:be )?(?:retr(?:y|ied)|try)"
    r"|warning message only|delivery (?:has been |is )?delayed|delayed mail|\(delay\)|message (?:is )?delayed"
    r"|will keep trying|still trying|delivery incomplete|temporary problem delivering",
    re.IGNORECASE,
)
_FAILURE = re.compile(
    r"permanent(?:ly)? (?:fatal )?(?:error|failure)|could ?n[o']t be delivered|not be delivered|wasn't delivered"
    r"|was not delivered|delivery (?:to the following recipients? )?(?:has )?failed|undeliverable"
    r"|I've given up|giving up|address not found|does not exist|unknown user|user unknown|cannot be reached"
    r"|failed permanently|rejected|returned to sender|not deliverable|following address(?:es)? failed",
    re.IGNORECASE,
)
_AUTO_SUBJECT = re.compile(
    r"out of (?:the )?office|automatic reply|auto(?:matic)?[- ]?(?:reply|response|respond)|^auto:|vacation"
    r"|abwesenheit|réponse automatique|respuesta automática|resposta automática|risposta automatica"
    r"|away from (?:the|my) office|on leave|absence",
    re.IGNORECASE,
)
_COPY_MARKER = re.compile(
    r"(?im)^.{0,40}?(?:this is a copy of (?:the|your) message|below this line is a copy|original message follows"
    r"|original message headers|unsent message follows|returned message follows|message headers follow"
    r"|your message reads|copy of (?:the |your )?original message|-{3,} ?original message ?-{3,}"
    r"|header of the original message|original mail as follows|^(?:return-path|received):)",
)
SECTION_PARAGRAPHS = 20  # paragraphs that may describe one address

_NOT_RECIPIENTS = re.compile(
    r"^(?:mailer-daemon|postmaster|abuse|hostmaster|root|noreply|no-reply|donotreply|do-not-reply|bounce|bounces"
    r"|b\+.*)@",
    re.IGNORECASE,
)


def _parse_prose(
    msg: email.message.Message, original_id: str | None, recipients: tuple[str, ...], senders: tuple[str, ...]
) -> Parsed:
    subject, sender = _header(msg, "subject"), _header(msg, "from")
    explanation = _explanation(msg)
    looks_bounced = bool(
        _BOUNCE_SUBJECT.search(subject)
        or _DAEMON.search(sender)
        or msg.get("x-failed-recipients")
        or _header(msg, "content-type").lower().startswith("multipart/report")
        or "fml" in _header(msg, "x-mlserver").lower()  # fml's refusals come from the list's -admin address
    )
    if not looks_bounced:
        if _is_auto_reply(msg, subject):
            return Parsed("auto_reply", [], original_id, recipients)
        if not _FAILURE.search(explanation):
            return Parsed("not_a_bounce", [], original_id, recipients)
    if (
        not msg.get("x-failed-recipients")
        and _DELAY.search(subject + "\n" + explanation)
        and not re.search(
            r"permanent (?:fatal )?error|permanent failure|given up|giving up|could not be delivered|undeliverable",
            subject + "\n" + explanation,
            re.IGNORECASE,
        )
    ):
        return Parsed("delayed", [], original_id, recipients)
    failed = _failed_addresses(msg, explanation, recipients, senders, original_id)
    sections = _sections(explanation, failed)
    permanent = not _DELAY.search(explanation)
    # au (KDDI) marks what the recipient's own filter refused with "X-SPASIGN: NG": the address is live.
    filtered = _header(msg, "x-spasign").upper() == "NG"
    reports = []
    classified: dict[str, tuple[str | None, Classification]] = {}  # one reading per distinct section
    for address in failed:
        section = sections.get(address) or explanation
        if section not in classified:
            host = _host_in(section)
            c = _classify(enhanced_status(section), section, host, permanent)
            classified[section] = host, Classification(Kind.SOFT, "filtered", c.status) if filtered else c
        host, c = classified[section]
        reports.append(Report(address, c.status, "failed", c.kind, c.reason, _squash(section), host, original_id))
    if not reports:
        return Parsed("prose" if looks_bounced else "not_a_bounce", [], original_id, recipients)
    return Parsed("prose", reports, original_id, recipients)


def _explanation(msg: email.message.Message) -> str:
    """The human-readable text up to the copy of the original message, without quoted header lines."""
    body = (_human_text(msg) if msg.is_multipart() else _text_of(msg)).replace("\r\n", "\n")
    text = _COPY_MARKER.split(body, maxsplit=1)[0]
    return re.sub(r"(?im)^[ \t]*(?:message-id|in-reply-to|references):.*$", "", text)


def _is_auto_reply(msg: email.message.Message, subject: str) -> bool:
    auto = _header(msg, "auto-submitted").lower()
    return bool(
        auto.startswith("auto-replied")
        or msg.get("x-autoreply")
        or msg.get("x-autorespond")
        or msg.get("x-autoresponder")
        or _header(msg, "precedence").lower() == "auto_reply"
        or _AUTO_SUBJECT.search(subject)
    )


def _failed_addresses(
    msg: email.message.Message,
    explanation: str,
    recipients: tuple[str, ...],
    senders: tuple[str, ...],
    original_id: str | None,
) -> list[str]:
    """Who failed: X-Failed-Recipients when the MTA sets it (Exim), else the addresses the
    explanation names, minus the bounce's own, the original sender's and the usual role addresses.
    When some of those were recipients of the original message, only those."""
    header = _addresses(msg, "x-failed-recipients")
    if header:
        return list(header)
    own = set(_addresses(msg, "from", "to", "reply-to", "sender", "return-path")) | set(senders)
    own |= _senders_named(explanation)
    named: dict[str, None] = {}  # in order of appearance
    for match in _ADDRESS.finditer(explanation):
        address = match.group(0).lower().strip(".")
        if address in own or address in named or address == original_id or _NOT_RECIPIENTS.match(address):
            continue
        named[address] = None
        if len(named) >= MAX_REPORTS:
            break
    originals = set(recipients)
    in_original = [a for a in named if a in originals]
    return in_original or list(named)


# Where a bounce's text names the original sender: an envelope "MAIL FROM:" (Apache James's "Message
# details", transcripts) or a quoted From/Sender/Reply-To/Return-Path line.
_SENDER_LINE = re.compile(r"(?im)mail from:[ \t]*<?([^\s<>]+)|^[ \t]*(?:from|sender|reply-to|return-path):([^\n]*)")


def _senders_named(text: str) -> set[str]:
    found = set()
    for match in _SENDER_LINE.finditer(text):
        for address in _ADDRESS.findall(match.group(1) or match.group(2) or ""):
            found.add(address.lower().strip("."))
    return found


def _sections(text: str, addresses: list[str]) -> dict[str, str]:
    """What the text says about each address: the paragraphs that name it, each with the paragraphs
    after it that name no other failed address. Paragraphs with a reply code are preferred; an
    address no paragraph names gets the whole text. Linear in the text: each paragraph is searched
    once for the addresses it names, and an address collects at most SECTION_PARAGRAPHS paragraphs."""
    paragraphs = [p for p in re.split(r"\n[ \t]*\n", text) if p.strip()]
    failed = set(addresses)
    naming: dict[str, list[int]] = {}  # address → the paragraphs that name it
    names_a_failed = []
    for i, paragraph in enumerate(paragraphs):
        found = {m.group(0).lower().strip(".") for m in _ADDRESS.finditer(paragraph)} & failed
        names_a_failed.append(bool(found))
        for address in found:
            naming.setdefault(address, []).append(i)
    coded: dict[int, bool] = {}
    out = {}
    for address in addresses:
        mine: list[int] = []
        for i in naming.get(address, ()):
            if len(mine) >= SECTION_PARAGRAPHS:
                break
            if mine and mine[-1] >= i:
                continue
            mine.append(i)
            j = i + 1
            while j < len(paragraphs) and not names_a_failed[j] and len(mine) < SECTION_PARAGRAPHS:
                mine.append(j)
                j += 1
        for i in mine:
            if i not in coded:
                coded[i] = bool(reply_code(paragraphs[i]) or enhanced_status(paragraphs[i]))
        chosen = [paragraphs[i] for i in mine if coded[i]]
        if not chosen and len(addresses) == 1:  # the only address, named apart from its error (Verizon's
            chosen = [text]  # "Message details:" / "Original Message:" after it): all the text is about it
        chosen = chosen or [paragraphs[i] for i in mine] or [text]
        out[address] = "\n\n".join(chosen)[:4000]
    return out
