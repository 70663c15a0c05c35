"""relay.admission: connections counted per client address and in all, with a reserve for trusted clients."""

from __future__ import annotations

import subprocess
import sys

from hypothesis import given
from hypothesis import strategies as st

from relay.admission import ConnectionCounts, Refusal


def test_the_cap_per_address_comes_before_the_total():
    counts = ConnectionCounts(per_address=2, total=3)
    assert counts.admit("192.0.2.1") is None
    assert counts.admit("192.0.2.1") is None
    assert counts.admit("192.0.2.1") is Refusal.ADDRESS
    assert counts.admit("192.0.2.2") is None
    assert counts.admit("192.0.2.3") is Refusal.TOTAL
    assert counts.open == 3 and counts.by_address == {"192.0.2.1": 2, "192.0.2.2": 1}


def test_a_reserved_address_is_let_in_past_the_total_but_not_past_its_own_cap():
    counts = ConnectionCounts(per_address=2, total=1)
    assert counts.admit("192.0.2.1") is None
    assert counts.admit("127.0.0.1", reserved=True) is None
    assert counts.admit("127.0.0.1", reserved=True) is None
    assert counts.admit("127.0.0.1", reserved=True) is Refusal.ADDRESS
    assert counts.admit("192.0.2.2") is Refusal.TOTAL  # the reserved ones count
    assert counts.open == 3


def test_a_closed_connection_makes_room():
    counts = ConnectionCounts(per_address=1, total=1)
    assert counts.admit("192.0.2.1") is None
    assert counts.admit("192.0.2.2") is Refusal.TOTAL
    counts.release("192.0.2.1")
    assert counts.open == 0 and not counts.by_address
    assert counts.admit("192.0.2.2") is None


@given(st.lists(st.tuples(st.booleans(), st.sampled_from(["a", "b", "c"]), st.booleans()), max_size=60))
def test_counts_match_the_connections_let_in(steps):
    """Any order of connections and closes: the counts are those of the connections admitted and still open,
    and neither cap is passed except the total by reserved addresses."""
    counts = ConnectionCounts(per_address=3, total=4)
    open_: list[tuple[str, bool]] = []
    for connect, address, reserved in steps:
        if connect:
            refusal = counts.admit(address, reserved)
            mine = sum(1 for a, _ in open_ if a == address)
            if mine >= 3:
                assert refusal is Refusal.ADDRESS
            elif len(open_) >= 4 and not reserved:
                assert refusal is Refusal.TOTAL
            else:
                assert refusal is None
                open_.append((address, reserved))
        elif open_:
            address, _ = open_.pop(0)
            counts.release(address)
        assert counts.open == len(open_)
        assert dict(counts.by_address) == {a: n for a in "abc" if (n := sum(1 for o, _ in open_ if o == a))}


def _limit_after(soft: int, hard: int, needed: int) -> str:
    """In a child process (a hard limit once lowered stays lowered): set the limits, ask for ``needed``."""
    code = (
        "import resource; from relay.startup import raise_open_files_limit as r;"
        f"resource.setrlimit(resource.RLIMIT_NOFILE, ({soft}, {hard}));"
        f"short = r({needed}); print(short, resource.getrlimit(resource.RLIMIT_NOFILE)[0])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    return done.stdout.strip()


def test_the_open_files_limit_is_raised_for_the_connections_let_in():
    """A shell's ulimit -n of 1,024 is fewer than the connection limits let in: the soft limit goes up."""
    assert _limit_after(1024, 8192, 3400) == "None 3400"
    assert _limit_after(4096, 8192, 3400) == "None 4096"  # never lowered


def test_an_open_files_limit_that_cannot_go_high_enough_is_reported():
    assert _limit_after(256, 2048, 3400) == "2048 2048"
