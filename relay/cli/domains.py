"""``relay domains`` and ``relay dkim``: sending domains, their DKIM keys and the DNS records to publish."""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from relay.cli.common import CommandError, Parents, Subparsers, action, command_group, when, with_store
from relay.cli.output import Column, Report, table
from relay.config import Config
from relay.store.protocols import Storage

if TYPE_CHECKING:
    from relay.domains import Domain, Domains, Policy

T = TypeVar("T")
Check = tuple[str, dict[str, str]]  # check name, {"status", "hint"}

CHECK_COLUMNS: list[Column[Check]] = [
    Column("check", lambda c: c[0], "12"),
    Column("status", lambda c: c[1]["status"], "9"),
    Column("hint", lambda c: c[1]["hint"]),
]


def add_commands(sub: Subparsers[argparse.ArgumentParser], parents: Parents) -> None:
    _, domains = command_group(sub, "domains", "sending domains: DKIM keys, DNS records, verification", parents)
    p = action(domains, "add", "add a domain: makes its DKIM key, lists records", add, parents)
    p.add_argument("domain")
    action(domains, "list", "sending domains and their status", list_domains, parents)
    p = action(domains, "show", "one domain: records to publish, last checks", show, parents)
    p.add_argument("domain")
    p = action(domains, "verify", "check the published records now", verify, parents)
    p.add_argument("domain")
    p = action(domains, "remove", "remove a domain and delete its keys", remove, parents)
    p.add_argument("domain")
    _, dkim = command_group(sub, "dkim", "DKIM keys", parents)
    rotate_help = "make a new key to publish next to the current one; it signs once verify sees it"
    p = action(dkim, "rotate", rotate_help, rotate, parents)
    p.add_argument("domain")


def _call(
    config: Config, fn: Callable[[Domains, Storage], Awaitable[T]], with_policy: bool = True
) -> tuple[T, Policy | None]:
    """What ``fn`` returns, and (``with_policy``) the policy, with the outbound addresses found, that the
    records are built from. A domain that cannot be found or added is a CommandError."""
    from relay.app import make_domains
    from relay.domains import DomainError
    from relay.secrets import SecretsError

    async def run(store: Storage) -> tuple[T, Policy | None]:
        domains = make_domains(config, store, None)
        result = await fn(domains, store)
        return result, (await domains.policy() if with_policy else None)

    try:
        return with_store(config, run)
    except (DomainError, SecretsError) as exc:
        raise CommandError(str(exc)) from None


def _domain_report(domain: Domain, policy: Policy | None) -> Report:
    from relay.api.domains import domain_json
    from relay.domains import records

    assert policy is not None
    keys = ", ".join(f"{k.selector} ({k.state})" for k in domain.keys)
    text = [
        f"{domain.name}  {domain.status}  id {domain.id}  dkim {keys}",
        f"sending from: {', '.join(policy.outbound_ips) or 'unknown'} ({policy.outbound_note})",
        "records to publish:",
        *(f"  {r.type:4} {r.name}\n       {r.value}\n       ({r.purpose})" for r in records(domain, policy)),
    ]
    if domain.checks:
        text.append(f"checks ({when(domain.checked_at)}):")
        text.extend(table(domain.checks.items(), CHECK_COLUMNS, indent="  "))
    return Report(domain_json(domain, policy), text)


def add(args: argparse.Namespace, config: Config) -> Report:
    return _domain_report(*_call(config, lambda d, _: d.add(args.domain)))


def show(args: argparse.Namespace, config: Config) -> Report:
    return _domain_report(*_call(config, lambda d, _: d.get(args.domain)))


def verify(args: argparse.Namespace, config: Config) -> Report:
    return _domain_report(*_call(config, lambda d, _: d.verify(args.domain)))


def rotate(args: argparse.Namespace, config: Config) -> Report:
    return _domain_report(*_call(config, lambda d, _: d.rotate(args.domain)))


def remove(args: argparse.Namespace, config: Config) -> Report:
    domain, _ = _call(config, lambda d, _: d.remove(args.domain), with_policy=False)
    data = {"id": domain.id, "domain": domain.name, "deleted": True}
    return Report(data, [f"{domain.name} removed, its DKIM keys deleted"])


def list_domains(args: argparse.Namespace, config: Config) -> Report:
    from relay.api.domains import domain_json

    # Finding the outbound addresses takes lookups: only the JSON, which lists the records, needs them.
    domains, policy = _call(config, lambda _, store: store.domains.list_all(), with_policy=args.json)
    data = [domain_json(d, policy) for d in domains] if policy is not None else None
    return Report(data, [f"{d.name:40} {d.status:9} checked {when(d.checked_at)}" for d in domains])
