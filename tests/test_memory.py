"""Memory: each process of ``relay serve`` loads only what it runs (issue 22: PSS <= 100 MB by default).

An imported package costs its code and objects in every process that imports it (0.5-8 MB each for
aiohttp, jinja2, prometheus_client, aiosmtpd, cryptography's x509, multiprocessing). With acceptor
processes, the main process delivers and the acceptors accept (with ``main_accepts``, the main process
accepts too): these tests run a real ``relay serve`` with one acceptor, pass a message through it,
and read which modules each process had loaded when it exited (a ``sitecustomize`` on PYTHONPATH writes
``sys.modules`` at exit).
"""

from __future__ import annotations

import asyncio
import math
import os
import textwrap
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client import Histogram as ClientHistogram

from relay import metrics
from tests.test_end_to_end import smtp_submit

SITECUSTOMIZE = """
import atexit, os, sys

def _write_modules():
    role = "acceptor" if os.environ.get("RELAY_LISTEN_FDS") else "main"
    path = os.path.join({directory!r}, f"{{role}}-{{os.getpid()}}.txt")
    with open(path, "w") as fh:
        fh.write("\\n".join(sorted(sys.modules)))

if sys.argv[1:2] == ["serve"] or os.environ.get("RELAY_LISTEN_FDS"):
    atexit.register(_write_modules)
"""

# What a process must not have loaded (a package, or a module and what is under it).
NOT_IN_MAIN = [
    "aiohttp",  # the main process serves no HTTP (webhooks go out with relay.webhook_http)
    "jinja2",  # templates are checked where they are submitted, and render in render processes
    "prometheus_client",  # a scrape is answered by an acceptor
    "aiosmtpd",  # the acceptors take the SMTP connections
    "relay.api",
    "relay.dashboard.app",
    "multiprocessing",
    "dns",  # MX lookups only: this relay has a smarthost
    "dkim",  # dkimpy signs only what relay's own signer does not take, in a process that accepts
    "spf",
    "termios",  # for relay send's password prompt
]
# A main process that accepts too (main_accepts) loads what accepting takes, no more.
NOT_IN_MAIN_THAT_ACCEPTS = [
    "aiohttp",  # the API is built once it takes an HTTP connection its acceptors left waiting
    "relay.api",
    "relay.dashboard.app",
    "jinja2",  # until the first template is sent or saved
    "prometheus_client",  # until the first scrape
    "multiprocessing",  # until the first big batch
    "dns",
    "dkim",
    "spf",
    "termios",
]
NOT_IN_ACCEPTOR = [
    "jinja2",  # until the first template is sent or saved
    "aiosmtplib",  # delivery is the main process's
    "relay.delivery.engine",
    "prometheus_client",  # until the first scrape
    "multiprocessing",  # until the first big batch (two builder processes)
    "cryptography.x509",  # the self-signed certificate is made once, by the main process
    "dns",  # until a sending domain's records are checked
    "spf",
    "dkim",  # dkimpy: for what relay's own DKIM signer does not take
    "termios",
]


def loaded(modules: set[str], names: list[str]) -> list[str]:
    return [n for n in names if any(m == n or m.startswith(n + ".") for m in modules)]


@pytest.mark.parametrize("main_accepts", [False, True])
async def test_the_main_process_and_an_acceptor_load_only_what_they_run(
    relay_process, sink, tmp_path, monkeypatch, main_accepts
):
    site, dumps = tmp_path / "site", tmp_path / "modules"
    site.mkdir()
    dumps.mkdir()
    (site / "sitecustomize.py").write_text(textwrap.dedent(SITECUSTOMIZE.format(directory=str(dumps))))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])))
    server = {"acceptors": 1, "main_accepts": main_accepts}
    proc = relay_process(server=server, delivery={"smarthost": sink.address})
    await proc.start()
    await asyncio.to_thread(smtp_submit, proc.smtp_port, ["someone@example.org"])
    assert [m.rcpt_tos for m in await sink.handler.wait_for(1)] == [["someone@example.org"]]
    assert await proc.terminate() == 0

    by_role = {p.name.split("-")[0]: set(p.read_text().split()) for p in dumps.iterdir()}
    assert sorted(by_role) == ["acceptor", "main"], proc.log()
    main, acceptor = by_role["main"], by_role["acceptor"]
    assert "relay.delivery.engine" in main and "relay.submission.smtp" in acceptor  # each did its part
    assert ("relay.submission.smtp" in main) is main_accepts
    assert loaded(main, NOT_IN_MAIN_THAT_ACCEPTS if main_accepts else NOT_IN_MAIN) == []
    assert loaded(acceptor, NOT_IN_ACCEPTOR) == []


def test_the_delivery_histogram_renders_as_prometheus_clients_histogram(monkeypatch):
    buckets = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 14400, 86400)
    ours = metrics.Histogram("relay_delivery_latency_seconds", "From acceptance to the 2xx", buckets)
    registry = CollectorRegistry(auto_describe=True)
    theirs = ClientHistogram(
        "relay_delivery_latency_seconds", "From acceptance to the 2xx", buckets=buckets, registry=registry
    )
    for value in (0.0, 0.05, 0.07, 0.1, 1, 2.4999, 86400, 86400.5, 1e9, math.inf, 3.25):
        ours.observe(value)
        theirs.observe(value)
    theirs._created = ours.created  # the one sample that depends on when each was made
    rendered = CollectorRegistry(auto_describe=False)
    rendered.register(metrics._Snapshot([ours.metric()]))
    assert generate_latest(rendered) == generate_latest(registry)
    assert b'relay_delivery_latency_seconds_bucket{le="+Inf"} 11.0' in generate_latest(rendered)


@pytest.mark.parametrize("module", ["relay.webhooks", "relay.metrics", "relay.tls"])
def test_these_modules_load_their_heavy_dependency_only_when_used(module):
    import subprocess
    import sys

    code = (
        f"import sys, {module}; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'aiohttp', 'prometheus_client'}), "
        "'cryptography.x509' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=Path.cwd())
    assert out.stdout.split() == ["[]", "False"]


def test_a_dependency_imported_when_used_is_still_looked_for_at_start_up():
    from relay.startup import IMPORTED_WHEN_USED, check_installed

    check_installed()  # all installed here
    assert {"aiohttp", "dkim", "dns", "jinja2", "prometheus_client", "spf"} <= set(IMPORTED_WHEN_USED)
    with pytest.raises(ModuleNotFoundError, match="relay_not_installed"):
        check_installed(["dns", "relay_not_installed"])


def test_a_missing_dependency_stops_relay_serve_before_it_listens(tmp_path):
    import subprocess
    import sys

    from tests.conftest import config_dict, write_toml

    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(  # pyspf uninstalled, as far as this process can tell
        "import importlib.util\n_find = importlib.util.find_spec\n"
        "importlib.util.find_spec = lambda name, *a: None if name == 'spf' else _find(name, *a)\n"
    )
    config = write_toml(tmp_path / "relay.toml", config_dict(tmp_path / "data"))
    env = {**os.environ, "PYTHONPATH": str(site)}
    out = subprocess.run(
        [sys.executable, "-m", "relay", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert out.returncode != 0 and "No module named 'spf'" in out.stderr
    assert "listening" not in out.stderr
