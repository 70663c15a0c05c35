"""What a site has put back in the queue, in turn: the recipients and when each is booked to come back.

A site that holds as many jobs as it may puts the rest of what the engine claimed back in the queue, each
booked at the site's pace (relay.delivery.engine.Destination.book_return). When the site turns out faster
than its booking, the engine brings the next of them forward (``Destination.take_booked``); for that it
remembers them here, in booking order: a recipient id and a time, 16 bytes each in two arrays (a backlog
of a million recipients is 16 MB, where a tuple and a list per job would be ~180 bytes a recipient).
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable

COMPACT_AT = 4096  # entries consumed at the front before the arrays are cut down to what is left


class Bookings:
    """Recipient ids with their (monotonic) return times, appended in booking order, taken from the front."""

    __slots__ = ("_ids", "_at", "_head")

    def __init__(self) -> None:
        self._ids = array("q")
        self._at = array("d")
        self._head = 0  # entries before this one are gone

    def __len__(self) -> int:
        return len(self._ids) - self._head

    def add(self, at: float, recipient_ids: Iterable[int]) -> None:
        before = len(self._ids)
        self._ids.extend(recipient_ids)
        self._at.extend([at] * (len(self._ids) - before))

    def drop_until(self, moment: float) -> None:
        """Forget those booked to come back by ``moment`` (they come back by themselves)."""
        head, at, end = self._head, self._at, len(self._ids)
        while head < end and at[head] <= moment:
            head += 1
        self._head = head
        self._compact()

    def take(self, count: int) -> list[int]:
        """The next ``count`` (fewer if fewer are left), the earliest first; they are forgotten."""
        head = self._head
        taken = self._ids[head : head + count].tolist()
        self._head = head + len(taken)
        self._compact()
        return taken

    def clear(self) -> None:
        self._ids = array("q")
        self._at = array("d")
        self._head = 0

    def _compact(self) -> None:
        if self._head == len(self._ids):
            self.clear()
        elif self._head >= COMPACT_AT and self._head * 2 >= len(self._ids):
            del self._ids[: self._head]
            del self._at[: self._head]
            self._head = 0
