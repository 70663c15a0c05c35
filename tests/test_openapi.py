"""The OpenAPI document is true to the code, and fuzzing the API from it finds no server error."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

from relay.api.openapi import document
from tests.conftest import config_dict, run_cli, write_toml

SPEC = document()


def spec_operations() -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, item in SPEC["paths"].items() for method in item}


async def test_every_route_is_documented_and_nothing_else(relay_factory):
    relay = await relay_factory(delivery={"smarthost": "127.0.0.1:9"})
    app = relay._http_runner.app
    routes = set()
    for route in app.router.routes():
        path = route.resource.canonical if route.resource else ""
        if route.method in ("HEAD", "*") or (path.endswith("/") and path != "/"):
            continue
        if path == "/" or path.startswith("/dashboard/"):  # the dashboard's pages, not the API
            continue
        routes.add((route.method, path))
    assert routes == spec_operations()


async def test_the_document_is_served_without_auth(relay_factory):
    import aiohttp

    relay = await relay_factory(delivery={"smarthost": "127.0.0.1:9"})
    host, port = relay.http_address
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://{host}:{port}/v1/openapi.json") as resp:
            assert resp.status == 200
            served = await resp.json()
    assert served["openapi"] == "3.1.0" and served["paths"].keys() == SPEC["paths"].keys()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def live_api(tmp_path_factory):
    """The relay as a process for the fuzzer (schemathesis calls it with a blocking client)."""
    tmp = tmp_path_factory.mktemp("fuzz")
    port = _free_port()
    config = write_toml(
        tmp / "relay.toml",
        config_dict(
            tmp / "data",
            http={"listen": f"127.0.0.1:{port}", "rate_limit": "1000000/h"},
            delivery={"smarthost": "127.0.0.1:9", "retry_schedule": ["1h"]},
        ),
    )
    key = json.loads(run_cli("keys", "create", "--scope", "admin", "--json", config=config).stdout)["key"]
    log = (tmp / "relay.log").open("wb")
    env = {k: v for k, v in os.environ.items() if k != "RELAY_CONFIG"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "relay", "serve", "--config", str(config)], stdout=log, stderr=subprocess.STDOUT, env=env
    )
    deadline = time.monotonic() + 15
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise AssertionError((tmp / "relay.log").read_text()) from None
            time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", key, tmp / "relay.log"
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)
    log.close()


# Webhook endpoints that take or call a URL are left out: a fuzzed URL would make relay resolve
# and call made-up hosts, and the tests never touch real DNS. tests/test_webhooks.py covers them.
# Domain verification is left out for the same reason (it queries DNS for the domain); adding domains
# too (each makes an RSA key). tests/test_domains.py covers them against a DNS server on loopback.
schema = (
    schemathesis.openapi.from_dict(SPEC)
    .exclude(path_regex="^/v1/webhooks", method=["POST", "PUT", "PATCH"])
    .exclude(path_regex="^/v1/domains", method=["POST"])
    .exclude(path_regex="/verify$")
)


@schema.parametrize()
@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
def test_fuzz_the_api_from_its_document(case, live_api):
    url, key, log = live_api
    response = case.call(base_url=url, headers={"Authorization": f"Bearer {key}"})
    assert response.status_code < 500, response.text
    # Every other check applies. Two do not fit the API's documented conventions: the schema
    # cannot say which strings are valid addresses (schema-valid bodies may get a 400 naming the
    # field), and unknown query parameters and body fields are ignored rather than refused.
    case.validate_response(
        response,
        headers={"Authorization": f"Bearer {key}"},
        excluded_checks=[positive_data_acceptance, negative_data_rejection],
    )


def test_the_fuzzed_server_logged_no_internal_error(live_api):
    _, _, log = live_api
    text = Path(log).read_text(errors="replace")
    assert not re.search(r"internal error|Traceback", text), text[-3000:]


def test_every_operation_has_a_stable_snake_case_id_and_a_tag():
    declared = {t["name"] for t in SPEC["tags"]}
    ids = []
    for path, item in SPEC["paths"].items():
        for method, op in item.items():
            assert re.fullmatch(r"[a-z]+(_[a-z0-9]+)*", op.get("operationId", "")), (method, path)
            assert len(op["tags"]) == 1 and op["tags"][0] in declared, (method, path)
            ids.append(op["operationId"])
    assert len(ids) == len(set(ids)) == len(spec_operations())
    assert {"send_message", "get_message", "send_batch", "resend_message", "get_quotas"} <= set(ids)


def test_message_schemas_carry_templates_and_send_at():
    request = SPEC["components"]["schemas"]["MessageRequest"]["properties"]
    assert {"template_id", "template_version", "variables", "send_at"} <= request.keys()
    assert "send_at" in SPEC["components"]["schemas"]["Message"]["properties"]
    to = request["to"]["oneOf"]
    assert {"$ref": "#/components/schemas/Address"} in to and {"type": "string"} in to
