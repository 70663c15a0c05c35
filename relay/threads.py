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
(bench/RESULTS.md): 7.1-7.6 context switches a message, 0.86x the CPU a message and 1.10x the
messages a second; the price is a commit's outcome reaching the event loop a little later when every
core is busy (acceptance to arrival at half the maximum rate: p50 0.7-0.8 ms against 0.4, p99 4.3-4.4
against 4.2).

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
