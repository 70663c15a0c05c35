"""Who may see and do what on the dashboard: sessions, CSRF tokens, the login throttle, security headers.

* A session is a random token in the ``relay_session`` cookie (HttpOnly, SameSite=Strict, Secure over
  HTTPS); the store keeps only its SHA-256 (:mod:`relay.store.operators`) and ends it at its expiry.
* Every request that is not GET/HEAD carries a CSRF token, in the form field ``csrf_token`` or the
  ``X-CSRF-Token`` header: the session's, or, for the login form, the one of the ``relay_login`` cookie
  set with the form (double submit). Without it: 403.
* ``viewer`` reads every page but secrets and changes nothing: any POST of a viewer but logout is 403.
* Handlers are decorated: :func:`signed_in` (any operator; GETs without a session go to the login page)
  or :func:`admin` (admins only: actions, and pages showing secrets).
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from urllib.parse import quote

from aiohttp import web

from relay.api.app import is_secure
from relay.dashboard.accounts import new_token, token_digest
from relay.dashboard.deps import DEPS
from relay.store.operators import OperatorSession

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

PREFIX = "/dashboard"
HOME = f"{PREFIX}/"
LOGIN = f"{PREFIX}/login"
LOGOUT = f"{PREFIX}/logout"
SESSION_COOKIE = "relay_session"
LOGIN_COOKIE = "relay_login"  # the CSRF token of the login form, before there is a session
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD"})

SESSION: web.RequestKey[OperatorSession | None] = web.RequestKey("dashboard_session", OperatorSession)

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-src 'self';"
    " frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def session_of(request: web.Request) -> OperatorSession | None:
    return request.get(SESSION)


def safe_next(value: str | None) -> str:
    """Where to go after login: a path of the dashboard, else its home (never another site)."""
    if value and value.startswith(HOME) and "\\" not in value and value.isprintable():
        return value
    return HOME


def login_url(next_path: str) -> str:
    return f"{LOGIN}?next={quote(safe_next(next_path), safe='/')}"


async def load_session(request: web.Request) -> OperatorSession | None:
    token = request.cookies.get(SESSION_COOKIE)
    if not token or len(token) > 128:
        return None
    return await request.app[DEPS].store.operators.session(token_digest(token))


def _cookie(response: web.StreamResponse, request: web.Request, name: str, value: str, max_age: float) -> None:
    response.set_cookie(
        name,
        value,
        max_age=int(max_age),
        path=PREFIX,
        httponly=True,
        samesite="Strict",
        secure=is_secure(request, request.app[DEPS].config.http.trust_proxy),
    )


async def start_session(request: web.Request, response: web.StreamResponse, operator_id: str) -> None:
    """Sign ``operator_id`` in: a new session stored (its digest) and its token set in the cookie."""
    deps = request.app[DEPS]
    token = new_token()
    lifetime = deps.config.dashboard.session_lifetime
    await deps.store.operators.start_session(operator_id, token_digest(token), new_token(), lifetime)
    _cookie(response, request, SESSION_COOKIE, token, lifetime)
    response.del_cookie(LOGIN_COOKIE, path=PREFIX)


async def end_session(request: web.Request, response: web.StreamResponse) -> None:
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        await request.app[DEPS].store.operators.end_session(token_digest(token))
    response.del_cookie(SESSION_COOKIE, path=PREFIX)


def login_csrf(request: web.Request, response: web.StreamResponse) -> str:
    """The login form's CSRF token: the one of its cookie, or a new one set in it."""
    token = request.cookies.get(LOGIN_COOKIE)
    if not token or len(token) > 128:
        token = new_token()
        _cookie(response, request, LOGIN_COOKIE, token, 3600)
    return token


async def csrf_ok(request: web.Request) -> bool:
    """Whether a state-changing request carries the CSRF token it must (see the module docstring)."""
    session = session_of(request)
    if request.path == LOGIN or session is None:
        expected = request.cookies.get(LOGIN_COOKIE) if request.path == LOGIN else None
    else:
        expected = session.csrf_token
    provided = request.headers.get(CSRF_HEADER)
    if provided is None and request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        value = (await request.post()).get(CSRF_FIELD)
        provided = value if isinstance(value, str) else None
    return bool(expected and provided) and hmac.compare_digest(str(expected), str(provided))


def viewer_may(request: web.Request) -> bool:
    """A viewer changes nothing: of the state-changing requests it may only sign out."""
    session = session_of(request)
    return request.method in SAFE_METHODS or session is None or session.operator.is_admin or request.path == LOGOUT


def signed_in(handler: Handler) -> Handler:
    """Decorate a page: any signed-in operator; a GET without a session goes to the login page first."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        if session_of(request) is None:
            if request.method in SAFE_METHODS:
                raise web.HTTPSeeOther(login_url(request.path_qs))
            raise web.HTTPForbidden(reason="sign in first")
        return await handler(request)

    wrapped.__name__ = handler.__name__
    wrapped.__doc__ = handler.__doc__
    return wrapped


def admin(handler: Handler) -> Handler:
    """Decorate an action (or a page showing a secret): admins only; a viewer gets 403."""

    @signed_in
    async def wrapped(request: web.Request) -> web.StreamResponse:
        session = session_of(request)
        assert session is not None
        if not session.operator.is_admin:
            raise web.HTTPForbidden(reason="a viewer cannot change anything or see secrets")
        return await handler(request)

    wrapped.__name__ = handler.__name__
    wrapped.__doc__ = handler.__doc__
    return wrapped
