"""``relay queue``: the queue's counts, its destination domains and messages, and operator control
(retry, suspend/resume, bounce, purge, cancel)."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from relay.cli.common import (
    EX_FAILED,
    EX_USAGE,
    CommandError,
    Parents,
    Subparsers,
    UsageError,
    action,
    command_group,
    duration,
    now,
    when,
    with_store,
)
from relay.cli.output import Column, Report, table
from relay.config import Config
from relay.message import domain_key, domain_name_fault
from relay.store.protocols import Storage
from relay.store.queue import Attempt, DomainQueue, MessageRecord, QueueSummary, Selection


def add_commands(sub: Subparsers[argparse.ArgumentParser], parents: Parents) -> None:
    queue, actions = command_group(sub, "queue", "show and control the queue (default: counts)", parents)
    queue.set_defaults(func=counts)
    action(actions, "domains", "waiting recipients by destination domain", domains, parents)
    p = action(actions, "show", "one message, its recipients and attempts", show, parents)
    p.add_argument("message_id")
    selection = _selection_parser()
    action(actions, "retry", "make waiting recipients due now", retry, parents, selection)
    p = action(actions, "suspend", "hold a destination domain for a while", suspend, parents)
    p.add_argument("domain")
    p.add_argument("--for", dest="duration", default="1h", help='how long, e.g. "30m" (default 1h)')
    p.add_argument("--reason", default="")
    p = action(actions, "resume", "end a suspension", resume, parents)
    p.add_argument("domain")
    p = action(actions, "bounce", "bounce waiting recipients", bounce, parents, selection)
    p.add_argument("--reason", default="bounced by the operator")
    purge_help = "remove waiting recipients from the queue, without a bounce (postsuper -d)"
    action(actions, "purge", purge_help, purge, parents, selection)
    p = action(actions, "cancel", "cancel a message's waiting recipients", cancel, parents)
    p.add_argument("message_id")


def _selection_parser() -> argparse.ArgumentParser:
    selection = argparse.ArgumentParser(add_help=False)
    group = selection.add_argument_group("which waiting recipients (filters combine; one is required)")
    group.add_argument("--message", metavar="ID")
    group.add_argument("--domain", help="recipient domain")
    group.add_argument("--sender", help="envelope sender")
    group.add_argument("--recipient", help="recipient address")
    group.add_argument("--older-than", metavar="AGE", help='accepted more than AGE ago, e.g. "2d"')
    group.add_argument("--all", action="store_true", help="every waiting recipient")
    return selection


def counts(args: argparse.Namespace, config: Config) -> Report:
    summary = with_store(config, lambda s: s.queue.summary())
    return Report(dataclasses.asdict(summary), _counts_text(summary))


def _counts_text(summary: QueueSummary) -> list[str]:
    text = ["recipients by state:", *(f"  {state:11} {count}" for state, count in summary.by_state.items())]
    if summary.by_domain:
        text.append("pending by domain (queued / deferred / sending):")
        for domain, n in sorted(summary.by_domain.items()):
            text.append(f"  {domain:30} {n.get('queued', 0)} / {n.get('deferred', 0)} / {n.get('sending', 0)}")
    return text


DOMAIN_COLUMNS: list[Column[DomainQueue]] = [
    Column("domain", lambda q: q.domain, "32"),
    Column("queued", lambda q: q.queued, ">7"),
    Column("deferred", lambda q: q.deferred, ">8"),
    Column("sending", lambda q: q.sending, ">7"),
    Column("oldest", lambda q: when(q.oldest), "20", gap="  "),
    Column("suspended until", lambda q: when(q.suspended_until)),
]


def domains(args: argparse.Namespace, config: Config) -> Report:
    queues = with_store(config, lambda s: s.queue.domain_queues())
    return Report([dataclasses.asdict(q) for q in queues], table(queues, DOMAIN_COLUMNS, header=True))


Attempts = dict[str, list[Attempt]]


def show(args: argparse.Namespace, config: Config) -> Report:
    async def load(s: Storage) -> tuple[MessageRecord | None, Attempts]:
        message = await s.queue.message(args.message_id)
        if message is None:
            return None, {}
        return message, {r.address: await s.queue.attempts(message.id, r.address) for r in message.recipients}

    message, attempts = with_store(config, load)
    if message is None:
        raise CommandError(f"no message {args.message_id}")
    data: dict[str, Any] = dataclasses.asdict(message)
    data["attempts"] = {a: [dataclasses.asdict(x) for x in lst] for a, lst in attempts.items()}
    return Report(data, _message_text(message, attempts))


def _message_text(message: MessageRecord, attempts: Attempts) -> list[str]:
    text = [
        f"{message.id}  from <{message.sender}>  {message.size} bytes  via {message.source}",
        f"queued:  {when(message.created_at)}",
        f"subject: {message.subject}",
    ]
    for r in message.recipients:
        text.append(f"  <{r.address}> {r.state}, {r.attempts} attempts, next {when(r.next_attempt_at)}")
        text.extend(
            f"    {when(a.at)} {a.mx_host or '-'} [{a.ip or '-'}] {a.tls or 'plain'}: {a.code or ''} {a.text}"
            for a in attempts.get(r.address, [])
        )
    return text


def _selection(args: argparse.Namespace) -> Selection:
    """The recipients a queue command applies to; a bad filter exits with 1, a missing one with 2."""
    age = duration("--older-than", args.older_than, status=EX_FAILED) if args.older_than else None
    selection = Selection(
        message_id=args.message,
        domain=args.domain,
        sender=args.sender,
        recipient=args.recipient,
        created_before=None if age is None else now() - age,
    )
    if selection.is_everything and not args.all:
        raise CommandError(
            "say which recipients: --message, --domain, --sender, --recipient, --older-than or --all", EX_USAGE
        )
    return selection


def retry(args: argparse.Namespace, config: Config) -> Report:
    selection = _selection(args)
    count = with_store(config, lambda s: s.queue.retry_now(selection))
    text = f"{count} recipients are due now (the running relay picks them up within [delivery] poll_interval)"
    return Report({"retried": count}, [text])


def suspend(args: argparse.Namespace, config: Config) -> Report:
    fault = domain_name_fault(args.domain)
    if fault is not None:
        raise UsageError(f"{args.domain!r} {fault}")
    seconds = duration("--for", args.duration)
    until = with_store(config, lambda s: s.queue.suspend_domain(args.domain, seconds, args.reason))
    domain = domain_key(args.domain)
    text = f"{domain} suspended until {when(until)}: its recipients wait, without attempts"
    return Report({"domain": domain, "suspended_until": until}, [text])


def resume(args: argparse.Namespace, config: Config) -> Report:
    resumed = with_store(config, lambda s: s.queue.resume_domain(args.domain))
    domain = domain_key(args.domain)
    data = {"domain": domain, "resumed": resumed}
    if resumed:
        return Report(data, [f"{domain} resumed"])
    return Report(data, status=EX_FAILED, error=f"{args.domain} was not suspended")


def bounce(args: argparse.Namespace, config: Config) -> Report:
    selection = _selection(args)
    count = with_store(config, lambda s: s.queue.admin_bounce(args.reason, selection))
    return Report({"bounced": count}, [f"{count} recipients bounced"])


def purge(args: argparse.Namespace, config: Config) -> Report:
    selection = _selection(args)
    count = with_store(config, lambda s: s.queue.purge(selection))
    return Report({"purged": count}, [f"{count} recipients purged from the queue"])


def cancel(args: argparse.Namespace, config: Config) -> Report:
    cancelled = with_store(config, lambda s: s.queue.cancel_message(args.message_id))
    text = f"cancelled {len(cancelled)} recipients" + (f": {', '.join(cancelled)}" if cancelled else "")
    return Report({"id": args.message_id, "cancelled": cancelled}, [text])
