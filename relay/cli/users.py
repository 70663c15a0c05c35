"""``relay users``: the operators who sign in to the dashboard (admin or viewer)."""

from __future__ import annotations

import argparse
import sys

from relay.cli.common import EX_FAILED, Parents, Subparsers, UsageError, action, command_group, when, with_store
from relay.cli.output import Column, Report, table
from relay.config import Config
from relay.dashboard.accounts import AccountError, change_password, check_name, check_password, create_operator
from relay.store.operators import ROLES, Operator


def add_commands(sub: Subparsers[argparse.ArgumentParser], parents: Parents) -> None:
    _, users = command_group(sub, "users", "manage the dashboard's operators", parents)
    p = action(users, "create", "create an operator (a generated password is shown once)", create, parents)
    p.add_argument("name", help="the name to sign in with")
    p.add_argument(
        "--role", choices=ROLES, default="viewer", help="admin: changes anything; viewer (default): looks only"
    )
    p.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    action(users, "list", "list operators (never their passwords)", list_users, parents)
    p = action(users, "remove", "remove an operator (its sessions end)", remove, parents)
    p.add_argument("name")
    p = action(users, "set-password", "give an operator a new password (its sessions end)", set_password, parents)
    p.add_argument("name")
    p.add_argument("--password-stdin", action="store_true", help="read the password from standard input")


def _password(args: argparse.Namespace) -> str | None:
    """The password read from stdin (its first line) with --password-stdin, else None (generate one)."""
    if not args.password_stdin:
        return None
    password = sys.stdin.readline().rstrip("\r\n")
    try:
        return check_password(password)
    except AccountError as exc:
        raise UsageError(str(exc)) from None


def create(args: argparse.Namespace, config: Config) -> Report:
    password = _password(args)
    try:
        check_name(args.name)
    except AccountError as exc:
        raise UsageError(str(exc)) from None
    made = with_store(config, lambda s: create_operator(s.operators, s.clock, args.name, args.role, password))
    if made is None:
        return Report({"name": args.name, "created": False}, status=EX_FAILED, error=f"user {args.name} exists")
    operator, password = made
    text = [f"Created {operator.role} {operator.name}"]
    if not args.password_stdin:
        text += [f"password: {password}", "Store the password now; it is not shown again."]
        return Report({**operator.public(), "password": password}, text)
    return Report(operator.public(), text)


USER_COLUMNS: list[Column[Operator]] = [
    Column("name", lambda o: o.name, "20"),
    Column("role", lambda o: o.role, "7"),
    Column("created", lambda o: when(o.created_at), "19"),
    Column("last login", lambda o: when(o.last_login_at)),
]


def list_users(args: argparse.Namespace, config: Config) -> Report:
    found = with_store(config, lambda s: s.operators.list_operators())
    return Report([o.public() for o in found], table(found, USER_COLUMNS))


def remove(args: argparse.Namespace, config: Config) -> Report:
    removed = with_store(config, lambda s: s.operators.remove_operator(args.name))
    if not removed:
        return Report({"name": args.name, "removed": False}, status=EX_FAILED, error=f"no user {args.name}")
    return Report({"name": args.name, "removed": True}, [f"removed {args.name}"])


def set_password(args: argparse.Namespace, config: Config) -> Report:
    password = _password(args)
    changed = with_store(config, lambda s: change_password(s.operators, args.name, password))
    if changed is None:
        return Report({"name": args.name, "changed": False}, status=EX_FAILED, error=f"no user {args.name}")
    if args.password_stdin:
        return Report({"name": args.name, "changed": True}, [f"new password set for {args.name}"])
    text = [f"new password for {args.name}: {changed}", "Store the password now; it is not shown again."]
    return Report({"name": args.name, "changed": True, "password": changed}, text)
