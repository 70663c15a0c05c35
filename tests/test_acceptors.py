"""[server] acceptors = "auto": one acceptor process per spare core, from the file or the environment; and
[server] main_accepts: the main process takes the connections its acceptors leave waiting."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import aiohttp
import pytest

from relay import config as config_mod
from relay import workers
from relay.app import Relay
from relay.config import ConfigError, auto_acceptors, available_cores, main_process_accepts
from relay.keys import create_api_key
from relay.listening import BUSY_SHARE, OVERFLOW_DELAY
from tests.conftest import config_dict, make_config, run_cli, start_sink, write_toml
from tests.test_dkim import verifier
from tests.test_domains import publish
from tests.test_end_to_end import smtp_submit, wait_until


@pytest.mark.parametrize(("cores", "acceptors"), [(1, 0), (2, 1), (3, 2), (4, 3), (5, 4), (8, 4), (64, 4)])
def test_auto_is_one_per_spare_core_capped(cores, acceptors):
    assert auto_acceptors(cores) == acceptors


def load(tmp_path, environ=None, **server):
    return config_mod.from_dict(config_dict(tmp_path / "data", server=server), environ=environ or {})


@pytest.mark.parametrize(
    ("written", "setting", "processes"),
    [(0, 0, 0), (2, 2, 2), ("auto", "auto", auto_acceptors(available_cores())), (" AUTO ", "auto", None)],
)
def test_acceptors_in_the_file(tmp_path, written, setting, processes):
    server = load(tmp_path, acceptors=written).server
    assert server.acceptors == setting
    assert server.acceptor_processes == (auto_acceptors(available_cores()) if processes is None else processes)


@pytest.mark.parametrize(("env", "setting"), [("auto", "auto"), ("3", 3), ("0", 0)])
def test_acceptors_from_the_environment(tmp_path, env, setting):
    server = load(tmp_path, environ={"RELAY_SERVER_ACCEPTORS": env}, acceptors=1).server
    assert server.acceptors == setting


@pytest.mark.parametrize("bad", [-1, "-1", "many", "", 1.5, True])
def test_other_values_are_refused_naming_the_key(tmp_path, bad):
    with pytest.raises(ConfigError, match=r"\[server\] acceptors"):
        load(tmp_path, acceptors=bad)
    if isinstance(bad, str):
        with pytest.raises(ConfigError, match=r"\[server\] acceptors"):
            load(tmp_path, environ={"RELAY_SERVER_ACCEPTORS": bad})


@pytest.mark.parametrize(
    ("setting", "acceptors", "accepts"), [(False, 0, True), (False, 1, False), (True, 1, True), (True, 3, True)]
)
def test_the_main_process_accepts_beside_its_acceptors_only_when_told_to(setting, acceptors, accepts):
    assert main_process_accepts(setting, acceptors) is accepts


@pytest.mark.parametrize(
    ("written", "setting", "environ"),
    [(True, True, {}), (False, False, {})]
    + [(False, True, {"RELAY_SERVER_MAIN_ACCEPTS": "true"}), (True, False, {"RELAY_SERVER_MAIN_ACCEPTS": "no"})],
)
def test_main_accepts_from_the_file_or_the_environment(tmp_path, written, setting, environ):
    server = load(tmp_path, environ=environ, acceptors=2, main_accepts=written).server
    assert server.main_accepts is setting
    assert server.accepting_processes == (3 if setting else 2)


def test_main_accepts_is_on_by_default(tmp_path):
    server = load(tmp_path, acceptors=1).server
    assert server.main_process_accepts is True and server.accepting_processes == 2


@pytest.mark.parametrize("bad", ["auto", "yes", 1, 0.5])
def test_other_main_accepts_values_are_refused_naming_the_key(tmp_path, bad):
    with pytest.raises(ConfigError, match=r"\[server\] main_accepts"):
        load(tmp_path, main_accepts=bad)


def banner(port: int) -> bytes | None:
    """The first line a new SMTP connection is sent within a second; None if nobody answers."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.settimeout(1.0)
        try:
            return sock.recv(1024)
        except TimeoutError:
            return None


def implicit_tls_ehlo(port: int) -> int:
    """The EHLO reply code over implicit TLS (port 465's way)."""
    with smtplib.SMTP_SSL("127.0.0.1", port, timeout=5, context=ssl._create_unverified_context()) as client:
        return client.ehlo("client.test")[0]


@pytest.mark.parametrize("main_accepts", [True, False])
async def test_with_its_acceptor_stopped_the_main_process_answers_alone_and_keeps_its_share_of_the_rate_limit(
    relay_process, sink, main_accepts
):
    """With the acceptor process frozen (SIGSTOP), only the main process can take a connection: it answers
    SMTP (implicit TLS too) and HTTP when it accepts too, nobody does when it does not. The two processes
    share an API key's limit (counted in each one's memory with SQLite): the main process alone lets
    through half of it."""
    server = {"acceptors": 1, "main_accepts": main_accepts}
    smtp = {"tls_listen": ["127.0.0.1:0"]}
    proc = relay_process(server=server, smtp=smtp, delivery={"smarthost": sink.address})
    await proc.start()
    (acceptor,) = acceptor_pids(proc.log())
    tls_port = int(re.findall(r"listening for SMTP with implicit TLS on 127\.0\.0\.1:(\d+)", proc.log())[0])
    key = None
    if main_accepts:
        args = ("keys", "create", "--scope", "read", "--rate-limit", "4", "--json")
        done = await asyncio.to_thread(run_cli, *args, config=proc.config_path)
        assert done.returncode == 0, done.stderr
        key = json.loads(done.stdout)["key"]
    os.kill(acceptor, signal.SIGSTOP)
    try:
        first_line = await asyncio.to_thread(banner, proc.smtp_port)
        statuses, tls_ehlo = [], None
        if key is not None:
            tls_ehlo = await asyncio.to_thread(implicit_tls_ehlo, tls_port)
            async with aiohttp.ClientSession(f"http://127.0.0.1:{proc.http_port}") as session:
                for _ in range(3):
                    headers = {"Authorization": f"Bearer {key}"}
                    async with session.get("/v1/messages", headers=headers, timeout=aiohttp.ClientTimeout(5)) as r:
                        statuses.append(r.status)
    finally:
        os.kill(acceptor, signal.SIGCONT)
    if main_accepts:
        assert first_line is not None and first_line.startswith(b"220 "), first_line
        assert statuses == [200, 200, 429]  # 4 an hour between two processes: 2 for each
        assert tls_ehlo == 250
    else:
        assert first_line is None
    await asyncio.to_thread(smtp_submit, proc.smtp_port, ["after@example.org"])
    (m,) = await sink.handler.wait_for(1)
    assert m.rcpt_tos == ["after@example.org"]
    assert await proc.terminate() == 0


def seconds_to_banner(port: int) -> float:
    started = time.perf_counter()
    assert (banner(port) or b"").startswith(b"220 ")
    return time.perf_counter() - started


async def test_while_its_acceptor_says_it_is_saturated_the_main_process_takes_connections_sooner(relay_process, sink):
    """The acceptor frozen (SIGSTOP), the main process takes each connection after 5 ms; after a datagram on
    the wake-up socket saying an acceptor is saturated (what a busy acceptor sends), after 1 ms."""
    proc = relay_process(server={"acceptors": 1}, delivery={"smarthost": sink.address})
    await proc.start()
    (acceptor,) = acceptor_pids(proc.log())
    wake = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    address = workers.wake_address(config_mod.load(proc.config_path).db_path)
    os.kill(acceptor, signal.SIGSTOP)
    try:
        plain = [await asyncio.to_thread(seconds_to_banner, proc.smtp_port) for _ in range(9)]
        sooner = []
        for _ in range(9):
            wake.sendto(workers.WAKE_SATURATED, address)
            await asyncio.sleep(0.01)  # the main process has read it
            sooner.append(await asyncio.to_thread(seconds_to_banner, proc.smtp_port))
    finally:
        os.kill(acceptor, signal.SIGCONT)
        wake.close()
    # The event loop's timers count whole milliseconds: 5 ms may come a fraction of one early.
    assert min(plain) >= OVERFLOW_DELAY - 0.001, plain
    assert sorted(sooner)[4] < OVERFLOW_DELAY - 0.001 <= sorted(plain)[4], (sooner, plain)
    assert await proc.terminate() == 0


async def test_a_relay_with_auto_acceptors_from_the_environment_starts_and_accepts_mail(
    relay_process, sink, monkeypatch
):
    monkeypatch.setenv("RELAY_SERVER_ACCEPTORS", "auto")  # the relay process inherits the environment
    proc = relay_process(delivery={"smarthost": sink.address})
    await proc.start()
    expected = auto_acceptors(available_cores())
    assert f'[server] acceptors = "auto": {expected} acceptor processes' in proc.log()
    await wait_until(lambda: proc.log().count("started acceptor process") == expected)
    ids = await asyncio.gather(
        *(asyncio.to_thread(smtp_submit, proc.smtp_port, [f"r{i}@example.org"]) for i in range(5))
    )
    received = await sink.handler.wait_for(5)
    assert len(set(ids)) == 5 and sorted(m.rcpt_tos[0] for m in received) == [f"r{i}@example.org" for i in range(5)]
    assert await proc.terminate() == 0
    assert "restarting" not in proc.log()


async def test_acceptors_run_the_main_process_s_relay_whatever_the_working_directory_holds(
    relay_process, sink, tmp_path
):
    """Acceptors were started as ``python -m relay`` from the main process's working directory, so a
    ``relay`` package there (another checkout, another version) was what accepted mail."""
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "relay").mkdir(parents=True)
    (elsewhere / "relay" / "__init__.py").write_text("")
    (elsewhere / "relay" / "__main__.py").write_text("raise SystemExit('not the relay that started me')\n")
    proc = relay_process(server={"acceptors": 1}, delivery={"smarthost": sink.address})
    await proc.start(cwd=elsewhere)
    await wait_until(lambda: "started acceptor process 1" in proc.log())
    assert await asyncio.to_thread(smtp_submit, proc.smtp_port, ["r@example.org"])
    [received] = await sink.handler.wait_for(1)
    assert received.rcpt_tos == ["r@example.org"]
    assert await proc.terminate() == 0
    assert "not the relay that started me" not in proc.log() and "restarting" not in proc.log()


# ---------------------------------------------------------------------------
# Acceptors die with the main process (issue 17 item 16)


def acceptor_pids(log: str) -> list[int]:
    return [int(pid) for pid in re.findall(r"started acceptor process \d+ \(pid (\d+)\)", log)]


def running(pid: int) -> bool:
    """True while the process exists and is not a zombie (an orphan's zombie waits for whoever reaps it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def port_is_free(port: int) -> bool:
    try:
        socket.create_server(("127.0.0.1", port)).close()  # SO_REUSEADDR, as relay binds: fails while listened on
    except OSError:
        return False
    return True


class Submitter(threading.Thread):
    """Submits one message after another until stopped; remembers the recipients that got a 250."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.acknowledged: list[str] = []
        self.refused = 0
        self.done = threading.Event()

    def run(self) -> None:
        n = 0
        while not self.done.is_set():
            rcpt = f"during{n}@example.org"
            n += 1
            try:
                smtp_submit(self.port, [rcpt])
            except (OSError, smtplib.SMTPException, AssertionError):
                self.refused += 1
                time.sleep(0.02)
            else:
                self.acknowledged.append(rcpt)


async def test_killing_the_main_process_takes_its_acceptors_along_and_nothing_acknowledged_is_lost(
    relay_process, sink, tmp_path
):
    sink.handler.data_delay = 60  # deliveries are in progress when the main process dies
    proc = relay_process(server={"acceptors": 1}, delivery={"smarthost": sink.address})
    await proc.start()
    started = proc.log()[: proc.log().index("relay started")]  # said once the acceptor listens too
    assert len(acceptor_pids(started)) == 1 and started.count("listening for SMTP on") == 2
    (acceptor,) = acceptor_pids(started)
    before = [f"before{i}@example.org" for i in range(5)]
    for rcpt in before:
        await asyncio.to_thread(smtp_submit, proc.smtp_port, [rcpt])
    await asyncio.wait_for(sink.handler.data_started.wait(), 10)

    submitter = Submitter(proc.smtp_port)  # keeps submitting across the kill
    submitter.start()
    await wait_until(lambda: len(submitter.acknowledged) >= 3)
    proc.kill()  # SIGKILL to the main process only
    killed = time.monotonic()
    await wait_until(lambda: not running(acceptor), timeout=10)
    gone_after = time.monotonic() - killed
    submitter.done.set()
    await asyncio.to_thread(submitter.join, 15)
    assert gone_after < 5, f"the acceptor outlived its main process by {gone_after:.1f}s"
    assert "the main process (pid" in proc.log() and "has gone" in proc.log()
    assert port_is_free(proc.smtp_port) and port_is_free(proc.http_port)

    # A new relay on the same ports, delivering to a destination that now answers at once.
    sink.server.close()
    await sink.server.wait_closed()
    destination = await start_sink()
    ports = {"smtp": {"listen": [f"127.0.0.1:{proc.smtp_port}"]}, "http": {"listen": f"127.0.0.1:{proc.http_port}"}}
    write_toml(
        proc.config_path,
        config_dict(tmp_path / "data", server={"acceptors": 1}, delivery={"smarthost": destination.address}, **ports),
    )
    smtp_port, http_port = proc.smtp_port, proc.http_port
    try:
        await proc.start()
        assert (proc.smtp_port, proc.http_port) == (smtp_port, http_port)
        expected = set(before) | set(submitter.acknowledged)
        received = await destination.handler.wait_for(len(expected), timeout=30)
        assert expected <= {r for m in received for r in m.rcpt_tos}
        assert await proc.terminate() == 0
    finally:
        await destination.stop()


async def test_an_acceptor_whose_main_process_died_before_it_started_exits_without_accepting(tmp_path):
    """The death signal is requested in the acceptor, after the spawn: if the main process died in between,
    the check of the parent's pid that follows catches it."""
    gone = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_pid = int(gone.stdout)
    smtp, http = socket.create_server(("127.0.0.1", 0)), socket.create_server(("127.0.0.1", 0))
    path = write_toml(tmp_path / "relay.toml", config_dict(tmp_path / "data"))
    env = {
        **os.environ,
        workers.LISTEN_FDS_ENV: f"smtp={smtp.fileno()};http={http.fileno()}",
        workers.PARENT_PID_ENV: str(dead_pid),
    }
    env.pop("RELAY_CONFIG", None)
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "relay", "serve", "--config", str(path)],
        env=env,
        pass_fds=[smtp.fileno(), http.fileno()],
        capture_output=True,
        text=True,
        timeout=30,
    )
    smtp.close()
    http.close()
    assert result.returncode == 0
    assert f"the main process (pid {dead_pid}) has gone: this acceptor does not start" in result.stderr
    assert "listening for" not in result.stderr


async def test_the_parent_watch_notices_a_new_parent_pid():
    parents = [100, 100, 1]
    gone: list[bool] = []
    watch = workers.ParentWatch(
        100, lambda: gone.append(True), interval=0.01, getppid=lambda: parents[0], exiting=lambda pid: False
    )
    task = asyncio.create_task(watch.run())
    await asyncio.sleep(0.05)
    assert not gone and not watch.gone()
    parents[0] = 1  # re-parented: the main process has died
    await asyncio.wait_for(task, 1)
    assert gone == [True] and watch.gone()


def test_a_parent_that_is_exiting_counts_as_gone_before_its_children_are_re_parented():
    watch = workers.ParentWatch(100, lambda: None, getppid=lambda: 100, exiting=lambda pid: pid == 100)
    assert watch.gone()
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 10
    while not workers.process_exiting(zombie.pid):  # exited, not yet reaped: a zombie
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert not workers.process_exiting(os.getpid())
    zombie.wait()
    assert workers.process_exiting(zombie.pid)


def test_the_parent_death_signal_is_set_on_linux():
    script = "from relay.workers import set_parent_death_signal as s; print(s())"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    assert result.stdout.strip() == str(sys.platform.startswith("linux"))


class Clocks:
    """The wall clock and this thread's CPU time, in seconds, moved by the test."""

    def __init__(self) -> None:
        self.wall, self.cpu = 1000.0, 5.0

    def run(self, seconds: float, busy: float) -> None:
        self.wall += seconds
        self.cpu += seconds * busy


def test_an_event_loop_is_saturated_when_on_the_cpu_the_busy_share_of_a_window_or_more():
    clocks = Clocks()
    window = workers.LOAD_WINDOW * 1.01  # a little over: no float rounding puts it just short
    load = workers.LoopLoad(now=lambda: clocks.wall, cpu=lambda: clocks.cpu)
    assert not load.saturated()
    clocks.run(window, busy=0.9)
    assert load.saturated()
    clocks.run(window / 2, busy=0.1)  # within the next window: the last one's answer holds
    assert load.saturated()
    clocks.run(window / 2, busy=0.1)
    assert not load.saturated()  # 10% of the window just ended
    clocks.run(window * 4, busy=BUSY_SHARE + 0.01)
    assert load.saturated()
    clocks.run(window * 4, busy=BUSY_SHARE - 0.05)
    assert not load.saturated()


async def test_a_saturated_acceptor_s_nudge_says_so_and_still_wakes_the_engine(tmp_path):
    clocks = Clocks()
    address = str(tmp_path / "wake")
    wakes: list[str] = []
    listener = workers.WakeListener(address, lambda: wakes.append("wake"), lambda: wakes.append("saturated"))
    sender = workers.WakeSender(address, workers.LoopLoad(now=lambda: clocks.wall, cpu=lambda: clocks.cpu))
    plain = workers.WakeSender(address)  # an HTTP queue action's nudge: no load with it
    try:
        sender()
        await wait_until(lambda: wakes == ["wake"])
        clocks.run(workers.LOAD_WINDOW * 1.01, busy=1.0)
        sender()
        await wait_until(lambda: wakes[1:] == ["saturated", "wake"])
        plain()
        await wait_until(lambda: wakes[3:] == ["wake"])
        clocks.run(workers.LOAD_WINDOW * 1.01, busy=0.2)
        sender()
        await wait_until(lambda: len(wakes) >= 5)
        await asyncio.sleep(0.05)  # a "saturated" wrongly sent would be in by now
        assert wakes == ["wake", "saturated", "wake", "wake", "wake"]
    finally:
        listener.close()
        sender.sock.close()
        plain.sock.close()


def relay_children() -> list[int]:
    """This process's children that run ``relay serve``."""
    pids = []
    for task in Path("/proc/self/task").iterdir():
        for pid in (task / "children").read_text().split():
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if Path(f"/proc/{pid}").exists() else []
            if b"relay" in cmdline and b"serve" in cmdline:
                pids.append(int(pid))
    return pids


async def test_a_relay_made_in_process_starts_no_acceptors_and_keeps_the_whole_rate_limit(relay_factory, sink):
    """Only ``relay serve`` starts acceptor processes; a Relay object accepts and delivers itself, so its
    API enforces the whole rate limit, not an acceptor's share of it."""
    relay = await relay_factory(server={"acceptors": 3}, delivery={"smarthost": sink.address})
    assert relay.accept and relay.deliver and relay.smtp_servers and relay_children() == []
    _, key = await create_api_key(relay.store.keys, relay.store.clock, "limited", ("read",), rate_limit=3)
    host, port = relay.http_address
    async with aiohttp.ClientSession(f"http://{host}:{port}") as session:
        statuses = []
        for _ in range(4):
            async with session.get("/v1/messages", headers={"Authorization": f"Bearer {key}"}) as resp:
                statuses.append(resp.status)
    assert statuses == [200, 200, 200, 429]
    await asyncio.to_thread(smtp_submit, relay.smtp_addresses[0][1], ["inproc@example.org"])
    (m,) = await sink.handler.wait_for(1)
    assert m.rcpt_tos == ["inproc@example.org"] and relay_children() == []


def refused(port: int) -> bool:
    """Whether nothing listens on ``port`` any more (a reset: it stopped while this connection waited)."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    except ConnectionResetError:  # the listener closed with this connection in its queue: ask again
        return False
    return False


async def test_stopping_closes_every_listener_at_once_and_lets_a_transaction_in_progress_finish(tmp_path, sink):
    """What an acceptor does when its main process dies (and any relay on SIGTERM): nothing new is taken,
    neither over SMTP nor over HTTP, while the SMTP transaction in progress still gets its 250."""
    relay = Relay(make_config(tmp_path / "data", delivery={"smarthost": sink.address}))
    await relay.start()
    smtp_port, http_port = relay.smtp_addresses[0][1], relay.http_address[1]
    client = await asyncio.to_thread(smtplib.SMTP, "127.0.0.1", smtp_port, local_hostname="client.test", timeout=10)
    await asyncio.to_thread(client.ehlo)
    assert (await asyncio.to_thread(client.mail, "a@example.com"))[0] == 250
    stopping = asyncio.create_task(relay.stop())
    try:
        await wait_until(lambda: refused(smtp_port) and refused(http_port), timeout=3)
        assert not stopping.done()  # still waiting for the transaction
        assert (await asyncio.to_thread(client.rcpt, "late@example.org"))[0] == 250
        code, _ = await asyncio.to_thread(client.data, b"Subject: in progress\r\n\r\nfinished\r\n")
        assert code == 250
    finally:
        await asyncio.to_thread(client.close)
        await asyncio.wait_for(stopping, 15)


async def test_on_sigterm_a_main_process_that_accepts_stops_listening_at_once_with_its_acceptors(relay_process, sink):
    """SIGTERM to the main process alone (as `kill PID`): it stops taking connections at once, as its
    acceptor does, while the transaction in progress in each of them still gets its 250."""
    proc = relay_process(server={"acceptors": 1, "main_accepts": True}, delivery={"smarthost": sink.address})
    await proc.start()
    assert proc.proc is not None
    (acceptor,) = acceptor_pids(proc.log())
    clients = []
    for frozen in (proc.proc.pid, acceptor):  # a transaction open in each process: the other one is frozen
        os.kill(frozen, signal.SIGSTOP)
        try:
            client = await asyncio.to_thread(smtplib.SMTP, "127.0.0.1", proc.smtp_port, local_hostname="c", timeout=10)
            await asyncio.to_thread(client.ehlo)
            assert (await asyncio.to_thread(client.mail, "a@example.com"))[0] == 250
        finally:
            os.kill(frozen, signal.SIGCONT)
        clients.append(client)
    try:
        proc.proc.send_signal(signal.SIGTERM)
        await wait_until(lambda: refused(proc.smtp_port) and refused(proc.http_port), timeout=3)
        assert proc.proc.poll() is None  # still waiting for the transactions
        for i, client in enumerate(clients):
            assert (await asyncio.to_thread(client.rcpt, f"late{i}@example.org"))[0] == 250
            code, _ = await asyncio.to_thread(client.data, b"Subject: in progress\r\n\r\nfinished\r\n")
            assert code == 250
            await asyncio.to_thread(client.quit)
    finally:
        for client in clients:
            await asyncio.to_thread(client.close)
    assert await proc.terminate() == 0


# ---------------------------------------------------------------------------
# The suppression list kept in each process's memory (relay.store.suppression_sieve)


async def test_a_suppression_added_by_another_process_is_refused_at_once(relay_process, sink):
    """On SQLite the processes of one machine share the suppression list's change count through a mapped
    file: what the CLI (another process) adds is refused by the acceptor at the next RCPT."""
    proc = relay_process(server={"acceptors": 1, "main_accepts": True}, delivery={"smarthost": sink.address})
    await proc.start()
    await wait_until(lambda: "started acceptor process 1" in proc.log())

    def rcpt(address: str) -> int:
        with smtplib.SMTP("127.0.0.1", proc.smtp_port, timeout=10) as smtp:
            smtp.ehlo()
            smtp.mail("app@example.com")
            code, _ = smtp.rcpt(address)
            smtp.rset()
            return code

    for _ in range(10):  # the filters read (the first look-ups start the reading)
        assert await asyncio.to_thread(rcpt, "soon@example.org") == 250
    await asyncio.sleep(0.5)
    added = await asyncio.to_thread(run_cli, "suppressions", "add", "soon@example.org", config=proc.config_path)
    assert added.returncode == 0, added.stderr
    assert [await asyncio.to_thread(rcpt, "Soon@example.org") for _ in range(5)] == [550] * 5
    assert await asyncio.to_thread(rcpt, "other@example.org") == 250
    assert await proc.terminate() == 0


async def test_a_key_made_through_an_acceptor_signs_what_the_main_process_delivers_at_once(
    relay_process, sink, dns_server
):
    """The main process signs what it delivers. A sending domain added through an acceptor's API (the main
    process takes no connection here) is told to it on the wake-up socket, so the next message leaves signed,
    not only after its next look at the store (30 seconds)."""
    proc = relay_process(
        server={"acceptors": 1, "main_accepts": False},
        delivery={"smarthost": sink.address},
        dns={"nameservers": [f"127.0.0.1:{dns_server.port}"], "timeout": "2s"},
        domains={"require_verified_domain": False, "outbound_ips": ["192.0.2.10"], "selector": "s1"},
    )
    created = await asyncio.to_thread(
        run_cli, "keys", "create", "--name", "t", "--scope", "admin", "--json", config=proc.config_path
    )
    assert created.returncode == 0, created.stderr
    headers = {"Authorization": f"Bearer {json.loads(created.stdout)['key']}"}
    await proc.start()
    base = f"http://127.0.0.1:{proc.http_port}"
    async with aiohttp.ClientSession(headers=headers) as http:
        message = {"from": "app@example.com", "to": "bob@one.example", "subject": "s", "text": "hello"}
        async with http.post(f"{base}/v1/messages", json=message) as resp:
            assert resp.status == 202
        (unsigned,) = await sink.handler.wait_for(1)
        assert b"DKIM-Signature" not in unsigned.data  # no key yet
        async with http.post(f"{base}/v1/domains", json={"domain": "example.com"}) as resp:
            assert resp.status == 201
            publish(dns_server, (await resp.json())["records"])
        started = time.monotonic()
        async with http.post(f"{base}/v1/messages", json=message) as resp:
            assert resp.status == 202
        signed = (await sink.handler.wait_for(2))[1]
    assert signed.data.startswith(b"DKIM-Signature:") and b"d=example.com" in signed.data[:600]
    assert time.monotonic() - started < 10
    assert await asyncio.to_thread(verifier(dns_server), signed.data)
    assert await proc.terminate() == 0
