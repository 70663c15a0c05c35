"""Versioned schema migrations, tracked with SQLite's ``user_version``.

Append new migrations to MIGRATIONS; never edit one that has shipped.
"""

from __future__ import annotations

import sqlite3

from relay.errors import StoreUnavailable

MIGRATIONS: list[str] = [
    # 1: messages, bodies kept apart from the frequently updated recipient rows,
    # one row per recipient with its own delivery state, events, API keys.
    """
    CREATE TABLE messages (
        id          TEXT PRIMARY KEY,  -- time-ordered: newest first is ORDER BY id DESC
        created_at  REAL NOT NULL,
        sender      TEXT NOT NULL,
        size        INTEGER NOT NULL,
        source      TEXT NOT NULL,     -- smtp or http
        subject     TEXT NOT NULL DEFAULT '',
        tags        TEXT NOT NULL DEFAULT '[]',  -- JSON list
        metadata    TEXT NOT NULL DEFAULT '{}',  -- JSON object
        api_key_id  TEXT
    );
    CREATE TABLE message_tags (
        tag         TEXT NOT NULL,
        message_id  TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
        PRIMARY KEY (tag, message_id)
    ) WITHOUT ROWID;
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
    CREATE INDEX recipients_address ON recipients(address);
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
    -- Every delivery attempt: where it went, over what, and what the receiver said.
    CREATE TABLE attempts (
        id            INTEGER PRIMARY KEY,
        recipient_id  INTEGER NOT NULL REFERENCES recipients(id) ON DELETE CASCADE,
        message_id    TEXT NOT NULL,
        at            REAL NOT NULL,
        mx_host       TEXT,
        ip            TEXT,
        tls           TEXT,
        code          INTEGER,
        enhanced      TEXT,
        text          TEXT
    );
    CREATE INDEX attempts_recipient ON attempts(recipient_id);
    CREATE TABLE api_keys (
        id            TEXT PRIMARY KEY,
        name          TEXT NOT NULL,
        key_hash      TEXT NOT NULL UNIQUE,
        scopes        TEXT NOT NULL,   -- space-separated
        allowed_ips   TEXT NOT NULL DEFAULT '',  -- space-separated CIDRs; empty = anywhere
        rate_limit    INTEGER,         -- requests per hour; NULL = the configured default
        daily_quota   INTEGER,         -- messages per UTC day; NULL = unlimited
        monthly_quota INTEGER,         -- messages per UTC month; NULL = unlimited
        created_at    REAL NOT NULL,
        last_used_at  REAL,
        revoked_at    REAL
    );
    -- Messages sent per key per period ('d:2026-11-23', 'm:2026-11'), counted in the enqueue transaction.
    CREATE TABLE key_usage (
        api_key_id  TEXT NOT NULL,
        period      TEXT NOT NULL,
        count       INTEGER NOT NULL,
        PRIMARY KEY (api_key_id, period)
    ) WITHOUT ROWID;
    -- Idempotency-Key records: the first request's outcome, replayed to retries.
    CREATE TABLE idempotency (
        api_key_id    TEXT NOT NULL,
        key           TEXT NOT NULL,
        request_hash  TEXT NOT NULL,
        state         TEXT NOT NULL,   -- pending or done
        status        INTEGER,
        body          TEXT,
        message_id    TEXT,
        created_at    REAL NOT NULL,
        expires_at    REAL NOT NULL,
        PRIMARY KEY (api_key_id, key)
    ) WITHOUT ROWID;
    CREATE INDEX idempotency_expiry ON idempotency(expires_at);
    -- Destinations an operator has put on hold: their recipients are not claimed until then.
    CREATE TABLE suspended_domains (
        domain      TEXT PRIMARY KEY,
        until       REAL NOT NULL,
        reason      TEXT NOT NULL DEFAULT ''
    ) WITHOUT ROWID;
    -- SMTP AUTH credentials: the password only as an argon2 hash.
    CREATE TABLE smtp_credentials (
        id            TEXT PRIMARY KEY,
        username      TEXT NOT NULL UNIQUE,
        password_hash TEXT NOT NULL,
        allowed_from  TEXT NOT NULL DEFAULT '',  -- space-separated domains or addresses
        rate_limit    INTEGER,                   -- messages per hour
        tags          TEXT NOT NULL DEFAULT '[]',
        created_at    REAL NOT NULL,
        last_used_at  REAL,
        revoked_at    REAL
    );
    """,
    # 2: bounces (every refusal that ended or condemned a delivery, and returned reports),
    # the suppression list and its allowlist. Addresses are stored normalised (relay.suppression).
    """
    CREATE TABLE bounces (
        id          INTEGER PRIMARY KEY,
        at          REAL NOT NULL,
        message_id  TEXT,
        recipient   TEXT NOT NULL,
        kind        TEXT NOT NULL,   -- hard, soft, block, complaint, auto_reply, unknown
        reason      TEXT NOT NULL,
        code        INTEGER,
        status      TEXT,            -- enhanced status code
        diagnostic  TEXT NOT NULL DEFAULT '',
        remote_mta  TEXT,
        source      TEXT NOT NULL,   -- smtp (a reply during delivery), dsn or arf (a returned report)
        report      TEXT             -- the returned report as received, for async bounces
    );
    CREATE INDEX bounces_recipient ON bounces(recipient, at);
    CREATE TABLE suppressions (
        address     TEXT PRIMARY KEY,
        reason      TEXT NOT NULL,   -- hard_bounce, complaint, soft_bounces, manual
        detail      TEXT NOT NULL DEFAULT '',
        bounce_id   INTEGER,         -- the bounce that caused it
        message_id  TEXT,
        created_at  REAL NOT NULL,
        expires_at  REAL             -- NULL: until removed
    ) WITHOUT ROWID;
    CREATE INDEX suppressions_created ON suppressions(created_at);
    CREATE TABLE allowlist (
        entry       TEXT PRIMARY KEY,  -- an address or a whole domain
        note        TEXT NOT NULL DEFAULT '',
        created_at  REAL NOT NULL
    ) WITHOUT ROWID;
    """,
    # 3: the Message-ID header of each message, to match returned mail that has no usable return path.
    """
    ALTER TABLE messages ADD COLUMN header_id TEXT;
    CREATE INDEX messages_header_id ON messages(header_id) WHERE header_id IS NOT NULL;
    """,
    # 4: events for the API (details, indexes for the filters), hourly counts kept by a trigger
    # (stats at any range without scanning events), webhooks and their durable delivery queue,
    # filled by a trigger in the same transaction as each event, so no event is ever missed.
    """
    UPDATE events SET kind = 'failed' WHERE kind = 'expired';
    ALTER TABLE events ADD COLUMN details TEXT;  -- JSON: attempt, mx_host, ip, tls, enhanced, classification, ...
    CREATE INDEX events_kind ON events(kind, id);
    CREATE INDEX events_recipient ON events(recipient, id);
    CREATE INDEX events_at ON events(at);
    CREATE INDEX bounces_at ON bounces(at);
    CREATE TABLE event_counts (
        hour  INTEGER NOT NULL,  -- unix time of the hour's start (UTC)
        kind  TEXT NOT NULL,
        tag   TEXT NOT NULL,     -- '' counts every event; a tag counts the events of messages carrying it
        n     INTEGER NOT NULL,
        PRIMARY KEY (hour, kind, tag)
    ) WITHOUT ROWID;
    INSERT INTO event_counts SELECT CAST(at / 3600 AS INTEGER) * 3600, kind, '', count(*) FROM events
        WHERE true GROUP BY 1, 2;
    INSERT INTO event_counts SELECT CAST(e.at / 3600 AS INTEGER) * 3600, e.kind, t.tag, count(*)
        FROM events e JOIN message_tags t ON t.message_id = e.message_id WHERE true GROUP BY 1, 2, 3;
    CREATE TRIGGER events_counted AFTER INSERT ON events BEGIN
        INSERT INTO event_counts VALUES (CAST(NEW.at / 3600 AS INTEGER) * 3600, NEW.kind, '', 1)
            ON CONFLICT DO UPDATE SET n = n + 1;
        INSERT INTO event_counts SELECT CAST(NEW.at / 3600 AS INTEGER) * 3600, NEW.kind, tag, 1
            FROM message_tags WHERE message_id = NEW.message_id AND true ON CONFLICT DO UPDATE SET n = n + 1;
    END;
    CREATE TABLE webhooks (
        id               TEXT PRIMARY KEY,
        url              TEXT NOT NULL,
        events           TEXT NOT NULL DEFAULT '[]',  -- JSON list of event types; [] = all
        enabled          INTEGER NOT NULL DEFAULT 1,
        description      TEXT NOT NULL DEFAULT '',
        secret           TEXT NOT NULL,               -- whsec_...: needed to sign, so kept (the file is 0600)
        created_at       REAL NOT NULL,
        updated_at       REAL NOT NULL,
        failing_since    REAL,                        -- first failure of the current run of failures
        disabled_reason  TEXT
    ) WITHOUT ROWID;
    CREATE TABLE webhook_deliveries (
        id               INTEGER PRIMARY KEY,
        webhook_id       TEXT NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
        event_id         INTEGER NOT NULL,
        message_id       TEXT NOT NULL,                    -- a message's events go out one at a time, in order
        state            TEXT NOT NULL DEFAULT 'pending',  -- pending, delivered, failed
        attempts         INTEGER NOT NULL DEFAULT 0,
        next_attempt_at  REAL,                             -- set exactly while pending
        lease_until      REAL,
        payload          BLOB,                             -- made at the first attempt, the same for every retry
        last_status      INTEGER,
        last_error       TEXT,
        created_at       REAL NOT NULL,
        updated_at       REAL NOT NULL
    );
    CREATE INDEX webhook_deliveries_due ON webhook_deliveries(next_attempt_at) WHERE next_attempt_at IS NOT NULL;
    CREATE INDEX webhook_deliveries_hook ON webhook_deliveries(webhook_id, id);
    CREATE INDEX webhook_deliveries_order ON webhook_deliveries(webhook_id, message_id, event_id)
        WHERE next_attempt_at IS NOT NULL;
    CREATE TABLE webhook_attempts (
        id           INTEGER PRIMARY KEY,
        webhook_id   TEXT NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
        delivery_id  INTEGER,           -- NULL for a test send
        event_id     INTEGER,
        at           REAL NOT NULL,
        status       INTEGER,           -- HTTP status; NULL when there was no response
        error        TEXT,
        latency_ms   REAL NOT NULL
    );
    CREATE INDEX webhook_attempts_hook ON webhook_attempts(webhook_id, id);
    CREATE TRIGGER events_to_webhooks AFTER INSERT ON events BEGIN
        INSERT INTO webhook_deliveries (webhook_id, event_id, message_id, next_attempt_at, created_at, updated_at)
        SELECT w.id, NEW.id, NEW.message_id, NEW.at, NEW.at, NEW.at FROM webhooks w
        WHERE w.enabled = 1 AND (w.events = '[]' OR EXISTS (SELECT 1 FROM json_each(w.events) WHERE value = NEW.kind));
    END;
    """,
    # 5: sending domains and their DKIM keys (the private keys are files in the data dir, 0600).
    """
    CREATE TABLE domains (
        id           TEXT PRIMARY KEY,
        name         TEXT NOT NULL UNIQUE,
        created_at   REAL NOT NULL,
        checks       TEXT,          -- JSON: check → {status, hint}, from the last verification
        checked_at   REAL,
        verified_at  REAL           -- when DKIM and SPF were last found right
    ) WITHOUT ROWID;
    CREATE TABLE dkim_keys (
        domain_id   TEXT NOT NULL REFERENCES domains(id) ON DELETE CASCADE,
        selector    TEXT NOT NULL,
        key_path    TEXT NOT NULL,
        state       TEXT NOT NULL,  -- active, pending (published next to the active one), retired
        created_at  REAL NOT NULL,
        PRIMARY KEY (domain_id, selector)
    ) WITHOUT ROWID;
    """,
    # 6: scheduled sending: a message's send_at (its recipients wait in state 'scheduled' until then).
    """
    ALTER TABLE messages ADD COLUMN send_at REAL;
    CREATE INDEX messages_scheduled ON messages(send_at) WHERE send_at IS NOT NULL;
    """,
    # 7: templates; every change is a new version, kept.
    """
    CREATE TABLE templates (
        id          TEXT PRIMARY KEY,
        name        TEXT NOT NULL,
        version     INTEGER NOT NULL,  -- the current version
        created_at  REAL NOT NULL,
        updated_at  REAL NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE template_versions (
        template_id  TEXT NOT NULL REFERENCES templates(id) ON DELETE CASCADE,
        version      INTEGER NOT NULL,
        subject      TEXT NOT NULL,
        html         TEXT,
        text         TEXT,
        note         TEXT NOT NULL DEFAULT '',
        created_at   REAL NOT NULL,
        PRIMARY KEY (template_id, version)
    ) WITHOUT ROWID;
    """,
    # 8: an Idempotency-Key claim belongs to the process running its request (owner) and holds while
    # that process renews its lease; claims made before this version keep the old 60-second rule.
    """
    ALTER TABLE idempotency ADD COLUMN owner TEXT;
    ALTER TABLE idempotency ADD COLUMN lease_until REAL;
    UPDATE idempotency SET lease_until = created_at + 60 WHERE state = 'pending';
    """,
    # 9: sandbox mode. A message is marked at acceptance (live or sandboxed, whatever the instance's mode
    # later is); sandboxed ones are captured instead of delivered, and listed newest first from this index.
    # Test API keys and SMTP credentials sandbox everything they submit.
    """
    ALTER TABLE messages ADD COLUMN sandbox INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX messages_sandbox ON messages(id) WHERE sandbox = 1;
    ALTER TABLE api_keys ADD COLUMN test INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE smtp_credentials ADD COLUMN test INTEGER NOT NULL DEFAULT 0;
    """,
    # 10: keys that read only their own messages; listings by the key that submitted.
    """
    ALTER TABLE api_keys ADD COLUMN own_messages INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX messages_by_key ON messages(api_key_id, id) WHERE api_key_id IS NOT NULL;
    """,
    # 11: the SMTP phase a delivery-time refusal answered (rcpt, after-data...), so that reading a bounce
    # again (relay suppressions reclassify) knows it; NULL for returned reports and older rows (unknown).
    """
    ALTER TABLE bounces ADD COLUMN phase TEXT;
    """,
    # 12: the nodes serving this database (relay.store.nodes): one per machine today, several on a shared
    # database; each beats while it runs.
    """
    CREATE TABLE nodes (
        id TEXT PRIMARY KEY,
        host TEXT NOT NULL,
        version TEXT NOT NULL,
        pid INTEGER NOT NULL,
        started_at REAL NOT NULL,
        heartbeat_at REAL NOT NULL,
        stopped_at REAL
    );
    """,
    # 13: per-site limits for the whole cluster (relay.store.sites): a connection slot is a row leased by
    # the node holding the connection; a receiver's push-back is remembered so every node slows down.
    """
    CREATE TABLE site_slots (
        site TEXT NOT NULL,
        slot INTEGER NOT NULL,
        owner TEXT NOT NULL,
        lease_until REAL NOT NULL,
        PRIMARY KEY (site, slot)
    );
    CREATE INDEX site_slots_owner ON site_slots(owner);
    CREATE TABLE site_pushback (
        site TEXT PRIMARY KEY,
        factor REAL NOT NULL,
        until REAL NOT NULL
    );
    """,
    # 14: rate-limit counters shared by every process and node (relay.store.ratecounters): one fixed window
    # per key, counted by one atomic upsert; a row whose window has ended is pruned.
    """
    CREATE TABLE rate_counters (
        key TEXT PRIMARY KEY,
        window_start REAL NOT NULL,
        count INTEGER NOT NULL,
        expires_at REAL NOT NULL
    );
    CREATE INDEX rate_counters_expiry ON rate_counters (expires_at);
    """,
    # 15: DKIM private keys and named secrets (the VERP secret) in the store, sealed by relay.secrets with
    # the key-encryption key ([store] secret_key_file), so every node sharing the database has them.
    # private_key NULL: a key made before this, still in its file at key_path until start-up moves it.
    """
    ALTER TABLE dkim_keys ADD COLUMN private_key BLOB;
    ALTER TABLE dkim_keys ADD COLUMN public_key TEXT;  -- the TXT record value (v=DKIM1; k=rsa; p=...)
    CREATE TABLE secrets (
        name        TEXT PRIMARY KEY,
        value       BLOB NOT NULL,  -- sealed: version, nonce, ciphertext
        created_at  REAL NOT NULL
    ) WITHOUT ROWID;
    """,
    # 16: dashboard operators (relay users ...) and their sessions (relay.store.operators). A session is
    # found by the SHA-256 of its cookie's token, never the token itself; it ends at expires_at.
    """
    CREATE TABLE operators (
        id             TEXT PRIMARY KEY,
        name           TEXT NOT NULL UNIQUE,
        role           TEXT NOT NULL,  -- admin | viewer
        password_hash  TEXT NOT NULL,  -- argon2id
        created_at     REAL NOT NULL,
        last_login_at  REAL
    );
    CREATE TABLE operator_sessions (
        token_hash    TEXT PRIMARY KEY,
        operator_id   TEXT NOT NULL REFERENCES operators(id),
        csrf_token    TEXT NOT NULL,
        created_at    REAL NOT NULL,
        expires_at    REAL NOT NULL,
        last_seen_at  REAL NOT NULL
    );
    CREATE INDEX operator_sessions_operator ON operator_sessions(operator_id);
    CREATE INDEX operator_sessions_expiry ON operator_sessions(expires_at);
    """,
    # 17: a message's webhook deliveries, found by message (the dashboard's message page).
    """
    CREATE INDEX webhook_deliveries_message ON webhook_deliveries(message_id);
    """,
    # 18: the dashboard's message search and overview figures with a large history.
    # A search walks one index in message id order (relay.store.queue.search): each filter that can drive
    # one has an index giving a value's message ids in order, so a first page reads about a page of rows.
    """
    -- status: the messages with a recipient in a state, newest first (also counts by state).
    CREATE INDEX recipients_state_message ON recipients(state, message_id);
    -- recipient: a recipient's messages, newest first; serves every lookup by address, so it replaces
    -- recipients_address (one index fewer to write per recipient).
    CREATE INDEX recipients_address_message ON recipients(address, message_id);
    DROP INDEX recipients_address;
    -- sender: an address (compared lower-cased) or a domain, newest first. The expressions are the ones
    -- relay.store.queue.search writes: another spelling would not use the index.
    CREATE INDEX messages_sender ON messages(lower(sender), id);
    CREATE INDEX messages_sender_domain ON messages(lower(substr(sender, instr(sender, '@') + 1)), id);
    -- since / until: a search walks the messages newest first checking created_at; with both in one index
    -- it reads no table row for the messages it skips (a day two weeks back: 216 ms before at 1,000,000
    -- events, bench/dashboard_queries.py).
    CREATE INDEX messages_id_created ON messages(id, created_at);
    -- A message's tags. The trigger counting each new event per tag (events_counted, version 4) looks them
    -- up by message, which the primary key (tag first) cannot do: without this, writing an event read every
    -- row of message_tags (a relay filling a store with 10% tagged messages slowed to 75 events/s at 930,000).
    CREATE INDEX message_tags_message ON message_tags(message_id);
    -- The overview's top deferral reasons: deferrals counted per hour and reason (an SMTP reply with what
    -- varies per message taken out, relay.bounces.reasons) as they are recorded (relay.store.queue.lifecycle),
    -- so a window costs its hours, not its deferrals. Deferrals recorded before this version are not counted.
    CREATE TABLE deferral_counts (
        hour     INTEGER NOT NULL,  -- unix time of the hour's start (UTC)
        reason   TEXT NOT NULL,
        n        INTEGER NOT NULL,
        example  TEXT NOT NULL,     -- the first reply of the hour with this reason, as received
        last_at  REAL NOT NULL,
        PRIMARY KEY (hour, reason)
    ) WITHOUT ROWID;
    """,
    # 19: every stored message is CRLF text (every line end a CRLF, no bare LF, no lone CR), which delivery
    # sends as it is (relay.delivery.client.wire_form). Acceptance has made messages so since bare-LF input
    # was normalised; a store from before then may hold a body with bare LFs, which this rewrites as
    # acceptance would now (relay.message.crlf_line_ends: CRLF, then a lone CR, then a bare LF becomes a
    # CRLF). replace() reads a blob as its bytes (NULs and 8-bit bytes included); only the bodies with a
    # line end of another kind are written.
    """
    UPDATE message_bodies
    SET raw = CAST(replace(replace(replace(raw, X'0D0A', X'0A'), X'0D', X'0A'), X'0A', X'0D0A') AS BLOB)
    WHERE instr(replace(raw, X'0D0A', X''), X'0A') > 0 OR instr(replace(raw, X'0D0A', X''), X'0D') > 0;
    """,
    # 20: big bodies are kept in segment files beside the database, written once (relay.store.spool); a row
    # here says where one is. A message has its body in message_bodies or here, never in both. SQLite only:
    # PostgreSQL keeps every body in message_bodies (relay.store.copy_tables.SQLITE_ONLY).
    """
    CREATE TABLE spooled_bodies (
        message_id  TEXT PRIMARY KEY REFERENCES messages(id) ON DELETE CASCADE,
        segment     TEXT NOT NULL,     -- a file name in <database>-bodies/
        start       INTEGER NOT NULL,  -- the body's first byte in it
        length      INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX spooled_bodies_segment ON spooled_bodies(segment);
    """,
    # 21: an endpoint's due webhook deliveries in due order (relay.store.webhooks.claim_due: each endpoint is
    # sent to on its own). With the index on next_attempt_at alone, a claim for one endpoint read every
    # delivery waiting for it and sorted them: the whole backlog of an endpoint that was down, at each claim.
    """
    DROP INDEX webhook_deliveries_due;
    CREATE INDEX webhook_deliveries_due ON webhook_deliveries(webhook_id, next_attempt_at)
        WHERE next_attempt_at IS NOT NULL;
    """,
]


def schema_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection) -> int:
    """Apply pending migrations, each in its own transaction. Returns the new version. StoreUnavailable if
    the file's schema is newer than this code (a newer relay migrated it).

    The version is read inside the write transaction, so two processes starting
    at once cannot apply the same migration twice.
    """
    while True:
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = schema_version(conn)
            if version > len(MIGRATIONS):
                raise StoreUnavailable(
                    f"the database schema is at version {version}, newer than this relay knows ({len(MIGRATIONS)}):"
                    " upgrade relay"
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
    """Split a script into statements; a ';' inside a comment or string does not end one."""
    statements, current = [], ""
    for piece in script.split(";"):
        current += piece + ";"
        if sqlite3.complete_statement(current):
            if current.strip(" \n;"):
                statements.append(current.strip())
            current = ""
    return statements
