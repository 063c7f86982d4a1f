"""Work done beside the caller in a forked process, on a host with a CPU to spare.

A report's statistics sections and its charts are independent and each take a fifth of a second or
more (scipy, matplotlib); on a host with two or more CPUs one of them runs in a child forked from the
caller (it inherits every loaded library, nothing is imported again), while the caller does the
other. The function and its arguments are pickled to the child and its result back
(concurrent.futures.ProcessPoolExecutor with the fork start method). On a host with one CPU, where
fork is not available, or when the child fails in any way (it is killed, a pickling error), the
work is done in the caller instead, so an exception is raised where it happens, with its traceback.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from typing import Any, Callable, Iterator, TypeVar

T = TypeVar("T")


class Job:
    """The result of fn(*args) once asked for: the child's if it delivered one, else computed here."""

    def __init__(self, future: Future | None, fn: Callable[..., Any], args: tuple):
        self._future, self._fn, self._args = future, fn, args

    def result(self) -> Any:
        if self._future is not None:
            try:
                return self._future.result()
            except Exception:  # noqa: BLE001 (done again here: a real error is raised with its traceback)
                pass
        return self._fn(*self._args)


class Side:
    """submit(fn, *args) -> Job; at most one child, created at the first submit."""

    def __init__(self, spare_cpu: bool):
        self._spare = spare_cpu
        self._pool: Executor | None = None

    def submit(self, fn: Callable[..., Any], *args: Any) -> Job:
        if not self._spare:
            return Job(None, fn, args)
        try:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("fork"))
            return Job(self._pool.submit(fn, *args), fn, args)
        except (OSError, ValueError, RuntimeError):
            return Job(None, fn, args)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


@contextlib.contextmanager
def side() -> Iterator[Side]:
    """A Side for the block; its child has exited when the block ends (also on an exception)."""
    s = Side(spare_cpu=(os.cpu_count() or 1) > 1 and "fork" in multiprocessing.get_all_start_methods())
    try:
        yield s
    finally:
        s.close()
