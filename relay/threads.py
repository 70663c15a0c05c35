"""How the threads relay starts beside its event loops ask the kernel to schedule them.

A store's writer thread (SQLite's and PostgreSQL's) waits for the disk, the write lock or the server,
and then for the GIL, which the event loop's thread holds most of the time. Scheduled as an ordinary
thread, each time it woke (the fsync done, the lock free, the GIL let go for a statement) it took the
core from the event loop's thread on the spot, and the two passed the GIL back and forth: measured
with one acceptor (bench/throughput.py, 10,000 messages), ~9 context switches a message across relay's
processes, 20 a group commit in the acceptor's writer thread alone.

Linux's SCHED_BATCH policy is for threads like it: the same share of the CPU as before (their nice
value still counts), but a batch thread that wakes does not preempt the thread that is running; it
runs when a core is free or at the running thread's next turn. The event loop then goes on serving
its connections until it waits, and the writer thread takes the GIL once, when it is free. Measured
against the same code without it (bench/RESULTS.md, twenty-sixth session): 6.9-7.5 context switches a
message against 9.2-9.3, 0.90x the CPU a message and 1.03-1.11x the messages a second; the price is a
commit's outcome reaching the event loop a little later when every core is busy (acceptance to arrival
at 1,100 messages a second: p50 0.7 ms against 0.5, p99 4.1-4.8 against 4.5-4.6).

Nothing changes where the policy does not exist (not Linux) or cannot be set.
"""

from __future__ import annotations

import logging
import os
import threading

log = logging.getLogger(__name__)


def run_as_batch() -> bool:
    """Schedule the calling thread (not its process) under SCHED_BATCH; True if it now is."""
    policy = getattr(os, "SCHED_BATCH", None)
    if policy is None or not hasattr(os, "sched_setscheduler"):
        return False
    try:
        os.sched_setscheduler(0, policy, os.sched_param(0))  # 0: the calling thread, on Linux
    except OSError as exc:  # a seccomp filter or an unusual kernel: scheduled as before
        log.debug("cannot schedule %s as a batch thread: %s", threading.current_thread().name, exc)
        return False
    return True
