"""Processes of this machine, as /proc shows them."""

from __future__ import annotations


def pid_alive(pid: int) -> bool:
    """True while pid exists and is not a zombie.

    Reads the state letter in /proc/PID/stat rather than kill(pid, 0): orphans are reaped late on
    some hosts (about once a second), and kill -0 says "alive" for a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in (b"Z", b"X")
