"""sb-client's threads, CPU pinning, I/O modes, TCP_INFO and stall detection, and the servers' worker
threads: real programs on loopback, every byte verified."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

import pytest

from progs import binary, client_argv, corrupt_echo_cmd, descendants, run_client, running_server, wait_until

pytestmark = pytest.mark.e2e

MiB = 1 << 20
GiB = 1 << 30


def _ok(res) -> dict:
    r = res.result
    assert res.returncode == 0 and r["ok"] is True, (res.stderr, r.get("errors"))
    assert r["bytes_verified"] == r["bytes_expected"] and r["conns_failed"] == 0
    return r


WORKLOADS = [
    ("stream", {"bytes": 3 * MiB + 17, "chunk": 65536}),
    ("pingpong", {"msg_size": 100, "round_trips": 300}),
    ("burst", {"burst_size": 200_000, "bursts": 3}),
]


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("workload, opts", WORKLOADS, ids=[w for w, _ in WORKLOADS])
def test_threads_share_the_connections_byte_exact(workload, opts, threads):
    with running_server("naive") as srv:
        r = _ok(run_client(srv.connect, workload, conns=7, threads=threads, timeout=60, **opts))
    ts = r["threads"]
    assert [t["thread"] for t in ts] == list(range(threads)) and r["params"]["threads"] == threads
    # Every connection belongs to one thread, as evenly as they divide.
    assert sum(t["conns"] for t in ts) == 7 and max(t["conns"] for t in ts) - min(t["conns"] for t in ts) <= 1
    assert sum(t["bytes_verified"] for t in ts) == r["bytes_verified"]
    assert sum(t["latency_count"] for t in ts) == r["latency_ns"]["count"]
    assert all(t["cpu"] is None and t["cpu_user_s"] + t["cpu_sys_s"] >= 0 for t in ts)
    assert r["tcp_info"]["conns"] == 7 and r["tcp_info"]["rtt_us"]["p50"] > 0


def test_a_thousand_connections_over_two_threads():
    with running_server("naive") as srv:
        r = _ok(run_client(srv.connect, "pingpong", conns=1000, threads=2, round_trips=5, msg_size=64, timeout=60))
    assert [t["conns"] for t in r["threads"]] == [500, 500]
    assert [t["conns_ok"] for t in r["threads"]] == [500, 500]
    assert r["latency_ns"]["count"] == 5000 and r["tcp_info"]["conns"] == 1000


def test_a_gibibyte_stream_over_two_threads():
    with running_server("naive") as srv:
        r = _ok(run_client(srv.connect, "stream", conns=2, threads=2, bytes=GiB // 2, timeout=120))
    assert r["bytes_verified"] == GiB and [t["bytes_verified"] for t in r["threads"]] == [GiB // 2] * 2


def _nearest_rank(sorted_values: list[int], p: float) -> int:
    rank = max(1, min(len(sorted_values), -(-int(p * len(sorted_values) * 1000) // 100_000)))
    return sorted_values[rank - 1]


@pytest.mark.parametrize("procs", [1, 3])
def test_merged_percentiles_are_those_of_every_threads_samples(tmp_path: Path, procs):
    """Also with the threads in worker processes (--procs), whose samples come back to the main process."""
    out = tmp_path / "samples.txt"
    with running_server("naive") as srv:
        r = _ok(run_client(srv.connect, "pingpong", conns=6, threads=3, round_trips=400, msg_size=64,
                           samples_file=out, timeout=60, procs=procs))
    assert [t["proc"] for t in r["threads"]] == ([0, 0, 0] if procs == 1 else [0, 1, 2])
    rows = [tuple(map(int, line.split())) for line in out.read_text().splitlines()]
    per_thread = {t: [ns for th, ns in rows if th == t] for t in range(3)}
    assert [len(per_thread[t]) for t in range(3)] == [t["latency_count"] for t in r["threads"]] == [800] * 3
    merged = sorted(ns for _, ns in rows)
    lat = r["latency_ns"]
    assert lat["count"] == len(merged) == 2400
    assert (lat["min"], lat["max"]) == (merged[0], merged[-1])
    for key, p in (("p50", 50), ("p90", 90), ("p99", 99), ("p999", 99.9)):
        assert lat[key] == _nearest_rank(merged, p), key
    # The histogram holds every sample once, bucketed.
    buckets = r["hist"]["buckets"]
    assert sum(n for _, _, n in buckets) == len(merged)
    assert all(sum(1 for v in merged if lo <= v < hi) == n for lo, hi, n in buckets)


def _allowed_cpus(pid: int, tid: int) -> str:
    for line in Path(f"/proc/{pid}/task/{tid}/status").read_text().splitlines():
        if line.startswith("Cpus_allowed_list:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError("no Cpus_allowed_list")


def test_pinned_threads_run_where_they_were_told():
    cpus = sorted(os.sched_getaffinity(0))
    order = list(reversed(cpus))[:2] if len(cpus) > 1 else cpus * 2
    # A listener that never accepts: the handshakes complete in its backlog and the client's threads
    # wait for echoes, alive long enough to read their affinity back from /proc.
    with socket.socket() as lsock:
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(16)
        port = lsock.getsockname()[1]
        argv = client_argv(f"127.0.0.1:{port}", "pingpong", conns=2, threads=2, timeout=3, stall=0,
                           cpus=",".join(map(str, order)))
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            task_dir = Path(f"/proc/{proc.pid}/task")
            assert wait_until(lambda: len(list(task_dir.iterdir())) == 3, 5), "the two threads did not start"
            tids = sorted(int(p.name) for p in task_dir.iterdir())
            seen = [_allowed_cpus(proc.pid, t) for t in tids if t != proc.pid]
        finally:
            out, err = proc.communicate(timeout=30)
    r = json.loads(out)
    assert seen == [str(c) for c in order]
    assert [t["cpu"] for t in r["threads"]] == order and [t["last_cpu"] for t in r["threads"]] == order
    assert r["params"]["cpus"] == ",".join(map(str, order))
    assert proc.returncode == 1 and {e["error"] for e in r["errors"]} == {"timeout"}


@pytest.mark.parametrize("io", ["blocking", "busy-poll", "epoll"])
def test_each_io_mode_is_byte_exact(io):
    with running_server("naive") as srv:
        r = _ok(run_client(srv.connect, "pingpong", conns=2, threads=2, round_trips=500, msg_size=1000, io=io,
                           timeout=60))
    assert [t["io"] for t in r["threads"]] == [io, io] and r["latency_ns"]["count"] == 1000


def test_split_io_writes_and_reads_each_stream_in_two_threads():
    with running_server("naive") as srv:
        r = _ok(run_client(srv.connect, "stream", conns=3, bytes=20 * MiB + 5, chunk=100_000, io="split",
                           timeout=60))
    assert r["params"]["threads"] == 6 and [t["io"] for t in r["threads"]] == ["split"] * 6
    # Thread 2c writes connection c, thread 2c + 1 reads and verifies it.
    assert [t["conns"] for t in r["threads"]] == [0, 1] * 3
    assert [t["bytes_verified"] for t in r["threads"]] == [0, 20 * MiB + 5] * 3


@pytest.mark.parametrize("server_args, error, offset", [(["--stop", "300000"], "stall (no bytes for 0.5s at offset "
                                                                             "300000)", 300_000),
                                                        (["--truncate", "123457"], "short read (EOF at offset "
                                                                                   "123457)", 123_457),
                                                        (["--reset", "500000"], "reset", None)])
def test_split_io_names_what_went_wrong(server_args, error, offset):
    with running_server("corrupt", *server_args, cmd=corrupt_echo_cmd()) as srv:
        res = run_client(srv.connect, "stream", conns=2, bytes=4_000_000, io="split", stall=0.5, timeout=30)
    r = res.result
    assert res.returncode == 1 and r["conns_failed"] == 2 and r["errors_total"] == 2
    assert [e["error"] for e in r["errors"]] == [error, error]
    if offset is not None:
        assert {e["offset"] for e in r["errors"]} == {offset} and r["bytes_verified"] == 2 * offset


def test_auto_io_blocks_for_one_pingpong_connection_per_thread_only():
    with running_server("naive") as srv:
        one = _ok(run_client(srv.connect, "pingpong", conns=2, threads=2, round_trips=10))
        two = _ok(run_client(srv.connect, "pingpong", conns=4, threads=2, round_trips=10))
        big = _ok(run_client(srv.connect, "pingpong", conns=1, msg_size=65536, round_trips=10))
        stream = _ok(run_client(srv.connect, "stream", conns=1, bytes=MiB))
    assert [t["io"] for t in one["threads"]] == ["blocking", "blocking"]
    assert [t["io"] for t in two["threads"]] == ["epoll", "epoll"]
    assert big["threads"][0]["io"] == "epoll" and stream["threads"][0]["io"] == "epoll"


def test_a_blocking_connection_that_stalls_is_named():
    with running_server("corrupt", "--stop", "640", cmd=corrupt_echo_cmd()) as srv:
        res = run_client(srv.connect, "pingpong", conns=1, round_trips=50, stall=0.3, timeout=30)
    r = res.result
    assert res.returncode == 1 and r["threads"][0]["io"] == "blocking"
    assert r["errors"] == [{"conn": 0, "error": "stall (no bytes for 0.3s at offset 640)", "offset": 640}]
    assert r["bytes_verified"] == 640 and r["latency_ns"]["count"] == 10


def test_source_addresses_spread_over_loopback():
    # A server that records its peers' addresses: the client binds 127.0.0.1 + (c mod 4).
    with running_server("corrupt", cmd=corrupt_echo_cmd()) as srv:
        r = _ok(run_client(srv.connect, "pingpong", conns=12, source_addrs=4, round_trips=3, timeout=30))
        assert srv.stop() == 0
    assert r["params"]["source_addrs"] == 4
    assert sorted(srv.summary["peers"]) == sorted(f"127.0.0.{1 + c % 4}" for c in range(12))


BAD_CLIENT = [
    (["--threads", "0"], "sb-client: --threads must be at least 1"),
    (["--threads", "1025"], "sb-client: --threads: 1025 is larger than the maximum 1024"),
    (["--conns", "2", "--threads", "3"], "sb-client: --threads 3 is more than --conns 2: a thread needs a "
                                         "connection"),
    (["--cpus", "99999"], "sb-client: --cpus: CPU 99999 is not one this process may run on"),
    (["--cpus", "0-"], "sb-client: --cpus: expected a list like 0,2-3, got '0-'"),
    (["--cpus", "a"], "sb-client: --cpus: expected a list like 0,2-3, got 'a'"),
    (["--io", "fast"], "sb-client: --io: expected auto, epoll, blocking, busy-poll or split, got 'fast'"),
    (["--io", "split"], "sb-client: --io split needs the stream workload, no --threads and --conns at most 512"),
    (["--io", "blocking", "--conns", "2"], "sb-client: --io blocking needs the pingpong workload"),
    (["--stall", "-1"], "sb-client: --stall: expected a number of seconds >= 0, got '-1'"),
    (["--source-addrs", "0"], "sb-client: --source-addrs must be at least 1"),
    (["--procs", "0"], "sb-client: --procs must be at least 1"),
    (["--procs", "257"], "sb-client: --procs: 257 is larger than the maximum 256"),
    (["--procs", "3", "--threads", "2", "--conns", "4"], "sb-client: --procs 3 is more than --threads 2"),
    (["--hold", "2"], "sb-client: --hold: 2 is larger than the maximum 1"),
    (["--hold", "1", "--io", "blocking"], "sb-client: --hold 1 needs the stream, pingpong or burst workload"),
]


@pytest.mark.parametrize("args, message", BAD_CLIENT, ids=[" ".join(a) for a, _ in BAD_CLIENT])
def test_bad_client_values_give_one_line(args, message):
    proc = subprocess.run([str(binary("client")), "--connect", "127.0.0.1:9", "--workload", "pingpong", *args],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and proc.stdout == ""
    first, usage = proc.stderr.splitlines()
    assert first.startswith(message) and usage == "sb-client: usage: see sb-client --help"


def test_source_addrs_need_a_loopback_server():
    proc = subprocess.run([str(binary("client")), "--connect", "[::1]:9", "--workload", "pingpong",
                           "--source-addrs", "4"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[0] == ("sb-client: --source-addrs needs a server on loopback IPv4 "
                                           "(127.0.0.0/8), got '[::1]:9'")


# --- workers ----------------------------------------------------------------------------------

WORKER_PROGRAMS = ["naive", "splice", "proxy-naive", "proxy-splice"]


def _program(name: str) -> str:
    return name if name.startswith("proxy") else f"echo-{name}"


@pytest.mark.parametrize("mode", ["threads", "processes"])
@pytest.mark.parametrize("program", WORKER_PROGRAMS)
def test_workers_share_the_connections(program, mode):
    with running_server("naive") as backend:
        up = ["--upstream", backend.connect] if program.startswith("proxy") else []
        procs = ["--processes"] if mode == "processes" else []
        with running_server(program, "--workers", "3", *procs, *up, cmd=[str(binary(_program(program)))]) as srv:
            # The main thread waits for signals, the three workers serve (threads, or child processes).
            tasks = len(list(Path(f"/proc/{srv.pid}/task").iterdir()))
            assert (tasks, len(descendants(srv.pid))) == ((4, 0) if mode == "threads" else (1, 3))
            r = _ok(run_client(srv.connect, "stream", conns=300, threads=2, bytes=100_000, timeout=60))
            assert srv.stop() == 0
    summary = srv.summary
    workers = summary["workers"]
    assert len(workers) == 3 and all(w["connections"] > 0 for w in workers)
    assert sum(w["connections"] for w in workers) == summary["connections"] == 300
    assert sum(w["bytes_in"] for w in workers) == summary["bytes_in"] == r["bytes_verified"]
    assert summary["errors"] == 0 and summary["active"] == 0


@pytest.mark.parametrize("program", WORKER_PROGRAMS)
@pytest.mark.parametrize("value, message", [("0", "--workers must be at least 1"),
                                            ("257", "--workers: 257 is larger than the maximum 256"),
                                            ("two", "--workers: expected a non-negative integer, got 'two'")])
def test_bad_workers_give_one_line(program, value, message):
    up = ["--upstream", "127.0.0.1:9"] if program.startswith("proxy") else []
    prog = _program(program)
    proc = subprocess.run([str(binary(prog)), "--workers", value, *up], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines() == [f"sb-{prog}: {message}", f"sb-{prog}: usage: see sb-{prog} --help"]


def test_one_worker_is_the_one_thread_server_of_old():
    with running_server("naive") as srv:
        _ok(run_client(srv.connect, "pingpong", conns=3, round_trips=10))
        assert len(list(Path(f"/proc/{srv.pid}/task").iterdir())) == 1
        assert srv.stop() == 0
    assert len(srv.summary["workers"]) == 1 and srv.summary["workers"][0]["connections"] == 3
