"""Templates and their versions in SQL."""

from __future__ import annotations

import dataclasses

from relay.clock import Clock
from relay.store.dialect import Connection, SqlDatabase


@dataclasses.dataclass(frozen=True)
class TemplateVersion:
    template_id: str
    version: int
    subject: str
    html: str | None
    text: str | None
    note: str
    created_at: float


@dataclasses.dataclass(frozen=True)
class Template:
    id: str
    name: str
    version: int
    created_at: float
    updated_at: float
    current: TemplateVersion


_VERSION = "template_id, version, subject, html, text, note, created_at"


def version(conn: Connection, template_id: str, number: int) -> TemplateVersion | None:
    row = conn.execute(
        f"SELECT {_VERSION} FROM template_versions WHERE template_id = ? AND version = ?", (template_id, number)
    ).fetchone()
    return TemplateVersion(*row) if row else None


def versions(
    conn: Connection, template_id: str, limit: int | None = None, before: int | None = None
) -> list[TemplateVersion]:
    """Newest first; at most ``limit`` of them, older than version ``before`` if given."""
    sql = f"SELECT {_VERSION} FROM template_versions WHERE template_id = ?"
    params: list[object] = [template_id]
    if before is not None:
        sql += " AND version < ?"
        params.append(before)
    sql += " ORDER BY version DESC"
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    return [TemplateVersion(*row) for row in conn.execute(sql, params).fetchall()]


def get(conn: Connection, template_id: str) -> Template | None:
    row = conn.execute(
        "SELECT id, name, version, created_at, updated_at FROM templates WHERE id = ?", (template_id,)
    ).fetchone()
    if row is None:
        return None
    current = version(conn, row[0], row[2])
    assert current is not None
    template_id, name, number, created_at, updated_at = row
    return Template(template_id, name, number, created_at, updated_at, current)


def list_all(conn: Connection) -> list[Template]:
    ids = [r[0] for r in conn.execute("SELECT id FROM templates ORDER BY name, id")]
    return [t for t in (get(conn, i) for i in ids) if t is not None]


def page(conn: Connection, limit: int, after: str | None = None) -> list[Template]:
    """At most ``limit`` templates by name (then id), those after the template ``after`` (keyset paging)."""
    sql = "SELECT id FROM templates"
    params: list[object] = []
    if after is not None:
        mark = conn.execute("SELECT name, id FROM templates WHERE id = ?", (after,)).fetchone()
        if mark is not None:
            sql += " WHERE name > ? OR (name = ? AND id > ?)"
            params += [mark[0], mark[0], mark[1]]
    ids = [r[0] for r in conn.execute(f"{sql} ORDER BY name, id LIMIT ?", [*params, limit])]
    return [t for t in (get(conn, i) for i in ids) if t is not None]


def create(
    conn: Connection, template_id: str, name: str, subject: str, html: str | None, text: str | None, now: float
) -> Template:
    conn.execute(
        "INSERT INTO templates (id, name, version, created_at, updated_at) VALUES (?, ?, 1, ?, ?)",
        (template_id, name, now, now),
    )
    _add_version(conn, template_id, 1, subject, html, text, "created", now)
    found = get(conn, template_id)
    assert found is not None
    return found


def _add_version(
    conn: Connection,
    template_id: str,
    number: int,
    subject: str,
    html: str | None,
    text: str | None,
    note: str,
    now: float,
) -> None:
    conn.execute(
        f"INSERT INTO template_versions ({_VERSION}) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (template_id, number, subject, html, text, note, now),
    )


def update(
    conn: Connection,
    template_id: str,
    name: str | None,
    subject: str,
    html: str | None,
    text: str | None,
    note: str,
    now: float,
) -> Template | None:
    """A new version (the name may change too); the previous ones are kept."""
    row = conn.execute("SELECT max(version) FROM template_versions WHERE template_id = ?", (template_id,)).fetchone()
    if get(conn, template_id) is None:
        return None
    number = int(row[0]) + 1
    _add_version(conn, template_id, number, subject, html, text, note, now)
    conn.execute(
        "UPDATE templates SET version = ?, name = coalesce(?, name), updated_at = ? WHERE id = ?",
        (number, name, now, template_id),
    )
    return get(conn, template_id)


def delete(conn: Connection, template_id: str) -> bool:
    return conn.execute("DELETE FROM templates WHERE id = ?", (template_id,)).rowcount > 0


class SqlTemplates:
    """:class:`relay.store.protocols.TemplateStore` over the shared database."""

    def __init__(self, db: SqlDatabase, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    async def create_template(
        self, template_id: str, name: str, subject: str, html: str | None, text: str | None
    ) -> Template:
        now = self.clock.now()
        return await self.db.write(lambda c: create(c, template_id, name, subject, html, text, now))

    async def template(self, template_id: str) -> Template | None:
        return await self.db.read(lambda c: get(c, template_id))

    async def list_all(self) -> list[Template]:
        return await self.db.read(list_all)

    async def update_template(
        self,
        template_id: str,
        name: str | None,
        subject: str,
        html: str | None,
        text: str | None,
        note: str = "updated",
    ) -> Template | None:
        now = self.clock.now()
        return await self.db.write(lambda c: update(c, template_id, name, subject, html, text, note, now))

    async def delete_template(self, template_id: str) -> bool:
        return await self.db.write(lambda c: delete(c, template_id))

    async def template_version(self, template_id: str, number: int) -> TemplateVersion | None:
        return await self.db.read(lambda c: version(c, template_id, number))

    async def template_page(self, limit: int, after: str | None = None) -> list[Template]:
        return await self.db.read(lambda c: page(c, limit, after))

    async def template_versions(
        self, template_id: str, limit: int | None = None, before: int | None = None
    ) -> list[TemplateVersion]:
        return await self.db.read(lambda c: versions(c, template_id, limit, before))
