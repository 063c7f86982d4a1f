"""This machine as a `Host` (base.py): commands by subprocess (never a shell), background programs.

Every background program runs in its own process group (its own session), so that stopping it
stops everything it started, and a Ctrl-C in the terminal reaches only the orchestrator, which then
stops its programs in order. Locally each program also dies with the orchestrator, even if the
orchestrator is killed with SIGKILL: the built programs arm their parent-death signal themselves
(launch()), anything else is started under `setpriv --pdeathsig KILL` (util-linux) and a parent check.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

from splicebench.errors import CommandFailed, ProcError
from splicebench.hosts.base import LOCAL, Held, Host, Proc, RunResult, describe_exit, json_object
from splicebench.registry import CLIENT_PROGRAM, SAMPLER_PROGRAM, SERVERS, program_argv
from splicebench.util.cache import cache_base
from splicebench.util.pump import pump

def pdeathsig_prefix() -> list[str]:
    """['setpriv', '--pdeathsig', 'KILL', '--'] where setpriv supports it, else []."""
    global _PDEATHSIG
    if _PDEATHSIG is None:
        path = shutil.which("setpriv")
        ok = False
        if path:
            try:
                out = subprocess.run([path, "--help"], capture_output=True, text=True, timeout=10).stdout
                ok = "--pdeathsig" in out
            except (OSError, subprocess.SubprocessError):
                ok = False
        _PDEATHSIG = [path, "--pdeathsig", "KILL", "--"] if ok else []
    return list(_PDEATHSIG)


_PDEATHSIG: list[str] | None = None

# setpriv sets the parent-death signal only after the fork: an orchestrator killed in between would
# leave the program running. So the program is started through this guard, which runs after the
# signal is armed and exits if its parent is no longer the orchestrator ($1); the program's argv
# follows as positional parameters, never through the shell's parser.
_PARENT_GUARD = '[ "$PPID" = "$1" ] || exit 70; shift; exec "$@"'


def guarded(argv: list[str]) -> list[str]:
    """argv wrapped so that it dies with this process (setpriv --pdeathsig + parent check)."""
    prefix = pdeathsig_prefix()
    if not prefix:
        return list(argv)
    return prefix + ["/bin/sh", "-c", _PARENT_GUARD, "splicebench-guard", str(os.getpid())] + list(argv)


# The built programs guard themselves: given this variable (the orchestrator's pid), each asks for
# SIGKILL at its parent's death and checks its parent before main() (servers/net.c net_parent_guard).
# Started directly, a program costs one exec instead of three (setpriv, sh, the program): about
# 2.4 ms less per program here, three programs per sample.
PARENT_PID_ENV = "SPLICEBENCH_PARENT_PID"
SELF_GUARDED = frozenset([CLIENT_PROGRAM, SAMPLER_PROGRAM, *(k.program for k in SERVERS.values() if k.built)])


def launch(argv: list[str]) -> tuple[list[str], dict[str, str] | None]:
    """(argv, environment or None for this one's) to start argv so that it dies with this process:
    a built program directly with PARENT_PID_ENV set, anything else through guarded(). A built
    program behind taskset or the cgroup's shell (registry.program_argv) counts as built: both exec
    it in the same process, whose parent stays this one, and its own check runs after them."""
    if os.path.basename(program_argv(argv)[0]) in SELF_GUARDED:
        return list(argv), {**os.environ, PARENT_PID_ENV: str(os.getpid())}
    return guarded(argv), None
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _kill_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def exited_within(popen: subprocess.Popen, timeout: float) -> bool:
    """Whether popen's process exits within timeout seconds (it may be left unreaped).

    Waits on a pidfd (Linux 5.3+): woken by the exit itself, not by polling, which is what
    Popen.wait(timeout) does (sleeps of up to 50 ms). Falls back to Popen.wait elsewhere."""
    try:
        fd = os.pidfd_open(popen.pid)
    except ProcessLookupError:  # already reaped (by another thread's wait)
        return True
    except (AttributeError, OSError):
        try:
            popen.wait(timeout=max(0.0, timeout))
            return True
        except subprocess.TimeoutExpired:
            return False
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(max(0.0, timeout) * 1000))
    finally:
        os.close(fd)


class LocalProc(Proc):
    """A program on this machine; its stdout and stderr are read, and its deadman fired, by this
    process's one pump thread (util/pump.py).

    Start it from the thread that will outlive it (normally the main thread): the kernel's
    parent-death signal fires when the starting *thread* exits."""

    pid_is_program = True  # setpriv and the guard's shell exec the program: one pid throughout

    def __init__(self, argv: list[str], cwd: str | None, deadman_s: float | None):
        self.argv = [str(a) for a in argv]
        cmd, env = launch(self.argv)
        self._popen = subprocess.Popen(
            cmd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            start_new_session=True,
        )
        self.pid = self._popen.pid
        self._cond = threading.Condition()
        self._lines: list[str] = []
        self._partial = b""
        self._err: list[bytes] = []
        self._stdout_eof = False
        self._stderr_eof = False
        self._last_cpu = (0.0, 0.0)
        p = pump()
        assert self._popen.stdout is not None and self._popen.stderr is not None
        p.watch(self._popen.stdout.fileno(), self._on_stdout)
        p.watch(self._popen.stderr.fileno(), self._on_stderr)
        self._deadman = p.at(time.monotonic() + deadman_s, self._deadman_fire) if deadman_s is not None else None

    # the pump's callbacks
    def _on_stdout(self, chunk: bytes) -> None:
        with self._cond:
            if not chunk:
                if self._partial:
                    self._lines.append(self._partial.decode("utf-8", "replace"))
                    self._partial = b""
                self._stdout_eof = True
                assert self._popen.stdout is not None
                self._popen.stdout.close()
                self._cond.notify_all()
                return
            data = self._partial + chunk
            *complete, self._partial = data.split(b"\n")
            self._lines.extend(c.decode("utf-8", "replace") for c in complete)
            if complete:
                self._cond.notify_all()

    def _on_stderr(self, chunk: bytes) -> None:
        with self._cond:
            if not chunk:
                self._stderr_eof = True
                assert self._popen.stderr is not None
                self._popen.stderr.close()
                self._cond.notify_all()
                return
            self._err.append(chunk)

    def _deadman_fire(self) -> None:
        if self._popen.poll() is None:
            _kill_group(self.pid, signal.SIGKILL)

    # Proc interface
    def read_stdout_lines(self) -> list[str]:
        with self._cond:
            return list(self._lines)

    def wait_json_event(self, event: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self._lines:
                    obj = json_object(line)
                    if obj is not None and obj.get("event") == event:
                        return obj
                if self._stdout_eof:
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ProcError(f"{self._name()} printed no {event!r} line within {timeout:g} s"
                                    + self.stderr_suffix())
                self._cond.wait(left)
        code = self.wait(2.0)
        how = "closed its output" if code is None else describe_exit(code)
        raise ProcError(f"{self._name()} {how} before printing a {event!r} line" + self.stderr_suffix())

    def signal(self, sig: int) -> None:
        if self._popen.returncode is None:
            _kill_group(self.pid, sig)

    def wait(self, timeout: float) -> int | None:
        if self._popen.returncode is None and not exited_within(self._popen, timeout):
            return None
        code = self._popen.wait()  # it has exited: this reaps it at once
        self._finish()
        return code

    def stdout(self) -> str:
        with self._cond:
            return "".join(line + "\n" for line in self._lines) + self._partial.decode("utf-8", "replace")

    def stderr(self) -> str:
        with self._cond:
            return b"".join(self._err).decode("utf-8", "replace")

    def cpu_times(self) -> tuple[float, float]:
        if self._popen.returncode is None:
            try:
                with open(f"/proc/{self.pid}/stat", "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
                utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
                self._last_cpu = ((utime + cutime) / CLK_TCK, (stime + cstime) / CLK_TCK)
            except (OSError, IndexError, ValueError):
                pass
        return self._last_cpu

    def kill(self) -> None:
        _kill_group(self.pid, signal.SIGKILL)
        try:
            self._popen.wait(timeout=10)
        except subprocess.TimeoutExpired:  # uninterruptible sleep; nothing more we can do
            pass
        self._finish()

    # internals
    def _finish(self) -> None:
        """After the exit: the deadman cancelled, and what the program wrote read to its end (at
        most 2 s more: a process it left behind may hold its output open)."""
        if self._deadman is not None:
            pump().cancel(self._deadman)
            self._deadman = None
        deadline = time.monotonic() + 2
        with self._cond:
            while not (self._stdout_eof and self._stderr_eof) and time.monotonic() < deadline:
                self._cond.wait(max(0.0, deadline - time.monotonic()))

    def _name(self) -> str:
        return f"{Path(self.argv[0]).name} (pid {self.pid})"

    def __repr__(self) -> str:
        return f"<LocalProc {self._name()}>"


class LocalHost(Host):
    """This machine."""

    def __init__(self, name: str = LOCAL):
        self.name = name
        self.address = "127.0.0.1"
        self._procs: list[LocalProc] = []

    def run(self, argv: list[str], *, timeout: float = 60, check: bool = True,
            cwd: str | None = None) -> RunResult:
        argv = [str(a) for a in argv]
        try:
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 cwd=cwd, start_new_session=True)
        except OSError as e:
            if check:
                raise CommandFailed(self.name, argv, 127, "", f"cannot execute: {e.strerror}") from None
            return RunResult(127, "", f"cannot execute {argv[0]}: {e.strerror}")
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _stop_group(p)
            out, err = p.communicate()
            o, e = _dec(out), _dec(err) + f"\n[timed out after {timeout:g} s]"
            if check:
                raise CommandFailed(self.name, argv, None, o, e) from None
            return RunResult(124, o, e)
        except BaseException:
            _stop_group(p)
            raise
        result = RunResult(p.returncode, _dec(out), _dec(err))
        if check and result.returncode != 0:
            raise CommandFailed(self.name, argv, result.returncode, result.stdout, result.stderr)
        return result

    def put(self, local_path, remote_path) -> None:
        Path(remote_path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(local_path, remote_path)

    def get(self, remote_path, local_path) -> None:
        Path(local_path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(remote_path, local_path)

    def start(self, argv: list[str], *, cwd: str | None = None, deadman_s: float | None = None) -> LocalProc:
        self._procs = [p for p in self._procs if p.poll() is None]
        proc = LocalProc(argv, cwd, deadman_s)
        self._procs.append(proc)
        return proc

    def hold(self, argv: list[str], *, ready: str, timeout: float = 30) -> "LocalHeld":
        # Its own session: a Ctrl-C in the terminal does not reach it; its input is a pipe from this
        # process, which the kernel closes when this process dies, however it dies.
        p = subprocess.Popen([str(a) for a in argv], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, start_new_session=True)
        held = LocalHeld(self.name, argv, p)
        held.wait_ready(ready, timeout)
        return held

    def read_text(self, path: str) -> str:
        return Path(path).read_text(encoding="utf-8", errors="replace")

    def workdir(self) -> str:
        return str(cache_base().resolve())

    def close(self) -> None:
        for p in self._procs:
            p.kill()
        self._procs = []

    # faster local versions of the helpers
    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def makedirs(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)

    def remove_tree(self, path: str) -> None:
        shutil.rmtree(path, ignore_errors=True)

    def pids_with_exe_under(self, prefix: str) -> list[int]:
        prefix = os.path.realpath(prefix).rstrip("/") + "/"
        pids = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                exe = os.readlink(f"/proc/{entry}/exe")
            except OSError:
                continue
            if exe.startswith(prefix):
                pids.append(int(entry))
        return sorted(pids)

    def kill_pids(self, pids: list[int]) -> None:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


class LocalHeld(Held):
    """`LocalHost.hold`'s command: a child process whose stdin is a pipe from this process."""

    def __init__(self, host: str, argv: list[str], popen: subprocess.Popen):
        self.host, self.argv, self.p = host, argv, popen
        self.first = b""

    def wait_ready(self, ready: str, timeout: float) -> None:
        assert self.p.stdout is not None
        deadline = time.monotonic() + timeout
        while not self.first.endswith(b"\n") and time.monotonic() < deadline:
            r, _, _ = select.select([self.p.stdout], [], [], 0.1)
            if r:
                b = os.read(self.p.stdout.fileno(), 1)
                if not b:
                    break
                self.first += b
        if self.first.decode(errors="replace").strip() != ready:
            res = self.finish(5)
            raise CommandFailed(self.host, self.argv, res.returncode, res.stdout, res.stderr or "not ready")

    def finish(self, timeout: float) -> RunResult:
        try:
            out, err = self.p.communicate(input=b"", timeout=timeout)
        except subprocess.TimeoutExpired:
            return RunResult(124, _dec(self.first), "")
        return RunResult(self.p.returncode, _dec(self.first + out), _dec(err))


def _stop_group(p: subprocess.Popen) -> None:
    """SIGTERM the command's process group, SIGKILL after 3 s, reap."""
    _kill_group(p.pid, signal.SIGTERM)
    try:
        p.wait(timeout=3)
    except subprocess.TimeoutExpired:
        pass
    _kill_group(p.pid, signal.SIGKILL)
    try:
        p.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def _dec(b: bytes | None) -> str:
    return (b or b"").decode("utf-8", "replace")
