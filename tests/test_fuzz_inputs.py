"""Hypothesis-driven bad input for the MIME builder and the config loader: clear errors, never a crash."""

from __future__ import annotations

import email
import email.policy

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay import config as config_mod
from relay.compose import FieldError, Limits, build, parse_request

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
