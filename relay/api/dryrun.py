"""``POST /v1/messages?dry_run=true``: what would happen to a message, with nothing written.

Every check of a real submission runs (auth and scope before this, then the
body, templates, suppression, the verified sending domain, the size, the
queue's capacity and the key's quota, without counting against it); the
answer is ``200`` with the fate of each recipient. Nothing is queued, no
Idempotency-Key record is taken, no event is written.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from relay.api.app import API_KEY, ApiError, read_json_object
from relay.clock import iso
from relay.events import WOULD, State
from relay.keys import ApiKey
from relay.message import NewMessage
from relay.submission.accept import Acceptor
from relay.submission.http import HttpSubmission, quota_of


def wants_dry_run(request: web.Request) -> bool:
    value = request.query.get("dry_run")
    if value is None or value.lower() in ("false", "0"):
        return False
    if value.lower() in ("true", "1"):
        return True
    raise ApiError(400, "invalid_field", "'dry_run' must be true or false", "dry_run")


async def dry_run(request: web.Request, submission: HttpSubmission) -> web.Response:
    key: ApiKey = request[API_KEY]
    message, accepted = await submission.prepare(await read_json_object(request), key)
    await submission.acceptor.would_queue(quota_of(key))
    return web.json_response(outcome(message, accepted, submission.acceptor))


def outcome(message: NewMessage, accepted: dict[str, Any], acceptor: Acceptor) -> dict[str, Any]:
    """The answer: what a real submission would have done with ``message``."""
    waiting = WOULD[State.SCHEDULED if message.send_at is not None else State.QUEUED]
    recipients = [{**r, "status": waiting} if r["status"] != "suppressed" else r for r in accepted["recipients"]]
    signer = acceptor.signer
    return {
        "dry_run": True,
        "status": waiting,
        **({"send_at": iso(message.send_at)} if message.send_at is not None else {}),
        "sandbox": acceptor.sandboxed(message),
        "dkim": signer is not None and signer.key_for(message.raw) is not None,
        "size": len(message.raw),
        "recipients": recipients,
    }
