"""Start-up failures: one line for the operator, and an exit status per kind of failure (sysexits.h).

``relay serve`` prints ``relay: <message>`` and exits with the status, so a
service manager (or a script) can tell a bad config from a busy port from a
data directory it cannot write, without reading a traceback.
"""

from __future__ import annotations

import errno
import importlib.util
import os
import resource
from collections.abc import Iterable

from relay.errors import RelayError

EX_CONFIG = 78  # the config: a bad file, key or value (also an unusable certificate)
EX_OSERR = 71  # a listener cannot be bound: the address is in use, not allowed, or not on this host
EX_CANTCREAT = 73  # the data directory, or a file relay keeps there, cannot be created or written
EX_IOERR = 74  # the queue database cannot be opened (not a database, corrupt, unreadable)

# Dependencies a process imports when it first uses them (webhooks, a scrape, DKIM's fallback, a domain check,
# the SMTP listener and templates of a process that accepts): looked for at start-up all the same.
IMPORTED_WHEN_USED = ("aiohttp", "aiosmtpd", "dkim", "dns", "jinja2", "prometheus_client", "spf")


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


def check_installed(packages: Iterable[str] = IMPORTED_WHEN_USED) -> None:
    """Raise ModuleNotFoundError, as an import at start-up would, if one of ``packages`` is not installed.

    Finds them without importing them: a missing dependency stops ``relay serve`` at start, not at the first
    message that needs it.
    """
    for name in packages:
        if importlib.util.find_spec(name) is None:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)


OTHER_FILES = 256  # besides the connections relay lets in: the database, logs, DNS, listeners, pipes


def raise_open_files_limit(needed: int) -> int | None:
    """Raise this process's soft limit on open files to ``needed``, never past the hard limit (a shell's
    ``ulimit -n`` is often 1,024, fewer than the connection limits let in). Returns the limit when it stays
    short of ``needed``, else None."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return None
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return None if target >= needed else target
