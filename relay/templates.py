"""Message templates: Jinja2 in its sandbox, with budgets. Pure apart from the clock.

``{{ name }}`` in the subject, the html and the text. The html is rendered
with autoescape (a variable holding ``<b>`` shows as text, not markup); the
subject and text are not escaped. A missing variable renders as an empty
string, and so does any attribute of it (``{{ user.name }}`` with no ``user``);
``{{ name | default("there") }}`` gives a fallback.

The sandbox refuses access to private and dunder attributes and to unsafe
callables. A render may not run longer than RENDER_SECONDS (the clock is read
at every template line, which a tracer counts, and at every call, filter and
operator) nor more than RENDER_STEPS lines, nor produce more than MAX_OUTPUT
characters per part; operations that could make a string or list longer than
that (repetition, padding, format widths, replace, join, to_bytes...) are
refused before they allocate. What no check here can stop (one call that runs
for minutes, an allocation not foreseen) is stopped by the render process this
runs in (relay.renderer): a memory limit, and a kill after the deadline.

The Jinja2 side is relay.template_sandbox, imported when a template is first checked or rendered.
"""

from __future__ import annotations

import dataclasses
import html as html_mod
import re
import time
from html.parser import HTMLParser
from typing import Any

from relay.errors import RelayError

PARTS = ("subject", "html", "text")
MAX_SOURCE = 512 * 1024  # characters per part
MAX_OUTPUT = 2 * 1024 * 1024  # characters per rendered part
RENDER_SECONDS = 1.0
RENDER_STEPS = 2_000_000  # template lines executed per render
MAX_RANGE = 10_000


class RenderError(RelayError, ValueError):
    """A template that cannot be rendered (a sandbox violation, a budget exceeded, a runtime error)."""

    def __init__(self, part: str, message: str) -> None:
        super().__init__(f"{part}: {message}")
        self.part = part
        self.message = message


class OutOfTime(RenderError):
    """The render ran past its time budget."""


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


def check_syntax(parts: dict[str, str | None]) -> list[SyntaxProblem]:
    """Every syntax error, with its line number, without rendering."""
    from relay.template_sandbox import check_syntax as problems  # jinja2, imported on first use

    return problems(parts)


def render(
    subject: str, html: str | None, text: str | None, variables: dict[str, Any], seconds: float = RENDER_SECONDS
) -> Rendered:
    """Render the three parts, in ``seconds`` at most for all of them; a text part is made from the html when
    there is none. Budgets are checked here; memory and a hard stop need a render process (relay.renderer)."""
    from relay.template_sandbox import render_part

    deadline = time.monotonic() + seconds  # real time, not relay.clock: it bounds the CPU a template may use

    def part(name: str, source: str) -> str:
        if time.monotonic() > deadline:
            raise OutOfTime(name, f"the template ran longer than {seconds:g}s")
        return render_part(name, source, variables, deadline, seconds)

    rendered_html = part("html", html) if html is not None else None
    rendered_text = part("text", text) if text is not None else None
    if rendered_text is None and rendered_html is not None:
        rendered_text = html_to_text(rendered_html)
    subject_text = " ".join(part("subject", subject).split())  # one line
    return Rendered(subject_text, rendered_html, rendered_text)


class _TextMaker(HTMLParser):
    # fmt: off
    BLOCK = {"p", "div", "br", "tr", "li", "h1", "h2", "h3", "h4", "h5", "h6", "table", "ul", "ol", "blockquote",
             "hr", "section", "article", "header", "footer"}
    # fmt: on
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
