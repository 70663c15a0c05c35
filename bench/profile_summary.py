#!/usr/bin/env python3
"""Where the CPU went: py-spy's raw (collapsed) stacks, summed by function.

    python bench/throughput.py --messages 10000 --profile /tmp/prof
    python bench/profile_summary.py /tmp/prof/relay-*.txt [--top 40] [--match relay/]

Prints, for each file, the functions by self share (samples with the function on top) and by
inclusive share (samples with it anywhere in the stack, counted once per sample). With ``--match``
only frames whose file contains the text are listed in the inclusive table.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

FRAME = re.compile(r"^(?P<function>.*?) \((?P<file>.*?)(?::\d+)?\)$")


def frame_name(frame: str) -> str:
    """``function (path/to/file.py:12)`` → ``function (file.py)``: one entry per function, not per line."""
    match = FRAME.match(frame.strip())
    if match is None:
        return frame.strip()
    path = match.group("file")
    short = "/".join(path.split("/")[-2:])
    return f"{match.group('function')} ({short})"


def summarise(path: Path, top: int, match: str | None) -> str:
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [frame_name(f) for f in stack.split(";") if f]
        if frames:
            own[frames[-1]] += count
        for name in set(frames):
            if match is None or match in name or match in stack:
                inclusive[name] += count
    lines = [f"== {path.name}: {total} samples holding the GIL"]
    if total == 0:
        return "\n".join(lines)
    lines.append("-- self")
    lines += [f"{100 * n / total:5.1f}%  {name}" for name, n in own.most_common(top)]
    lines.append("-- inclusive")
    lines += [f"{100 * n / total:5.1f}%  {name}" for name, n in inclusive.most_common(top)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--match", help="inclusive table: only frames from files containing this")
    args = parser.parse_args()
    for path in args.files:
        print(summarise(path, args.top, args.match))


if __name__ == "__main__":
    main()
