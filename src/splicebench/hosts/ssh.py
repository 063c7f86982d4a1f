"""Hosts reached over SSH (Fabric/paramiko), with verified host keys and bounded waits (I/O).

Host keys: every connection loads the known_hosts files named by the inventory (or the user's) and
uses a reject policy: an unknown key raises `UnknownHostKey`, a changed one `ChangedHostKey`, both
naming the host and the SHA256 fingerprint and saying what to do. Fabric's own default (accept any
key, load no known_hosts) is never used, also not for ProxyJump hops. The only way to add a key is
`trust_host`, which shows the fingerprint and asks before writing.

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

import base64
import hashlib
import itertools
import os
import posixpath
import secrets
import select
import shlex
import signal as _signal
import socket
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import fabric
import paramiko

from splicebench.errors import CommandFailed, HostError, ProcError, _tail
from splicebench.hosts.local import Host, Proc, RunResult, _describe_exit, _json_object
from splicebench.hosts.inventory import Hop, HostSpec, Inventory, known_hosts_name

T = TypeVar("T")

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

# Prints the /proc/PID/stat fields after the command name (state ppid pgrp ...) of every process
# in process group $1; shell builtins only (no procps needed), so it is cheap and always there.
_GROUP_STATS = (
    'pg=$1; for f in /proc/[0-9]*/stat; do read -r l 2>/dev/null <"$f" || continue; '
    'r=${l##*) }; set -- $r; [ "$3" = "$pg" ] && echo "$r"; done; echo "CLK $(getconf CLK_TCK)"'
)

# Like Host.pids_with_exe_under, restricted to this shell's network and mount namespaces.
_FIND_EXE = (
    'net=$(readlink /proc/self/ns/net); mnt=$(readlink /proc/self/ns/mnt); '
    'for p in /proc/[0-9]*; do e=$(readlink "$p/exe" 2>/dev/null) || continue; '
    'case "$e" in "$1"/*) ;; *) continue;; esac; '
    '[ "$(readlink $p/ns/net 2>/dev/null)" = "$net" ] || continue; '
    '[ "$(readlink $p/ns/mnt 2>/dev/null)" = "$mnt" ] || continue; echo "${p#/proc/}"; done'
)


class HostKeyError(HostError):
    """A host key that is not trusted: unknown or changed."""


class UnknownHostKey(HostKeyError):
    def __init__(self, spec: HostSpec | Hop, name: str, key: paramiko.PKey, files: tuple[str, ...]):
        self.fingerprint = fingerprint(key)
        self.key = key
        where = " or ".join(files) if files else "any known_hosts file"
        super().__init__(
            f"host {name} ({_target(spec)}) offered an unknown {key.get_name()} host key "
            f"{self.fingerprint}, which is not in {where}. Check the fingerprint with the "
            f"host's administrator (on the host: ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub), "
            f"then trust it with `invoke hosts.trust {name}` (add --hosts FILE), which shows it "
            f"before writing it.")


class ChangedHostKey(HostKeyError):
    def __init__(self, spec: HostSpec | Hop, name: str, got: paramiko.PKey,
                 expected: paramiko.PKey, files: tuple[str, ...]):
        self.fingerprint = fingerprint(got)
        self.expected = fingerprint(expected)
        kh = files[0] if files else "~/.ssh/known_hosts"
        super().__init__(
            f"HOST KEY CHANGED for host {name} ({_target(spec)}): known_hosts has "
            f"{expected.get_name()} {self.expected}, the host offered {got.get_name()} "
            f"{self.fingerprint}. Someone may be intercepting the connection, or the host was "
            f"reinstalled. Not connecting. If the change is expected, remove the old key with "
            f"`ssh-keygen -R {shlex.quote(known_hosts_name(spec.hostname, spec.port))} -f "
            f"{shlex.quote(kh)}` and run `invoke hosts.trust {name}`.")


class HostUnreachable(HostError):
    """Connecting failed, or the host stopped answering within a timeout."""


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH-style SHA256 fingerprint: ``SHA256:<base64 without padding>``."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def _target(spec: HostSpec | Hop) -> str:
    return f"{spec.user}@{spec.hostname}:{spec.port}"


class _RejectUnknown(paramiko.RejectPolicy):
    """RejectPolicy whose error names the host, the fingerprint and what to do."""

    def __init__(self, spec: HostSpec | Hop, name: str, files: tuple[str, ...]):
        self.spec, self.name, self.files = spec, name, files

    def missing_host_key(self, client, hostname, key):
        raise UnknownHostKey(self.spec, self.name, key, self.files)


def remote_command(argv: list[str], *, cwd: str | None = None, sudo: bool = False,
                   env: dict[str, str] | None = None) -> str:
    """The shell command line that runs argv on a POSIX remote shell; every word quoted."""
    words = [str(a) for a in argv]
    if not words:
        raise ValueError("empty argv")
    for w in words:
        if "\0" in w:
            raise ValueError(f"NUL byte in argument {w!r}")
    cmd = shlex.join(words)
    if env:
        for k in env:
            if not k.isidentifier():
                raise ValueError(f"bad environment variable name {k!r}")
        cmd = "env " + " ".join(shlex.quote(f"{k}={v}") for k, v in env.items()) + " " + cmd
    if cwd:
        cmd = f"cd -- {_quote_path(cwd)} && {cmd}"
    if sudo:
        cmd = "sudo -n -- sh -c " + shlex.quote(cmd)
    return cmd


def _quote_path(p: str) -> str:
    if p == "~":
        return '"$HOME"'
    if p.startswith("~/"):
        return '"$HOME"/' + shlex.quote(p[2:])
    return shlex.quote(p)


# ---------------------------------------------------------------------------------------------
# Connections


def _connection(spec: HostSpec | Hop, name: str, known: tuple[str, ...], timeouts: HostSpec,
                gateway) -> fabric.Connection:
    """A Fabric Connection that verifies the host key and bounds every wait (not yet open)."""
    kwargs = {"banner_timeout": timeouts.connect_timeout, "auth_timeout": timeouts.connect_timeout,
              "channel_timeout": timeouts.io_timeout}
    if spec.key_files:
        kwargs.update(key_filename=list(spec.key_files), look_for_keys=False, allow_agent=False)
    # An explicit empty ssh_config: Fabric must not apply ~/.ssh/config on its own (its ProxyJump
    # hops would accept any host key); inventory.py already resolved it.
    cfg = fabric.Config(ssh_config=paramiko.SSHConfig())
    c = fabric.Connection(host=spec.hostname, user=spec.user, port=spec.port, config=cfg,
                          gateway=gateway if gateway is not None else False,
                          connect_timeout=max(1, round(timeouts.connect_timeout)),
                          connect_kwargs=kwargs)
    client = paramiko.SSHClient()  # a fresh client: no AutoAddPolicy anywhere
    for f in known:
        if os.path.exists(f):
            try:
                client.load_system_host_keys(f)
            except (OSError, paramiko.SSHException) as e:
                raise HostKeyError(f"cannot read known_hosts file {f}: {e}") from None
    client.set_missing_host_key_policy(_RejectUnknown(spec, name, known))
    c.client = client
    return c


def _open(c: fabric.Connection, spec: HostSpec | Hop, name: str, timeouts: HostSpec) -> None:
    """Open c, turning paramiko/socket failures into HostKeyError/HostUnreachable/HostError."""
    try:
        c.open()
    except HostKeyError:
        raise
    except paramiko.BadHostKeyException as e:
        raise ChangedHostKey(spec, name, e.key, e.expected_key, _known_of(c, spec)) from None
    except paramiko.AuthenticationException as e:
        keys = ", ".join(spec.key_files) or "agent/default keys"
        raise HostError(f"host {name} ({_target(spec)}): authentication failed with {keys}: {e}. "
                        f"Check user and key in the inventory.") from None
    except (socket.timeout, TimeoutError) as e:
        raise HostUnreachable(f"host {name} ({_target(spec)}): no answer within "
                              f"{timeouts.connect_timeout:g} s ({e or 'timeout'})") from None
    except (OSError, EOFError, paramiko.SSHException) as e:
        raise HostUnreachable(f"host {name} ({_target(spec)}): cannot connect: {e}") from None
    t = c.transport
    if t is not None:
        t.set_keepalive(max(1, round(timeouts.keepalive)))
        if isinstance(t.sock, socket.socket):
            # Small request/response messages: without this, delayed ACKs add ~40 ms to each.
            t.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _known_of(c: fabric.Connection, spec) -> tuple[str, ...]:
    pol = c.client._policy
    return pol.files if isinstance(pol, _RejectUnknown) else ()


def open_connection(spec: HostSpec, inventory: Inventory | None = None) -> fabric.Connection:
    """An open, verified Fabric Connection to spec (through its jump host or ProxyJump hops)."""
    gateway = None
    if spec.jump is not None:
        if inventory is None:
            raise HostError(f"host {spec.name}: jump host {spec.jump} needs the inventory")
        gateway = open_connection(inventory.get(spec.jump), inventory)
    elif spec.proxy_jump:
        for i, hop in enumerate(spec.proxy_jump):
            hop_name = f"{spec.name} (ProxyJump hop {i + 1}: {hop.hostname})"
            conn = _connection(hop, hop_name, spec.known_hosts, spec, gateway)
            _open(conn, hop, hop_name, spec)
            gateway = conn
    elif spec.proxy_command:
        gateway = spec.proxy_command
    c = _connection(spec, spec.name, spec.known_hosts, spec, gateway)
    _open(c, spec, spec.name, spec)
    return c


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

    def _sftp_op(self, what: str, fn: Callable[[paramiko.SFTPClient], object],
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
                    return None, _dec(out), _dec(err)
                if not got:
                    select.select([chan], [], [], 0.05)
            code = chan.recv_exit_status() if chan.exit_status_ready() else -1
            return code, _dec(out), _dec(err)
        except (socket.timeout, TimeoutError, EOFError, OSError, paramiko.SSHException) as e:
            raise self._unreachable(f"`{shlex.join(argv)}` failed", e) from None
        finally:
            chan.close()

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
        self._sftp_op(f"put {remote_path}", do, timeout=self.spec.io_timeout + size / 2e6)
        r = self.run(["sha256sum", "--", remote_path], timeout=self.spec.io_timeout + size / 50e6)
        got = r.stdout.split()[0] if r.stdout.split() else ""
        if got != h.hexdigest():
            raise HostError(f"host {self.name}: upload of {local_path} to {remote_path} is corrupt "
                            f"(sha256 {got or 'missing'} on the host, {h.hexdigest()} here)")

    def get(self, remote_path, local_path) -> None:
        Path(local_path).parent.mkdir(parents=True, exist_ok=True)
        self._sftp_op(f"get {remote_path}", lambda s: s.get(remote_path, os.fspath(local_path)),
                      timeout=self.spec.command_timeout)

    def read_text(self, path: str) -> str:
        def do(s: paramiko.SFTPClient) -> str:
            with s.open(path, "r") as f:
                return f.read().decode("utf-8", "replace")
        return self._sftp_op(f"read {path}", do)

    def read_bytes_from(self, path: str, offset: int) -> bytes | None:
        """Bytes of path from offset on (b"" if none), None if the file does not exist."""
        def do(s: paramiko.SFTPClient):
            try:
                with s.open(path, "r") as f:
                    f.seek(offset)
                    return f.read()
            except FileNotFoundError:
                return None
        return self._sftp_op(f"read {path}", do)

    def exists(self, path: str) -> bool:
        def do(s: paramiko.SFTPClient) -> bool:
            try:
                s.stat(path)
                return True
            except FileNotFoundError:
                return False
        return self._sftp_op(f"stat {path}", do)

    def workdir(self) -> str:
        with self._lock:
            if self._workdir is None:
                wd = self.spec.workdir
                if wd == "~" or wd.startswith("~/"):
                    home = self._sftp_op("home directory", lambda s: s.normalize("."))
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
            path = posixpath.join(self._sftp_op("home directory", lambda s: s.normalize(".")),
                                  path[2:])
        self._sftp_op(f"mkdir {path}", lambda s: _sftp_makedirs(s, path))

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


def open_host(name: str, inventory: Inventory) -> Host:
    """The Host for a scenario host name: `LocalHost` for "local", else an `SSHHost` (lazy)."""
    from splicebench.hosts.local import LOCAL, LocalHost

    if name == LOCAL:
        return LocalHost()
    return SSHHost(inventory.get(name), inventory)


def start_together(starts: list[tuple[Host, list[str], dict]]) -> list[Proc]:
    """Start programs on several hosts so that they begin within milliseconds of each other.

    starts: (host, argv, keyword arguments of Host.start). Programs on SSH hosts are launched
    gated, in parallel, and released together once all are ready; local ones start in this thread
    (they must be started by the thread that outlives them). If one start fails, the programs
    already started are killed and the error is raised.
    """
    from concurrent.futures import ThreadPoolExecutor

    remote = [(i, h, a, kw) for i, (h, a, kw) in enumerate(starts) if isinstance(h, SSHHost)]
    procs: dict[int, Proc] = {}
    try:
        if remote:
            with ThreadPoolExecutor(max_workers=min(16, len(remote))) as pool:
                futs = {i: pool.submit(h.start, a, gated=True, **kw) for i, h, a, kw in remote}
                errors = []
                for i, f in futs.items():
                    try:
                        procs[i] = f.result()
                    except Exception as e:  # noqa: BLE001 - re-raised below after cleanup
                        errors.append(e)
                if errors:
                    raise errors[0]
                for f in [pool.submit(procs[i].release) for i, *_ in remote]:
                    f.result()
        for i, (h, a, kw) in enumerate(starts):
            if i not in procs:
                procs[i] = h.start(a, **kw)
    except BaseException:
        for p in procs.values():
            p.kill()
        raise
    return [procs[i] for i in range(len(starts))]


def for_each_host(hosts: list[Host], fn: Callable[[Host], T], *,
                  max_workers: int = 8) -> dict[str, T | HostError | Exception]:
    """fn(host) for every host in parallel; name -> result, or the exception that host raised.

    One failed host is a value next to the others' results, not an exception that hides them.
    Errors the user can fix (UserError) and lost hosts come back as values; a bug still raises.
    """
    from concurrent.futures import ThreadPoolExecutor

    from splicebench.errors import UserError

    def one(h: Host):
        try:
            return fn(h)
        except UserError as e:
            return e
    if not hosts:
        return {}
    pool = ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(hosts))))
    try:
        futures = {h.name: pool.submit(one, h) for h in hosts}
        return {name: f.result() for name, f in futures.items()}
    finally:
        # On Ctrl-C, do not wait for the other hosts' work (their commands end by remote timeout).
        pool.shutdown(wait=False, cancel_futures=True)


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


def _dec(b: bytes | bytearray) -> str:
    return bytes(b).decode("utf-8", "replace")


# ---------------------------------------------------------------------------------------------
# Background programs


class SSHProc(Proc):
    """A program started by `SSHHost.start`; output and exit are polled from its files."""

    def __init__(self, host: SSHHost, argv: list[str], pdir: str, pid: int):
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
            self._rc = _exit_code(int(text))
            return self._rc
        return None

    def _group_stats(self) -> tuple[list[list[str]], int]:
        """/proc stat fields (from the state on) of the group's processes, and CLK_TCK."""
        r = self.host.run(["sh", "-c", _GROUP_STATS, "sh", str(self.pid)], check=False,
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
                obj = _json_object(line)
                if obj is not None and obj.get("event") == event:
                    return obj
            code = self._poll_exit()
            if code is not None:
                self._poll_out()
                if any((o := _json_object(x)) is not None and o.get("event") == event
                       for x in self._lines):
                    continue
                raise ProcError(f"{self._name()} {_describe_exit(code)} before printing a "
                                f"{event!r} line" + self._stderr_suffix())
            if time.monotonic() > deadline:
                raise ProcError(f"{self._name()} printed no {event!r} line within {timeout:g} s"
                                + self._stderr_suffix())
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
                self._times = tuple(_parse_times(w) for w in rows[1].split())  # type: ignore
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
        self.host._sftp_op("release", do)

    @property
    def deadman_fired(self) -> bool:
        """True if the program was ended by its deadman (timeout's exit code 124)."""
        return self._rc == 124

    def _name(self) -> str:
        return f"{posixpath.basename(self.argv[0])} on {self.host.name} (pgid {self.pid})"

    def _stderr_suffix(self) -> str:
        tail = _tail(self.stderr(), 5)
        return f"; stderr: {tail}" if tail else ""

    def __repr__(self) -> str:
        return f"<SSHProc {self._name()}>"


def _exit_code(rc: int) -> int:
    """Shell exit status -> Proc convention (negative: killed by that signal)."""
    return -(rc - 128) if 128 < rc < 128 + 65 else rc


def _parse_times(word: str) -> float:
    """``1m2.50s`` (dash/bash `times`) -> 62.5."""
    m, _, s = word.rstrip("s").partition("m")
    try:
        return float(m) * 60 + float(s)
    except ValueError:
        return 0.0


# ---------------------------------------------------------------------------------------------
# Trust on first use, explicitly


def fetch_host_key(spec: HostSpec, inventory: Inventory | None = None) -> paramiko.PKey:
    """The host key spec's server offers (no authentication); jump hosts are verified first."""
    gw_conn = None
    try:
        if spec.jump is not None or spec.proxy_jump:
            # Connect to the last hop verified, then a direct-tcpip channel to the target.
            if spec.jump is not None:
                assert inventory is not None
                gw_conn = open_connection(inventory.get(spec.jump), inventory)
            else:
                hop_spec = _hops_only(spec)
                gw_conn = open_connection(hop_spec, inventory)
            sock = gw_conn.transport.open_channel(
                "direct-tcpip", (spec.hostname, spec.port), ("", 0), timeout=spec.connect_timeout)
        elif spec.proxy_command:
            sock = paramiko.ProxyCommand(spec.proxy_command)
        else:
            sock = socket.create_connection((spec.hostname, spec.port),
                                            timeout=spec.connect_timeout)
        t = paramiko.Transport(sock)
        t.banner_timeout = spec.connect_timeout
        try:
            t.start_client(timeout=spec.connect_timeout)
            return t.get_remote_server_key()
        finally:
            t.close()
    except HostError:
        raise
    except (OSError, EOFError, paramiko.SSHException) as e:
        raise HostUnreachable(f"host {spec.name} ({spec.target}): cannot fetch its host key: "
                              f"{e or type(e).__name__}") from None
    finally:
        if gw_conn is not None:
            gw_conn.close()


def _hops_only(spec: HostSpec) -> HostSpec:
    """A spec for the last ProxyJump hop, reached through the hops before it."""
    from dataclasses import replace
    *before, last = spec.proxy_jump
    return replace(spec, name=f"{spec.name}-jump", hostname=last.hostname, port=last.port,
                   user=last.user, key_files=last.key_files or spec.key_files, jump=None,
                   proxy_jump=tuple(before), proxy_command=None)


def trust_host(spec: HostSpec, inventory: Inventory, confirm: Callable[[str], bool],
               *, known_hosts: Path | None = None) -> str:
    """Fetch spec's host key, show it through confirm(message), write it if confirmed.

    Returns "already", "added" or "declined". A known host with a different key is refused
    (ChangedHostKey): remove the old line first.
    """
    path = known_hosts or inventory.known_hosts_file
    key = fetch_host_key(spec, inventory)
    name = known_hosts_name(spec.hostname, spec.port)
    hk = paramiko.HostKeys()
    for f in spec.known_hosts:
        if os.path.exists(f):
            hk.load(f)
    entry = hk.lookup(name)
    if entry is not None and key.get_name() in entry:
        if entry[key.get_name()] == key:
            return "already"
        raise ChangedHostKey(spec, spec.name, key, entry[key.get_name()], spec.known_hosts)
    msg = (f"host {spec.name} ({spec.target}) offers this {key.get_name()} host key:\n"
           f"  {fingerprint(key)}\n"
           f"Compare it with the host's own (ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub on the "
           f"host). Write it to {path}?")
    if not confirm(msg):
        return "declined"
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    line = f"{name} {key.get_name()} {key.get_base64()}\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a") as f:
        f.write(line)
    return "added"
