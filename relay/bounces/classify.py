"""What a refusal means: one table-driven classifier for SMTP replies and bounce diagnostics. Pure.

The question that matters is whether the *address* is bad (``hard``: it gets
suppressed), whether the *sender or content* was refused (``block``: the
address is fine, the sender has something to fix, never suppressed), or
whether it may work later (``soft``).

Order of evidence: a specific enhanced status code (RFC 3463, e.g. 5.1.1),
then phrases of the big providers and common MTAs, then the generic enhanced
codes (5.7.1, 5.0.0, ... say little on their own), then the basic reply code.

Whether a refusal is ``hard`` (the one kind that suppresses an address for
good) is decided apart, by :func:`hard_reason`: only a permanent refusal of
the address itself, at RCPT (or where the dialogue phase is not known), that
names a dead mailbox, a dead domain or a moved address. Anything ambiguous is
not hard: a soft call costs one more retry, a wrong hard call costs a customer.
"""

from __future__ import annotations

import dataclasses
import re
from enum import StrEnum

# au (KDDI)'s domain-filter refusal: a reply code, a colon with no address before it, "User unknown".
_KDDI_FILTERED = r"\b5\d\d : user unknown"


class Phase(StrEnum):
    """Where in the SMTP dialogue a reply came (RFC 5321 §3): the delivery client knows; a returned
    report says so only sometimes ("in reply to RCPT TO command")."""

    CONNECT = "connect"  # the greeting, or the connection itself
    HELO = "helo"  # EHLO/HELO, STARTTLS, AUTH
    MAIL = "mail"
    RCPT = "rcpt"
    DATA = "data"  # the DATA command
    AFTER_DATA = "after-data"  # the reply to the end of the message
    UNKNOWN = "unknown"


class Kind(StrEnum):
    HARD = "hard"  # the address itself is undeliverable: suppress it
    SOFT = "soft"  # may succeed later (full mailbox, try again, expired)
    BLOCK = "block"  # the sender or the content was refused (spam, policy, reputation, authentication)
    COMPLAINT = "complaint"  # the recipient reported the message (ARF)
    AUTO_REPLY = "auto_reply"  # out of office and other automatic answers
    UNKNOWN = "unknown"


@dataclasses.dataclass(frozen=True)
class Classification:
    kind: Kind
    reason: str  # user_unknown, mailbox_full, spam_detected, ...
    status: str | None = None  # the enhanced status code the decision saw, e.g. "5.1.1"

    @property
    def suppresses(self) -> bool:
        return self.kind in (Kind.HARD, Kind.COMPLAINT)


ENHANCED = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")


def enhanced_status(text: str) -> str | None:
    """The first RFC 3463 code in ``text`` ("550 5.1.1 ...", "(#5.1.1)", "[5.7.1]")."""
    match = ENHANCED.search(text)
    return ".".join(match.groups()) if match else None


# Specific codes: these alone decide. (class, "subject.detail") → kind, reason. The class
# matters only where noted; a 4.x.x code stays temporary except for address-level subjects.
SPECIFIC: dict[str, tuple[Kind, str]] = {
    "1.1": (Kind.HARD, "user_unknown"),
    "1.2": (Kind.HARD, "domain_not_found"),
    "1.3": (Kind.HARD, "invalid_address"),
    "1.4": (Kind.HARD, "user_unknown"),  # ambiguous destination address
    "1.6": (Kind.HARD, "mailbox_moved"),
    "1.10": (Kind.HARD, "no_mail_accepted"),  # null MX (RFC 7505)
    "1.7": (Kind.BLOCK, "sender_rejected"),
    "1.8": (Kind.BLOCK, "sender_rejected"),
    "2.1": (Kind.HARD, "mailbox_disabled"),  # named hard here; not hard (disabled accounts come back)
    "2.2": (Kind.SOFT, "mailbox_full"),
    "2.3": (Kind.SOFT, "message_too_large"),
    "3.4": (Kind.SOFT, "message_too_large"),
    "4.4": (Kind.HARD, "domain_not_found"),  # unable to route
    "4.6": (Kind.SOFT, "routing_loop"),
    "4.7": (Kind.SOFT, "expired"),
    "4.14": (Kind.SOFT, "routing_loop"),
    "5.3": (Kind.SOFT, "too_many_recipients"),
    "6.1": (Kind.BLOCK, "content_rejected"),
    "7.13": (Kind.HARD, "mailbox_disabled"),
    "7.23": (Kind.BLOCK, "authentication_failed"),  # SPF
    "7.24": (Kind.BLOCK, "authentication_failed"),
    "7.25": (Kind.BLOCK, "policy_rejection"),  # reverse DNS
    "7.26": (Kind.BLOCK, "authentication_failed"),  # DMARC / unauthenticated
    "7.27": (Kind.BLOCK, "sender_rejected"),
    "7.28": (Kind.BLOCK, "spam_detected"),
    "7.350": (Kind.BLOCK, "spam_detected"),
    "7.606": (Kind.BLOCK, "blocklisted"),
    "7.708": (Kind.BLOCK, "blocklisted"),
}
# A HARD entry here or in RULES names the reason; whether the refusal is hard is hard_reason's call.

# Generic subjects: consulted only when no phrase below decided.
GENERIC: dict[str, tuple[Kind, str]] = {
    "1": (Kind.HARD, "invalid_address"),
    "2": (Kind.SOFT, "mailbox_unavailable"),
    "3": (Kind.SOFT, "mail_system_error"),
    "4": (Kind.SOFT, "network_error"),
    "5": (Kind.BLOCK, "protocol_error"),
    "6": (Kind.BLOCK, "content_rejected"),
    "7": (Kind.BLOCK, "policy_rejection"),
}


@dataclasses.dataclass(frozen=True)
class Rule:
    pattern: re.Pattern[str]
    kind: Kind
    reason: str
    permanent_only: bool = False  # applies to 5xx (and unknown) replies only
    providers: tuple[str, ...] = ()  # MX host suffixes this phrase is read this way at; () = everywhere


def _rule(pattern: str, kind: Kind, reason: str, permanent_only: bool = False, providers: tuple[str, ...] = ()) -> Rule:
    return Rule(re.compile(pattern, re.IGNORECASE), kind, reason, permanent_only, providers)


# Phrases, most specific first. Sources: the providers' own documentation of their replies
# (Gmail's SMTP error reference, Microsoft's NDR reference, Yahoo's SMTP error codes) and the
# default texts of Postfix, Exim, qmail, Sendmail and Exchange.
RULES: tuple[Rule, ...] = (
    # Temporary conditions that mention users or addresses: before the address rules.
    _rule(
        r"greylist|grey-list|graylist|try again later|temporarily (deferred|rejected|unavailable)",
        Kind.SOFT,
        "temporary_failure",
        permanent_only=False,
    ),
    _rule(r"unverified address|address verification in progress", Kind.SOFT, "temporary_failure"),
    # au (KDDI) answers "550 : User unknown", naming no address, when the recipient's domain filter refused the
    # sender (a missing mailbox is "550 <address>: User unknown"); fml refusing a post from a non-member.
    _rule(_KDDI_FILTERED, Kind.SOFT, "filtered"),
    _rule(r"not (a )?member\b", Kind.BLOCK, "sender_rejected"),
    # fml's loop detection (a Message-ID it has seen, "Loop Alert", "has detected a loop condition").
    _rule(r"duplicated message-id|loop (alert|back warning|condition)|unix from loop", Kind.SOFT, "routing_loop"),
    # Gave up after retrying (Exchange "5.4.316 Message expired", Exim "retry timeout exceeded", qmail
    # "in the queue too long", Sendmail "could not be delivered for 5 days"): the destination was unreachable.
    _rule(
        r"message expired|retry timeout exceeded|in the queue too long|could not be delivered for \d+ (days|hours)|"
        r"unable to deliver in \d+ minutes|delivery failed \d+ attempts|not delivered within \d+ days",
        Kind.SOFT,
        "expired",
    ),
    _rule(
        r"sender verify failed|sender address rejected|sender (domain|address) (must|does not)|"
        r"domain of sender address|sender verification",
        Kind.BLOCK,
        "sender_rejected",
    ),
    # Mailbox full: checked before "mailbox unavailable".
    _rule(
        r"over ?(the )?quota|quota exceeded|mailbox (is )?full|mailbox size limit|exceeded (the|their|its) "
        r"(storage|quota)|insufficient (system )?storage|user is over|mail ?box has exceeded|"
        r"out of (disk )?space|QuotaExceeded|mailbox exceeds allowed size|messages in .{0,30}mailbox exceeded",
        Kind.SOFT,
        "mailbox_full",
    ),
    _rule(
        r"message (size )?(is )?(too (large|big)|exceeds|exceeded)|size (limit|exceeds)|"
        r"exceeds (the )?(maximum|fixed) (message )?size|message length exceeds",
        Kind.SOFT,
        "message_too_large",
    ),
    # Lotus Domino's "user unknown" says "listed in", which the block-list rule below would take.
    _rule(
        r"not listed in (the )?(domino |public )?(directory|name & address book|address book)",
        Kind.HARD,
        "user_unknown",
    ),
    # Authentication (SPF/DKIM/DMARC) and reputation: the sender's problem.
    _rule(
        r"dmarc|spf (check )?fail|\bspf\b.*(not permitted|failed)|dkim.*fail|"
        r"authentication (information|checks)|unauthenticated",
        Kind.BLOCK,
        "authentication_failed",
    ),
    _rule(
        r"spamhaus|spamcop|barracuda|blocked using|block ?list|black ?list|\bdnsbl\b|\brbl\b|"
        r"listed (at|on|in)|banned sending ip|poor reputation|ip reputation|sender reputation|"
        r"blocked by|on our block list|reject(ed)? due to .*reputation",
        Kind.BLOCK,
        "blocklisted",
    ),
    _rule(
        r"spam|unsolicited|junk mail|bulk mail|content (rejected|filter)|message content rejected|"
        r"virus|malware|phish|suspicious",
        Kind.BLOCK,
        "spam_detected",
    ),
    _rule(
        r"rate limit|too many (messages|connections|recipients|emails)|unusual rate|sending too (fast|quickly)|"
        r"receiving mail (at a rate|too quickly)|throttl|exceeded.*limit",
        Kind.SOFT,
        "rate_limited",
    ),
    # The address does not exist: hard whatever the code.
    _rule(
        r"user unknown|unknown user|no such (user|recipient|mailbox|account|address)|"
        r"(user|recipient|mailbox|account|address|e-?mail( account)?)( that you tried to reach)? "
        r"(does not|doesn'?t|did not) exist|"
        r"(recipient|user|mailbox|address) (was )?not found|recipnotfound|recipientnotfound|"
        r"unknown (recipient|mailbox|local part|address)|invalid (recipient|mailbox|user)|"
        r"unrouteable address|no mailbox here|not a valid (mailbox|recipient|user)|"
        r"doesn'?t have an? [\w.-]+ account|addressee unknown|bad destination mailbox|"
        r"mailbox (name )?not (found|allowed|available)|no such person|user not found|"
        r"no valid recipients for this mm",  # Verizon's MMS gateway (vzwpix.com)
        Kind.HARD,
        "user_unknown",
    ),
    _rule(
        r"(account|mailbox|user|address) (has been |is )?(disabled|deactivated|suspended|inactive|"
        r"locked|closed|expired|terminated|discontinued)|not an active|no longer (active|valid|in use|available)|"
        r"(account|mailbox)\b.{0,40}\b(is|has been) (disabled|deactivated|suspended|inactive|closed)",
        Kind.SOFT,
        "mailbox_disabled",
        permanent_only=True,
    ),
    _rule(
        r"host (or domain name )?not found|domain (does not|doesn'?t) exist|no such domain|host unknown|unknown host|"
        r"dns lookup failure: host \S+ not found|"
        r"name service error|unknown domain|domain not found|nxdomain|couldn'?t find any host|"
        r"no (mx|mail exchanger|valid mx)|unable to route|unroutable",
        Kind.HARD,
        "domain_not_found",
        permanent_only=True,
    ),
    _rule(
        r"relay(ing)? (access )?(denied|not permitted|prohibited)|(not|isn'?t) in my list of allowed rcpthosts|"
        r"we do not relay|relay not permitted|not permitted to relay|smtp relay error",
        Kind.BLOCK,
        "relay_denied",
        permanent_only=True,
    ),
    # Microsoft 365 (Directory-Based Edge Blocking) says "Access denied" for an address it does not have;
    # elsewhere the same words are an access-map REJECT, a policy.
    _rule(
        r"recipient address rejected: access denied",
        Kind.HARD,
        "user_unknown",
        True,
        ("outlook.com", "hotmail.com", "office365.us"),
    ),
    _rule(r"access denied\. AS\(\d+\)", Kind.HARD, "user_unknown", permanent_only=True),
    _rule(r"recipient address rejected: access denied", Kind.BLOCK, "policy_rejection", permanent_only=True),
    _rule(
        r"mailbox unavailable|recipient rejected|address rejected|mailbox not found|"
        r"requested action not taken: mailbox|invalid address",
        Kind.HARD,
        "mailbox_unavailable",
        permanent_only=True,
    ),
    _rule(
        r"policy|not (authorized|allowed|permitted)|access denied|prohibited|administrative|"
        r"refused|rejected|not accepted",
        Kind.BLOCK,
        "policy_rejection",
        permanent_only=True,
    ),
    _rule(
        r"timed? ?out|connection (refused|reset|lost|closed)|network is unreachable|no route to host|"
        r"lost connection|read error",
        Kind.SOFT,
        "network_error",
    ),
)


def classify(
    code: int | None, enhanced: str | None, text: str, remote_host: str | None = None, phase: Phase = Phase.UNKNOWN
) -> Classification:
    """Classify one refusal: ``code`` the SMTP reply code (None: no reply, e.g. a timeout or a refused
    connection, always soft unless ``text`` carries a status code such as a report's "(#5.1.2)"),
    ``enhanced`` its RFC 3463 status (found in ``text`` when None), ``text`` the reply or diagnostic,
    ``remote_host`` the MX that said it (some phrases mean different things at different providers),
    ``phase`` the SMTP command it answered. The kind is ``hard`` exactly when :func:`hard_reason`
    says so; a reading the table calls hard that is not becomes ``soft`` with the same reason
    (``filtered`` for a "user unknown" at or after DATA: the mailbox existed at RCPT)."""
    table = _by_table(code, enhanced, text, remote_host)
    hard = hard_reason(phase, code, table.status, text)
    if hard is not None:
        return Classification(Kind.HARD, table.reason if table.kind is Kind.HARD else hard, table.status)
    if table.kind is not Kind.HARD:
        return table
    filtered = phase in (Phase.DATA, Phase.AFTER_DATA) and table.reason == "user_unknown"
    return Classification(Kind.SOFT, "filtered" if filtered else table.reason, table.status)


# -- hard or not ------------------------------------------------------------------------------

# Phases whose refusals are not about the recipient's address: the connection, our name, our sender,
# the data (after DATA the RCPT had been accepted, so the mailbox existed).
_NOT_ADDRESS_PHASES = frozenset({Phase.CONNECT, Phase.HELO, Phase.MAIL, Phase.DATA, Phase.AFTER_DATA})

# Status subjects that alone say the address is dead (RFC 3463, RFC 7505).
HARD_STATUS: dict[str, str] = {
    "1.1": "user_unknown",  # bad destination mailbox address
    "1.2": "domain_not_found",  # bad destination system address
    "1.3": "invalid_address",  # bad destination mailbox address syntax
    "1.6": "mailbox_moved",  # destination mailbox has moved, no forwarding address
    "1.10": "no_mail_accepted",  # null MX (RFC 7505); Microsoft: RecipientNotFound
}

# Words that make a refusal about something other than a dead address, whatever its code says:
# these win over the hard codes and phrases (ambiguous is not hard).
NOT_HARD = re.compile(
    r"over ?quota|quota|mailbox (is )?full|insufficient (system )?storage|too (large|big)|message size|size limit|"
    r"size exceeds|disabled|suspended|inactive|deactivated|locked|blocked|frozen|on hold|"
    r"expired|retry time|timeout exceeded|timed out|too long in the queue|"
    r"spam|unsolicited|virus|malware|phish|content (filter|rejected|restriction|policy)|message content|reputation|"
    r"block ?list|black ?list|dnsbl|\brbl\b|spamhaus|policy|dmarc|\bspf\b|dkim|authenticat|"
    r"rate limit|too many (messages|connections|recipients|e?mails)|throttl|too (fast|quickly)|greylist|graylist|"
    r"try again later|temporar|\btls\b|starttls|encryption|relay(ing)? (access )?(denied|not permitted|prohibited)|"
    r"rcpthosts|ptr record|reverse dns|\brdns\b|sender (address )?(rejected|verify)|sender verification|"
    + _KDDI_FILTERED,
    re.IGNORECASE,
)

# Phrases that name a dead address (each from a provider's or MTA's documented reply; see
# tests/test_bounce_classify.py for the replies they come from).
HARD_TEXT: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), reason)
    for pattern, reason in (
        (
            r"user unknown|unknown user|no such (user|recipient|mailbox|account|address|person)|"
            r"(user|recipient|mailbox|account|address|e-?mail( account)?)( that you tried to reach)? "
            r"(does not|doesn'?t|did not) exist|(recipient|user|mailbox|address) (was )?not found|"
            r"recipnotfound|recipientnotfound|unknown (recipient|mailbox|local[- ]part|address)|"
            r"invalid (recipient|mailbox|user)|unrouteable address|no mailbox here|"
            r"not a valid (mailbox|recipient|user)|doesn'?t have an? [\w.-]+ account|addressee unknown|"
            r"bad destination mailbox|mailbox (name )?not found|user not found|"
            r"not listed in (the )?(domino |public )?(directory|name & address book|address book)|"
            r"access denied\. AS\(\d+\)|"  # Microsoft 365 directory-based edge blocking
            r"no valid recipients for this mm",  # Verizon's MMS gateway
            "user_unknown",
        ),
        (
            r"host (or domain name )?not found|host unknown|unknown host|domain (does not|doesn'?t) exist|"
            r"no such domain|nxdomain|couldn'?t find any host|domain not found|unknown domain|"
            r"dns lookup failure: host \S+ not found",  # dma
            "domain_not_found",
        ),
        (r"(does not|doesn'?t) accept (any )?mail|accepts no mail|null ?mx", "no_mail_accepted"),
        (r"user not local; please try|(mailbox|user|address) has moved", "mailbox_moved"),
    )
)


# Status subjects under which the words may still say the address is dead: none, generic (x.0.0, and
# 5.5.0 as some servers use it, 5.3.0 as Sendmail's "553 5.3.0 <x>... No such user here" does),
# addressing (x.1.x), routing (x.4.x: 5.4.4 "Host or domain name not found", Microsoft's 5.4.1 "Access
# denied. AS(...)"). Not 5.2.x (docomo's 5.2.0 "Unknown user" is its filter), 5.3.x but 5.3.0, 5.6.x, 5.7.x.
_TEXT_MAY_DECIDE = ("0.", "1.", "4.", "5.0", "3.0")


def hard_reason(phase: Phase, code: int | None, status: str | None, text: str) -> str | None:
    """Why this refusal makes the address permanently unusable, or None when it does not (or may
    not). Hard needs all of: a phase where the address itself is judged (RCPT, or not known); a
    permanent refusal (5xx, and a 5.x.x status when there is one); no words saying it is about
    something else (quota, a disabled account, policy, spam, authentication, rate, TLS, relaying,
    expiry...); and a status (5.1.1, 5.1.2, 5.1.3, 5.1.6, 5.1.10) or a phrase naming a dead
    mailbox, a dead domain or a moved address (the phrase only under a status that does not say
    otherwise: not under a mailbox, system, content or policy status)."""
    if phase in _NOT_ADDRESS_PHASES:
        return None
    if (code is not None and not 500 <= code < 600) or (status is not None and status[0] != "5"):
        return None
    if code is None and status is None:
        return None
    subject = status.split(".", 1)[1] if status else ""
    if subject not in HARD_STATUS and subject and not subject.startswith(_TEXT_MAY_DECIDE):
        return None  # a mailbox, system, content or policy status: whatever the words say, ambiguous
    if NOT_HARD.search(text):
        return None
    if subject in HARD_STATUS:
        return HARD_STATUS[subject]
    for pattern, reason in HARD_TEXT:
        if pattern.search(text):
            return reason
    return None


# Where a report says the reply came: Postfix "(in reply to RCPT TO command)", Exim "SMTP error from
# remote mail server after RCPT TO:<a>:" / "after end of data:", qmail-remote "does not like
# recipient." / "failed after I sent the message." / "failed on DATA command.", Sendmail and
# Courier transcripts (">>> RCPT To:<a>" then "<<< 550 ..."), Yahoo's "[RCPT_TO]" / "[BODY]" tags,
# DragonFly's "did not like our RCPT TO:" / "... our final DATA:" (the end of the data), the "SMTP:RCPT host
# ..." lines of X3-style MTAs, BIGLOBE's "Mail Delivery Failed... User unknown" (its own MTA, after it took
# the message: its filter). The first marker in the text wins.
# Not ">>> DATA" in a Sendmail transcript: with pipelining the RCPT refusals are read after it.
_PHASE_MARKERS: tuple[tuple[str, Phase], ...] = (
    (
        r"in reply to (the )?end of data|after end of data|failed after I sent the message|\[BODY\]"
        r"|did not like our final data|mail delivery failed\.\.\. user unknown",
        Phase.AFTER_DATA,
    ),
    (
        r"in reply to (the )?rcpt to|after (pipelined )?rcpt( to)?\b|for rcpt( to)? command|does not like recipient"
        r"|>>> rcpt to|did not like our rcpt|\[RCPT_TO\]|^smtp:rcpt\b",
        Phase.RCPT,
    ),
    (
        r"in reply to (the )?data command|after (pipelined )?data\b|failed on data command|for data command"
        r"|did not like our data|^smtp:data\b",
        Phase.DATA,
    ),
    (
        r"in reply to (the )?mail from|after (pipelined )?mail( from)?\b|for mail( from)? command|sender was rejected"
        r"|>>> mail from|\[MAIL_FROM\]|did not like our mail from|^smtp:mail\b",
        Phase.MAIL,
    ),
    (
        r"in reply to (the )?(helo|ehlo|starttls|auth)|after (ehlo|helo|starttls)\b|my name was rejected"
        r"|>>> (ehlo|helo)|did not like our (ehlo|helo)",
        Phase.HELO,
    ),
    (
        r"refused to talk to me|after initial connection|greeting failed|in reply to (the )?initial greeting",
        Phase.CONNECT,
    ),
)
_PHASE = re.compile(
    "|".join(f"(?P<p{i}>{pattern})" for i, (pattern, _) in enumerate(_PHASE_MARKERS)), re.IGNORECASE | re.MULTILINE
)


def phase_in_text(text: str) -> Phase:
    """The SMTP phase a report's text names for a reply (the first it names), else UNKNOWN."""
    match = _PHASE.search(text)
    if match is None or match.lastgroup is None:
        return Phase.UNKNOWN
    return _PHASE_MARKERS[int(match.lastgroup[1:])][1]


def _by_table(code: int | None, enhanced: str | None, text: str, remote_host: str | None) -> Classification:
    """The table's reading: kind and reason by status, phrases and codes (hard or not is decided after)."""
    status = enhanced or enhanced_status(text)
    if code is None and status is None:
        return _without_reply(text)
    klass = status[0] if status else str(code)[0]  # code is not None here when status is None
    if klass == "2":
        return Classification(Kind.UNKNOWN, "delivered", status)
    temporary = klass == "4"
    subject = status.split(".", 1)[1] if status else ""
    specific = SPECIFIC.get(subject)
    if specific is not None and not (temporary and specific[0] is Kind.HARD):
        return Classification(_soften(specific[0], temporary), specific[1], status)
    rule = _matching_rule(text, temporary, remote_host)
    if rule is not None:
        return Classification(_soften(rule.kind, temporary), rule.reason, status)
    major = subject.split(".")[0]
    if temporary:
        return Classification(Kind.SOFT, "temporary_policy" if major == "7" else "temporary_failure", status)
    if major in GENERIC and not subject.startswith(("0.", "5.")):  # x.0.x and x.5.x say nothing useful
        return Classification(*GENERIC[major], status)
    return _by_basic_code(code, status)


# Failures with neither an SMTP reply nor a status code (a refused or reset connection, a timeout,
# a DNS or TLS failure): relay could not talk to the receiver, nobody refused anything, whatever
# words the error happens to use ("Connection refused", "Permission denied", "access denied by
# firewall"). Always soft; the first pattern that matches names the reason.
NO_REPLY: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), reason)
    for pattern, reason in (
        (r"\bssl|\btls|certificate|handshake", "tls_error"),
        (
            r"\bdns\b|gaierror|name or service|name resolution|nodename nor servname|getaddrinfo|"
            r"\bresolv|nameserver|nxdomain|servfail|no address",
            "dns_error",
        ),
        (r"internal error", "internal_error"),
    )
)


def _without_reply(text: str) -> Classification:
    """No reply and no status: a network, DNS or TLS failure, or a timeout. Transient by nature:
    only a receiver's reply can make a failure permanent (RFC 5321 §4.2.1)."""
    for pattern, reason in NO_REPLY:
        if pattern.search(text):
            return Classification(Kind.SOFT, reason)
    return Classification(Kind.SOFT, "network_error")


def _soften(kind: Kind, temporary: bool) -> Kind:
    """A 4xx refusal of the sender or content may pass on a retry: soft, not block."""
    return Kind.SOFT if temporary and kind is Kind.BLOCK else kind


def _matching_rule(text: str, temporary: bool, remote_host: str | None) -> Rule | None:
    host = (remote_host or "").lower().rstrip(".")
    for rule in RULES:
        if temporary and rule.permanent_only:
            continue
        if rule.providers and not host.endswith(rule.providers):
            continue
        if rule.pattern.search(text):
            return rule
    return None


def _by_basic_code(code: int | None, status: str | None) -> Classification:
    if code is None:
        return Classification(Kind.SOFT, "network_error", status)
    if 400 <= code < 500:
        return Classification(Kind.SOFT, "temporary_failure", status)
    if code in (550, 551, 553):  # mailbox unavailable / user not local / mailbox name not allowed
        return Classification(Kind.HARD, "mailbox_unavailable", status)
    if code == 552:
        return Classification(Kind.SOFT, "mailbox_full", status)
    if 500 <= code < 600:
        return Classification(Kind.BLOCK, "policy_rejection", status)
    return Classification(Kind.UNKNOWN, "unknown", status)
