"""The refusal vocabulary (relay.errors): each refusal's SMTP reply and HTTP answer, written once.

The replies here are the ones relay has always given (tests/test_submission_smtp.py and the HTTP API
tests check them end to end); this table is where a newcomer reads them side by side.
"""

from __future__ import annotations

import pytest

from relay.errors import (
    DomainNotVerified,
    Invalid,
    MessageTooLarge,
    Overloaded,
    QuotaExhausted,
    RecipientsSuppressed,
    Refused,
)

# fmt: off
ROWS = [
    # refusal, SMTP reply, HTTP status, JSON code, JSON message, field, headers
    (MessageTooLarge("message is 20000001 bytes, the limit is 20000000"), "552 5.3.4 Message too big", 413,
     "message_too_large", "message is 20000001 bytes, the limit is 20000000", None, {}),
    (DomainNotVerified("example.com is not a verified sending domain"),
     "550 5.7.1 example.com is not a verified sending domain", 422, "domain_not_verified",
     "example.com is not a verified sending domain", "from", {}),
    (RecipientsSuppressed({"bob@example.net": "hard_bounce"}),
     "550 5.7.1 <bob@example.net>: recipient is on the suppression list (hard_bounce)", 422,
     "recipients_suppressed", "every recipient is on the suppression list (bob@example.net: hard_bounce)", "to", {}),
    (QuotaExhausted("d", 100), "452 4.3.1 Insufficient system storage, try again later", 402, "quota_exhausted",
     "the daily quota of 100 messages is used up", None, {}),
    (QuotaExhausted("m", 3000), "452 4.3.1 Insufficient system storage, try again later", 402, "quota_exhausted",
     "the monthly quota of 3000 messages is used up", None, {}),
    (Overloaded("the queue holds 10 pending recipients (limit 10)"),
     "452 4.3.1 Insufficient system storage, try again later", 503, "service_unavailable",
     "submission is paused: the queue holds 10 pending recipients (limit 10)", None, {"Retry-After": "60"}),
    (Invalid("invalid_field", "'to' must be a list", "to"), "550 5.6.0 'to' must be a list", 400, "invalid_field",
     "'to' must be a list", "to", {}),
    (Invalid("idempotency_in_progress", "still in progress", http_status=409, retry_after=1),
     "550 5.6.0 still in progress", 409, "idempotency_in_progress", "still in progress", None, {"Retry-After": "1"}),
]
# fmt: on


@pytest.mark.parametrize(("refusal", "smtp", "status", "code", "message", "field", "headers"), ROWS)
def test_each_refusal_answers_both_protocols(refusal, smtp, status, code, message, field, headers):
    assert refusal.smtp_reply() == smtp
    assert (refusal.http_status, refusal.code, refusal.http_message(), refusal.field) == (status, code, message, field)
    assert refusal.http_headers() == headers


def test_smtp_replies_are_well_formed():
    for refusal, *_ in ROWS:
        code, status, text = refusal.smtp_reply().split(" ", 2)
        assert code[0] in "45" and status[0] == code[0] and text, refusal


def test_a_batch_item_names_its_field_from_the_whole_request():
    refusal = DomainNotVerified("example.com is not a verified sending domain")
    assert refusal.within("messages[3].").field == "messages[3].from"
    assert refusal.field == "from", "the original is unchanged"
    assert MessageTooLarge("too big").within("recipients[0].").field == "recipients[0]."
    assert MessageTooLarge("too big").within("").field is None


def test_every_refusal_is_a_relay_error():
    from relay.api.app import ApiError
    from relay.errors import RelayError

    assert issubclass(Refused, RelayError)
    assert isinstance(ApiError(404, "not_found", "no message m1"), Refused)


def test_every_error_relay_defines_is_a_relay_error():
    """One root for what relay raises on purpose (relay/errors.py draws the tree); private helpers
    that are not errors (a leading underscore) are exempt."""
    import importlib
    import inspect
    import pkgutil

    import relay
    from relay.errors import RelayError

    outside = []
    for info in pkgutil.walk_packages(relay.__path__, "relay."):
        if info.name == "relay.__main__":
            continue
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if inspect.isclass(value) and issubclass(value, BaseException) and value.__module__ == info.name:
                if not name.startswith("_") and not issubclass(value, RelayError):
                    outside.append(f"{info.name}.{name}")
    assert outside == []
