"""The README's quick tour, run as written: `make serve`'s own command, then each command of the tour in a shell.

Only the ports and the data directory differ, through the environment overrides the README documents
(RELAY_SMTP_LISTEN, RELAY_HTTP_LISTEN, RELAY_SERVER_DATA_DIR), so that the test runs beside anything
else on the machine; the tour's addresses are rewritten to the ports chosen.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TOUR_PORTS = ("127.0.0.1:2587", "127.0.0.1:8025")  # what the README's commands use (the example config's)

pytestmark = pytest.mark.skipif(
    not (shutil.which("swaks") and shutil.which("curl") and shutil.which("make")),
    reason="the tour needs swaks, curl and make (make tools installs them)",
)


def tour_commands(readme: str) -> list[str]:
    """The shell commands of the README's quick tour: continuation lines joined, comment lines dropped."""
    section = readme.split("## A quick tour", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    assert block, "no sh block in the quick tour"
    commands, current = [], ""
    for line in block.group(1).splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        current += line + "\n"
        if not line.endswith("\\"):
            commands.append(current.rstrip("\n"))
            current = ""
    return commands


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def tour_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    env.update(
        RELAY_SERVER_DATA_DIR=str(tmp_path / "var"),
        RELAY_SMTP_LISTEN=f"127.0.0.1:{free_port()}",
        RELAY_HTTP_LISTEN=f"127.0.0.1:{free_port()}",
        PYTHONUNBUFFERED="1",
    )
    return env


@pytest.fixture
def served(tour_env: dict[str, str], tmp_path: Path):
    """`make serve`, with the venv running these tests, and without reinstalling it (-o: its stamp is up to date)."""
    log_path = tmp_path / "serve.log"
    venv = sys.prefix
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            ["make", "--no-print-directory", "-o", f"{venv}/.installed", "serve", f"VENV={venv}"],
            cwd=ROOT,
            env=tour_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 30
    while "relay started" not in log_path.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError(f"make serve did not start:\n{log_path.read_text(errors='replace')}")
        time.sleep(0.05)
    yield log_path
    os.killpg(proc.pid, signal.SIGTERM)  # make, its shell and relay: a session of their own
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise


def run_tour(commands: list[str], env: dict[str, str]) -> list[tuple[str, int, str]]:
    """Each command in one bash session (variables carry over), with its exit status and output."""
    script = "set -o pipefail\n"
    for index, command in enumerate(commands):
        script += f"{command}\nprintf '\\n@@step {index} rc=%d\\n' $?\n"
    done = subprocess.run(["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    outputs = re.split(r"\n@@step (\d+) rc=(\d+)\n", done.stdout)
    steps = [
        (commands[int(i)], int(rc), out.strip())
        for out, i, rc in zip(outputs[0::3], outputs[1::3], outputs[2::3], strict=False)
    ]
    assert len(steps) == len(commands), f"the tour stopped early:\n{done.stdout}\n{done.stderr}"
    return steps


def step(steps: list[tuple[str, int, str]], matches: Callable[[str], bool]) -> tuple[str, int, str]:
    """The one tour step whose command (as the README writes it, comments included) ``matches``."""
    (found,) = [s for s in steps if matches(s[0])]
    return found


def captured(env: dict[str, str]) -> list[dict]:
    done = subprocess.run(
        [f"{sys.prefix}/bin/relay", "sandbox", "list", "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_the_quick_tour_works_as_written(served: Path, tour_env: dict[str, str]):
    serve_log = served.read_text(errors="replace")
    assert "make serve: RELAY_DELIVERY_MODE=sandbox (sandbox: mail is captured, not delivered)" in serve_log
    assert "make serve: RELAY_DOMAINS_REQUIRE_VERIFIED_DOMAIN=false" in serve_log
    assert "WARNING relay: sandbox mode: mail is captured, not delivered; read it with relay sandbox list" in serve_log

    commands = tour_commands((ROOT / "README.md").read_text())
    assert commands[0] == ". .venv/bin/activate"
    smtp, http = tour_env["RELAY_SMTP_LISTEN"], tour_env["RELAY_HTTP_LISTEN"]
    runnable = [
        c.replace(".venv/bin/activate", f"{sys.prefix}/bin/activate")
        .replace(TOUR_PORTS[0], smtp)
        .replace(TOUR_PORTS[1], http)
        for c in commands
    ]
    steps = [(readme, rc, out) for readme, (_, rc, out) in zip(commands, run_tour(runnable, tour_env), strict=True)]
    failed = [s for s in steps if s[1] != 0]
    assert not failed, "tour steps failed:\n" + "\n\n".join(f"$ {c}\n(exit {rc})\n{o}" for c, rc, o in failed)

    swaks = step(steps, lambda c: c.startswith("swaks"))[2]
    assert re.search(r"<- {2}250 2\.0\.0 Ok: queued as \w+", swaks), swaks
    assert step(steps, lambda c: c.startswith("relay send"))[2].startswith("queued for you@example.org")
    assert step(steps, lambda c: c.startswith("KEY=$(relay keys create"))[2] == ""
    posted = json.loads(step(steps, lambda c: c.startswith("curl") and "-d '" in c)[2])
    assert posted["status"] == "queued" and posted["recipients"] == [{"email": "you@example.org", "status": "queued"}]
    newest = json.loads(step(steps, lambda c: "/v1/messages?limit=1" in c)[2])
    assert newest["data"][0]["id"] == posted["id"] and newest["data"][0]["recipients"][0]["email"] == "you@example.org"
    assert "recipients by state:" in step(steps, lambda c: c.split("#")[0].strip() == "relay queue")[2]
    assert "by_state" in json.loads(step(steps, lambda c: c.startswith("relay queue --json"))[2])

    # The end of the tour: the three messages, seen in the sandbox from the command line and over HTTP.
    listing = step(steps, lambda c: c.startswith("relay sandbox list"))[2].splitlines()
    assert len(listing) == 3 and listing[0].startswith(posted["id"]) and "Hello" in listing[0], listing
    assert all("<me@example.com> -> <you@example.org>" in line for line in listing)
    over_http = json.loads(step(steps, lambda c: "/v1/sandbox/messages" in c)[2])
    assert [m["id"] for m in over_http["data"]] == [line.split()[0] for line in listing]
    assert all(m["sandbox"] for m in over_http["data"])
    deadline = time.monotonic() + 15  # captured at once; a reader may have been quicker than the engine
    while any(r["status"] != "delivered" for m in captured(tour_env) for r in m["recipients"]):
        assert time.monotonic() < deadline, captured(tour_env)
        time.sleep(0.1)
