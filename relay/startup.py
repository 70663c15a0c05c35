"""Start-up failures: one line for the operator, and an exit status per kind of failure (sysexits.h).

``relay serve`` prints ``relay: <message>`` and exits with the status, so a
service manager (or a script) can tell a bad config from a busy port from a
data directory it cannot write, without reading a traceback.
"""

from __future__ import annotations

import errno
import os

from relay.errors import RelayError

EX_CONFIG = 78  # the config: a bad file, key or value (also an unusable certificate)
EX_OSERR = 71  # a listener cannot be bound: the address is in use, not allowed, or not on this host
EX_CANTCREAT = 73  # the data directory, or a file relay keeps there, cannot be created or written
EX_IOERR = 74  # the queue database cannot be opened (not a database, corrupt, unreadable)


class StartupError(RelayError):
    """A reason ``relay serve`` cannot start, phrased for the operator, with its exit status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def reason(exc: BaseException) -> str:
    """``[Errno 98] Address already in use (while ...)`` → ``address already in use``."""
    code = getattr(exc, "errno", None)
    if isinstance(code, int) and code in errno.errorcode:
        text = os.strerror(code)
    else:  # getaddrinfo's errors (negative codes), or no code at all
        text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return text[0].lower() + text[1:]
