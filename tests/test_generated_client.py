"""A client generated from the served OpenAPI document (openapi-python-client, as a user would) works.

The document is fetched from the relay on loopback and handed to the generator as a file; nothing
touches the internet. The generator must find nothing to warn about, name operations by their
operationId (send_message, not post_v1_messages) and group them by tag.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import importlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp
import pytest

from relay.clock import iso
from relay.keys import create_api_key

PACKAGE = "relay_generated_client"


def generate(spec: Path, where: Path) -> None:
    config = where / "generator.json"
    # The raw message endpoints answer message/rfc822; the generator reads such a body as a file.
    config.write_text(
        json.dumps(
            {
                "post_hooks": [],
                "package_name_override": PACKAGE,
                "content_type_overrides": {"message/rfc822": "application/octet-stream"},
            }
        )
    )
    command = [
        sys.executable,
        "-m",
        "openapi_python_client",
        "generate",
        "--path",
        str(spec),
        "--output-path",
        str(where / PACKAGE),
        "--meta",
        "none",
        "--config",
        str(config),
        "--fail-on-warning",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=where)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture
def importable(tmp_path: Path) -> Iterator[Path]:
    """A folder on sys.path for the generated package, removed (with the modules) afterwards."""
    sys.path.insert(0, str(tmp_path))
    yield tmp_path
    sys.path.remove(str(tmp_path))
    for name in [n for n in sys.modules if n == PACKAGE or n.startswith(PACKAGE + ".")]:
        del sys.modules[name]


def module(name: str) -> ModuleType:
    return importlib.import_module(f"{PACKAGE}.{name}")


async def test_a_generated_client_sends_a_templated_scheduled_message(relay_factory, sink, importable):
    relay = await relay_factory(delivery={"smarthost": sink.address})
    _, key = await create_api_key(relay.store.keys, relay.store.clock, "client", ("send", "read", "templates"))
    host, port = relay.http_address
    base_url = f"http://{host}:{port}"
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base_url}/v1/openapi.json") as resp:
            (importable / "openapi.json").write_bytes(await resp.read())
    await asyncio.to_thread(generate, importable / "openapi.json", importable)

    client = importlib.import_module(PACKAGE).AuthenticatedClient(base_url=base_url, token=key)
    models: Any = module("models")
    template = await module("api.templates.create_template").asyncio(
        client=client,
        body=models.CreateTemplateBody(name="welcome", subject="Hi {{ name }}", text="Welcome, {{ name }}."),
    )
    assert isinstance(template, models.Template), template

    send_at = iso(time.time() + 3)
    request = models.MessageRequest(
        from_=models.Address(email="app@example.com", name="The App"),
        to=["ann@one.example"],
        template_id=template.id,
        variables=models.MessageRequestVariablesType0.from_dict({"name": "Ann"}),
        send_at=send_at,
    )
    accepted = await module("api.messages.send_message").asyncio_detailed(client=client, body=request)
    assert accepted.status_code == 202, accepted.content
    assert accepted.parsed.status.value == "scheduled"
    assert [(r.email, r.status.value) for r in accepted.parsed.recipients] == [("ann@one.example", "scheduled")]

    message = await module("api.messages.get_message").asyncio(client=client, id=accepted.parsed.id)
    assert isinstance(message, models.Message), message
    assert message.subject == "Hi Ann" and message.from_ == "app@example.com"
    assert iso(message.send_at.timestamp()) == send_at
    assert [r.status.value for r in message.recipients] == ["scheduled"]
    scheduled = await module("api.scheduled.get_scheduled_message").asyncio(client=client, id=message.id)
    assert isinstance(scheduled, models.Message) and scheduled.id == message.id
    page = await module("api.scheduled.list_scheduled_messages").asyncio(client=client)
    assert isinstance(page, models.MessageList) and [m.id for m in page.data] == [message.id]

    (received,) = await sink.handler.wait_for(1, timeout=20)  # at its send_at
    sent = email.message_from_bytes(received.data, policy=email.policy.default)
    assert sent["Subject"] == "Hi Ann" and sent["From"].addresses[0].display_name == "The App"
    assert sent.get_content().strip() == "Welcome, Ann."
    await client.get_async_httpx_client().aclose()
