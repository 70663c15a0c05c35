"""The SMTP listener's connection factory: later connections are made from the first one's shared
attributes instead of by aiosmtpd's SMTP.__init__, and must come out the same."""

from __future__ import annotations

import asyncio
import smtplib
import types
from typing import Any

from relay.submission.smtp import ConnectionFactory, SubmissionSMTP

# What asyncio.StreamReaderProtocol makes anew for each connection (compared by type only).
PER_CONNECTION = {"_stream_reader_wr", "_strong_reader", "_closed", "_drain_waiters", "_client_connected_cb"}


def assert_same_server(made: SubmissionSMTP, cloned: SubmissionSMTP) -> None:
    assert vars(made).keys() == vars(cloned).keys()
    for name, value in vars(made).items():
        other = vars(cloned)[name]
        if name in PER_CONNECTION:
            assert type(value) is type(other), name
            assert other is not value, name
        elif name in ConnectionFactory.REBOUND:
            assert value.keys() == other.keys(), name
            for key, bound in value.items():
                method, copy = (bound.method, other[key].method) if name == "_auth_methods" else (bound, other[key])
                assert method.__func__ is copy.__func__, (name, key)
                if method.__self__ is made:  # the server's own methods: bound to the new object
                    assert copy.__self__ is cloned, (name, key)
                else:  # the handler's: shared
                    assert copy.__self__ is method.__self__, (name, key)
                if name == "_auth_methods":
                    assert bound.is_builtin == other[key].is_builtin
        elif isinstance(value, types.MethodType):
            assert value.__func__ is other.__func__ and other.__self__ is cloned, name
        else:
            assert value == other or (value is None and other is None), name


async def test_a_cloned_connection_is_what_smtp_init_makes(relay_factory: Any) -> None:
    relay = await relay_factory()
    for factory in relay.smtp_factories:
        first = factory()  # made by SMTP.__init__; later ones are cloned
        cloned, another = factory(), factory()
        assert_same_server(factory._make(), cloned)
        assert cloned._smtp_methods["MAIL"].__self__ is cloned and another._smtp_methods["MAIL"].__self__ is another
        assert cloned._stream_reader is not another._stream_reader
        assert first._auth_methods.keys() == cloned._auth_methods.keys() == {"PLAIN", "LOGIN"}


async def test_many_connections_each_carry_a_message(relay_factory: Any) -> None:
    relay = await relay_factory(smtp={"trusted_networks": ["127.0.0.1/32"]})
    host, port = relay.smtp_addresses[0]

    def send(n: int) -> dict[str, tuple[int, bytes]]:
        with smtplib.SMTP(host, port) as client:
            client.ehlo("client.test")
            return client.sendmail("a@example.com", [f"b{n}@example.org"], b"Subject: x\r\n\r\nhi\r\n")

    refused = [await asyncio.to_thread(send, n) for n in range(4)]
    assert refused == [{}] * 4

    def help_texts() -> tuple[bytes, bytes]:
        with smtplib.SMTP(host, port) as client:
            return client.help(), client.help("MAIL")

    listing, mail = await asyncio.to_thread(help_texts)  # HELP walks the command table of a cloned connection
    assert b"MAIL" in listing and b"RCPT" in listing and b"QUIT" in listing
    assert b"MAIL FROM:" in mail, mail
    assert sum((await relay.store.queue.state_counts()).values()) == 4
