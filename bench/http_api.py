#!/usr/bin/env python3
"""HTTP API benchmark: durable POST /v1/messages under wrk, next to GET /healthz (the framework's ceiling).

Starts relay as a subprocess (temp data dir, smarthost pointing at a sink, a
rate limit high enough not to interfere), creates an API key, then runs wrk
(Debian package) on loopback for --duration seconds each:

1. GET /healthz                     — no auth, no storage: aiohttp's ceiling here
2. POST /v1/messages                — Bearer key, JSON body, unique Idempotency-Key per request (unless
                                       --no-idempotency-key),
                                       202 only after the message is committed with fsync

Prints requests/s and p50/p99 latency for both, the ratio, and the CPU that relay's processes spent per
POST (user + system, all of relay's processes; wrk's own CPU not counted).

    python bench/http_api.py --duration 10 --connections 32
    python bench/http_api.py --profile DIR   # py-spy --gil on each relay process during the POST run;
                                             # then: python bench/profile_summary.py DIR/*.txt
    python bench/http_api.py --store postgresql   # a private PostgreSQL cluster (tests/pg.py), fsync on;
                                                  # its server's CPU per POST printed too
    python bench/http_api.py --keys 4 --daily-quota 1000000   # four keys with quotas, in turn
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import (  # noqa: E402
    REPO,
    Database,
    Profiler,
    children,
    cpu_seconds,
    free_port,
    start_sink,
    wait_listening,
    wait_started,
)

POST_LUA = r"""
local threads = 0
setup = function(thread)
  threads = threads + 1
  thread:set("id", threads)
end
local counter = 0
local body = '{"from": "Bench <bench@example.com>", "to": "sink@example.org", "subject": "bench", %s}'
local keys = {}
for key in string.gmatch(os.getenv("RELAY_KEYS"), "[^,]+") do
  keys[#keys + 1] = key
end
request = function()
  counter = counter + 1
  local headers = {}
  headers["Authorization"] = "Bearer " .. keys[(counter %% #keys) + 1]
  headers["Content-Type"] = "application/json"
  if os.getenv("RELAY_IDEMPOTENCY") == "1" then
    headers["Idempotency-Key"] = string.format("%%d-%%d-%%d", os.time(), id, counter)
  end
  return wrk.format("POST", "/v1/messages", headers, body)
end
done = function(summary, latency, requests)
  local codes = summary.errors.status
  io.write(string.format("JSON {\"non2xx\": %%d, \"socket_errors\": %%d}\n", codes,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
"""


def body_fields(size: int, html: bool) -> str:
    """The message's body fields as JSON: ``size`` bytes of text (one line), or text and html of
    ``size`` bytes each, in lines as a mail client writes them (an html line carries attributes)."""
    if not html:
        return json.dumps({"text": "x" * size})[1:-1]
    text_line, html_line = "Hello, this is a line of the message. " * 2 + "\n", '<p class="c" style="s">Hello.</p>'
    return json.dumps({"text": text_line * (size // len(text_line)), "html": html_line * (size // len(html_line))})[
        1:-1
    ]


def parse_wrk(output: str) -> dict[str, float]:
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    percentiles = {}
    for label, value, unit in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", output, re.MULTILINE):
        factor = {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
        percentiles[label] = float(value) * factor
    extra = re.search(r"JSON (\{.*\})", output)
    result = {"requests_per_s": rps, "p50_ms": percentiles.get("50"), "p99_ms": percentiles.get("99")}
    if extra:
        result.update(json.loads(extra.group(1)))
    return result


def count_messages(tmp: Path, database: Database | None) -> int:
    """The messages the store holds."""
    if database is not None:
        return int(str(database.query("SELECT count(*) FROM messages")[0][0]))
    import sqlite3

    conn = sqlite3.connect(tmp / "data" / "relay.sqlite3")
    try:
        return int(conn.execute("SELECT count(*) FROM messages").fetchone()[0])
    finally:
        conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--acceptors", default="auto", help="relay's [server] acceptors (default \"auto\", the default configuration's)"
    )
    parser.add_argument("--text-size", type=int, default=4000, help="bytes of message text")
    parser.add_argument("--html", action="store_true", help="text and html (--text-size each), not one line of text")
    parser.add_argument(
        "--no-idempotency-key", action="store_true", help="POST without an Idempotency-Key (the default sends one)"
    )
    parser.add_argument("--profile", type=Path, help="py-spy --gil each relay process into this directory")
    parser.add_argument("--store", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--keys", type=int, default=1, help="API keys the POSTs take turns with")
    parser.add_argument("--daily-quota", type=int, help="each key with this daily quota (relay keys create)")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    database = Database() if args.store == "postgresql" else None
    try:
        bench(args, database)
    finally:
        if database is not None:
            database.stop()


def bench(args: argparse.Namespace, database: Database | None) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="relay-http-bench-"))
    http_port, sink_port = free_port(), free_port()
    store = f'[store]\nurl = "{database.url}"\n' if database is not None else ""
    config = tmp / "relay.toml"
    config.write_text(
        store
        + f"""
[server]
hostname = "relay.bench"
data_dir = "{tmp / "data"}"
acceptors = {args.acceptors if args.acceptors.isdigit() else '"auto"'}
[smtp]
listen = ["127.0.0.1:0"]
[http]
listen = "127.0.0.1:{http_port}"
rate_limit = "100000000/h"
[delivery]
smarthost = "127.0.0.1:{sink_port}"
"""
    )
    quota = ["--daily-quota", str(args.daily_quota)] if args.daily_quota is not None else []
    keys = [
        json.loads(
            subprocess.run(
                [sys.executable, "-m", "relay", "keys", "create", "--json", "--config", str(config), *quota],
                capture_output=True,
                text=True,
                check=True,
                cwd=REPO,
            ).stdout
        )["key"]
        for _ in range(args.keys)
    ]
    sink = start_sink("smtp-sink" if shutil.which("smtp-sink") else "python", sink_port)
    log = (tmp / "relay.log").open("wb")
    relay = subprocess.Popen(
        [sys.executable, "-m", "relay", "serve", "--config", str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=REPO,
    )
    script = tmp / "post.lua"
    script.write_text(POST_LUA % body_fields(args.text_size, args.html).replace("\\", "\\\\"))  # a Lua '...' string
    try:
        wait_listening(http_port, lambda: relay.poll() is None)
        wait_started(tmp / "relay.log", relay)
        base = ["wrk", "-t", str(args.threads), "-c", str(args.connections), "-d", f"{args.duration}s", "--latency"]
        url = f"http://127.0.0.1:{http_port}"
        health = parse_wrk(subprocess.run([*base, f"{url}/healthz"], capture_output=True, text=True, check=True).stdout)
        pids = [relay.pid, *children(relay.pid)]
        profiler = Profiler(args.profile, "relay", pids) if args.profile is not None else None
        cpu_before = [cpu_seconds(p) for p in pids]
        db_before = database.cpu() if database is not None else 0.0
        post_run = subprocess.run(
            [*base, "-s", str(script), f"{url}/v1/messages"],
            capture_output=True,
            text=True,
            check=True,
            env={
                "RELAY_KEYS": ",".join(keys),
                "RELAY_IDEMPOTENCY": "0" if args.no_idempotency_key else "1",
                "PATH": "/usr/bin:/bin",
            },
        )
        cpu_each = [cpu_seconds(p) - before for p, before in zip(pids, cpu_before, strict=True)]
        db_cpu = database.cpu() - db_before if database is not None else None
        deadlocks = database.query("SELECT deadlocks FROM pg_stat_database WHERE datname = 'bench'") if database else []
        if database is not None and os.environ.get("BENCH_PG_LOG"):
            Path(os.environ["BENCH_PG_LOG"]).write_text(database.cluster.log())
        if profiler is not None:
            profiler.stop()
        post = parse_wrk(post_run.stdout)
        queued = count_messages(tmp, database)  # each 202 is a committed message
    finally:
        relay.terminate()
        relay.wait(60)
        sink.terminate()
        log.close()
    print(
        f"GET /healthz        : {health['requests_per_s']:8.0f} req/s  p50 {health['p50_ms']:.2f} ms  "
        f"p99 {health['p99_ms']:.2f} ms"
    )
    print(
        f"POST /v1/messages   : {post['requests_per_s']:8.0f} req/s  p50 {post['p50_ms']:.2f} ms  "
        f"p99 {post['p99_ms']:.2f} ms  non-2xx {post.get('non2xx')}  messages queued {queued}"
    )
    per_post = [1000 * cpu / max(queued, 1) for cpu in cpu_each]
    each = ", ".join(f"{ms:.3f}" for ms in per_post if ms >= 0.001)
    print(f"relay CPU per POST  : {sum(per_post):.3f} ms (main process first: {each})")
    if db_cpu is not None:
        print(f"database CPU per POST: {1000 * db_cpu / max(queued, 1):.3f} ms; deadlocks {deadlocks[0][0]}")
    print(f"durable POST / healthz ceiling: {post['requests_per_s'] / health['requests_per_s']:.2f}")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
