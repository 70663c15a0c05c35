#!/usr/bin/env python3
"""Returned messages parsed per second on one core, over the sample corpus (tests/bounce_samples.py).

Parses every sample ``--rounds`` times per run in this one process (one thread,
so one core), ``--runs`` runs, and prints messages/s (wall clock and CPU time),
the microseconds per message of the median sample and the slowest ones. The
target for the inbound listener is at least 2,000 messages/s.

    .venv/bin/python bench/bounce_parse.py --rounds 20 --runs 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from relay.bounces.parse import parse  # noqa: E402
from tests.bounce_samples import SAMPLES  # noqa: E402


def one_run(raws: list[bytes], rounds: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds) to parse every message ``rounds`` times."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(rounds):
        for raw in raws:
            parse(raw)
    return time.perf_counter() - wall, time.process_time() - cpu


def per_sample(rounds: int) -> list[tuple[float, str]]:
    """Microseconds per parse of each sample (the best of ``rounds``), slowest first."""
    times = []
    for sample in SAMPLES:
        raw, best = sample.raw, float("inf")
        for _ in range(rounds):  # the best of several: another process on the core only ever adds time
            start = time.perf_counter()
            parse(raw)
            best = min(best, time.perf_counter() - start)
        times.append((best * 1e6, sample.name))
    return sorted(times, reverse=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=20, help="passes over the corpus per run")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    raws = [s.raw for s in SAMPLES]
    one_run(raws, 1)  # warm up: compiled patterns, imports
    runs = [one_run(raws, args.rounds) for _ in range(args.runs)]
    count = len(raws) * args.rounds
    wall = [count / w for w, _ in runs]
    cpu = [count / c for _, c in runs if c > 0]
    slowest = per_sample(max(1, args.rounds // 4))
    result = {
        "samples": len(raws),
        "bytes_mean": round(statistics.mean(len(r) for r in raws)),
        "messages_per_run": count,
        "msgs_per_s_wall": [round(x) for x in wall],
        "msgs_per_s_cpu": [round(x) for x in cpu],
        "median_sample_us": round(statistics.median(t for t, _ in slowest)),
        "slowest_us": [(name, round(t)) for t, name in slowest[:5]],
    }
    if args.json:
        print(json.dumps(result))
        return 0
    print(
        f"{len(raws)} samples (mean {result['bytes_mean']} bytes), {count} parses per run, {args.runs} runs, one core"
    )
    print(f"messages/s (wall): min {min(wall):,.0f}  median {statistics.median(wall):,.0f}  max {max(wall):,.0f}")
    if cpu:
        print(f"messages/s (CPU):  min {min(cpu):,.0f}  median {statistics.median(cpu):,.0f}  max {max(cpu):,.0f}")
    print(
        f"median sample {result['median_sample_us']} us; slowest: "
        + ", ".join(f"{name} {t} us" for name, t in result["slowest_us"])
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
