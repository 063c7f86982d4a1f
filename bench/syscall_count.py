"""System calls made by some processes while a block runs, counted with perf (linux-perf on Debian).

    with counting([pid]) as n:
        ...  # the transfer
    n.value  # system calls entered by every thread of pid meanwhile, or None without perf

`perf stat -e raw_syscalls:sys_enter -p PID,...` counts each entry into a system call by the threads
the processes have when it attaches (a short wait lets it attach before the block starts). io_uring's
io-wq worker threads (iou-wrk-PID) that appear later make no system calls: their work is counted in
CPU time, not here. Shared by bench/programs_bench.py and bench/proxy_bench.py.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from splicebench.programs.provision import PERF_PACKAGES

EVENT = "raw_syscalls:sys_enter"
ATTACH_S = 0.3


@dataclass
class Count:
    value: int | None = None
    error: str = ""


def available() -> str | None:
    """Why system calls cannot be counted here, or None when perf is there."""
    names = " ".join(p.name for p in PERF_PACKAGES)
    return None if shutil.which("perf") else f"perf not installed (apt-get install {names})"


def with_descendants(pid: int) -> list[int]:
    """pid and its descendants now (NGINX's worker, for instance)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rpartition(")")[2].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def parse(stderr: str) -> int | None:
    """The count from `perf stat -x,` output (None when perf says <not counted>)."""
    for line in stderr.splitlines():
        parts = line.split(",")
        if len(parts) > 2 and parts[2] == EVENT:
            return int(parts[0]) if parts[0].isdigit() else None
    return None


@contextlib.contextmanager
def counting(pids: list[int]) -> Iterator[Count]:
    """Count the system calls of pids (all their threads) during the block."""
    n = Count()
    why = available()
    if why:
        n.error = why
        yield n
        return
    p = subprocess.Popen(["perf", "stat", "-e", EVENT, "-x", ",", "-p", ",".join(map(str, pids))],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    try:
        time.sleep(ATTACH_S)
        yield n
    finally:
        p.send_signal(signal.SIGINT)
        try:
            _, err = p.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
            _, err = p.communicate()
        n.value = parse(err)
        if n.value is None:
            n.error = err.strip().splitlines()[-1] if err.strip() else f"perf exited {p.returncode}"
