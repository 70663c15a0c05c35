"""``relay migrate``: bring the store's schema up to date and say from which version to which.
``relay store copy``: copy a whole relay from one store to another (SQLite to PostgreSQL, or back)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from relay.cli.common import (
    EX_FAILED,
    CommandError,
    Parents,
    Subparsers,
    UsageError,
    action,
    command_group,
    now,
    with_store,
)
from relay.cli.output import Column, Report, table
from relay.config import Config, StoreUrl, parse_store_url
from relay.store.copy_tables import BATCH_ROWS

if TYPE_CHECKING:
    from relay.domains import Domain
    from relay.store.copy import Copied, TableCount, TableProgress  # imports psycopg: only for store copy


def add_commands(sub: Subparsers[argparse.ArgumentParser], parents: Parents) -> None:
    p = sub.add_parser(
        "migrate",
        parents=parents.both,
        help="apply the store's pending schema migrations ([store] url); serve does this too when it starts",
    )
    p.set_defaults(func=migrate)
    _, actions = command_group(sub, "store", "copy a whole relay from one store to another", parents)
    p = action(
        actions,
        "copy",
        "copy every table (queue with leases released, events, keys, domains, webhooks...) from --from to --to;"
        " stop relay first; safe to run again",
        copy,
        parents,
    )
    p.add_argument("--from", dest="source", metavar="URL", help="sqlite:///… or postgresql://…")
    p.add_argument("--to", dest="target", metavar="URL", help="sqlite:///… or postgresql://…")
    p.add_argument(
        "--force",
        action="store_true",
        help="copy even into a target holding rows the source lacks, or from a store a relay still beats on",
    )
    p.add_argument("--batch", type=int, default=BATCH_ROWS, metavar="N", help=f"rows per transaction ({BATCH_ROWS})")
    p.set_defaults(no_config=True)
    p = action(
        actions,
        "rekey",
        "seal the store's DKIM keys and VERP secret under a new key file ([store] secret_key_file); with --lost,"
        " when the old file is gone: forget them and make new DKIM keys to publish; stop relay first",
        rekey,
        parents,
    )
    p.add_argument("--new-key-file", metavar="PATH", help="where to write the new key (a new file)")
    p.add_argument("--lost", action="store_true", help="the current key file is lost: forget what it sealed")
    p.add_argument("--force", action="store_true", help="even while a relay node still beats on the store")


def migrate(args: argparse.Namespace, config: Config) -> Report:
    from relay.store.migrations import migrate as apply

    where = config.store_url
    done = apply(where)
    shown = str(where.path) if where.backend == "sqlite" else where.shown
    data = {"store": where.backend, "database": shown, "before": done.before, "after": done.after}
    if done.before == done.after:
        text = f"{shown}: schema at version {done.after}, up to date"
    else:
        text = f"{shown}: schema migrated from version {done.before} to {done.after}"
    return Report(data, [text])


def copy(args: argparse.Namespace, config: Config) -> Report:
    from relay.store.copy import CopyRefused, copy_store

    if not args.source or not args.target:
        raise UsageError("relay store copy needs --from URL and --to URL")
    if args.batch <= 0:
        raise UsageError("--batch must be positive")
    source, target = _url("--from", args.source), _url("--to", args.target)
    try:
        copied = copy_store(source, target, now(), force=args.force, batch_rows=args.batch, progress=ProgressLine())
    except CopyRefused as exc:
        raise CommandError(str(exc)) from None
    return _copy_report(source, target, copied)


def _url(option: str, value: str) -> StoreUrl:
    try:
        return parse_store_url(value)
    except ValueError as exc:
        raise UsageError(f"{option}: {exc}") from None


COUNTS: list[Column[TableCount]] = [
    Column("TABLE", lambda t: t.table, "24"),
    Column("SOURCE", lambda t: t.source, ">10"),
    Column("TARGET", lambda t: t.target, ">10"),
    Column("COPIED", lambda t: t.copied, ">10"),
    Column("", lambda t: "" if t.ok else "DIFFERENT", ""),
]


def _copy_report(source: StoreUrl, target: StoreUrl, copied: Copied) -> Report:
    data = {
        "from": source.shown,
        "to": target.shown,
        "ok": copied.ok,
        "tables": [
            {"table": t.table, "source": t.source, "target": t.target, "copied": t.copied, "foreign": t.foreign}
            for t in copied.tables
        ],
    }
    lines = table(copied.tables, COUNTS, header=True)
    if copied.ok:
        return Report(data, [*lines, f"copied to {target.shown}: every table has the source's count"])
    differ = [t.table for t in copied.tables if not t.ok]
    return Report(data, lines, EX_FAILED, f"counts differ in {', '.join(differ)}")


class ProgressLine:
    """Progress on stderr: one line per table (rows/total and a percentage), rewritten in place on a terminal."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()

    def __call__(self, p: TableProgress) -> None:
        percent = 100.0 if p.total == 0 else min(100.0, 100.0 * p.done / p.total)
        line = f"{p.table:<24} {p.done:>10,}/{p.total:,} rows {percent:5.1f}%"
        if self.tty:
            self.stream.write("\r\x1b[K" + line + ("\n" if p.finished else ""))
        elif p.finished:
            self.stream.write(line + "\n")
        self.stream.flush()


def rekey(args: argparse.Namespace, config: Config) -> Report:
    from relay.app import make_domains, store_key_path, store_sealer
    from relay.secrets import SecretsError, make_key_file, reseal
    from relay.store.protocols import Storage

    if not args.new_key_file:
        raise UsageError("relay store rekey needs --new-key-file PATH (a file that does not exist yet)")
    new_path = Path(args.new_key_file)

    async def run(store: Storage) -> Report:
        running = [n for n in await store.nodes.list_all() if n.status(store.clock.now()) == "up"]
        if running and not args.force:
            nodes = ", ".join(f"{n.id} on {n.host}" for n in running)
            raise CommandError(f"a relay is running on this store ({nodes}): stop relay first (--force to go on)")
        old = None if args.lost else store_sealer(config, create=False)
        new = make_key_file(new_path)
        if old is not None:
            count = await reseal(store.secrets, old, new)
            return _rekeyed(count, store_key_path(config), new_path)
        lost = await store.secrets.forget_sealed()
        replaced = await make_domains(config, store, None, new).replace_lost_keys(lost)
        return _forgotten(len(lost), replaced, new_path)

    try:
        return with_store(config, run)
    except SecretsError as exc:
        hint = "" if args.lost else " (if the key file is lost: --lost)"
        raise CommandError(f"{exc}{hint}") from None


def _next_step(new_path: Path) -> str:
    return (
        f"next: set [store] secret_key_file = {new_path} on every node (or copy the file over the old one"
        " on each), then start relay"
    )


def _rekeyed(count: int, old_path: Path, new_path: Path) -> Report:
    data = {"resealed": count, "key_file": str(new_path), "old_key_file": str(old_path)}
    text = [f"sealed {count} stored values again under the new key {new_path} (was {old_path})", _next_step(new_path)]
    return Report(data, text)


def _forgotten(count: int, replaced: list[Domain], new_path: Path) -> Report:
    keys = [(d, k) for d in replaced for k in d.keys if k.state == "pending"]
    data = {
        "forgotten_dkim_keys": count,
        "key_file": str(new_path),
        "new_dkim_keys": [
            {
                "domain": d.name,
                "selector": k.selector,
                "name": f"{k.selector}._domainkey.{d.name}",
                "value": k.public_key,
            }
            for d, k in keys
        ],
    }
    text = [
        f"forgot the VERP secret and {count} DKIM keys the lost key had sealed; new key file {new_path}",
        "return paths of mail sent before no longer verify; a new VERP secret is made at the next start",
        *(
            [f"{len(keys)} new DKIM keys: publish each, then relay domains verify (they sign once found):"]
            if keys
            else ["no sending domain had a key in the store"]
        ),
        *(f"  TXT {k.selector}._domainkey.{d.name}\n       {k.public_key}" for d, k in keys),
        _next_step(new_path),
    ]
    return Report(data, text)
