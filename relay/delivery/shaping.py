"""Which limits apply to a destination: defaults, a built-in table for big providers, operator overrides. Pure.

A destination *site* is the set of MX hosts a domain resolves to, so every
Google Workspace domain shares Gmail's limits. Overrides are keyed by
recipient domain (``"example.com"``) or by MX host suffix (``"google.com"``
matches ``aspmx.l.google.com``); ``"default"`` changes the defaults.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from relay.config import Shaping

# Conservative limits for the large mailbox providers, by MX host suffix.
# Operators override any of them with [delivery.shaping."<suffix>"].
PROVIDERS: dict[str, dict[str, Any]] = {
    "google.com": {"max_connections": 5, "max_messages_per_connection": 50},  # Gmail, Workspace
    "googlemail.com": {"max_connections": 5, "max_messages_per_connection": 50},
    "outlook.com": {"max_connections": 5, "max_messages_per_connection": 30},  # Outlook.com, Microsoft 365
    "yahoodns.net": {"max_connections": 3, "max_messages_per_connection": 20},  # Yahoo, AOL
    "icloud.com": {"max_connections": 3, "max_messages_per_connection": 20},  # Apple iCloud
    "mail.ru": {"max_connections": 3, "max_messages_per_connection": 20},
    "yandex.net": {"max_connections": 3, "max_messages_per_connection": 20},
    "gmx.net": {"max_connections": 3, "max_messages_per_connection": 20},  # GMX, web.de
}


def _matches_suffix(host: str, suffix: str) -> bool:
    host = host.lower().rstrip(".")
    return host == suffix or host.endswith("." + suffix)


def shaping_for(domain: str, mx_hosts: Sequence[str], overrides: Mapping[str, Mapping[str, Any]]) -> Shaping:
    """The limits for a recipient domain whose mail goes to ``mx_hosts``.

    Layers, each over the one before: defaults, ``default`` overrides, the
    built-in provider entry matching an MX host, an operator entry matching an
    MX host, an operator entry for the recipient domain itself.
    """
    shaping = Shaping().merged(overrides.get("default", {}))
    for table in (PROVIDERS, {k: v for k, v in overrides.items() if k != "default"}):
        for suffix, values in table.items():
            if any(_matches_suffix(h, suffix) for h in mx_hosts):
                shaping = shaping.merged(values)
                break
    return shaping.merged(overrides.get(domain.lower(), {}))


PUSHBACK = re.compile(
    r"too many (connections|messages|recipients|sessions)|rate.?limit|unusual rate|throttl|exceeded|"
    r"\b4\.7\.\d+\b.*(try again|later|slow down|temporar)",
    re.IGNORECASE,
)


def is_pushback(code: int | None, text: str) -> bool:
    """A receiver asking us to slow down: a 421, or a 4xx about rates and connections."""
    if code == 421:
        return True
    return code is not None and 400 <= code < 500 and PUSHBACK.search(text) is not None
