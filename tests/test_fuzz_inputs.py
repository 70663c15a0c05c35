"""Hypothesis-driven bad input for the MIME builder and the config loader: clear errors, never a crash."""

from __future__ import annotations

import email
import email.policy

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from relay import config as config_mod
from relay.compose import FieldError, Limits, build, parse_addresses, parse_request

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
_address = st.one_of(
    st.sampled_from(
        [
            "a@example.com",
            "Ann <ann@example.com>",
            "\u00e9l\u00e8ve@exemple.fr",
            "x@[127.0.0.1]",
            "bad",
            "",
            "a@b",
            "<>",
            '"quoted name" <q@example.com>',
            "a@example.com, b@example.com",
        ]
    ),
    st.text(max_size=30),
)
_request = st.fixed_dictionaries(
    {},
    optional={
        "from": _address,
        "to": st.one_of(_address, st.lists(_address, max_size=4)),
        "cc": st.lists(_address, max_size=2),
        "subject": st.text(max_size=80),
        "text": st.text(max_size=200),
        "html": st.text(max_size=200),
        "headers": st.dictionaries(st.text(max_size=20), st.text(max_size=40), max_size=3),
        "attachments": st.lists(
            st.fixed_dictionaries(
                {"filename": st.text(max_size=20), "content": st.sampled_from(["aGVsbG8=", "!!", ""])},
                optional={"content_type": st.text(max_size=20), "content_id": st.text(max_size=10)},
            ),
            max_size=2,
        ),
        "tags": st.lists(st.text(max_size=20), max_size=12),
        "metadata": _json,
    },
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_request)
def test_the_mime_builder_accepts_or_names_the_field(data):
    try:
        composition = parse_request(data, Limits())
    except FieldError as exc:
        assert exc.field and str(exc)  # a clear error naming the field
        return
    raw = build(composition, "relay.test", 1_800_000_000.0)
    assert b"\r\n\r\n" in raw and all(len(line) <= 998 for line in raw.split(b"\r\n"))
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert parsed["Message-ID"] and parsed["From"]


_names = st.one_of(
    st.just(""),
    st.sampled_from(["Ann", "Doe, John", 'Say "hi"', "a\\b", "Ann <x>", "Ünïcode, Inc.", "(paren)", "x;y"]),
    st.text(st.characters(min_codepoint=32, max_codepoint=0x24F, blacklist_categories=("Cs", "Cc")), max_size=12),
)
_mailboxes = st.tuples(_names, st.sampled_from(["ann@example.org", "b.o-b@example.com", "x@[127.0.0.1]"]))


def quoted(name: str, address: str) -> str:
    """``"name" <address>`` with the name as a quoted string (RFC 5322 §3.2.4), as a client writes one
    that holds a comma, a quote or a bracket; the address alone without a name."""
    if not name:
        return address
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + f'" <{address}>'


@given(st.lists(_mailboxes, min_size=1, max_size=5), st.sampled_from([", ", ",", " , ", ",\t"]))
def test_a_comma_separated_string_reads_as_the_list_it_was_written_from(mailboxes, separator):
    """Addresses with any names, joined by commas: read back as the same names and addresses, in order."""
    assume(all("=?" not in name for name, _ in mailboxes))  # encoded words are refused, by design
    text = separator.join(quoted(*mailbox) for mailbox in mailboxes)
    addresses = parse_addresses("to", text, many=True)
    assert [(a.display_name, a.addr_spec) for a in addresses] == mailboxes


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("x@[127.0.0.1]", [("", "x@[127.0.0.1]")]),
        ("Ann <x@[192.0.2.1]>", [("Ann", "x@[192.0.2.1]")]),
        (
            '"Doe, John" <y@[IPv6:2001:db8::1]>, b@example.org',
            [("Doe, John", "y@[IPv6:2001:db8::1]"), ("", "b@example.org")],
        ),
        ('"me@[192.0.2.1]" <a@example.org>', [("me@[192.0.2.1]", "a@example.org")]),
    ],
)
def test_an_address_literal_reads_the_same_on_every_python(text: str, expected: list[tuple[str, str]]) -> None:
    """The email package with the fix for CVE-2023-27043 (Python 3.11.10+, 3.12.6+, 3.13, Debian 12's 3.11.2)
    reads an address with a ``[`` as nothing: relay reads an address literal as it did before it."""
    assert [(a.display_name, a.addr_spec) for a in parse_addresses("to", text, many=True)] == expected


_sections = st.dictionaries(
    st.sampled_from(
        [
            "server",
            "smtp",
            "http",
            "delivery",
            "dns",
            "dkim",
            "inbound",
            "suppression",
            "webhooks",
            "retention",
            "domains",
            "nonsense",
        ]
    ),
    st.dictionaries(
        st.sampled_from(
            [
                "listen",
                "hostname",
                "data_dir",
                "max_age",
                "retry_schedule",
                "tls",
                "routes",
                "shaping",
                "rate_limit",
                "max_message_size",
                "bounce_domains",
                "outbound_ips",
                "soft_bounce_limit",
                "events",
                "typo",
            ]
        ),
        _json,
        max_size=4,
    ),
    max_size=4,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_sections)
def test_the_config_loader_accepts_or_explains(data):
    try:
        config_mod.from_dict(data, environ={})
    except config_mod.ConfigError as exc:
        assert str(exc).startswith("config: ")  # names the file (here: "config") and the key
