"""The HTTP API application: request ids, JSON errors, Bearer-key auth, the route table.

Every response carries ``X-Request-Id``. Every error, ours or aiohttp's, reaches
the client as ``{"error": {"code", "message", "field"?, "request_id"}}``; an
unexpected exception is logged and answered with a 500 ``internal_error``.
Paths match with or without a trailing slash. Field names are snake_case.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import random
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiohttp import hdrs, web
from aiohttp.typedefs import Middleware

from relay import strictjson
from relay.api.openapi import serve_document
from relay.clock import Clock, SystemClock
from relay.config import Rate
from relay.errors import Invalid, Refused, StoreError
from relay.keys import SCOPES, ApiKey, looks_like_key
from relay.ratelimit import Decision, Limiter
from relay.store.protocols import Storage
from relay.submission.budget import HTTP_WEIGHT, Held, InflightBudget

log = logging.getLogger(__name__)

_ids = random.Random()  # request ids need to be unique, not secret

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclasses.dataclass(frozen=True)
class ApiSettings:
    rate_limit: Rate
    limiter: Limiter  # in memory, or the store's counters (relay.ratelimit.limiter_for)
    trust_proxy: bool = False
    require_tls: bool = False
    clock: Clock = dataclasses.field(default_factory=SystemClock)  # the rate-limit windows' time


STORE: web.AppKey[Storage] = web.AppKey("store", Storage)
SETTINGS: web.AppKey[ApiSettings] = web.AppKey("settings", ApiSettings)
RATE: web.RequestKey[Decision] = web.RequestKey("rate", Decision)
API_KEY: web.RequestKey[ApiKey] = web.RequestKey("api_key", ApiKey)  # the authenticated key
REQUEST_ID: web.RequestKey[str] = web.RequestKey("request_id", str)


class ApiError(Invalid):
    """A refusal only the HTTP API makes (authentication, scope, not found …): status, code, message."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(code, message, field, http_status=status)
        self.headers = headers or {}

    def http_headers(self) -> dict[str, str]:
        return self.headers


def error_body(request: web.Request, code: str, message: str, field: str | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if field is not None:
        error["field"] = field
    error["request_id"] = request.get(REQUEST_ID, "")
    return {"error": error}


STORE_RETRY_AFTER = 5  # seconds a client is asked to wait while the queue database is unavailable


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
    request[REQUEST_ID] = f"req_{_ids.getrandbits(64):016x}"
    try:
        return await handler(request)
    except Refused as exc:  # any refusal, from the views or the front door (relay.errors)
        body = error_body(request, exc.code, exc.http_message(), exc.field)
        return web.json_response(body, status=exc.http_status, headers=exc.http_headers())
    except StoreError as exc:  # the database is down or restarting (a shared PostgreSQL): nothing was written
        log.warning("the store could not serve %s %s (%s): %s", request.method, request.path, request[REQUEST_ID], exc)
        body = error_body(request, "service_unavailable", "the queue database is unavailable; try again shortly")
        return web.json_response(body, status=503, headers={"Retry-After": str(STORE_RETRY_AFTER)})
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {hdrs.ALLOW: exc.headers[hdrs.ALLOW]} if hdrs.ALLOW in exc.headers else {}
        code = _STATUS_CODES.get(exc.status, "http_error")
        return web.json_response(error_body(request, code, exc.reason), status=exc.status, headers=headers)
    except Exception:
        log.exception("internal error on %s %s (%s)", request.method, request.path, request[REQUEST_ID])
        body = error_body(request, "internal_error", "internal error; the server log has details")
        return web.json_response(body, status=500)


async def _add_headers(request: web.Request, response: web.StreamResponse) -> None:
    if REQUEST_ID in request:
        response.headers["X-Request-Id"] = request[REQUEST_ID]
    if RATE in request:
        response.headers.update(request[RATE].headers())


def client_ip(request: web.Request, trust_proxy: bool) -> str:
    """The client's address: the peer, or the last X-Forwarded-For hop when behind a trusted proxy, if that hop
    is an IP address (anything else is not one a proxy wrote; it became a key of the rate counters, and a long
    one went over PostgreSQL's index row limit)."""
    if trust_proxy:
        forwarded = request.headers.get("X-Forwarded-For", "")
        hops = [h.strip() for h in forwarded.split(",") if h.strip()]
        if hops and _is_ip(hops[-1]):
            return hops[-1]
    return request.remote or ""


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def is_secure(request: web.Request, trust_proxy: bool) -> bool:
    if request.transport is not None and request.transport.get_extra_info("sslcontext") is not None:
        return True
    return trust_proxy and request.headers.get("X-Forwarded-Proto", "").lower() == "https"


def _is_loopback(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return False


def readable(request: web.Request, message: Any, what: str = "message") -> Any:
    """``message`` if the calling key may read it (README, "Keys and tenancy"), else 404 as if unknown."""
    key: ApiKey = request[API_KEY]
    if message is None or not key.may_read(message.api_key_id):
        raise ApiError(404, "not_found", f"no {what} {request.match_info['id']}")
    return message


def changeable(request: web.Request, message: Any) -> Any:
    """``message`` if the calling key may cancel or reschedule it: an admin key, or the key that sent it."""
    key: ApiKey = request[API_KEY]
    readable(request, message)  # a message the key may not read is not there for it (404)
    if not key.may_change(message.api_key_id):
        raise ApiError(403, "not_your_message", "only the key that sent a message (or an admin key) may change it")
    return message


def own_filter(request: web.Request) -> str | None:
    """The key id listings are limited to: the caller's, for a key that reads only its own messages."""
    key: ApiKey = request[API_KEY]
    return key.id if key.reads_only_own else None


def instance_wide(request: web.Request) -> None:
    """Figures over every key's mail are not for a key that reads only its own messages."""
    if request[API_KEY].reads_only_own:
        raise ApiError(
            403,
            "own_messages_only",
            "this key reads only its own messages; instance-wide figures need a key without own_messages",
        )


def require(scope: str) -> Callable[[Handler], Handler]:
    """Decorate a handler: a valid Bearer key with ``scope`` (or admin) is required."""

    def decorate(handler: Handler) -> Handler:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            request[API_KEY] = await authorize(request, scope)
            return await handler(request)

        wrapped.__name__ = handler.__name__
        wrapped.__doc__ = handler.__doc__
        wrapped.required_scope = scope  # type: ignore[attr-defined]
        return wrapped

    return decorate


async def authorize(request: web.Request, scope: str | None) -> ApiKey:
    """TLS policy → key → IP allowlist → rate limit → scope, each with its own error.

    Every request with a valid key from an allowed address counts against the key's rate limit and
    carries the X-RateLimit-* headers, a 403 for a missing scope included."""
    settings = request.app[SETTINGS]
    ip = client_ip(request, settings.trust_proxy)
    if settings.require_tls and not is_secure(request, settings.trust_proxy) and not _is_loopback(ip):
        raise ApiError(403, "tls_required", "this server accepts API requests over HTTPS only")
    key = await authenticate(request)
    if not key.allows_ip(ip):
        raise ApiError(403, "ip_not_allowed", f"this API key may not be used from {ip}")
    rate = Rate(key.rate_limit, 3600.0) if key.rate_limit else settings.rate_limit
    decision = await settings.limiter.hit(key.id, rate, settings.clock.now())
    request[RATE] = decision
    if scope is not None and not key.allows(scope):
        raise ApiError(403, "missing_scope", f"this API key lacks the '{scope}' scope")
    if not decision.allowed:
        raise ApiError(
            429,
            "rate_limited",
            f"rate limit of {rate.limit} requests per {int(rate.period)}s exceeded",
            headers=decision.headers(),
        )
    return key


async def authenticate(request: web.Request) -> ApiKey:
    header = request.headers.get("Authorization", "")
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise ApiError(401, "unauthorized", "send an API key as 'Authorization: Bearer <key>'")
    secret = secret.strip()
    key = await request.app[STORE].keys.authenticate(secret) if looks_like_key(secret) else None
    if key is None:
        raise ApiError(401, "unauthorized", "the API key is invalid or revoked")
    return key


# One past the largest integer SQLite and PostgreSQL (bigint) hold: a bigger number from a client
# overflows the database driver, so ids and cursors are checked against it before any query.
ROW_ID_LIMIT = 2**63


def row_cursor(text: str, field: str, message: str) -> int:
    """A listing's ``?cursor=`` that is a row id: an integer SQLite and PostgreSQL can compare (a bigger
    one overflowed the driver into a 500), else a 400 naming ``field`` with ``message``."""
    try:
        cursor = int(text)
    except ValueError:
        raise ApiError(400, "invalid_field", message, field) from None
    if not 0 <= cursor < ROW_ID_LIMIT:
        raise ApiError(400, "invalid_field", message, field)
    return cursor


def page_limit(query: Any, default: int, maximum: int) -> int:
    """``?limit=`` of a listing: an integer from 1 to ``maximum``, else a 400 naming it."""
    try:
        limit = int(query.get("limit", str(default)))
    except ValueError:
        raise ApiError(400, "invalid_field", "'limit' must be an integer", "limit") from None
    if not 1 <= limit <= maximum:
        raise ApiError(400, "invalid_field", f"'limit' must be between 1 and {maximum}", "limit")
    return limit


@dataclasses.dataclass(frozen=True)
class BodyBudget:
    budget: InflightBudget  # shared with SMTP ([server] max_inflight_bytes)
    max_body: int  # what a body without Content-Length may grow to ([http] max_body_size)


BODY_BUDGET: web.AppKey[BodyBudget] = web.AppKey("body_budget", BodyBudget)
HELD: web.RequestKey[Held] = web.RequestKey("held", Held)  # released when the request ends (ConnectionGuard)
BUSY_RETRY_AFTER = 5


async def read_body(request: web.Request) -> bytes:
    """The request body, its size taken from the bodies-in-memory budget first (held until the response is
    made): ``503 service_unavailable`` with Retry-After when there is no room within a moment."""
    limits = request.app.get(BODY_BUDGET)
    if limits is not None and HELD not in request and request.body_exists:
        size = min(limits.max_body, request.content_length or limits.max_body)  # more gets 413 on the way
        request[HELD] = held = Held(limits.budget, HTTP_WEIGHT)
        if not await held.take(size):
            log.warning("refused a request body of %d bytes: bodies in memory at [server] max_inflight_bytes", size)
            raise ApiError(
                503,
                "service_unavailable",
                "too many message bodies in memory right now; retry shortly",
                headers={"Retry-After": str(BUSY_RETRY_AFTER)},
            )
    try:
        return await request.read()
    except web.RequestPayloadError as exc:  # a Content-Encoding the body is not in, a broken chunk
        raise ApiError(400, "invalid_body", f"the body could not be read: {exc.args[0] if exc.args else exc}") from None


async def read_json_object(request: web.Request) -> dict[str, Any]:
    if request.content_type != "application/json":
        raise ApiError(415, "unsupported_media_type", "send the body as 'Content-Type: application/json'")
    try:
        body = await read_body(request)
        data = strictjson.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_json", "the body must be a JSON object")
    return data


async def healthz(request: web.Request) -> web.Response:
    """Liveness for load balancers; no auth."""
    return web.json_response({"status": "ok"})


async def list_scopes(request: web.Request) -> web.Response:
    await authorize(request, None)
    return web.json_response({"data": [{"name": s, "description": SCOPE_DOCS[s]} for s in SCOPES]})


SCOPE_DOCS = {
    "send": "submit messages",
    "read": "read messages, events and stats",
    "domains": "manage sending domains",
    "suppressions": "manage the suppression list",
    "templates": "manage templates",
    "webhooks": "manage webhooks",
    "admin": "everything, including API keys, SMTP credentials and settings",
}


def with_and_without_slash(routes: Iterable[web.RouteDef]) -> list[web.RouteDef]:
    """Each route also answers with a trailing slash (and without one, if declared with it)."""
    out: list[web.RouteDef] = []
    for r in routes:
        out.append(r)
        other = r.path[:-1] if r.path.endswith("/") and r.path != "/" else r.path + "/"
        out.append(web.RouteDef(r.method, other, r.handler, {**r.kwargs, "name": None}))
    return out


def make_app(
    store: Storage, settings: ApiSettings, routes: list[web.RouteDef], max_body: int, outer: Iterable[Middleware] = ()
) -> web.Application:
    """The application; ``outer`` middlewares run before the error handling (connection limits)."""
    app = web.Application(middlewares=[*outer, errors_middleware], client_max_size=max_body)
    app[STORE] = store
    app[SETTINGS] = settings
    app.on_response_prepare.append(_add_headers)
    base = [
        web.get("/healthz", healthz),
        web.get("/v1/scopes", list_scopes),
        web.get("/v1/openapi.json", serve_document),
    ]
    app.add_routes(with_and_without_slash([*base, *routes]))
    return app
