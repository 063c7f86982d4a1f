"""Signal handling for long operations: SIGTERM/SIGHUP act like Ctrl-C; clean-up is not interrupted."""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

# Signals that end a run or an image build the way Ctrl-C does.
TERMINATING = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupt(KeyboardInterrupt):
    """SIGINT, SIGTERM or SIGHUP delivered during an operation, handled like Ctrl-C."""


@contextlib.contextmanager
def interrupt_on_terminate() -> Iterator[None]:
    """Make SIGTERM and SIGHUP raise KeyboardInterrupt (main thread only), restoring after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Interrupt(signal.Signals(signum).name)

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@contextlib.contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Hold back SIGINT/SIGTERM/SIGHUP while cleaning up; raise KeyboardInterrupt afterwards if one came.

    Main thread only (elsewhere a no-op: Python delivers signals to the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []

    def handler(signum, frame):
        pending.append(signum)

    old = {s: signal.signal(s, handler) for s in TERMINATING}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        if pending:
            raise Interrupt(signal.Signals(pending[0]).name)
