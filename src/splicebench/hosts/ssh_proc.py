"""Background programs on an SSH host: output, exit code and CPU times polled from their files.

`SSHHost.start` launches a program in a session and process group of its own (see ssh.py); its
stdout/stderr, exit code and `times` output land in files under ``<workdir>/procs/<id>/``, which
`SSHProc` reads incrementally over SFTP.
"""

from __future__ import annotations

import posixpath
import signal as _signal
import threading
import time

import paramiko

from splicebench.errors import ProcError
from splicebench.hosts.connection import HostUnreachable
from splicebench.hosts.base import Host, Proc, describe_exit, json_object


# Prints the /proc/PID/stat fields after the command name (state ppid pgrp ...) of every process
# in process group $1; shell builtins only (no procps needed), so it is cheap and always there.
GROUP_STATS = (
    'pg=$1; for f in /proc/[0-9]*/stat; do read -r l 2>/dev/null <"$f" || continue; '
    'r=${l##*) }; set -- $r; [ "$3" = "$pg" ] && echo "$r"; done; echo "CLK $(getconf CLK_TCK)"'
)



class SSHProc(Proc):
    """A program started by `SSHHost.start`; output and exit are polled from its files."""

    def __init__(self, host: Host, argv: list[str], pdir: str, pid: int):
        # host: the SSHHost that started it (its spec, run, read_bytes_from and sftp_op are used)
        self.host = host
        self.argv = argv
        self.dir = pdir
        self.pid = pid  # the wrapper: session and process group leader
        self._lock = threading.Lock()
        self._out = b""
        self._lines: list[str] = []
        self._rc: int | None = None
        self._times: tuple[float, float] | None = None
        self._gone = False  # group vanished without an exit code (killed with SIGKILL)
        self._lost: str | None = None  # the host stopped answering: why
        self._err = b""
        self._cpu = (0.0, 0.0)

    # polling
    def _poll_out(self) -> None:
        data = self.host.read_bytes_from(f"{self.dir}/out", len(self._out))
        if data:
            with self._lock:
                self._out += data
                self._lines = [x.decode("utf-8", "replace") for x in self._out.split(b"\n")[:-1]]

    def _poll_exit(self) -> int | None:
        if self._rc is not None or self._gone:
            return self._rc
        text = self.host.read_bytes_from(f"{self.dir}/rc", 0)
        if text and text.strip().lstrip(b"-").isdigit():
            self._rc = exit_code(int(text))
            return self._rc
        return None

    def _group_stats(self) -> tuple[list[list[str]], int]:
        """/proc stat fields (from the state on) of the group's processes, and CLK_TCK."""
        r = self.host.run(["sh", "-c", GROUP_STATS, "sh", str(self.pid)], check=False,
                          timeout=self.host.spec.io_timeout)
        rows, hz = [], 100
        for line in r.stdout.splitlines():
            if line.startswith("CLK "):
                hz = int(line[4:]) if line[4:].strip().isdigit() else 100
            elif line.split():
                rows.append(line.split())
        return rows, hz

    def _group_alive(self) -> bool:
        """True while a non-zombie process of the group exists (zombies linger ~1 s here)."""
        return any(f[0] not in ("Z", "X") for f in self._group_stats()[0])

    def _lose(self, e: HostUnreachable) -> None:
        self._lost = str(e)

    def read_stdout_lines(self) -> list[str]:
        if self._lost is None:
            try:
                self._poll_out()
            except HostUnreachable as e:
                self._lose(e)
                raise
        with self._lock:
            return list(self._lines)

    def wait_json_event(self, event: str, timeout: float) -> dict:
        if self._lost is not None:
            raise HostUnreachable(self._lost)
        try:
            return self._wait_json_event(event, timeout)
        except HostUnreachable as e:
            self._lose(e)
            raise

    def _wait_json_event(self, event: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        delay = 0.01
        while True:
            self._poll_out()
            with self._lock:
                lines = list(self._lines)
            for line in lines:
                obj = json_object(line)
                if obj is not None and obj.get("event") == event:
                    return obj
            code = self._poll_exit()
            if code is not None:
                self._poll_out()
                if any((o := json_object(x)) is not None and o.get("event") == event
                       for x in self._lines):
                    continue
                raise ProcError(f"{self._name()} {describe_exit(code)} before printing a "
                                f"{event!r} line" + self.stderr_suffix())
            if time.monotonic() > deadline:
                raise ProcError(f"{self._name()} printed no {event!r} line within {timeout:g} s"
                                + self.stderr_suffix())
            time.sleep(delay)
            delay = min(delay * 2, 0.2)

    def signal(self, sig: int) -> None:
        """Signal the group; a no-op once exited or once the host stopped answering."""
        if self._lost is not None:
            return
        try:
            if self._poll_exit() is None and not self._gone:
                name = _signal.Signals(sig).name.removeprefix("SIG")
                self.host.run(["kill", "-s", name, "--", f"-{self.pid}"], check=False,
                              timeout=self.host.spec.io_timeout)
        except HostUnreachable as e:
            self._lose(e)

    def wait(self, timeout: float) -> int | None:
        """Exit code, or None if still running after timeout.

        If the host stops answering, the first wait raises HostUnreachable (so the caller learns
        why); from then on wait/poll return None (state unknown: the deadman ends the program)."""
        if self._lost is not None:
            return None
        try:
            return self._wait(timeout)
        except HostUnreachable as e:
            self._lose(e)
            raise

    def poll(self) -> int | None:
        """Like wait(0), but never raises: an unreachable host gives None (used in cleanup)."""
        try:
            return self.wait(0)
        except HostUnreachable:
            return None

    def _wait(self, timeout: float) -> int | None:
        deadline = time.monotonic() + timeout
        delay = 0.01
        checks = 0
        while True:
            code = self._poll_exit()
            if code is not None:
                return code
            if self._gone:
                return -_signal.SIGKILL
            checks += 1
            if checks % 5 == 0 and not self._group_alive():
                # The group is gone: either the rc file just appeared, or it was SIGKILLed.
                code = self._poll_exit()
                if code is not None:
                    return code
                self._gone = True
                return -_signal.SIGKILL
            if time.monotonic() >= deadline:
                return None
            time.sleep(delay)
            delay = min(delay * 2, 0.2)

    def stdout(self) -> str:
        """Everything printed so far; once the host is lost, what was received before."""
        if self._lost is None:
            try:
                self._poll_out()
            except HostUnreachable as e:
                self._lose(e)
        with self._lock:
            return self._out.decode("utf-8", "replace")

    def stderr(self) -> str:
        """Everything printed to stderr; once the host is lost, what was read before and why."""
        if self._lost is None:
            try:
                self._err = self.host.read_bytes_from(f"{self.dir}/err", 0) or b""
            except HostUnreachable as e:
                self._lose(e)
        text = self._err.decode("utf-8", "replace")
        if self._lost is not None:
            text += f"[splicebench: {self._lost}]\n"
        return text

    def cpu_times(self) -> tuple[float, float]:
        """(user, sys) seconds of the program; from the wrapper's `times` once it has exited."""
        if self._times is not None:
            return self._times
        if self._lost is not None:
            return self._cpu
        try:
            self._cpu = self._cpu_times()
        except HostUnreachable as e:
            self._lose(e)
            raise
        return self._cpu

    def _cpu_times(self) -> tuple[float, float]:
        if self._poll_exit() is not None:
            text = (self.host.read_bytes_from(f"{self.dir}/times", 0) or b"").decode()
            rows = text.split("\n")
            if len(rows) >= 2 and len(rows[1].split()) == 2:
                self._times = tuple(parse_times(w) for w in rows[1].split())  # type: ignore
                return self._times
            return (0.0, 0.0)
        rows, hz = self._group_stats()
        user = sum(int(f[11]) + int(f[13]) for f in rows if len(f) > 14)
        sys_ = sum(int(f[12]) + int(f[14]) for f in rows if len(f) > 14)
        return (user / hz, sys_ / hz)

    def kill(self) -> None:
        """SIGKILL the group and wait for it; a no-op once exited or the host is lost."""
        if self._lost is not None:
            return
        try:
            if self._poll_exit() is not None or self._gone:
                return
            self.host.run(["kill", "-s", "KILL", "--", f"-{self.pid}"], check=False,
                          timeout=self.host.spec.io_timeout)
            self._wait(5)
        except HostUnreachable as e:
            self._lose(e)

    def release(self) -> None:
        """Open the start gate of a program started with gated=True."""
        def do(s: paramiko.SFTPClient):
            s.open(f"{self.dir}/go", "w").close()
        self.host.sftp_op("release", do)

    @property
    def deadman_fired(self) -> bool:
        """True if the program was ended by its deadman (timeout's exit code 124)."""
        return self._rc == 124

    def _name(self) -> str:
        return f"{posixpath.basename(self.argv[0])} on {self.host.name} (pgid {self.pid})"

    def __repr__(self) -> str:
        return f"<SSHProc {self._name()}>"


def exit_code(rc: int) -> int:
    """Shell exit status -> Proc convention (negative: killed by that signal)."""
    return -(rc - 128) if 128 < rc < 128 + 65 else rc


def parse_times(word: str) -> float:
    """``1m2.50s`` (dash/bash `times`) -> 62.5."""
    m, _, s = word.rstrip("s").partition("m")
    try:
        return float(m) * 60 + float(s)
    except ValueError:
        return 0.0




def decode(b: bytes | bytearray) -> str:
    """Program output as text; undecodable bytes become U+FFFD."""
    return bytes(b).decode("utf-8", "replace")
