"""/v1/domains (scope ``domains``): sending domains, the records to publish, live verification."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from relay.api.app import ApiError, read_json_object, require
from relay.clock import iso
from relay.domains import Domain, DomainError, Domains, Policy, records


def domain_json(d: Domain, policy: Policy) -> dict[str, Any]:
    return {
        "id": d.id,
        "domain": d.name,
        "status": d.status,
        "created_at": iso(d.created_at),
        "checked_at": iso(d.checked_at),
        "verified_at": iso(d.verified_at),
        "dkim": [{"selector": k.selector, "state": k.state, "created_at": iso(k.created_at)} for k in d.keys],
        "records": [r.__dict__ for r in records(d, policy)],
        "outbound": {"ips": list(policy.outbound_ips), "note": policy.outbound_note},
        "checks": d.checks,
    }


def domain_name(data: dict[str, Any]) -> str:
    """The ``domain`` field of a request to add a domain (its syntax is Domains.add's to check)."""
    name = data.get("domain")
    if not isinstance(name, str):
        raise ApiError(400, "missing_field" if name is None else "invalid_field", "give 'domain'", "domain")
    return name


async def add_domain(domains: Domains, data: dict[str, Any]) -> Domain:
    """Add the domain a request names (a new DKIM key made); ApiError 400 or 409 as the API answers."""
    try:
        return await domains.add(domain_name(data))
    except DomainError as exc:
        status = 409 if "already" in str(exc) else 400
        raise ApiError(status, "conflict" if status == 409 else "invalid_field", str(exc), "domain") from None


async def call_domains(fn: Callable[[str], Awaitable[Domain]], ident: str) -> Domain:
    """``fn(ident)`` (get, verify, rotate, remove) with its DomainError as the API's 404 or 409."""
    try:
        return await fn(ident)
    except DomainError as exc:
        if str(exc).startswith("no sending domain"):
            raise ApiError(404, "not_found", str(exc)) from None
        raise ApiError(409, "conflict", str(exc)) from None


class DomainsView:
    def __init__(self, domains: Domains) -> None:
        self.domains = domains

    def routes(self) -> list[web.RouteDef]:
        scope = require("domains")
        return [
            web.post("/v1/domains", scope(self.create)),
            web.get("/v1/domains", scope(self.index)),
            web.get("/v1/domains/{id}", scope(self.show)),
            web.delete("/v1/domains/{id}", scope(self.delete)),
            web.get("/v1/domains/{id}/verify", scope(self.verify)),
            web.post("/v1/domains/{id}/verify", scope(self.verify)),
            web.post("/v1/domains/{id}/rotate-dkim", scope(self.rotate)),
        ]

    async def create(self, request: web.Request) -> web.Response:
        domain = await add_domain(self.domains, await read_json_object(request))
        return web.json_response(domain_json(domain, await self.domains.policy()), status=201)

    async def index(self, request: web.Request) -> web.Response:
        policy = await self.domains.policy()
        return web.json_response({"data": [domain_json(d, policy) for d in await self.domains.store.list_all()]})

    async def show(self, request: web.Request) -> web.Response:
        domain = await call_domains(self.domains.get, request.match_info["id"])
        return web.json_response(domain_json(domain, await self.domains.policy()))

    async def delete(self, request: web.Request) -> web.Response:
        domain = await call_domains(self.domains.remove, request.match_info["id"])
        return web.json_response({"id": domain.id, "domain": domain.name, "deleted": True})

    async def verify(self, request: web.Request) -> web.Response:
        """Run the DNS checks now; the result is stored with the domain."""
        domain = await call_domains(self.domains.verify, request.match_info["id"])
        return web.json_response(domain_json(domain, await self.domains.policy()))

    async def rotate(self, request: web.Request) -> web.Response:
        """A new DKIM key to publish next to the current one; it takes over when verify sees it."""
        domain = await call_domains(self.domains.rotate, request.match_info["id"])
        return web.json_response(domain_json(domain, await self.domains.policy()))
