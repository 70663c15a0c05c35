"""Signing in and out: the login form (Username, Password), throttled per client address like SMTP AUTH."""

from __future__ import annotations

import logging

from aiohttp import web

from relay.api.app import client_ip
from relay.dashboard import access
from relay.dashboard.accounts import check_login
from relay.dashboard.deps import deps
from relay.dashboard.render import FormErrors, render

log = logging.getLogger(__name__)

WRONG = "wrong username or password"
THROTTLED = "too many failed sign-ins from your address: try again later"


async def login_form(request: web.Request) -> web.StreamResponse:
    if access.session_of(request) is not None:
        raise web.HTTPSeeOther(access.safe_next(request.query.get("next")))
    return _form(request, 200, "", request.query.get("next"), FormErrors())


def _form(
    request: web.Request, status: int, username: str, next_path: str | None, errors: FormErrors
) -> web.StreamResponse:
    response = web.Response()  # only to carry the login cookie onto the page
    csrf = access.login_csrf(request, response)
    page = render(
        request,
        "login.html",
        status=status,
        csrf_token=csrf,
        username=username,
        next=access.safe_next(next_path),
        errors=errors,
    )
    for cookie in response.cookies.values():
        page.cookies[cookie.key] = cookie
    return page


async def login(request: web.Request) -> web.StreamResponse:
    """Check the password (argon2, off the loop); the attempt counts as a failure until it succeeds, and the
    attempts from one address take turns (as SMTP AUTH's: relay.submission.auth)."""
    d = deps(request)
    form = await request.post()
    username, password = str(form.get("username", "")), str(form.get("password", ""))
    next_path = str(form.get("next", ""))
    key = f"dashboard:{client_ip(request, d.config.http.trust_proxy)}"
    async with d.login_turns.turn(key):
        now = d.clock.now()
        failures = await d.failures.attempt(key, now)
        if failures is None:
            log.warning("dashboard login refused for %s: too many failed attempts", key)
            return _form(request, 429, username, next_path, FormErrors({"": THROTTLED}))
        operator = await check_login(d.store.operators, username, password) if username and password else None
        if operator is None:
            log.warning("dashboard login failed for %r from %s (%d recent failures)", username[:64], key, failures)
            return _form(request, 401, username, next_path, FormErrors({"": WRONG}))
        await d.failures.succeeded(key, now)
    response = web.HTTPSeeOther(access.safe_next(next_path))
    await access.start_session(request, response, operator.id)
    log.info("dashboard login: %s (%s)", operator.name, operator.role)
    raise response


async def logout(request: web.Request) -> web.StreamResponse:
    response = web.HTTPSeeOther(access.LOGIN)
    await access.end_session(request, response)
    raise response


def routes() -> list[web.RouteDef]:
    return [web.get("/login", login_form), web.post("/login", login), web.post("/logout", logout)]
