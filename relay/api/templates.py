"""/v1/templates (scope ``templates``): versions, rollback, preview, validation. Rendering a message's
template is the front door's (``relay.submission.http``)."""

from __future__ import annotations

import secrets
from typing import Any

from aiohttp import web

from relay.api.app import ROW_ID_LIMIT, ApiError, read_json_object, require
from relay.clock import iso
from relay.message import control_fault
from relay.renderer import Renderer
from relay.store.protocols import Storage
from relay.store.templates import Template, TemplateVersion
from relay.submission.http import render_message_fields, variables_of
from relay.templates import PARTS, check_syntax


def version_json(v: TemplateVersion) -> dict[str, Any]:
    return {
        "version": v.version,
        "subject": v.subject,
        "html": v.html,
        "text": v.text,
        "note": v.note,
        "created_at": iso(v.created_at),
    }


def template_json(t: Template) -> dict[str, Any]:
    return {
        "id": t.id,
        "name": t.name,
        "created_at": iso(t.created_at),
        "updated_at": iso(t.updated_at),
        **version_json(t.current),
    }


def _parts(data: dict[str, Any], partial: bool) -> dict[str, str | None]:
    parts = source_parts(data)
    if not partial and parts["html"] is None and parts["text"] is None:
        raise ApiError(400, "missing_field", "give 'html', 'text' or both", "html")
    problems = check_syntax(parts)
    if problems:
        p = problems[0]
        where = f" (line {p.line})" if p.line else ""
        raise ApiError(400, "template_syntax_error", f"{p.part}{where}: {p.message}", p.part)
    return parts


def template_name(data: dict[str, Any], required: bool) -> str | None:
    """The ``name`` field: 1-200 characters, stripped (None when not required and not given)."""
    name = data.get("name")
    if name is None and not required:
        return None
    if not isinstance(name, str) or not name.strip() or len(name) > 200 or control_fault(name):
        code = "missing_field" if name is None else "invalid_field"
        raise ApiError(400, code, "give 'name' (1-200 characters, no control character)", "name")
    return name.strip()


def source_parts(data: dict[str, Any]) -> dict[str, str | None]:
    """subject, html and text as given (None when absent), each a string."""
    parts: dict[str, str | None] = {}
    for part in PARTS:
        value = data.get(part)
        if value is not None and not isinstance(value, str):
            raise ApiError(400, "invalid_field", f"'{part}' must be a string", part)
        parts[part] = value
    return parts


def syntax_errors(parts: dict[str, str | None]) -> list[dict[str, Any]]:
    """Every syntax error of the parts, with its line number (what validate answers)."""
    return [{"field": p.part, "line": p.line, "message": p.message} for p in check_syntax(parts)]


async def create_template(store: Storage, data: dict[str, Any]) -> Template:
    """A new template (version 1) from a request's name, subject, html and text."""
    name = template_name(data, required=True)
    assert name is not None
    parts = _parts(data, partial=False)
    return await store.templates.create_template(
        f"tpl_{secrets.token_hex(8)}", name, parts["subject"] or "", parts["html"], parts["text"]
    )


async def update_template(store: Storage, current: Template, data: dict[str, Any]) -> Template:
    """A new version: fields left out keep their current value."""
    name = template_name(data, required=False)
    given = _parts(data, partial=True)
    merged = {p: given[p] if p in data else getattr(current.current, p) for p in PARTS}
    if merged["html"] is None and merged["text"] is None:
        raise ApiError(400, "missing_field", "a template needs 'html', 'text' or both", "html")
    template = await store.templates.update_template(
        current.id, name, merged["subject"] or "", merged["html"], merged["text"]
    )
    if template is None:
        raise ApiError(404, "not_found", f"no template {current.id}")
    return template


async def rollback_template(store: Storage, old: TemplateVersion) -> Template:
    """Make an old version current again, as a new version (history is never rewritten)."""
    template = await store.templates.update_template(
        old.template_id, None, old.subject, old.html, old.text, f"rollback to version {old.version}"
    )
    if template is None:
        raise ApiError(404, "not_found", f"no template {old.template_id}")
    return template


_ONE = "/v1/templates/{id:(?!validate$)[^{}/]+}"


class TemplatesView:
    def __init__(self, store: Storage, renderer: Renderer) -> None:
        self.store = store
        self.renderer = renderer

    def routes(self) -> list[web.RouteDef]:
        scope = require("templates")
        return [
            web.post("/v1/templates", scope(self.create)),
            web.get("/v1/templates", scope(self.index)),
            web.post("/v1/templates/validate", scope(self.validate)),
            # {id} never matches "validate", so that path answers only for POST.
            web.get(_ONE, scope(self.show)),
            web.put(_ONE, scope(self.update)),
            web.delete(_ONE, scope(self.delete)),
            web.get("/v1/templates/{id}/versions", scope(self.versions)),
            web.get("/v1/templates/{id}/versions/{version}", scope(self.version)),
            web.post("/v1/templates/{id}/versions/{version}/rollback", scope(self.rollback)),
            web.post("/v1/templates/{id}/preview", scope(self.preview)),
        ]

    async def _get(self, request: web.Request) -> Template:
        template = await self.store.templates.template(request.match_info["id"])
        if template is None:
            raise ApiError(404, "not_found", f"no template {request.match_info['id']}")
        return template

    async def _version(self, request: web.Request) -> TemplateVersion:
        template = await self._get(request)
        try:
            number = int(request.match_info["version"])
        except ValueError:
            number = 0
        if not 0 < number < ROW_ID_LIMIT:
            raise ApiError(404, "not_found", "versions are numbered 1, 2, ...")
        version = await self.store.templates.template_version(template.id, number)
        if version is None:
            raise ApiError(404, "not_found", f"template {template.id} has no version {number}")
        return version

    async def create(self, request: web.Request) -> web.Response:
        template = await create_template(self.store, await read_json_object(request))
        return web.json_response(template_json(template), status=201)

    async def index(self, request: web.Request) -> web.Response:
        return web.json_response({"data": [template_json(t) for t in await self.store.templates.list_all()]})

    async def show(self, request: web.Request) -> web.Response:
        return web.json_response(template_json(await self._get(request)))

    async def update(self, request: web.Request) -> web.Response:
        """A new version: fields left out keep their current value."""
        current = await self._get(request)
        template = await update_template(self.store, current, await read_json_object(request))
        return web.json_response(template_json(template))

    async def delete(self, request: web.Request) -> web.Response:
        if not await self.store.templates.delete_template(request.match_info["id"]):
            raise ApiError(404, "not_found", f"no template {request.match_info['id']}")
        return web.json_response({"id": request.match_info["id"], "deleted": True})

    async def versions(self, request: web.Request) -> web.Response:
        template = await self._get(request)
        versions = await self.store.templates.template_versions(template.id)
        return web.json_response({"current": template.version, "data": [version_json(v) for v in versions]})

    async def version(self, request: web.Request) -> web.Response:
        return web.json_response(version_json(await self._version(request)))

    async def rollback(self, request: web.Request) -> web.Response:
        """Make an old version current again, as a new version (history is never rewritten)."""
        template = await rollback_template(self.store, await self._version(request))
        return web.json_response(template_json(template))

    async def preview(self, request: web.Request) -> web.Response:
        """``{"variables": {...}, "version"?: n}`` → the rendered subject, html and text."""
        template = await self._get(request)
        data = await read_json_object(request)
        body = {"template_id": template.id, "template_version": data.get("version"), "variables": variables_of(data)}
        rendered = await render_message_fields(self.renderer, self.store, body)
        return web.json_response({"subject": rendered["subject"], "html": rendered["html"], "text": rendered["text"]})

    async def validate(self, request: web.Request) -> web.Response:
        """Syntax errors with line numbers, nothing saved."""
        errors = syntax_errors(source_parts(await read_json_object(request)))
        return web.json_response({"valid": not errors, "errors": errors})
