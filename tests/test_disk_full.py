"""A full data volume (a small tmpfs): SMTP answers 452, HTTP 503, nothing accepted is lost, and service
comes back when space does."""

from __future__ import annotations

import asyncio
import errno
import os
import smtplib
import subprocess

import aiohttp
import pytest

from relay.app import Relay
from relay.keys import create_api_key
from tests.conftest import make_config


def smtp_send(port: int, rcpt: str, lines: int = 30) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
        smtp.sendmail("a@example.com", [rcpt], f"Subject: {rcpt}\r\n\r\n" + ("x" * 70 + "\r\n") * lines)


def fill(path: str) -> None:
    """Write until the volume says ENOSPC."""
    with open(path, "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            assert exc.errno == errno.ENOSPC


@pytest.fixture
def volume(tmp_path):
    mount = tmp_path / "volume"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs (the tests run as root): {done.stderr.decode()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


@pytest.mark.parametrize("lines", [30, 400])  # 2 KB bodies in the database, 29 KB ones in the spool
async def test_full_disk_refuses_then_recovers(volume, sink, lines):
    config = make_config(volume / "data", server={"min_free_disk": 0}, delivery={"smarthost": sink.address})
    relay = Relay(config)
    await relay.start()
    try:
        _, key = await create_api_key(relay.store.keys, relay.store.clock, "t", ("send",))
        port = relay.smtp_addresses[0][1]
        for i in range(3):
            await asyncio.to_thread(smtp_send, port, f"before{i}@one.example", lines)
        await sink.handler.wait_for(3)

        await asyncio.to_thread(fill, str(volume / "filler"))
        with pytest.raises(smtplib.SMTPDataError) as refused:
            for i in range(20):  # the WAL may still hold some room; it runs out within a few messages
                await asyncio.to_thread(smtp_send, port, f"during{i}@one.example", lines)
        assert refused.value.smtp_code == 452
        host, http_port = relay.http_address
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as s:
            async with s.post(
                f"http://{host}:{http_port}/v1/messages",
                json={"from": "a@example.com", "to": "http@one.example", "subject": "s", "text": "x" * 5000},
            ) as r:
                assert r.status == 503 and (await r.json())["error"]["code"] == "service_unavailable"

        (volume / "filler").unlink()
        await asyncio.to_thread(smtp_send, port, "after@one.example", lines)
        received = await sink.handler.wait_for(4, timeout=20)
        arrived = {r.rcpt_tos[0] for r in received}
        assert "after@one.example" in arrived and all(f"before{i}@one.example" in arrived for i in range(3))
        for _ in range(100):  # the last outcome is being recorded
            states = {k: v for k, v in (await relay.store.queue.summary()).by_state.items() if v}
            if states == {"delivered": len(arrived)}:
                break
            await asyncio.sleep(0.05)
        # Every message that got a 250 (before, during until the disk filled, after) was delivered; no other.
        assert states == {"delivered": len(arrived)}
    finally:
        await relay.stop()
