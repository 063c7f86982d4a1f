"""The reverse proxies on loopback: client -> proxy -> backend, byte exact in both directions.

Real binaries (built by `make` through tests/progs.py): sb-client drives every workload through
sb-proxy-<naive|splice|sockmap> to a real sb-echo-naive backend. What an echo server cannot do
(speak first, half-close first, refuse, die mid-stream) is played by small asyncio backends in this
file, on real loopback sockets. The SOCKMAP cases are marked privileged (they load BPF programs).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import struct
import subprocess
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

from progs import (
    MODES,
    Server,
    binary,
    bpf_id_exists,
    bpf_ids,
    descendants,
    run_client,
    running_server,
    wait_until,
)

pytestmark = pytest.mark.e2e

PROXIES = [
    pytest.param("naive", id="naive"),
    pytest.param("splice", id="splice"),
    pytest.param("sockmap", id="sockmap", marks=pytest.mark.privileged),
    pytest.param("uring", id="uring"),
    pytest.param("uring-splice", id="uring-splice"),
    pytest.param("uring-send-zc", id="uring-send-zc"),
]


def program(proxy: str) -> str:
    """The program behind a proxy as the tests name it: proxy-uring-splice runs proxy-uring."""
    return MODES.get(f"proxy-{proxy}", (f"proxy-{proxy}", ()))[0]


@pytest.fixture(autouse=True)
def no_leftover_processes():
    """Every test ends with no process of its own still alive (proxies, backends, clients)."""
    yield
    left = descendants()
    assert left == [], f"processes left behind: {left}"


@contextlib.contextmanager
def running_proxy(proxy: str, upstream: str, *args: str) -> Iterator[Server]:
    """Start build/sb-proxy-<proxy> forwarding to upstream; stopped (SIGTERM) on leaving."""
    name = f"proxy-{proxy}"
    prog, mode_args = MODES.get(name, (name, ()))
    with running_server(name, "--upstream", upstream, *mode_args, *args, cmd=[str(binary(prog))]) as px:
        yield px


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def sockhash_entries(pid: int) -> dict[str, int]:
    """Entries per SOCKHASH map held by pid (the SOCKMAP proxy's clients, upstreams, peer_of)."""
    out: dict[str, int] = {}
    for kind, ident in bpf_ids(pid):
        if kind != "map":
            continue
        show = subprocess.run(
            ["bpftool", "-j", "map", "show", "id", str(ident)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        info = json.loads(show.stdout)
        if info.get("type") != "sockhash":
            continue
        dump = subprocess.run(
            ["bpftool", "-j", "map", "dump", "id", str(ident)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert dump.returncode == 0, dump.stderr
        out[info["name"]] = len(json.loads(dump.stdout))
    return out


def assert_no_leaks(proxy: str, px: Server, baseline_fds: int) -> None:
    """Once every connection ended the proxy holds no more descriptors than when idle, and the
    SOCKMAP proxy's maps are empty."""
    assert wait_until(lambda: fd_count(px.pid) == baseline_fds, timeout=20), (
        f"{fd_count(px.pid)} descriptors open, {baseline_fds} when idle"
    )
    if proxy == "sockmap":
        entries = sockhash_entries(px.pid)
        assert set(entries) == {"clients", "upstreams", "peer_of"}, entries
        assert wait_until(lambda: sum(sockhash_entries(px.pid).values()) == 0, timeout=20), (
            sockhash_entries(px.pid)
        )


def assert_client_ok(res: Any, conns: int, per_conn: int) -> None:
    r = res.result
    assert res.returncode == 0, (res.stderr, r["errors"])
    assert r["ok"] is True and r["errors_total"] == 0 and r["mismatch"] is None
    assert r["conns_ok"] == conns
    assert r["bytes_sent"] == r["bytes_verified"] == r["bytes_expected"] == conns * per_conn


def assert_proxy_summary(px: Server, connections: int, forwarded: int, errors: int = 0) -> None:
    """SIGTERM: exit 0 and a summary that accounts for every byte in both directions."""
    assert px.stop() == 0, px.stderr
    s = px.summary
    assert s is not None, px.stdout_rest
    assert s["event"] == "summary" and s["server"] == px.name
    assert s["connections"] == connections
    assert s["active"] == 0
    assert s["bytes_in"] == forwarded and s["bytes_out"] == forwarded
    assert s["errors"] == errors and s["upstream_errors"] == 0
    assert s.get("verdict_drops", 0) == 0
    assert s["cpu_user_s"] >= 0 and s["cpu_sys_s"] >= 0


# ---------------------------------------------------------------------------------------------
# byte exact: every proxy x every workload, with 1 and with 1,000 connections

ONE = {
    "stream": ({"bytes": 8_000_003, "chunk": 65_537}, 8_000_003),
    "pingpong": ({"msg_size": 1000, "round_trips": 200}, 200_000),
    "burst": ({"burst_size": 1_048_579, "bursts": 4}, 4 * 1_048_579),
}

THOUSAND = {
    "stream": ({"bytes": 3 * 65536 + 1}, 3 * 65536 + 1),
    "pingpong": ({"msg_size": 64, "round_trips": 10}, 640),
    "burst": ({"burst_size": 32_768, "bursts": 2}, 2 * 32_768),
}


def _byte_exact_through(proxy: str, workload: str, opts: dict, per_conn: int, conns: int,
                       timeout: int):
    """Run `conns` connections through the proxy to a naive echo; return the (stopped) backend."""
    with running_server("naive") as backend, running_proxy(proxy, backend.connect) as px:
        idle = fd_count(px.pid)
        res = run_client(px.connect, workload, conns=conns, timeout=timeout, **opts)
        assert_client_ok(res, conns, per_conn)
        assert_no_leaks(proxy, px, idle)
        assert_proxy_summary(px, connections=conns, forwarded=conns * per_conn)
    return backend


@pytest.mark.parametrize("proxy", PROXIES)
@pytest.mark.parametrize("workload", sorted(ONE))
def test_one_connection_is_byte_exact(proxy: str, workload: str) -> None:
    opts, per_conn = ONE[workload]
    backend = _byte_exact_through(proxy, workload, opts, per_conn, conns=1, timeout=60)
    assert backend.summary is not None and backend.summary["bytes_in"] == per_conn


@pytest.mark.slow
@pytest.mark.parametrize("proxy", PROXIES)
@pytest.mark.parametrize("workload", sorted(THOUSAND))
def test_thousand_connections_are_byte_exact(proxy: str, workload: str) -> None:
    # sb-client writes the moment each connect() returns: most of these bytes reach the proxy
    # before it accepted, let alone connected upstream (early data, client side).
    opts, per_conn = THOUSAND[workload]
    _byte_exact_through(proxy, workload, opts, per_conn, conns=1000, timeout=90)


@pytest.mark.privileged
def test_sockmap_proxy_with_stream_parser() -> None:
    with running_server("naive") as backend, running_proxy(
        "sockmap", backend.connect, "--parser"
    ) as px:
        res = run_client(px.connect, "stream", conns=4, bytes=4_000_037, timeout=60)
        assert_client_ok(res, 4, 4_000_037)
        assert_proxy_summary(px, connections=4, forwarded=4 * 4_000_037)


@pytest.mark.privileged
def test_sockmap_proxy_in_front_of_the_sockmap_echo_server() -> None:
    # Both ends of the backend leg are psock sockets: the proxy's upstream leg and the echo's.
    with running_server("sockmap") as backend, running_proxy("sockmap", backend.connect) as px:
        res = run_client(px.connect, "burst", conns=50, burst_size=200_003, bursts=3, timeout=60)
        assert_client_ok(res, 50, 3 * 200_003)
        assert_proxy_summary(px, connections=50, forwarded=50 * 3 * 200_003)


# ---------------------------------------------------------------------------------------------
# backends that an echo server cannot play, on real loopback sockets

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class AsyncBackend:
    """A TCP server on 127.0.0.1 running `handler` per connection in its own thread's event loop.

    Used as the proxies' upstream where the behaviour matters (speaks first, half-closes first,
    dies mid-stream). Exceptions in handlers are collected and re-raised by close().
    """

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.errors: list[BaseException] = []
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.port = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.ready.wait(10), "backend did not start"

    @property
    def connect(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def guarded(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            try:
                await self.handler(r, w)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass  # the proxy aborted this leg: part of what some tests provoke
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - reported by close()
                self.errors.append(e)
            finally:
                w.close()  # after flushing what the handler wrote
            # Also when cancelled by close(): the task then ends quietly.
            with contextlib.suppress(BaseException):
                await w.wait_closed()

        async def main() -> None:
            self.server = await asyncio.start_server(guarded, "127.0.0.1", 0, backlog=4096)
            self.port = self.server.sockets[0].getsockname()[1]
            self.ready.set()
            self.stop_event = asyncio.Event()
            await self.stop_event.wait()
            self.server.close()
            tasks = asyncio.all_tasks() - {asyncio.current_task()}
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        self.loop.run_until_complete(main())
        self.loop.close()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(10)
        assert not self.thread.is_alive()
        if self.errors:
            raise self.errors[0]


@contextlib.contextmanager
def async_backend(handler: Handler) -> Iterator[AsyncBackend]:
    b = AsyncBackend(handler)
    try:
        yield b
    finally:
        b.close()


def pattern(seed: int, n: int) -> bytes:
    return random.Random(seed).randbytes(n)


# ---------------------------------------------------------------------------------------------
# the upstream speaks first and half-closes first


GREETING = pattern(99, 100_003)


@pytest.mark.parametrize("proxy", PROXIES)
@pytest.mark.parametrize("conns", [1, pytest.param(500, marks=pytest.mark.slow)])
def test_upstream_speaks_first_and_half_closes_first(proxy: str, conns: int) -> None:
    """The backend writes a greeting the moment it accepts (early data on the upstream leg, before
    the proxy can have set up its forwarding) and half-closes; the client reads it all and EOF,
    and only then sends its own bytes and FIN, which must reach the backend in full."""
    received: list[bytes] = []

    async def greeter(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(GREETING)
        await w.drain()
        w.write_eof()
        received.append(await r.read(-1))  # until the client's FIN arrives through the proxy

    async def client(i: int, port: int) -> bytes:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        got = await r.read(-1)  # the greeting, then EOF: the backend's FIN came through
        mine = struct.pack("!I", i) + pattern(i, 50_000 + i)
        w.write(mine)
        await w.drain()
        w.write_eof()
        w.close()
        await w.wait_closed()
        assert got == GREETING, (i, len(got))
        return mine

    async def clients(port: int) -> list[bytes]:
        return await asyncio.wait_for(
            asyncio.gather(*(client(i, port) for i in range(conns))), timeout=90
        )

    with async_backend(greeter) as backend, running_proxy(proxy, backend.connect) as px:
        idle = fd_count(px.pid)
        sent = asyncio.run(clients(px.port))
        assert wait_until(lambda: len(received) == conns, timeout=30), len(received)
        assert sorted(received) == sorted(sent)  # every byte, per connection, in order
        assert_no_leaks(proxy, px, idle)
        total_in = sum(len(m) for m in sent)
        assert px.stop() == 0, px.stderr
        s = px.summary
        assert s is not None
        assert (s["connections"], s["active"], s["errors"]) == (conns, 0, 0)
        assert s["bytes_in"] == total_in and s["bytes_out"] == conns * len(GREETING)


@pytest.mark.parametrize("proxy", PROXIES)
def test_client_half_close_keeps_the_other_direction_open(proxy: str) -> None:
    """The client's FIN goes through while the backend keeps sending for a while afterwards."""
    tail = pattern(5, 3_000_017)

    async def late_talker(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        request = await r.read(-1)  # everything up to the client's FIN
        w.write(request + tail)  # the answer starts only after the FIN arrived
        await w.drain()
        w.write_eof()

    request = pattern(6, 1_000_003)
    with async_backend(late_talker) as backend, running_proxy(proxy, backend.connect) as px:
        with socket.create_connection(("127.0.0.1", px.port), timeout=30) as s:
            s.sendall(request)
            s.shutdown(socket.SHUT_WR)
            got = bytearray()
            while chunk := s.recv(1 << 20):
                got += chunk
        assert bytes(got) == request + tail
        assert px.stop() == 0
        assert px.summary is not None
        assert px.summary["bytes_in"] == len(request)
        assert px.summary["bytes_out"] == len(request) + len(tail)
        assert px.summary["errors"] == 0


@pytest.mark.parametrize("proxy", PROXIES)
def test_request_and_fin_before_the_proxy_accepts(proxy: str) -> None:
    """Clients write a whole request and half-close while the proxy is stopped (SIGSTOP), so each
    client leg is in CLOSE_WAIT before the proxy even accepts it. For the SOCKMAP proxy such a leg
    cannot enter a sockmap; its direction must then go through user space, byte exact."""
    requests = [pattern(100 + i, 1 + 1500 * i) for i in range(20)]
    with running_server("naive") as backend, running_proxy(proxy, backend.connect) as px:
        idle = fd_count(px.pid)
        os.kill(px.pid, signal.SIGSTOP)
        try:
            socks = []
            for req in requests:
                s = socket.create_connection(("127.0.0.1", px.port), timeout=30)
                s.sendall(req)
                s.shutdown(socket.SHUT_WR)
                socks.append(s)
        finally:
            os.kill(px.pid, signal.SIGCONT)
        for s, req in zip(socks, requests):
            got = bytearray()
            with s:
                while chunk := s.recv(1 << 16):
                    got += chunk
            assert bytes(got) == req
        assert_no_leaks(proxy, px, idle)
        assert_proxy_summary(px, connections=20, forwarded=sum(map(len, requests)))
        if proxy == "sockmap":
            assert px.summary is not None and px.summary["user_flows"] >= 20


# ---------------------------------------------------------------------------------------------
# failures: the client sees the close, the proxy survives, nothing leaks


def sees_the_close(error: str) -> bool:
    """A client error that says the connection was closed under it: a reset (seen by a read, a
    write, connect() or, as ENOTCONN, shutdown()) or an early EOF."""
    return "reset" in error or "not connected" in error or error.startswith("short read")


def closed_port() -> tuple[socket.socket, int]:
    """A port that refuses connections: bound (so nobody else gets it) but not listening."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    return s, s.getsockname()[1]


@pytest.mark.parametrize("proxy", PROXIES)
def test_upstream_refusing_resets_the_client(proxy: str) -> None:
    holder, port = closed_port()
    with holder, running_proxy(proxy, f"127.0.0.1:{port}") as px:
        idle = fd_count(px.pid)
        res = run_client(px.connect, "stream", conns=20, bytes=100_000, timeout=30)
        r = res.result
        assert res.returncode == 1 and r["ok"] is False
        assert r["conns_failed"] == 20 and r["bytes_verified"] == 0
        for e in r["errors"]:
            assert sees_the_close(e["error"]), e
        assert px.proc.poll() is None  # the proxy survived
        assert_no_leaks(proxy, px, idle)
        assert px.stop() == 0
        s = px.summary
        assert s is not None
        assert (s["connections"], s["active"]) == (20, 0)
        assert s["errors"] == 20 and s["upstream_errors"] == 20
        # One clear line names the cause; the other 19 failures are only counted.
        assert px.stderr.splitlines() == [
            f"sb-{program(proxy)}: warning: cannot connect to upstream 127.0.0.1:{port}: Connection refused "
            "(further failures are only counted in upstream_errors)"]


@pytest.mark.parametrize("proxy", PROXIES)
@pytest.mark.parametrize("how", ["close", "reset"])
def test_upstream_dying_mid_stream_ends_only_that_connection(proxy: str, how: str) -> None:
    """The first 4 upstream connections die after 300 KB (close() or a reset); the client sees
    each one end, the proxy goes on serving: the next connection is echoed in full."""
    served = 0

    async def flaky(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        nonlocal served
        served += 1
        if served <= 4:
            await r.readexactly(300_000)
            if how == "reset":
                sock = w.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            w.transport.abort()  # close(2) now: a FIN, or a reset with unread bytes or SO_LINGER 0
            return
        while data := await r.read(1 << 16):  # a plain echo from now on
            w.write(data)
            await w.drain()
        w.write_eof()

    with async_backend(flaky) as backend, running_proxy(proxy, backend.connect) as px:
        idle = fd_count(px.pid)
        res = run_client(px.connect, "stream", conns=4, bytes=16_000_000, timeout=60)
        r = res.result
        assert res.returncode == 1 and r["ok"] is False and r["conns_failed"] == 4
        for e in r["errors"]:
            assert sees_the_close(e["error"]), e
        assert px.proc.poll() is None
        assert_no_leaks(proxy, px, idle)
        ok = run_client(px.connect, "stream", conns=1, bytes=2_000_000, timeout=60)
        assert_client_ok(ok, 1, 2_000_000)
        assert_no_leaks(proxy, px, idle)
        assert px.stop() == 0
        s = px.summary
        assert s is not None
        assert (s["connections"], s["active"], s["upstream_errors"]) == (5, 0, 0)
        assert 1 <= s["errors"] <= 4  # the dead ones; how many the proxy saw fail is timing


# ---------------------------------------------------------------------------------------------
# lifecycle and command line


@pytest.mark.parametrize("proxy", PROXIES)
def test_sigterm_with_open_connections_exits_cleanly(proxy: str) -> None:
    with running_server("naive") as backend, running_proxy(proxy, backend.connect) as px:
        objects = bpf_ids(px.pid)
        if proxy == "sockmap":
            assert {k for k, _ in objects} >= {"map", "prog"}, objects
        socks = []
        for i in range(10):
            s = socket.create_connection(("127.0.0.1", px.port), timeout=10)
            s.sendall(b"x" * (i + 1))
            assert s.recv(64) == b"x" * (i + 1)
            socks.append(s)
        assert px.stop(signal.SIGTERM) == 0, px.stderr
        s = px.summary
        assert s is not None and s["active"] == 10 and s["connections"] == 10
        for sock in socks:
            sock.settimeout(10)
            with contextlib.suppress(ConnectionResetError):
                assert sock.recv(1) == b""  # the proxy's exit closed the client leg
            sock.close()
        # Every BPF object the proxy held goes with it (nothing pinned). Freeing is asynchronous.
        assert wait_until(
            lambda: not any(bpf_id_exists(k, i) for k, i in objects), timeout=10
        ), objects


BAD_ARGS = [
    ([], "--upstream ADDR:PORT is required"),
    (["--upstream", "localhost:80"], "--upstream: expected ADDR:PORT with a numeric address"),
    (["--upstream", "127.0.0.1:0"], "--upstream: port 0 is not a destination"),
    (["--upstream", "127.0.0.1:70000"], "--upstream: expected ADDR:PORT"),
    (["--upstream", "127.0.0.1:1", "--listen", "nowhere"], "--listen: expected ADDR:PORT"),
    (["--upstream", "127.0.0.1:1", "--bogus"], "'--bogus'"),
    (["--upstream", "127.0.0.1:1", "--sndbuf", "-1"], "--sndbuf: expected a non-negative"),
    (["--upstream", "127.0.0.1:1", "extra"], "unexpected argument 'extra'"),
]


@pytest.mark.parametrize("proxy", ["naive", "splice", "sockmap", "uring"])
@pytest.mark.parametrize("argv,expected", BAD_ARGS)
def test_bad_arguments_are_usage_errors(proxy: str, argv: list[str], expected: str) -> None:
    proc = subprocess.run(
        [str(binary(f"proxy-{proxy}")), *argv], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 2, proc
    assert proc.stdout == ""
    assert expected in proc.stderr.splitlines()[0], proc.stderr


# --upstream-sources (the naive and splice proxies): checked by proxy.c (proxy_opts_done), in any order.
SOURCES_BAD_ARGS = [
    (["--upstream", "10.0.0.1:80", "--upstream-sources", "4"],
     "--upstream-sources needs an upstream on loopback IPv4 (127.0.0.0/8), got '10.0.0.1:80'"),
    (["--upstream-sources", "0", "--upstream", "127.0.0.1:1"], "--upstream-sources must be at least 1"),
]


@pytest.mark.parametrize("proxy", ["naive", "splice"])
@pytest.mark.parametrize("argv,expected", SOURCES_BAD_ARGS)
def test_bad_upstream_sources_are_usage_errors(proxy: str, argv: list[str], expected: str) -> None:
    test_bad_arguments_are_usage_errors(proxy, argv, expected)


@pytest.mark.parametrize("proxy", ["naive", "splice", "sockmap", "uring"])
def test_help(proxy: str) -> None:
    proc = subprocess.run(
        [str(binary(f"proxy-{proxy}")), "--help"], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 0 and proc.stdout.startswith(f"usage: sb-proxy-{proxy} --upstream")


@pytest.mark.privileged
def test_sockmap_proxy_without_privileges_says_what_to_do() -> None:
    proc = subprocess.run(
        [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            str(binary("proxy-sockmap")),
            "--upstream",
            "127.0.0.1:1",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 1 and proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("sb-proxy-sockmap: ")
    assert "run as root or grant CAP_BPF and CAP_NET_ADMIN" in lines[0]
