"""PostgreSQL storage: the same repositories as SQLite's over a database several relay nodes share.

``[store] url = "postgresql://..."`` (or RELAY_STORE_URL) selects it; :class:`PgStore` bundles the
repositories of :mod:`relay.store.repositories` over :class:`~relay.store.postgres.db.PgDatabase`. The
repositories' SQL is written once for both databases (:mod:`relay.store.dialect`);
:class:`~relay.store.postgres.connection.PgConnection` runs it through psycopg. What is here:

* :mod:`relay.store.postgres.schema`: SQLite's schema at its current version in PostgreSQL types, with the
  same table, column and index names (plus ``message_tags_message``: PostgreSQL does not index a
  foreign key by itself, and deleting a message cascades to its tags), the two triggers as PL/pgSQL
  functions, a ``schema_migrations`` table, migrations applied in one transaction under
  ``pg_advisory_xact_lock`` (two nodes migrating an empty database at once: the second waits and
  finds nothing to do; without the lock it fails on a duplicate catalog row, as a test shows), and a
  refusal (StoreUnavailable) to run against a schema newer than the code.
* :mod:`relay.store.postgres.db`: :class:`~relay.store.postgres.db.PgDatabase`, with the SQLite
  ``Database``'s contract and methods (``write``, ``read``, ``lookup``, ``close``).

Design, as built and measured (tests/test_pg_database.py, bench/pg_commit.py on the 2-core machine,
private cluster with fsync on):

* Connections: one per process for writes (the group-commit writer thread), and a pool of up to
  ``[store] pool_size`` (4) for reads. Five per process: PostgreSQL's default ``max_connections = 100``
  (3 reserved for superusers) takes 19 such processes at most, fewer beside other clients.
* Group commit: the writer takes every waiting operation (up to 512), runs them in one transaction
  and commits once, with ``synchronous_commit = on`` set on its connection (whatever the database's
  default; a test sets it off for the database and reads it on). 50 concurrent writers: 0.020
  commits per write; 100 writes at once share one transaction id as the server sees it.
  bench/pg_commit.py, durable writes/s of a message and a recipient row, PostgreSQL / SQLite on the
  same disk, fsync on: 1 writer ~2,400 / ~5,000; 10 writers ~5,300 / ~28,000; 50 writers ~5,800 /
  ~53,000. Each statement is a round trip that the writer waits for: statements, not the WAL flush,
  are most of its time.
* A bad operation (a constraint violated, a bug) fails alone: the batch is rolled back and run again
  without it; everything else in it commits together. A deadlock or serialization failure with
  another node's transaction runs the batch again whole.
* Errors: disk full (53100) → StoreFull; unreachable server, lost connection, admin shutdown, starting
  up, any OperationalError → StoreUnavailable; others as they are. A server restart during writes:
  writes in flight fail with StoreUnavailable (the batch whose COMMIT answer was lost may still have
  committed: acknowledged never means lost, refused can mean written), nothing is half-written, and
  the same object writes again once the server is back; a batch that fails on a stale connection
  before its COMMIT is retried once on a new one, so the first write after an outage succeeds.
* The dialect: the repositories write ``?`` placeholders (the adapter turns them into ``%s``), ids
  come from ``RETURNING id``, flags are SMALLINT 0/1 in both databases, upserts are ``ON CONFLICT``.
  A NUL character in a text (a receiver's garbled reply) is stored as U+FFFD: PostgreSQL's text
  cannot hold one.
* Claims of due work across nodes: the due recipients are read in due order along the partial index
  ``recipients_due`` and locked as they are read, skipping rows another node's claim holds (``FOR
  UPDATE OF r SKIP LOCKED``), then leased in the same transaction.
* Wake-ups: ``NOTIFY`` is transactional (delivered at commit, identical notifications of one
  transaction folded into one), so an enqueue can notify inside its write and idle nodes hear it only
  once it is durable; ``LISTEN`` needs a connection of its own, outside the pool and the writer.
* Operations may run twice (a neighbour's failure reruns the batch), so they do nothing outside the
  database.
"""

from relay.store.postgres.store import PgStore

__all__ = ["PgStore"]
