"""The HTTP API application: JSON errors, Bearer-key auth, and the route table.

Every error, ours or aiohttp's, reaches the client as
``{"error": {"code": ..., "message": ..., "field": ...}}``; an unexpected
exception is logged and answered with a 500 ``internal_error``, never a crash.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from relay.keys import ApiKey, looks_like_key
from relay.store import Store

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

STORE: web.AppKey[Store] = web.AppKey("store", Store)
API_KEY: web.RequestKey[ApiKey] = web.RequestKey("api_key", ApiKey)  # the authenticated key


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field


def error_response(status: int, code: str, message: str, field: str | None = None) -> web.Response:
    body: dict[str, Any] = {"code": code, "message": message}
    if field is not None:
        body["field"] = field
    return web.json_response({"error": body}, status=status)


_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.message, exc.field)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _STATUS_CODES.get(exc.status, "http_error")
        return error_response(exc.status, code, exc.reason)
    except Exception:
        log.exception("internal error on %s %s", request.method, request.path)
        return error_response(500, "internal_error", "internal error; the server log has details")


def require(scope: str) -> Callable[[Handler], Handler]:
    """Decorate a handler: a valid Bearer key with ``scope`` (or admin) is required."""

    def decorate(handler: Handler) -> Handler:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            key = await authenticate(request)
            if not key.allows(scope):
                raise ApiError(403, "missing_scope", f"this API key lacks the '{scope}' scope")
            request[API_KEY] = key
            return await handler(request)

        return wrapped

    return decorate


async def authenticate(request: web.Request) -> ApiKey:
    header = request.headers.get("Authorization", "")
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise ApiError(401, "unauthorized", "send an API key as 'Authorization: Bearer <key>'")
    secret = secret.strip()
    key = await request.app[STORE].authenticate(secret) if looks_like_key(secret) else None
    if key is None:
        raise ApiError(401, "unauthorized", "the API key is invalid or revoked")
    return key


async def read_json_object(request: web.Request) -> dict[str, Any]:
    if request.content_type != "application/json":
        raise ApiError(415, "unsupported_media_type", "send the body as 'Content-Type: application/json'")
    try:
        body = await request.read()
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_json", "the body must be a JSON object")
    return data


def make_app(store: Store, routes: list[web.RouteDef], max_body: int) -> web.Application:
    app = web.Application(middlewares=[errors_middleware], client_max_size=max_body)
    app[STORE] = store
    app.add_routes(routes)
    return app
