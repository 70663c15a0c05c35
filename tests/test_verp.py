"""Authenticated return paths."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from relay.bounces.verp import ReturnPath, Verp, load_secret

SECRET = b"s" * 32


def test_round_trip() -> None:
    verp = Verp(SECRET, ["bounces.example.com"])
    address = verp.return_path("app@example.com", "01jd0000000000000000000000", 42)
    assert address.startswith("b+01jd0000000000000000000000.42.") and address.endswith("@bounces.example.com")
    assert len(address.partition("@")[0]) <= 64  # RFC 5321 local-part limit
    assert verp.verify(address) == ReturnPath("01jd0000000000000000000000", 42)
    assert verp.verify(address.upper()) == ReturnPath("01jd0000000000000000000000", 42)  # receivers may upcase
    assert verp.verify(f"<{address}>") is not None


@pytest.mark.parametrize(
    "change",
    [
        lambda a: a.replace(".42.", ".43."),  # another recipient
        lambda a: a.replace("b+01jd", "b+01je"),  # another message
        lambda a: a[: a.index("@") - 1] + ("a" if a[a.index("@") - 1] != "a" else "b") + a[a.index("@") :],  # tag
        lambda a: a.replace("bounces.example.com", "elsewhere.example"),  # not our domain
        lambda a: "bob@bounces.example.com",
    ],
)
def test_forged_or_foreign_addresses_are_refused(change) -> None:  # type: ignore[no-untyped-def]
    verp = Verp(SECRET, ["bounces.example.com"])
    assert verp.verify(change(verp.return_path("a@example.com", "01jd0000000000000000000000", 42))) is None


def test_another_secret_does_not_verify() -> None:
    address = Verp(SECRET, ["b.example"]).return_path("a@x", "01jd0000000000000000000000", 1)
    assert Verp(b"t" * 32, ["b.example"]).verify(address) is None


def test_aligned_bounce_domain_is_chosen() -> None:
    verp = Verp(SECRET, ["bounces.relay.example", "bounces.example.com", "example.org"])
    assert verp.domain_for("app@example.com") == "bounces.example.com"
    assert verp.domain_for("app@example.org") == "example.org"
    assert verp.domain_for("app@other.example") == "bounces.relay.example"
    assert verp.domain_for("") == "bounces.relay.example"


def test_secret_is_made_once_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "verp.key"
    first = load_secret(path)
    assert len(first) == 32 and load_secret(path) == first
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


@pytest.mark.parametrize("sender", ["", "<>", " <> "])
def test_the_null_sender_has_no_verp_return_path(sender: str) -> None:
    """RFC 5321 §4.5.5: mail from <> (a DSN, an auto-reply) keeps the null return path."""
    with pytest.raises(ValueError, match="null sender"):
        Verp(SECRET, ["bounces.example.com"]).return_path(sender, "01jd0000000000000000000000", 1)
