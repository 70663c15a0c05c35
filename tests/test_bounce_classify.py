"""The classifier over real-world reply lines.

Where each line comes from: [G] Gmail's published SMTP error reference; [M] Microsoft's
Exchange Online NDR reference; [Y] Yahoo's SMTP error codes page; [A] iCloud bounces as
quoted in Apple's postmaster pages; [P] Postfix's default reject texts (postconf(5),
smtpd.c); [E] Exim's default texts; [Q] qmail-send/qmail-remote; [S] Sendmail's texts;
[X] on-premises Exchange; [R] this relay's own replies.
"""

from __future__ import annotations

import pytest

from relay.bounces.classify import Kind, classify, enhanced_status

CASES = [
    # (code, text, remote host or None, kind, reason)
    (
        550,
        "5.1.1 The email account that you tried to reach does not exist. Please try double-checking",
        None,
        "hard",
        "user_unknown",
    ),  # [G]
    (550, "5.2.1 The email account that you tried to reach is disabled.", None, "hard", "mailbox_disabled"),  # [G]
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
        "hard",
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
        "hard",
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
        "hard",
        "user_unknown",
    ),  # [P] soft_bounce=yes: still the address
    (
        450,
        "4.1.1 <x@example.org>: Recipient address rejected: unverified address: host mx[1.2.3.4] said: "
        "550 user unknown",
        None,
        "soft",
        "temporary_failure",
    ),  # [P] address verification pending
    (554, "5.7.1 <x@example.org>: Relay access denied", None, "hard", "relay_denied"),  # [P]
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
    (553, "sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)", None, "hard", "relay_denied"),  # [Q]
    (550, "sorry, no mailbox here by that name. (#5.1.1)", None, "hard", "user_unknown"),  # [Q]
    (None, "Sorry, I couldn't find any host named nx.example. (#5.1.2)", None, "hard", "domain_not_found"),  # [Q]
    (None, "Sorry, I wasn't able to establish an SMTP connection. (#4.4.1)", None, "soft", "temporary_failure"),
    (550, "5.1.1 <x@example.org>... User unknown", None, "hard", "user_unknown"),  # [S]
    (550, "5.7.1 <x@example.org>... Relaying denied", None, "hard", "relay_denied"),  # [S]
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
    (550, "Requested action not taken: mailbox unavailable", None, "hard", "mailbox_unavailable"),
    (450, "Requested mail action not taken: mailbox unavailable", None, "soft", "temporary_failure"),
    (550, "This account has been disabled or discontinued", None, "hard", "mailbox_disabled"),
    (550, "", None, "hard", "mailbox_unavailable"),
    (554, "Transaction failed", None, "block", "policy_rejection"),
    (451, "", None, "soft", "temporary_failure"),
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
    [("550 5.1.1 no", "5.1.1"), ("(#5.7.1)", "5.7.1"), ("[4.7.650]", "4.7.650"), ("v1.2.3.4 x", None),
     ("at 10.5.1.1", None), ("", None)],
)  # fmt: skip
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
