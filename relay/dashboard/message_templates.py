"""The Templates page: templates; create and edit (name, subject, html, text) with a preview from sample
variables, syntax errors with their line numbers, versions and rollback. Through the API's code: the parsing
of relay.api.templates, its syntax check, and the render processes (``deps.renderer``) the API's preview
renders through. The HTML preview is shown only in an iframe with ``sandbox=""`` (no script, no form, no
navigation; the page's Content-Security-Policy blocks remote images in it), the text as escaped text."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from aiohttp import web
from multidict import MultiDictProxy

from relay import strictjson
from relay.api.app import ROW_ID_LIMIT, ApiError
from relay.api.templates import (
    create_template,
    rollback_template,
    source_parts,
    syntax_errors,
    template_json,
    update_template,
    version_json,
)
from relay.dashboard.access import admin, signed_in
from relay.dashboard.deps import deps
from relay.dashboard.domains import done, page_path
from relay.dashboard.pages import Page
from relay.dashboard.render import FormErrors, render
from relay.errors import Refused
from relay.renderer import Renderer
from relay.store.templates import Template, TemplateVersion
from relay.submission.http import inline_to_render, render_bodies, variables_of
from relay.templates import PARTS

NO_VARIABLES = "{}"
LIST_PAGE = 50  # templates per page of the list
VERSIONS_PAGE = 20  # versions per page of a template's history


def template_request_from_form(form: MultiDictProxy[Any]) -> dict[str, Any]:
    """The form as the API's JSON body: name and subject as typed; an empty html or text is no such part."""
    data: dict[str, Any] = {"name": str(form.get("name", "")), "subject": str(form.get("subject", ""))}
    for part in ("html", "text"):
        value = str(form.get(part, "")).replace("\r\n", "\n")
        data[part] = value if value.strip() else None
    return data


def sample_variables(text: str) -> dict[str, Any]:
    """The sample variables typed as a JSON object (the API's ``variables``); a Refused naming the field."""
    try:
        parsed = strictjson.loads(text or NO_VARIABLES)
    except ValueError as exc:
        raise ApiError(400, "invalid_field", f"not valid JSON: {exc}", "variables") from None
    return variables_of({"variables": parsed})


def problems_by_part(errors: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Syntax errors as shown next to each field: "line 3: unexpected '}'"."""
    out: dict[str, list[str]] = {}
    for e in errors:
        where = f"line {e['line']}: " if e["line"] else ""
        out.setdefault(e["field"], []).append(where + e["message"])
    return out


async def preview(renderer: Renderer | None, data: dict[str, Any], variables: dict[str, Any]) -> dict[str, Any]:
    """The parts rendered with the variables, through the render processes as the API renders; the first
    render error as ``error`` instead."""
    if renderer is None:
        return {"error": "template rendering is not available in this process"}
    try:
        todo = inline_to_render({p: data.get(p) for p in PARTS}, variables)
        (body,) = await render_bodies(renderer, [todo])
    except Refused as exc:
        return {"error": exc.message}
    if isinstance(body, Refused):
        return {"error": body.message}
    return {"subject": body["subject"], "html": body["html"], "text": body["text"], "error": ""}


@signed_in
async def index(request: web.Request) -> web.StreamResponse:
    """A page of templates by name; ``?after=<id>`` the next one."""
    after = request.query.get("after") or None
    found = await deps(request).store.templates.template_page(LIST_PAGE + 1, after)
    rows = [(template_json(t), page_path("templates", t.id)) for t in found[:LIST_PAGE]]
    more = f"/dashboard/templates?after={quote(found[LIST_PAGE - 1].id, safe='')}" if len(found) > LIST_PAGE else ""
    return render(
        request,
        "templates.html",
        templates=rows,
        next_page=more,
        first_page="/dashboard/templates" if after else "",
        done=request.query.get("done", ""),
    )


def _before(request: web.Request) -> int | None:
    if not request.query.get("before"):
        return None
    try:
        before = int(request.query["before"])
    except ValueError:
        before = -1
    if not 0 <= before < ROW_ID_LIMIT:
        raise web.HTTPBadRequest(reason="'before' must be a version number")
    return before


async def _template(request: web.Request) -> Template:
    template = await deps(request).store.templates.template(request.match_info["id"])
    if template is None:
        raise web.HTTPNotFound(reason=f"no template {request.match_info['id']}")
    return template


def _values(template: Template | None, data: dict[str, Any] | None, variables: str) -> dict[str, str]:
    """What the form shows: what was typed, else the template's current version, else nothing."""
    if data is not None:
        shown = {k: data.get(k) or "" for k in ("name", *PARTS)}
    elif template is not None:
        shown = {"name": template.name, **{p: getattr(template.current, p) or "" for p in PARTS}}
    else:
        shown = {k: "" for k in ("name", *PARTS)}
    return {**shown, "variables": variables}


async def _editor(
    request: web.Request,
    template: Template | None,
    data: dict[str, Any] | None = None,
    variables: str = NO_VARIABLES,
    status: int = 200,
    errors: FormErrors | None = None,
    problems: list[dict[str, Any]] | None = None,
    rendered: dict[str, Any] | None = None,
) -> web.StreamResponse:
    versions: list[TemplateVersion] = []
    path = page_path("templates", template.id) if template else ""
    if template is not None:
        versions = await deps(request).store.templates.template_versions(
            template.id, VERSIONS_PAGE + 1, _before(request)
        )
    older = f"{path}?before={versions[VERSIONS_PAGE - 1].version}" if len(versions) > VERSIONS_PAGE else ""
    return render(
        request,
        "template.html",
        status=status,
        tpl=template_json(template) if template else None,
        path_of=path,
        action=path or page_path("templates"),
        values=_values(template, data, variables),
        versions=[(version_json(v), f"{path}/versions/{v.version}/rollback") for v in versions[:VERSIONS_PAGE]],
        older_versions=older,
        newest_versions=path if request.query.get("before") else "",
        problems=problems_by_part(problems or []),
        rendered=rendered,
        errors=errors or FormErrors(),
        done=request.query.get("done", ""),
    )


@admin
async def new(request: web.Request) -> web.StreamResponse:
    return await _editor(request, None)


@signed_in
async def show(request: web.Request) -> web.StreamResponse:
    return await _editor(request, await _template(request))


async def _checked(
    request: web.Request, template: Template | None
) -> tuple[dict[str, Any], str, web.StreamResponse | None]:
    """The form's fields, its variables text, and the page to answer with if they do not parse (else None)."""
    form = await request.post()
    data = template_request_from_form(form)
    variables = str(form.get("variables", NO_VARIABLES))
    try:
        problems = syntax_errors(source_parts(data))
    except ApiError as exc:
        return data, variables, await _editor(request, template, data, variables, 400, FormErrors.of(exc))
    if problems:
        return data, variables, await _editor(request, template, data, variables, 400, problems=problems)
    return data, variables, None


@admin
async def create(request: web.Request) -> web.StreamResponse:
    data, variables, refused = await _checked(request, None)
    if refused is not None:
        return refused
    try:
        template = await create_template(deps(request).store, data)
    except ApiError as exc:
        return await _editor(request, None, data, variables, exc.http_status, FormErrors.of(exc))
    raise done(page_path("templates", template.id), f"template {template.name} created (version 1)")


@admin
async def save(request: web.Request) -> web.StreamResponse:
    current = await _template(request)
    data, variables, refused = await _checked(request, current)
    if refused is not None:
        return refused
    try:
        template = await update_template(deps(request).store, current, data)
    except ApiError as exc:
        return await _editor(request, current, data, variables, exc.http_status, FormErrors.of(exc))
    raise done(page_path("templates", template.id), f"saved as version {template.version}")


@admin
async def show_preview(request: web.Request) -> web.StreamResponse:
    """The form rendered with its sample variables, not saved: JSON for templates.js (``format=json``, always
    200 with the errors in it), else the editor page with the preview (without JavaScript)."""
    form = await request.post()
    data = template_request_from_form(form)
    variables_text = str(form.get("variables", NO_VARIABLES))
    template = await _template(request) if "id" in request.match_info else None
    result: dict[str, Any] = {"errors": [], "variables_error": "", "error": "", "subject": "", "html": "", "text": ""}
    try:
        result["errors"] = syntax_errors(source_parts(data))
        variables = sample_variables(variables_text)
    except Refused as exc:
        result["variables_error" if exc.field == "variables" else "error"] = exc.message
        variables = None
    if variables is not None and not result["errors"]:
        result.update(await preview(deps(request).renderer, data, variables))
    if form.get("format") == "json":
        return web.json_response(result)
    errors = FormErrors({k: v for k, v in (("variables", result["variables_error"]), ("", result["error"])) if v})
    return await _editor(request, template, data, variables_text, 200, errors, result["errors"], result)


async def _version(request: web.Request) -> TemplateVersion:
    template = await _template(request)
    number = request.match_info["version"]
    version = await deps(request).store.templates.template_version(template.id, int(number))
    if version is None:
        raise web.HTTPNotFound(reason=f"template {template.id} has no version {number}")
    return version


@admin
async def confirm_rollback(request: web.Request) -> web.StreamResponse:
    template = await _template(request)
    version = await _version(request)
    path = page_path("templates", template.id)
    return render(
        request,
        "template_rollback.html",
        tpl=template_json(template),
        old=version_json(version),
        path_of=path,
        action=f"{path}/versions/{version.version}/rollback",
    )


@admin
async def rollback(request: web.Request) -> web.StreamResponse:
    old = await _version(request)
    template = await rollback_template(deps(request).store, old)
    notice = f"rolled back to version {old.version}: it is current again, as version {template.version}"
    raise done(page_path("templates", template.id), notice)


_VERSION = "/templates/{id}/versions/{version:[0-9]{1,9}}/rollback"

PAGE = Page(
    "Templates",
    "/templates",
    [
        web.get("/templates", index),
        web.post("/templates", create),
        web.get("/templates/new", new),
        web.post("/templates/preview", show_preview),
        web.get("/templates/{id}", show),
        web.post("/templates/{id}", save),
        web.post("/templates/{id}/preview", show_preview),
        web.get(_VERSION, confirm_rollback),
        web.post(_VERSION, rollback),
    ],
)
