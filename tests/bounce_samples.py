# ruff: noqa: E501  (sample data: long lines are the samples)
"""Returned messages in the shapes real MTAs produce, for the parser tests and `relay bounces parse`.

Each sample is written here after the structure of what the named software
sends (field names, MIME layout, the stock phrases that identify it, the
reply lines its peers give); the diagnostic lines are real-world SMTP replies
as collected for tests/test_bounce_classify.py. ``expect`` lists
(recipient, classification) per failed recipient; ``kind`` is Parsed.kind.
"""

from __future__ import annotations

import dataclasses
import email.header

ORIGINAL = """\
Return-Path: <app@example.com>
Received: by relay.example.com (relay) id 01jd0000000000000000000000
From: App <app@example.com>
To: {to}
Subject: Your receipt
Date: Mon, 23 Nov 2026 10:00:00 +0000
Message-ID: <orig-123@relay.example.com>
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8

Thanks for your order.
"""


@dataclasses.dataclass(frozen=True)
class Sample:
    name: str
    source: str  # which software's format this follows
    text: str
    kind: str
    expect: tuple[tuple[str | None, str], ...] = ()
    message_id: str | None = "orig-123@relay.example.com"

    @property
    def raw(self) -> bytes:
        return self.text.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8")


def dsn(
    *,
    reporting: str,
    human: str,
    recipients: list[str],
    to: str = "bob@example.net",
    subject: str = "Undelivered Mail Returned to Sender",
    returned: str = "message/rfc822",
    sender: str = "MAILER-DAEMON@mx.example.org (Mail Delivery System)",
    extra_message_fields: str = "",
) -> str:
    """A multipart/report DSN (RFC 3464) with the given per-recipient field blocks."""
    original = ORIGINAL.format(to=to)
    if returned == "text/rfc822-headers":
        original = original.split("\n\n", 1)[0] + "\n"
    blocks = "\n".join(recipients)
    return f"""\
Return-Path: <>
From: {sender}
To: b+01jd0000000000000000000000.7.abcdefghijkl@bounces.example.com
Subject: {subject}
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="BOUNDARY"
Message-Id: <20261123100001.ABC@{reporting}>

This is a MIME-encapsulated message.

--BOUNDARY
Content-Description: Notification
Content-Type: text/plain; charset=us-ascii

{human}
--BOUNDARY
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; {reporting}
Arrival-Date: Mon, 23 Nov 2026 10:00:00 +0000
{extra_message_fields}
{blocks}
--BOUNDARY
Content-Type: {returned}

{original}
--BOUNDARY--
"""


def prose(*, sender: str, subject: str, body: str, headers: str = "") -> str:
    return f"""\
Return-Path: <>
From: {sender}
To: b+01jd0000000000000000000000.7.abcdefghijkl@bounces.example.com
Subject: {subject}
Date: Mon, 23 Nov 2026 10:05:00 +0000
{headers}MIME-Version: 1.0
Content-Type: text/plain; charset=us-ascii

{body}"""


SAMPLES: list[Sample] = [
    # --- RFC 3464 DSNs --------------------------------------------------------------------
    Sample(
        "postfix-user-unknown",
        "Postfix bounce(8)",
        dsn(
            reporting="mx.example.org",
            human="This is the mail system at host mx.example.org.\n\nI'm sorry to have to inform you that your"
            " message could not\nbe delivered to one or more recipients.\n\n<bob@example.net>: host"
            " mx1.example.net[192.0.2.10] said: 550 5.1.1\n    <bob@example.net>: Recipient address rejected:"
            " User unknown in virtual\n    mailbox table (in reply to RCPT TO command)\n",
            recipients=[
                "Final-Recipient: rfc822; bob@example.net\nOriginal-Recipient: rfc822;bob@example.net\n"
                "Action: failed\nStatus: 5.1.1\nRemote-MTA: dns; mx1.example.net\nDiagnostic-Code: smtp; 550"
                " 5.1.1 <bob@example.net>: Recipient address\n    rejected: User unknown in virtual mailbox"
                " table\n"
            ],
            extra_message_fields="X-Postfix-Queue-ID: 4AB12C0042\nX-Postfix-Sender: rfc822; app@example.com\n",
        ),
        "dsn",
        (("bob@example.net", "hard"),),
    ),
    Sample(
        "postfix-two-recipients",
        "Postfix bounce(8)",
        dsn(
            reporting="mx.example.org",
            to="bob@example.net, carol@example.net",
            human="This is the mail system at host mx.example.org.\n\n<bob@example.net>: host mx1.example.net said:"
            " 550 5.1.1 no such user\n\n<carol@example.net>: host mx1.example.net said: 552 5.2.2 Mailbox full\n",
            recipients=[
                "Final-Recipient: rfc822; bob@example.net\nAction: failed\nStatus: 5.1.1\n"
                "Diagnostic-Code: smtp; 550 5.1.1 no such user\n",
                "Final-Recipient: rfc822; carol@example.net\nAction: failed\nStatus: 5.2.2\n"
                "Diagnostic-Code: smtp; 552 5.2.2 Mailbox full\n",
            ],
        ),
        "dsn",
        (("bob@example.net", "hard"), ("carol@example.net", "soft")),
    ),
    Sample(
        "postfix-expired",
        "Postfix bounce(8) after maximal_queue_lifetime",
        dsn(
            reporting="mx.example.org",
            human="This is the mail system at host mx.example.org.\n\n<bob@example.net>: connect to"
            " mx1.example.net[192.0.2.10]:25: Connection timed out\n",
            recipients=[
                "Final-Recipient: rfc822; bob@example.net\nAction: failed\nStatus: 4.4.1\n"
                "Diagnostic-Code: X-Postfix; connect to mx1.example.net[192.0.2.10]:25: Connection timed out\n"
            ],
        ),
        "dsn",
        (("bob@example.net", "soft"),),
    ),
    Sample(
        "postfix-delayed",
        "Postfix delay warning",
        dsn(
            reporting="mx.example.org",
            subject="Delayed Mail (still being retried)",
            human="This is the mail system at host mx.example.org.\n\n####################################\n# THIS IS"
            " A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #\n###################################\n",
            recipients=[
                "Final-Recipient: rfc822; bob@example.net\nAction: delayed\nStatus: 4.4.1\n"
                "Diagnostic-Code: X-Postfix; connect to mx1.example.net[192.0.2.10]:25: Connection refused\n"
                "Will-Retry-Until: Sat, 28 Nov 2026 10:00:00 +0000\n"
            ],
            returned="text/rfc822-headers",
        ),
        "delayed",
    ),
    Sample(
        "postfix-relay-success-notify",
        "Postfix DSN success (NOTIFY=SUCCESS)",
        dsn(
            reporting="mx.example.org",
            subject="Successful Mail Delivery Report",
            human="This is the mail system at host mx.example.org.\n\nYour message was successfully delivered.\n",
            recipients=[
                "Final-Recipient: rfc822; bob@example.net\nAction: relayed\nStatus: 2.0.0\n"
                "Diagnostic-Code: smtp; 250 2.0.0 OK\n"
            ],
        ),
        "dsn",
    ),
    Sample(
        "gmail-no-such-user",
        "Gmail (mailer-daemon@googlemail.com)",
        dsn(
            reporting="mail-sor-f41.google.com",
            subject="Delivery Status Notification (Failure)",
            sender="Mail Delivery Subsystem <mailer-daemon@googlemail.com>",
            human="** Address not found **\n\nYour message wasn't delivered to bob@example.net because the address"
            " couldn't be found, or is unable to receive mail.\n\nThe response from the remote server was:\n"
            "550 5.1.1 The email account that you tried to reach does not exist.\n",
            recipients=[
                "Final-Recipient: rfc822; bob@example.net\nAction: failed\nStatus: 5.1.1\n"
                "Remote-MTA: dns; gmail-smtp-in.l.google.com. (2a00:1450:400c:c0b::1a, the server for the"
                " domain example.net.)\nDiagnostic-Code: smtp; 550-5.1.1 The email account that you tried to"
                " reach does not exist. Please try\n 550-5.1.1 double-checking the recipient's email address for"
                " typos or\n 550 5.1.1 https://support.google.com/mail/?p=NoSuchUser a1si123 - gsmtp\n"
                "Last-Attempt-Date: Mon, 23 Nov 2026 02:00:01 -0800 (PST)\n"
            ],
        ),
        "dsn",
        (("bob@example.net", "hard"),),
    ),
    Sample(
        "gmail-unauthenticated-block",
        "Gmail refusing unauthenticated mail",
        dsn(
            reporting="mx.example.org",
            human="<bob@gmail.com>: host gmail-smtp-in.l.google.com said: 550-5.7.26 This mail is unauthenticated\n",
            recipients=[
                "Final-Recipient: rfc822; bob@gmail.com\nAction: failed\nStatus: 5.7.26\n"
                "Remote-MTA: dns; gmail-smtp-in.l.google.com\nDiagnostic-Code: smtp; 550-5.7.26 This mail is"
                " unauthenticated, which poses a security risk to the sender and Gmail users, and has been"
                " blocked. The sender must authenticate with at least one of SPF or DKIM. - gsmtp\n"
            ],
            to="bob@gmail.com",
        ),
        "dsn",
        (("bob@gmail.com", "block"),),
    ),
    Sample(
        "gmail-over-quota",
        "Gmail 452 over quota, expired at a relay",
        dsn(
            reporting="mx.example.org",
            human="<bob@gmail.com>: host gmail-smtp-in.l.google.com said: 552 5.2.2 The email account that you"
            " tried to reach is over quota.\n",
            recipients=[
                "Final-Recipient: rfc822; bob@gmail.com\nAction: failed\nStatus: 5.2.2\n"
                "Remote-MTA: dns; gmail-smtp-in.l.google.com\nDiagnostic-Code: smtp; 552-5.2.2 The email"
                " account that you tried to reach is over quota. Please direct\n 552 5.2.2 the recipient to"
                " https://support.google.com/mail/?p=OverQuotaPerm - gsmtp\n"
            ],
            to="bob@gmail.com",
        ),
        "dsn",
        (("bob@gmail.com", "soft"),),
    ),
    Sample(
        "office365-recipient-not-found",
        "Exchange Online NDR",
        dsn(
            reporting="AM0PR01MB1234.eurprd01.prod.outlook.com",
            subject="Undeliverable: Your receipt",
            sender="Microsoft Outlook <MicrosoftExchange329e71ec88ae4615bbc36ab6ce41109e@example.net>",
            human="Your message to bob@example.net couldn't be delivered.\n\nbob wasn't found at example.net.\n\n"
            "Remote Server returned '550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP"
            " address lookup'\n",
            recipients=[
                "Action: failed\nStatus: 5.1.10\nDiagnostic-Code: smtp;550 5.1.10"
                " RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup\n"
                "Final-Recipient: rfc822;bob@example.net\nRemote-MTA: dns;AM0PR01MB1234.eurprd01.prod.outlook.com\n"
            ],
        ),
        "dsn",
        (("bob@example.net", "hard"),),
    ),
    Sample(
        "office365-blocked-sender",
        "Exchange Online, sender on block list",
        dsn(
            reporting="DB8PR01MB5678.eurprd01.prod.outlook.com",
            subject="Undeliverable: Your receipt",
            human="Your message to bob@example.net couldn't be delivered.\n",
            recipients=[
                "Final-Recipient: rfc822;bob@example.net\nAction: failed\nStatus: 5.7.1\n"
                "Diagnostic-Code: smtp;550 5.7.1 Service unavailable, Client host [192.0.2.1] blocked using"
                " Spamhaus. To request removal from this list see https://www.spamhaus.org/query/ip/192.0.2.1"
                " (AS3130). [AM0PR01MB1234.eurprd01.prod.outlook.com]\n"
            ],
        ),
        "dsn",
        (("bob@example.net", "block"),),
    ),
    Sample(
        "outlook-com-mailbox-disabled",
        "Outlook.com via Postfix",
        dsn(
            reporting="mx.example.org",
            human="<bob@hotmail.com>: host hotmail-com.olc.protection.outlook.com said: 550 5.5.0 Requested action"
            " not taken: mailbox unavailable.\n",
            recipients=[
                "Final-Recipient: rfc822; bob@hotmail.com\nAction: failed\nStatus: 5.5.0\n"
                "Remote-MTA: dns; hotmail-com.olc.protection.outlook.com\nDiagnostic-Code: smtp; 550 5.5.0"
                " Requested action not taken: mailbox unavailable (S2017062302). [DM6NAM12FT012.eop-nam12.prod."
                "protection.outlook.com]\n"
            ],
            to="bob@hotmail.com",
        ),
        "dsn",
        (("bob@hotmail.com", "soft"),),  # not hard: ambiguous or a disabled account (issue 18)
    ),
    Sample(
        "yahoo-user-unknown",
        "Yahoo via Postfix",
        dsn(
            reporting="mx.example.org",
            human="<bob@yahoo.com>: host mta7.am0.yahoodns.net said: 554 delivery error: dd This user doesn't have a"
            " yahoo.com account (bob@yahoo.com) [0] - mta4210.mail.gq1.yahoo.com\n",
            recipients=[
                "Final-Recipient: rfc822; bob@yahoo.com\nAction: failed\nStatus: 5.0.0\n"
                "Remote-MTA: dns; mta7.am0.yahoodns.net\nDiagnostic-Code: smtp; 554 delivery error: dd This user"
                " doesn't have a yahoo.com account (bob@yahoo.com) [0] - mta4210.mail.gq1.yahoo.com\n"
            ],
            to="bob@yahoo.com",
        ),
        "dsn",
        (("bob@yahoo.com", "hard"),),
    ),
    Sample(
        "yahoo-deferred-ts",
        "Yahoo temporary deferral reported as failed after the queue lifetime",
        dsn(
            reporting="mx.example.org",
            human="<bob@yahoo.com>: host mta5.am0.yahoodns.net said: 421 4.7.0 [TSS04] Messages from 192.0.2.1"
            " temporarily deferred due to unexpected volume or user complaints\n",
            recipients=[
                "Final-Recipient: rfc822; bob@yahoo.com\nAction: failed\nStatus: 4.7.0\n"
                "Diagnostic-Code: smtp; 421 4.7.0 [TSS04] Messages from 192.0.2.1 temporarily deferred due to"
                " unexpected volume or user complaints - 4.16.55.1; see https://postmaster.yahooinc.com/error-"
                "codes\n"
            ],
            to="bob@yahoo.com",
        ),
        "dsn",
        (("bob@yahoo.com", "soft"),),
    ),
    Sample(
        "icloud-no-such-user",
        "iCloud via Exim DSN",
        dsn(
            reporting="mail.example.org",
            subject="Mail delivery failed: returning message to sender",
            human="This message was created automatically by mail delivery software.\n\nA message that you sent could"
            " not be delivered to one or more of its\nrecipients. This is a permanent error. The following"
            " address(es) failed:\n\n  bob@icloud.com\n    host mx01.mail.icloud.com [17.57.154.33]\n    SMTP"
            " error from remote mail server after RCPT TO:<bob@icloud.com>:\n    550 5.1.1 <bob@icloud.com>:"
            " user does not exist\n",
            recipients=[
                "Action: failed\nFinal-Recipient: rfc822;bob@icloud.com\nStatus: 5.0.0\n"
                "Remote-MTA: dns; mx01.mail.icloud.com\nDiagnostic-Code: smtp; 550 5.1.1 <bob@icloud.com>: user"
                " does not exist\n"
            ],
            to="bob@icloud.com",
        ),
        "dsn",
        (("bob@icloud.com", "hard"),),
    ),
    Sample(
        "exim-dsn-no-diagnostic",
        "Exim DSN whose field block has no Diagnostic-Code",
        dsn(
            reporting="mail.example.org",
            subject="Mail delivery failed: returning message to sender",
            human="This message was created automatically by mail delivery software.\n\nA message that you sent could"
            " not be delivered to one or more of its\nrecipients. This is a permanent error. The following"
            " address(es) failed:\n\n  bob@example.net\n    Unrouteable address\n",
            recipients=["Action: failed\nFinal-Recipient: rfc822;bob@example.net\nStatus: 5.0.0\n"],
        ),
        "dsn",
        (("bob@example.net", "hard"),),
    ),
    Sample(
        "sendmail-dsn-host-unknown",
        "Sendmail DSN",
        dsn(
            reporting="mail.example.org",
            subject="Returned mail: see transcript for details",
            human="The original message was received at Mon, 23 Nov 2026 10:00:00 GMT\nfrom relay.example.com"
            " [192.0.2.1]\n\n   ----- The following addresses had permanent fatal errors -----\n"
            "<bob@nonexistent.example>\n    (reason: 550 Host unknown)\n\n   ----- Transcript of session"
            " follows -----\n550 5.1.2 <bob@nonexistent.example>... Host unknown (Name server:"
            " nonexistent.example: host not found)\n",
            recipients=[
                "Final-Recipient: RFC822; bob@nonexistent.example\nAction: failed\nStatus: 5.1.2\n"
                "Remote-MTA: DNS; nonexistent.example\nLast-Attempt-Date: Mon, 23 Nov 2026 10:00:01 GMT\n"
            ],
            to="bob@nonexistent.example",
        ),
        "dsn",
        (("bob@nonexistent.example", "hard"),),
    ),
    Sample(
        "dsn-no-blank-line-between-recipients",
        "a broken MTA that runs recipient blocks together",
        dsn(
            reporting="mx.example.org",
            to="bob@example.net, dan@example.net",
            human="Delivery has failed to these recipients.\n",
            recipients=[
                "Final-Recipient: rfc822;bob@example.net\nAction: failed\nStatus: 5.1.1\n"
                "Final-Recipient: rfc822;dan@example.net\nAction: failed\nStatus: 5.1.1\n"
            ],
        ),
        "dsn",
        (("bob@example.net", "hard"), ("dan@example.net", "hard")),
    ),
    Sample(
        "dsn-rfc822-headers-only",
        "DSN returning headers only (RET=HDRS)",
        dsn(
            reporting="mx.example.org",
            returned="text/rfc822-headers",
            human="<bob@example.net>: 550 5.2.1 The email account that you tried to reach is disabled.\n",
            recipients=[
                "Final-Recipient: rfc822; bob@example.net\nAction: failed\nStatus: 5.2.1\n"
                "Diagnostic-Code: smtp; 550 5.2.1 The email account that you tried to reach is disabled.\n"
            ],
        ),
        "dsn",
        (("bob@example.net", "soft"),),  # not hard: ambiguous or a disabled account (issue 18)
    ),
    Sample(
        "dsn-spam-content",
        "content filter refusal",
        dsn(
            reporting="mx.example.org",
            human="<bob@example.net>: host mx.example.net said: 554 5.7.1 Message rejected as spam\n",
            recipients=[
                "Final-Recipient: rfc822; bob@example.net\nAction: failed\nStatus: 5.7.1\n"
                "Diagnostic-Code: smtp; 554 5.7.1 Message rejected as spam by Content Filtering.\n"
            ],
        ),
        "dsn",
        (("bob@example.net", "block"),),
    ),
    Sample(
        "dsn-message-too-big",
        "size refusal",
        dsn(
            reporting="mx.example.org",
            human="<bob@example.net>: message size exceeds fixed maximum message size\n",
            recipients=[
                "Final-Recipient: rfc822; bob@example.net\nAction: failed\nStatus: 5.3.4\n"
                "Diagnostic-Code: smtp; 552 5.3.4 Message size exceeds fixed maximum message size\n"
            ],
        ),
        "dsn",
        (("bob@example.net", "soft"),),
    ),  # the address is fine: not suppressed
    Sample(
        "dsn-null-mx",
        "RFC 7505 null MX",
        dsn(
            reporting="mx.example.org",
            human="<bob@example.net>: Domain example.net does not accept mail (nullMX)\n",
            recipients=[
                "Final-Recipient: rfc822; bob@example.net\nAction: failed\nStatus: 5.1.10\n"
                "Diagnostic-Code: X-Postfix; Domain example.net does not accept mail (nullMX)\n"
            ],
        ),
        "dsn",
        (("bob@example.net", "hard"),),
    ),
    # --- bounces in prose ------------------------------------------------------------------
    Sample(
        "qmail-user-unknown",
        "qmail-send",
        prose(
            sender="MAILER-DAEMON@mail.example.org",
            subject="failure notice",
            body="Hi. This is the qmail-send program at mail.example.org.\nI'm afraid I wasn't able to deliver your"
            " message to the following addresses.\nThis is a permanent error; I've given up. Sorry it didn't work"
            " out.\n\n<bob@example.net>:\n192.0.2.10 does not like recipient.\nRemote host said: 550 5.1.1"
            " <bob@example.net>... No such user\nGiving up on 192.0.2.10.\n\n--- Below this line is a copy of the"
            " message.\n\n" + ORIGINAL.format(to="bob@example.net"),
        ),
        "prose",
        (("bob@example.net", "hard"),),
    ),
    Sample(
        "qmail-two-recipients-quota",
        "qmail-send, two addresses",
        prose(
            sender="MAILER-DAEMON@mail.example.org",
            subject="failure notice",
            body="Hi. This is the qmail-send program at mail.example.org.\nI'm afraid I wasn't able to deliver your"
            " message to the following addresses.\nThis is a permanent error; I've given up. Sorry it didn't work"
            " out.\n\n<bob@example.net>:\nSorry, no mailbox here by that name. (#5.1.1)\n\n<carol@example.net>:\n"
            "user is over quota (#5.2.2)\n\n--- Below this line is a copy of the message.\n\n"
            + ORIGINAL.format(to="bob@example.net, carol@example.net"),
        ),
        "prose",
        (("bob@example.net", "hard"), ("carol@example.net", "soft")),
    ),
    Sample(
        "exim-old-prose",
        "Exim without DSN, X-Failed-Recipients",
        prose(
            sender="Mail Delivery System <Mailer-Daemon@mail.example.org>",
            subject="Mail delivery failed: returning message to sender",
            headers="X-Failed-Recipients: bob@example.net\nAuto-Submitted: auto-replied\n",
            body="This message was created automatically by mail delivery software.\n\nA message that you sent could"
            " not be delivered to one or more of its\nrecipients. This is a permanent error. The following"
            " address(es) failed:\n\n  bob@example.net\n    SMTP error from remote mail server after RCPT"
            " TO:<bob@example.net>:\n    host mx.example.net [192.0.2.10]: 550 5.1.1 <bob@example.net>:"
            " Recipient address rejected: User unknown\n\n------ This is a copy of the message, including all"
            " the headers. ------\n\n" + ORIGINAL.format(to="bob@example.net"),
        ),
        "prose",
        (("bob@example.net", "hard"),),
    ),
    Sample(
        "exim-delay-warning",
        "Exim delay warning",
        prose(
            sender="Mail Delivery System <Mailer-Daemon@mail.example.org>",
            subject="Warning: message 1abcDE-0001xy-AB delayed 24 hours",
            headers="Auto-Submitted: auto-replied\n",
            body="This message was created automatically by mail delivery software.\nA message that you sent has not"
            " yet been delivered to one or more of its\nrecipients after more than 24 hours on the queue on"
            " mail.example.org.\n\nThe message identifier is:     1abcDE-0001xy-AB\n\nThe address to which the"
            " message has not yet been delivered is:\n\n  bob@example.net\n    host mx.example.net"
            " [192.0.2.10]\n    Delay reason: SMTP error from remote mail server after RCPT"
            " TO:<bob@example.net>:\n    451 4.7.1 Greylisted, please try again later\n\nNo action is required"
            " on your part. Delivery attempts will continue for some time.\n",
        ),
        "delayed",
        message_id=None,
    ),
    Sample(
        "sendmail-prose",
        "Sendmail without DSN",
        prose(
            sender="Mail Delivery Subsystem <MAILER-DAEMON@mail.example.org>",
            subject="Returned mail: see transcript for details",
            body="The original message was received at Mon, 23 Nov 2026 10:00:00 GMT\nfrom relay.example.com"
            " [192.0.2.1]\n\n   ----- The following addresses had permanent fatal errors -----\n<bob@example.net>"
            "\n    (reason: 550 5.1.1 <bob@example.net>... User unknown)\n\n   ----- Transcript of session follows"
            " -----\n... while talking to mx.example.net.:\n>>> DATA\n<<< 550 5.1.1 <bob@example.net>... User"
            " unknown\n550 5.1.1 <bob@example.net>... User unknown\n\n   ----- Original message follows -----\n\n"
            + ORIGINAL.format(to="bob@example.net"),
        ),
        "prose",
        (("bob@example.net", "hard"),),
    ),
    Sample(
        "exchange-2003-prose",
        "Exchange 2003 NDR in prose",
        prose(
            sender="System Administrator <postmaster@example.net>",
            subject="Undeliverable: Your receipt",
            body="Your message did not reach some or all of the intended recipients.\n\n      Subject:\tYour receipt\n"
            "      Sent:\t11/23/2026 10:00 AM\n\nThe following recipient(s) cannot be reached:\n\n      bob@example.net"
            " on 11/23/2026 10:00 AM\n            The e-mail account does not exist at the organization this"
            " message was sent to.  Check the e-mail address, or contact the recipient directly to find out the"
            " correct address.\n            <mail.example.net #5.1.1>\n",
        ),
        "prose",
        (("bob@example.net", "hard"),),
        message_id=None,
    ),
    Sample(
        "lotus-notes",
        "Lotus Domino",
        prose(
            sender="Postmaster@example.net",
            subject="DELIVERY FAILURE: User bob (bob@example.net) not listed in Domino Directory",
            body="Your message\n\n  Subject: Your receipt\n\nwas not delivered to:\n\n  bob@example.net\n\nbecause:\n\n"
            "  User bob (bob@example.net) not listed in Domino Directory\n",
        ),
        "prose",
        (("bob@example.net", "hard"),),
        message_id=None,
    ),
    Sample(
        "yahoo-old-prose",
        "Yahoo! legacy bounce text",
        prose(
            sender="MAILER-DAEMON@yahoo.com",
            subject="Failure Notice",
            body="Sorry, we were unable to deliver your message to the following address.\n\n<bob@yahoo.com>:\n"
            "554: delivery error: dd This user doesn't have a yahoo.com account (bob@yahoo.com) [0] -"
            " mta1022.mail.sk1.yahoo.com\n\n--- Below this line is a copy of the message.\n\n"
            + ORIGINAL.format(to="bob@yahoo.com"),
        ),
        "prose",
        (("bob@yahoo.com", "hard"),),
    ),
    Sample(
        "groupwise-prose",
        "Novell GroupWise",
        prose(
            sender="postmaster@example.net",
            subject="Message status - undeliverable",
            body="The message that you sent was undeliverable to the following:\n\tbob@example.net (user not"
            " found)\n\nPossibly truncated original message follows:\n\n" + ORIGINAL.format(to="bob@example.net"),
        ),
        "prose",
        (("bob@example.net", "hard"),),
    ),
    Sample(
        "mdaemon-mailbox-full",
        "MDaemon",
        prose(
            sender="MDaemon@mail.example.net",
            subject="Permanent Delivery Failure",
            body="The attached message had PERMANENT fatal delivery errors!\n\nAfter one or more unsuccessful delivery"
            " attempts the attached message has been removed from the mail queue on this server.\n\n----------"
            "-------------------------\nUNABLE TO DELIVER MESSAGE TO: <bob@example.net>\n"
            "552 5.2.2 Mailbox size limit exceeded\n-----------------------------------\n",
        ),
        "prose",
        (("bob@example.net", "soft"),),
        message_id=None,
    ),
    Sample(
        "postfix-prose-only",
        "Postfix bounce text without the report part",
        prose(
            sender="MAILER-DAEMON@mx.example.org (Mail Delivery System)",
            subject="Undelivered Mail Returned to Sender",
            body="This is the mail system at host mx.example.org.\n\nI'm sorry to have to inform you that your message"
            " could not\nbe delivered to one or more recipients.\n\n                   The mail system\n\n"
            "<bob@example.net>: host mx1.example.net[192.0.2.10] said: 550 5.1.1\n    <bob@example.net>: Recipient"
            " address rejected: User unknown in local recipient table (in\n    reply to RCPT TO command)\n",
        ),
        "prose",
        (("bob@example.net", "hard"),),
        message_id=None,
    ),
    Sample(
        "gmail-delay",
        "Gmail delay notice",
        prose(
            sender="Mail Delivery Subsystem <mailer-daemon@googlemail.com>",
            subject="Delivery Status Notification (Delay)",
            body="** Delivery incomplete **\n\nThere was a temporary problem delivering your message to"
            " bob@example.net. Gmail will retry for 46 more hours. You'll be notified if the delivery fails"
            " permanently.\n\nThe response was:\n\n421 4.4.0 [example.net] connection timed out\n",
        ),
        "delayed",
        message_id=None,
    ),
    # --- complaints (ARF, RFC 5965) ----------------------------------------------------------
    Sample(
        "arf-yahoo-abuse",
        "Yahoo CFL complaint",
        """\
From: feedback@arf.mail.yahoo.com
To: fbl@bounces.example.com
Subject: FW: Your receipt
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="ARF"

--ARF
Content-Type: text/plain; charset="US-ASCII"

This is an email abuse report for an email message received from IP 192.0.2.1 on Mon, 23 Nov 2026.
For more information about this format please see http://www.mipassoc.org/arf/.

--ARF
Content-Type: message/feedback-report

Feedback-Type: abuse
User-Agent: Yahoo!-Mail-Feedback/2.0
Version: 0.1
Original-Mail-From: <b+01jd0000000000000000000000.7.abcdefghijkl@bounces.example.com>
Original-Rcpt-To: <bob@yahoo.com>
Received-Date: Mon, 23 Nov 2026 10:00:00 +0000
Reported-Domain: example.com
Authentication-Results: mta1.mail.yahoo.com  from=example.com; domainkeys=neutral; dkim=pass

--ARF
Content-Type: message/rfc822

"""
        + ORIGINAL.format(to="bob@yahoo.com")
        + "\n--ARF--\n",
        "arf",
        (("bob@yahoo.com", "complaint"),),
    ),
    Sample(
        "arf-redacted-recipient",
        "Microsoft JMRP style: recipient redacted, found by Message-ID",
        """\
From: staff@hotmail.com
To: fbl@bounces.example.com
Subject: complaint about message from 192.0.2.1
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="b1"

--b1
Content-Type: text/plain

This is an email abuse report.

--b1
Content-Type: message/feedback-report

Feedback-Type: abuse
User-Agent: Hotmail FBL
Version: 1
Source-IP: 192.0.2.1

--b1
Content-Type: message/rfc822
Content-Disposition: inline

"""
        + ORIGINAL.format(to="redacted@hotmail.com")
        + "\n--b1--\n",
        "arf",
        ((None, "complaint"),),
    ),
    Sample(
        "arf-not-spam",
        "ARF not-spam report",
        """\
From: fbl@isp.example
To: fbl@bounces.example.com
Subject: not spam
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="b2"

--b2
Content-Type: message/feedback-report

Feedback-Type: not-spam
User-Agent: Example-FBL/1.0
Version: 1
Original-Rcpt-To: bob@isp.example

--b2
Content-Type: text/rfc822-headers

Message-ID: <orig-123@relay.example.com>
From: app@example.com
To: bob@isp.example

--b2--
""",
        "arf",
    ),
    # --- not bounces ------------------------------------------------------------------------------
    Sample(
        "out-of-office",
        "Exchange automatic reply",
        """\
From: Bob <bob@example.net>
To: b+01jd0000000000000000000000.7.abcdefghijkl@bounces.example.com
Subject: Automatic reply: Your receipt
Auto-Submitted: auto-replied
X-Auto-Response-Suppress: All
Content-Type: text/plain

I am out of the office until Monday with limited access to email. For urgent matters contact carol@example.net.
""",
        "auto_reply",
        message_id=None,
    ),
    Sample(
        "vacation",
        "vacation(1) reply",
        """\
From: bob@example.net
To: b+01jd0000000000000000000000.7.abcdefghijkl@bounces.example.com
Subject: Re: Your receipt
Precedence: auto_reply
Content-Type: text/plain

I am away until December 1st and will answer your mail when I am back.
""",
        "auto_reply",
        message_id=None,
    ),
    Sample(
        "human-reply",
        "a person answering the bounce address",
        """\
From: Bob <bob@example.net>
To: b+01jd0000000000000000000000.7.abcdefghijkl@bounces.example.com
Subject: Re: Your receipt
Content-Type: text/plain

Thanks, got it!
""",
        "not_a_bounce",
        message_id=None,
    ),
]

# A second set, written after the parser above was settled and run against it unchanged
# before any fix: 15 of 17 right (a GMX copy marker and qmail-ldap's "#2.1.1" were missed).
SAMPLES += [
    Sample(
        "opensmtpd",
        "OpenSMTPD",
        prose(
            sender="Mailer Daemon <MAILER-DAEMON@mail.example.org>",
            subject="Delivery status notification: error",
            body="Hi!\n\nThis is the MAILER-DAEMON, please DO NOT REPLY to this email.\n\nAn error has occurred while attempting to deliver a message for\nthe following list of recipients:\n\nbob@example.net: 550 5.1.1 <bob@example.net>: Recipient address rejected: User unknown\n\nBelow is a copy of the original message:\n\n"
            + ORIGINAL.format(to="bob@example.net"),
        ),
        "prose",
        (("bob@example.net", "hard"),),
    ),
    Sample(
        "courier",
        "Courier MTA DSN",
        dsn(
            reporting="mail.example.org",
            subject="NOTICE: mail delivery status.",
            sender="Courier mail server at mail.example.org <@>",
            human="This is a delivery status notification from mail.example.org,\nrunning the Courier mail server, version 1.1.\n\nThe original message was received on Mon, 23 Nov 2026\nfrom relay.example.com [192.0.2.1]\n\n---------------------------------------------------------------------------\n\n                           UNDELIVERABLE MAIL\n\nYour message to the following recipients cannot be delivered:\n\n<bob@example.net>:\n    mx.example.net [192.0.2.10]:\n>>> RCPT TO:<bob@example.net>\n<<< 550 5.1.1 <bob@example.net>... User unknown\n",
            recipients=[
                "Original-Recipient: rfc822;bob@example.net\nFinal-Recipient: rfc822;bob@example.net\nAction: failed\nStatus: 5.0.0\nRemote-MTA: dns; mx.example.net\nDiagnostic-Code: smtp; 550 5.1.1 <bob@example.net>... User unknown\n"
            ],
        ),
        "dsn",
        (("bob@example.net", "hard"),),
    ),
    Sample(
        "gmx",
        "GMX prose",
        prose(
            sender="Mail Delivery System <mailer-daemon@gmx.net>",
            subject="Mail delivery failed: returning message to sender",
            body='This message was created automatically by mail delivery software.\n\nA message that you sent could not be delivered to one or more of\nits recipients. This is a permanent error. The following address\nfailed:\n\n"bob@example.net":\nSMTP error from remote server after RCPT command:\nhost: mx.example.net\n550 5.1.1 <bob@example.net>: Recipient address rejected: User unknown in virtual mailbox table\n\n--- The header of the original message is following. ---\n\n'
            + ORIGINAL.format(to="bob@example.net"),
        ),
        "prose",
        (("bob@example.net", "hard"),),
    ),
    Sample(
        "mailru",
        "Mail.ru prose",
        prose(
            sender="Mail Delivery System <MAILER-DAEMON@corp.mail.ru>",
            subject="Mail failure.",
            body="Message was not accepted -- invalid mailbox.  Local mailbox bob@mail.ru is unavailable: account is disabled\n",
        ),
        "prose",
        (("bob@mail.ru", "soft"),),  # not hard: ambiguous or a disabled account (issue 18)
        message_id=None,
    ),
    Sample(
        "ses-dsn",
        "Amazon SES DSN",
        dsn(
            reporting="a8-31.smtp-out.amazonses.com",
            subject="Delivery Status Notification (Failure)",
            sender="MAILER-DAEMON@amazonses.com",
            human="An error occurred while trying to deliver the mail to the following recipients:\nbob@example.net\n",
            recipients=[
                "Final-Recipient: rfc822; bob@example.net\nAction: failed\nStatus: 5.1.1\nRemote-MTA: dns; mx.example.net\nDiagnostic-Code: smtp; 550 5.1.1 user unknown\n"
            ],
        ),
        "dsn",
        (("bob@example.net", "hard"),),
    ),
    Sample(
        "postfix-host-not-found",
        "Postfix DNS failure",
        dsn(
            reporting="mx.example.org",
            human="<bob@nonexistent.example>: Host or domain name not found. Name service error\n    for name=nonexistent.example type=A: Host not found\n",
            recipients=[
                "Final-Recipient: rfc822; bob@nonexistent.example\nAction: failed\nStatus: 5.4.4\nDiagnostic-Code: X-Postfix; Host or domain name not found. Name service error for\n    name=nonexistent.example type=A: Host not found\n"
            ],
            to="bob@nonexistent.example",
        ),
        "dsn",
        (("bob@nonexistent.example", "hard"),),
    ),
    Sample(
        "gmail-spam-block",
        "Gmail refusing as spam",
        dsn(
            reporting="mx.example.org",
            human="<bob@gmail.com>: host gmail-smtp-in.l.google.com said: 550-5.7.1 likely unsolicited mail\n",
            recipients=[
                "Final-Recipient: rfc822; bob@gmail.com\nAction: failed\nStatus: 5.7.1\nRemote-MTA: dns; gmail-smtp-in.l.google.com\nDiagnostic-Code: smtp; 550-5.7.1 [192.0.2.1] Gmail has detected that this message is likely\n 550-5.7.1 unsolicited mail. To reduce the amount of spam sent to Gmail, this\n 550 5.7.1 message has been blocked. - gsmtp\n"
            ],
            to="bob@gmail.com",
        ),
        "dsn",
        (("bob@gmail.com", "block"),),
    ),
    Sample(
        "outlook-ip-block",
        "Outlook.com block of the sending IP",
        dsn(
            reporting="mx.example.org",
            human="<bob@outlook.com>: host outlook-com.olc.protection.outlook.com said: 550 5.7.1 Unfortunately, messages from [192.0.2.1] weren't sent.\n",
            recipients=[
                "Final-Recipient: rfc822; bob@outlook.com\nAction: failed\nStatus: 5.7.1\nDiagnostic-Code: smtp; 550 5.7.1 Unfortunately, messages from [192.0.2.1] weren't sent. Please contact your Internet service provider since part of their network is on our block list (S3150). You can also refer your provider to http://mail.live.com/mail/troubleshooting.aspx#errors.\n"
            ],
            to="bob@outlook.com",
        ),
        "dsn",
        (("bob@outlook.com", "block"),),
    ),
    Sample(
        "yahoo-policy",
        "Yahoo policy refusal",
        dsn(
            reporting="mx.example.org",
            human="<bob@yahoo.com>: host mta6.am0.yahoodns.net said: 554 5.7.9 Message not accepted for policy reasons.\n",
            recipients=[
                "Final-Recipient: rfc822; bob@yahoo.com\nAction: failed\nStatus: 5.7.9\nDiagnostic-Code: smtp; 554 5.7.9 Message not accepted for policy reasons.  See https://postmaster.yahooinc.com/error-codes\n"
            ],
            to="bob@yahoo.com",
        ),
        "dsn",
        (("bob@yahoo.com", "block"),),
    ),
    Sample(
        "exim-retry-timeout",
        "Exim giving up after the retry time",
        prose(
            sender="Mail Delivery System <Mailer-Daemon@mail.example.org>",
            subject="Mail delivery failed: returning message to sender",
            headers="X-Failed-Recipients: bob@example.net\n",
            body="This message was created automatically by mail delivery software.\n\nA message that you sent could not be delivered to one or more of its\nrecipients. This is a permanent error. The following address(es) failed:\n\n  bob@example.net\n    retry timeout exceeded\n\n------ This is a copy of the message, including all the headers. ------\n\n"
            + ORIGINAL.format(to="bob@example.net"),
        ),
        "prose",
        (("bob@example.net", "soft"),),
    ),
    Sample(
        "japanese-subject",
        "a Japanese MTA with an encoded subject",
        prose(
            sender="MAILER-DAEMON@example.jp",
            subject="=?ISO-2022-JP?B?GyRCRzskLkxhJDckRyQ5GyhC?=",
            body="<bob@example.jp>: host mx.example.jp said: 550 5.1.1 <bob@example.jp>: Recipient address rejected: User unknown\n",
        ),
        "prose",
        (("bob@example.jp", "hard"),),
        message_id=None,
    ),
    Sample(
        "hotmail-mailbox-unavailable",
        "Hotmail via Exim DSN",
        dsn(
            reporting="mail.example.org",
            subject="Mail delivery failed: returning message to sender",
            human="  bob@hotmail.com\n    host hotmail-com.olc.protection.outlook.com [104.47.0.33]\n    SMTP error from remote mail server after RCPT TO:<bob@hotmail.com>:\n    550 Requested action not taken: mailbox unavailable (3150)\n",
            recipients=[
                "Action: failed\nFinal-Recipient: rfc822;bob@hotmail.com\nStatus: 5.0.0\nRemote-MTA: dns; hotmail-com.olc.protection.outlook.com\nDiagnostic-Code: smtp; 550 Requested action not taken: mailbox unavailable (3150)\n"
            ],
            to="bob@hotmail.com",
        ),
        "dsn",
        (("bob@hotmail.com", "soft"),),  # not hard: ambiguous or a disabled account (issue 18)
    ),
    Sample(
        "exchange-2010-dsn",
        "Exchange 2010 DSN with X-Display-Name",
        dsn(
            reporting="ex1.example.net",
            subject="Undeliverable: Your receipt",
            sender="postmaster@example.net",
            human="Delivery has failed to these recipients or groups:\n\nBob Example\nThe e-mail address you entered couldn't be found. Please check the recipient's e-mail address and try to resend the message.\n\nDiagnostic information for administrators:\n\nGenerating server: ex1.example.net\n\nbob@example.net\n#550 5.1.1 RESOLVER.ADR.RecipNotFound; not found ##\n",
            recipients=[
                "Final-recipient: RFC822; bob@example.net\nAction: failed\nStatus: 5.1.1\nX-Display-Name: Bob Example\n"
            ],
        ),
        "dsn",
        (("bob@example.net", "hard"),),
    ),
    Sample(
        "postfix-local-quota",
        "Postfix local delivery over quota",
        dsn(
            reporting="mail.example.net",
            human="<bob@example.net>: cannot update mailbox /var/mail/bob for user bob.\n    error writing message: File too large\n",
            recipients=[
                "Final-Recipient: rfc822; bob@example.net\nOriginal-Recipient: rfc822;bob@example.net\nAction: failed\nStatus: 5.2.2\nDiagnostic-Code: x-unix; cannot update mailbox /var/mail/bob for user bob. error writing message: File too large\n"
            ],
        ),
        "dsn",
        (("bob@example.net", "soft"),),
    ),
    Sample(
        "zoho-prose",
        "Zoho",
        prose(
            sender="mailer-daemon@mail.zoho.com",
            subject="Undelivered Mail Returned to Sender",
            body="This message was created automatically by mail delivery software.\nA message that you sent could not be delivered to one or more of its recipients. This is a permanent error.\n\nbob@example.net, ERROR CODE :550 - 5.1.1 <bob@example.net>: Recipient address rejected: User unknown in local recipient table\n",
        ),
        "prose",
        (("bob@example.net", "hard"),),
        message_id=None,
    ),
    Sample(
        "qmail-ldap-disabled",
        "qmail-ldap",
        prose(
            sender="MAILER-DAEMON@mail.example.net",
            subject="failure notice",
            body="Hi. This is the qmail-send program at mail.example.net.\nI'm afraid I wasn't able to deliver your message to the following addresses.\nThis is a permanent error; I've given up. Sorry it didn't work out.\n\n<bob@example.net>:\nThis mailaddress is disabled. (LDAP-ERROR #2.1.1)\n\n--- Below this line is a copy of the message.\n\n"
            + ORIGINAL.format(to="bob@example.net"),
        ),
        "prose",
        (("bob@example.net", "soft"),),  # not hard: ambiguous or a disabled account (issue 18)
    ),
    Sample(
        "aol-arf",
        "AOL feedback loop",
        """\
From: scomp@aol.net
To: fbl@bounces.example.com
Subject: Email Feedback Report for IP 192.0.2.1
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="boundary-1"

--boundary-1
Content-Type: text/plain; charset="US-ASCII"

This is an email abuse report for an email message received from IP 192.0.2.1.

--boundary-1
Content-Type: message/feedback-report

Feedback-Type: abuse
User-Agent: AOL SComp
Version: 0.1
Received-Date: Mon, 23 Nov 2026 10:00:00 -0500 (EST)
Source-IP: 192.0.2.1
Reported-Domain: example.com
Redacted-Address: redacted@

--boundary-1
Content-Type: message/rfc822
Content-Disposition: inline

"""
        + ORIGINAL.format(to="bob@aol.com")
        + "\n--boundary-1--\n",
        "arf",
        (("bob@aol.com", "complaint"),),
    ),
]

# fmt: off
# --- A third set (issue 18): the families where recipients, statuses or the hard/not-hard call were
# missed. Each helper writes one software's shape; the source of each shape is cited at the helper.
# Reply lines are the providers' documented texts (see tests/test_bounce_classify.py for where each
# comes from). Expectations follow the hard rule: only a dead mailbox, domain or a moved address at
# RCPT (or where the report does not say) is hard.

BOUNCE_TO = "b+01jd0000000000000000000000.7.abcdefghijkl@bounces.example.com"


def postfix_dsn(rcpt: str, said: str, status: str, phase: str = "RCPT TO", host: str = "mx.example.net[192.0.2.10]",
                to: str | None = None) -> str:
    """Postfix bounce(8) with smtp(8)'s "host X said: ... (in reply to Y command)" (Postfix's bounce
    templates, bounce(5); the phase wording is smtp_proto.c's)."""
    code_status, _, text = said.partition(" ")
    return dsn(
        reporting="mx.example.org",
        to=to or rcpt,
        human=f"This is the mail system at host mx.example.org.\n\nI'm sorry to have to inform you that your message"
        f" could not\nbe delivered to one or more recipients. It's attached below.\n\n                   The mail"
        f" system\n\n<{rcpt}>: host {host} said: {said} (in reply to {phase}\n    command)\n",
        recipients=[f"Final-Recipient: rfc822; {rcpt}\nOriginal-Recipient: rfc822;{rcpt}\nAction: failed\n"
                    f"Status: {status}\nRemote-MTA: dns; {host.split('[')[0]}\nDiagnostic-Code: smtp; {said}\n"],
        extra_message_fields="X-Postfix-Queue-ID: 4AB12C0042\nX-Postfix-Sender: rfc822; app@example.com\n",
    )


def exim_prose(rcpt: str, detail: str, to: str | None = None) -> str:
    """Exim's default bounce text (Exim specification, "Bounce message" / exim's bounce_message_text),
    with X-Failed-Recipients, as sent by Exim without DSN."""
    return prose(
        sender="Mail Delivery System <Mailer-Daemon@mail.example.org>",
        subject="Mail delivery failed: returning message to sender",
        headers=f"X-Failed-Recipients: {rcpt}\nAuto-Submitted: auto-replied\n",
        body="This message was created automatically by mail delivery software.\n\nA message that you sent could not"
        " be delivered to one or more of its\nrecipients. This is a permanent error. The following address(es)"
        f" failed:\n\n  {rcpt}\n    {detail}\n\n------ This is a copy of the message, including all the headers."
        " ------\n\n" + ORIGINAL.format(to=to or rcpt),
    )


def exim_dsn(rcpt: str, detail: str, diagnostic: str, status: str = "5.0.0") -> str:
    """Exim 4.8x+ sending an RFC 3464 report: the same text, then Status 5.0.0 and the reply."""
    return dsn(
        reporting="mail.example.org",
        subject="Mail delivery failed: returning message to sender",
        sender="Mail Delivery System <Mailer-Daemon@mail.example.org>",
        to=rcpt,
        human="This message was created automatically by mail delivery software.\n\nA message that you sent could not"
        " be delivered to one or more of its\nrecipients. This is a permanent error. The following address(es)"
        f" failed:\n\n  {rcpt}\n    {detail}\n",
        recipients=[f"Action: failed\nFinal-Recipient: rfc822;{rcpt}\nStatus: {status}\nRemote-MTA: dns; mx.example.net\n"
                    f"Diagnostic-Code: smtp; {diagnostic}\n"],
    )


def qmail(*blocks: tuple[str, str], to: str = "bob@example.net") -> str:
    """qmail-send's bounce (qmail-send(8)); each block is an address and qmail-remote's or qmail-local's words."""
    text = "".join(f"<{rcpt}>:\n{words}\n\n" for rcpt, words in blocks)
    return prose(
        sender="MAILER-DAEMON@mail.example.org",
        subject="failure notice",
        body="Hi. This is the qmail-send program at mail.example.org.\nI'm afraid I wasn't able to deliver your message"
        " to the following addresses.\nThis is a permanent error; I've given up. Sorry it didn't work out.\n\n"
        f"{text}--- Below this line is a copy of the message.\n\n" + ORIGINAL.format(to=to),
    )


def sendmail_prose(rcpt: str, transcript: str, reason: str, subject: str = "Returned mail: see transcript for details"
                   ) -> str:
    """Sendmail 8 without a DSN part (sendmail's savemail.c texts)."""
    return prose(
        sender="Mail Delivery Subsystem <MAILER-DAEMON@mail.example.org>",
        subject=subject,
        body="The original message was received at Mon, 23 Nov 2026 10:00:00 GMT\nfrom relay.example.com [192.0.2.1]"
        f"\n\n   ----- The following addresses had permanent fatal errors -----\n<{rcpt}>\n    (reason: {reason})\n\n"
        f"   ----- Transcript of session follows -----\n{transcript}\n\n   ----- Original message follows -----\n\n"
        + ORIGINAL.format(to=rcpt),
    )


def microsoft(rcpt: str, remote: str, status: str, local: bool = False) -> str:
    """Exchange Online / Outlook.com NDR (Microsoft's "Email non-delivery reports in Exchange Online"):
    a text part naming the recipient and "Remote Server returned '...'", then the DSN fields. ``local``:
    Exchange as the sending MTA, whose text says "Delivery has failed to these recipients or groups"."""
    head = ("Delivery has failed to these recipients or groups:\n\n" + rcpt + "\nYour message couldn't be delivered."
            if local else f"Your message to {rcpt} couldn't be delivered.")
    return dsn(
        reporting="AM0PR01MB1234.eurprd01.prod.outlook.com",
        subject="Undeliverable: Your receipt",
        sender="Microsoft Outlook <MicrosoftExchange329e71ec88ae4615bbc36ab6ce41109e@example.org>",
        to=rcpt,
        human=f"{head}\n\nDiagnostic information for administrators:\n\nGenerating server:"
        f" AM0PR01MB1234.eurprd01.prod.outlook.com\n\n{rcpt}\nRemote Server returned '{remote}'\n",
        recipients=[f"Action: failed\nStatus: {status}\nDiagnostic-Code: smtp;{remote}\nFinal-Recipient: rfc822;{rcpt}\n"
                    "Remote-MTA: dns;mx.example.net\n"],
    )


def gmail(rcpt: str, headline: str, why: str, said: str, status: str) -> str:
    """Gmail's own DSN as the sending side (mailer-daemon@googlemail.com, "** Address not found **")."""
    return dsn(
        reporting="mail-sor-f41.google.com",
        subject="Delivery Status Notification (Failure)",
        sender="Mail Delivery Subsystem <mailer-daemon@googlemail.com>",
        to=rcpt,
        human=f"** {headline} **\n\n{why}\n\nThe response from the remote server was:\n{said}\n",
        recipients=[f"Final-Recipient: rfc822; {rcpt}\nAction: failed\nStatus: {status}\n"
                    f"Remote-MTA: dns; mx.example.net. (192.0.2.10, the server for the domain.)\n"
                    f"Diagnostic-Code: smtp; {said}\nLast-Attempt-Date: Mon, 23 Nov 2026 02:00:01 -0800 (PST)\n"],
    )


def ses(rcpt: str, status: str, diagnostic: str) -> str:
    """Amazon SES's bounce (MAILER-DAEMON@amazonses.com, "An error occurred while trying to deliver the mail
    to the following recipients:"), an RFC 3464 report."""
    return dsn(
        reporting="a8-31.smtp-out.amazonses.com",
        subject="Delivery Status Notification (Failure)",
        sender="MAILER-DAEMON@amazonses.com",
        to=rcpt,
        human=f"An error occurred while trying to deliver the mail to the following recipients:\n{rcpt}\n",
        recipients=[f"Final-Recipient: rfc822; {rcpt}\nAction: failed\nStatus: {status}\nRemote-MTA: dns; mx.example.net\n"
                    f"Diagnostic-Code: smtp; {diagnostic}\n"],
    )


def ocms(rcpt: str, reason: str, status: str, diagnostic: str | None) -> str:
    """Oracle Communications Messaging Server (formerly Sun Java System / iPlanet Messaging Server): "This
    report relates to a message you sent with the following header fields:" and per-recipient
    "Recipient address: / Reason: / Diagnostic code:" lines, then the RFC 3464 fields."""
    diag_line = f"  Diagnostic code: {diagnostic}\n  Remote system: dns;mx.example.net (TCP|192.0.2.1|48235|192.0.2.10|25)" \
        " (mx.example.net ESMTP)\n" if diagnostic else ""
    diag_field = f"Remote-MTA: dns;mx.example.net\nDiagnostic-code: {diagnostic}\n" if diagnostic else ""
    return dsn(
        reporting="ms.example.org",
        subject="Delivery Notification: Delivery has failed",
        sender="Internet Mail Delivery <postmaster@ms.example.org>",
        to=rcpt,
        human="This report relates to a message you sent with the following header fields:\n\n  Message-id:"
        " <orig-123@relay.example.com>\n  Date: Mon, 23 Nov 2026 10:00:00 +0000\n  From: App <app@example.com>\n"
        f"  To: {rcpt}\n  Subject: Your receipt\n\nYour message cannot be delivered to the following recipients:\n\n"
        f"  Recipient address: {rcpt}\n  Reason: {reason}\n{diag_line}",
        recipients=[f"Original-recipient: rfc822;{rcpt}\nFinal-recipient: rfc822;{rcpt}\nAction: failed\n"
                    f"Status: {status} ({reason})\n{diag_field}"],
    )


def gmx(rcpt: str, command: str, reply: str) -> str:
    """GMX / 1&1 (mailer-daemon@gmx.net, kundenserver.de): Exim-like text, "SMTP error from remote server for
    X command, host: ... reason: ...", and "--- The header of the original message is following. ---"."""
    return prose(
        sender="Mail Delivery System <mailer-daemon@gmx.net>",
        subject="Mail delivery failed: returning message to sender",
        body="This message was created automatically by mail delivery software.\n\nA message that you sent could not"
        " be delivered to one or more of\nits recipients. This is a permanent error. The following address\nfailed:"
        f'\n\n"{rcpt}":\nSMTP error from remote server for {command} command, host: mx.example.net (192.0.2.10)'
        f" reason: {reply}\n\n--- The header of the original message is following. ---\n\n" + ORIGINAL.format(to=rcpt),
    )


def arf(fields: str, returned_to: str, returned: str = "message/rfc822", sender: str = "fbl@isp.example") -> str:
    """An ARF report (RFC 5965 §3 and its Appendix B example): text, message/feedback-report, the message."""
    original = ORIGINAL.format(to=returned_to)
    if returned == "text/rfc822-headers":
        original = original.split("\n\n", 1)[0] + "\n"
    return f"""\
From: {sender}
To: fbl@bounces.example.com
Subject: FW: Your receipt
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="part1_13d.2e68ed54_boundary"

--part1_13d.2e68ed54_boundary
Content-Type: text/plain; charset="US-ASCII"
Content-Transfer-Encoding: 7bit

This is an email abuse report for an email message received from IP
192.0.2.1 on Mon, 23 Nov 2026 10:00:00 EDT.
For more information about this format please see
http://www.mipassoc.org/arf/.

--part1_13d.2e68ed54_boundary
Content-Type: message/feedback-report

{fields}
--part1_13d.2e68ed54_boundary
Content-Type: {returned}
Content-Disposition: inline

{original}
--part1_13d.2e68ed54_boundary--
"""


def _s(name: str, source: str, text: str, kind: str, expect: tuple[tuple[str | None, str], ...] = (),
       message_id: str | None = "orig-123@relay.example.com") -> Sample:
    return Sample(name, source, text, kind, expect, message_id)


B = "bob@example.net"
HARD, SOFT, BLOCK = ((B, "hard"),), ((B, "soft"),), ((B, "block"),)

SAMPLES += [
    # Postfix: the phase is in the text part ("in reply to ... command").
    _s("postfix-rcpt-unknown-local", "Postfix, remote Postfix local table",
       postfix_dsn(B, "550 5.1.1 <bob@example.net>: Recipient address rejected: User unknown in local recipient table", "5.1.1"),
       "dsn", HARD),
    _s("postfix-after-data-user-unknown", "Postfix, a content filter answering the end of the data",
       postfix_dsn(B, "550 5.1.1 <bob@example.net>: Recipient address rejected: User unknown", "5.1.1", "end of DATA"),
       "dsn", SOFT),  # the RCPT was accepted: not a dead mailbox
    _s("postfix-after-data-spam", "Postfix",
       postfix_dsn(B, "550 5.7.1 Message rejected as spam by Content Filtering", "5.7.1", "end of DATA"), "dsn", BLOCK),
    _s("postfix-mail-from-rejected", "Postfix",
       postfix_dsn(B, "553 5.1.8 <app@example.com>: Sender address rejected: Domain not found", "5.1.8", "MAIL FROM"),
       "dsn", BLOCK),
    _s("postfix-data-no-valid-recipients", "Postfix (the reply to DATA)",
       postfix_dsn(B, "554 5.5.1 Error: no valid recipients", "5.5.1", "DATA"), "dsn", BLOCK),
    _s("postfix-spf-fail", "Postfix with pypolicyd-spf at the receiver",
       postfix_dsn(B, "550 5.7.23 <bob@example.net>: Recipient address rejected: Message rejected due to: SPF fail -"
                   " not authorized. Please see http://www.openspf.net/Why?s=mfrom;id=app@example.com;ip=192.0.2.1;r=<UNKNOWN>",
                   "5.7.23"), "dsn", BLOCK),
    _s("postfix-starttls-required", "Postfix (smtpd_tls_security_level = encrypt at the receiver)",
       postfix_dsn(B, "530 5.7.0 Must issue a STARTTLS command first", "5.7.0", "MAIL FROM"), "dsn", BLOCK),
    _s("postfix-relay-denied", "Postfix", postfix_dsn(B, "554 5.7.1 <bob@example.net>: Relay access denied", "5.7.1"),
       "dsn", BLOCK),
    _s("postfix-rcpt-mailbox-full", "Postfix, Dovecot LMTP quota at the receiver",
       postfix_dsn(B, "552 5.2.2 <bob@example.net>: Recipient address rejected: Mailbox is full", "5.2.2"), "dsn", SOFT),
    _s("postfix-too-large", "Postfix",
       postfix_dsn(B, "552 5.3.4 Message size exceeds fixed limit", "5.3.4", "end of DATA"), "dsn", SOFT),
    _s("postfix-greylisted-until-expiry", "Postfix after maximal_queue_lifetime, postgrey at the receiver",
       postfix_dsn(B, "450 4.2.0 <bob@example.net>: Recipient address rejected: Greylisted, see"
                   " http://postgrey.schweikert.ch/help/example.net.html", "4.2.0"), "dsn", SOFT),
    _s("postfix-gmail-dmarc", "Postfix, Gmail at the receiver",
       postfix_dsn(B, "550-5.7.26 Unauthenticated email from example.com is not accepted due to domain's DMARC policy."
                   " Please contact the administrator of example.com domain if this was a legitimate mail. - gsmtp",
                   "5.7.26", "end of DATA", "gmail-smtp-in.l.google.com[142.250.1.26]"), "dsn", BLOCK),
    _s("postfix-gmail-ptr", "Postfix, Gmail at the receiver",
       postfix_dsn(B, "550-5.7.25 [192.0.2.1] The IP address sending this message does not have a PTR record setup,"
                   " or the corresponding forward DNS entry does not point to the sending IP. - gsmtp", "5.7.25",
                   "end of DATA", "gmail-smtp-in.l.google.com[142.250.1.26]"), "dsn", BLOCK),
    _s("postfix-gmail-rate-expired", "Postfix after the queue lifetime, Gmail rate limiting",
       postfix_dsn(B, "421-4.7.28 [192.0.2.1] Our system has detected an unusual rate of unsolicited mail originating"
                   " from your IP address. - gsmtp", "4.7.28", "end of DATA", "gmail-smtp-in.l.google.com[142.250.1.26]"),
       "dsn", SOFT),
    _s("postfix-refused-to-talk", "Postfix (a greeting refusal)",
       dsn(reporting="mx.example.org", human="<bob@example.net>: host mx.example.net[192.0.2.10] refused to talk to"
           " me: 554 5.7.1 Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org\n",
           recipients=["Final-Recipient: rfc822; bob@example.net\nAction: failed\nStatus: 5.7.1\nDiagnostic-Code: smtp;"
                       " 554 5.7.1 Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org\n"]),
       "dsn", BLOCK),
    _s("postfix-local-unknown-user", "Postfix local(8)",
       dsn(reporting="mail.example.net", human='<bob@example.net>: unknown user: "bob"\n',
           recipients=['Final-Recipient: rfc822; bob@example.net\nAction: failed\nStatus: 5.1.1\n'
                       'Diagnostic-Code: X-Postfix; unknown user: "bob"\n']), "dsn", HARD),
    _s("postfix-dns-try-again-expired", "Postfix, a SERVFAIL until the queue lifetime",
       dsn(reporting="mx.example.org", human="<bob@example.net>: Host or domain name not found. Name service error for"
           " name=example.net type=MX: Host not found, try again\n",
           recipients=["Final-Recipient: rfc822; bob@example.net\nAction: failed\nStatus: 4.4.3\nDiagnostic-Code:"
                       " X-Postfix; Host or domain name not found. Name service error for name=example.net type=MX:"
                       " Host not found, try again\n"]), "dsn", SOFT),
    _s("postfix-three-recipients", "Postfix, one report for three recipients",
       dsn(reporting="mx.example.org", to="bob@example.net, carol@example.net, dan@example.net",
           human="<bob@example.net>: host mx.example.net[192.0.2.10] said: 550 5.1.1 <bob@example.net>: Recipient"
           " address rejected: User unknown (in reply to RCPT TO command)\n\n<carol@example.net>: host"
           " mx.example.net[192.0.2.10] said: 552 5.2.2 <carol@example.net>: Mailbox full (in reply to RCPT TO"
           " command)\n\n<dan@example.net>: host mx.example.net[192.0.2.10] said: 554 5.7.1 Message rejected as spam"
           " (in reply to end of DATA command)\n",
           recipients=["Final-Recipient: rfc822; bob@example.net\nAction: failed\nStatus: 5.1.1\nDiagnostic-Code: smtp;"
                       " 550 5.1.1 <bob@example.net>: Recipient address rejected: User unknown\n",
                       "Final-Recipient: rfc822; carol@example.net\nAction: failed\nStatus: 5.2.2\nDiagnostic-Code:"
                       " smtp; 552 5.2.2 <carol@example.net>: Mailbox full\n",
                       "Final-Recipient: rfc822; dan@example.net\nAction: failed\nStatus: 5.7.1\nDiagnostic-Code:"
                       " smtp; 554 5.7.1 Message rejected as spam\n"]),
       "dsn", (("bob@example.net", "hard"), ("carol@example.net", "soft"), ("dan@example.net", "block"))),
    # Exim, old (prose, X-Failed-Recipients) and new (with an RFC 3464 part).
    _s("exim-rcpt-unknown", "Exim", exim_prose(B, "SMTP error from remote mail server after RCPT TO:<bob@example.net>:\n"
       "    host mx.example.net [192.0.2.10]: 550 5.1.1 <bob@example.net>: Recipient address rejected: User unknown in"
       " virtual mailbox table"), "prose", HARD),
    _s("exim-pipelined-rcpt", "Exim", exim_prose(B, "SMTP error from remote mail server after pipelined RCPT"
       " TO:<bob@example.net>:\n    host mx.example.net [192.0.2.10]: 550 5.1.1 <bob@example.net>... User unknown"),
       "prose", HARD),
    _s("exim-after-data-spam", "Exim", exim_prose(B, "SMTP error from remote mail server after end of data:\n"
       "    host mx.example.net [192.0.2.10]: 550 5.7.1 Message rejected as spam"), "prose", BLOCK),
    _s("exim-after-data-user-unknown", "Exim", exim_prose(B, "SMTP error from remote mail server after end of data:\n"
       "    host mx.example.net [192.0.2.10]: 550 5.1.1 user unknown"), "prose", SOFT),
    _s("exim-mail-from", "Exim", exim_prose(B, "SMTP error from remote mail server after MAIL FROM:<app@example.com>"
       " SIZE=1843:\n    host mx.example.net [192.0.2.10]: 550 5.7.1 Sender rejected"), "prose", BLOCK),
    _s("exim-initial-connection", "Exim", exim_prose(B, "SMTP error from remote mail server after initial connection:\n"
       "    host mx.example.net [192.0.2.10]: 554 5.7.1 Client host [192.0.2.1] blocked using zen.spamhaus.org"),
       "prose", BLOCK),
    _s("exim-mx-to-nowhere", "Exim", exim_prose(B, "all relevant MX records point to non-existent hosts"), "prose", SOFT),
    _s("exim-mailbox-full-expired", "Exim", exim_prose(B, "mailbox is full: retry timeout exceeded"), "prose", SOFT),
    _s("exim-cpanel-no-such-user", "Exim on cPanel at the receiver", exim_prose(B, "SMTP error from remote mail server"
       " after RCPT TO:<bob@example.net>:\n    host mx.example.net [192.0.2.10]: 550 No Such User Here"), "prose", HARD),
    _s("exim-rate-expired", "Exim", exim_prose(B, "SMTP error from remote mail server after RCPT TO:<bob@example.net>:\n"
       "    host gmail-smtp-in.l.google.com [142.250.1.26]: 450-4.2.1 The user you are trying to contact is receiving"
       " mail too quickly.\n    retry timeout exceeded"), "prose", SOFT),
    _s("exim-two-failed", "Exim, two addresses",
       prose(sender="Mail Delivery System <Mailer-Daemon@mail.example.org>",
             subject="Mail delivery failed: returning message to sender",
             headers="X-Failed-Recipients: bob@example.net, carol@example.net\nAuto-Submitted: auto-replied\n",
             body="This message was created automatically by mail delivery software.\n\nA message that you sent could"
             " not be delivered to one or more of its\nrecipients. This is a permanent error. The following"
             " address(es) failed:\n\n  bob@example.net\n    SMTP error from remote mail server after RCPT"
             " TO:<bob@example.net>:\n    host mx.example.net [192.0.2.10]: 550 5.1.1 user unknown\n  carol@example.net\n"
             "    SMTP error from remote mail server after RCPT TO:<carol@example.net>:\n    host mx.example.net"
             " [192.0.2.10]: 550 5.1.1 user unknown\n\n------ This is a copy of the message, including all the"
             " headers. ------\n\n" + ORIGINAL.format(to="bob@example.net, carol@example.net")),
       "prose", (("bob@example.net", "hard"), ("carol@example.net", "hard"))),
    _s("exim-dsn-rcpt", "Exim with DSN", exim_dsn(B, "host mx.example.net [192.0.2.10]\n    SMTP error from remote mail"
       " server after RCPT TO:<bob@example.net>:\n    550 5.1.1 <bob@example.net>: user does not exist",
       "550 5.1.1 <bob@example.net>: user does not exist"), "dsn", HARD),
    _s("exim-dsn-after-data-user-unknown", "Exim with DSN", exim_dsn(B, "host mx.example.net [192.0.2.10]\n    SMTP"
       " error from remote mail server after end of data:\n    550 5.1.1 user unknown", "550 5.1.1 user unknown"),
       "dsn", SOFT),
    _s("exim-dsn-after-data-virus", "Exim with DSN", exim_dsn(B, "host mx.example.net [192.0.2.10]\n    SMTP error"
       " from remote mail server after end of data:\n    550 This message contains a virus (Eicar-Test-Signature)",
       "550 This message contains a virus (Eicar-Test-Signature)"), "dsn", BLOCK),
    _s("exim-dsn-generic-status-specific-text", "Exim with DSN (Status 5.0.0, a code in the reply)",
       exim_dsn(B, "host mx.example.net [192.0.2.10]\n    SMTP error from remote mail server after RCPT"
                " TO:<bob@example.net>:\n    552 5.2.2 mailbox full", "552 5.2.2 mailbox full"), "dsn", SOFT),
    # qmail: qmail-remote says at which command ("does not like recipient.", "failed after I sent the message.").
    _s("qmail-after-data-spam", "qmail-send / qmail-remote",
       qmail((B, "192.0.2.10 failed after I sent the message.\nRemote host said: 554 5.7.1 Message rejected as spam")),
       "prose", BLOCK),
    _s("qmail-after-data-user-unknown", "qmail-send / qmail-remote",
       qmail((B, "192.0.2.10 failed after I sent the message.\nRemote host said: 550 5.1.1 user unknown")), "prose", SOFT),
    _s("qmail-sender-rejected", "qmail-send / qmail-remote",
       qmail((B, "Connected to 192.0.2.10 but sender was rejected.\nRemote host said: 553 5.1.8 <app@example.com>..."
              " Domain of sender address app@example.com does not exist")), "prose", BLOCK),
    _s("qmail-no-host", "qmail-send / qmail-remote",
       qmail(("bob@nx.example", "Sorry, I couldn't find any host named nx.example. (#5.1.2)"), to="bob@nx.example"),
       "prose", (("bob@nx.example", "hard"),)),
    _s("qmail-expired", "qmail-send (queuelifetime)",
       qmail((B, "Sorry, I wasn't able to establish an SMTP connection. (#4.4.1)\nI'm not going to try again; this"
              " message has been in the queue too long.")), "prose", SOFT),
    _s("qmail-vpopmail-unknown", "qmail with vpopmail (vdelivermail)",
       qmail((B, "Sorry, no mailbox here by that name. vpopmail (#5.1.1)")), "prose", HARD),
    _s("qmail-relay-denied", "qmail-send / qmail-remote, a qmail receiver",
       qmail((B, "192.0.2.10 does not like recipient.\nRemote host said: 553 sorry, that domain isn't in my list of"
              " allowed rcpthosts (#5.7.1)\nGiving up on 192.0.2.10.")), "prose", BLOCK),
    _s("qmail-rcpt-unknown", "qmail-send / qmail-remote",
       qmail((B, "192.0.2.10 does not like recipient.\nRemote host said: 550 5.1.1 <bob@example.net>: Recipient address"
              " rejected: User unknown in local recipient table\nGiving up on 192.0.2.10.")), "prose", HARD),
    # Sendmail 8 without DSN, and Sendmail 5 ("----- Unsent message follows -----").
    _s("sendmail-rcpt-transcript", "Sendmail 8",
       sendmail_prose(B, "... while talking to mx.example.net.:\n>>> RCPT To:<bob@example.net>\n<<< 550 5.1.1"
                      " <bob@example.net>... User unknown\n550 5.1.1 <bob@example.net>... User unknown",
                      "550 5.1.1 <bob@example.net>... User unknown"), "prose", HARD),
    _s("sendmail-mailbox-full", "Sendmail 8",
       sendmail_prose(B, "... while talking to mx.example.net.:\n>>> RCPT To:<bob@example.net>\n<<< 552 5.2.2"
                      " <bob@example.net>... Mailbox full\n552 5.2.2 <bob@example.net>... Mailbox full",
                      "552 5.2.2 <bob@example.net>... Mailbox full"), "prose", SOFT),
    _s("sendmail-after-data-spam", "Sendmail 8",
       sendmail_prose(B, "... while talking to mx.example.net.:\n>>> DATA\n<<< 554 5.7.1 Message rejected as spam\n554"
                      " 5.0.0 Service unavailable", "554 5.7.1 Message rejected as spam"), "prose", BLOCK),
    _s("sendmail-v5-user-unknown", "Sendmail 5",
       prose(sender="Mail Delivery Subsystem <MAILER-DAEMON@mail.example.org>", subject="Returned mail: User unknown",
             body="   ----- Transcript of session follows -----\nwhile talking to mx.example.net:\n>>> RCPT"
             " To:<bob@example.net>\n<<< 550 <bob@example.net>... User unknown\n550 bob@example.net... User unknown\n\n"
             "   ----- Unsent message follows -----\n" + ORIGINAL.format(to=B)), "prose", HARD),
    _s("sendmail-dsn-expired", "Sendmail 8 DSN after the queue timeout",
       dsn(reporting="mail.example.org", subject="Returned mail: see transcript for details",
           sender="Mail Delivery Subsystem <MAILER-DAEMON@mail.example.org>",
           human="The original message was received at Mon, 23 Nov 2026 10:00:00 GMT\nfrom relay.example.com"
           " [192.0.2.1]\n\n   ----- The following addresses had permanent fatal errors -----\n<bob@example.net>\n"
           "    (reason: Connection timed out with mx.example.net.)\n\n   ----- Transcript of session follows -----\n"
           "<bob@example.net>... Deferred: Connection timed out with mx.example.net.\nMessage could not be delivered"
           " for 5 days\nMessage will be deleted from queue\n",
           recipients=["Final-Recipient: RFC822; bob@example.net\nAction: failed\nStatus: 4.4.7\n"
                       "Last-Attempt-Date: Sat, 28 Nov 2026 10:00:01 GMT\n"]), "dsn", SOFT),
    _s("sendmail-dsn-user-unknown", "Sendmail 8 DSN",
       dsn(reporting="mail.example.org", subject="Returned mail: see transcript for details",
           sender="Mail Delivery Subsystem <MAILER-DAEMON@mail.example.org>",
           human="   ----- The following addresses had permanent fatal errors -----\n<bob@example.net>\n    (reason:"
           " 550 5.1.1 <bob@example.net>... User unknown)\n\n   ----- Transcript of session follows -----\n... while"
           " talking to mx.example.net.:\n>>> DATA\n<<< 550 5.1.1 <bob@example.net>... User unknown\n550 5.1.1"
           " <bob@example.net>... User unknown\n<<< 503 5.0.0 Need RCPT (recipient)\n",
           recipients=["Final-Recipient: RFC822; bob@example.net\nAction: failed\nStatus: 5.1.1\nRemote-MTA: DNS;"
                       " mx.example.net\nDiagnostic-Code: SMTP; 550 5.1.1 <bob@example.net>... User unknown\n"
                       "Last-Attempt-Date: Mon, 23 Nov 2026 10:00:01 GMT\n"]), "dsn", HARD),
]

SAMPLES += [
    # Gmail and Google Groups as the sending side.
    _s("gmail-disabled", "Gmail DSN", gmail(B, "Address not found", "Your message wasn't delivered to bob@example.net"
       " because the address couldn't be found, or is unable to receive mail.", "550 5.2.1 The email account that you"
       " tried to reach is disabled. https://support.google.com/mail/?p=DisabledUser - gsmtp", "5.2.1"), "dsn", SOFT),
    _s("gmail-nxdomain", "Gmail DSN for a domain that does not exist",
       gmail("bob@nx.example", "Address not found", "Your message wasn't delivered to bob@nx.example because the domain"
             " nx.example couldn't be found. Check for typos or unnecessary spaces and try again.",
             "DNS Error: DNS type 'mx' lookup of nx.example responded with code NXDOMAIN Domain name not found:"
             " nx.example", "5.1.2"), "dsn", (("bob@nx.example", "hard"),)),
    _s("gmail-remote-unknown", "Gmail DSN, another provider refusing the address",
       gmail(B, "Address not found", "Your message wasn't delivered to bob@example.net because the address couldn't be"
             " found, or is unable to receive mail.", "550 5.1.1 <bob@example.net>: Recipient address rejected: User"
             " unknown in virtual mailbox table", "5.1.1"), "dsn", HARD),
    _s("gmail-message-blocked", "Gmail DSN, the receiver refusing the content",
       gmail(B, "Message blocked", "Your message to bob@example.net has been blocked. See technical details below for"
             " more information.", "550 5.7.1 Message rejected due to content restrictions", "5.7.1"), "dsn", BLOCK),
    _s("google-groups", "Google Groups (mailer-daemon@googlemail.com)",
       gmail("team@googlegroups.com", "Address not found", "Your message wasn't delivered to team@googlegroups.com"
             " because the address couldn't be found, or is unable to receive mail.", "We're writing to let you know"
             " that the group you tried to contact (team) may not exist, or you may not have permission to post"
             " messages to the group.", "5.0.0"), "dsn", (("team@googlegroups.com", "soft"),)),  # ambiguous
    # Outlook / Office 365 as the receiver and as the sending MTA.
    _s("o365-dbeb", "Exchange Online NDR", microsoft(B, "550 5.4.1 Recipient address rejected: Access denied."
       " AS(201806281) [DB5EUR01FT012.eop-EUR01.prod.protection.outlook.com]", "5.4.1"), "dsn", HARD),
    _s("o365-expired", "Exchange Online NDR (message expired)", microsoft(B, "550 5.4.316 Message expired, connection"
       " refused(Socket error code 10061)", "5.4.316"), "dsn", SOFT),
    _s("o365-quota", "Exchange NDR, mailbox full", microsoft(B, "554 5.2.2 mailbox full;"
       " STOREDRV.Deliver.Exception:QuotaExceededException.MapiExceptionShutoffQuotaExceeded; Failed to process message"
       " due to a permanent exception", "5.2.2", local=True), "dsn", SOFT),
    _s("o365-banned-ip", "Exchange Online NDR", microsoft(B, "550 5.7.606 Access denied, banned sending IP [192.0.2.1]."
       " To request removal from this list please visit https://sender.office.com/", "5.7.606"), "dsn", BLOCK),
    _s("o365-bad-outbound-sender", "Exchange Online NDR", microsoft(B, "550 5.1.8 Access denied, bad outbound sender",
       "5.1.8", local=True), "dsn", BLOCK),
    _s("o365-dmarc-reject", "Exchange Online NDR", microsoft(B, "550 5.7.509 Access denied, sending domain example.com"
       " does not pass DMARC verification and has a DMARC policy of reject.", "5.7.509"), "dsn", BLOCK),
    _s("o365-traffic-not-accepted", "Exchange Online NDR", microsoft(B, "550 5.7.708 Service unavailable. Access denied,"
       " traffic not accepted from this IP.", "5.7.708"), "dsn", BLOCK),
    _s("o365-recip-not-found-local", "Exchange as the sending MTA", microsoft(B, "550 5.1.10"
       " RESOLVER.ADR.RecipientNotFound; Recipient bob@example.net not found by SMTP address lookup", "5.1.10",
       local=True), "dsn", HARD),
    _s("outlook-com-s3140", "Exchange Online NDR for Outlook.com's block list",
       microsoft("bob@outlook.com", "550 5.7.1 Unfortunately, messages from [192.0.2.1] weren't sent. Please contact"
                 " your Internet service provider since part of their network is on our block list (S3140).",
                 "5.7.1"), "dsn", (("bob@outlook.com", "block"),)),
    _s("o365-mailbox-unavailable", "Exchange Online NDR, the ambiguous 5.5.0",
       microsoft("bob@hotmail.com", "550 5.5.0 Requested action not taken: mailbox unavailable (S2017062302).",
                 "5.5.0"), "dsn", (("bob@hotmail.com", "soft"),)),
    # Yahoo, iCloud, AOL through a Postfix relay.
    _s("yahoo-disabled", "Postfix, Yahoo at the receiver",
       postfix_dsn("bob@yahoo.com", "554 delivery error: dd Sorry, your message to bob@yahoo.com cannot be delivered."
                   " This account has been disabled or discontinued [#102]. - mta1022.mail.sk1.yahoo.com", "5.0.0",
                   "end of DATA", "mta6.am0.yahoodns.net[67.195.204.72]"), "dsn", (("bob@yahoo.com", "soft"),)),
    _s("yahoo-rcpt-unknown", "Postfix, Yahoo at the receiver",
       postfix_dsn("bob@yahoo.com", "554 delivery error: dd This user doesn't have a yahoo.com account (bob@yahoo.com)"
                   " [0] - mta1022.mail.sk1.yahoo.com", "5.0.0", "RCPT TO",
                   "mta6.am0.yahoodns.net[67.195.204.72]"), "dsn", (("bob@yahoo.com", "hard"),)),
    _s("yahoo-tss09", "Postfix, Yahoo at the receiver",
       postfix_dsn("bob@yahoo.com", "553 5.7.2 [TSS09] All messages from 192.0.2.1 will be permanently deferred;"
                   " Retrying will NOT succeed. See https://postmaster.yahooinc.com/error-codes", "5.7.2", "MAIL FROM",
                   "mta6.am0.yahoodns.net[67.195.204.72]"), "dsn", (("bob@yahoo.com", "block"),)),
    _s("icloud-cs01", "Postfix, iCloud at the receiver",
       postfix_dsn("bob@icloud.com", "554 5.7.1 [CS01] Message rejected due to local policy. Please visit"
                   " https://support.apple.com/en-us/HT204137", "5.7.1", "end of DATA",
                   "mx01.mail.icloud.com[17.57.154.33]"), "dsn", (("bob@icloud.com", "block"),)),
    _s("icloud-over-quota", "Postfix, iCloud at the receiver",
       postfix_dsn("bob@icloud.com", "552 5.2.2 <bob@icloud.com>: user is over quota", "5.2.2", "RCPT TO",
                   "mx01.mail.icloud.com[17.57.154.33]"), "dsn", (("bob@icloud.com", "soft"),)),
    # Amazon SES.
    _s("ses-mailbox-full", "Amazon SES", ses(B, "5.2.2", "552 5.2.2 <bob@example.net>: Mailbox full"), "dsn", SOFT),
    _s("ses-spam-block", "Amazon SES", ses(B, "5.7.1", "550 5.7.1 Message rejected as spam"), "dsn", BLOCK),
    _s("ses-expired", "Amazon SES (message expired)",
       ses(B, "4.4.7", "554 4.4.7 Message expired: unable to deliver in 840 minutes.<421 4.4.0 Unable to lookup DNS for"
           " example.net>"), "dsn", SOFT),
    _s("ses-gmail-unknown", "Amazon SES, Gmail at the receiver",
       ses("bob@gmail.com", "5.1.1", "550-5.1.1 The email account that you tried to reach does not exist. Please try"
           " 550-5.1.1 double-checking the recipient's email address for typos or 550-5.1.1 unnecessary spaces."
           " https://support.google.com/mail/?p=NoSuchUser - gsmtp"), "dsn", (("bob@gmail.com", "hard"),)),
    # Oracle Communications Messaging Server.
    _s("ocms-user-unknown", "Oracle Communications Messaging Server",
       ocms(B, "Remote SMTP server has rejected address", "5.1.1",
            "smtp;550 5.1.1 <bob@example.net>... User unknown"), "dsn", HARD),
    _s("ocms-illegal-host", "Oracle Communications Messaging Server",
       ocms("bob@nx.example", "Illegal host/domain name found", "5.1.2", None), "dsn", (("bob@nx.example", "hard"),)),
    _s("ocms-quota", "Oracle Communications Messaging Server",
       ocms(B, "Remote SMTP server has rejected address", "5.2.2",
            "smtp;552 5.2.2 <bob@example.net>... Mailbox full"), "dsn", SOFT),
    # GMX and 1&1.
    _s("gmx-rcpt", "GMX", gmx(B, "RCPT TO", "550 5.1.1 <bob@example.net>: Recipient address rejected: User unknown"),
       "prose", HARD),
    _s("gmx-data", "GMX", gmx(B, "DATA", "554 5.7.1 Message rejected as spam"), "prose", BLOCK),
    _s("gmx-data-user-unknown", "GMX", gmx(B, "DATA", "550 5.1.1 user unknown"), "prose", SOFT),
    _s("gmx-quota", "1&1 (same software as GMX)", gmx(B, "RCPT TO", "552 5.2.2 Mailbox full"), "prose", SOFT),
]

SAMPLES += [
    # DragonFly Mail Agent (dma): "This is the DragonFly Mail Agent ... There was an error delivering your
    # mail to <x>." then the error, then "Original message follows." (dma's mail.c bounce(), with the
    # FULLBOUNCE option; the default shape, "Message headers follow.", is in the fourth set below).
    _s("dragonfly-rcpt", "DragonFly Mail Agent",
       prose(sender="MAILER-DAEMON@mail.example.org", subject="Mail delivery failed",
             body="This is the DragonFly Mail Agent v0.13 at mail.example.org.\n\nThere was an error delivering your"
             " mail to <bob@example.net>.\n\nmx.example.net [192.0.2.10] did not like our RCPT TO:\n550 5.1.1"
             " <bob@example.net>: Recipient address rejected: User unknown in virtual mailbox table\n\nOriginal"
             " message follows.\n\n" + ORIGINAL.format(to=B)), "prose", HARD),
    _s("dragonfly-data", "DragonFly Mail Agent",
       prose(sender="MAILER-DAEMON@mail.example.org", subject="Mail delivery failed",
             body="This is the DragonFly Mail Agent v0.13 at mail.example.org.\n\nThere was an error delivering your"
             " mail to <bob@example.net>.\n\nmx.example.net [192.0.2.10] did not like our DATA:\n554 5.7.1 Message"
             " rejected as spam\n\nOriginal message follows.\n\n" + ORIGINAL.format(to=B)), "prose", BLOCK),
    # Apache James (its DSNBounce / Bounce mailet text).
    _s("james-user-unknown", "Apache James",
       prose(sender="postmaster@mail.example.org", subject="[BOUNCE]",
             body="Hi. This is the James mail server at mail.example.org.\nI'm afraid I wasn't able to deliver your"
             " message to the following addresses.\nThis is a permanent error; I've given up. Sorry it didn't work out."
             "  Below\nI include the list of recipients and the reason why I was unable to deliver\nyour message.\n\n"
             "Failed recipient(s):\nbob@example.net\n\nError message:\n550 5.1.1 <bob@example.net>: Recipient address"
             " rejected: User unknown in local recipient table\n\nMessage details:\n  Subject: Your receipt\n  Sent"
             " date: Mon Nov 23 10:00:00 UTC 2026\n  MAIL FROM: app@example.com\n  RCPT TO: bob@example.net\n  From:"
             " App <app@example.com>\n  To: bob@example.net\n  Size (in bytes): 512\n  Number of lines: 12\n"),
       "prose", HARD, message_id=None),
    _s("james-mailbox-full", "Apache James",
       prose(sender="postmaster@mail.example.org", subject="[BOUNCE]",
             body="Hi. This is the James mail server at mail.example.org.\nI'm afraid I wasn't able to deliver your"
             " message to the following addresses.\nThis is a permanent error; I've given up. Sorry it didn't work out."
             "\n\nFailed recipient(s):\nbob@example.net\n\nError message:\n552 5.2.2 Mailbox full\n\nMessage details:\n"
             "  Subject: Your receipt\n  MAIL FROM: app@example.com\n  RCPT TO: bob@example.net\n"),
       "prose", SOFT, message_id=None),
    # Ipswitch IMail ("Body of message generated response:").
    _s("imail-unknown-user", "Ipswitch IMail Server",
       prose(sender="Postmaster <postmaster@mail.example.net>", subject="Undeliverable Mail",
             body="Unknown user: bob@example.net\n\nOriginal message follows.\n\n" + ORIGINAL.format(to=B)),
       "prose", HARD),
    _s("imail-generated-response", "Ipswitch IMail Server",
       prose(sender="Postmaster <postmaster@mail.example.net>", subject="Undeliverable Mail",
             body="Body of message generated response:\n\nmx.example.com said:\n550 5.2.2 <bob@example.net>... Mailbox"
             " full\n\nOriginal message follows.\n\n" + ORIGINAL.format(to=B)), "prose", SOFT),
    # MailFoundry (its text; as it really sends, multipart with the message attached, in the fourth set).
    _s("mailfoundry", "MailFoundry",
       prose(sender="MAILER-DAEMON@mailfoundry.example.net", subject="Message delivery has failed",
             body="Unable to deliver message to: <bob@example.net>\nDelivery failed for the following reason:\nServer"
             " mx.example.net[192.0.2.10] failed with: 550 <bob@example.net> No such user here\n\nThis has been a"
             " permanent failure.  No further delivery attempts will be made.\n\n----- Original message -----\n\n"
             + ORIGINAL.format(to=B)), "prose", HARD),
    # PowerMTA: RFC 3464 with its own per-recipient X-PowerMTA-BounceCategory.
    _s("powermta-bad-mailbox", "PowerMTA",
       dsn(reporting="pmta.example.org", subject="Delivery report", sender="mailer-daemon@pmta.example.org",
           human="This message was created automatically by mail delivery software.\n\nA message that you sent"
           " could not be delivered to one or more of its recipients.\n",
           recipients=["Original-Recipient: rfc822;bob@example.net\nFinal-Recipient: rfc822;bob@example.net\n"
                       "Action: failed\nStatus: 5.0.0 (permanent failure)\nRemote-MTA: dns; [192.0.2.10]\n"
                       "Diagnostic-Code: smtp; 5.1.1 - Bad destination mailbox address; 550 5.1.1 user unknown"
                       " (delivery attempts: 0)\nX-PowerMTA-BounceCategory: bad-mailbox\n"]), "dsn", HARD),
    _s("powermta-quota", "PowerMTA",
       dsn(reporting="pmta.example.org", subject="Delivery report", sender="mailer-daemon@pmta.example.org",
           human="This message was created automatically by mail delivery software.\n",
           recipients=["Original-Recipient: rfc822;bob@example.net\nFinal-Recipient: rfc822;bob@example.net\n"
                       "Action: failed\nStatus: 5.0.0 (permanent failure)\nRemote-MTA: dns; [192.0.2.10]\n"
                       "Diagnostic-Code: smtp; 5.2.2 - Over quota; 552 5.2.2 mailbox over quota (delivery attempts:"
                       " 0)\nX-PowerMTA-BounceCategory: quota-issues\n"]), "dsn", SOFT),
    _s("powermta-spam", "PowerMTA",
       dsn(reporting="pmta.example.org", subject="Delivery report", sender="mailer-daemon@pmta.example.org",
           human="This message was created automatically by mail delivery software.\n",
           recipients=["Original-Recipient: rfc822;bob@example.net\nFinal-Recipient: rfc822;bob@example.net\n"
                       "Action: failed\nStatus: 5.0.0 (permanent failure)\nRemote-MTA: dns; [192.0.2.10]\n"
                       "Diagnostic-Code: smtp; 5.7.1 - Delivery not authorized, message refused; 554 5.7.1 Message"
                       " rejected as spam (delivery attempts: 0)\nX-PowerMTA-BounceCategory: spam-related\n"]),
       "dsn", BLOCK),
    # Lotus Domino and Courier.
    _s("domino-dsn", "Lotus Domino with a report part",
       dsn(reporting="notes.example.net", subject="DELIVERY FAILURE: User bob (bob@example.net) not listed in Domino"
           " Directory", sender="Postmaster@example.net",
           human="Your message\n\n  Subject: Your receipt\n\nwas not delivered to:\n\n  bob@example.net\n\nbecause:\n\n"
           "  User bob (bob@example.net) not listed in Domino Directory\n",
           recipients=["Final-Recipient: rfc822;bob@example.net\nAction: failed\nStatus: 5.0.0\n"]), "dsn", HARD),
    _s("domino-router-quota", "Lotus Domino router",
       prose(sender="Postmaster@example.net", subject="DELIVERY FAILURE: Router: Unable to deliver message: the"
             " recipient's mail file is full",
             body="Your message\n\n  Subject: Your receipt\n\nwas not delivered to:\n\n  bob@example.net\n\nbecause:\n\n"
             "  Router: Unable to deliver message: the recipient's mail file is full\n"),
       "prose", SOFT, message_id=None),
    _s("courier-after-data", "Courier MTA DSN",
       dsn(reporting="mail.example.org", subject="NOTICE: mail delivery status.",
           sender="Courier mail server at mail.example.org <@>",
           human="This is a delivery status notification from mail.example.org,\nrunning the Courier mail server,"
           " version 1.1.\n\nYour message to the following recipients cannot be delivered:\n\n<bob@example.net>:\n"
           "    mx.example.net [192.0.2.10]:\n>>> DATA\n<<< 554 5.7.1 Message rejected as spam\n",
           recipients=["Final-Recipient: rfc822;bob@example.net\nAction: failed\nStatus: 5.0.0\nRemote-MTA: dns;"
                       " mx.example.net\nDiagnostic-Code: smtp; 554 5.7.1 Message rejected as spam\n"]), "dsn", BLOCK),
    _s("courier-no-such-domain", "Courier MTA DSN",
       dsn(reporting="mail.example.org", subject="NOTICE: mail delivery status.", to="bob@nx.example",
           sender="Courier mail server at mail.example.org <@>",
           human="This is a delivery status notification from mail.example.org,\nrunning the Courier mail server,"
           " version 1.1.\n\nYour message to the following recipients cannot be delivered:\n\n<bob@nx.example>:\n"
           "    No such domain.\n",
           recipients=["Final-Recipient: rfc822;bob@nx.example\nAction: failed\nStatus: 5.0.0\n"]),
       "dsn", (("bob@nx.example", "hard"),)),
    # Zoho, Mail.ru (Exim), Yahoo legacy prose with its command tags.
    _s("zoho-quota", "Zoho",
       prose(sender="mailer-daemon@mail.zoho.com", subject="Undelivered Mail Returned to Sender",
             body="This message was created automatically by mail delivery software.\nA message that you sent could"
             " not be delivered to one or more of its recipients. This is a permanent error.\n\nbob@example.net, ERROR"
             " CODE :552 - 5.2.2 <bob@example.net>: Mailbox full\n"), "prose", SOFT, message_id=None),
    _s("zoho-invalid", "Zoho",
       prose(sender="mailer-daemon@mail.zoho.com", subject="Undelivered Mail Returned to Sender",
             body="This message was created automatically by mail delivery software.\nA message that you sent could"
             " not be delivered to one or more of its recipients. This is a permanent error.\n\nbob@example.net, ERROR"
             " CODE :550 - 5.1.1 The email account that you tried to reach does not exist.\n"),
       "prose", HARD, message_id=None),
    _s("mailru-exim", "Mail.ru (Exim)",
       prose(sender="Mail Delivery System <MAILER-DAEMON@corp.mail.ru>", subject="Mail delivery failed: returning"
             " message to sender", headers="X-Failed-Recipients: bob@example.net\n",
             body="This message was created automatically by mail delivery software.\n\nA message that you sent could"
             " not be delivered to one or more of its\nrecipients. This is a permanent error. The following"
             " address(es) failed:\n\n  bob@example.net\n    SMTP error from remote mail server after RCPT"
             " TO:<bob@example.net>:\n    host mx.example.net [192.0.2.10]: 550 5.1.1 <bob@example.net>: Recipient"
             " address rejected: User unknown\n\n------ This is a copy of the message, including all the headers."
             " ------\n\n" + ORIGINAL.format(to=B)), "prose", HARD),
    _s("mailru-spam", "Mail.ru (Exim)",
       prose(sender="Mail Delivery System <MAILER-DAEMON@corp.mail.ru>", subject="Mail delivery failed: returning"
             " message to sender", headers="X-Failed-Recipients: bob@example.net\n",
             body="This message was created automatically by mail delivery software.\n\nA message that you sent could"
             " not be delivered to one or more of its\nrecipients. This is a permanent error. The following"
             " address(es) failed:\n\n  bob@example.net\n    SMTP error from remote mail server after end of data:\n"
             "    host mx.example.net [192.0.2.10]: 550 spam message rejected\n"), "prose", BLOCK, message_id=None),
    _s("yahoo-prose-rcpt-tag", "Yahoo legacy bounce with its [RCPT_TO] tag",
       prose(sender="MAILER-DAEMON@yahoo.com", subject="Failure Notice",
             body="Sorry, we were unable to deliver your message to the following address.\n\n<bob@example.net>:\n"
             "Remote host said: 550 5.1.1 <bob@example.net>... User unknown [RCPT_TO]\n\n--- Below this line is a"
             " copy of the message.\n\n" + ORIGINAL.format(to=B)), "prose", HARD),
    _s("yahoo-prose-body-tag", "Yahoo legacy bounce with its [BODY] tag",
       prose(sender="MAILER-DAEMON@yahoo.com", subject="Failure Notice",
             body="Sorry, we were unable to deliver your message to the following address.\n\n<bob@example.net>:\n"
             "Remote host said: 550 5.1.1 <bob@example.net>... User unknown [BODY]\n\n--- Below this line is a"
             " copy of the message.\n\n" + ORIGINAL.format(to=B)), "prose", SOFT),
]

SAMPLES += [
    # ARF (RFC 5965): where the recipient comes from when Original-Rcpt-To is missing.
    _s("arf-rfc5965-example", "RFC 5965 Appendix B",
       arf("Feedback-Type: abuse\nUser-Agent: SomeGenerator/1.0\nVersion: 1\nOriginal-Mail-From: <app@example.com>\n"
           "Original-Rcpt-To: <bob@example.net>\nArrival-Date: Mon, 23 Nov 2026 10:00:00 EDT\nReporting-MTA: dns;"
           " mail.isp.example\nSource-IP: 192.0.2.1\nAuthentication-Results: mail.isp.example; spf=pass"
           " smtp.mailfrom=example.com\nReported-Domain: example.com\nReported-Uri: http://example.com/receipt\n"
           "Removal-Recipient: bob@example.net\n", B), "arf", ((B, "complaint"),)),
    _s("arf-removal-recipient-only", "RFC 5965 report without Original-Rcpt-To, two recipients in To:",
       arf("Feedback-Type: abuse\nUser-Agent: SomeGenerator/1.0\nVersion: 1\nRemoval-Recipient: carol@example.net\n",
           "bob@example.net, carol@example.net"), "arf", (("carol@example.net", "complaint"),)),
    _s("arf-to-only", "Microsoft JMRP-style report: no Original-Rcpt-To, the returned message's single To:",
       arf("Feedback-Type: abuse\nUser-Agent: Hotmail FBL\nVersion: 1\nSource-IP: 192.0.2.1\n", "bob@hotmail.com",
           sender="staff@hotmail.com"), "arf", (("bob@hotmail.com", "complaint"),)),
    _s("arf-two-to-no-field", "ARF with no recipient field and two recipients in To:",
       arf("Feedback-Type: abuse\nUser-Agent: SomeGenerator/1.0\nVersion: 1\n", "bob@example.net, carol@example.net"),
       "arf", ((None, "complaint"),)),
    _s("arf-headers-only", "ARF returning text/rfc822-headers (RFC 5965 §2 allows it)",
       arf("Feedback-Type: abuse\nUser-Agent: SomeGenerator/1.0\nVersion: 1\n", B, returned="text/rfc822-headers"),
       "arf", ((B, "complaint"),)),
    _s("arf-fraud", "ARF, Feedback-Type: fraud",
       arf("Feedback-Type: fraud\nUser-Agent: SomeGenerator/1.0\nVersion: 1\nOriginal-Rcpt-To: bob@example.net\n", B),
       "arf", ((B, "complaint"),)),
    _s("arf-comcast", "Comcast / Return Path FBL (Original-Rcpt-To absent, one To:)",
       arf("Feedback-Type: abuse\nUser-Agent: ReturnPathFBL/2.0\nVersion: 1\nOriginal-Mail-From: <app@example.com>\n"
           "Arrival-Date: Mon, 23 Nov 2026 10:00:00 -0500\nSource-IP: 192.0.2.1\nReported-Domain: example.com\n",
           "bob@comcast.net", sender="feedback@comcast.net"), "arf", (("bob@comcast.net", "complaint"),)),
    _s("arf-redacted-rcpt-to", "ARF whose Original-Rcpt-To is redacted (the local part blanked), one To:",
       arf("Feedback-Type: abuse\nUser-Agent: SomeGenerator/1.0\nVersion: 1\nOriginal-Rcpt-To: xxxxxxxx@example.net\n",
           B), "arf", ((B, "complaint"),)),
    # Not failures: delay warnings, success, auto replies.
    _s("exchange-delay", "Exchange Online delay DSN",
       dsn(reporting="AM0PR01MB1234.eurprd01.prod.outlook.com", subject="Delivery delayed:Your receipt",
           sender="Microsoft Outlook <MicrosoftExchange329e71ec88ae4615bbc36ab6ce41109e@example.org>",
           human="Delivery is delayed to these recipients or groups:\n\nbob@example.net\n\nThis message hasn't been"
           " delivered yet. Delivery will continue to be attempted.\n",
           recipients=["Action: delayed\nStatus: 4.4.7\nFinal-Recipient: rfc822;bob@example.net\n"
                       "Will-Retry-Until: Fri, 27 Nov 2026 10:00:00 +0000\n"]), "delayed"),
    _s("sendmail-warning", "Sendmail 8 delay warning (no DSN part)",
       prose(sender="Mail Delivery Subsystem <MAILER-DAEMON@mail.example.org>",
             subject="Warning: could not send message for past 4 hours",
             body="    **********************************************\n    **      THIS IS A WARNING MESSAGE ONLY"
             "      **\n    **  YOU DO NOT NEED TO RESEND YOUR MESSAGE  **\n"
             "    **********************************************\n\nThe original message was received at Mon, 23 Nov"
             " 2026 10:00:00 GMT\nfrom relay.example.com [192.0.2.1]\n\n   ----- Transcript of session follows -----\n"
             "<bob@example.net>... Deferred: Connection timed out with mx.example.net.\nWarning: message still"
             " undelivered after 4 hours\nWill keep trying until message is 5 days old\n"), "delayed", message_id=None),
    _s("exim-dsn-delivered", "Exim success DSN (NOTIFY=SUCCESS)",
       dsn(reporting="mail.example.org", subject="Delivery Status Notification: delivered",
           human="This message was created automatically by mail delivery software.\n\nYour message has been"
           " successfully delivered to the following address(es).\n\n  bob@example.net\n",
           recipients=["Action: delivered\nFinal-Recipient: rfc822;bob@example.net\nStatus: 2.0.0\n"]), "dsn"),
    _s("gmail-vacation", "Gmail vacation responder",
       "From: Bob <bob@gmail.com>\nTo: " + BOUNCE_TO + "\nSubject: Out of office\nAuto-Submitted: auto-replied\n"
       "Content-Type: text/plain; charset=UTF-8\n\nI'm travelling until Monday and will reply then.\n",
       "auto_reply", message_id=None),
    _s("autoreply-header", "an autoresponder that sets X-Autoreply",
       "From: support@example.net\nTo: " + BOUNCE_TO + "\nSubject: Re: Your receipt\nX-Autoreply: yes\n"
       "Content-Type: text/plain\n\nThanks, we received your message and will answer within a day.\n",
       "auto_reply", message_id=None),
]
# fmt: on
# fmt: off
# --- A fourth set (issue 18): Japanese carriers, McAfee, Verizon, FML, Amazon WorkMail, generic
# "X"-style MTAs, and second looks at DragonFly, IMail, MailFoundry and Yahoo. Written from the
# software's own stock phrases (cited at each helper) with our own addresses and wording around
# them; where a shape is known only in part, the comment says so.


def jis(text: str) -> str:
    """Japanese text as ISO-2022-JP (RFC 1468: 7-bit, escape sequences), as Japanese MTAs write it."""
    return text.encode("iso2022_jp").decode("ascii")


def jis_word(text: str) -> str:
    """An RFC 2047 encoded word in ISO-2022-JP, the way Japanese MTAs write a Subject or a From name."""
    return email.header.Header(text, "iso-2022-jp").encode()


def mixed(*, sender: str, subject: str, text: str, headers: str = "", to: str = B, charset: str = "us-ascii",
          original: str | None = None) -> str:
    """A multipart/mixed bounce: a text part, then the returned message as message/rfc822 (the layout of
    the carriers' MTAs, MailFoundry and Verizon's gateways: no message/delivery-status part)."""
    copy = ORIGINAL.format(to=to) if original is None else original
    return f"""\
Return-Path: <>
From: {sender}
To: {BOUNCE_TO}
Subject: {subject}
Date: Mon, 23 Nov 2026 19:05:00 +0900
{headers}MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="RETURNED-PART"

--RETURNED-PART
Content-Type: text/plain; charset={charset}
Content-Transfer-Encoding: 7bit

{text}
--RETURNED-PART
Content-Type: message/rfc822

{copy}
--RETURNED-PART--
"""


def ezweb(rcpt: str, why: str, headers: str = "") -> str:
    """au by KDDI's older MTA (EZweb): From Postmaster@ezweb.ne.jp, "Mail System Error - Returned Mail",
    a "Received: ... (EZweb Mail)" line, the reason as one of its stock sentences ("The user(s) account
    is disabled.", "... temporarily over quota.", "Your message was not delivered within N days and N
    hours."), then the address on a line of its own (KDDI's support pages quote these sentences)."""
    return mixed(sender="Postmaster@ezweb.ne.jp", subject="Mail System Error - Returned Mail", to=rcpt,
                 headers="Received: from ezweb.ne.jp (EZweb Mail) with ESMTP id 0ABCDEF1234\n" + headers,
                 text=f"{why}\n\n<{rcpt}>\n")


def kddi(rcpt: str, because: str) -> str:
    """au by KDDI's newer MTA (Postmaster@au.com): "Your mail sent on: <date>" then "Could not be delivered
    to: <address>" and one "As ..." sentence ("As their mailbox is full.", "As the remote domain doesnt
    exist.", "Due to the following SMTP relay error")."""
    return mixed(sender="Postmaster@au.com", subject="Mail System Error - Returned Mail", to=rcpt,
                 headers="Received: from mfsmax.au.com (mfsmax.au.com [192.0.2.40])\n",
                 text=f"Your mail sent on: Mon, 23 Nov 2026 19:00:00 +0900\n    Could not be delivered to: <{rcpt}>\n"
                 f"    {because}\n")


def sendmail_dsn(rcpt: str, transcript: str, reason: str, status: str, diagnostic: str) -> str:
    """Sendmail 8 with its DSN part (savemail.c: "The following addresses had permanent fatal errors",
    the session transcript), as sent by a Sendmail relay delivering to a carrier's MX."""
    return dsn(reporting="mail.example.org", subject="Returned mail: see transcript for details", to=rcpt,
               sender="Mail Delivery Subsystem <MAILER-DAEMON@mail.example.org>",
               human="The original message was received at Mon, 23 Nov 2026 10:00:00 GMT\nfrom relay.example.com"
               f" [192.0.2.1]\n\n   ----- The following addresses had permanent fatal errors -----\n<{rcpt}>\n"
               f"    (reason: {reason})\n\n   ----- Transcript of session follows -----\n{transcript}\n",
               recipients=[f"Final-Recipient: RFC822; {rcpt}\nAction: failed\nStatus: {status}\nRemote-MTA: DNS;"
                           f" mfsmax.docomo.ne.jp\nDiagnostic-Code: SMTP; {diagnostic}\n"
                           "Last-Attempt-Date: Mon, 23 Nov 2026 10:00:01 GMT\n"])


def biglobe(rcpt: str, information: str) -> str:
    """BIGLOBE's own returned mail (postmaster@biglobe.ne.jp, "Returned mail: ..."): the Sendmail-like
    "----- The following addresses had delivery problems -----" list, then "----- Non-delivered
    information -----" and one sentence."""
    return mixed(sender="postmaster@biglobe.ne.jp", subject="Returned mail: Delivery failed", to=rcpt,
                 text=f"   ----- The following addresses had delivery problems -----\n{rcpt}\n\n"
                 f"   ----- Non-delivered information -----\n{information}\n")


def mcafee(rcpt: str, problem: str, diagnostic: str) -> str:
    """McAfee Email and Web Security appliance (formerly MX Logic's product line): Subject "Delivery
    Status", an X-NAI-Header "Modified by McAfee ...", a text part named deliveryproblems.txt with
    "--- The following addresses had delivery problems ---" and "<address>   (problem)", then a
    delivery-status part (deliverystatus.txt) that names the recipient only in Original-Recipient,
    in angle brackets and without an address type. The part names and the list line are the
    appliance's; the exact set and order of its delivery-status fields is not verified."""
    return f"""\
Return-Path: <>
From: postmaster@gw.example.net
To: {BOUNCE_TO}
Subject: Delivery Status
X-NAI-Header: Modified by McAfee Email and Web Security Virtual Appliance
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="Boundary-00=_MCAFEE0000000000000"

--Boundary-00=_MCAFEE0000000000000
Content-Type: text/plain; name="deliveryproblems.txt"

    --- The following addresses had delivery problems ---

<{rcpt}>   ({problem})

--Boundary-00=_MCAFEE0000000000000
Content-Type: message/delivery-status; name="deliverystatus.txt"

Original-Recipient: <{rcpt}>
Action: failed
Diagnostic-Code: {diagnostic}
Remote-MTA: <192.0.2.10>

--Boundary-00=_MCAFEE0000000000000
Content-Type: message/rfc822

{ORIGINAL.format(to=rcpt)}
--Boundary-00=_MCAFEE0000000000000--
"""


def vtext(rcpt: str, reply: str) -> str:
    """Verizon Wireless's SMS gateway (post_master@vtext.com): an "Error:" line, the reply as
    "NNN - text", then "Message details:" with the envelope (MAIL FROM / RCPT TO) indented. The
    layout and the reply are its; the wording of our "Error:" line is ours."""
    return prose(sender="post_master@vtext.com", subject="Undeliverable Message",
                 body=f"Error: the message was not delivered to its recipient.\n\n{reply}\n\nMessage details:\n"
                 "  Subject: Your receipt\n  Sent date: Mon Nov 23 10:00:00 GMT 2026\n  MAIL FROM: app@example.com\n"
                 f"  RCPT TO: {rcpt}\n  From: App <app@example.com>\n  To: {rcpt}\n  Size (bytes): 512\n"
                 "  Number of Attachments: 0\n")


def vzwpix(rcpt: str, to_line: str) -> str:
    """Verizon Wireless's MMS gateway (sysadmin@<host>.vzwpix.com): "Message could not be delivered to
    mobile.", "Error: No valid recipients for this MM", then "Original Message:" with From/To/Subject."""
    return prose(sender="sysadmin@mms01.vzwpix.com", subject="Undeliverable Message",
                 body="Message could not be delivered to mobile.\nError: No valid recipients for this MM\n\n"
                 f"Original Message:\nFrom: App <app@example.com>\nTo: {to_line}\nSubject: Your receipt\n"
                 "Date: Mon, 23 Nov 2026 10:00:00 +0000\n")


ML = "mylist@example.org"


def fml(subject: str, text: str) -> str:
    """fml (the Japanese mailing-list manager, fml 4.x) answering a post it refused: From the list's
    -admin address, X-MLServer: fml [...], a Message-ID with ".FML" in it, its one-line verdict
    naming the list as "<list@domain>.", then "Original mail as follows:" and the post."""
    return prose(sender="mylist-admin@example.org", subject=subject,
                 headers="Message-ID: <202611231000.FML12345.mylist@example.org>\n"
                 "X-MLServer: fml [fml 4.0.3 release (20011202/4.0.3)]\nX-ML-Name: mylist\nPrecedence: bulk\n",
                 body=f"{text}\n\nOriginal mail as follows:\n\n" + ORIGINAL.format(to=ML))


def workmail(rcpt: str, status: str, diagnostic: str) -> str:
    """Amazon WorkMail's bounce (X-Mailer and X-Original-Mailer "Amazon WorkMail", X-SES-Outgoing):
    the text part ends with "Technical report:" and the DSN fields (Reporting-MTA typed "dsn;"),
    the same fields in the report part; the Diagnostic-Code may wrap the remote reply as
    "5.1.0 - Unknown address error 550-'5.1.1 ...'" under a generic Status. The headers, "Technical
    report:" and the wrapped reply are WorkMail's; the sentence above the list is SES's (WorkMail sends
    through SES), not verified for WorkMail itself."""
    fields = (f"Action: failed\nFinal-Recipient: rfc822; {rcpt}\nDiagnostic-Code: smtp; {diagnostic}\n"
              f"Status: {status}\n")
    return dsn(reporting="a27-85.smtp-out.us-west-2.amazonses.com", subject="Delivery Status Notification (Failure)",
               sender="MAILER-DAEMON@us-west-2.awsapps.com", to=rcpt,
               human="An error occurred while trying to deliver the mail to the following recipients:\n"
               f"{rcpt}\n\nTechnical report:\n\nReporting-MTA: dsn; a27-85.smtp-out.us-west-2.amazonses.com\n\n"
               + fields,
               recipients=[fields],
               ).replace("Auto-Submitted: auto-replied\n", "Auto-Submitted: auto-replied\nX-Mailer: Amazon WorkMail\n"
                         "X-Original-Mailer: Amazon WorkMail\nX-SES-Outgoing: 2026.11.23-54.240.27.159\n", 1)


def dragonfly(rcpt: str, reason: str) -> str:
    """dma as it really sends (dma's mail.c bounce()): From "MAILER-DAEMON <>", X-Original-To, "This
    is the DragonFly Mail Agent vX at host.", "There was an error delivering your mail to <x>.", the
    error (net.c: "host [addr] did not like our CMD:\\n<reply>", "DNS lookup failure: host X not
    found"), then "Message headers follow." (the default; "Original message follows." with FULLBOUNCE)
    and the headers."""
    headers = ORIGINAL.format(to=rcpt).split("\n\n", 1)[0] + "\n"
    return (f"Received: from MAILER-DAEMON\n\tid 1a2b3c.4d5e6f\n\tby mail.example.org (DragonFly Mail Agent v0.13);"
            f"\n\tMon, 23 Nov 2026 10:05:00 +0000\nX-Original-To: <{rcpt}>\nFrom: MAILER-DAEMON <>\n"
            f"To: {BOUNCE_TO}\nSubject: Mail delivery failed\nMessage-Id: <1a2b3c.4d5e6f@mail.example.org>\n"
            "Date: Mon, 23 Nov 2026 10:05:00 +0000\n\nThis is the DragonFly Mail Agent v0.13 at mail.example.org.\n\n"
            f"There was an error delivering your mail to <{rcpt}>.\n\n{reason}\n\nMessage headers follow.\n\n"
            + headers)


def imail(text: str) -> str:
    """Ipswitch IMail Server's queue manager: Subject "Undeliverable Mail", X-Mailer "<SMTP32 vX>", its
    one-line verdicts ("Unknown user: x", "Unknown host: x", "User mailbox exceeds allowed size: x",
    "Delivery failed N attempts: x", "undeliverable to x"), then "Original message follows."."""
    return prose(sender="Postmaster <postmaster@mail.example.net>", subject="Undeliverable Mail",
                 headers="X-Mailer: <SMTP32 v8.22>\n",
                 body=f"{text}\n\nOriginal message follows.\n\n" + ORIGINAL.format(to=B))


def mailfoundry(reason: str) -> str:
    """MailFoundry: Subject "Message delivery has failed", a "Received: ... (MAILFOUNDRY) id" line,
    "Unable to deliver message to: <x>" / "Delivery failed for the following reason:" / "Server
    host[ip] failed with: <reply>", and the message as message/rfc822."""
    return mixed(sender="MAILER-DAEMON@gw.example.net", subject="Message delivery has failed",
                 headers="Received: from gw.example.net (MAILFOUNDRY) id 0a1b2c3d4e5f for app@example.com;"
                 " Mon, 23 Nov 2026 10:05:00 +0000\n",
                 text=f"Unable to deliver message to: <{B}>\nDelivery failed for the following reason:\nServer"
                 f" mx.example.net[192.0.2.10] failed with: {reason}\n\nThis has been a permanent failure.  No"
                 " further delivery attempts will be made.\n")


def yahoo(reply: str) -> str:
    """Yahoo's own returned mail (its X-YMailISG header; "Sorry, we were unable to deliver your message to
    the following address."; "Remote host said: <reply> [CMD]" where CMD names the command, RCPT_TO or
    MAIL_FROM; "--- Below this line is a copy of the message.")."""
    return prose(sender="MAILER-DAEMON@yahoo.com", subject="Failure Notice",
                 headers="X-YMailISG: Zq8bD2sWLDsyD3wOwTHP5BBy9bJEexampleonly\n",
                 body=f"Sorry, we were unable to deliver your message to the following address.\n\n<{B}>:\n"
                 f"Remote host said: {reply}\n\n--- Below this line is a copy of the message.\n\n" + ORIGINAL.format(to=B))


EZ, AU, DOCOMO, SB = "bob@ezweb.ne.jp", "bob@au.com", "bob@docomo.ne.jp", "bob@softbank.ne.jp"

SAMPLES += [
    # au by KDDI (EZweb): its sentences. "disabled" and "temporarily limited" are unpaid or paused
    # accounts (KDDI's support pages): they come back, so not hard.
    _s("ezweb-disabled", "au/ezweb (KDDI) EZweb Mail", ezweb(EZ, "The user(s) account is disabled."),
       "prose", ((EZ, "soft"),)),
    _s("ezweb-over-quota", "au/ezweb (KDDI) EZweb Mail", ezweb(EZ, "The user(s) account is temporarily over quota."),
       "prose", ((EZ, "soft"),)),
    _s("ezweb-not-delivered-within", "au/ezweb (KDDI) EZweb Mail, expired",
       ezweb(EZ, "Your message was not delivered within 0 days and 1 hours.\nRemote host is not responding."),
       "prose", ((EZ, "soft"),)),
    # The X-SPASIGN: NG header marks mail the recipient's own filter refused (au's "迷惑メールフィルター").
    _s("ezweb-spasign-filtered", "au/ezweb (KDDI) EZweb Mail, refused by the recipient's filter",
       ezweb(EZ, "Each of the following recipients was rejected by a remote mail server.", headers="X-SPASIGN: NG\n"),
       "prose", ((EZ, "soft"),)),
    _s("kddi-mailbox-full", "au (KDDI) au.com", kddi(AU, "As their mailbox is full."), "prose", ((AU, "soft"),)),
    _s("kddi-no-domain", "au (KDDI) au.com", kddi("bob@nx.example", "As the remote domain doesnt exist."),
       "prose", (("bob@nx.example", "hard"),)),
    _s("kddi-relay-error", "au (KDDI) au.com", kddi(AU, "Due to the following SMTP relay error"), "prose",
       ((AU, "block"),)),
    # au's MX as the remote host: "550 <address>: User unknown" for a missing mailbox, "550 : User
    # unknown" (no address) when the recipient's domain filter refused the sender: not a dead address.
    _s("kddi-rhost-user-unknown", "Gmail DSN, au (KDDI) at the receiver",
       gmail(EZ, "Address not found", f"Your message wasn't delivered to {EZ} because the address couldn't be"
             " found, or is unable to receive mail.", f"550 <{EZ}>: User unknown", "5.0.0"), "dsn", ((EZ, "hard"),)),
    _s("kddi-rhost-filtered", "Gmail DSN, au (KDDI) at the receiver, its domain filter",
       gmail(EZ, "Message not delivered", f"Your message wasn't delivered to {EZ} because the remote server"
             " rejected it.", "550 : User unknown", "5.0.0"), "dsn", ((EZ, "soft"),)),
    # NTT docomo (mfsmax.docomo.ne.jp): "550 Unknown user <address>" both for a missing mailbox (at RCPT)
    # and for its recipient-set filters (at the end of the data: the address exists).
    _s("docomo-after-data-unknown-user", "Postfix, NTT docomo at the receiver",
       postfix_dsn(DOCOMO, f"550 Unknown user {DOCOMO}", "5.0.0", "end of DATA",
                   host="mfsmax.docomo.ne.jp[203.138.181.240]"), "dsn", ((DOCOMO, "soft"),)),
    _s("docomo-rcpt-unknown-user", "Sendmail 8 DSN, NTT docomo at the receiver",
       sendmail_dsn(DOCOMO, f"... while talking to mfsmax.docomo.ne.jp.:\n>>> RCPT To:<{DOCOMO}>\n<<< 550 Unknown user"
                    f" {DOCOMO}\n550 5.1.1 <{DOCOMO}>... User unknown\n>>> DATA\n<<< 503 Bad sequence of commands",
                    f"550 5.1.1 <{DOCOMO}>... User unknown", "5.1.1", f"550 Unknown user {DOCOMO}"),
       "dsn", ((DOCOMO, "hard"),)),
    _s("docomo-data-unknown-user", "Sendmail 8 DSN, NTT docomo refusing the DATA (Status 5.2.0)",
       sendmail_dsn(DOCOMO, f"... while talking to mfsmax.docomo.ne.jp.:\n>>> DATA\n<<< 550 Unknown user {DOCOMO}\n"
                    "554 5.0.0 Service unavailable", f"550 Unknown user {DOCOMO}", "5.2.0", f"550 Unknown user {DOCOMO}"),
       "dsn", ((DOCOMO, "soft"),)),
    _s("docomo-too-much-mail-data", "Postfix, NTT docomo at the receiver (its mailbox-full reply)",
       postfix_dsn(DOCOMO, "552 too much mail data", "5.0.0", "end of DATA", host="mfsmax.docomo.ne.jp[203.138.181.240]"),
       "dsn", ((DOCOMO, "soft"),)),
    # SoftBank: its MX refusing at RCPT; and a Japanese returned mail in ISO-2022-JP (subject and body;
    # the wording of this one is ours, in the carriers' usual form: a sentence, the address, the reply).
    _s("softbank-rcpt-invalid", "Postfix, SoftBank at the receiver",
       postfix_dsn(SB, f"550 Invalid recipient: <{SB}>", "5.0.0", host="mx.softbank.ne.jp[192.0.2.50]"),
       "dsn", ((SB, "hard"),)),
    _s("softbank-iso-2022-jp", "SoftBank returned mail in ISO-2022-JP",
       mixed(sender="Postmaster@softbank.ne.jp", subject=jis_word("配信エラー: Undeliverable Message"), to=SB,
             charset="ISO-2022-JP",
             text=jis("以下の宛先へメールを配信できませんでした。\n\n") + f"<{SB}>\n550 Unknown user {SB}\n"),
       "prose", ((SB, "hard"),)),
    _s("softbank-iso-2022-jp-quota", "SoftBank returned mail in ISO-2022-JP",
       mixed(sender=f"{jis_word('メール配信システム')} <Postmaster@softbank.ne.jp>",
             subject=jis_word("配信エラー"), to=SB, charset="ISO-2022-JP",
             text=jis("以下の宛先へメールを配信できませんでした。\n\n") + f"<{SB}>\n552 5.2.2 Mailbox full\n"),
       "prose", ((SB, "soft"),)),
    # BIGLOBE: its own MTA writes these after it took the message; its "User unknown" sentence is what
    # its filter says (sisimai reads it as filtered): not hard.
    _s("biglobe-mailbox-full", "Biglobe", biglobe("bob@biglobe.ne.jp", "The number of messages in recipient's mailbox"
       " exceeded the local limit."), "prose", (("bob@biglobe.ne.jp", "soft"),)),
    _s("biglobe-user-unknown", "Biglobe", biglobe("bob@biglobe.ne.jp", "Mail Delivery Failed... User unknown"),
       "prose", (("bob@biglobe.ne.jp", "soft"),)),
    # McAfee appliance.
    _s("mcafee-user-unknown", "McAfee Email and Web Security", mcafee(B, f"User unknown {B}", f"<550 5.1.1 <{B}>..."
       " User unknown>"), "dsn", HARD),
    _s("mcafee-no-such-user", "McAfee Email and Web Security", mcafee(B, "No such user", "550 There is no such user"),
       "dsn", HARD),
    _s("mcafee-host-unknown", "McAfee Email and Web Security (MX Logic)", mcafee("bob@nx.example", "Host unknown",
       "550 Host unknown"), "dsn", (("bob@nx.example", "hard"),)),
    _s("mcafee-invalid-recipient-after-data", "McAfee Email and Web Security",
       mcafee(B, "Invalid recipient", "SMTP; 550 Invalid recipient <bob@example.net> (in reply to end of DATA command)"),
       "dsn", SOFT),
    # Verizon Wireless gateways.
    _s("verizon-vtext-no-such-user", "Verizon Wireless vtext.com",
       vtext("2125550100@vtext.com", "550 - Requested action not taken: no such user here"), "prose",
       (("2125550100@vtext.com", "hard"),), message_id=None),
    _s("verizon-vtext-two-lines", "Verizon Wireless vtext.com",
       vtext("2125550101@vtext.com", "550 - Requested action not taken: no such user here\n"
             "Your message has not been delivered."), "prose", (("2125550101@vtext.com", "hard"),), message_id=None),
    _s("verizon-vzwpix-no-valid-recipients", "Verizon Wireless vzwpix.com",
       vzwpix("2125550100@vzwpix.com", "2125550100@vzwpix.com"), "prose", (("2125550100@vzwpix.com", "hard"),),
       message_id=None),
    _s("verizon-vzwpix-named", "Verizon Wireless vzwpix.com",
       vzwpix("2125550102@vzwpix.com", "Bob <2125550102@vzwpix.com>"), "prose", (("2125550102@vzwpix.com", "hard"),),
       message_id=None),
    # fml: the recipient is the list; a refusal of the sender or a loop, never a dead address.
    _s("fml-not-member", "FML (fml 4 mailing-list manager)",
       fml("NOT MEMBER article from app@example.com (mylist ML)", "NOT MEMBER article from app@example.com.\n"
           f"You app@example.com are not member of <{ML}>."), "prose", ((ML, "block"),)),
    _s("fml-duplicated-message-id", "FML (fml 4 mailing-list manager)",
       fml("fml system error message (mylist ML)", f"Duplicated Message-ID in <{ML}>."), "prose", ((ML, "soft"),)),
    _s("fml-loop-alert", "FML (fml 4 mailing-list manager)",
       fml("Loop Alert: dup (mylist ML)", f"fml <{ML}> has detected a loop condition so that\ninput mail has not"
           f" been passed to <{ML}>."), "prose", ((ML, "soft"),)),
    # Amazon WorkMail.
    _s("workmail-user-unknown", "Amazon WorkMail",
       workmail(B, "5.1.0", f"5.1.0 - Unknown address error 550-'5.1.1 <{B}>: Recipient address rejected: User unknown"
                " in virtual mailbox table'"), "dsn", HARD),
    _s("workmail-expired", "Amazon WorkMail",
       workmail(B, "4.4.7", "554 4.4.7 Message expired: unable to deliver in 840 minutes.<421 4.4.2 Connection timed"
                " out>"), "dsn", SOFT),
    _s("workmail-disabled", "Amazon WorkMail",
       workmail(B, "5.1.0", "5.1.0 - Unknown address error 550-'5.2.1 The email account that you tried to reach is"
                " disabled.'"), "dsn", SOFT),
    # MTAs of no known make in the shapes sisimai groups as X1..X6 (plain text: a list line, an error line).
    _s("x1-returned-mail", "X1-style MTA (\"Mail Deliver System\", \"Returned Mail:\")",
       prose(sender='"Mail Deliver System" <MAILER-DAEMON@mail.example.org>', subject="Returned Mail: User unknown",
             body="The original message was received at Mon, 23 Nov 2026 19:00:00 +0900 (JST)\nfrom app@example.com\n\n"
             "---The following addresses had delivery errors---\n\nbob@example.net [User unknown]\n\n"
             + ORIGINAL.format(to=B)), "prose", HARD),
    _s("x1-host-unknown", "X1-style MTA (\"Mail Deliver System\", \"Returned Mail:\")",
       prose(sender='"Mail Deliver System" <MAILER-DAEMON@mail.example.org>', subject="Returned Mail: Host unknown",
             body="The original message was received at Mon, 23 Nov 2026 19:00:00 +0900 (JST)\nfrom app@example.com\n\n"
             "---The following addresses had delivery errors---\n\nbob@nx.example [Host unknown]\n\n"
             + ORIGINAL.format(to="bob@nx.example")), "prose", (("bob@nx.example", "hard"),)),
    _s("x2-unable-to-deliver", "X2-style MTA (\"Unable to deliver message to the following address(es).\")",
       prose(sender='"MAILER-DAEMON" <postmaster@mail.example.org>', subject="Delivery failure",
             body="Message from mail.example.org.\nUnable to deliver message to the following address(es).\n\n"
             f"<{B}>:\nThis user doesn't have a example.net account ({B}) [0]\n"), "prose", HARD, message_id=None),
    _s("x3-technical-details", "X3-style MTA (\"automatically generated Delivery Status Notification\")",
       prose(sender="Mail Delivery System <mailer@mail.example.org>", subject="Delivery status notification",
             body="=" * 76 + "\n     This is an automatically generated Delivery Status Notification.\n\nDelivery to"
             f" the following recipients failed permanently:\n\n  * {B}\n\n\n" + "=" * 76 + "\n"
             "                            Technical details:\n\nSMTP:RCPT host 192.0.2.10: 553 5.3.0"
             f" <{B}>... No such user here\n\n\n" + "=" * 76 + "\n"), "prose", HARD, message_id=None),
    _s("x3-over-quota", "X3-style MTA (\"automatically generated Delivery Status Notification\")",
       prose(sender="Mail Delivery System <mailer@mail.example.org>", subject="Delivery status notification",
             body="=" * 76 + "\n     This is an automatically generated Delivery Status Notification.\n\nDelivery to"
             f" the following recipients failed permanently:\n\n  * {B}\n\n\n" + "=" * 76 + "\n"
             "                            Technical details:\n\nDiagnostic-Code: smtp; 552 5.2.0 Over the quota\n\n\n"
             + "=" * 76 + "\n"), "prose", SOFT, message_id=None),
    _s("x3-smtp-data-refused", "X3-style MTA (\"automatically generated Delivery Status Notification\")",
       prose(sender="Mail Delivery System <mailer@mail.example.org>", subject="Delivery status notification",
             body="=" * 76 + "\n     This is an automatically generated Delivery Status Notification.\n\nDelivery to"
             f" the following recipients failed permanently:\n\n  * {B}\n\n\n" + "=" * 76 + "\n"
             "                            Technical details:\n\nSMTP:DATA host 192.0.2.10: 550 5.1.1"
             f" <{B}>... User unknown\n\n\n" + "=" * 76 + "\n"), "prose", SOFT, message_id=None),
    _s("x5-encoded-from", "X5-style MTA (RFC 3464 from a Japanese MTA: From an ISO-2022-JP encoded word,"
       " To: NotificationRecipients)",
       dsn(reporting="mta.example.jp", subject="Delivery Status Notification", to=B,
           sender=f'"{jis_word("Mail Delivery Subsystem")}" <MAILER-DAEMON@mta.example.jp>',
           human="Delivery to the following recipient failed permanently.\n",
           recipients=[f"Final-Recipient: RFC822; {B}\nAction: failed\nStatus: 5.1.1\nRemote-MTA: DNS; mx.example.net\n"
                       f"Diagnostic-Code: SMTP; 550 5.1.1 <{B}>... User Unknown\n"]
           ).replace(f"To: {BOUNCE_TO}\n", "To: NotificationRecipients\n", 1), "dsn", HARD),
    _s("x-failed-to-deliver", "generic X-style MTA (\"Failed to deliver to '<x>'\", \"SMTP module ... reports\")",
       prose(sender="MAILER-DAEMON@mail.example.org", subject="Undeliverable mail",
             body=f"Failed to deliver to '<{B}>'\nSMTP module(domain example.net) reports:\n host mx.example.net says:\n"
             f" 550 5.1.1 <{B}>: Recipient address rejected: User unknown\n\nOriginal message follows.\n\n"
             + ORIGINAL.format(to=B)), "prose", HARD),
    _s("x-permanent-errors-list", "generic X-style MTA (\"The following recipients returned permanent errors:\")",
       prose(sender="MAILER-DAEMON@mail.example.org", subject="Undeliverable mail",
             body=f"Your message could not be delivered.\n\nThe following recipients returned permanent errors:\n{B}\n\n"
             "Error: 552 5.2.2 Mailbox quota exceeded\n"), "prose", SOFT, message_id=None),
    _s("x-unable-to-deliver-to", "generic X-style MTA (\"Unable to deliver to:\" / \"Error:\")",
       prose(sender="MAILER-DAEMON@mail.example.org", subject="Mail delivery failed",
             body="Unable to deliver to: <bob@nx.example>\nError: 550 Host unknown\n"), "prose",
       (("bob@nx.example", "hard"),), message_id=None),
    # DragonFly Mail Agent as dma sends by default.
    _s("dragonfly-headers-rcpt", "DragonFly Mail Agent (default: Message headers follow)",
       dragonfly(B, "mx.example.net [192.0.2.10] did not like our RCPT TO:\n550 5.1.1 <bob@example.net>: Recipient"
                 " address rejected: User unknown in local recipient table"), "prose", HARD),
    _s("dragonfly-final-data", "DragonFly Mail Agent (the reply to the end of the data)",
       dragonfly(B, "mx.example.net [192.0.2.10] did not like our final DATA:\n550 5.1.1 <bob@example.net>... User"
                 " unknown"), "prose", SOFT),
    _s("dragonfly-dns-failure", "DragonFly Mail Agent (no such domain)",
       dragonfly("bob@nx.example", "DNS lookup failure: host nx.example not found"), "prose",
       (("bob@nx.example", "hard"),)),
    _s("dragonfly-mail-from", "DragonFly Mail Agent (our sender refused)",
       dragonfly(B, "mx.example.net [192.0.2.10] did not like our MAIL FROM:\n553 5.1.8 <app@example.com>: Sender"
                 " address rejected: Domain not found"), "prose", BLOCK),
    # Ipswitch IMail.
    _s("imail-mailbox-size", "Ipswitch IMail Server", imail(f"User mailbox exceeds allowed size: {B}"), "prose", SOFT),
    _s("imail-unknown-host", "Ipswitch IMail Server", imail("Unknown host: bob@nx.example").replace(
       f"To: {B}\n", "To: bob@nx.example\n"), "prose", (("bob@nx.example", "hard"),)),
    _s("imail-delivery-failed-attempts", "Ipswitch IMail Server (gave up retrying)",
       imail(f"Delivery failed 3 attempts: {B}"), "prose", SOFT),
    _s("imail-x-mailer-unknown-user", "Ipswitch IMail Server", imail(f"Unknown user: {B}"), "prose", HARD),
    # MailFoundry as it sends: multipart, the message attached.
    _s("mailfoundry-no-such-user", "MailFoundry", mailfoundry(f"550 <{B}> No such user here"), "prose", HARD),
    _s("mailfoundry-mailbox-full", "MailFoundry", mailfoundry(f"552 5.2.2 <{B}>... Mailbox full"), "prose", SOFT),
    # Yahoo with its header and command tags.
    _s("yahoo-ymail-rcpt-disabled", "Yahoo legacy bounce (X-YMailISG), [RCPT_TO]",
       yahoo("554 delivery error: dd This account has been disabled or discontinued [#102]. -"
             " mta1234.mail.ne1.yahoo.com [RCPT_TO]"), "prose", SOFT),
    _s("yahoo-ymail-mail-from", "Yahoo legacy bounce (X-YMailISG), [MAIL_FROM]",
       yahoo("553 5.7.1 <app@example.com>: Sender address rejected: not owned by user [MAIL_FROM]"), "prose", BLOCK),
    _s("yahoo-ymail-rcpt-unknown", "Yahoo legacy bounce (X-YMailISG), [RCPT_TO]",
       yahoo(f"550 5.1.1 <{B}>... User Unknown [RCPT_TO]"), "prose", HARD),
]
# fmt: on
