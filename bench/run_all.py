#!/usr/bin/env python3
"""Every benchmark in one command: installs what it needs, runs each script, writes bench/RESULTS-latest.md.

    sudo .venv/bin/python bench/run_all.py            # the full suite (about 15 minutes on 2 cores)
    sudo .venv/bin/python bench/run_all.py --quick    # smaller sizes, a few minutes

Debian packages: postfix (smtp-source, smtp-sink and the peer to compare with;
installed unconfigured, no system instance) and wrk. Each figure is measured in
the same run as its peer (relay and Postfix alternate). The report starts with
the date, the machine (cores, RAM) and the commit, then each script's output.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent


def ensure_packages() -> None:
    missing = [p for p, exe in (("postfix", "/usr/sbin/postfix"), ("wrk", "wrk")) if not shutil.which(exe)]
    if not missing:
        return
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    preseed = b"postfix postfix/main_mailer_type select No configuration\n"
    subprocess.run([*sudo, "debconf-set-selections"], input=preseed, check=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run([*sudo, "apt-get", "install", "-y", "-qq", *missing], check=True, env=env)


def machine() -> str:
    cores = os.cpu_count()
    mem = next(
        (line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")), "0"
    )
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO)
    return (
        f"{datetime.date.today().isoformat()}, {cores} cores, {int(mem) // 1024 // 1024} GiB RAM,"
        f" Python {sys.version.split()[0]}, commit {commit.stdout.strip() or 'unknown'}"
    )


def steps(quick: bool) -> list[tuple[str, list[str]]]:
    n = "3000" if quick else "10000"
    relay_and_postfix = ["--target", "postfix", "--target", "relay"]
    # fmt: off
    return [
        ("SMTP relay throughput vs Postfix, 5 KB, default configuration",
         ["throughput.py", "--messages", n, "--runs", "1" if quick else "3", *relay_and_postfix]),
        ("SMTP relay throughput vs Postfix, 5 KB, relay in one process",
         ["throughput.py", "--messages", n, "--runs", "1" if quick else "2", "--acceptors", "0", *relay_and_postfix]),
        ("SMTP relay throughput vs Postfix, 5 KB, relay DKIM-signing (rsa-2048)",
         ["throughput.py", "--messages", n, "--runs", "1" if quick else "2", "--dkim", *relay_and_postfix]),
        ("SMTP relay throughput vs Postfix, 100 KB, default configuration",
         ["throughput.py", "--messages", "500" if quick else "2000", "--size", "102400",
          "--runs", "1" if quick else "2", *relay_and_postfix]),
        ("Ceiling: smtp-source straight into smtp-sink, 5 KB",
         ["throughput.py", "--messages", n, "--target", "ceiling"]),
        ("HTTP submission vs /healthz", ["http_api.py", "--duration", "5" if quick else "15"]),
        ("Queue scaling", ["queue_scale.py", "--sizes", "10000", "100000", *([] if quick else ["1000000"])]),
        ("Latency, acceptance to arrival", ["latency.py", "--probe", "1500" if quick else "3000",
                                             "--messages", "1500" if quick else "5000"]),
        ("Latency, acceptance to arrival, Postfix", ["latency.py", "--target", "postfix",
                                                      "--probe", "1500" if quick else "3000",
                                                      "--messages", "1500" if quick else "5000"]),
        ("Batch acceptance", ["batch.py", "--size", "500", "--runs", "3" if quick else "7"]),
        ("Events and stats", ["events_scale.py", "--sizes", "100000"]),
    ]
    # fmt: on


def _mean(pattern: str, text: str) -> float | None:
    found = [float(v) for v in re.findall(pattern, text)]
    return sum(found) / len(found) if found else None


def summary(outputs: dict[str, str]) -> list[str]:
    """The headline figures of a run as a Markdown table (means over the runs of each step)."""
    rows = []
    for title, text in outputs.items():
        if not title.startswith("SMTP relay throughput"):
            continue
        relay = _mean(r"(?m)^relay .*end-to-end ([\d.]+)/s", text)
        postfix = _mean(r"(?m)^postfix .*end-to-end ([\d.]+)/s", text)
        if relay and postfix:
            rows.append(
                f"| {title[len('SMTP relay throughput vs Postfix, ') :]} | end to end msgs/s"
                f" | {relay:,.0f} | {postfix:,.0f} (Postfix) | {relay / postfix:.2f}x |"
            )
    for title, text in outputs.items():
        if title.startswith("Ceiling") and (rate := _mean(r"end-to-end ([\d.]+)/s", text)):
            rows.append(f"| smtp-source → smtp-sink, no server | msgs/s | {rate:,.0f} | | |")
        if title.startswith("HTTP"):
            post, health = _mean(r"POST /v1/messages\s*:\s*([\d.]+)", text), _mean(r"healthz\s*:\s*([\d.]+)", text)
            if post and health:
                rows.append(
                    f"| HTTP durable POST /v1/messages | req/s | {post:,.0f} | {health:,.0f} (GET /healthz) |"
                    f" {post / health:.2f}x |"
                )
        if title.startswith("Latency") and (m := re.search(r"at ([\d.]+)/s.*p50 ([\d.]+) ms.*p99 ([\d.]+) ms", text)):
            who = "Postfix" if title.endswith("Postfix") else "relay"
            rows.append(f"| latency ({who}), acceptance to arrival, at {m[1]}/s | p50 / p99 ms | {m[2]} / {m[3]} | | |")
    if not rows:
        return []
    return ["| | unit | relay | peer | ratio |", "|---|---|---|---|---|", *rows, ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--output", type=Path, default=BENCH / "RESULTS-latest.md")
    args = parser.parse_args()
    ensure_packages()
    lines = ["# Benchmark run", "", machine(), ""]
    outputs: dict[str, str] = {}
    for title, command in steps(args.quick):
        print(f"== {title}: {' '.join(command)}", flush=True)
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, str(BENCH / command[0]), *command[1:]],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=3600,
        )
        out = (done.stdout + (f"\n(exit {done.returncode})\n{done.stderr[-2000:]}" if done.returncode else "")).strip()
        print(out, flush=True)
        outputs[title] = out
        lines += [
            f"## {title}",
            "",
            f"`python bench/{' '.join(command)}` ({time.monotonic() - started:.0f} s)",
            "",
            "```",
            out,
            "```",
            "",
        ]
    table = summary(outputs)
    print("\n".join(table))
    lines[4:4] = table
    args.output.write_text("\n".join(lines))
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
