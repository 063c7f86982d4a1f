"""Hosts reached over SSH (Fabric/paramiko), with verified host keys and bounded waits (I/O).

Connections are opened by connection.py (verified host keys: host_keys.py; trust: trust.py);
background programs are `SSHProc` objects (ssh_proc.py); groups of hosts are run/fleet.py's job.

Waits: TCP connect, handshake and authentication are bounded by ``connect_timeout``; opening a
channel and every small operation (SFTP read, stat, poll) by ``io_timeout``; a command by its own
timeout. A transport keepalive runs every ``keepalive`` seconds. A host that stops answering fails
the operation with `HostUnreachable` instead of hanging.

Background programs: ``setsid sh -c WRAPPER`` in a session and process group of their own,
stdin from /dev/null, stdout/stderr to files under ``<workdir>/procs/<id>/`` that `SSHProc` polls
over SFTP; ``timeout --foreground -s TERM -k 5 DEADMAN`` ends the program by itself if the
orchestrator vanishes (a deadman); the wrapper records the exit code and CPU times. Each such
process carries ``SPLICEBENCH_TAG=<workdir>`` in its environment, which `SSHHost.clean` uses to
find leftovers of earlier runs.

Quoting: commands are argv lists joined with `shlex.join`; every path is passed quoted or as a
positional argument of a fixed script, never interpolated into one.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import posixpath
import secrets
import select
import shlex
import socket
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path

import fabric
import paramiko

from splicebench.errors import CommandFailed, HostError
from splicebench.hosts.base import Held, Host, RunResult
from splicebench.hosts.connection import HostUnreachable, open_connection, remote_command
from splicebench.hosts.inventory import HostSpec, Inventory
from splicebench.hosts.ssh_proc import SSHProc, decode

DEFAULT_DEADMAN_S = 3600.0
KILL_AFTER_S = 5
TAG_VAR = "SPLICEBENCH_TAG"

# Runs a background program; positional args: procdir, deadman seconds, argv...
# The TERM/INT/HUP trap is deferred while the foreground `timeout` runs (POSIX), so the wrapper
# survives a group signal and still records the program's exit code; caught signals revert to
# their default in the exec'd program. --foreground keeps timeout in the wrapper's process group.
_WRAPPER = (
    'd=$1; g=$2; shift 2; echo $$ >"$d/pid.tmp" && mv "$d/pid.tmp" "$d/pid"; trap : TERM INT HUP; '
    # A gated start waits (at most ~30 s) for the file "go": see start_together().
    'n=0; while [ "$g" = 1 ] && [ ! -e "$d/go" ] && [ $n -lt 6000 ]; do sleep 0.005; n=$((n+1)); '
    'done; if [ "$g" = 1 ] && [ ! -e "$d/go" ]; then echo "start gate never opened" >&2; rc=125; '
    f'else timeout --foreground --signal=TERM --kill-after={KILL_AFTER_S} "$@"; rc=$?; fi; '
    'echo $rc >"$d/rc.tmp"; times >"$d/times"; mv "$d/rc.tmp" "$d/rc"'
)

# Launches the wrapper detached and prints its pid once it has written it (bounded wait).
# Positional: procdir, cwd, gate (0/1), deadman seconds, argv...
_LAUNCH = (
    'd=$1; shift; mkdir -p -- "$d" && cd -- "$1" || exit 1; shift; '
    # Under sudo the directory is the login user's, who opens the start gate in it over SFTP.
    'if [ -n "${SUDO_UID:-}" ]; then chown -- "$SUDO_UID:$SUDO_GID" "$d" || exit 1; fi; '
    f'setsid sh -c \'{_WRAPPER}\' sb-proc "$d" "$@" </dev/null >"$d/out" 2>"$d/err" & '
    'i=0; while [ ! -s "$d/pid" ] && [ $i -lt 1000 ]; do sleep 0.01; i=$((i+1)); done; cat "$d/pid"'
)

# Finds processes that carry our tag in their environment and live in the same network and
# mount namespaces as this shell (lab hosts share one PID space), prints their pids.
_FIND_TAGGED = (
    'tag=$1; net=$(readlink /proc/self/ns/net); mnt=$(readlink /proc/self/ns/mnt); '
    'for f in $(grep -lzxF -- "$tag" /proc/[0-9]*/environ 2>/dev/null); do '
    'p=${f#/proc/}; p=${p%/environ}; '
    '[ "$(readlink /proc/$p/ns/net 2>/dev/null)" = "$net" ] || continue; '
    '[ "$(readlink /proc/$p/ns/mnt 2>/dev/null)" = "$mnt" ] || continue; echo $p; done'
)

# Like Host.pids_with_exe_under, restricted to this shell's network and mount namespaces.
_FIND_EXE = (
    'net=$(readlink /proc/self/ns/net); mnt=$(readlink /proc/self/ns/mnt); '
    'for p in /proc/[0-9]*; do e=$(readlink "$p/exe" 2>/dev/null) || continue; '
    'case "$e" in "$1"/*) ;; *) continue;; esac; '
    '[ "$(readlink $p/ns/net 2>/dev/null)" = "$net" ] || continue; '
    '[ "$(readlink $p/ns/mnt 2>/dev/null)" = "$mnt" ] || continue; echo "${p#/proc/}"; done'
)


# ---------------------------------------------------------------------------------------------
# SSH host


class SSHHost(Host):
    """An inventory host reached over SSH. Thread-safe; connects lazily and reconnects once lost."""

    def __init__(self, spec: HostSpec, inventory: Inventory | None = None):
        self.name = spec.name
        self.spec = spec
        self.address = spec.address or spec.hostname
        self._inventory = inventory
        self._lock = threading.RLock()
        self._conn: fabric.Connection | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._workdir: str | None = None
        self._procs: list[SSHProc] = []
        self._ids = itertools.count(1)
        self._session = f"{os.getpid()}-{secrets.token_hex(3)}"
        # After the host stopped answering: (monotonic time until which connect() fails at once,
        # message), so that cleanup after a dead host does not wait a timeout per operation.
        self._down: tuple[float, str] | None = None

    # connection management
    def connect(self) -> fabric.Connection:
        """Open (or reuse) the connection; raises HostKeyError, HostUnreachable or HostError."""
        with self._lock:
            c = self._conn
            if c is not None and c.transport is not None and c.transport.is_active():
                return c
            self._drop()
            if self._down is not None and time.monotonic() < self._down[0]:
                raise HostUnreachable(self._down[1])
            try:
                self._conn = open_connection(self.spec, self._inventory)
            except HostUnreachable as e:
                self._mark_down(str(e))
                raise
            self._down = None
            return self._conn

    def _mark_down(self, message: str) -> None:
        self._down = (time.monotonic() + max(10.0, self.spec.connect_timeout), message)

    def _drop(self) -> None:
        c, self._conn, self._sftp = self._conn, None, None
        if c is not None:
            try:
                c.close()
            except Exception:  # closing a broken transport may raise anything; it is gone anyway
                pass
            gw = c.gateway
            while isinstance(gw, fabric.Connection):
                try:
                    gw.close()
                except Exception:
                    pass
                gw = gw.gateway

    def _unreachable(self, what: str, e: BaseException) -> HostUnreachable:
        msg = f"host {self.name} ({self.spec.target}): {what}: {e or type(e).__name__}"
        with self._lock:
            self._drop()
            self._mark_down(msg)
        return HostUnreachable(msg)

    def sftp(self) -> paramiko.SFTPClient:
        with self._lock:
            if self._sftp is None:
                t = self.connect().transport
                try:
                    chan = t.open_session(timeout=self.spec.io_timeout)
                    chan.invoke_subsystem("sftp")
                    s = paramiko.SFTPClient(chan)
                except (OSError, EOFError, paramiko.SSHException) as e:
                    raise self._unreachable("cannot open SFTP", e) from None
                s.get_channel().settimeout(self.spec.io_timeout)
                self._sftp = s
            return self._sftp

    def sftp_op(self, what: str, fn: Callable[[paramiko.SFTPClient], object],
                 timeout: float | None = None):
        """Run fn(sftp) under the lock; timeouts and lost connections become HostUnreachable."""
        with self._lock:
            s = self.sftp()
            s.get_channel().settimeout(timeout or self.spec.io_timeout)
            try:
                return fn(s)
            except (socket.timeout, TimeoutError, EOFError, paramiko.SSHException) as e:
                raise self._unreachable(what, e) from None
            except OSError as e:
                if e.errno is None:  # "Socket is closed" from a dead channel, not an SFTP status
                    raise self._unreachable(what, e) from None
                raise
            finally:
                if self._sftp is s:
                    s.get_channel().settimeout(self.spec.io_timeout)

    # Host interface
    def run(self, argv: list[str], *, timeout: float = 60, check: bool = True,
            cwd: str | None = None) -> RunResult:
        argv = [str(a) for a in argv]
        # The remote `timeout` ends the command shortly after we stop waiting for it, so a command
        # that hangs (or whose orchestrator went away) does not stay behind on the host.
        guarded = ["timeout", f"--kill-after={KILL_AFTER_S}", f"{timeout + 2:g}", *argv]
        cmd = remote_command(guarded, cwd=cwd, sudo=self.spec.sudo == "sudo")
        code, out, err = self._exec(cmd, timeout, argv)
        if code is None:
            err += f"\n[timed out after {timeout:g} s]"
            if check:
                raise CommandFailed(self.name, argv, None, out, err)
            return RunResult(124, out, err)
        if check and code != 0:
            raise CommandFailed(self.name, argv, code, out, err)
        return RunResult(code, out, err)

    def _exec(self, cmd: str, timeout: float, argv: list[str]) -> tuple[int | None, str, str]:
        """Run a shell command line; (exit code or None on timeout, stdout, stderr)."""
        t = self.connect().transport
        try:
            chan = t.open_session(timeout=self.spec.io_timeout)
        except (OSError, EOFError, paramiko.SSHException) as e:
            raise self._unreachable("cannot open a channel", e) from None
        out, err = bytearray(), bytearray()
        deadline = time.monotonic() + timeout
        try:
            chan.settimeout(self.spec.io_timeout)
            chan.exec_command(cmd)
            chan.shutdown_write()
            chan.setblocking(False)
            while True:
                got = False
                while chan.recv_ready():
                    out += chan.recv(65536)
                    got = True
                while chan.recv_stderr_ready():
                    err += chan.recv_stderr(65536)
                    got = True
                if chan.exit_status_ready() and chan.eof_received and not got:
                    break
                if chan.closed and not got:
                    break
                if not t.is_active():
                    raise self._unreachable(f"connection lost during `{shlex.join(argv)}`",
                                            EOFError("transport closed"))
                if time.monotonic() > deadline:
                    return None, decode(out), decode(err)
                if not got:
                    select.select([chan], [], [], 0.05)
            code = chan.recv_exit_status() if chan.exit_status_ready() else -1
            return code, decode(out), decode(err)
        except (socket.timeout, TimeoutError, EOFError, OSError, paramiko.SSHException) as e:
            raise self._unreachable(f"`{shlex.join(argv)}` failed", e) from None
        finally:
            chan.close()

    def hold(self, argv: list[str], *, ready: str, timeout: float = 30) -> "SSHHeld":
        """argv on a channel of its own whose input stays open until `finish`; sshd closes it when
        this process dies or the connection is lost (ClientAlive), and the command sees end of input."""
        argv = [str(a) for a in argv]
        t = self.connect().transport
        try:
            chan = t.open_session(timeout=self.spec.io_timeout)
            chan.settimeout(self.spec.io_timeout)
            chan.exec_command(remote_command(argv, sudo=self.spec.sudo == "sudo"))
        except (OSError, EOFError, paramiko.SSHException) as e:
            raise self._unreachable(f"cannot start `{shlex.join(argv)}`", e) from None
        held = SSHHeld(self, argv, chan)
        held.wait_ready(ready, timeout)
        return held

    def put(self, local_path, remote_path) -> None:
        """Upload over SFTP, keep the mode bits, then verify the copy's SHA-256 on the host."""
        local_path = os.fspath(local_path)
        mode = stat.S_IMODE(os.stat(local_path).st_mode)
        size = os.path.getsize(local_path)
        h = hashlib.sha256()
        with open(local_path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)

        def do(s: paramiko.SFTPClient):
            try:
                s.put(local_path, remote_path)
            except FileNotFoundError:
                _sftp_makedirs(s, posixpath.dirname(remote_path))
                s.put(local_path, remote_path)
            s.chmod(remote_path, mode)
        self.sftp_op(f"put {remote_path}", do, timeout=self.spec.io_timeout + size / 2e6)
        r = self.run(["sha256sum", "--", remote_path], timeout=self.spec.io_timeout + size / 50e6)
        got = r.stdout.split()[0] if r.stdout.split() else ""
        if got != h.hexdigest():
            raise HostError(f"host {self.name}: upload of {local_path} to {remote_path} is corrupt "
                            f"(sha256 {got or 'missing'} on the host, {h.hexdigest()} here)")

    def get(self, remote_path, local_path) -> None:
        Path(local_path).parent.mkdir(parents=True, exist_ok=True)
        self.sftp_op(f"get {remote_path}", lambda s: s.get(remote_path, os.fspath(local_path)),
                      timeout=self.spec.command_timeout)

    def read_text(self, path: str) -> str:
        def do(s: paramiko.SFTPClient) -> str:
            with s.open(path, "r") as f:
                return f.read().decode("utf-8", "replace")
        return self.sftp_op(f"read {path}", do)

    def read_bytes_from(self, path: str, offset: int) -> bytes | None:
        """Bytes of path from offset on (b"" if none), None if the file does not exist."""
        def do(s: paramiko.SFTPClient):
            try:
                with s.open(path, "r") as f:
                    f.seek(offset)
                    return f.read()
            except FileNotFoundError:
                return None
        return self.sftp_op(f"read {path}", do)

    def exists(self, path: str) -> bool:
        def do(s: paramiko.SFTPClient) -> bool:
            try:
                s.stat(path)
                return True
            except FileNotFoundError:
                return False
        return self.sftp_op(f"stat {path}", do)

    def workdir(self) -> str:
        with self._lock:
            if self._workdir is None:
                wd = self.spec.workdir
                if wd == "~" or wd.startswith("~/"):
                    home = self.sftp_op("home directory", lambda s: s.normalize("."))
                    wd = posixpath.join(home, wd[2:])
                self.makedirs(wd)
                self._workdir = wd
            return self._workdir

    def start(self, argv: list[str], *, cwd: str | None = None,
              deadman_s: float | None = None, gated: bool = False) -> SSHProc:
        """Start argv in the background; gated: it waits for `SSHProc.release` before running."""
        argv = [str(a) for a in argv]
        wd = self.workdir()
        pdir = f"{wd}/procs/{self._session}-{next(self._ids)}"
        deadman = max(1, int(deadman_s if deadman_s is not None else DEFAULT_DEADMAN_S))
        launch = ["sh", "-c", _LAUNCH, "sb-launch", pdir, cwd or wd, "1" if gated else "0",
                  str(deadman), *argv]
        cmd = remote_command(launch, sudo=self.spec.sudo == "sudo", env={TAG_VAR: wd})
        code, out, err = self._exec(cmd, self.spec.io_timeout + 15, launch)
        if code != 0 or not out.strip().isdigit():
            raise CommandFailed(self.name, argv, code, out, err or "could not start")
        proc = SSHProc(self, argv, pdir, int(out.strip()))
        with self._lock:
            self._procs.append(proc)
        return proc

    def makedirs(self, path: str) -> None:
        # Over SFTP, as the login user, also in sudo mode (put() writes as that user too).
        if path.startswith("~"):
            path = posixpath.join(self.sftp_op("home directory", lambda s: s.normalize(".")),
                                  path[2:])
        self.sftp_op(f"mkdir {path}", lambda s: _sftp_makedirs(s, path))

    def pids_with_exe_under(self, prefix: str) -> list[int]:
        r = self.run(["sh", "-c", _FIND_EXE, "sh", prefix.rstrip("/")], check=False, timeout=30)
        return sorted(int(x) for x in r.stdout.split() if x.isdigit())

    def tagged_pids(self) -> list[int]:
        """PIDs of programs started by `start` (in any earlier run) still alive on this host."""
        tag = f"{TAG_VAR}={self.workdir()}"
        r = self.run(["sh", "-c", _FIND_TAGGED, "sh", tag], check=False, timeout=30)
        return sorted(int(x) for x in r.stdout.split() if x.isdigit())

    def clean(self) -> list[int]:
        """Kill leftovers of earlier runs (tagged programs) and remove their files; return pids."""
        pids = self.tagged_pids()
        self.kill_pids(pids)
        self.remove_tree(f"{self.workdir()}/procs")
        return pids

    def close(self) -> None:
        with self._lock:
            procs, self._procs = self._procs, []
            alive = self._conn is not None
        if alive and procs:
            try:
                running = [p for p in procs if p.poll() is None]
                for p in running:
                    p.kill()
                self.run(["rm", "-rf", "--", *(p.dir for p in procs)], check=False,
                         timeout=self.spec.io_timeout)
            except HostError:
                pass  # the host is gone; the deadman ends its programs
        with self._lock:
            self._drop()

    def __repr__(self) -> str:
        return f"<SSHHost {self.name} {self.spec.target}>"


class SSHHeld(Held):
    """`SSHHost.hold`'s command: an exec channel whose input is closed by `finish`."""

    def __init__(self, host: SSHHost, argv: list[str], chan: paramiko.Channel):
        self.host, self.argv, self.chan = host, argv, chan
        self.out, self.err = bytearray(), bytearray()

    def _pump(self, until: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not until():
            got = False
            while self.chan.recv_ready():
                self.out += self.chan.recv(65536)
                got = True
            while self.chan.recv_stderr_ready():
                self.err += self.chan.recv_stderr(65536)
                got = True
            if until():
                break
            if self.chan.exit_status_ready() and not got and not self.chan.recv_ready():
                return until()
            if time.monotonic() > deadline:
                return False
            if not got:
                select.select([self.chan], [], [], 0.05)
        return True

    def wait_ready(self, ready: str, timeout: float) -> None:
        try:
            self._pump(lambda: b"\n" in self.out, timeout)
        except (socket.timeout, TimeoutError, EOFError, OSError, paramiko.SSHException) as e:
            raise self.host._unreachable(f"`{shlex.join(self.argv)}` failed", e) from None
        if decode(self.out).split("\n", 1)[0].strip() != ready:
            res = self.finish(5)
            raise CommandFailed(self.host.name, self.argv, res.returncode, res.stdout,
                                res.stderr or "not ready")

    def finish(self, timeout: float) -> RunResult:
        try:
            self.chan.shutdown_write()
            done = self._pump(lambda: self.chan.exit_status_ready() and not self.chan.recv_ready()
                              and not self.chan.recv_stderr_ready(), timeout)
            code = self.chan.recv_exit_status() if done else 124
        except (socket.timeout, TimeoutError, EOFError, OSError, paramiko.SSHException) as e:
            raise self.host._unreachable(f"`{shlex.join(self.argv)}` failed", e) from None
        finally:
            self.chan.close()
        return RunResult(code, decode(self.out), decode(self.err))


def _sftp_makedirs(s: paramiko.SFTPClient, path: str) -> None:
    parts = []
    while path not in ("", "/"):
        try:
            s.stat(path)
            break
        except FileNotFoundError:
            parts.append(path)
            path = posixpath.dirname(path)
    for p in reversed(parts):
        s.mkdir(p)
