"""The relay as a real process: submit over SMTP and HTTP, deliver to a sink, survive SIGKILL."""

from __future__ import annotations

import asyncio
import json
import smtplib
from pathlib import Path

import aiohttp

from tests.conftest import run_cli, start_sink

BODY = b"From: a@example.com\r\nTo: b@example.org\r\nSubject: e2e\r\n\r\nThe body, byte for byte.\r\n..dot\r\n"


def smtp_submit(port: int, rcpts: list[str], body: bytes = BODY) -> str:
    with smtplib.SMTP("127.0.0.1", port, local_hostname="client.test", timeout=10) as smtp:
        smtp.ehlo()
        smtp.mail("a@example.com")
        for r in rcpts:
            assert smtp.rcpt(r)[0] == 250
        code, text = smtp.data(body)
    assert code == 250, text
    return text.decode().rsplit(" ", 1)[1]


def queue_json(proc) -> dict:
    result = run_cli("queue", "--json", config=proc.config_path)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


async def wait_until(predicate, timeout: float = 15.0, interval: float = 0.1) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await asyncio.to_thread(predicate):
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(interval)


async def test_smtp_and_http_submissions_arrive_at_the_sink(relay_process, sink):
    proc = relay_process(delivery={"smarthost": sink.address})
    await proc.start()
    key = json.loads(run_cli("keys", "create", "--scope", "send", "--json", config=proc.config_path).stdout)["key"]
    assert key.startswith("rly_live_")

    queue_id = await asyncio.to_thread(smtp_submit, proc.smtp_port, ["b@example.org"])
    payload = {"from": "api@example.com", "to": ["c@example.net"], "subject": "via http", "text": "HTTP body\n"}
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"http://127.0.0.1:{proc.http_port}/v1/messages", json=payload, headers={"Authorization": f"Bearer {key}"}
        ) as resp:
            assert resp.status == 202
            http_id = (await resp.json())["id"]
    received = await sink.handler.wait_for(2)
    by_rcpt = {m.rcpt_tos[0]: m for m in received}
    assert by_rcpt["b@example.org"].mail_from == "a@example.com"
    assert by_rcpt["b@example.org"].data.endswith(BODY)
    assert f"id {queue_id}".encode() in by_rcpt["b@example.org"].data
    assert by_rcpt["c@example.net"].mail_from == "api@example.com"
    assert b"\r\n\r\nHTTP body\r\n" in by_rcpt["c@example.net"].data
    assert http_id != queue_id
    await wait_until(lambda: queue_json(proc)["by_state"]["delivered"] == 2)
    assert await proc.terminate() == 0
    assert "relay stopped" in proc.log()


async def test_accepted_mail_survives_sigkill_before_delivery(relay_process):
    # Reserve a port for the sink, then leave it closed: the destination is down.
    probe = await start_sink()
    port = probe.port
    probe.server.close()
    await probe.server.wait_closed()
    proc = relay_process(delivery={"smarthost": f"127.0.0.1:{port}", "retry_schedule": ["1s"]})
    await proc.start()
    await asyncio.to_thread(smtp_submit, proc.smtp_port, ["survivor@example.org"])
    proc.kill()
    by_state = queue_json(proc)["by_state"]
    assert by_state["queued"] + by_state["deferred"] + by_state["sending"] == 1

    sink = await start_sink(port)
    try:
        await proc.start()
        (m,) = await sink.handler.wait_for(1)
        assert m.rcpt_tos == ["survivor@example.org"] and m.data.endswith(BODY)
        await wait_until(lambda: queue_json(proc)["by_state"]["delivered"] == 1)
    finally:
        await sink.stop()


async def test_sigkill_in_the_middle_of_a_delivery_redelivers_after_restart(relay_process, sink):
    sink.handler.data_delay = 30  # the destination is slow: the relay dies while waiting for it
    proc = relay_process(delivery={"smarthost": sink.address})
    await proc.start()
    await asyncio.to_thread(smtp_submit, proc.smtp_port, ["inflight@example.org"])
    await asyncio.wait_for(sink.handler.data_started.wait(), 10)
    assert queue_json(proc)["by_state"]["sending"] == 1
    proc.kill()

    sink.handler.data_delay = 0
    await proc.start()  # the restarted node takes back its own leases at once
    (m,) = await sink.handler.wait_for(1)
    assert m.rcpt_tos == ["inflight@example.org"] and m.data.endswith(BODY)
    await wait_until(lambda: queue_json(proc)["by_state"]["delivered"] == 1)
    assert "returned 1 recipients leased before a restart" in proc.log()


async def test_sigterm_lets_a_delivery_finish_then_exits(relay_process, sink):
    sink.handler.data_delay = 1
    proc = relay_process(delivery={"smarthost": sink.address})
    await proc.start()
    await asyncio.to_thread(smtp_submit, proc.smtp_port, ["graceful@example.org"])
    await asyncio.wait_for(sink.handler.data_started.wait(), 10)
    assert await proc.terminate() == 0
    assert queue_json(proc)["by_state"]["delivered"] == 1
    assert len(sink.handler.received) == 1


async def test_acceptor_processes_share_the_queue_and_stop_together(relay_process, sink):
    proc = relay_process(server={"acceptors": 2}, delivery={"smarthost": sink.address})
    await proc.start()
    await wait_until(lambda: proc.log().count("started acceptor process") == 2)
    key = json.loads(run_cli("keys", "create", "--json", config=proc.config_path).stdout)["key"]
    ids = await asyncio.gather(
        *(asyncio.to_thread(smtp_submit, proc.smtp_port, [f"r{i}@example.org"]) for i in range(20))
    )
    payload = {"from": "api@example.com", "to": "h@example.net", "text": "x"}
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"http://127.0.0.1:{proc.http_port}/v1/messages", json=payload, headers={"Authorization": f"Bearer {key}"}
        ) as resp:
            assert resp.status == 202
    received = await sink.handler.wait_for(21)
    assert len({m.rcpt_tos[0] for m in received}) == 21
    assert len(set(ids)) == 20
    await wait_until(lambda: queue_json(proc)["by_state"]["delivered"] == 21)
    children = child_pids(proc.proc.pid)
    assert len(children) == 2
    assert await proc.terminate() == 0
    for pid in children:
        await wait_until(lambda pid=pid: not alive(pid))
    assert "restarting" not in proc.log()


def child_pids(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def test_sighup_reloads_delivery_policy_and_refuses_a_broken_file(relay_process, sink):
    import signal

    from tests.conftest import config_dict, write_toml

    dead = {"*": {"smarthost": "127.0.0.1:9"}}
    proc = relay_process(delivery={"routes": dead, "retry_schedule": ["1s"]})
    await proc.start()
    await asyncio.to_thread(smtp_submit, proc.smtp_port, ["b@example.org"])
    await wait_until(lambda: "deferred" in proc.log())

    # Point the route at the sink, and change something that needs a restart.
    data_dir = proc.config_path.parent / "data"
    fixed = config_dict(
        data_dir,
        delivery={"routes": {"*": {"smarthost": sink.address}}, "retry_schedule": ["1s"]},
        smtp={"max_message_size": "1MB"},
    )
    write_toml(proc.config_path, fixed)
    proc.proc.send_signal(signal.SIGHUP)
    await sink.handler.wait_for(1, timeout=15)
    log = proc.log()
    assert "configuration reloaded" in log
    assert "not applied until a restart: smtp.max_message_size" in log

    proc.config_path.write_text("[delivery]\nconcurrency = 'many'\n")
    proc.proc.send_signal(signal.SIGHUP)
    await wait_until(lambda: "reload refused" in proc.log())
    assert proc.proc.poll() is None
    await asyncio.to_thread(smtp_submit, proc.smtp_port, ["c@example.org"])
    await sink.handler.wait_for(2, timeout=15)
