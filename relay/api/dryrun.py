"""``POST /v1/messages?dry_run=true``: what would happen to a message, with nothing written.

Every check of a real submission runs (auth and scope before this, then the
body, templates, suppression, the verified sending domain, the size, the
queue's capacity and the key's quota, without counting against it); the
answer is ``200`` with the fate of each recipient. Nothing is queued, no
Idempotency-Key record is taken, no event is written.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from relay.api.app import API_KEY, ApiError, read_json_object
from relay.clock import iso
from relay.keys import ApiKey
from relay.message import NewMessage
from relay.store.queue import Quota, QuotaExhausted
from relay.submission.accept import Acceptor
from relay.submission.capacity import Overloaded

Prepare = Callable[[dict[str, Any], ApiKey], Awaitable[tuple[NewMessage, dict[str, Any]]]]


def wants_dry_run(request: web.Request) -> bool:
    value = request.query.get("dry_run")
    if value is None or value.lower() in ("false", "0"):
        return False
    if value.lower() in ("true", "1"):
        return True
    raise ApiError(400, "invalid_field", "'dry_run' must be true or false", "dry_run")


async def dry_run(request: web.Request, prepare: Prepare, acceptor: Acceptor) -> web.Response:
    key: ApiKey = request[API_KEY]
    message, accepted = await prepare(await read_json_object(request), key)
    try:
        if acceptor.capacity is not None:
            acceptor.capacity.check()
        if key.daily_quota or key.monthly_quota:
            await acceptor.store.queue.check_quota(Quota(key.id, key.daily_quota, key.monthly_quota))
    except QuotaExhausted as exc:
        raise ApiError(402, "quota_exhausted", str(exc)) from None
    except Overloaded as exc:
        raise ApiError(503, "service_unavailable", f"submission is paused: {exc}",
                       headers={"Retry-After": str(exc.retry_after)}) from None  # fmt: skip
    return web.json_response(outcome(message, accepted, acceptor))


def outcome(message: NewMessage, accepted: dict[str, Any], acceptor: Acceptor) -> dict[str, Any]:
    """The answer: what a real submission would have done with ``message``."""
    waiting = "would_schedule" if message.send_at is not None else "would_queue"
    recipients = [
        {**r, "status": waiting} if r["status"] != "suppressed" else r for r in accepted["recipients"]
    ]  # fmt: skip
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
