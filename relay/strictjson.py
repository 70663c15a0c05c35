"""JSON as RFC 8259 has it, in and out: no NaN or Infinity (which json reads and writes by default, and
which no other JSON parser accepts), no number that overflows to one, no nesting deeper than the parser
can follow, no string with half a surrogate pair (``"\\ud800"`` parses, but is no text: it cannot be
written as UTF-8). Every JSON relay reads from a client, and every JSON it serves, goes through here."""

from __future__ import annotations

import json
import math
from typing import Any


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is too large")
    return value


# Made once: json.loads and json.dumps make a new decoder or encoder on every call given an option.
_DECODER = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite_float)
_ENCODER = json.JSONEncoder(allow_nan=False)


def loads(text: bytes | str) -> Any:
    """Parse strict JSON. Raises ValueError (UnicodeDecodeError for bytes that are not UTF-8), also for
    nesting too deep to parse (otherwise a RecursionError). What ``json.loads`` does, with the hooks."""
    if isinstance(text, str):
        if text.startswith("\ufeff"):
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
        maybe_surrogate = not text.isascii() or "\\u" in text
    elif isinstance(text, bytes | bytearray):
        encoding = json.detect_encoding(text)
        # An escape, or (let through by surrogatepass, as json.loads does) a UTF-8 surrogate: 0xED first.
        maybe_surrogate = encoding != "utf-8" or b"\\u" in text or b"\xed" in text
        text = text.decode(encoding, "surrogatepass")
    else:
        raise TypeError(f"the JSON object must be str, bytes or bytearray, not {text.__class__.__name__}")
    try:
        data = _DECODER.decode(text)
    except RecursionError:
        raise ValueError("the JSON is nested too deeply") from None
    if maybe_surrogate and _has_lone_surrogate(data):
        raise ValueError("a string holds half a surrogate pair (\\ud800-\\udfff alone), which is no character")
    return data


def _has_lone_surrogate(data: Any) -> bool:
    """Whether a string in ``data`` (keys too) holds a surrogate: UTF-8 can write every other code point.
    A whole pair, an emoji as "\\ud83d\\ude00", is one character once decoded; what is left is alone.
    (Searching the text with a regular expression instead cost ~50 us per 4 KB body.)"""
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if not item.isascii():
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError:
                    return True
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def dumps(data: Any, **options: Any) -> str:
    """Write strict JSON: a non-finite number is a ValueError here, never text a client cannot parse."""
    return json.dumps(data, allow_nan=False, **options) if options else _ENCODER.encode(data)
