"""The resolver webhook requests connect with: only to addresses checked in the same lookup.

Apart from :mod:`relay.webhooks` so that a process that sends no webhook never imports aiohttp's client.
"""

from __future__ import annotations

import socket

from aiohttp.abc import AbstractResolver, ResolveResult

from relay.webhooks import Lookup, checked_addresses, system_lookup


class CheckedResolver(AbstractResolver):
    """aiohttp's resolver for webhook requests: the connection goes to an address that was checked in
    the same lookup, so a name cannot resolve to a public address for the check and to a private one
    for the connection (DNS rebinding). Literal addresses are checked by check_target."""

    def __init__(self, allow_private: bool, lookup: Lookup = system_lookup) -> None:
        self.allow_private = allow_private
        self.lookup = lookup

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        addresses = await checked_addresses(host, port, self.allow_private, self.lookup)
        return [
            ResolveResult(
                hostname=host,
                host=a,
                port=port,
                proto=0,
                flags=socket.AI_NUMERICHOST,
                family=socket.AF_INET6 if ":" in a else socket.AF_INET,
            )
            for a in addresses
        ]

    async def close(self) -> None:
        pass
