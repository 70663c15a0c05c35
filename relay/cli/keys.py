"""``relay keys``: HTTP API keys."""

from __future__ import annotations

import argparse
import ipaddress

from relay.cli.common import (
    Parents,
    Subparsers,
    UsageError,
    action,
    command_group,
    positive,
    revoked_report,
    with_store,
)
from relay.cli.output import Column, Report, table
from relay.config import Config
from relay.keys import SCOPES, ApiKey, create_api_key


def add_commands(sub: Subparsers[argparse.ArgumentParser], parents: Parents) -> None:
    _, keys = command_group(sub, "keys", "manage HTTP API keys", parents)
    p = action(keys, "create", "create an API key (shown once)", create, parents)
    p.add_argument("--name", default="default", help="a label for the key")
    p.add_argument("--scope", action="append", choices=SCOPES, help="grant a scope (repeatable; default: send)")
    p.add_argument("--allow-ip", action="append", metavar="CIDR", help="only from these networks (repeatable)")
    p.add_argument("--rate-limit", type=int, metavar="N", help="requests per hour (default: [http] rate_limit)")
    p.add_argument("--daily-quota", type=int, metavar="N", help="messages per UTC day")
    p.add_argument("--monthly-quota", type=int, metavar="N", help="messages per UTC month")
    p.add_argument("--test", action="store_true", help="a test key (rly_test_...): its mail is captured, not delivered")
    own_help = "the key reads only the messages it sent (and their events); no instance-wide stats"
    p.add_argument("--own-messages", action="store_true", help=own_help)
    action(keys, "list", "list API keys (never their secrets)", list_keys, parents)
    p = action(keys, "revoke", "revoke an API key", revoke, parents)
    p.add_argument("key_id", help="the key's id (key_...)")


def _networks(cidrs: list[str] | None) -> tuple[str, ...]:
    try:
        return tuple(str(ipaddress.ip_network(c, strict=False)) for c in cidrs or [])
    except ValueError as exc:
        raise UsageError(f"--allow-ip: {exc}") from None


def create(args: argparse.Namespace, config: Config) -> Report:
    scopes = tuple(dict.fromkeys(args.scope or ["send"]))
    networks = _networks(args.allow_ip)
    for name in ("rate_limit", "daily_quota", "monthly_quota"):
        positive(f"--{name.replace('_', '-')}", getattr(args, name))
    key, secret = with_store(
        config,
        lambda s: create_api_key(
            s.keys,
            s.clock,
            args.name,
            scopes,
            allowed_ips=networks,
            rate_limit=args.rate_limit,
            daily_quota=args.daily_quota,
            monthly_quota=args.monthly_quota,
            test=args.test,
            own_messages=args.own_messages,
        ),
    )
    mode = "test key (mail is captured in the sandbox, not delivered)" if key.test else "live key"
    text = [
        f"Created API key {key.id} ({key.name}), a {mode}, with scopes: {', '.join(key.scopes)}",
        "Store it now; it is not shown again:",
        secret,
    ]
    return Report({**key.public(), "key": secret}, text)


KEY_COLUMNS: list[Column[ApiKey]] = [
    Column("id", lambda k: k.id),
    Column("status", lambda k: "revoked" if k.revoked_at else "active", "8", gap="  "),
    Column("mode", lambda k: "test" if k.test else "live", "5"),
    Column("name", lambda k: k.name, "20"),
    Column("scopes", lambda k: " ".join(k.scopes)),
]


def list_keys(args: argparse.Namespace, config: Config) -> Report:
    keys = with_store(config, lambda s: s.keys.list_api_keys())
    return Report([k.public() for k in keys], table(keys, KEY_COLUMNS))


def revoke(args: argparse.Namespace, config: Config) -> Report:
    revoked = with_store(config, lambda s: s.keys.revoke_api_key(args.key_id))
    return revoked_report(args.key_id, revoked, "key")
