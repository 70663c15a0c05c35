"""Keys and tenancy: who may change and who may read a message (README, "Keys and tenancy")."""

from __future__ import annotations

import json
import time

from relay.keys import create_api_key
from tests.conftest import run_cli, write_toml
from tests.test_webhooks import api


async def test_only_the_sending_key_or_an_admin_changes_a_message(relay_factory, sink):
    relay = await relay_factory(delivery={"smarthost": sink.address})
    alice = (await create_api_key(relay.store.keys, relay.store.clock, "alice", ("send", "read")))[1]
    bob = (await create_api_key(relay.store.keys, relay.store.clock, "bob", ("send", "read")))[1]
    admin = (await create_api_key(relay.store.keys, relay.store.clock, "ops", ("admin",)))[1]
    later = time.time() + 3600
    body = {"from": "a@example.com", "to": ["x@example.org"], "subject": "s", "text": "t", "send_at": later}
    status, sent = await api(relay, "POST", "/v1/messages", alice, json=body)
    assert status == 202, sent
    mid = sent["id"]

    for method, path, payload in (
        ("DELETE", f"/v1/messages/{mid}", None),
        ("PATCH", f"/v1/scheduled-messages/{mid}", {"send_at": later + 60}),
        ("DELETE", f"/v1/scheduled-messages/{mid}", None),
    ):
        status, error = await api(relay, method, path, bob, **({"json": payload} if payload else {}))
        assert status == 403 and error["error"]["code"] == "not_your_message", (method, path, error)
    status, message = await api(relay, "GET", f"/v1/messages/{mid}", bob)  # bob may still read it
    assert status == 200 and message["recipients"][0]["status"] == "scheduled"

    status, _ = await api(relay, "PATCH", f"/v1/scheduled-messages/{mid}", alice, json={"send_at": later + 60})
    assert status == 200
    status, sent_b = await api(relay, "POST", "/v1/messages", bob, json=body)
    status, cancelled = await api(relay, "DELETE", f"/v1/messages/{sent_b['id']}", admin)
    assert status == 200 and cancelled["cancelled"] == ["x@example.org"]
    status, cancelled = await api(relay, "DELETE", f"/v1/messages/{mid}", alice)
    assert status == 200 and cancelled["cancelled"] == ["x@example.org"]


async def test_an_own_messages_key_reads_only_its_own(relay_factory, sink):
    relay = await relay_factory(delivery={"smarthost": sink.address})
    other = (await create_api_key(relay.store.keys, relay.store.clock, "other", ("send", "read")))[1]
    _, mine = await create_api_key(relay.store.keys, relay.store.clock, "mine", ("send", "read"), own_messages=True)
    body = {"from": "a@example.com", "to": ["x@example.org"], "subject": "s", "text": "t"}
    _, theirs = await api(relay, "POST", "/v1/messages", other, json=body)
    _, own = await api(relay, "POST", "/v1/messages", mine, json=body)
    await sink.handler.wait_for(2)

    status, _ = await api(relay, "GET", f"/v1/messages/{theirs['id']}", mine)
    assert status == 404
    status, _ = await api(relay, "GET", f"/v1/messages/{theirs['id']}/events", mine)
    assert status == 404
    status, listing = await api(relay, "GET", "/v1/messages", mine)
    assert [m["id"] for m in listing["data"]] == [own["id"]]
    status, events = await api(relay, "GET", "/v1/events", mine)
    assert events["data"] and {e["message_id"] for e in events["data"]} == {own["id"]}
    for path in ("/v1/stats", "/v1/stats/bounces"):
        status, error = await api(relay, "GET", path, mine)
        assert status == 403 and error["error"]["code"] == "own_messages_only"
    status, listing = await api(relay, "GET", "/v1/messages", other)  # a key without the flag reads all
    assert {m["id"] for m in listing["data"]} == {own["id"], theirs["id"]}


def test_keys_create_own_messages_on_the_command_line(tmp_path):
    config = write_toml(tmp_path / "relay.toml", {"server": {"data_dir": str(tmp_path / "data")}})
    out = run_cli("keys", "create", "--name", "tenant", "--scope", "read", "--own-messages", "--json", config=config)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["own_messages"] is True
