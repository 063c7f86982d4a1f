"""Shared helpers for tests that run the data-path programs (docs/programs.md).

- build(): `make -k -C <repo> BUILD=<repo>/build` once per test session, serialised between
  processes by a file lock; binary() names a program and fails with make's output if it is missing.
- running_server(): start a server, parse its ready line, and on exit stop it (SIGTERM, then SIGKILL
  of its process group) and parse its summary line; nothing it started survives the block.
- run_client(): run sb-client and parse its one JSON object.
- descendants(), bpf_ids(), bpf_id_exists(): what a test checks to prove nothing was left behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BUILD = REPO / "build"
# Echo servers as the tests name them: a program (build/sb-echo-<name>), or a mode of one, run
# with that mode's arguments (MODES) and reporting the program's name in its JSON lines; the
# io_uring proxy's modes likewise (proxy-uring-<mode>).
SERVERS = ("naive", "splice", "sockmap", "uring", "uring-splice", "uring-send-zc")
MODES: dict[str, tuple[str, tuple[str, ...]]] = {
    "uring-splice": ("uring", ("--mode", "splice")),
    "uring-send-zc": ("uring", ("--mode", "send-zc")),
    "proxy-uring-splice": ("proxy-uring", ("--mode", "splice")),
    "proxy-uring-send-zc": ("proxy-uring", ("--mode", "send-zc")),
}
TESTS = Path(__file__).resolve().parent


@dataclass(frozen=True)
class BuildResult:
    returncode: int
    output: str


@functools.cache
def build() -> BuildResult:
    """Run make once per process; the lock keeps concurrent test processes from racing in BUILD.

    make -k: a program that does not build (yet) fails only the tests that use it.
    """
    BUILD.mkdir(parents=True, exist_ok=True)
    with open(BUILD / ".make.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            proc = subprocess.run(
                ["make", "-k", "-C", str(REPO), f"BUILD={BUILD}"],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=600,
            )
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return BuildResult(proc.returncode, proc.stdout)


def binary(name: str) -> Path:
    """Path of build/sb-<name>, built if needed; an AssertionError with make's output if missing."""
    result = build()
    path = BUILD / f"sb-{name}"
    if not path.exists():
        tail = "\n".join(result.output.splitlines()[-30:])
        raise AssertionError(f"{path} was not built (make exit {result.returncode}):\n{tail}")
    return path


def server_binary(server: str) -> Path:
    return binary(f"echo-{MODES.get(server, (server, ()))[0]}")


class LineReader:
    """Reads lines from a pipe with a deadline (a server must answer, not hang the test)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buf = b""

    def readline(self, timeout: float) -> bytes:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no complete line within {timeout} s (got {self.buf!r})")
            ready, _, _ = select.select([self.fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(self.fd, 65536)
            if not chunk:
                line, self.buf = self.buf, b""
                return line
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line + b"\n"


@dataclass
class Server:
    """A running server: its ready line, and after stop() its exit code, summary and stderr."""

    name: str
    proc: subprocess.Popen[bytes]
    ready: dict[str, Any]
    reader: LineReader
    returncode: int | None = None
    summary: dict[str, Any] | None = None
    stdout_rest: list[str] = field(default_factory=list)
    stderr: str = ""

    @property
    def addr(self) -> str:
        return str(self.ready["addr"])

    @property
    def port(self) -> int:
        return int(self.ready["port"])

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def connect(self) -> str:
        return f"[{self.addr}]:{self.port}" if ":" in self.addr else f"{self.addr}:{self.port}"

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        """Send sig, wait for the exit and parse the summary line; SIGKILL if it does not exit."""
        if self.returncode is not None:
            return self.returncode
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(sig)
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(self.proc)
            out, err = self.proc.communicate()
        self.returncode = self.proc.returncode
        rest = (self.reader.buf + out).decode(errors="replace")
        self.stdout_rest = [line for line in rest.splitlines() if line.strip()]
        self.stderr = err.decode(errors="replace")
        if len(self.stdout_rest) == 1:
            with contextlib.suppress(ValueError):
                self.summary = json.loads(self.stdout_rest[0])
        return self.returncode


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL proc's whole process group (it was started in its own session)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


@contextlib.contextmanager
def running_server(
    server: str,
    *args: str,
    cmd: Sequence[str] | None = None,
    user: str | None = None,
    ready_timeout: float = 20.0,
) -> Iterator[Server]:
    """Start a server (build/sb-echo-<server>, or cmd when given) and yield it once it is ready.

    On leaving the block the server gets SIGTERM unless the test stopped it already, and SIGKILL
    (to its whole process group, before it is reaped) if it does not exit.
    """
    program, mode_args = MODES.get(server, (server, ()))
    argv = [*(cmd if cmd is not None else [str(server_binary(server)), *mode_args]), *args]
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        user=user,
    )
    srv: Server | None = None
    try:
        assert proc.stdout is not None
        reader = LineReader(proc.stdout.fileno())
        try:
            line = reader.readline(ready_timeout)
        except TimeoutError as e:
            raise AssertionError(f"{server}: no ready line: {e}") from None
        if not line:
            proc.wait(timeout=10)
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise AssertionError(f"{server} exited {proc.returncode} before ready: {err}")
        ready = json.loads(line)
        assert ready.get("event") == "ready", ready
        assert ready.get("pid") == proc.pid, ready
        srv = Server(program, proc, ready, reader)
        yield srv
    finally:
        if srv is not None:
            srv.stop()
        else:
            kill_group(proc)
            proc.communicate()


@dataclass(frozen=True)
class ClientResult:
    argv: list[str]
    returncode: int
    result: dict[str, Any]
    stdout: str
    stderr: str


def client_argv(connect: str, workload: str, **opts: Any) -> list[str]:
    """sb-client arguments: run_client(..., msg_size=64) -> --msg-size 64."""
    argv = [str(binary("client")), "--connect", connect, "--workload", workload]
    for key, value in opts.items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    return argv


def run_client(connect: str, workload: str, **opts: Any) -> ClientResult:
    """Run sb-client to completion; its stdout must be exactly one JSON object."""
    argv = client_argv(connect, workload, **opts)
    limit = float(opts.get("timeout", 120)) + 60
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=limit)
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one JSON line, got {proc.stdout!r} (stderr {proc.stderr!r})"
    return ClientResult(argv, proc.returncode, json.loads(lines[0]), proc.stdout, proc.stderr)


def descendants(root: int | None = None) -> list[tuple[int, str, str]]:
    """(pid, comm, state) of every process below root (default: this process)."""
    root = os.getpid() if root is None else root
    parent: dict[int, int] = {}
    info: dict[int, tuple[str, str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # comm may contain spaces and parentheses: split at the last ')'.
        head, _, tail = stat.rpartition(")")
        fields = tail.split()
        pid = int(entry)
        parent[pid] = int(fields[1])
        info[pid] = (head.partition("(")[2], fields[0])
    found = []
    for pid in parent:
        p = parent[pid]
        seen = 0
        while p and p in parent and seen < 64:
            if p == root:
                found.append((pid, *info[pid]))
                break
            p = parent[p]
            seen += 1
    return sorted(found)


def bpf_ids(pid: int) -> set[tuple[str, int]]:
    """("map" | "prog" | "link", id) of every BPF object that pid holds a descriptor to."""
    ids: set[tuple[str, int]] = set()
    fdinfo = Path(f"/proc/{pid}/fdinfo")
    for entry in fdinfo.iterdir():
        try:
            text = entry.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            key, _, value = line.partition(":")
            if key in ("map_id", "prog_id", "link_id"):
                ids.add((key[: -len("_id")], int(value)))
    return ids


def bpf_id_exists(kind: str, ident: int) -> bool:
    """Whether the kernel still has BPF object kind (map/prog/link) with this id."""
    proc = subprocess.run(
        ["bpftool", kind, "show", "id", str(ident)], capture_output=True, text=True, timeout=30
    )
    return proc.returncode == 0


def wait_until(predicate: Any, timeout: float, interval: float = 0.05) -> bool:
    """Poll predicate() until it is true or timeout passes; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return bool(value)
        time.sleep(interval)


def corrupt_echo_cmd() -> list[str]:
    """Command line of the test server that corrupts on purpose (tests/corrupt_echo.py)."""
    return [sys.executable, str(TESTS / "corrupt_echo.py")]


def stream_outlives_a_reset_hog(srv: Any, hog_bytes: int) -> None:
    """A client that sends up to hog_bytes without reading (it holds the server's buffers once the
    server stops reading it), then a 1 MB stream from another client while the first resets: the
    stream completes byte-exact, and the server's descriptors return to their count before the hog.
    A connection waiting for buffers has nothing in flight: it sees the reset once its receive is
    re-armed, which may be after the other client is done."""
    idle = len(os.listdir(f"/proc/{srv.pid}/fd"))
    hog = socket.create_connection((srv.addr, srv.port), timeout=30)
    hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    hog.setblocking(False)
    sent = 0
    with contextlib.suppress(BlockingIOError):  # the server stopped reading: its buffers wait for the hog
        while sent < hog_bytes:
            sent += hog.send(b"x" * 65536)
    waiting = subprocess.Popen([str(binary("client")), "--connect", srv.connect, "--workload", "stream",
                                "--bytes", "1000000", "--timeout", "60"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    hog.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    hog.close()  # linger 0: a reset
    out, err = waiting.communicate(timeout=90)
    assert waiting.returncode == 0, (out, err)
    assert wait_until(lambda: len(os.listdir(f"/proc/{srv.pid}/fd")) == idle, timeout=30)
