"""Credentials: API keys and SMTP credentials, listed (never a secret), created (the secret shown on the
result page once) and revoked after a confirmation step; creating and revoking are for admins.

Forms are turned into the API's JSON request and checked by the API's parsers
(:func:`relay.api.keys.parse_key_request`, :func:`relay.api.credentials.parse_credential_request`); rows
are shaped by ``key_json`` / ``credential_json``, as ``GET /v1/api-keys`` and ``/v1/smtp-credentials`` are.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web
from multidict import MultiMapping

from relay.api.app import ApiError
from relay.api.credentials import credential_json, parse_credential_request
from relay.api.keys import key_json, parse_key_request
from relay.credentials import create_smtp_credential
from relay.dashboard.access import PREFIX, admin, signed_in
from relay.dashboard.deps import deps
from relay.dashboard.pages import Page
from relay.dashboard.render import FormErrors, render
from relay.keys import SCOPES, create_api_key

PATH = f"{PREFIX}/credentials"
_LIST = re.compile(r"[\s,]+")

Form = MultiMapping[Any]

# What each kind of credential is called on the pages, and its store calls.
KINDS = {
    "api-keys": "API key",
    "smtp": "SMTP credential",
}


def _words(form: Form, name: str) -> list[str]:
    """A list field typed as words separated by spaces or commas."""
    return [w for w in _LIST.split(str(form.get(name, ""))) if w]


def _number(form: Form, name: str) -> Any:
    """An optional number: None when empty, an int when it is one, else the text (the parser refuses it)."""
    text = str(form.get(name, "")).strip()
    if not text:
        return None
    return int(text) if text.isascii() and text.isdigit() else text  # "²" is a digit to isdigit, not to int()


def key_request(form: Form) -> dict[str, Any]:
    """The create-key form as ``POST /v1/api-keys`` takes it."""
    return {
        "name": str(form.get("name", "")).strip(),
        "scopes": [str(s) for s in form.getall("scopes", [])],
        "allowed_ips": _words(form, "allowed_ips"),
        "rate_limit": _number(form, "rate_limit"),
        "daily_quota": _number(form, "daily_quota"),
        "monthly_quota": _number(form, "monthly_quota"),
        "test": "test" in form,
        "own_messages": "own_messages" in form,
    }


def credential_request(form: Form) -> dict[str, Any]:
    """The create-credential form as ``POST /v1/smtp-credentials`` takes it."""
    return {
        "allowed_from": _words(form, "allowed_from"),
        "rate_limit": _number(form, "rate_limit"),
        "tags": _words(form, "tags"),
        "test": "test" in form,
    }


async def _listing(request: web.Request, status: int = 200, **context: Any) -> web.StreamResponse:
    store = deps(request).store
    keys = [key_json(k) for k in await store.keys.list_api_keys()]
    creds = [credential_json(c) for c in await store.credentials.list_smtp_credentials()]
    context.setdefault("key_form", {"scopes": ["send"]})
    context.setdefault("cred_form", {})
    context.setdefault("key_errors", FormErrors())
    context.setdefault("cred_errors", FormErrors())
    revoked = request.query.get("revoked", "")
    return render(
        request, "credentials.html", status=status, keys=keys, creds=creds, scopes=SCOPES, revoked=revoked, **context
    )


@signed_in
async def credentials_page(request: web.Request) -> web.StreamResponse:
    return await _listing(request)


@admin
async def create_key(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    data = key_request(form)
    try:
        fields = parse_key_request(data)
    except ApiError as exc:
        return await _listing(request, 400, key_errors=FormErrors.of(exc), key_form=data)
    d = deps(request)
    name, scopes = fields.pop("name"), fields.pop("scopes")
    key, secret = await create_api_key(d.store.keys, d.clock, name, scopes, **fields)
    return render(request, "secret.html", status=201, kind="API key", item=key_json(key), secret=secret)


@admin
async def create_credential(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    data = credential_request(form)
    try:
        fields = parse_credential_request(data)
    except ApiError as exc:
        return await _listing(request, 400, cred_errors=FormErrors.of(exc), cred_form=data)
    d = deps(request)
    cred, password = await create_smtp_credential(d.store.credentials, d.clock, **fields)
    item = credential_json(cred)
    return render(request, "secret.html", status=201, kind="SMTP credential", item=item, secret=password)


async def _find(request: web.Request) -> dict[str, Any]:
    """The key or credential of the path, shaped as the API shows it; 404 if there is none."""
    store = deps(request).store
    kind, ident = request.match_info["kind"], request.match_info["id"]
    if kind == "api-keys":
        key = await store.keys.api_key(ident)
        found = None if key is None else key_json(key)
    else:
        cred = await store.credentials.smtp_credential(ident)
        found = None if cred is None else credential_json(cred)
    if found is None:
        raise web.HTTPNotFound(reason=f"no {KINDS[kind]} {ident}")
    return found


@admin
async def confirm_revoke(request: web.Request) -> web.StreamResponse:
    """The confirmation step: what will stop working, and the button that does it."""
    item = await _find(request)
    kind = request.match_info["kind"]
    return render(request, "revoke.html", kind=KINDS[kind], item=item, action=f"{PATH}/{kind}/{item['id']}/revoke")


@admin
async def revoke(request: web.Request) -> web.StreamResponse:
    store = deps(request).store
    kind, ident = request.match_info["kind"], request.match_info["id"]
    if kind == "api-keys":
        done = await store.keys.revoke_api_key(ident)
    else:
        done = await store.credentials.revoke_smtp_credential(ident)
    if not done:
        raise web.HTTPNotFound(reason=f"no active {KINDS[kind]} {ident}")
    raise web.HTTPSeeOther(f"{PATH}?revoked={ident}")


_KIND = "{kind:api-keys|smtp}"

PAGE = Page(
    "Credentials",
    "/credentials",
    [
        web.get("/credentials", credentials_page),
        web.post("/credentials/api-keys", create_key),
        web.post("/credentials/smtp", create_credential),
        web.get(f"/credentials/{_KIND}/{{id}}/revoke", confirm_revoke),
        web.post(f"/credentials/{_KIND}/{{id}}/revoke", revoke),
    ],
)
