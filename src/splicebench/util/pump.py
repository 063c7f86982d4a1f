"""One thread that reads the output of every background program of this process and fires their
deadlines, instead of three threads per program (a reader for stdout, one for stderr, a timer).

Starting a thread costs about 0.2-0.5 ms here and a sample starts three programs: a server, the
CPU sampler and a client. The pump is started with the first program and runs until the process
ends (a daemon thread). A callback runs on the pump's thread and must not block.
"""

from __future__ import annotations

import heapq
import itertools
import os
import selectors
import threading
import time
from typing import Callable

READ_SIZE = 65536


class Pump:
    """watch(fd, on_data) reads fd whenever it has data and hands each chunk to on_data (b"" once at
    the end of the file, after which the pump no longer watches fd: its owner closes it); at(deadline,
    fn) calls fn at time.monotonic() deadline unless cancelled first. A callback that raises is
    dropped with its exception; the pump goes on."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._adds: list[tuple[int, Callable[[bytes], None]]] = []
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._cancelled: set[int] = set()
        self._ids = itertools.count()
        self._thread = threading.Thread(target=self._loop, name="splicebench-pump", daemon=True)
        self._thread.start()

    def watch(self, fd: int, on_data: Callable[[bytes], None]) -> None:
        with self._lock:
            self._adds.append((fd, on_data))
        self._wake()

    def at(self, deadline: float, fn: Callable[[], None]) -> int:
        with self._lock:
            handle = next(self._ids)
            heapq.heappush(self._timers, (deadline, handle, fn))
        self._wake()
        return handle

    def cancel(self, handle: int) -> None:
        with self._lock:
            self._cancelled.add(handle)

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:  # already awake
            pass

    def _due(self) -> tuple[list[Callable[[], None]], float | None]:
        """Timers due now, and the seconds until the next one (None: none)."""
        now = time.monotonic()
        due = []
        with self._lock:
            while self._timers and (self._timers[0][0] <= now or self._timers[0][1] in self._cancelled):
                _, handle, fn = heapq.heappop(self._timers)
                if handle in self._cancelled:
                    self._cancelled.discard(handle)
                else:
                    due.append(fn)
            adds, self._adds = self._adds, []
            wait = max(0.0, self._timers[0][0] - now) if self._timers else None
        for fd, on_data in adds:
            self._sel.register(fd, selectors.EVENT_READ, on_data)
        return due, wait

    def _loop(self) -> None:
        while True:
            due, wait = self._due()
            for fn in due:
                _call(fn)
            if due:
                continue
            for key, _ in self._sel.select(wait):
                if key.data is None:
                    try:
                        while os.read(self._wake_r, 4096):
                            pass
                    except BlockingIOError:
                        pass
                    continue
                try:
                    chunk = os.read(key.fd, READ_SIZE)
                except OSError:
                    chunk = b""
                if not chunk:
                    self._sel.unregister(key.fd)
                _call(key.data, chunk)


def _call(fn: Callable, *args) -> None:
    try:
        fn(*args)
    except Exception:  # noqa: BLE001 (a callback's own failure must not stop every program's output)
        pass


_PUMP: Pump | None = None
_PUMP_LOCK = threading.Lock()


def pump() -> Pump:
    """This process's pump, started at the first call (again in a forked child that calls it)."""
    global _PUMP
    with _PUMP_LOCK:
        if _PUMP is None or not _PUMP._thread.is_alive():
            _PUMP = Pump()
        return _PUMP
