"""Message templates: Jinja2 in its sandbox, with budgets. Pure apart from the clock.

``{{ name }}`` in the subject, the html and the text. The html is rendered
with autoescape (a variable holding ``<b>`` shows as text, not markup); the
subject and text are not escaped. A missing variable renders as an empty
string, and so does any attribute of it (``{{ user.name }}`` with no ``user``);
``{{ name | default("there") }}`` gives a fallback.

The sandbox refuses access to private and dunder attributes and to unsafe
callables. A render may not run longer than RENDER_SECONDS nor execute more
than RENDER_STEPS template lines (a tracer counts them), nor produce more
than MAX_OUTPUT characters per part, so no template can loop forever or
flood memory.
"""

from __future__ import annotations

import dataclasses
import functools
import html as html_mod
import re
import sys
import time
from html.parser import HTMLParser
from typing import Any

from jinja2 import ChainableUndefined, Template, TemplateSyntaxError
from jinja2.exceptions import SecurityError, TemplateError
from jinja2.sandbox import SandboxedEnvironment

PARTS = ("subject", "html", "text")
MAX_SOURCE = 512 * 1024  # characters per part
MAX_OUTPUT = 2 * 1024 * 1024  # characters per rendered part
RENDER_SECONDS = 1.0
RENDER_STEPS = 2_000_000  # template lines executed per render
MAX_RANGE = 10_000


class RenderError(ValueError):
    """A template that cannot be rendered (a sandbox violation, a budget exceeded, a runtime error)."""

    def __init__(self, part: str, message: str) -> None:
        super().__init__(f"{part}: {message}")
        self.part = part


@dataclasses.dataclass(frozen=True)
class SyntaxProblem:
    part: str
    line: int | None
    message: str


@dataclasses.dataclass(frozen=True)
class Rendered:
    subject: str
    html: str | None
    text: str | None


def _limited_range(*args: int) -> range:
    r = range(*args)
    if len(r) > MAX_RANGE:
        raise SecurityError(f"range() is limited to {MAX_RANGE} items in templates")
    return r


class _Sandbox(SandboxedEnvironment):
    """Also refuses ``"x" * 10**9`` and huge powers before computing them."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, int) and abs(right) > 1000:
            raise SecurityError("exponent too large in a template")
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(n, int) and len(seq) * n > MAX_OUTPUT:
                    raise SecurityError(f"a repetition would exceed {MAX_OUTPUT} characters")
        return super().call_binop(context, operator, left, right)


def _environment(autoescape: bool) -> SandboxedEnvironment:
    env = _Sandbox(autoescape=autoescape, undefined=ChainableUndefined, keep_trailing_newline=True)
    env.globals = {"range": _limited_range}  # nothing else from the outside world
    return env


_PLAIN = _environment(False)
_HTML = _environment(True)


def check_syntax(parts: dict[str, str | None]) -> list[SyntaxProblem]:
    """Every syntax error, with its line number, without rendering."""
    problems = []
    for part in PARTS:
        source = parts.get(part)
        if source is None:
            continue
        if len(source) > MAX_SOURCE:
            problems.append(SyntaxProblem(part, None, f"longer than {MAX_SOURCE} characters"))
            continue
        try:
            (_HTML if part == "html" else _PLAIN).parse(source)
        except TemplateSyntaxError as exc:
            problems.append(SyntaxProblem(part, exc.lineno, exc.message or str(exc)))
    return problems


class _Budget:
    """A tracer that counts template lines (frames compiled from templates) and watches the clock."""

    def __init__(self) -> None:
        self.steps = 0
        self.deadline = time.monotonic() + RENDER_SECONDS

    def __call__(self, frame: Any, event: str, arg: Any) -> Any:
        if event == "call":
            return self._local if frame.f_code.co_filename == "<template>" else None
        return None

    def _local(self, frame: Any, event: str, arg: Any) -> Any:
        if event == "line":
            self.steps += 1
            if self.steps > RENDER_STEPS:
                raise SecurityError(f"the template ran more than {RENDER_STEPS} steps")
            if self.steps % 4096 == 0 and time.monotonic() > self.deadline:
                raise SecurityError(f"the template ran longer than {RENDER_SECONDS:g}s")
        return self._local


@functools.lru_cache(maxsize=256)
def _compiled(autoescape: bool, source: str) -> Template:
    """Templates compile once (a personalised batch renders the same source hundreds of times)."""
    return (_HTML if autoescape else _PLAIN).from_string(source)


def _render_part(part: str, source: str, variables: dict[str, Any]) -> str:
    try:
        template = _compiled(part == "html", source)
    except TemplateSyntaxError as exc:
        raise RenderError(part, f"line {exc.lineno}: {exc.message}") from None
    budget = _Budget()
    previous = sys.gettrace()
    sys.settrace(budget)
    try:
        chunks, size = [], 0
        for chunk in template.generate(**variables):
            size += len(chunk)
            if size > MAX_OUTPUT:
                raise RenderError(part, f"renders to more than {MAX_OUTPUT} characters")
            chunks.append(chunk)
        return "".join(chunks)
    except RenderError:
        raise
    except TemplateSyntaxError as exc:
        raise RenderError(part, f"line {exc.lineno}: {exc.message}") from None
    except (TemplateError, SecurityError) as exc:
        raise RenderError(part, str(exc)) from None
    except (ArithmeticError, LookupError, TypeError, ValueError, RecursionError) as exc:
        raise RenderError(part, f"{type(exc).__name__}: {exc}") from None
    finally:
        sys.settrace(previous)


def render(subject: str, html: str | None, text: str | None, variables: dict[str, Any]) -> Rendered:
    """Render the three parts; a text part is made from the html when there is none."""
    rendered_html = _render_part("html", html, variables) if html is not None else None
    rendered_text = _render_part("text", text, variables) if text is not None else None
    if rendered_text is None and rendered_html is not None:
        rendered_text = html_to_text(rendered_html)
    subject_text = " ".join(_render_part("subject", subject, variables).split())  # one line
    return Rendered(subject_text, rendered_html, rendered_text)


class _TextMaker(HTMLParser):
    BLOCK = {"p", "div", "br", "tr", "li", "h1", "h2", "h3", "h4", "h5", "h6", "table", "ul", "ol", "blockquote",
             "hr", "section", "article", "header", "footer"}  # fmt: skip
    SKIP = {"style", "script", "head", "title"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.skipping = 0
        self.links: list[str | None] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.SKIP:
            self.skipping += 1
        elif tag in self.BLOCK:
            self.out.append("\n")
        if tag == "li":
            self.out.append("- ")
        if tag == "a":
            self.links.append(dict(attrs).get("href"))

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP:
            self.skipping = max(0, self.skipping - 1)
        elif tag in self.BLOCK:
            self.out.append("\n")
        if tag == "a" and self.links:
            href = self.links.pop()
            if href and not href.startswith(("mailto:", "#")):
                self.out.append(f" ({href})")

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self.out.append(re.sub(r"\s+", " ", data))


def html_to_text(html: str) -> str:
    """A readable plain-text version of an html body: blocks on their own lines, links with their URL."""
    maker = _TextMaker()
    maker.feed(html)
    maker.close()
    lines = [line.strip() for line in "".join(maker.out).splitlines()]
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
    return html_mod.unescape(text) + "\n"
