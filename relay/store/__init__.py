"""Persistent state behind one boundary: a repository per concept (:mod:`relay.store.protocols` says what
each provides), bundled by :class:`Store`, the SQLite backend, over one group-commit database."""

from relay.store.sqlite import Store

__all__ = ["Store"]
