"""The one printer of the ``relay`` commands: a command returns a :class:`Report`, and :func:`show` prints
it as JSON (--json) or as the text lines, tables included (:func:`table`)."""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Generic, TypeVar

R = TypeVar("R")


@dataclasses.dataclass(frozen=True)
class Report:
    """What a command found or did. ``data`` is printed for --json, ``text`` otherwise; ``error`` (text
    only) goes to stderr as ``relay: ...``; ``raw`` (bytes as stored) replaces both; ``status`` is the
    exit status."""

    data: Any = None
    text: Sequence[str] = ()
    status: int = 0
    error: str | None = None
    raw: bytes | None = None


@dataclasses.dataclass(frozen=True)
class Column(Generic[R]):
    """One column of a text table: its header, how a row gives its value, the format spec of its width
    and alignment (``"8"``, ``">7"``), and the text before it (ignored for the first column)."""

    title: str
    value: Callable[[R], object]
    spec: str = ""
    gap: str = " "


def table(rows: Iterable[R], columns: Sequence[Column[R]], *, header: bool = False, indent: str = "") -> list[str]:
    """Lines of a table, one per row, each value formatted with its column's spec."""
    lines = [_line([c.title for c in columns], columns, indent)] if header else []
    return lines + [_line([c.value(row) for c in columns], columns, indent) for row in rows]


def _line(values: Sequence[object], columns: Sequence[Column[Any]], indent: str) -> str:
    cells = (
        ("" if i == 0 else c.gap) + format(v, c.spec) for i, (v, c) in enumerate(zip(values, columns, strict=True))
    )
    return indent + "".join(cells)


def json_text(data: object) -> list[str]:
    """``data`` as the --json output writes it (indented, anything unknown as its str()), as lines."""
    return json.dumps(data, indent=2, default=str).split("\n")


def show(report: Report, as_json: bool) -> int:
    """Print ``report``, as JSON when ``as_json``: the one place that decides; returns its exit status."""
    if report.raw is not None:
        sys.stdout.flush()
        sys.stdout.buffer.write(report.raw)
        return report.status
    _print_lines(json_text(report.data) if as_json else report.text)
    if report.error is not None and not as_json:
        print(f"relay: {report.error}", file=sys.stderr)
    return report.status


def _print_lines(lines: Iterable[str]) -> None:
    for line in lines:
        print(line)
