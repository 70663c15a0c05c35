"""relay.bounces.reasons: replies of many receivers' dialects, grouped into reasons. Pure, tables of examples."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.bounces.reasons import MAX_LENGTH, NO_REPLY, deferral_reason, reply_text

MIMECAST = "Internal resource temporarily unavailable - https://community.mimecast.com/docs/DOC-1369#451"

# Replies that differ only in what varies per message: each group must give one reason (and the one shown).
SAME_REASON = [
    (
        "Gmail, over quota (a multiline reply joined by relay: the enhanced code repeats, the trailer is an id)",
        "452 4.2.2 The email account that you tried to reach is over quota. Please direct the recipient to"
        " https://support.google.com/mail/?p=OverQuotaTemp <id>.<n> - gsmtp",
        [
            (
                452,
                "4.2.2 The email account that you tried to reach is over quota. Please direct 4.2.2 the recipient"
                " to 4.2.2 https://support.google.com/mail/?p=OverQuotaTemp d2e1a72fcca58-7b0b1e3c5c5si1234567b3a.123"
                " - gsmtp",
            ),
            (
                452,
                "4.2.2 The email account that you tried to reach is over quota. Please direct 4.2.2 the recipient"
                " to 4.2.2 https://support.google.com/mail/?p=OverQuotaTemp 41be03b00d2f7-6e4a0f1b9c1si99a.7 - gsmtp",
            ),
        ],
    ),
    (
        "Outlook, server busy (client IP, a server name, a timestamp and an id in brackets)",
        "451 4.7.500 Server busy. Please try again later from [<ip>]. (S77719) [<id>.<id>.prod.protection.outlook.com"
        " <time> <id>]",
        [
            (
                451,
                "4.7.500 Server busy. Please try again later from [203.0.113.5]. (S77719)"
                " [DB5EUR03FT012.eop-EUR03.prod.protection.outlook.com 2026-12-01T18:42:15.123Z 08DC1234ABCD5678]",
            ),
            (
                451,
                "4.7.500 Server busy. Please try again later from [198.51.100.77]. (S77719)"
                " [AM4PEPF00027A6C.eop-EUR05.prod.protection.outlook.com 2026-12-01T19:02:11Z 08DC99887766AABB]",
            ),
        ],
    ),
    (
        "Yahoo, TSS04 (the code naming the reason stays)",
        "421 4.7.0 [TSS04] Messages from <ip> temporarily deferred due to unexpected volume or user complaints -"
        " <ip>; see https://postmaster.yahooinc.com/error-codes",
        [
            (
                421,
                "4.7.0 [TSS04] Messages from 203.0.113.5 temporarily deferred due to unexpected volume or user"
                " complaints - 4.16.55.1; see https://postmaster.yahooinc.com/error-codes",
            ),
            (
                421,
                "4.7.0 [TSS04] Messages from 198.51.100.9 temporarily deferred due to unexpected volume or user"
                " complaints - 4.16.55.1; see https://postmaster.yahooinc.com/error-codes",
            ),
        ],
    ),
    (
        "Postfix greylisting (the recipient's address)",
        "450 4.2.0 <address>: Recipient address rejected: Greylisted, see http://postgrey.schweikert.ch/help/x.html",
        [
            (
                450,
                "4.2.0 <bob@x.example>: Recipient address rejected: Greylisted, see http://postgrey.schweikert.ch/help/x.html",
            ),
            (
                450,
                "4.2.0 <ann@x.example>: Recipient address rejected: Greylisted, see http://postgrey.schweikert.ch/help/x.html",
            ),
        ],
    ),
    (
        "Exim, mailbox full without an enhanced code (a bare address, a size)",
        "452 mailbox for <address> is full (<n> MB used)",
        [
            (452, "mailbox for ann@example.org is full (5000 MB used)"),
            (452, "mailbox for bob@example.org is full (12 MB used)"),
        ],
    ),
    (
        "Mimecast (a URL kept whole, a reference id in brackets)",
        "451 Internal resource temporarily unavailable - https://community.mimecast.com/docs/DOC-1369#451 [<id>.uk29]",
        [
            (
                451,
                f"{MIMECAST} [Hgx4p3YbMdq5yFz3Rk2ZSg.uk29]",
            ),
            (
                451,
                f"{MIMECAST} [q9WmZ0aPT3yQk7nN1cD2bE.uk29]",
            ),
        ],
    ),
    (
        "A raw multiline reply with its continuation prefixes, code in the text",
        "452 4.2.2 mailbox full quota <n> MB exceeded, try later",
        [
            (None, "452-4.2.2 mailbox full\n452-4.2.2 quota 5000 MB exceeded,\n452 4.2.2 try later"),
            (452, "4.2.2 mailbox full 4.2.2 quota 300 MB exceeded, 4.2.2 try later"),
        ],
    ),
    (
        "No connection: an IPv6 address and a port",
        "connection refused by mx.example.com[<ip>]:<n>",
        [
            (None, "connection refused by mx.example.com[2001:db8::25]:25"),
            (None, "connection refused by mx.example.com[2001:db8:1::7]:587"),
        ],
    ),
    (
        "An RFC 5322 date in the text",
        "421 4.7.1 Client host rejected: try again at <time>",
        [
            (421, "4.7.1 Client host rejected: try again at Tue, 1 Dec 2026 18:42:15 +0000"),
            (421, "4.7.1 Client host rejected: try again at 2 Dec 2026 08:00 GMT"),
        ],
    ),
]


@pytest.mark.parametrize(("dialect", "reason", "replies"), SAME_REASON, ids=[row[0] for row in SAME_REASON])
def test_replies_that_differ_only_per_message_give_one_reason(dialect, reason, replies):
    assert {deferral_reason(code, text) for code, text in replies} == {reason}


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ((452, "4.2.2 mailbox full"), (451, "4.2.2 mailbox full")),  # the reply code
        ((452, "4.2.2 mailbox full"), (452, "4.2.1 mailbox full")),  # the enhanced code
        ((421, "4.7.0 [TSS04] deferred"), (421, "4.7.0 [TSS09] deferred")),  # a short code naming the reason
        ((451, "see https://help.example/a?p=1"), (451, "see https://help.example/a?p=2")),  # the help page
        ((None, "timed out connecting to mx.one.example"), (None, "timed out connecting to mx.two.example")),
    ],
)
def test_what_tells_reasons_apart_is_kept(first, second):
    assert deferral_reason(*first) != deferral_reason(*second)


@pytest.mark.parametrize(
    ("code", "text", "reason"),
    [
        (421, "", "421"),
        (None, None, NO_REPLY),
        (None, "   ", NO_REPLY),
        (450, "4.7.1 try later", "450 4.7.1 try later"),
        (None, "450 4.7.1 try later", "450 4.7.1 try later"),  # the code in the text is read as the code
        (451, "4.3.0 queue file 4XyZ1234AB write error", "451 4.3.0 queue file <id> write error"),
        (451, "4.4.1 no answer from 10:30 to 10:45", "451 4.4.1 no answer from <n>:<n> to <n>:<n>"),
        (None, "127.0.0.1:9 connection refused", "<ip>:<n> connection refused"),  # starts with digits
        (None, "2500 bytes too many", "<n> bytes too many"),
        (None, "4.2.2.1 odd", "<ip> odd"),
    ],
)
def test_edge_cases(code, text, reason):
    assert deferral_reason(code, text) == reason


def test_a_long_reply_is_cut():
    reason = deferral_reason(451, "4.0.0 " + "word " * 200)
    assert len(reason) == MAX_LENGTH and reason.endswith("…")


def test_the_example_is_the_reply_as_received():
    assert reply_text(452, "4.2.2 <a@b.example> full") == "452 4.2.2 <a@b.example> full"
    assert reply_text(None, "connection refused") == "connection refused"
    assert reply_text(421, None) == "421"


@given(st.one_of(st.none(), st.integers(0, 999)), st.one_of(st.none(), st.text()))
def test_any_reply_gives_a_reason(code, text):
    """It runs as each attempt is recorded: it must never fail, whatever a receiver says."""
    reason = deferral_reason(code, text)
    assert reason and len(reason) <= MAX_LENGTH
