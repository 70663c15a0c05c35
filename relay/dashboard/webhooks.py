"""The Webhooks page: endpoints; create one (URL, events), send it a test event (status and latency shown),
its delivery log (paged), enable/disable, rotate its secret (the new one shown once), delete. Through the
API's code: relay.api.webhooks' parsing and the webhook sender's test send."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from multidict import MultiDictProxy

from relay.api.app import ApiError, page_limit
from relay.api.webhooks import (
    attempt_json,
    attempts_cursor,
    attempts_page,
    change_webhook,
    create_webhook,
    outcome_json,
    parse_webhook_fields,
    rotate_secret,
    webhook_json,
)
from relay.dashboard.access import admin, signed_in
from relay.dashboard.deps import DashboardDeps, deps
from relay.dashboard.domains import done, page_path
from relay.dashboard.pages import Page
from relay.dashboard.render import FormErrors, render
from relay.events import EVENT_TYPES
from relay.store.webhooks import Webhook
from relay.webhooks import WebhookSender

LOG_PAGE = 25  # delivery attempts per page of the log


def _sender(d: DashboardDeps) -> WebhookSender:
    if d.webhook_sender is None:
        raise web.HTTPServiceUnavailable(reason="webhooks are not available in this process")
    return d.webhook_sender


def webhook_request_from_form(form: MultiDictProxy[Any]) -> dict[str, Any]:
    """The form as the API's JSON body: url, events (checkboxes; none = every event), description."""
    return {
        "url": str(form.get("url", "")).strip(),
        "events": [str(e) for e in form.getall("events", [])],
        "description": str(form.get("description", "")),
    }


def tried_notice(result: dict[str, Any]) -> str:
    """What a test send did, in one line: the receiver's status (or the error) and the latency."""
    latency = f"{result['latency_ms']:g} ms"
    if result["status_code"] is None:
        return f"test event not delivered: {result['error']} (after {latency})"
    verdict = "accepted" if result["ok"] else "refused"
    return f"test event {verdict}: HTTP {result['status_code']} in {latency}"


@signed_in
async def index(request: web.Request) -> web.StreamResponse:
    return await _index(request, 200, {}, FormErrors())


async def _index(request: web.Request, status: int, values: dict[str, Any], errors: FormErrors) -> web.StreamResponse:
    store = deps(request).store.webhooks
    backlog = await store.webhook_backlog()
    hooks = [(webhook_json(h, backlog.get(h.id, 0)), page_path("webhooks", h.id)) for h in await store.list_all()]
    return render(
        request,
        "webhooks.html",
        status=status,
        hooks=hooks,
        event_types=EVENT_TYPES,
        values={"url": "", "events": [], "description": "", **values},
        errors=errors,
        done=request.query.get("done", ""),
    )


@admin
async def create(request: web.Request) -> web.StreamResponse:
    d = deps(request)
    data = webhook_request_from_form(await request.post())
    try:
        fields = await parse_webhook_fields(data, False, _sender(d).settings.allow_private_targets)
        hook = await create_webhook(d.store.webhooks, d.clock, fields)
    except ApiError as exc:
        return await _index(request, exc.http_status, data, FormErrors.of(exc))
    return await _show(request, hook, secret=hook.secret, notice="webhook created")


async def _hook(request: web.Request) -> Webhook:
    hook = await deps(request).store.webhooks.webhook(request.match_info["id"])
    if hook is None:
        raise web.HTTPNotFound(reason=f"no webhook {request.match_info['id']}")
    return hook


@signed_in
async def show(request: web.Request) -> web.StreamResponse:
    return await _show(request, await _hook(request), notice=request.query.get("done", ""))


async def _show(
    request: web.Request, hook: Webhook, secret: str = "", notice: str = "", errors: FormErrors | None = None
) -> web.StreamResponse:
    """The endpoint, its log (``?cursor=`` pages it), and a secret only right after it was made."""
    store = deps(request).store.webhooks
    try:
        limit = page_limit(request.query, LOG_PAGE, 500)
        attempts, cursor = await attempts_page(store, hook.id, limit, attempts_cursor(request.query))
    except ApiError as exc:
        raise web.HTTPBadRequest(reason=exc.message) from None
    backlog = (await store.webhook_backlog()).get(hook.id, 0)
    path = page_path("webhooks", hook.id)
    return render(
        request,
        "webhook.html",
        hook=webhook_json(hook, backlog),
        path_of=path,
        attempts=[attempt_json(a) for a in attempts],
        next_page=f"{path}?cursor={cursor}" if cursor else "",
        first_page=path if request.query.get("cursor") else "",
        secret=secret,
        done=notice,
        errors=errors or FormErrors(),
    )


@admin
async def send_test(request: web.Request) -> web.StreamResponse:
    hook = await _hook(request)
    outcome = await _sender(deps(request)).send_test(hook)
    raise done(page_path("webhooks", hook.id), tried_notice(outcome_json(outcome)))


@admin
async def set_enabled(request: web.Request) -> web.StreamResponse:
    d = deps(request)
    hook = await _hook(request)
    enabled = (await request.post()).get("enabled") == "true"
    fields = await parse_webhook_fields({"enabled": enabled}, True, _sender(d).settings.allow_private_targets)
    changed = await change_webhook(d.store.webhooks, _sender(d), hook.id, fields)
    if changed is None:
        raise web.HTTPNotFound(reason=f"no webhook {hook.id}")
    raise done(page_path("webhooks", hook.id), "webhook enabled" if changed.enabled else "webhook disabled")


@admin
async def rotate(request: web.Request) -> web.StreamResponse:
    hook = await rotate_secret(deps(request).store.webhooks, (await _hook(request)).id)
    if hook is None:
        raise web.HTTPNotFound(reason=f"no webhook {request.match_info['id']}")
    return await _show(request, hook, secret=hook.secret, notice="a new secret, in force now")


@admin
async def confirm_delete(request: web.Request) -> web.StreamResponse:
    hook = await _hook(request)
    return render(request, "webhook_delete.html", hook=webhook_json(hook), path_of=page_path("webhooks", hook.id))


@admin
async def delete(request: web.Request) -> web.StreamResponse:
    hook = await _hook(request)
    if not await deps(request).store.webhooks.delete_webhook(hook.id):
        raise web.HTTPNotFound(reason=f"no webhook {hook.id}")
    raise done(page_path("webhooks"), f"webhook to {hook.url} deleted")


PAGE = Page(
    "Webhooks",
    "/webhooks",
    [
        web.get("/webhooks", index),
        web.post("/webhooks", create),
        web.get("/webhooks/{id}", show),
        web.post("/webhooks/{id}/test", send_test),
        web.post("/webhooks/{id}/enabled", set_enabled),
        web.post("/webhooks/{id}/rotate", rotate),
        web.get("/webhooks/{id}/delete", confirm_delete),
        web.post("/webhooks/{id}/delete", delete),
    ],
)
