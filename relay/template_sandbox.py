"""The Jinja2 side of message templates (relay.templates): the sandbox, its budgets, parsing and rendering.

Apart from relay.templates so that jinja2 (~2 MB a process) is imported by a process only when it first
checks or renders a template: a process that accepts mail loads it on the first template sent or
saved, a render process when it starts. Pure apart from the clock.
"""

from __future__ import annotations

import functools
import re
import string
import sys
import time
from typing import Any, NoReturn

from jinja2 import ChainableUndefined, Template, TemplateSyntaxError
from jinja2.exceptions import SecurityError, TemplateError
from jinja2.sandbox import SandboxedEnvironment

from relay.templates import (
    MAX_OUTPUT,
    MAX_RANGE,
    MAX_SOURCE,
    PARTS,
    RENDER_STEPS,
    OutOfTime,
    RenderError,
    SyntaxProblem,
)


class _OutOfTime(SecurityError):
    pass


def _limited_range(*args: int) -> range:
    r = range(*args)
    if len(r) > MAX_RANGE:
        raise SecurityError(f"range() is limited to {MAX_RANGE} items in templates")
    return r


def _too_big(size: int, what: str) -> None:
    """Refuse, before it is made, a string or list longer than MAX_OUTPUT."""
    if size > MAX_OUTPUT:
        raise SecurityError(f"{what} would make more than {MAX_OUTPUT} characters (or items)")


def _check_width(width: Any, what: str) -> None:
    if isinstance(width, int):
        _too_big(width, what)


def _check_count(n: Any, what: str) -> None:
    if isinstance(n, int) and n > MAX_RANGE:
        raise SecurityError(f"{what} is limited to {MAX_RANGE} in templates")


def _check_replace(s: Any, old: Any, new: Any, count: Any = None) -> None:
    s, old, new = str(s), str(old), str(new)
    if len(new) <= len(old):
        return
    n = len(s) + 1 if old == "" else s.count(old)
    if isinstance(count, int) and count >= 0:
        n = min(n, count)
    _too_big(len(s) + n * (len(new) - len(old)), "replace()")


def _check_join(separator: Any, items: list[Any]) -> None:
    _too_big(len(separator) * max(0, len(items) - 1), "join()")


_PERCENT = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?")


def _big_ints(values: Any) -> bool:
    items = values.values() if isinstance(values, dict) else values if isinstance(values, tuple | list) else (values,)
    return any(isinstance(v, int) and v > MAX_OUTPUT for v in items)


def _check_percent(fmt: Any, args: Any) -> None:
    """``'%1000000000s' % x`` (and the format filter): no width or precision beyond MAX_OUTPUT."""
    if not isinstance(fmt, str | bytes):
        return
    text = fmt.decode("latin-1") if isinstance(fmt, bytes) else fmt
    for m in _PERCENT.finditer(text):
        for group in m.groups():
            if group == "*" and _big_ints(args) or group and group.isdigit() and int(group) > MAX_OUTPUT:
                raise SecurityError(f"a format width or precision would make more than {MAX_OUTPUT} characters")


def _check_format(fmt: str, args: Any, kwargs: Any) -> None:
    """``'{:1000000000}'.format(x)``: no width or precision beyond MAX_OUTPUT."""
    for _, _, spec, _ in string.Formatter().parse(fmt):
        if not spec:
            continue
        if (
            any(int(n) > MAX_OUTPUT for n in re.findall(r"\d+", spec))
            or "{" in spec
            and (_big_ints(args) or _big_ints(kwargs))
        ):
            raise SecurityError(f"a format width or precision would make more than {MAX_OUTPUT} characters")


def _check_method(obj: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Methods of str, bytes, int and list that can allocate far more than their inputs."""
    method = getattr(obj, "__wrapped__", obj)  # the sandbox wraps str.format
    owner, name = getattr(method, "__self__", None), getattr(method, "__name__", "")
    first: Any = args[0] if args else None
    if isinstance(owner, str | bytes | bytearray):
        if name in ("ljust", "rjust", "center", "zfill"):
            _check_width(first if args else kwargs.get("width"), f"{name}()")
        elif name == "expandtabs":
            tabsize = first if args else kwargs.get("tabsize", 8)
            _check_width(len(owner) * tabsize if isinstance(tabsize, int) else 0, "expandtabs()")
        elif name == "replace" and len(args) >= 2:
            _check_replace(owner, args[0], args[1], args[2] if len(args) > 2 else kwargs.get("count"))
        elif name == "join" and args and hasattr(first, "__len__"):
            _check_join(owner, list(first))
        elif name in ("format", "format_map") and isinstance(owner, str):
            _check_format(owner, args, kwargs)
    elif isinstance(owner, int) and name == "to_bytes":
        _check_width(first if args else kwargs.get("length", 1), "to_bytes()")
    elif isinstance(owner, list) and name == "extend" and hasattr(first, "__len__"):
        _too_big(len(owner) + len(first), "extend()")


def _filter_checks() -> dict[str, Any]:
    """Size checks for the built-in filters that can allocate far more than their inputs, on their arguments
    (the value first, after any context the filter is passed)."""

    def join(value: Any, d: Any = "", attribute: Any = None) -> None:
        if hasattr(value, "__len__"):
            _check_join(str(d), list(value))

    def indent(s: Any, width: Any = 4, *rest: Any, **kw: Any) -> None:
        per_line = width if isinstance(width, int) else len(str(width))
        _too_big(len(str(s)) + (str(s).count("\n") + 1) * per_line, "indent")

    return {
        "replace": lambda s, old, new, count=None: _check_replace(s, old, new, count),
        "center": lambda value, width=80: _check_width(width, "center"),
        "indent": indent,
        "join": join,
        "format": lambda value, *args, **kwargs: _check_percent(value, kwargs or args),
        "batch": lambda value, linecount, fill_with=None: _check_count(linecount, "batch"),
        "slice": lambda value, slices, fill_with=None: _check_count(slices, "slice"),
    }


def _budgeted_filter(name: str, f: Any, check: Any) -> Any:
    """A filter that counts as a step of the render (the clock is checked) and checks sizes first."""
    skip = 0 if getattr(f, "jinja_pass_arg", None) is None else 1

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _tick()
        if check is not None:
            check(*args[skip:], **kwargs)
        return f(*args, **kwargs)

    return wrapper


class _Sandbox(SandboxedEnvironment):
    """Also refuses ``"x" * 10**9``, huge powers, wide formats and other allocations before making them, and
    counts every call, filter and operator as a step of the render (so the clock is checked inside loops of
    costly filters too)."""

    intercepted_binops = frozenset({"*", "**", "%", "+"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _tick()
        if operator == "**" and isinstance(right, int) and isinstance(left, int) and right > 0:
            if abs(right) > 1000 or max(1, left.bit_length()) * right > 100_000:
                raise SecurityError("exponent too large in a template")
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, str | bytes | list | tuple) and isinstance(n, int):
                    _too_big(len(seq) * n, "a repetition")
        if operator == "+" and isinstance(left, str | bytes | list | tuple) and hasattr(right, "__len__"):
            _too_big(len(left) + len(right), "a concatenation")
        if operator == "%":
            _check_percent(left, right)
        return super().call_binop(context, operator, left, right)

    def handle_exception(self, source: str | None = None) -> NoReturn:
        """As raised: Jinja2 would rewrite the traceback to show template lines, compiling code to do so, which
        fails again when the error was running out of memory (and relay reports only the message)."""
        raise sys.exc_info()[1] or RuntimeError("no exception to handle")

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 (as Jinja2's)
        _tick()
        _check_method(__obj, args, kwargs)
        return super().call(__context, __obj, *args, **kwargs)


def _environment(autoescape: bool) -> SandboxedEnvironment:
    env = _Sandbox(autoescape=autoescape, undefined=ChainableUndefined, keep_trailing_newline=True)
    env.globals = {"range": _limited_range}  # nothing else from the outside world
    checks = _filter_checks()
    env.filters = {name: _budgeted_filter(name, f, checks.get(name)) for name, f in env.filters.items()}
    return env


_PLAIN = _environment(False)
_HTML = _environment(True)


def check_syntax(parts: dict[str, str | None]) -> list[SyntaxProblem]:
    """Every syntax error, with its line number, without rendering (see relay.templates.check_syntax)."""
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
        except RecursionError:  # Jinja's parser recurses per level of nesting: "[[[[..." past ~1,000 deep
            problems.append(SyntaxProblem(part, None, "nested too deeply to read"))
    return problems


class _Budget:
    """A tracer that counts template lines (frames compiled from templates) and watches the clock on every
    step; calls, filters and operators count as steps too (``_tick``)."""

    def __init__(self, deadline: float, seconds: float) -> None:
        self.steps = 0
        self.seconds = seconds  # the whole budget, for the message
        self.deadline = deadline

    def __call__(self, frame: Any, event: str, arg: Any) -> Any:
        if event == "call":
            return self._local if frame.f_code.co_filename == "<template>" else None
        return None

    def _local(self, frame: Any, event: str, arg: Any) -> Any:
        if event == "line":
            self.step()
        return self._local

    def step(self) -> None:
        self.steps += 1
        if self.steps > RENDER_STEPS:
            raise SecurityError(f"the template ran more than {RENDER_STEPS} steps")
        if time.monotonic() > self.deadline:
            raise _OutOfTime(f"the template ran longer than {self.seconds:g}s")


_budget: _Budget | None = None  # the render in progress (rendering is single-threaded in a render process)


def _tick() -> None:
    if _budget is not None:
        _budget.step()


@functools.lru_cache(maxsize=64)
def _compiled(autoescape: bool, source: str) -> Template:
    """Templates compile once (a personalised batch renders the same source hundreds of times)."""
    return (_HTML if autoescape else _PLAIN).from_string(source)


def render_part(part: str, source: str, variables: dict[str, Any], deadline: float, seconds: float) -> str:
    global _budget
    try:
        template = _compiled(part == "html", source)
    except TemplateSyntaxError as exc:
        raise RenderError(part, f"line {exc.lineno}: {exc.message}") from None
    except RecursionError:  # as check_syntax: nesting past what Jinja's parser follows
        raise RenderError(part, "nested too deeply to read") from None
    _budget = _Budget(deadline, seconds)
    previous = sys.gettrace()
    sys.settrace(_budget)
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
    except _OutOfTime as exc:
        raise OutOfTime(part, str(exc)) from None
    except TemplateSyntaxError as exc:
        raise RenderError(part, f"line {exc.lineno}: {exc.message}") from None
    except (TemplateError, SecurityError) as exc:
        raise RenderError(part, str(exc)) from None
    except MemoryError:
        _compiled.cache_clear()
        raise RenderError(part, "the template needs more memory than a render may use") from None
    except Exception as exc:  # a filter's own failure (e.g. truncate's AssertionError) is this render's error
        raise RenderError(part, f"{type(exc).__name__}: {exc}") from None
    finally:
        sys.settrace(previous)
        _budget = None
