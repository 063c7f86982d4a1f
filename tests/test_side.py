"""util/side.py: work beside the caller in a forked child, done in the caller when the child fails."""

from __future__ import annotations

import os
import signal

import pytest

from splicebench.util import side as side_mod

pytestmark = pytest.mark.unit
PARENT = os.getpid()


def where(x):
    return os.getpid(), x * 2


def dies_in_the_child(x):
    if os.getpid() != PARENT:
        os.kill(os.getpid(), signal.SIGKILL)
    return "done by the caller", x


def fails(x):
    raise ValueError(f"bad {x} in {'child' if os.getpid() != PARENT else 'caller'}")


def children() -> set[int]:
    out = set()
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == PARENT:
                        out.add(int(d))
            except (OSError, IndexError, ValueError):
                pass
    return out


def test_the_work_runs_in_a_child_and_the_child_is_gone_after_the_block():
    before = children()
    with side_mod.side() as s:
        job = s.submit(where, 21)
        pid, value = job.result()
    assert value == 42 and pid != PARENT
    assert children() - before == set()


def test_a_child_that_dies_leaves_the_work_to_the_caller():
    with side_mod.side() as s:
        assert s.submit(dies_in_the_child, 1).result() == ("done by the caller", 1)


def test_an_error_is_raised_where_it_happens_in_the_caller():
    with side_mod.side() as s, pytest.raises(ValueError, match="bad 3 in caller"):
        s.submit(fails, 3).result()


def test_without_a_spare_cpu_the_caller_does_the_work():
    s = side_mod.Side(spare_cpu=False)
    assert s.submit(where, 1).result() == (PARENT, 2)
    s.close()
