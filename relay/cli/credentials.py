"""``relay smtp-credentials``: usernames and passwords for SMTP AUTH."""

from __future__ import annotations

import argparse

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
from relay.credentials import SmtpCredential, create_smtp_credential, valid_sender_rule


def add_commands(sub: Subparsers[argparse.ArgumentParser], parents: Parents) -> None:
    _, creds = command_group(sub, "smtp-credentials", "manage SMTP AUTH credentials", parents)
    p = action(creds, "create", "create a username and password (shown once)", create, parents)
    p.add_argument(
        "--allowed-from",
        action="append",
        metavar="DOMAIN_OR_ADDRESS",
        help="senders this credential may use (repeatable; default: any)",
    )
    p.add_argument("--rate-limit", type=int, metavar="N", help="messages per hour")
    p.add_argument("--tag", action="append", help="tag every message sent with it (repeatable)")
    p.add_argument("--test", action="store_true", help="test credentials: their mail is captured, not delivered")
    action(creds, "list", "list SMTP credentials (passwords masked)", list_credentials, parents)
    p = action(creds, "revoke", "revoke SMTP credentials", revoke, parents)
    p.add_argument("credential_id", help="the credential's id (cred_...)")


def _allowed_from(rules: list[str] | None) -> tuple[str, ...]:
    allowed = tuple(r.lower() for r in rules or [])
    bad = [r for r in allowed if not valid_sender_rule(r)]
    if bad:
        raise UsageError(f"--allowed-from {bad[0]!r} is not a domain or an address")
    return allowed


def create(args: argparse.Namespace, config: Config) -> Report:
    allowed = _allowed_from(args.allowed_from)
    positive("--rate-limit", args.rate_limit)
    cred, password = with_store(
        config,
        lambda s: create_smtp_credential(
            s.credentials,
            s.clock,
            allowed_from=allowed,
            rate_limit=args.rate_limit,
            tags=tuple(args.tag or []),
            test=args.test,
        ),
    )
    return Report({**cred.public(), "password": password}, _created_text(cred, password))


def _created_text(cred: SmtpCredential, password: str) -> list[str]:
    text = [
        f"Created SMTP credential {cred.id}" + (" (test: mail is captured, not delivered)" if cred.test else ""),
        f"username: {cred.username}",
        f"password: {password}",
        "Store the password now; it is not shown again.",
    ]
    if cred.allowed_from:
        text.append(f"may send as: {', '.join(cred.allowed_from)}")
    return text


CREDENTIAL_COLUMNS: list[Column[SmtpCredential]] = [
    Column("id", lambda c: c.id),
    Column("status", lambda c: "revoked" if c.revoked_at else "active", "8", gap="  "),
    Column("mode", lambda c: "test" if c.test else "live", "5"),
    Column("username", lambda c: c.username, "25"),
    Column("password", lambda c: "********"),
    Column("may send as", lambda c: " ".join(c.allowed_from) or "(any sender)"),
]


def list_credentials(args: argparse.Namespace, config: Config) -> Report:
    found = with_store(config, lambda s: s.credentials.list_smtp_credentials())
    return Report([{**c.public(), "password": "********"} for c in found], table(found, CREDENTIAL_COLUMNS))


def revoke(args: argparse.Namespace, config: Config) -> Report:
    revoked = with_store(config, lambda s: s.credentials.revoke_smtp_credential(args.credential_id))
    return revoked_report(args.credential_id, revoked, "SMTP credential")
