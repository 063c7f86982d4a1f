"""The data-path programs on loopback: every echo server x every client workload, byte exact.

Real binaries (built by `make` through tests/progs.py), real sockets, no mocks. The SOCKMAP server
is in every parametrization: its cases fail, not skip, while build/sb-echo-sockmap does not build.
"""

from __future__ import annotations

import random
import signal
import socket
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from splicebench.results.metrics import client_failure, mismatch_source

from progs import (
    SERVERS,
    binary,
    bpf_id_exists,
    bpf_ids,
    corrupt_echo_cmd,
    descendants,
    run_client,
    running_server,
    server_binary,
    stream_outlives_a_reset_hog,
    wait_until,
)

pytestmark = pytest.mark.e2e

GiB = 1 << 30


@pytest.fixture(autouse=True)
def no_leftover_processes():
    """Every test ends with no process of its own still alive (servers, clients, helpers)."""
    yield
    left = descendants()
    assert left == [], f"processes left behind: {left}"


def assert_clean(res: Any, conns: int, per_conn: int, samples: int) -> dict[str, Any]:
    """The client passed: every byte sent came back, verified, with the expected sample count."""
    r = res.result
    assert res.returncode == 0, (res.stderr, r["errors"])
    assert r["ok"] is True
    assert r["errors"] == [] and r["errors_total"] == 0 and r["mismatch"] is None
    assert r["conns_ok"] == conns and r["conns_failed"] == 0
    assert r["bytes_expected"] == conns * per_conn
    assert r["bytes_sent"] == conns * per_conn
    assert r["bytes_verified"] == conns * per_conn
    assert r["latency_ns"]["count"] == samples
    assert res.stderr == ""
    return r


def assert_summary(srv: Any, connections: int, bytes_echoed: int, active: int = 0) -> None:
    """The server exited 0 on SIGTERM with a summary that accounts for every byte."""
    assert srv.stop() == 0, srv.stderr
    s = srv.summary
    assert s is not None, srv.stdout_rest
    assert s["event"] == "summary" and s["server"] == srv.name
    assert s["connections"] == connections
    assert s["active"] == active
    assert s["bytes_in"] == bytes_echoed and s["bytes_out"] == bytes_echoed
    assert s["errors"] == 0
    assert s["cpu_user_s"] >= 0 and s["cpu_sys_s"] >= 0


# ---------------------------------------------------------------------------------------------
# every server x every workload


@pytest.mark.parametrize("server", SERVERS)
def test_stream_is_byte_exact(server: str) -> None:
    # Odd sizes: chunks that straddle the client's 8-byte words and 256 KiB payload blocks.
    with running_server(server) as srv:
        res = run_client(srv.connect, "stream", conns=4, bytes=8_000_003, chunk=65_537, timeout=60)
        assert_clean(res, conns=4, per_conn=8_000_003, samples=4)
        assert_summary(srv, connections=4, bytes_echoed=4 * 8_000_003)


@pytest.mark.parametrize("server", SERVERS)
@pytest.mark.parametrize("msg_size,round_trips", [(64, 300), (70_001, 20)])
def test_pingpong_is_byte_exact(server: str, msg_size: int, round_trips: int) -> None:
    with running_server(server) as srv:
        res = run_client(
            srv.connect,
            "pingpong",
            conns=8,
            msg_size=msg_size,
            round_trips=round_trips,
            timeout=60,
        )
        r = assert_clean(res, conns=8, per_conn=msg_size * round_trips, samples=8 * round_trips)
        assert r["params"]["msg_size"] == msg_size and r["params"]["bytes"] is None
        assert_summary(srv, connections=8, bytes_echoed=8 * msg_size * round_trips)


@pytest.mark.parametrize("server", SERVERS)
def test_burst_is_byte_exact(server: str) -> None:
    with running_server(server) as srv:
        res = run_client(
            srv.connect,
            "burst",
            conns=4,
            burst_size=1_048_579,
            bursts=5,
            chunk=100_000,
            timeout=60,
        )
        assert_clean(res, conns=4, per_conn=5 * 1_048_579, samples=20)
        assert_summary(srv, connections=4, bytes_echoed=4 * 5 * 1_048_579)


@pytest.mark.slow
@pytest.mark.parametrize("server", SERVERS)
def test_one_gib_stream(server: str) -> None:
    with running_server(server) as srv:
        res = run_client(srv.connect, "stream", conns=1, bytes=GiB, timeout=120)
        r = assert_clean(res, conns=1, per_conn=GiB, samples=1)
        assert r["goodput_bytes_per_s"] > 0
        assert_summary(srv, connections=1, bytes_echoed=GiB)


THOUSAND = {
    "stream": ({"bytes": 3 * 65536 + 1}, 3 * 65536 + 1, 1),
    "pingpong": ({"msg_size": 64, "round_trips": 20}, 64 * 20, 20),
    "burst": ({"burst_size": 32_768, "bursts": 3}, 3 * 32_768, 3),
}


@pytest.mark.slow
@pytest.mark.parametrize("server", SERVERS)
@pytest.mark.parametrize("workload", sorted(THOUSAND))
def test_thousand_concurrent_connections(server: str, workload: str) -> None:
    opts, per_conn, samples = THOUSAND[workload]
    with running_server(server) as srv:
        res = run_client(srv.connect, workload, conns=1000, timeout=90, **opts)
        assert_clean(res, conns=1000, per_conn=per_conn, samples=1000 * samples)
        assert_summary(srv, connections=1000, bytes_echoed=1000 * per_conn)


@pytest.mark.parametrize("server", SERVERS)
def test_ipv6_loopback(server: str) -> None:
    with running_server(server, "--listen", "[::1]:0") as srv:
        assert srv.addr == "::1"
        res = run_client(srv.connect, "stream", conns=2, bytes=1_000_000, timeout=60)
        assert_clean(res, conns=2, per_conn=1_000_000, samples=2)
        assert_summary(srv, connections=2, bytes_echoed=2_000_000)


# ---------------------------------------------------------------------------------------------
# half-close


def recv_all(sock: socket.socket, out: bytearray) -> None:
    """Read until EOF into out (a reset propagates as an exception in the thread)."""
    while True:
        data = sock.recv(1 << 20)
        if not data:
            return
        out += data


@pytest.mark.parametrize("server", SERVERS)
def test_half_close_echoes_everything_then_closes(server: str) -> None:
    payload = random.Random(7).randbytes(4 << 20)
    with running_server(server) as srv:
        # 1. Big payload, FIN right after the last byte while the echo is still on its way.
        with socket.create_connection((srv.addr, srv.port), timeout=30) as s:
            got = bytearray()
            reader = threading.Thread(target=recv_all, args=(s, got))
            reader.start()
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
            reader.join(timeout=60)
            assert not reader.is_alive()
            assert bytes(got) == payload  # everything, then EOF
        # 2. Data and FIN right after connect, before the server can have accepted.
        with socket.create_connection((srv.addr, srv.port), timeout=10) as s:
            s.sendall(payload[:50_000])
            s.shutdown(socket.SHUT_WR)
            got = bytearray()
            recv_all(s, got)
            assert bytes(got) == payload[:50_000]
        # 3. FIN without any data: the server closes too.
        with socket.create_connection((srv.addr, srv.port), timeout=10) as s:
            s.shutdown(socket.SHUT_WR)
            assert s.recv(1) == b""
        total = len(payload) + 50_000
        assert_summary(srv, connections=3, bytes_echoed=total)


@pytest.mark.parametrize("server", SERVERS)
def test_stream_of_zero_bytes_is_only_a_half_close(server: str) -> None:
    with running_server(server) as srv:
        res = run_client(srv.connect, "stream", conns=3, bytes=0, timeout=30)
        assert_clean(res, conns=3, per_conn=0, samples=3)
        assert_summary(srv, connections=3, bytes_echoed=0)


# ---------------------------------------------------------------------------------------------
# signals: clean exit, nothing left behind


@pytest.mark.parametrize("server", SERVERS)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_exits_cleanly_and_leaves_nothing(server: str, sig: int) -> None:
    with running_server(server) as srv:
        res = run_client(srv.connect, "stream", conns=3, bytes=300_000, timeout=60)
        assert_clean(res, conns=3, per_conn=300_000, samples=3)
        # Two connections still open (one idle, one with its echo read) when the signal comes.
        idle = socket.create_connection((srv.addr, srv.port), timeout=30)
        busy = socket.create_connection((srv.addr, srv.port), timeout=30)
        try:
            busy.sendall(b"x" * 1000)
            got = bytearray()
            while len(got) < 1000:
                got += busy.recv(4096)
            held = bpf_ids(srv.pid)
            assert srv.stop(sig) == 0, srv.stderr
        finally:
            idle.close()
            busy.close()
        s = srv.summary
        assert s is not None and s["event"] == "summary", srv.stdout_rest
        assert s["connections"] == 5 and s["active"] == 2
        assert s["bytes_in"] == s["bytes_out"] == 3 * 300_000 + 1000
        assert srv.proc.poll() is not None
        assert descendants() == []
        # Every BPF map/program/link the server held is gone with it (nothing pinned, no entry
        # left in a map that outlives the process). Freeing is asynchronous: poll.
        assert wait_until(lambda: not any(bpf_id_exists(k, i) for k, i in held), timeout=10), held
        if server == "sockmap":
            assert any(kind == "map" for kind, _ in held), "the sockmap server holds no BPF map?"


# ---------------------------------------------------------------------------------------------
# bad arguments and failures: one line naming the cause


COMMON_BAD = [
    (["--listen", "localhost:80"], "--listen"),
    (["--listen", "127.0.0.1"], "--listen"),
    (["--listen", "127.0.0.1:70000"], "--listen"),
    (["--sndbuf", "-5"], "--sndbuf"),
    (["--rcvbuf", "12k"], "--rcvbuf"),
    (["--no-such-option"], "--no-such-option"),
    (["--listen"], "--listen"),
    (["stray"], "stray"),
]
SERVER_BAD = {
    "naive": [(["--buf", "0"], "--buf must be at least 1"), (["--buf", "1e6"], "--buf")],
    "splice": [
        (["--pipe-size", "0"], "--pipe-size must be at least 1"),
        (["--pipe-size", ""], "--pipe-size"),
    ],
    "sockmap": [(["--map", "array"], "--map"), (["--max-conns", "x"], "--max-conns")],
    "uring": [
        (["--mode", "aio"], "--mode: expected recv-send, splice or send-zc, got 'aio'"),
        (["--queue-depth", "0"], "--queue-depth must be at least 1"),
        (["--buffers", "0"], "--buffers must be at least 1"),
        (["--buffer-size", "0"], "--buffer-size must be at least 1"),
    ],
}
SERVER_BAD["uring-splice"] = SERVER_BAD["uring-send-zc"] = SERVER_BAD["uring"]


@pytest.mark.parametrize(
    "server,argv,expected",
    [(s, a, e) for s in SERVERS for a, e in COMMON_BAD + SERVER_BAD[s]],
)
def test_server_bad_arguments_are_usage_errors(server: str, argv: list[str], expected: str) -> None:
    proc = subprocess.run(
        [str(server_binary(server)), *argv], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert expected in proc.stderr
    assert proc.stdout == ""  # no ready line: it never listened


TO = ["--connect", "127.0.0.1:1"]
STREAM = [*TO, "--workload", "stream"]
CLIENT_BAD = [
    ([], "--connect ADDR:PORT is required"),
    (TO, "--workload stream|pingpong|burst|crr is required"),
    ([*TO, "--workload", "flood"], "--workload: expected stream, pingpong, burst or crr, got 'flood'"),
    (["--connect", "nonsense", "--workload", "stream"], "--connect: expected ADDR:PORT"),
    ([*STREAM, "--conns", "0"], "--conns must be at least 1"),
    ([*STREAM, "--conns", "-1"], "--conns: expected a non-negative integer"),
    ([*STREAM, "--bytes", "1e6"], "--bytes: expected a non-negative integer, got '1e6'"),
    ([*STREAM, "--chunk", "0"], "--chunk must be at least 1"),
    ([*STREAM, "--msg-size", "64"], "--msg-size does not apply to the stream workload"),
    ([*TO, "--workload", "pingpong", "--bytes", "64"], "--bytes does not apply to the pingpong"),
    ([*TO, "--workload", "burst", "--bursts", "0"], "--bursts must be at least 1"),
    (
        [*TO, "--workload", "pingpong", "--msg-size", str(GiB), "--round-trips", str(1 << 40)],
        "bytes per connection too large",
    ),
    ([*STREAM, "--timeout", "0"], "--timeout: expected a number of seconds > 0, got '0'"),
    ([*STREAM, "--seed"], "--seed needs a value"),
    ([*STREAM, "extra"], "unexpected argument 'extra'"),
]


@pytest.mark.parametrize("argv,expected", CLIENT_BAD, ids=[e for _, e in CLIENT_BAD])
def test_client_bad_arguments_are_usage_errors(argv: list[str], expected: str) -> None:
    argv = [str(binary("client")), *argv]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert f"sb-client: {expected}" in proc.stderr
    assert proc.stdout == ""


@pytest.mark.parametrize("prog", ["echo-naive", "echo-splice", "echo-sockmap", "echo-uring", "client"])
def test_help_exits_zero_with_usage(prog: str) -> None:
    proc = subprocess.run([str(binary(prog)), "--help"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0
    assert "usage:" in proc.stdout.lower()


@pytest.mark.parametrize("server", SERVERS)
def test_server_fails_fast_on_a_busy_port(server: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [str(server_binary(server)), "--listen", f"127.0.0.1:{port}"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert proc.returncode == 1
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and "Address already in use" in lines[0], proc.stderr
    assert proc.stdout == ""


def test_client_reports_refused_connections() -> None:
    with socket.socket() as s:  # a port that nothing listens on (bound, not listening)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        res = run_client(f"127.0.0.1:{port}", "stream", conns=3, bytes=1000, timeout=10)
    r = res.result
    assert res.returncode == 1 and r["ok"] is False
    assert r["conns_failed"] == 3 and r["conns_ok"] == 0 and r["errors_total"] == 3
    assert {e["error"] for e in r["errors"]} == {"connect: Connection refused"}
    assert r["bytes_verified"] == 0 and r["latency_ns"]["count"] == 0
    assert len(res.stderr.splitlines()) == 1 and "3 of 3 connections failed" in res.stderr


# ---------------------------------------------------------------------------------------------
# the client catches a misbehaving server


FLIP_AT = 1_000_003
MISBEHAVIOUR = [
    # (server options, workload options, error, offset the error is reported at)
    (["--flip", str(FLIP_AT)], {"workload": "stream", "bytes": 4_000_000}, "mismatch", FLIP_AT),
    (["--flip", "6400"], {"workload": "pingpong", "msg_size": 64, "round_trips": 200}, "mismatch",
     6400),
    (["--flip", "3000000"], {"workload": "burst", "burst_size": 1_000_000, "bursts": 4},
     "mismatch", 3_000_000),
    (["--truncate", "123457"], {"workload": "stream", "bytes": 1_000_000},
     "short read (EOF at offset 123457)", 123_457),
    (["--reset", "500000"], {"workload": "stream", "bytes": 2_000_000}, "reset", None),
    (["--extra", "10"], {"workload": "stream", "bytes": 100_000}, "extra bytes", 100_000),
    (["--extra", "1"], {"workload": "pingpong", "msg_size": 64, "round_trips": 5}, "extra bytes",
     320),
    (["--stall"], {"workload": "stream", "bytes": 10_000, "timeout": 1}, "timeout", 0),
    # Echoes 300,000 bytes, then goes silent with the connection open: a stall, long before the deadline.
    (["--stop", "300000"], {"workload": "stream", "bytes": 4_000_000, "stall": 0.5},
     "stall (no bytes for 0.5s at offset 300000)", 300_000),
    (["--stop", "6400"], {"workload": "pingpong", "msg_size": 64, "round_trips": 200, "stall": 0.5},
     "stall (no bytes for 0.5s at offset 6400)", 6400),
]


@pytest.mark.parametrize(
    "server_args,client_opts,error,offset", MISBEHAVIOUR, ids=[" ".join(m[0]) for m in MISBEHAVIOUR]
)
def test_client_detects_a_misbehaving_server(
    server_args: list[str], client_opts: dict[str, Any], error: str, offset: int | None
) -> None:
    opts = dict(client_opts)
    workload = opts.pop("workload")
    opts.setdefault("timeout", 30)
    with running_server("corrupt", *server_args, cmd=corrupt_echo_cmd()) as srv:
        res = run_client(srv.connect, workload, conns=2, **opts)
    r = res.result
    assert res.returncode == 1 and r["ok"] is False, r
    assert r["conns_failed"] == 2 and r["errors_total"] == 2
    assert [e["error"] for e in r["errors"]] == [error, error]
    assert sorted(e["conn"] for e in r["errors"]) == [0, 1]
    if offset is not None:
        assert {e["offset"] for e in r["errors"]} == {offset}
    assert r["bytes_verified"] < r["bytes_expected"] or error == "extra bytes"
    if error.startswith("stall"):  # nothing lost: every byte echoed before the silence was verified
        assert r["bytes_verified"] == 2 * offset
    if error == "mismatch":
        m = r["mismatch"]
        assert m["offset"] == offset and m["conn"] in (0, 1)
        assert m["got"] == m["expected"] ^ 0x01
        # Everything before the flipped byte was verified on both connections.
        assert r["bytes_verified"] == 2 * offset
    else:
        assert r["mismatch"] is None
    assert len(res.stderr.splitlines()) == 1 and "2 of 2 connections failed" in res.stderr


LOCATED = [
    # (server options, where the located stretch starts after the first wrong byte, its offset
    # minus that start (+ lost, - repeated), the clause of the failure line; None: not located)
    (["--flip", str(FLIP_AT)], 1, 0, "1 wrong byte, then in step again"),
    (["--drop", f"{FLIP_AT}:5000"], 0, 5000, "its bytes from offset 1,005,003 (5,000 bytes lost)"),
    (["--repeat", f"{FLIP_AT}:777"], 0, -777, "its bytes from offset 999,226 again (777 bytes repeated)"),
    (["--zero", f"{FLIP_AT}:100"], None, None, "the bytes are from no connection's stream nearby"),
]


@pytest.mark.parametrize("server_args,skip,shift,clause", LOCATED, ids=[" ".join(m[0]) for m in LOCATED])
def test_client_names_where_the_wrong_bytes_came_from(server_args: list[str], skip: int | None,
                                                      shift: int | None, clause: str) -> None:
    """Lost, repeated, changed or foreign bytes: the first mismatch says which stream the wrong bytes
    belong to and where (a kernel that drops or repeats a stretch shows as such), and the failure
    line says it in words."""
    with running_server("corrupt", *server_args, cmd=corrupt_echo_cmd()) as srv:
        res = run_client(srv.connect, "stream", conns=2, bytes=4_000_000, timeout=30)
    m = res.result["mismatch"]
    assert res.returncode == 1 and m["offset"] == FLIP_AT, res.result
    if skip is None:
        assert m["source"] is None
    else:
        src = m["source"]
        assert src["conn"] == m["conn"] and src["at"] - FLIP_AT == skip and src["offset"] - src["at"] == shift
        assert 24 <= src["bytes"] <= 4_000_000 - src["offset"]
    line = client_failure(res.result, res.returncode, res.stderr)
    assert f"at offset {FLIP_AT} (expected {m['expected']}, got {m['got']}; {clause}" in line, line


def test_mismatch_from_another_connection_is_named() -> None:
    mm = {"conn": 3, "offset": 4096, "expected": 1, "got": 2,
          "source": {"at": 4096, "conn": 5, "offset": 8192, "bytes": 1448}}
    assert mismatch_source(mm) == "; connection 5's bytes from offset 8,192, 1,448 bytes matching"


def test_payload_is_seeded_pseudo_random_and_differs_per_connection(tmp_path: Path) -> None:
    def capture(seed: int) -> set[bytes]:
        out = tmp_path / f"seed-{seed}-{len(list(tmp_path.iterdir()))}"
        out.mkdir()
        with running_server("corrupt", "--dump", str(out), cmd=corrupt_echo_cmd()) as srv:
            res = run_client(srv.connect, "stream", conns=2, bytes=65536, seed=seed, timeout=30)
            assert res.returncode == 0, res.stderr
            assert srv.stop() == 0
        return {p.read_bytes() for p in out.iterdir()}

    one = capture(1)
    assert len(one) == 2  # the two connections carry different bytes
    for data in one:
        assert len(data) == 65536
        assert len(set(data)) == 256  # not a constant, not a short repeating pattern
        assert data[:32768] != data[32768:]
    assert capture(1) == one  # reproducible from the seed
    assert capture(2).isdisjoint(one)


# ---------------------------------------------------------------------------------------------
# latency summary and histogram


@pytest.mark.parametrize("server", ["naive"])
def test_latency_summary_and_histogram_agree(server: str) -> None:
    with running_server(server) as srv:
        res = run_client(srv.connect, "pingpong", conns=4, msg_size=64, round_trips=500, timeout=60)
    r = assert_clean(res, conns=4, per_conn=64 * 500, samples=2000)
    lat = r["latency_ns"]
    order = [lat[k] for k in ("min", "p50", "p90", "p99", "p999", "max")]
    assert order == sorted(order) and order[0] > 0
    assert lat["min"] <= lat["mean"] <= lat["max"]
    h = r["hist"]
    assert h["scheme"] == "log2-64" and h["unit"] == "ns"
    buckets = h["buckets"]
    assert sum(c for _, _, c in buckets) == 2000
    los = [lo for lo, _, _ in buckets]
    assert los == sorted(set(los))  # sorted, no duplicate bucket: merging by [lo, hi) works
    for lo, hi, count in buckets:
        assert count > 0 and hi > lo
        assert (hi - lo) / lo < 0.016 if lo >= 128 else hi - lo == 1
    assert buckets[0][0] <= lat["min"] < buckets[0][1]
    assert buckets[-1][0] <= lat["max"] < buckets[-1][1]
    # p50 lies in the bucket where the cumulative count first reaches half the samples.
    seen = 0
    for lo, hi, count in buckets:
        seen += count
        if seen >= 1000:
            assert lo <= lat["p50"] < hi
            break
    assert 0 < r["cpu_user_s"] + r["cpu_sys_s"]


# ---------------------------------------------------------------------------------------------
# splice: the pipe keeps working when the kernel refuses F_SETPIPE_SZ


@pytest.mark.privileged
def test_splice_falls_back_to_default_pipes_for_an_unprivileged_user() -> None:
    # Unprivileged users may own fs.pipe-user-pages-soft pages of pipes (64 MiB by default):
    # 100 connections with 1 MiB pipes exceed it, F_SETPIPE_SZ fails with EPERM for the rest.
    soft = int(Path("/proc/sys/fs/pipe-user-pages-soft").read_text())
    conns = soft * 4096 // (1 << 20) + 40
    with running_server("splice", "--pipe-size", str(1 << 20), user="nobody") as srv:
        res = run_client(srv.connect, "stream", conns=conns, bytes=300_001, timeout=60)
        assert_clean(res, conns=conns, per_conn=300_001, samples=conns)
        assert_summary(srv, connections=conns, bytes_echoed=conns * 300_001)
    assert "F_SETPIPE_SZ" in srv.stderr and "Operation not permitted" in srv.stderr
    count_line = [line for line in srv.stderr.splitlines() if "pipes kept the default size" in line]
    assert len(count_line) == 1
    assert int(count_line[0].split("warning: ")[1].split()[0]) >= 40


# ---------------------------------------------------------------------------------------------
# uring (more in tests/test_uring.py)


@pytest.mark.parametrize("server", ["uring", "uring-send-zc"])
def test_uring_a_reset_connection_gives_its_buffers_back(server: str) -> None:
    # One provided buffer in all: a client that sends without reading holds it (its echo cannot be
    # sent) while every receive waits for buffers; its reset must return it to the others.
    with running_server(server, "--buffers", "1", "--buffer-size", "4096") as srv:
        stream_outlives_a_reset_hog(srv, 64 << 20)
        assert srv.stop() == 0, srv.stderr
        s = srv.summary
        assert s is not None and s["connections"] == 2 and s["active"] == 0 and s["errors"] == 1, s
