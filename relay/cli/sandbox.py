"""``relay sandbox``: the mail captured instead of delivered (sandbox mode, test keys and credentials)."""

from __future__ import annotations

import argparse
from typing import Any

from relay.cli.common import CommandError, Parents, Subparsers, UsageError, action, command_group, when, with_store
from relay.cli.output import Report
from relay.config import Config
from relay.store.queue import MessageRecord

NONE_CAPTURED = "no captured messages (mail is captured in sandbox mode and from test keys and credentials)"


def add_commands(sub: Subparsers[argparse.ArgumentParser], parents: Parents) -> None:
    help = "mail captured instead of delivered (sandbox mode, test keys)"
    _, actions = command_group(sub, "sandbox", help, parents)
    p = action(actions, "list", "captured messages, newest first", list_messages, parents)
    p.add_argument("--limit", type=int, default=20, help="how many (default 20)")
    p = action(actions, "show", "one captured message: envelope, headers, bodies", show, parents)
    p.add_argument("message_id")
    p.add_argument("--raw", action="store_true", help="print the message as stored (RFC 5322)")


def _states(message: MessageRecord) -> str:
    return ", ".join(sorted({r.state for r in message.recipients})) or "-"


def _summary(m: MessageRecord) -> str:
    to = ", ".join(f"<{r.address}>" for r in m.recipients)
    return f"{m.id}  {when(m.created_at)}  {_states(m):10} <{m.sender}> -> {to}  {m.subject}"


def list_messages(args: argparse.Namespace, config: Config) -> Report:
    from relay.api.messages import message_json

    if args.limit <= 0:
        raise UsageError("--limit must be positive")
    messages = with_store(config, lambda s: s.queue.sandbox_messages(None, args.limit))
    text = [_summary(m) for m in messages] if messages else [NONE_CAPTURED]
    return Report([message_json(m) for m in messages], text)


def show(args: argparse.Namespace, config: Config) -> Report:
    from relay.api.sandbox import sandbox_json

    found = with_store(config, lambda s: s.queue.sandbox_message(args.message_id))
    if found is None:
        raise CommandError(f"no sandboxed message {args.message_id}")
    message, raw = found
    if args.raw:
        if raw is None:
            raise CommandError(f"the body of {message.id} was deleted ([retention] bodies)")
        return Report(raw=raw)
    data = sandbox_json(message, raw)
    return Report(data, _message_text(message, data, raw is not None))


def _message_text(message: MessageRecord, data: dict[str, Any], has_body: bool) -> list[str]:
    text = [
        f"{message.id}  {when(message.created_at)}  via {message.source}  {_states(message)}",
        f"envelope: <{message.sender}> -> {', '.join(f'<{a}>' for a in data['envelope']['to'])}",
    ]
    if not has_body:
        return [*text, "(the body was deleted: [retention] bodies)"]
    text += ["", *(f"{h['name']}: {h['value']}" for h in data["headers"])]
    text += [f"\n--- {part}\n{data[part].rstrip()}" for part in ("text", "html") if data[part] is not None]
    if data["attachments"]:
        text.append("\n--- attachments")
        text += [
            f"  {a['filename'] or '(no name)'}  {a['content_type']}  {a['size']} bytes" for a in data["attachments"]
        ]
    return text
