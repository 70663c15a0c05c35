"""Pages from templates: one Jinja2 environment, autoescape on for every template, loaded from the package.

:func:`render` gives every template what the layout needs: the signed-in operator, ``can_change``
(false for a viewer: templates hide action buttons on it), the CSRF token for forms, and the nav.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
from typing import TYPE_CHECKING, Any

from aiohttp import web

from relay import __version__
from relay.dashboard.access import CSRF_FIELD, session_of
from relay.errors import Refused

if TYPE_CHECKING:
    import jinja2

NAV: web.AppKey[list[tuple[str, str]]] = web.AppKey("dashboard_nav", list)


@functools.cache
def environment() -> jinja2.Environment:
    import jinja2  # on the first page: a process that serves no page does not load it (~2 MB)

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("relay.dashboard", "templates"),
        autoescape=True,  # every template, whatever its name
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = when
    return env


def when(ts: float | None) -> str:
    """A time as pages show it: UTC to the second, "-" for none."""
    if ts is None:
        return "-"
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@dataclasses.dataclass(frozen=True)
class FormErrors:
    """A form's errors by field name ("" for the form as a whole), from a shared parser's refusal."""

    fields: dict[str, str] = dataclasses.field(default_factory=dict)

    @classmethod
    def of(cls, exc: Refused) -> FormErrors:
        """The refusal shown by its field (``scopes[1]`` → ``scopes``: a form has one field for the list)."""
        field = (exc.field or "").split("[", 1)[0]
        return cls({field: exc.http_message()})

    def __bool__(self) -> bool:
        return bool(self.fields)

    def get(self, field: str) -> str:
        return self.fields.get(field, "")


def render(request: web.Request, template: str, status: int = 200, **context: Any) -> web.Response:
    session = session_of(request)
    page = (
        environment()
        .get_template(template)
        .render(
            operator=session.operator if session else None,
            can_change=bool(session and session.operator.is_admin),
            csrf_field=CSRF_FIELD,
            csrf_token=session.csrf_token if session else context.pop("csrf_token", ""),
            nav=request.app[NAV] if session else [],
            path=request.path,
            version=__version__,
            status=status,
            errors=context.pop("errors", FormErrors()),
            **context,
        )
    )
    return web.Response(text=page, status=status, content_type="text/html", charset="utf-8")
