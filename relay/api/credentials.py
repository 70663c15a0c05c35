"""``/v1/smtp-credentials`` (admin scope): create (the password is shown once), list masked, revoke."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from relay.api.app import ApiError, read_json_object, require
from relay.api.keys import MAX_LIMIT, parse_test_flag
from relay.clock import Clock, iso
from relay.credentials import SmtpCredential, create_smtp_credential, valid_sender_rule
from relay.message import tag_fault
from relay.store.protocols import CredentialStore


def credential_json(cred: SmtpCredential) -> dict[str, Any]:
    return {
        "id": cred.id,
        "username": cred.username,
        "password": "********",
        "allowed_from": list(cred.allowed_from),
        "rate_limit": cred.rate_limit,
        "tags": list(cred.tags),
        "test": cred.test,
        "created_at": iso(cred.created_at),
        "last_used_at": iso(cred.last_used_at),
        "revoked_at": iso(cred.revoked_at),
    }


def parse_credential_request(data: dict[str, Any]) -> dict[str, Any]:
    allowed = data.get("allowed_from", [])
    if isinstance(allowed, str):
        allowed = [allowed]
    if not isinstance(allowed, list):
        raise ApiError(400, "invalid_field", "'allowed_from' must be a list of domains or addresses", "allowed_from")
    for index, rule in enumerate(allowed):
        if not isinstance(rule, str) or not valid_sender_rule(rule):
            raise ApiError(400, "invalid_field", f"{rule!r} is not a domain or an address", f"allowed_from[{index}]")
    rate = data.get("rate_limit")
    if rate is not None and (not isinstance(rate, int) or isinstance(rate, bool) or not 0 < rate <= MAX_LIMIT):
        raise ApiError(400, "invalid_field", f"'rate_limit' must be an integer from 1 to {MAX_LIMIT}", "rate_limit")
    tags = data.get("tags", [])
    if not isinstance(tags, list) or len(tags) > 10 or not all(isinstance(t, str) for t in tags):
        raise ApiError(400, "invalid_field", "'tags' must be a list of up to 10 strings", "tags")
    for index, tag in enumerate(tags):  # each goes on every message sent with the credential
        fault = tag_fault(tag)
        if fault is not None:
            raise ApiError(400, "invalid_field", f"'tags[{index}]': {fault}", f"tags[{index}]")
    return {
        "allowed_from": tuple(r.lower() for r in allowed),
        "rate_limit": rate,
        "tags": tuple(tags),
        "test": parse_test_flag(data),
    }


class CredentialsView:
    def __init__(self, store: CredentialStore, clock: Clock) -> None:
        self.store = store
        self.clock = clock

    def routes(self) -> list[web.RouteDef]:
        admin = require("admin")
        return [
            web.post("/v1/smtp-credentials", admin(self.create)),
            web.get("/v1/smtp-credentials", admin(self.index)),
            web.get("/v1/smtp-credentials/{id}", admin(self.show)),
            web.delete("/v1/smtp-credentials/{id}", admin(self.revoke)),
        ]

    async def create(self, request: web.Request) -> web.Response:
        fields = parse_credential_request(await read_json_object(request))
        cred, password = await create_smtp_credential(self.store, self.clock, **fields)
        return web.json_response({**credential_json(cred), "password": password}, status=201)

    async def index(self, request: web.Request) -> web.Response:
        return web.json_response({"data": [credential_json(c) for c in await self.store.list_smtp_credentials()]})

    async def show(self, request: web.Request) -> web.Response:
        cred = await self.store.smtp_credential(request.match_info["id"])
        if cred is None:
            raise ApiError(404, "not_found", f"no SMTP credential {request.match_info['id']}")
        return web.json_response(credential_json(cred))

    async def revoke(self, request: web.Request) -> web.Response:
        cred_id = request.match_info["id"]
        if not await self.store.revoke_smtp_credential(cred_id):
            raise ApiError(404, "not_found", f"no active SMTP credential {cred_id}")
        cred = await self.store.smtp_credential(cred_id)
        assert cred is not None
        return web.json_response(credential_json(cred))
