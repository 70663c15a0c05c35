"""SMTP AUTH's exchange without a socket (relay.submission.sasl); tests/test_smtp_dialogues.py has the same
exchanges over one, reply by reply."""

from __future__ import annotations

import base64

from hypothesis import given
from hypothesis import strategies as st

from relay.submission import sasl
from relay.submission.commands import (
    AUTH_ABORTED,
    AUTH_BAD_BASE64,
    AUTH_BAD_SPLIT,
    AUTH_NO_VALUE,
    AUTH_TOO_MANY,
    AUTH_UNKNOWN,
    CHALLENGE_PASSWORD,
    CHALLENGE_PLAIN,
    CHALLENGE_USER,
)


def b64(text: bytes) -> bytes:
    return base64.b64encode(text)


def answer(step: sasl.Step, line: bytes, challenge: bytes) -> sasl.Step:
    assert isinstance(step, sasl.Challenge) and step.reply == challenge
    return step.answer(line)


def test_plain_with_an_initial_response_gives_the_credentials_at_once():
    step = sasl.start("PLAIN " + b64(b"\0alice\0secret pass").decode())
    assert step == sasl.Credentials(b"alice", b"secret pass")


def test_plain_without_one_asks_for_it():
    step = answer(sasl.start("PLAIN"), b64(b"admin\0alice\0pw") + b"\r\n", CHALLENGE_PLAIN)
    assert step == sasl.Credentials(b"alice", b"pw")  # the authorization id is not the login


def test_login_asks_for_the_user_name_then_the_password():
    step = answer(sasl.start("LOGIN"), b64(b"alice"), CHALLENGE_USER)
    assert answer(step, b64(b"pw"), CHALLENGE_PASSWORD) == sasl.Credentials(b"alice", b"pw")
    step = sasl.start("LOGIN " + b64(b"bob").decode())  # the user name as the initial response
    assert answer(step, b64(b"pw2"), CHALLENGE_PASSWORD) == sasl.Credentials(b"bob", b"pw2")


def test_the_client_may_cancel_at_any_challenge():
    assert answer(sasl.start("PLAIN"), b"*\r\n", CHALLENGE_PLAIN) == sasl.Refusal(AUTH_ABORTED)
    step = answer(sasl.start("LOGIN"), b64(b"alice"), CHALLENGE_USER)
    assert answer(step, b" * ", CHALLENGE_PASSWORD) == sasl.Refusal(AUTH_ABORTED)


def test_what_is_not_an_exchange_is_refused_with_its_own_reply():
    assert sasl.start(None) == sasl.start("") == sasl.start("\x1c") == sasl.Refusal(AUTH_NO_VALUE)
    assert sasl.start("PLAIN a b") == sasl.Refusal(AUTH_TOO_MANY)
    assert sasl.start("CRAM-MD5") == sasl.Refusal(AUTH_UNKNOWN)
    assert sasl.start("PLAIN not-base64!") == sasl.Refusal(AUTH_BAD_BASE64)
    assert sasl.start("PLAIN " + b64(b"no separators").decode()) == sasl.Refusal(AUTH_BAD_SPLIT)
    assert answer(sasl.start("LOGIN"), b"%%%", CHALLENGE_USER) == sasl.Refusal(AUTH_BAD_BASE64)


@given(st.text(max_size=60), st.lists(st.binary(max_size=60), max_size=3))
def test_any_argument_and_lines_end_in_a_step_never_an_exception(arg: str, lines: list[bytes]):
    step = sasl.start(arg)
    for line in lines:
        if not isinstance(step, sasl.Challenge):
            break
        step = step.answer(line)
    assert isinstance(step, sasl.Challenge | sasl.Refusal | sasl.Credentials)
