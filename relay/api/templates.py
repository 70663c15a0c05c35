"""/v1/templates (scope ``templates``): versions, rollback, preview, validation; rendering for messages."""

from __future__ import annotations

import dataclasses
import secrets
from typing import Any

from aiohttp import web

from relay.api.app import ApiError, read_json_object, require
from relay.clock import iso
from relay.renderer import Job, Renderer, RendererBusy, Source
from relay.store import Store
from relay.store.templates import Template, TemplateVersion
from relay.templates import PARTS, RenderError, check_syntax


def version_json(v: TemplateVersion) -> dict[str, Any]:
    return {"version": v.version, "subject": v.subject, "html": v.html, "text": v.text, "note": v.note,
            "created_at": iso(v.created_at)}  # fmt: skip


def template_json(t: Template) -> dict[str, Any]:
    return {"id": t.id, "name": t.name, "created_at": iso(t.created_at), "updated_at": iso(t.updated_at),
            **version_json(t.current)}  # fmt: skip


def _parts(data: dict[str, Any], partial: bool) -> dict[str, str | None]:
    parts: dict[str, str | None] = {}
    for part in PARTS:
        value = data.get(part)
        if value is not None and not isinstance(value, str):
            raise ApiError(400, "invalid_field", f"'{part}' must be a string", part)
        parts[part] = value
    if not partial and parts["html"] is None and parts["text"] is None:
        raise ApiError(400, "missing_field", "give 'html', 'text' or both", "html")
    problems = check_syntax(parts)
    if problems:
        p = problems[0]
        where = f" (line {p.line})" if p.line else ""
        raise ApiError(400, "template_syntax_error", f"{p.part}{where}: {p.message}", p.part)
    return parts


def _variables(data: dict[str, Any], field: str = "variables") -> dict[str, Any]:
    variables = data.get(field, {})
    if variables is None:
        return {}
    if not isinstance(variables, dict):
        raise ApiError(400, "invalid_field", f"'{field}' must be an object", field)
    return variables


@dataclasses.dataclass(frozen=True)
class ToRender:
    """A message body waiting for its subject, html and text to be rendered."""

    data: dict[str, Any]
    source: Source
    variables: dict[str, Any]
    where: str


async def to_render(store: Store, data: dict[str, Any], variables: dict[str, Any] | None = None,
                    where: str = "") -> ToRender | None:  # fmt: skip
    """A message body that names ``template_id``: its template and variables (None without template_id)."""
    if data.get("template_id") is None:
        return None
    template_id = data["template_id"]
    if any(data.get(p) is not None for p in PARTS):
        raise ApiError(400, "invalid_field", "give either template_id or subject/html/text", f"{where}template_id")
    if not isinstance(template_id, str):
        raise ApiError(400, "invalid_field", "'template_id' must be a string", f"{where}template_id")
    number = data.get("template_version")
    if number is not None and (not isinstance(number, int) or isinstance(number, bool)):
        raise ApiError(400, "invalid_field", "'template_version' must be an integer", f"{where}template_version")
    template = await store.templates.template(template_id)
    if template is None:
        raise ApiError(400, "invalid_field", f"no template {template_id}", f"{where}template_id")
    version = template.current if number is None else await store.templates.template_version(template_id, number)
    if version is None:
        raise ApiError(400, "invalid_field", f"template {template_id} has no version {number}",
                       f"{where}template_version")  # fmt: skip
    values = variables if variables is not None else _variables(data)
    return ToRender(data, Source(version.subject, version.html, version.text), values, where)


def inline_to_render(data: dict[str, Any], variables: dict[str, Any], where: str = "") -> ToRender:
    """A personalised batch without a stored template: the subject, html and text are themselves templates."""
    problems = check_syntax({p: data.get(p) if isinstance(data.get(p), str) else None for p in PARTS})
    if problems:
        p = problems[0]
        raise ApiError(400, "template_syntax_error", f"{p.part} (line {p.line}): {p.message}", f"message.{p.part}")
    subject, html, text = (data.get(p) for p in PARTS)
    source = Source(subject if isinstance(subject, str) else "", html if isinstance(html, str) else None,
                    text if isinstance(text, str) else None)  # fmt: skip
    return ToRender(data, source, variables, where)


async def render_bodies(renderer: Renderer, todo: list[ToRender]) -> list[dict[str, Any] | ApiError]:
    """Every body rendered, in one task for the render processes (each distinct template sent once); a render
    that fails is that body's ``template_render_failed``. Raises ApiError 503 when no render process is free."""
    index: dict[Source, int] = {}
    jobs = [Job(index.setdefault(t.source, len(index)), t.variables) for t in todo]
    try:
        results = await renderer.render_many(list(index), jobs)
    except RendererBusy as exc:
        raise ApiError(503, "service_unavailable", str(exc), headers={"Retry-After": "5"}) from None
    out: list[dict[str, Any] | ApiError] = []
    for t, r in zip(todo, results, strict=True):
        if isinstance(r, RenderError):
            out.append(ApiError(400, "template_render_failed", str(r), f"{t.where}variables"))
        else:
            out.append({**t.data, "template_id": None, "subject": r.subject, "html": r.html, "text": r.text})
    return out


async def render_message_fields(renderer: Renderer, store: Store, data: dict[str, Any],
                                variables: dict[str, Any] | None = None,
                                where: str = "") -> dict[str, Any]:  # fmt: skip
    """A message body that names ``template_id``: the same body with subject, html and text rendered."""
    todo = await to_render(store, data, variables, where)
    if todo is None:
        return data
    (body,) = await render_bodies(renderer, [todo])
    if isinstance(body, ApiError):
        raise body
    return body


BatchItem = tuple[dict[str, Any], dict[str, Any] | None, str]  # body, personal variables, field prefix


async def render_batch(renderer: Renderer, store: Store, items: list[BatchItem]) -> list[dict[str, Any] | ApiError]:
    """Each item's body with its templates rendered (items without one unchanged), or that item's error."""
    todo: list[ToRender | dict[str, Any] | ApiError] = []
    for item, variables, where in items:
        try:
            if variables is not None and item.get("template_id") is None:
                todo.append(inline_to_render(item, variables, where))
            else:
                todo.append(await to_render(store, item, variables, where) or item)
        except ApiError as exc:
            todo.append(exc)
    rendered = iter(await render_bodies(renderer, [t for t in todo if isinstance(t, ToRender)]))
    return [next(rendered) if isinstance(t, ToRender) else t for t in todo]


_ONE = "/v1/templates/{id:(?!validate$)[^{}/]+}"


class TemplatesView:
    def __init__(self, store: Store, renderer: Renderer) -> None:
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
            raise ApiError(404, "not_found", "versions are numbered 1, 2, ...") from None
        version = await self.store.templates.template_version(template.id, number)
        if version is None:
            raise ApiError(404, "not_found", f"template {template.id} has no version {number}")
        return version

    @staticmethod
    def _name(data: dict[str, Any], required: bool) -> str | None:
        name = data.get("name")
        if name is None and not required:
            return None
        if not isinstance(name, str) or not name.strip() or len(name) > 200:
            raise ApiError(400, "missing_field" if name is None else "invalid_field", "give 'name' (1-200 characters)",
                           "name")  # fmt: skip
        return name.strip()

    async def create(self, request: web.Request) -> web.Response:
        data = await read_json_object(request)
        name = self._name(data, required=True)
        assert name is not None
        parts = _parts(data, partial=False)
        template = await self.store.templates.create_template(f"tpl_{secrets.token_hex(8)}", name,
                                                              parts["subject"] or "", parts["html"],
                                                              parts["text"])  # fmt: skip
        return web.json_response(template_json(template), status=201)

    async def index(self, request: web.Request) -> web.Response:
        return web.json_response({"data": [template_json(t) for t in await self.store.templates.list_all()]})

    async def show(self, request: web.Request) -> web.Response:
        return web.json_response(template_json(await self._get(request)))

    async def update(self, request: web.Request) -> web.Response:
        """A new version: fields left out keep their current value."""
        current = await self._get(request)
        data = await read_json_object(request)
        name = self._name(data, required=False)
        given = _parts(data, partial=True)
        merged = {p: given[p] if p in data else getattr(current.current, p) for p in PARTS}
        if merged["html"] is None and merged["text"] is None:
            raise ApiError(400, "missing_field", "a template needs 'html', 'text' or both", "html")
        template = await self.store.templates.update_template(current.id, name, merged["subject"] or "", merged["html"],
                                                    merged["text"])  # fmt: skip
        assert template is not None
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
        old = await self._version(request)
        template = await self.store.templates.update_template(old.template_id, None, old.subject, old.html, old.text,
                                                    f"rollback to version {old.version}")  # fmt: skip
        assert template is not None
        return web.json_response(template_json(template))

    async def preview(self, request: web.Request) -> web.Response:
        """``{"variables": {...}, "version"?: n}`` → the rendered subject, html and text."""
        template = await self._get(request)
        data = await read_json_object(request)
        body = {"template_id": template.id, "template_version": data.get("version"),
                "variables": _variables(data)}  # fmt: skip
        rendered = await render_message_fields(self.renderer, self.store, body)
        return web.json_response({"subject": rendered["subject"], "html": rendered["html"], "text": rendered["text"]})

    async def validate(self, request: web.Request) -> web.Response:
        """Syntax errors with line numbers, nothing saved."""
        data = await read_json_object(request)
        parts = {}
        for part in PARTS:
            value = data.get(part)
            if value is not None and not isinstance(value, str):
                raise ApiError(400, "invalid_field", f"'{part}' must be a string", part)
            parts[part] = value
        problems = check_syntax(parts)
        return web.json_response({"valid": not problems, "errors": [
            {"field": p.part, "line": p.line, "message": p.message} for p in problems]})  # fmt: skip
