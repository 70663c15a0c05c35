"""What can go wrong in relay, named once.

Every error relay raises on purpose derives from :class:`RelayError`::

    RelayError
    └── StoreError              the queue database could not do what was asked
        ├── StoreFull           the disk (or the database's quota) is full: retry later, nothing was written
        └── StoreUnavailable    the database cannot be read or written (locked past its timeout, I/O error)

The store raises these instead of its driver's exceptions, so nothing above ``relay/store/`` needs to
know which database is underneath.
"""

from __future__ import annotations


class RelayError(Exception):
    """The base of every error relay raises on purpose."""


class StoreError(RelayError):
    """The queue database could not do what was asked; nothing was half-written."""


class StoreFull(StoreError):
    """The disk or database holding the queue is full."""


class StoreUnavailable(StoreError):
    """The queue database cannot be read or written just now."""
