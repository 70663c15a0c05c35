"""The classifier over real-world reply lines.

Where each line comes from: [G] Gmail's published SMTP error reference; [M] Microsoft's
Exchange Online NDR reference; [Y] Yahoo's SMTP error codes page; [A] iCloud bounces as
quoted in Apple's postmaster pages; [P] Postfix's default reject texts (postconf(5),
smtpd.c); [E] Exim's default texts; [Q] qmail-send/qmail-remote; [S] Sendmail's texts;
[X] on-premises Exchange; [R] this relay's own replies; issue 18's fourth set (the shapes are in
tests/bounce_samples.py): [K] au by KDDI (its MTA's sentences; its MX's "550 : User unknown" for a
domain-filter refusal), [D] NTT docomo's MX, [BG] BIGLOBE's returned mail, [V] Verizon Wireless's
vtext/vzwpix gateways, [F] fml's error returns, [I] Ipswitch IMail's queue manager, [DMA] DragonFly
Mail Agent (net.c, mail.c), [X3] the "SMTP:RCPT host ..." lines of X3-style MTAs.
"""

from __future__ import annotations

import pytest

from relay.bounces.classify import Kind, Phase, classify, enhanced_status, hard_reason, phase_in_text

CASES = [
    # (code, text, remote host or None, kind, reason)
    (
        550,
        "5.1.1 The email account that you tried to reach does not exist. Please try double-checking",
        None,
        "hard",
        "user_unknown",
    ),  # [G]
    (550, "5.2.1 The email account that you tried to reach is disabled.", None, "soft", "mailbox_disabled"),  # [G]
    (452, "4.2.2 The email account that you tried to reach is over quota.", None, "soft", "mailbox_full"),  # [G]
    (
        550,
        "5.7.1 [1.2.3.4] Our system has detected that this message is likely unsolicited mail.",
        None,
        "block",
        "spam_detected",
    ),  # [G]
    (
        550,
        "5.7.26 This message does not have authentication information or fails to pass authentication checks",
        None,
        "block",
        "authentication_failed",
    ),  # [G]
    (
        421,
        "4.7.0 [1.2.3.4] Our system has detected an unusual rate of unsolicited mail originating from your IP",
        None,
        "soft",
        "spam_detected",
    ),  # [G] 4.7.0: soft, never suppressed
    (552, "5.2.3 Your message exceeded Google's message size limits.", None, "soft", "message_too_large"),  # [G]
    (450, "4.2.1 The user you are trying to contact is receiving mail too quickly.", None, "soft", "rate_limited"),
    (
        550,
        "5.5.0 Requested action not taken: mailbox unavailable (S2017062302).",
        "mx.hotmail.com",
        "soft",
        "mailbox_unavailable",
    ),  # [M]
    (
        550,
        "5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup",
        None,
        "hard",
        "no_mail_accepted",
    ),  # [M] (5.1.10 is also null MX: either way the address is dead)
    (
        550,
        "5.4.1 Recipient address rejected: Access denied. AS(201806281)",
        "example-com.mail.protection.outlook.com",
        "hard",
        "user_unknown",
    ),  # [M]
    (
        550,
        "5.7.1 Unfortunately, messages from [1.2.3.4] weren't sent. Please contact your Internet service "
        "provider since part of their network is on our block list (S3150).",
        None,
        "block",
        "blocklisted",
    ),  # [M]
    (
        550,
        "5.7.708 Service unavailable. Access denied, traffic not accepted from this IP.",
        None,
        "block",
        "blocklisted",
    ),  # [M]
    (
        421,
        "4.7.650 The mail server [1.2.3.4] has been temporarily rate limited due to IP reputation.",
        None,
        "soft",
        "blocklisted",
    ),  # [M]
    (554, "5.2.2 mailbox full; STOREDRV.Deliver.Exception:QuotaExceededException", None, "soft", "mailbox_full"),  # [M]
    (
        550,
        "5.7.520 Access denied, Your organization does not allow external forwarding.",
        None,
        "block",
        "policy_rejection",
    ),  # [M]
    (
        554,
        "delivery error: dd This user doesn't have a yahoo.com account (x@yahoo.com) [0] - mta1.mail.gq1",
        None,
        "hard",
        "user_unknown",
    ),  # [Y]
    (
        554,
        "delivery error: dd Sorry your message to x@yahoo.com cannot be delivered. This mailbox is disabled (554.30).",
        None,
        "soft",
        "mailbox_disabled",
    ),  # [Y]
    (
        421,
        "4.7.0 [TSS04] Messages from 1.2.3.4 temporarily deferred due to unexpected volume or user complaints",
        None,
        "soft",
        "temporary_failure",
    ),  # [Y]
    (
        553,
        "5.7.2 [TSS09] All messages from 1.2.3.4 will be permanently deferred; Retrying will NOT succeed.",
        None,
        "block",
        "policy_rejection",
    ),  # [Y]
    (554, "5.7.9 Message not accepted for policy reasons.", None, "block", "policy_rejection"),  # [Y]
    (550, "5.1.1 <x@icloud.com>: user does not exist", None, "hard", "user_unknown"),  # [A]
    (554, "5.7.1 [CS01] Message rejected due to local policy.", None, "block", "policy_rejection"),  # [A]
    (552, "5.2.2 <x@icloud.com>: user is over quota", None, "soft", "mailbox_full"),  # [A]
    (
        550,
        "5.1.1 <x@example.org>: Recipient address rejected: User unknown in local recipient table",
        None,
        "hard",
        "user_unknown",
    ),  # [P]
    (
        550,
        "5.1.1 <x@example.org>: Recipient address rejected: User unknown in virtual mailbox table",
        None,
        "hard",
        "user_unknown",
    ),  # [P]
    (
        450,
        "4.1.1 <x@example.org>: Recipient address rejected: User unknown in local recipient table",
        None,
        "soft",
        "user_unknown",
    ),  # [P] soft_bounce=yes: a 4xx is never hard
    (
        450,
        "4.1.1 <x@example.org>: Recipient address rejected: unverified address: host mx[1.2.3.4] said: "
        "550 user unknown",
        None,
        "soft",
        "temporary_failure",
    ),  # [P] address verification pending
    (554, "5.7.1 <x@example.org>: Relay access denied", None, "block", "relay_denied"),  # [P]
    (
        554,
        "5.7.1 Service unavailable; Client host [1.2.3.4] blocked using zen.spamhaus.org",
        None,
        "block",
        "blocklisted",
    ),  # [P]
    (
        450,
        "4.2.0 <x@example.org>: Recipient address rejected: Greylisted, see http://postgrey.schweikert.ch/",
        None,
        "soft",
        "temporary_failure",
    ),  # [P]
    (552, "5.3.4 Message size exceeds fixed limit", None, "soft", "message_too_large"),  # [P]
    (452, "4.3.1 Insufficient system storage", None, "soft", "mailbox_full"),  # [P]
    (550, "5.7.1 <a@example.com>: Sender address rejected: Access denied", None, "block", "sender_rejected"),  # [P]
    (
        554,
        "5.7.1 <x@example.org>: Recipient address rejected: Access denied",
        "mx.example.org",
        "block",
        "policy_rejection",
    ),  # [P] an access-map REJECT: not the address
    (
        550,
        "Host or domain name not found. Name service error for name=nx.example type=MX: Host not found",
        None,
        "hard",
        "domain_not_found",
    ),  # [P] DSN diagnostic without a reply code (the parser passes the DSN's "failed" as 550)
    (None, "connect to mx.example.org[1.2.3.4]:25: Connection timed out", None, "soft", "network_error"),  # [P]
    (550, "Unrouteable address", None, "hard", "user_unknown"),  # [E]
    (550, "No Such User Here", None, "hard", "user_unknown"),  # [E] (cPanel)
    (
        550,
        "Verification failed for <a@example.com> No Such User Here Sender verify failed",
        None,
        "block",
        "sender_rejected",
    ),  # [E] our sender failed their callout: not the recipient
    (550, "Administrative prohibition", None, "block", "policy_rejection"),  # [E]
    (550, "rejected because 1.2.3.4 is in a black list at zen.spamhaus.org", None, "block", "blocklisted"),  # [E]
    (451, "Temporary local problem - please try later", None, "soft", "temporary_failure"),  # [E]
    (552, "Message size exceeds maximum permitted", None, "soft", "message_too_large"),  # [E]
    (550, "Mailbox quota exceeded", None, "soft", "mailbox_full"),  # [E]
    (553, "sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)", None, "block", "relay_denied"),  # [Q]
    (550, "sorry, no mailbox here by that name. (#5.1.1)", None, "hard", "user_unknown"),  # [Q]
    (None, "Sorry, I couldn't find any host named nx.example. (#5.1.2)", None, "hard", "domain_not_found"),  # [Q]
    (None, "Sorry, I wasn't able to establish an SMTP connection. (#4.4.1)", None, "soft", "temporary_failure"),
    (550, "5.1.1 <x@example.org>... User unknown", None, "hard", "user_unknown"),  # [S]
    (550, "5.7.1 <x@example.org>... Relaying denied", None, "block", "relay_denied"),  # [S]
    (
        553,
        "5.1.8 <a@example.com>... Domain of sender address a@example.com does not exist",
        None,
        "block",
        "sender_rejected",
    ),  # [S]
    (550, "5.1.2 Host unknown (Name server: nx.example: host not found)", None, "hard", "domain_not_found"),  # [S]
    (550, "5.1.1 RESOLVER.ADR.RecipNotFound; not found", None, "hard", "user_unknown"),  # [X]
    (554, "5.4.14 Hop count exceeded - possible mail loop ATTR34", None, "soft", "routing_loop"),  # [X]
    (550, "5.7.1 RESOLVER.RST.AuthRequired; authentication required", None, "block", "policy_rejection"),  # [X]
    (556, "5.1.10 nx.example accepts no mail (null MX)", None, "hard", "no_mail_accepted"),  # [R]
    (550, "5.1.2 domain nx.example does not exist", None, "hard", "domain_not_found"),  # [R]
    (None, "4.4.7 message expired after 5 days in the queue", None, "soft", "expired"),  # [R]
    (550, "SPF check failed", None, "block", "authentication_failed"),
    (550, "High probability of spam", None, "block", "spam_detected"),
    (554, "5.6.0 Message contains a virus", None, "block", "spam_detected"),
    (550, "Requested action not taken: mailbox unavailable", None, "soft", "mailbox_unavailable"),
    (450, "Requested mail action not taken: mailbox unavailable", None, "soft", "temporary_failure"),
    (550, "This account has been disabled or discontinued", None, "soft", "mailbox_disabled"),
    (550, "", None, "soft", "mailbox_unavailable"),
    (554, "Transaction failed", None, "block", "policy_rejection"),
    (451, "", None, "soft", "temporary_failure"),
    (550, "550 : User unknown", None, "soft", "filtered"),  # [K] the recipient's domain filter, not the address
    (550, "550 <x@ezweb.ne.jp>: User unknown", None, "hard", "user_unknown"),  # [K] a missing mailbox
    (550, "The user(s) account is disabled.", None, "soft", "mailbox_disabled"),  # [K] an unpaid account
    (550, "The user(s) account is temporarily over quota.", None, "soft", "mailbox_full"),  # [K]
    (
        550,
        "Your message was not delivered within 0 days and 1 hours. Remote host is not responding.",
        None,
        "soft",
        "expired",
    ),  # [K]
    (
        550,
        "Could not be delivered to: <x@nx.example> As the remote domain doesnt exist.",
        None,
        "hard",
        "domain_not_found",
    ),  # [K]
    (550, "Due to the following SMTP relay error", None, "block", "relay_denied"),  # [K]
    (552, "too much mail data", None, "soft", "mailbox_full"),  # [D] docomo's mailbox-full reply
    (
        550,
        "The number of messages in recipient's mailbox exceeded the local limit.",
        None,
        "soft",
        "mailbox_full",
    ),  # [BG]
    (550, "550 - Requested action not taken: no such user here", None, "hard", "user_unknown"),  # [V] vtext
    (550, "Error: No valid recipients for this MM", None, "hard", "user_unknown"),  # [V] vzwpix
    (
        550,
        "NOT MEMBER article from a@example.com. You a@example.com are not member of <l@example.org>.",
        None,
        "block",
        "sender_rejected",
    ),  # [F] a post from a non-member: the list is fine
    (550, "Duplicated Message-ID in <l@example.org>.", None, "soft", "routing_loop"),  # [F] fml's loop check
    (550, "User mailbox exceeds allowed size: x@example.org", None, "soft", "mailbox_full"),  # [I]
    (550, "Unknown host: x@nx.example", None, "hard", "domain_not_found"),  # [I]
    (550, "Delivery failed 3 attempts: x@example.org", None, "soft", "expired"),  # [I] gave up retrying
    (550, "DNS lookup failure: host nx.example not found", None, "hard", "domain_not_found"),  # [DMA]
    (552, "5.2.0 Over the quota", None, "soft", "mailbox_full"),  # [X3]
]


@pytest.mark.parametrize(("code", "text", "host", "kind", "reason"), CASES)
def test_real_world_replies(code, text, host, kind, reason):
    result = classify(code, None, text, host)
    assert (result.kind.value, result.reason) == (kind, reason), result


def test_only_hard_bounces_and_complaints_suppress():
    assert classify(550, None, "5.1.1 user unknown").suppresses
    assert not classify(550, None, "5.7.1 blocked using zen.spamhaus.org").suppresses
    assert not classify(452, None, "4.2.2 mailbox full").suppresses


@pytest.mark.parametrize(
    ("text", "status"),
    [
        ("550 5.1.1 no", "5.1.1"),
        ("(#5.7.1)", "5.7.1"),
        ("[4.7.650]", "4.7.650"),
        ("v1.2.3.4 x", None),
        ("at 10.5.1.1", None),
        ("", None),
    ],
)
def test_enhanced_status_is_found_in_text(text, status):
    assert enhanced_status(text) == status


def test_an_explicit_enhanced_code_wins_over_the_text():
    assert classify(550, "5.2.2", "rejected").kind is Kind.SOFT


# Failures without any SMTP reply, as relay's delivery client words them (host, exception type, text)
# and as operating systems, aiosmtplib, dnspython and OpenSSL word them. None of them is a refusal.
NO_REPLY_ERRORS = [
    ("Connection refused", "network_error"),
    ("[Errno 111] Connection refused", "network_error"),
    ("ConnectionRefusedError: [Errno 111] Connect call failed ('127.0.0.1', 1)", "network_error"),
    ("SMTPConnectError: Error connecting to 192.0.2.1 on port 25: [Errno 111] Connection refused", "network_error"),
    ("SMTPConnectError: Error connecting to 10.5.1.1 on port 25: Connection refused by peer", "network_error"),
    (
        "ConnectionRefusedError: [WinError 10061] No connection could be made because the target machine actively "
        "refused it",
        "network_error",
    ),
    ("ConnectionResetError: [Errno 104] Connection reset by peer", "network_error"),
    ("ConnectionAbortedError: [Errno 103] Software caused connection abort", "network_error"),
    ("BrokenPipeError: [Errno 32] Broken pipe", "network_error"),
    ("SMTPServerDisconnected: Unexpected EOF received", "network_error"),
    ("SMTPServerDisconnected: Connection lost", "network_error"),
    ("connection lost during DATA: SMTPReadTimeoutError: Timed out waiting for server response", "network_error"),
    ("connection to mx.example.org lost", "network_error"),
    ("SMTPConnectTimeoutError: Timed out connecting to 192.0.2.1 on port 25", "network_error"),
    ("TimeoutError: ", "network_error"),
    ("OSError: [Errno 101] Network is unreachable", "network_error"),
    ("OSError: [Errno 113] No route to host", "network_error"),
    ("OSError: [Errno 65] No route to host", "network_error"),
    ("PermissionError: [Errno 13] Permission denied", "network_error"),  # a local firewall (EACCES on connect)
    ("OSError: [Errno 1] Operation not permitted", "network_error"),  # an iptables REJECT / EPERM
    (
        "SMTPConnectError: Error connecting to mx.example on port 25: access denied by firewall policy",
        "network_error",
    ),
    ("OSError: [Errno 99] Cannot assign requested address", "network_error"),
    ("OSError: [Errno 24] Too many open files", "network_error"),
    ("no host to deliver to", "network_error"),
    (
        "SMTPConnectError: Error connecting to smtp.example.net on port 587: [Errno -2] Name or service not known",
        "dns_error",
    ),
    ("gaierror: [Errno -3] Temporary failure in name resolution", "dns_error"),
    ("gaierror: [Errno -5] No address associated with hostname", "dns_error"),
    ("gaierror: [Errno 8] nodename nor servname provided, or not known", "dns_error"),
    ("The DNS query name does not exist: smtp.example.net.", "dns_error"),
    (
        "The resolution lifetime expired after 5.005 seconds: Server 127.0.0.1 UDP port 53 answered SERVFAIL",
        "dns_error",
    ),
    (
        "All nameservers failed to answer the query smtp.example.net. IN A: Server Do53:127.0.0.1@53 answered REFUSED",
        "dns_error",
    ),
    (
        "SSLCertVerificationError: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: self-signed "
        "certificate (_ssl.c:1006)",
        "tls_error",
    ),
    ("SSLError: [SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1006)", "tls_error"),
    ("SSLError: [SSL: TLSV1_ALERT_PROTOCOL_VERSION] tlsv1 alert protocol version (_ssl.c:1006)", "tls_error"),
    ("SSLError: [SSL: SSLV3_ALERT_HANDSHAKE_FAILURE] sslv3 alert handshake failure", "tls_error"),
    ("SSLError: [SSL: UNSUPPORTED_PROTOCOL] unsupported protocol: connection refused by policy", "tls_error"),
    ("SMTPTimeoutError: Timed out while upgrading transport", "network_error"),
    ("SMTPServerDisconnected: Connection lost during TLS handshake", "tls_error"),
    ("internal error: ValueError", "internal_error"),
]


@pytest.mark.parametrize(("text", "reason"), NO_REPLY_ERRORS)
def test_a_failure_without_a_reply_is_transient_never_a_block(text, reason):
    """No receiver said anything: nothing was refused, whatever words the error uses. Before: "Connection
    refused" (and "access denied", "refused by policy") read as block / policy_rejection."""
    for where in ("", "mx.example.org [192.0.2.1]:25: ", "127.0.0.1:1: "):
        result = classify(None, None, where + text, "mx.example.org")
        assert (result.kind, result.reason) == (Kind.SOFT, reason), (where + text, result)
        assert not result.suppresses


def test_a_reply_still_decides_when_there_is_one():
    """The network-error reading is for failures with no reply: a receiver's 5xx refusal stays a refusal."""
    assert classify(554, None, "5.7.1 Connection refused by policy").kind is Kind.BLOCK
    assert classify(550, None, "Host not found").kind is Kind.HARD
    assert classify(None, None, "Sorry, I couldn't find any host named nx.example. (#5.1.2)").kind is Kind.HARD
    assert classify(None, None, "4.4.7 expired after 120h in the queue; last reply: Connection refused").reason == (
        "expired"
    )


# -- hard or not (issue 18) -------------------------------------------------------------------------
# One row per rule of hard_reason: (phase, code, status, reply text, the reason when hard else None).
# Sources as above, plus [RFC] RFC 5321 §3.4's own 551 text, [3463] the RFC 3463 name of the status,
# [SPF] pypolicyd-spf's default reject text,
# [PG] postgrey's default reply, [C] Courier. A None status means the text carries it, if anything.
P = Phase
# fmt: off
HARD_CASES = [
    # Hard: the address is permanently unusable.
    (P.RCPT, 550, None, "5.1.1 The email account that you tried to reach does not exist. Please try double-checking",
     "user_unknown"),  # [G] the 5.1.1 status
    (P.RCPT, 550, None, "5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup",
     "no_mail_accepted"),  # [M] the 5.1.10 status
    (P.RCPT, 554, None, "delivery error: dd This user doesn't have a yahoo.com account (x@yahoo.com) [0]",
     "user_unknown"),  # [Y] no enhanced code: the phrase decides
    (P.UNKNOWN, 550, None, "5.1.1 <x@example.org>: Recipient address rejected: User unknown in local recipient table",
     "user_unknown"),  # [P] a returned report that does not say at which command
    (P.UNKNOWN, None, None, "Sorry, no mailbox here by that name. (#5.1.1)", "user_unknown"),  # [Q] status in text
    (P.UNKNOWN, 550, None, "Unrouteable address", "user_unknown"),  # [E] phrase without any code
    (P.RCPT, 550, None, "5.4.1 Recipient address rejected: Access denied. AS(201806281)",
     "user_unknown"),  # [M] directory-based edge blocking: the tenant has no such address
    (P.UNKNOWN, 550, "5.4.4", "Host or domain name not found. Name service error for name=nx.example type=MX: Host "
     "not found", "domain_not_found"),  # [P] DNS says the domain does not exist
    (P.UNKNOWN, None, None, "Sorry, I couldn't find any host named nx.example. (#5.1.2)",
     "domain_not_found"),  # [Q] the 5.1.2 status
    (P.RCPT, 550, None, "5.1.2 <x@nx.example>... Host unknown (Name server: nx.example: host not found)",
     "domain_not_found"),  # [S]
    (P.UNKNOWN, 556, None, "5.1.10 nx.example accepts no mail (null MX)", "no_mail_accepted"),  # [R] RFC 7505
    (P.UNKNOWN, 550, None, "Domain example.net does not accept mail (nullMX)", "no_mail_accepted"),  # [P] phrase
    (P.RCPT, 551, None, "User not local; please try <bob@elsewhere.example>", "mailbox_moved"),  # [RFC]
    (P.RCPT, 550, None, "5.1.6 Destination mailbox has moved, No forwarding address", "mailbox_moved"),  # [3463]
    (P.RCPT, 553, None, "5.1.3 Bad destination mailbox address syntax", "invalid_address"),  # [3463]
    # Not hard: the phase says the address was not what was refused.
    (P.AFTER_DATA, 550, None, "5.1.1 <x@example.org>: Recipient address rejected: User unknown", None),
    # [P] text as a content filter words it after the data: the RCPT had been accepted
    (P.DATA, 554, None, "5.5.1 Error: no valid recipients", None),  # [P] the reply to DATA
    (P.MAIL, 553, None, "5.1.8 <a@example.com>: Sender address rejected: Domain not found", None),  # [P] our sender
    (P.CONNECT, 554, None, "5.7.1 Service unavailable; Client host [1.2.3.4] blocked using zen.spamhaus.org",
     None),  # [P] a greeting refusal
    (P.HELO, 504, None, "5.5.2 <localhost>: Helo command rejected: need fully-qualified hostname", None),  # [P]
    # Not hard: temporary, whatever the words.
    (P.RCPT, 450, None, "4.1.1 <x@example.org>: Recipient address rejected: User unknown in local recipient table",
     None),  # [P] soft_bounce = yes
    (P.UNKNOWN, None, None, "4.4.7 message expired after 5 days in the queue", None),  # [R]
    (P.UNKNOWN, 550, "5.0.0", "retry timeout exceeded", None),  # [E] expired at a relay, reported as failed
    (P.RCPT, 450, None, "4.2.1 The user you are trying to contact is receiving mail too quickly.", None),  # [G]
    (P.RCPT, 450, None, "4.2.0 <x@example.org>: Recipient address rejected: Greylisted, see "
     "http://postgrey.schweikert.ch/help/example.org.html", None),  # [PG]
    # Not hard: the account exists but cannot take mail now.
    (P.RCPT, 552, None, "5.2.2 The email account that you tried to reach is over quota.", None),  # [G]
    (P.RCPT, 552, None, "5.2.2 <x@icloud.com>: user is over quota", None),  # [A] mailbox full
    (P.RCPT, 550, None, "5.2.1 The email account that you tried to reach is disabled.", None),  # [G]
    (P.RCPT, 554, None, "delivery error: dd Sorry your message to x@yahoo.com cannot be delivered. This mailbox is "
     "disabled (554.30).", None),  # [Y]
    (P.RCPT, 554, None, "delivery error: dd Sorry, your message to x@yahoo.com cannot be delivered. This account "
     "has been disabled or discontinued [#102].", None),  # [Y]
    (P.RCPT, 550, None, "5.1.1 <x@example.org>: account suspended", None),  # constructed: the words win over 5.1.1
    (P.AFTER_DATA, 552, None, "5.3.4 Message size exceeds fixed limit", None),  # [P] message too large
    # Not hard: policy, spam, authentication, reputation, TLS, relaying, local errors.
    (P.AFTER_DATA, 550, None, "5.7.1 [1.2.3.4] Our system has detected that this message is likely unsolicited "
     "mail.", None),  # [G] spam
    (P.AFTER_DATA, 550, None, "5.7.26 This message does not have authentication information or fails to pass "
     "authentication checks", None),  # [G] DMARC
    (P.UNKNOWN, 550, None, "5.7.23 <x@example.org>: Recipient address rejected: Message rejected due to: SPF fail - "
     "not authorized.", None),  # [SPF] "Recipient address rejected", but SPF
    (P.UNKNOWN, 550, None, "5.7.25 The IP address sending this message does not have a PTR record setup", None),  # [G]
    (P.UNKNOWN, 554, None, "5.7.1 <x@example.org>: Relay access denied", None),  # [P]
    (P.UNKNOWN, 530, None, "5.7.0 Must issue a STARTTLS command first", None),  # [P] TLS required
    (P.UNKNOWN, 554, None, "5.7.9 Message not accepted for policy reasons.", None),  # [Y]
    (P.UNKNOWN, 554, None, "5.3.0 unknown mailer error 1", None),  # [S] the local delivery program failed
    # Not hard: ambiguous (could be a dead mailbox, could be anything).
    (P.UNKNOWN, 550, None, "5.5.0 Requested action not taken: mailbox unavailable (S2017062302).", None),  # [M]
    (P.UNKNOWN, 550, None, "", None),  # a bare 550
    (P.UNKNOWN, 550, "5.0.0", "<x@example.org>: delivery failed", None),  # constructed: a generic status
    (P.RCPT, 550, None, "5.7.1 <x@example.org>: Recipient address rejected: User unknown", None),
    # constructed: a policy status the words contradict is ambiguous
    (P.RCPT, 550, None, "5.2.0 <x@example.org>: no such user", None),  # constructed: a mailbox-status subject
    (P.UNKNOWN, None, None, "connect to mx.example.org[1.2.3.4]:25: Connection refused", None),  # [P] no reply
    # Issue 18's fourth set (legend at the top of the file). 550 with no status: the parser's stand-in
    # for a returned report's permanent verdict when its text carries no code.
    (P.UNKNOWN, 550, None, "550 <x@ezweb.ne.jp>: User unknown", "user_unknown"),  # [K] a missing mailbox
    (P.UNKNOWN, 550, None, "550 : User unknown", None),  # [K] no address named: the domain filter refused us
    (P.UNKNOWN, 550, None, "The user(s) account is disabled.", None),  # [K] unpaid or paused: comes back
    (P.RCPT, 550, None, "Unknown user x@docomo.ne.jp", "user_unknown"),  # [D] at RCPT: no such mailbox
    (P.AFTER_DATA, 550, None, "Unknown user x@docomo.ne.jp", None),  # [D] after the data: its filter
    (P.UNKNOWN, 550, "5.2.0", "550 Unknown user x@docomo.ne.jp", None),  # [D] a Sendmail relay's Status for it
    (P.RCPT, 553, None, "5.3.0 <x@example.org>... No such user here", "user_unknown"),  # [X3] / [S] 5.3.0 generic
    (P.UNKNOWN, 550, None, "DNS lookup failure: host nx.example not found", "domain_not_found"),  # [DMA]
    (P.UNKNOWN, 550, None, "Unknown host: x@nx.example", "domain_not_found"),  # [I]
    (P.UNKNOWN, 550, None, "Error: No valid recipients for this MM", "user_unknown"),  # [V]
    (P.UNKNOWN, 550, None, "Delivery failed 3 attempts: x@example.org", None),  # [I] expired, not dead
]
# fmt: on


@pytest.mark.parametrize(("phase", "code", "status", "text", "reason"), HARD_CASES)
def test_hard_or_not(phase, code, status, text, reason):
    status = status or enhanced_status(text)
    assert hard_reason(phase, code, status, text) == reason
    kind = classify(code, status, text, None, phase).kind
    assert (kind is Kind.HARD) == (reason is not None), kind


PHASE_CASES = [
    ("host mx[1.2.3.4] said: 550 5.1.1 <x>: User unknown (in reply to RCPT TO command)", P.RCPT),  # [P]
    ("host mx[1.2.3.4] said: 550 5.7.1 Message rejected (in reply to end of DATA command)", P.AFTER_DATA),  # [P]
    ("host mx[1.2.3.4] said: 553 5.1.8 Sender rejected (in reply to MAIL FROM command)", P.MAIL),  # [P]
    ("host mx[1.2.3.4] said: 554 5.5.1 Error: no valid recipients (in reply to DATA command)", P.DATA),  # [P]
    ("host mx[1.2.3.4] refused to talk to me: 554 5.7.1 go away", P.CONNECT),  # [P]
    ("SMTP error from remote mail server after RCPT TO:<x@example.net>:\n550 5.1.1 unknown", P.RCPT),  # [E]
    ("SMTP error from remote mail server after pipelined RCPT TO:<x@example.net>: 550", P.RCPT),  # [E]
    ("SMTP error from remote mail server after end of data:\n550 5.7.1 spam", P.AFTER_DATA),  # [E]
    ("SMTP error from remote mail server after MAIL FROM:<a@example.com> SIZE=1234:\n550 no", P.MAIL),  # [E]
    ("SMTP error from remote mail server after initial connection:\n554 no", P.CONNECT),  # [E]
    ("1.2.3.4 does not like recipient.\nRemote host said: 550 5.1.1 unknown", P.RCPT),  # [Q]
    ("1.2.3.4 failed after I sent the message.\nRemote host said: 554 5.7.1 spam", P.AFTER_DATA),  # [Q]
    ("Connected to 1.2.3.4 but sender was rejected.\nRemote host said: 553 no", P.MAIL),  # [Q]
    ("Connected to 1.2.3.4 but my name was rejected.", P.HELO),  # [Q]
    (">>> RCPT TO:<x@example.net>\n<<< 550 5.1.1 <x@example.net>... User unknown", P.RCPT),  # [C]
    (">>> DATA\n<<< 550 5.1.1 <x@example.net>... User unknown", P.UNKNOWN),  # [S] pipelined RCPT reply
    ("550 5.1.1 user unknown", P.UNKNOWN),
    ("mx [1.2.3.4] did not like our RCPT TO:\n550 5.1.1 <x>: User unknown", P.RCPT),  # [DMA]
    ("mx [1.2.3.4] did not like our final DATA:\n550 5.1.1 <x>... User unknown", P.AFTER_DATA),  # [DMA] end of data
    ("mx [1.2.3.4] did not like our DATA:\n554 5.7.1 spam", P.DATA),  # [DMA]
    ("mx [1.2.3.4] did not like our MAIL FROM:\n553 5.1.8 <a>: Sender address rejected", P.MAIL),  # [DMA]
    ("Technical details:\n\nSMTP:RCPT host 1.2.3.4: 553 5.3.0 <x>... No such user here", P.RCPT),  # [X3]
    ("Technical details:\n\nSMTP:DATA host 1.2.3.4: 550 5.1.1 <x>... User unknown", P.DATA),  # [X3]
    ("----- Non-delivered information -----\nMail Delivery Failed... User unknown", P.AFTER_DATA),  # [BG] its filter
]


@pytest.mark.parametrize(("text", "phase"), PHASE_CASES)
def test_the_phase_a_report_names(text, phase):
    assert phase_in_text(text) is phase
