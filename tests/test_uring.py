"""The io_uring programs (sb-echo-uring, sb-proxy-uring) in every mode: clients that write the
moment connect() returns, a 1 GiB stream through the proxy, io_uring disabled by sysctl, and where
the kernel charges io_uring's work (the io-wq worker threads are counted in the server's CPU).

Real binaries and sockets (tests/progs.py); the other workloads, half-close, SIGTERM and the
refusing upstream run for these programs in tests/test_programs.py and tests/test_proxies.py.
"""

from __future__ import annotations

import contextlib
import random
import subprocess
from collections.abc import Iterator

import pytest
from progs import MODES, binary, descendants, run_client, running_server, stream_outlives_a_reset_hog
from test_sockmap import check_echoed, closing_all, early_clients, pump

pytestmark = pytest.mark.e2e

ECHO_MODES = ["uring", "uring-splice", "uring-send-zc"]
PROXY_MODES = ["proxy-uring", "proxy-uring-splice", "proxy-uring-send-zc"]


@pytest.fixture(autouse=True)
def no_leftover_processes():
    yield
    left = descendants()
    assert left == [], f"processes left behind: {left}"


def mode_args(name: str) -> tuple[str, tuple[str, ...]]:
    """(program, arguments) of a test name: proxy-uring-splice -> proxy-uring --mode splice."""
    return MODES.get(name, (name, ()))


@contextlib.contextmanager
def serving(name: str) -> Iterator[tuple[int, object]]:
    """An echo server in that mode, or a naive echo behind the proxy in that mode: (port, server
    under test)."""
    if not name.startswith("proxy-"):
        with running_server(name) as srv:
            yield srv.port, srv
        return
    prog, args = mode_args(name)
    with running_server("naive") as backend, running_server(
        name, "--upstream", backend.connect, *args, cmd=[str(binary(prog))]
    ) as px:
        yield px.port, px


@pytest.mark.parametrize("name", ECHO_MODES + PROXY_MODES)
def test_clients_writing_the_moment_connect_returns_are_echoed(name: str) -> None:
    """500 clients write at once after connect() (a third half-close at once too): most bytes
    arrive before the accept, let alone the first receive; none is lost or reordered."""
    rnd = random.Random(f"early-{name}")
    with serving(name) as (port, srv):
        with closing_all(early_clients(port, 500, rnd)) as conns:
            pump(conns, timeout=60)
            check_echoed(conns)
        assert srv.stop() == 0, srv.stderr
        s = srv.summary
        total = sum(len(c.data) for c in conns)
        assert s is not None and (s["connections"], s["active"], s["errors"]) == (500, 0, 0), s
        assert s["bytes_in"] == s["bytes_out"] == total


@pytest.mark.slow
@pytest.mark.parametrize("name", PROXY_MODES)
def test_proxy_one_gib_stream(name: str) -> None:
    with serving(name) as (port, px):
        res = run_client(f"127.0.0.1:{port}", "stream", conns=1, bytes=1 << 30, timeout=180)
        r = res.result
        assert res.returncode == 0 and r["ok"] is True, (res.stderr, r["errors"])
        assert r["bytes_sent"] == r["bytes_verified"] == 1 << 30
        assert px.stop() == 0, px.stderr
        s = px.summary
        assert s is not None and s["bytes_in"] == s["bytes_out"] == 1 << 30 and s["errors"] == 0


@pytest.mark.privileged
@pytest.mark.parametrize("program", ["echo-uring", "proxy-uring"])
@pytest.mark.parametrize("mode", ["recv-send", "splice", "send-zc"])
def test_io_uring_disabled_is_one_line(io_uring_disabled: None, program: str, mode: str) -> None:
    """A kernel that refuses io_uring ends the program with one line naming it, before it listens;
    never another technique."""
    argv = [str(binary(program)), "--mode", mode]
    if program.startswith("proxy-"):
        argv += ["--upstream", "127.0.0.1:9"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert proc.stderr.splitlines() == [
        f"sb-{program}: io_uring is disabled on this host (kernel.io_uring_disabled = 2)"
    ]
    assert proc.stdout == ""  # no ready line: it never listened


@pytest.mark.parametrize("name", ["proxy-uring", "proxy-uring-send-zc"])
def test_proxy_with_one_buffer_per_direction_is_byte_exact(name: str) -> None:
    """One 4 KiB provided buffer per direction for 20 connections: the receives keep running out
    (ENOBUFS), wait for the one buffer and are re-armed; nothing is lost, reordered or stuck."""
    prog, args = mode_args(name)
    with running_server("naive") as backend, running_server(
        name, "--upstream", backend.connect, *args, "--buffers", "1", "--buffer-size", "4096",
        cmd=[str(binary(prog))]
    ) as px:
        res = run_client(px.connect, "burst", conns=20, burst_size=100_003, bursts=3, timeout=120)
        r = res.result
        assert res.returncode == 0 and r["ok"] is True, (res.stderr, r["errors"])
        assert r["bytes_verified"] == 20 * 3 * 100_003
        assert px.stop() == 0, px.stderr
        s = px.summary
        assert s is not None and (s["connections"], s["active"], s["errors"]) == (20, 0, 0), s


@pytest.mark.parametrize("name", ["proxy-uring", "proxy-uring-send-zc"])
def test_proxy_reset_connection_gives_its_buffers_back(name: str) -> None:
    # One buffer per direction: a client that sends without reading makes its answers hold the
    # upstream -> client buffer, so every other connection's answers wait; its reset must return it.
    prog, args = mode_args(name)
    with running_server("naive") as backend, running_server(
        name, "--upstream", backend.connect, *args, "--buffers", "1", "--buffer-size", "4096",
        cmd=[str(binary(prog))]
    ) as px:
        stream_outlives_a_reset_hog(px, 256 << 20)
        assert px.stop() == 0, px.stderr
        s = px.summary
        assert s is not None and (s["connections"], s["active"], s["errors"]) == (2, 0, 1), s
