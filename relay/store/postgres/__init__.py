"""PostgreSQL storage: the foundation for several relay nodes on one database (issue 20). Not yet selectable.

Nothing in relay uses this package yet: there is no ``[store] url`` and ``relay serve`` runs on SQLite.
What is here is what the repositories will be written on:

* :mod:`relay.store.postgres.schema`: SQLite's schema at its version 11 in PostgreSQL types (same names),
  versioned migrations applied under a transaction-level advisory lock, and a refusal (StoreUnavailable)
  to run against a schema newer than the code.
* :mod:`relay.store.postgres.db`: :class:`~relay.store.postgres.db.PgDatabase`, the same contract as the
  SQLite ``Database``; its docstring says how group commit, error translation and reconnecting work.
"""
