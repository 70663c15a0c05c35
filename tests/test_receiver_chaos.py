"""A receiver that misbehaves at random (replies, stalls, drops, broken TLS): every message still ends in
exactly one final state, and the counts add up."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

from aiosmtpd.smtp import SMTP, Envelope, Session

from relay.clock import FakeClock
from relay.delivery.client import SmtpClient
from relay.delivery.engine import Engine, EngineSettings
from relay.delivery.mx import Router
from relay.delivery.retry import RetryPolicy
from relay.tls import server_context, write_self_signed
from tests.test_delivery_shaping import queue

FINAL = {"delivered", "bounced", "failed"}


class ChaosHandler:
    """Per transaction: 421, 451 or 550 at RCPT, 452 or 554 after DATA, a stall past the client's timeout,
    a dropped connection in DATA — or a normal 250."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.accepted: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        roll = self.rng.random()
        if roll < 0.05:
            self.faults["421"] += 1
            return "421 4.7.0 try again later"
        if roll < 0.15:
            self.faults["451"] += 1
            return "451 4.3.0 temporary local problem"
        if roll < 0.20:
            self.faults["550"] += 1
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 ok"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        roll = self.rng.random()
        if roll < 0.05:
            self.faults["stall"] += 1
            await asyncio.sleep(1.0)  # the client gives up first: its attempt is a deferral
            return "451 4.4.2 too late"
        if roll < 0.10:
            self.faults["drop"] += 1
            server.transport.close()
            return "421 closing"
        if roll < 0.15:
            self.faults["452"] += 1
            return "452 4.3.1 insufficient storage"
        if roll < 0.18:
            self.faults["554"] += 1
            return "554 5.6.0 message refused"
        for rcpt in envelope.rcpt_tos:
            self.accepted[rcpt] += 1
        return "250 2.0.0 ok"


class ChaosSMTP(SMTP):
    """Offers STARTTLS and breaks it, the first time and then at random: "220 go ahead", then bytes that
    are no TLS record a client can use, then a closed connection. (Kept connections make handshakes few:
    at random alone, some runs had none to break, and the test failed for want of one.)"""

    async def smtp_STARTTLS(self, arg: str) -> None:
        handler: ChaosHandler = self.event_handler
        if not handler.faults["tls"] or handler.rng.random() < 0.15:
            handler.faults["tls"] += 1
            await self.push("220 2.0.0 Ready to start TLS")
            self.transport.write(b"\x16\x03\x03\x00\x05garbage, not a ServerHello")
            self.transport.close()
            return
        await super().smtp_STARTTLS(arg)

    for _attr in ("__smtp_syntax__", "__smtp_syntax_extended__", "__smtp_syntax_when__"):
        setattr(smtp_STARTTLS, _attr, getattr(SMTP.smtp_STARTTLS, _attr))
    del _attr


async def test_every_message_ends_in_one_final_state(tmp_path, store_factory):
    rng = random.Random(7)
    handler = ChaosHandler(rng)
    cert, key = tmp_path / "chaos.crt", tmp_path / "chaos.key"
    write_self_signed(cert, key, "chaos.test")
    tls = server_context(str(cert), str(key))
    server = await asyncio.get_running_loop().create_server(
        lambda: ChaosSMTP(handler, hostname="chaos.test", tls_context=tls, require_starttls=False), "127.0.0.1", 0
    )
    port = server.sockets[0].getsockname()[1]
    clock = FakeClock()
    store = store_factory(clock)
    settings = EngineSettings(
        owner="n",
        concurrency=10,
        lease=300,
        poll_interval=0.05,
        idle_timeout=0.2,
        retry=RetryPolicy((60,), 20 * 60, jitter=0.0),
    )
    client = SmtpClient("relay.test", connect_timeout=2, command_timeout=0.3)
    engine = Engine(store, Router(("127.0.0.1", port), 25, None), client, clock, settings, random.Random(0))
    try:
        messages = [await queue(store, *(f"u{i}-{j}@one.example" for j in range(rng.randint(1, 3)))) for i in range(60)]
        for _ in range(40):  # 20 minutes of retries, one a minute: then everything left expires
            await engine.run_once()
            clock.advance(61)
        states: Counter[str] = Counter()
        for m in messages:
            for r in await store.queue.message_status(m.id):
                states[r.state] += 1
        total = sum(len(m.recipients) for m in messages)
        assert set(states) <= FINAL, states
        assert sum(states.values()) == total
        finals = await store.db.read(
            lambda c: c.execute(
                "SELECT recipient, count(*) FROM events"
                " WHERE kind IN ('delivered', 'bounced', 'failed') GROUP BY recipient"
            ).fetchall()
        )
        assert len(finals) == total and all(n == 1 for _, n in finals)  # exactly one final event each
        delivered = {
            r.address for m in messages for r in await store.queue.message_status(m.id) if r.state == "delivered"
        }
        assert delivered <= set(handler.accepted)  # what relay calls delivered, the receiver has
        assert states["delivered"] > 0 and states["bounced"] > 0 and sum(handler.faults.values()) > 20
        assert handler.faults["tls"] > 0  # broken handshakes: opportunistic TLS fell back to plain text
        print(dict(states), dict(handler.faults))
    finally:  # a failed assertion must not leave the store's threads and the server behind
        await engine.stop(1)
        await store.close()
        server.close()
