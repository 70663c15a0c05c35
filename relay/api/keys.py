"""``/v1/api-keys`` (admin scope): create (the secret is shown once), list, show, revoke."""

from __future__ import annotations

import ipaddress
from typing import Any

from aiohttp import web

from relay.api.app import ApiError, read_json_object, require
from relay.clock import Clock, iso
from relay.keys import SCOPES, ApiKey, create_api_key
from relay.message import control_fault
from relay.store.protocols import KeyStore

MAX_LIMIT = 10**12


def key_json(key: ApiKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "name": key.name,
        "scopes": list(key.scopes),
        "allowed_ips": list(key.allowed_ips),
        "rate_limit": key.rate_limit,
        "daily_quota": key.daily_quota,
        "monthly_quota": key.monthly_quota,
        "test": key.test,
        "created_at": iso(key.created_at),
        "last_used_at": iso(key.last_used_at),
        "revoked_at": iso(key.revoked_at),
    }


def _optional_positive_int(data: dict[str, Any], field: str) -> int | None:
    value = data.get(field)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= MAX_LIMIT:
        raise ApiError(400, "invalid_field", f"'{field}' must be an integer from 1 to {MAX_LIMIT}", field)
    return value


def parse_test_flag(data: dict[str, Any]) -> bool:
    """``"test": true``: a test key or credential, whose mail is captured in the sandbox, never delivered."""
    test = data.get("test", False)
    if not isinstance(test, bool):
        raise ApiError(400, "invalid_field", "'test' must be true or false", "test")
    return test


def parse_key_request(data: dict[str, Any]) -> dict[str, Any]:
    name = data.get("name", "default")
    if not isinstance(name, str) or not 1 <= len(name) <= 100 or control_fault(name):
        raise ApiError(
            400, "invalid_field", "'name' must be a string of 1-100 characters, no control character", "name"
        )
    scopes = data.get("scopes", ["send"])
    if not isinstance(scopes, list) or not scopes:
        raise ApiError(400, "invalid_field", "'scopes' must be a non-empty list", "scopes")
    for index, scope in enumerate(scopes):
        if scope not in SCOPES:
            raise ApiError(400, "invalid_field", f"unknown scope {scope!r}; see GET /v1/scopes", f"scopes[{index}]")
    ips = data.get("allowed_ips", [])
    if not isinstance(ips, list):
        raise ApiError(400, "invalid_field", "'allowed_ips' must be a list of CIDRs", "allowed_ips")
    for index, cidr in enumerate(ips):
        try:
            ipaddress.ip_network(cidr, strict=False)
        except (TypeError, ValueError):
            raise ApiError(400, "invalid_field", f"{cidr!r} is not an IP network", f"allowed_ips[{index}]") from None
    return {
        "name": name,
        "scopes": tuple(dict.fromkeys(scopes)),
        "allowed_ips": tuple(str(ipaddress.ip_network(c, strict=False)) for c in ips),
        "rate_limit": _optional_positive_int(data, "rate_limit"),
        "daily_quota": _optional_positive_int(data, "daily_quota"),
        "monthly_quota": _optional_positive_int(data, "monthly_quota"),
        "test": parse_test_flag(data),
        "own_messages": _flag(data, "own_messages"),
    }


def _flag(data: dict[str, Any], name: str) -> bool:
    value = data.get(name, False)
    if not isinstance(value, bool):
        raise ApiError(400, "invalid_field", f"'{name}' must be true or false", name)
    return value


class KeysView:
    def __init__(self, store: KeyStore, clock: Clock) -> None:
        self.store = store
        self.clock = clock

    def routes(self) -> list[web.RouteDef]:
        admin = require("admin")
        return [
            web.post("/v1/api-keys", admin(self.create)),
            web.get("/v1/api-keys", admin(self.index)),
            web.get("/v1/api-keys/{id}", admin(self.show)),
            web.delete("/v1/api-keys/{id}", admin(self.revoke)),
        ]

    async def create(self, request: web.Request) -> web.Response:
        fields = parse_key_request(await read_json_object(request))
        name, scopes = fields.pop("name"), fields.pop("scopes")
        key, secret = await create_api_key(self.store, self.clock, name, scopes, **fields)
        return web.json_response({**key_json(key), "key": secret}, status=201)

    async def index(self, request: web.Request) -> web.Response:
        return web.json_response({"data": [key_json(k) for k in await self.store.list_api_keys()]})

    async def show(self, request: web.Request) -> web.Response:
        key = await self.store.api_key(request.match_info["id"])
        if key is None:
            raise ApiError(404, "not_found", f"no API key {request.match_info['id']}")
        return web.json_response(key_json(key))

    async def revoke(self, request: web.Request) -> web.Response:
        key_id = request.match_info["id"]
        if not await self.store.revoke_api_key(key_id):
            raise ApiError(404, "not_found", f"no active API key {key_id}")
        key = await self.store.api_key(key_id)
        assert key is not None
        return web.json_response(key_json(key))
