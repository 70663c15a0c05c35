"""Versioned schema migrations, tracked with SQLite's ``user_version``.

Append new migrations to MIGRATIONS; never edit one that has shipped.
"""

from __future__ import annotations

import sqlite3

MIGRATIONS: list[str] = [
    # 1: messages, bodies kept apart from the frequently updated recipient rows,
    # one row per recipient with its own delivery state, events, API keys.
    """
    CREATE TABLE messages (
        id          TEXT PRIMARY KEY,
        created_at  REAL NOT NULL,
        sender      TEXT NOT NULL,
        size        INTEGER NOT NULL,
        source      TEXT NOT NULL
    );
    CREATE TABLE message_bodies (
        message_id  TEXT PRIMARY KEY REFERENCES messages(id) ON DELETE CASCADE,
        raw         BLOB NOT NULL
    );
    CREATE TABLE recipients (
        id              INTEGER PRIMARY KEY,
        message_id      TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
        address         TEXT NOT NULL,
        domain          TEXT NOT NULL,
        state           TEXT NOT NULL,
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL,
        lease_owner     TEXT,
        lease_until     REAL,
        last_code       INTEGER,
        last_response   TEXT,
        updated_at      REAL NOT NULL
    );
    -- next_attempt_at is set exactly while a recipient is queued or deferred,
    -- so picking due work walks this index in due order and nothing else.
    CREATE INDEX recipients_due ON recipients(next_attempt_at)
        WHERE next_attempt_at IS NOT NULL;
    CREATE INDEX recipients_message ON recipients(message_id);
    -- Counts by state and domain, and finding the few 'sending' rows to release.
    CREATE INDEX recipients_state_domain ON recipients(state, domain);
    CREATE TABLE events (
        id            INTEGER PRIMARY KEY,
        at            REAL NOT NULL,
        kind          TEXT NOT NULL,
        message_id    TEXT NOT NULL,
        recipient_id  INTEGER,
        recipient     TEXT,
        code          INTEGER,
        detail        TEXT
    );
    CREATE INDEX events_message ON events(message_id);
    CREATE TABLE api_keys (
        id            TEXT PRIMARY KEY,
        name          TEXT NOT NULL,
        key_hash      TEXT NOT NULL UNIQUE,
        scopes        TEXT NOT NULL,
        created_at    REAL NOT NULL,
        last_used_at  REAL,
        revoked_at    REAL
    );
    """,
]


def schema_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection) -> int:
    """Apply pending migrations, each in its own transaction. Returns the new version.

    The version is read inside the write transaction, so two processes starting
    at once cannot apply the same migration twice.
    """
    while True:
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = schema_version(conn)
            if version > len(MIGRATIONS):
                raise RuntimeError(
                    f"database schema version {version} is newer than this relay understands ({len(MIGRATIONS)})"
                )
            if version == len(MIGRATIONS):
                conn.execute("COMMIT")
                return version
            for statement in _statements(MIGRATIONS[version]):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version + 1}")
            conn.execute("COMMIT")
        except Exception:
            conn.execute("ROLLBACK")
            raise


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]
