"""util/pump.py: one thread reads every program's output and fires their deadlines."""

from __future__ import annotations

import os
import threading
import time

import pytest

from splicebench.util.pump import Pump

pytestmark = pytest.mark.unit


def test_chunks_of_many_pipes_arrive_whole_and_in_order_with_one_end_each():
    p = Pump()
    got: dict[int, list[bytes]] = {}
    ended = threading.Semaphore(0)
    pipes = [os.pipe() for _ in range(20)]
    for i, (r, _) in enumerate(pipes):
        got[i] = []

        def on_data(chunk, i=i):
            got[i].append(chunk)
            if not chunk:
                ended.release()
        p.watch(r, on_data)
    for i, (_, w) in enumerate(pipes):
        for k in range(50):
            os.write(w, f"{i}:{k};".encode())
        os.close(w)
    for _ in pipes:
        assert ended.acquire(timeout=10)
    for i, (r, _) in enumerate(pipes):
        assert got[i][-1] == b"" and got[i].count(b"") == 1
        assert b"".join(got[i]) == "".join(f"{i}:{k};" for k in range(50)).encode()
        os.close(r)


def test_deadlines_fire_in_order_and_a_cancelled_one_never():
    p = Pump()
    fired: list[str] = []
    done = threading.Event()
    now = time.monotonic()
    p.at(now + 0.2, lambda: (fired.append("late"), done.set()))
    cancelled = p.at(now + 0.1, lambda: fired.append("cancelled"))
    p.at(now + 0.05, lambda: fired.append("early"))
    p.cancel(cancelled)
    assert done.wait(10)
    assert fired == ["early", "late"]


def test_a_callback_that_raises_does_not_stop_the_others():
    p = Pump()
    ok, ended = threading.Event(), threading.Event()
    p.at(time.monotonic(), lambda: 1 / 0)
    r, w = os.pipe()
    p.watch(r, lambda chunk: ok.set() if chunk == b"x" else ended.set())
    os.write(w, b"x")
    assert ok.wait(10)
    os.close(w)
    assert ended.wait(10)
    os.close(r)
