"""Processes the lab starts: waiting for an sshd among them to answer, and ending them (TERM, then KILL).

Used by the namespace hosts (netns: one sshd per namespace) and the arm64 guest (arm64_guest: QEMU,
whose guest runs the sshd). Standard library only; the callers turn the outcomes into their errors.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from typing import Callable

from splicebench.util.procs import pid_alive


def ssh_banner(host: str, port: int, *, connect_timeout: float, read_timeout: float) -> bool:
    """True if host:port accepts a connection and its first bytes are an SSH banner ("SSH-")."""
    try:
        with socket.create_connection((host, port), timeout=connect_timeout) as s:
            s.settimeout(read_timeout)
            return s.recv(64).startswith(b"SSH-")
    except OSError:
        return False


def wait_for_sshd(host: str, port: int, *, timeout: float, alive: Callable[[], bool],
                  interval: float, connect_timeout: float, read_timeout: float,
                  heartbeat: tuple[float, Callable[[float], None]] | None = None) -> str:
    """Poll host:port until it sends an SSH banner; returns what ended the wait:

    "up" when it answered, "exited" as soon as alive() is false (checked before each attempt),
    "timeout" once more than timeout seconds have passed. heartbeat = (every_s, note): note(elapsed_s)
    is called every every_s seconds while waiting."""
    t0 = time.monotonic()
    next_note = t0 + heartbeat[0] if heartbeat else None
    while True:
        if not alive():
            return "exited"
        if ssh_banner(host, port, connect_timeout=connect_timeout, read_timeout=read_timeout):
            return "up"
        now = time.monotonic()
        if now - t0 > timeout:
            return "timeout"
        if heartbeat and now >= next_note:
            heartbeat[1](now - t0)
            next_note = now + heartbeat[0]
        time.sleep(interval)


def terminate(list_pids: Callable[[], list[int]], *, term_wait: float, kill_wait: float,
              poll: float = 0.05) -> list[int]:
    """End the processes list_pids() names: SIGTERM, up to term_wait seconds for them to go, then
    SIGKILL to those left and up to kill_wait seconds more. list_pids is asked again while waiting
    (a namespace's processes) or returns a fixed list (processes found once).

    Returns the pids signalled first; a pid already gone is no error."""
    first = pids = list_pids()
    for sig, wait in ((signal.SIGTERM, term_wait), (signal.SIGKILL, kill_wait)):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while True:
            pids = [p for p in list_pids() if pid_alive(p)]
            if not pids or time.monotonic() >= deadline:
                break
            time.sleep(poll)
        if not pids:
            break
    return first
