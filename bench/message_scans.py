#!/usr/bin/env python3
"""The whole-message scans of acceptance and delivery, in µs of CPU per call.

Each runs over the message once or more (bytes methods and searches go at ~1 ns a byte here; the
regular expressions without a literal first byte at ~10-30), so for a 100 KB message they are a
large part of what relay spends on it. Each of relay's functions is printed beside the plainer way
of doing the same, which is what it replaced:

- the line ends: ``crlf_only`` (a search for a lone CR, two single-byte counts) against counting the
  CRLFs, the LFs and the CRs (within the noise of each other here: which is faster depends on the text);
- the longest line: ``has_line_over`` (memrchr a line limit at a time) against splitting at LFs;
- dot-unstuffing (acceptance) and the wire form (delivery: line ends, dot-stuffing).

    .venv/bin/python bench/message_scans.py [--count 300]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from relay.delivery.client import wire_form  # noqa: E402
from relay.message import crlf_only, dot_unstuff, has_line_over  # noqa: E402

LIMIT = 1000  # [smtp] max_line_length - 1, as acceptance asks it


def message(size: int) -> bytes:
    """A message of text lines of 76 characters and a few dots, CRLF throughout."""
    head = b"From: bench@example.com\r\nTo: sink@example.org\r\nSubject: bench\r\n\r\n"
    line = b"The quick brown fox jumps over the lazy dog. " + b"x" * 29 + b"\r\n"
    return head + line * max(1, (size - len(head)) // len(line))


def per_call(fn: Callable[[], object], count: int) -> float:
    """The least CPU per call over five rounds of ``count`` calls, in µs."""
    best = float("inf")
    for _ in range(5):
        start = time.process_time()
        for _ in range(count):
            fn()
        best = min(best, time.process_time() - start)
    return best / count * 1e6


def scans(raw: bytes, count: int) -> list[tuple[str, float]]:
    steps: list[tuple[str, Callable[[], object]]] = [
        ("line ends: crlf_only", lambda: crlf_only(raw)),
        ("line ends: three counts", lambda: raw.count(b"\r\n") == raw.count(b"\n") == raw.count(b"\r")),
        ("longest line: has_line_over", lambda: has_line_over(raw, LIMIT)),
        ("longest line: split at LFs", lambda: max(map(len, raw.split(b"\n"))) > LIMIT),
        ("acceptance: dot_unstuff", lambda: dot_unstuff(raw)),
        ("delivery: wire_form", lambda: wire_form(raw)),
    ]
    return [(name, per_call(fn, count)) for name, fn in steps]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=300)
    args = parser.parse_args()
    for size in (5_000, 100_000):
        raw = message(size)
        print(f"\n{len(raw):,} byte message, µs of CPU per call")
        for name, us in scans(raw, args.count):
            print(f"  {name:32} {us:8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
