"""relay.strictjson reads and writes what json.loads and json.dumps (with its hooks and allow_nan=False) would,
errors included, with one decoder and one encoder made once."""

from __future__ import annotations

import json

import pytest

from relay import strictjson

DEEP = "[" * 100_000 + "]" * 100_000

INPUTS = [
    '{"a": [1, 2.5, "x\\u00e9", null, true]}',
    b'{"from": "Bench <bench@example.com>", "n": -0.0, "big": 123456789012345678901234567890}',
    bytearray(b"[1, 2]"),
    "\ufeff{}",  # a str with a BOM: refused
    b"\xef\xbb\xbf{}",  # bytes with the UTF-8 BOM: read
    '{"x": 1}'.encode("utf-16"),
    '{"x": 1}'.encode("utf-32-le"),
    b'{"x": "\xff"}',  # not UTF-8
    '{"x": NaN}',
    "[Infinity]",
    "[1e999]",
    "[1.5e308, -1e-400]",
    '{"a": 1,}',
    "",
    "[1] x",
    b'"\\ud83d\\ude00"',  # an emoji as an escaped surrogate pair: one character
]


def outcome(fn, text):
    try:
        return "ok", fn(text)
    except Exception as exc:
        return type(exc).__name__, str(exc)


def reference_loads(text):
    try:
        return json.loads(text, parse_constant=strictjson._no_constant, parse_float=strictjson._finite_float)
    except RecursionError:
        raise ValueError("the JSON is nested too deeply") from None


@pytest.mark.parametrize("text", INPUTS, ids=range(len(INPUTS)))
def test_loads_reads_as_json_loads_with_the_hooks(text):
    assert outcome(strictjson.loads, text) == outcome(reference_loads, text)


def test_loads_refuses_what_is_not_text_as_json_loads_does():
    assert outcome(strictjson.loads, 12) == outcome(json.loads, 12)


@pytest.mark.parametrize(
    "text",
    [b'"\\ud800"', b'{"\\udc00": 1}', b'["x", ["\\uDBFF"]]', b'{"a": "\xed\xa0\x80"}', '["\ud800"]'],
)
def test_half_a_surrogate_pair_is_a_value_error(text):
    """json.loads reads these; the string could never be written as UTF-8 (a message body, a header,
    a database row), so relay refuses the JSON at the door instead of failing later with a 500."""
    assert outcome(reference_loads, text)[0] == "ok"
    with pytest.raises(ValueError, match="half a surrogate pair"):
        strictjson.loads(text)


def test_nesting_too_deep_is_a_value_error():
    with pytest.raises(ValueError, match="nested too deeply"):
        strictjson.loads(DEEP)


@pytest.mark.parametrize(
    ("data", "options"),
    [
        ({"id": "m1", "status": "queued", "recipients": [{"email": "é@x", "status": "queued"}]}, {}),
        ([1.5, None, True, "a\nb"], {}),
        ({"b": 1, "a": [2]}, {"separators": (",", ":"), "sort_keys": True}),
    ],
)
def test_dumps_writes_as_json_dumps(data, options):
    assert strictjson.dumps(data, **options) == json.dumps(data, allow_nan=False, **options)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_dumps_refuses_a_number_json_cannot_hold(value):
    with pytest.raises(ValueError):
        strictjson.dumps({"x": value})
    with pytest.raises(ValueError):
        strictjson.dumps({"x": value}, sort_keys=True)
