"""Persistent state: the queue, events and keys, behind one boundary (:class:`Store`)."""

from relay.store.sqlite import Store

__all__ = ["Store"]
