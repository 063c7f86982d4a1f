"""The SOCKMAP echo server (bpf/echo_sockmap.{c,bpf.c}) on loopback: early data, half-close,
clean exit, privileges, 1,000 concurrent connections, map capacity.

Real server, real sockets, real BPF objects inspected with bpftool; no mocks. The early-data tests
write the moment connect() returns, before the server has accepted, which is where a naive loader
hangs or loses bytes (see the comment at the top of bpf/echo_sockmap.c). The SIGSTOP variants make
that window as wide as wanted, so they do not depend on luck.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import selectors
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from progs import (
    bpf_id_exists,
    bpf_ids,
    descendants,
    run_client,
    running_server,
    server_binary,
    wait_until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.privileged]

NEED_PRIVS = "run as root or grant CAP_BPF and CAP_NET_ADMIN"
VARIANTS = {
    "sockhash": [],
    "sockmap": ["--map", "sockmap"],
    "parser": ["--parser"],
}


@pytest.fixture(autouse=True)
def no_leftover_processes():
    """Every test ends with no process of its own still alive."""
    yield
    left = descendants()
    assert left == [], f"processes left behind: {left}"


# ---------------------------------------------------------------------------------------------
# helpers


def bpftool_json(*args: str) -> Any:
    proc = subprocess.run(["bpftool", "-j", *args], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def map_id(pid: int, name: str) -> int:
    """Id of the BPF map called name that process pid holds."""
    for kind, ident in bpf_ids(pid):
        if kind == "map" and bpftool_json("map", "show", "id", str(ident))["name"] == name:
            return ident
    raise AssertionError(f"process {pid} holds no BPF map named {name}")


def socket_entries(pid: int, name: str = "sock_hash") -> list[tuple[int, int]]:
    """(key, value) of every socket in the server's sock_hash / sock_map. Looked up from user
    space, a socket entry's value is the socket's cookie; empty sock_map slots are skipped."""
    entries = []
    for e in bpftool_json("map", "dump", "id", str(map_id(pid, name))):
        if not isinstance(e.get("value"), list):
            continue  # {"error": ...}: an empty sock_map slot
        key = int.from_bytes(bytes(int(b, 16) for b in e["key"]), "little")
        value = int.from_bytes(bytes(int(b, 16) for b in e["value"]), "little")
        entries.append((key, value))
    return entries


@dataclass
class Conn:
    sock: socket.socket
    data: bytes
    got: bytearray = field(default_factory=bytearray)
    fin_sent: bool = False
    eof: bool = False
    error: str | None = None


def early_clients(
    port: int,
    n: int,
    rnd: random.Random,
    *,
    max_size: int = 16384,
    fin_every: int = 3,
    pieces: int = 1,
) -> list[Conn]:
    """n clients that each write their payload the moment connect() returns (in `pieces` writes,
    so that several segments can wait in the server's queue). Every fin_every-th one also
    half-closes at once (data and FIN can arrive before accept); the others wait for their whole
    echo before they half-close, which is how a lost or stuck byte shows as a hang."""
    conns = []
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c = Conn(s, rnd.randbytes(rnd.randint(1, max_size)))
        step = -(-len(c.data) // pieces)
        for at in range(0, len(c.data), step):
            s.sendall(c.data[at : at + step])
        if fin_every and i % fin_every == 0:
            s.shutdown(socket.SHUT_WR)
            c.fin_sent = True
        s.setblocking(False)
        conns.append(c)
    return conns


def pump(conns: list[Conn], timeout: float) -> None:
    """Read every connection until EOF (or the deadline); half-close a connection once its whole
    echo is back. Records what each one received."""
    sel = selectors.DefaultSelector()
    for c in conns:
        sel.register(c.sock, selectors.EVENT_READ, c)
    left = len(conns)
    deadline = time.monotonic() + timeout
    while left and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=0.2):
            c = key.data
            try:
                b = c.sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError as e:
                c.error, b = str(e), b""
            if b:
                c.got += b
                if not c.fin_sent and len(c.got) >= len(c.data):
                    c.sock.shutdown(socket.SHUT_WR)
                    c.fin_sent = True
                continue
            c.eof = True
            sel.unregister(c.sock)
            left -= 1
    sel.close()


def check_echoed(conns: list[Conn]) -> None:
    hung = [i for i, c in enumerate(conns) if not c.eof]
    wrong = [i for i, c in enumerate(conns) if c.eof and (c.error or bytes(c.got) != c.data)]
    assert not hung and not wrong, (
        f"{len(hung)} of {len(conns)} connections hung (first {hung[:5]}), "
        f"{len(wrong)} got a wrong echo (first {[(i, conns[i].error) for i in wrong[:5]]})"
    )


@contextlib.contextmanager
def closing_all(conns: list[Conn]) -> Iterator[list[Conn]]:
    try:
        yield conns
    finally:
        for c in conns:
            c.sock.close()


@contextlib.contextmanager
def stopped(pid: int) -> Iterator[None]:
    """The process is stopped (SIGSTOP) inside the block: it accepts nothing meanwhile."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def assert_clean_summary(srv: Any, connections: int, echoed: int) -> dict[str, Any]:
    assert srv.stop() == 0, srv.stderr
    s = srv.summary
    assert s is not None and s["event"] == "summary" and s["server"] == "sockmap", srv.stdout_rest
    assert s["connections"] == connections and s["active"] == 0
    assert s["bytes_in"] == echoed and s["bytes_out"] == echoed
    assert s["errors"] == 0
    return s


# ---------------------------------------------------------------------------------------------
# early data


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_early_data_is_echoed_whatever_the_timing(variant: str) -> None:
    """2 x 500 clients write the moment connect() returns: no hang, no lost or reordered byte."""
    rnd = random.Random(f"early-{variant}")
    total = 0
    with running_server("sockmap", *VARIANTS[variant]) as srv:
        for _ in range(2):
            with closing_all(early_clients(srv.port, 500, rnd)) as conns:
                pump(conns, timeout=60)
                check_echoed(conns)
                total += sum(len(c.data) for c in conns)
        assert_clean_summary(srv, connections=1000, echoed=total)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("fin", [False, True], ids=["then-wait", "then-fin"])
def test_bytes_queued_before_accept_are_echoed(variant: str, fin: bool) -> None:
    """The server is stopped while clients connect and write (then wait for the echo, or
    half-close at once); after it resumes every byte comes back without any further traffic.
    then-wait is the case that hangs without the kick after insertion; then-fin reaches the server
    in CLOSE_WAIT, which the map refuses, and is echoed by user space."""
    rnd = random.Random(f"queued-{variant}-{fin}")
    with running_server("sockmap", *VARIANTS[variant]) as srv:
        with stopped(srv.pid):
            # Small enough to fit the receive window of a socket nobody has accepted yet.
            conns = early_clients(
                srv.port, 40, rnd, max_size=16384, fin_every=1 if fin else 0, pieces=4
            )
        with closing_all(conns):
            pump(conns, timeout=30)
            check_echoed(conns)
        assert_clean_summary(srv, connections=40, echoed=sum(len(c.data) for c in conns))


# ---------------------------------------------------------------------------------------------
# half-close


def test_half_close_finishes_a_large_echo_before_closing() -> None:
    """The client sends 24 MiB, half-closes and reads nothing for a while: most of the echo is
    still in the server's queues at the FIN. The server must finish it, byte exact, then close."""
    data = random.Random("half-close").randbytes(24 << 20)
    with running_server("sockmap") as srv:
        with socket.create_connection((srv.addr, srv.port), timeout=60) as s:
            writer = threading.Thread(target=lambda: (s.sendall(data), s.shutdown(socket.SHUT_WR)))
            writer.start()
            time.sleep(0.5)  # not reading: the echo piles up on the server's side
            got = bytearray()
            while True:
                b = s.recv(1 << 20)
                if not b:
                    break
                got += b
            writer.join()
        assert len(got) == len(data) and got == data
        # Closed by the server after the echo: its map no longer holds the socket.
        assert wait_until(lambda: socket_entries(srv.pid) == [], timeout=10)
        assert_clean_summary(srv, connections=1, echoed=len(data))


# ---------------------------------------------------------------------------------------------
# clean exit, nothing left in the kernel


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_sigterm_leaves_no_process_program_map_or_entry(variant: str) -> None:
    with running_server("sockmap", *VARIANTS[variant]) as srv:
        name = "sock_map" if variant == "sockmap" else "sock_hash"
        socks = [socket.create_connection((srv.addr, srv.port), timeout=30) for _ in range(5)]
        try:
            for s in socks:
                s.sendall(b"ping")
                assert s.recv(16) == b"ping"
            entries = socket_entries(srv.pid, name)
            assert len(entries) == 5
            if variant != "sockmap":
                assert all(k == v for k, v in entries)  # keyed by the socket's own cookie
            # A connection that ends leaves the map at once.
            socks[0].shutdown(socket.SHUT_WR)
            assert socks[0].recv(16) == b""
            assert wait_until(lambda: len(socket_entries(srv.pid, name)) == 4, timeout=10)
            held = bpf_ids(srv.pid)
            progs = [i for k, i in held if k == "prog"]
            assert len(progs) == (2 if variant == "parser" else 1), held
            for p in progs:
                assert bpftool_json("prog", "show", "id", str(p))["type"] == "sk_skb"
            assert srv.stop(signal.SIGTERM) == 0, srv.stderr
        finally:
            for s in socks:
                s.close()
        s = srv.summary
        assert s is not None and s["connections"] == 5 and s["active"] == 4, srv.stdout_rest
        assert s["bytes_in"] == s["bytes_out"] == 5 * 4 and s["errors"] == 0
        assert descendants() == []
        # Maps (with their entries) and programs are freed with the process: nothing is pinned.
        assert wait_until(lambda: not any(bpf_id_exists(k, i) for k, i in held), timeout=10), held


# ---------------------------------------------------------------------------------------------
# privileges


UNPRIVILEGED = {
    # nobody, no capabilities at all
    "nobody": ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"],
    # root of a new user namespace: every capability, but bpf() refuses it
    "userns-root": ["unshare", "--user", "--map-root-user"],
}


@pytest.mark.parametrize("who", sorted(UNPRIVILEGED))
def test_without_privileges_fails_fast_with_one_line(who: str) -> None:
    wrapper = UNPRIVILEGED[who]
    assert shutil.which(wrapper[0]), f"{wrapper[0]} (util-linux) is needed"
    argv = [*wrapper, str(server_binary("sockmap"))]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("sb-echo-sockmap: ") and NEED_PRIVS in lines[0]


# ---------------------------------------------------------------------------------------------
# many connections, map capacity


def test_thousand_concurrent_connections_are_byte_exact() -> None:
    """1,000 connections open at once, all in the map at the same time, each echoed exactly."""
    rnd = random.Random("thousand")
    with running_server("sockmap") as srv:
        conns = []
        with closing_all(conns):
            for _ in range(1000):
                s = socket.create_connection((srv.addr, srv.port), timeout=30)
                conns.append(Conn(s, rnd.randbytes(rnd.randint(1000, 8000))))
            assert wait_until(lambda: len(socket_entries(srv.pid)) == 1000, timeout=30)
            for c in conns:
                c.sock.sendall(c.data)
                c.sock.setblocking(False)
            pump(conns, timeout=60)
            check_echoed(conns)
        total = sum(len(c.data) for c in conns)
        assert_clean_summary(srv, connections=1000, echoed=total)


def test_thousand_connections_with_the_load_client() -> None:
    with running_server("sockmap") as srv:
        res = run_client(srv.connect, "stream", conns=1000, bytes=65536, chunk=16384, timeout=90)
        r = res.result
        assert res.returncode == 0 and r["ok"] is True, (res.stderr, r["errors"][:3])
        assert r["conns_ok"] == 1000 and r["bytes_verified"] == 1000 * 65536
        assert_clean_summary(srv, connections=1000, echoed=1000 * 65536)


def echo_once(port: int, payload: bytes) -> bytes:
    """Send payload, half-close, return what came back before EOF (or a reset)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        got = bytearray()
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
            while b := s.recv(65536):
                got += b
        return bytes(got)


@pytest.mark.parametrize("variant", ["sockhash", "sockmap"])
def test_full_map_refuses_only_the_extra_connection(variant: str) -> None:
    with running_server("sockmap", "--max-conns", "2", *VARIANTS[variant]) as srv:
        a = socket.create_connection((srv.addr, srv.port), timeout=30)
        b = socket.create_connection((srv.addr, srv.port), timeout=30)
        try:
            for s in (a, b):
                s.sendall(b"hello")
                assert s.recv(16) == b"hello"
            # The map is full: a third connection is closed unanswered. (It must not half-close
            # first: a client that did is echoed in user space, see the then-fin test above.)
            with socket.create_connection((srv.addr, srv.port), timeout=30) as third:
                got = b"?"
                with contextlib.suppress(ConnectionResetError):
                    third.sendall(b"third")
                    got = third.recv(16)
                assert got in (b"", b"?")  # EOF or reset, never an echo
        finally:
            a.close()
            b.close()
        # Freed places are reused: many more connections than --max-conns, one after another.
        name = "sock_map" if variant == "sockmap" else "sock_hash"
        assert wait_until(lambda: socket_entries(srv.pid, name) == [], timeout=10)
        for i in range(20):
            payload = f"conn {i} ".encode() * (i + 1)
            assert echo_once(srv.port, payload) == payload
        assert srv.stop() == 0, srv.stderr
        s = srv.summary
        assert s is not None and s["connections"] == 23 and s["active"] == 0, srv.stdout_rest
        assert s["errors"] == 1  # the refused third connection
