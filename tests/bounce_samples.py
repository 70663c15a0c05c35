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
