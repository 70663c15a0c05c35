"""relay.cli.output: the one printer of the CLI (JSON or text, tables, errors, raw bytes)."""

from __future__ import annotations

import io
import json
import sys
from typing import Any

from relay.cli.output import Column, Report, json_text, show, table

ROWS = [("key_1", "active", 3), ("key_22", "revoked", 12)]
COLUMNS: list[Column[tuple[str, str, int]]] = [
    Column("id", lambda r: r[0], "7"),
    Column("status", lambda r: r[1], "8", gap="  "),
    Column("count", lambda r: r[2], ">5"),
    Column("note", lambda r: ""),
]


def test_a_table_pads_each_column_to_its_spec_with_its_gap_before_it():
    assert table(ROWS, COLUMNS) == ["key_1    active       3 ", "key_22   revoked     12 "]


def test_a_table_header_is_formatted_with_the_same_specs_and_indent():
    lines = table(ROWS[:1], COLUMNS[:3], header=True, indent="  ")
    assert lines == ["  id       status   count", "  key_1    active       3"]


def test_an_empty_table_is_no_lines_or_only_its_header():
    assert table([], COLUMNS) == []
    assert table([], COLUMNS[:1], header=True) == ["id     "]


def test_json_text_is_indented_and_writes_unknown_values_as_text():
    data = {"a": [1, None], "b": b"x"}
    assert "\n".join(json_text(data)) == json.dumps(data, indent=2, default=str)


def test_show_prints_the_data_for_json_and_the_text_otherwise(capsys):
    report = Report({"revoked": False, "id": "key_1"}, ["revoked key_1"], status=1, error="no active key key_1")
    assert show(report, as_json=True) == 1
    out, err = capsys.readouterr()
    assert json.loads(out) == {"revoked": False, "id": "key_1"} and out.endswith("}\n") and err == ""
    assert show(report, as_json=False) == 1
    assert capsys.readouterr() == ("revoked key_1\n", "relay: no active key key_1\n")


def test_show_prints_null_for_no_data_and_lines_with_line_breaks_as_they_are(capsys):
    assert show(Report(None, ["a", "\nb"]), as_json=True) == 0
    assert capsys.readouterr().out == "null\n"
    show(Report(None, ["a", "\nb"]), as_json=False)
    assert capsys.readouterr().out == "a\n\nb\n"


def test_raw_bytes_are_written_as_they_are_even_with_json(monkeypatch):
    buffer = io.BytesIO()

    class Stdout:
        def __init__(self) -> None:
            self.buffer = buffer

        def flush(self) -> None:
            pass

    stdout: Any = Stdout()
    monkeypatch.setattr(sys, "stdout", stdout)
    assert show(Report({"x": 1}, ["text"], raw=b"Subject: x\r\n\r\nbody\r\n"), as_json=True) == 0
    assert buffer.getvalue() == b"Subject: x\r\n\r\nbody\r\n"
