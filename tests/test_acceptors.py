"""[server] acceptors = "auto": one acceptor process per spare core, from the file or the environment."""

from __future__ import annotations

import asyncio

import pytest

from relay import config as config_mod
from relay.config import ConfigError, auto_acceptors, available_cores
from tests.conftest import config_dict
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
