"""relay.strictjson reads and writes what json.loads and json.dumps (with its hooks and allow_nan=False) would,
errors included, with one decoder and one encoder made once."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


def _holds_surrogate(data) -> bool:
    """The reference: any string, key or value, with a code point in U+D800-U+DFFF."""
    if isinstance(data, str):
        return any(0xD800 <= ord(c) <= 0xDFFF for c in data)
    if isinstance(data, dict):
        return any(_holds_surrogate(k) or _holds_surrogate(v) for k, v in data.items())
    if isinstance(data, list):
        return any(_holds_surrogate(v) for v in data)
    return False


_TEXT = st.text(st.characters(codec=None, min_codepoint=0, max_codepoint=0x10FFFF), max_size=12)
_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | _TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT, inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None)
@given(_VALUES, st.sampled_from(["escaped", "utf-8", "str", "utf-16"]))
def test_a_surrogate_anywhere_is_refused_in_every_form_a_body_comes_in(data, form):
    """However the JSON arrives (every non-ASCII character escaped, as Python's json writes it; raw UTF-8
    with surrogates let through; a str; UTF-16), strictjson refuses it exactly when a decoded string holds
    half a surrogate pair, and otherwise reads what json.loads reads."""
    if form == "escaped":
        text = json.dumps(data)
    elif form == "str":
        text = json.dumps(data, ensure_ascii=False)
    elif form == "utf-8":
        text = json.dumps(data, ensure_ascii=False).encode("utf-8", "surrogatepass")
    else:
        text = json.dumps(data, ensure_ascii=False).encode("utf-16-le", "surrogatepass")
    expected = json.loads(text)
    if _holds_surrogate(expected):
        with pytest.raises(ValueError, match="half a surrogate pair"):
            strictjson.loads(text)
    else:
        assert strictjson.loads(text) == expected
