"""PostgreSQL storage: the foundation for several relay nodes on one database (issue 20). Not yet selectable.

Nothing in relay uses this package yet: there is no ``[store] url``, ``relay serve`` and ``relay
migrate`` run on SQLite, and no repository is written against it. What is here:

* :mod:`relay.store.postgres.schema`: SQLite's schema at its current version in PostgreSQL types, with the
  same table, column and index names (plus ``message_tags_message``: PostgreSQL does not index a
  foreign key by itself, and deleting a message cascades to its tags), the two triggers as PL/pgSQL
  functions, a ``schema_migrations`` table, migrations applied in one transaction under
  ``pg_advisory_xact_lock`` (two nodes migrating an empty database at once: the second waits and
  finds nothing to do; without the lock it fails on a duplicate catalog row, as a test shows), and a
  refusal (StoreUnavailable) to run against a schema newer than the code.
* :mod:`relay.store.postgres.db`: :class:`~relay.store.postgres.db.PgDatabase`, with the SQLite
  ``Database``'s contract and methods (``write``, ``read``, ``lookup``, ``close``); its operations are
  ``async def fn(conn)`` over a psycopg ``AsyncConnection``.

Design, as built and measured (tests/test_pg_database.py, bench/pg_commit.py on the 2-core machine,
private cluster with fsync on):

* Connections: one per node for writes (the group-commit writer task), and a pool of up to 4 for
  reads (``POOL_SIZE``; min 1). Five per node: PostgreSQL's default ``max_connections = 100`` (3 reserved
  for superusers) takes 19 nodes at most, fewer beside other clients.
* Group commit: the writer takes every waiting operation (up to 512), runs them in one transaction
  and commits once, with ``synchronous_commit = on`` set on its connection (whatever the database's
  default; a test sets it off for the database and reads it on). 50 concurrent writers: 0.020
  commits per write (1,000 writes in 20 commits); 100 writes at once share one transaction id as the
  server sees it (two at most, if the writer wakes between them).
  Durable writes/s (a message and a recipient row each; ranges over three runs on a machine shared
  with other work), one statement at a time / pipelined / SQLite: 1 writer 1,450-2,300 / 1,800-2,000 /
  3,200-4,300; 10 writers 3,400-4,800 / 6,600-10,400 / 11,700-27,000; 50 writers 3,400-5,900 /
  9,800-11,100 / 42,000-45,200, commits per write 1, 0.1 and 0.02 on both backends. Pipelining the
  same statements with the same number of commits doubles the rate: the statements' round trips, not
  the WAL flush, are most of the writer's time, so repositories should pipeline what they can.
* A bad operation (a constraint violated, a bug) fails alone: the batch is rolled back and run again
  without it; everything else in it commits together.
* Errors: disk full (53100) → StoreFull; unreachable server, lost connection, admin shutdown, starting
  up, any OperationalError → StoreUnavailable; others as they are. A server restart during writes:
  writes in flight fail with StoreUnavailable (the batch whose COMMIT answer was lost may still have
  committed: acknowledged never means lost, refused can mean written), nothing is half-written, and
  the same object writes again once the server is back; a batch that fails on a stale connection
  before its COMMIT is retried once on a new one, so the first write after an outage succeeds.

What the repositories will need (facts of PostgreSQL and of this module, not yet exercised here):

* Placeholders are ``%s`` (sqlite3's are ``?``); ids come from ``INSERT ... RETURNING id`` (no
  ``lastrowid``); flags are BOOLEAN (``= TRUE`` reads the same in both dialects); ``INSERT OR
  IGNORE`` is ``ON CONFLICT DO NOTHING`` and ``ON CONFLICT DO UPDATE`` needs its conflict columns;
  ``json_each`` is ``jsonb_array_elements_text``. A copy that keeps ids must ``setval`` the identity
  sequences afterwards.
* Claims of due work across nodes: ``UPDATE recipients SET lease_owner = ..., lease_until = ... WHERE
  id IN (SELECT id FROM recipients WHERE next_attempt_at <= %s ORDER BY next_attempt_at LIMIT %s FOR
  UPDATE SKIP LOCKED) RETURNING ...``, walking the partial index ``recipients_due`` (and
  ``webhook_deliveries_due`` for webhooks).
* Wake-ups: ``NOTIFY`` is transactional (delivered at commit, identical notifications of one
  transaction folded into one), so an enqueue can notify inside its write and idle nodes hear it only
  once it is durable; ``LISTEN`` needs a connection of its own, outside the pool and the writer.
* Cluster-wide one-at-a-time jobs (housekeeping): ``pg_try_advisory_xact_lock`` inside a write; a
  session-level advisory lock would need a connection of its own too.
* Operations may run twice (a neighbour's failure reruns the batch), so they do nothing outside the
  database; a pipelined operation reads results only by fetching rows.
"""
