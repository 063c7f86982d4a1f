"""The seam between the runner and where programs run: `Host` and `Proc` (interfaces only).

A host can run a command, copy files and start background programs; `LocalHost` (local.py) is this
machine, `SSHHost` (ssh.py) a host reached over SSH. The runner, deploy and facts code work
unchanged on either. Every background program runs in its own process group (its own session), so
that stopping it stops everything it started.
"""

from __future__ import annotations

import json
import os
import signal
from abc import ABC, abstractmethod
from dataclasses import dataclass

from splicebench.errors import tail

LOCAL = "local"


@dataclass(frozen=True)
class RunResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


class Proc(ABC):
    """A background program started in its own process group."""

    pid: int
    argv: list[str]  # as started: argv[0] is the program
    # Whether `pid` is the program's own pid from its start (it is exec'd in place, no wrapper stays
    # in between), so that it can be watched before the program says so in a ready line.
    pid_is_program: bool = False

    @abstractmethod
    def read_stdout_lines(self) -> list[str]:
        """Complete stdout lines received so far (non-blocking)."""

    @abstractmethod
    def wait_json_event(self, event: str, timeout: float) -> dict:
        """The first stdout line that is a JSON object with "event" == event.

        Raises ProcError if the program exits (closes stdout) first or `timeout` seconds pass."""

    @abstractmethod
    def signal(self, sig: int) -> None:
        """Send `sig` to the whole process group (no-op once the program has been reaped)."""

    @abstractmethod
    def wait(self, timeout: float) -> int | None:
        """Exit code (negative: killed by that signal), or None if still running after `timeout`."""

    @abstractmethod
    def stdout(self) -> str:
        """All stdout received so far."""

    @abstractmethod
    def stderr(self) -> str:
        """All stderr received so far."""

    @abstractmethod
    def cpu_times(self) -> tuple[float, float]:
        """(user, sys) CPU seconds of the program including its waited-for children."""

    @abstractmethod
    def kill(self) -> None:
        """SIGKILL the process group and reap the program; safe to call more than once."""

    def poll(self) -> int | None:
        return self.wait(0)


    def stderr_suffix(self) -> str:
        """'; stderr: <last lines>' for messages about this program, or '' if it printed none."""
        last = tail(self.stderr(), 5)
        return f"; stderr: {last}" if last else ""


class Held(ABC):
    """A command that runs for as long as its standard input stays open (`Host.hold`).

    Its input closes when `finish` is called, and also when the orchestrator dies or loses its
    connection to the host: the command then runs to its end on the host by itself."""

    @abstractmethod
    def finish(self, timeout: float) -> RunResult:
        """Close its input, wait up to timeout seconds for it to exit; its output and exit code
        (124 if it was still running)."""


class Host(ABC):
    """A machine where programs are built and run."""

    name: str
    # How programs on other hosts reach this one (the server's connect address for remote clients).
    address: str = "127.0.0.1"

    @abstractmethod
    def run(self, argv: list[str], *, timeout: float = 60, check: bool = True,
            cwd: str | None = None) -> RunResult:
        """Run argv to completion; CommandFailed if check and it fails or times out."""

    @abstractmethod
    def put(self, local_path: str | os.PathLike, remote_path: str) -> None:
        """Copy a local file to this host."""

    @abstractmethod
    def get(self, remote_path: str, local_path: str | os.PathLike) -> None:
        """Copy a file from this host to the local machine."""

    @abstractmethod
    def start(self, argv: list[str], *, cwd: str | None = None, deadman_s: float | None = None) -> Proc:
        """Start argv in the background in its own process group.

        deadman_s: the program is killed after that many seconds if still running, even if the
        orchestrator is gone."""

    @abstractmethod
    def hold(self, argv: list[str], *, ready: str, timeout: float = 30) -> Held:
        """Start argv (with the host's privileges, like `run`) with its standard input held open by
        this process, and wait until it prints the line `ready`; HostError if it exits first."""

    @abstractmethod
    def read_text(self, path: str) -> str:
        """Contents of a text file on this host (OSError if it cannot be read)."""

    @abstractmethod
    def workdir(self) -> str:
        """Base directory on this host for copied sources and builds."""

    @abstractmethod
    def close(self) -> None:
        """Kill programs this object started that are still running; release connections."""

    # Helpers built on the primitives above; subclasses may override them with faster versions.

    def exists(self, path: str) -> bool:
        return self.run(["test", "-e", path], check=False, timeout=30).returncode == 0

    def makedirs(self, path: str) -> None:
        self.run(["mkdir", "-p", "--", path], timeout=30)

    def remove_tree(self, path: str) -> None:
        self.run(["rm", "-rf", "--", path], timeout=120)

    def pids_with_exe_under(self, prefix: str) -> list[int]:
        """PIDs of processes whose executable lies under directory `prefix` (leftover finder)."""
        script = 'for p in /proc/[0-9]*; do e=$(readlink "$p/exe" 2>/dev/null) || continue; ' \
                 'case "$e" in "$1"/*) echo "${p#/proc/}";; esac; done'
        r = self.run(["sh", "-c", script, "sh", prefix.rstrip("/")], check=False, timeout=30)
        return sorted(int(x) for x in r.stdout.split() if x.isdigit())

    def kill_pids(self, pids: list[int]) -> None:
        if pids:
            self.run(["kill", "-KILL", "--", *map(str, pids)], check=False, timeout=30)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def json_object(line: str) -> dict | None:
    """The JSON object on one line of program output, or None if the line is not one."""
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        obj = json.loads(line)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


def describe_exit(code: int) -> str:
    """How a program ended, for messages: 'exited with code 2', 'was killed by SIGKILL'."""
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"
