"""C100K: 100,000 concurrent connections, every byte verified, against the naive, splice and SOCKMAP echo
servers and through the naive proxy, on one host (slow).

A process may hold only its RLIMIT_NOFILE hard limit of descriptors (20,000 where root lacks
CAP_SYS_RESOURCE and cannot raise it), so every program spans processes: sb-client runs 8 threads in 8
processes (--procs), the servers run worker processes (--workers N --processes; the SOCKMAP echo server's
workers are processes), each with its own SO_REUSEPORT listener and its own descriptor limit. The client
spreads its source addresses over 127.0.0.0/8 and the proxy its upstream ones, so that the ephemeral port
range (about 28,000 per address) is no limit. --hold 1 keeps every connection open until all 100,000 got
their echo back: the client's peak_open (sockets open at once, counted as they open and close) is the
concurrency. Nothing may be left: no worker process, no established socket on the servers' ports.
"""

from __future__ import annotations

import json
import resource
import subprocess
import time
from pathlib import Path

import pytest

from progs import binary, client_argv, descendants, running_server
from splicebench import scenario
from splicebench.hosts.local import LocalHost
from splicebench.run import preflight
from splicebench.scenario import plan

pytestmark = [pytest.mark.e2e, pytest.mark.privileged, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
TARGET = 100_000
PROCS = 8  # client processes, naive/SOCKMAP/backend worker processes
# The most descriptors one process of a program may need here: 100,000 / 8 (naive, SOCKMAP, client),
# 2 x 100,000 / 16 (proxy), 3 x 100,000 / 24 (splice), each with SO_REUSEPORT's spread to spare.
PER_PROCESS_MAX = 15_000


def _run_client(connect: str) -> dict:
    argv = client_argv(connect, "pingpong", conns=TARGET, threads=PROCS, procs=PROCS, hold=1, round_trips=2,
                       msg_size=64, source_addrs=8, stall=60, timeout=180)
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    r = json.loads(proc.stdout)
    assert proc.returncode == 0 and r["ok"] is True, (proc.stderr, r["errors"][:3])
    assert r["conns_ok"] == TARGET and r["bytes_verified"] == r["bytes_expected"] == TARGET * 128
    assert r["peak_open"] == TARGET  # all of them open at once
    assert r["tcp_info"]["conns"] == TARGET and r["latency_ns"]["count"] == 2 * TARGET
    assert sorted({t["proc"] for t in r["threads"]}) == list(range(PROCS))
    assert max(t["conns"] for t in r["threads"]) <= PER_PROCESS_MAX
    return r


def _established(port: int) -> int:
    """Established TCP sockets to or from `port` on this host now."""
    out = subprocess.run(["ss", "-Htn", "state", "established", f"( sport = :{port} or dport = :{port} )"],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    return len(out.splitlines())


def _check_workers(srv, workers: int) -> list[int]:
    """The server's worker processes exist while it runs (all its descendants); their pids."""
    kids = [pid for pid, _, _ in descendants(srv.pid)]
    assert len(kids) == workers, descendants(srv.pid)
    return kids


def _nothing_left(srv, kids: list[int]) -> None:
    assert all(not Path(f"/proc/{pid}").exists() for pid in kids), kids
    assert _established(srv.port) == 0


def _check_summary(summary: dict, workers: int) -> None:
    assert summary["connections"] == TARGET and summary["errors"] == 0 and summary["active"] == 0
    assert len(summary["workers"]) == workers
    assert sum(w["connections"] for w in summary["workers"]) == TARGET
    assert all(0 < w["connections"] <= PER_PROCESS_MAX for w in summary["workers"])


SERVERS = [("naive", ["--buf", "4096", "--workers", str(PROCS), "--processes"], PROCS, 1),
           ("splice", ["--pipe-size", "4096", "--workers", "24", "--processes"], 24, 3),
           ("sockmap", ["--max-conns", "131072", "--workers", str(PROCS)], PROCS, 1)]


@pytest.mark.parametrize("server, args, workers, fds_per_conn", SERVERS, ids=[s[0] for s in SERVERS])
def test_c100k_echo_servers(server, args, workers, fds_per_conn):
    t0 = time.monotonic()
    with running_server(server, *args, ready_timeout=60) as srv:
        kids = _check_workers(srv, workers)
        r = _run_client(srv.connect)
        assert srv.stop() == 0, srv.stderr
    _check_summary(srv.summary, workers)
    assert fds_per_conn * max(w["connections"] for w in srv.summary["workers"]) <= PER_PROCESS_MAX
    _nothing_left(srv, kids)
    print(f"C100K {server}: {TARGET:,} connections, peak open {r['peak_open']:,}, client wall {r['wall_s']:.1f} s, "
          f"test {time.monotonic() - t0:.0f} s; per worker {[w['connections'] for w in srv.summary['workers']]}")


def test_c100k_naive_proxy():
    t0 = time.monotonic()
    with running_server("naive", "--buf", "4096", "--workers", str(PROCS), "--processes",
                        ready_timeout=60) as backend:
        bkids = _check_workers(backend, PROCS)
        with running_server("proxy-naive", "--buf", "4096", "--upstream", backend.connect, "--upstream-sources", "8",
                            "--workers", "16", "--processes", cmd=[str(binary("proxy-naive"))],
                            ready_timeout=60) as proxy:
            pkids = _check_workers(proxy, 16)
            r = _run_client(proxy.connect)
            assert proxy.stop() == 0, proxy.stderr
        assert backend.stop() == 0, backend.stderr
    _check_summary(proxy.summary, 16)
    _check_summary(backend.summary, PROCS)
    assert proxy.summary["upstream_errors"] == 0
    assert 2 * max(w["connections"] for w in proxy.summary["workers"]) <= PER_PROCESS_MAX
    _nothing_left(proxy, pkids)
    _nothing_left(backend, bkids)
    print(f"C100K proxy-naive: peak open {r['peak_open']:,}, client wall {r['wall_s']:.1f} s, "
          f"test {time.monotonic() - t0:.0f} s")


@pytest.mark.parametrize("name", ["loopback-c100k", "loopback-proxy-c100k"])
def test_the_c100k_scenarios_fit_here_through_processes(name):
    """Preflight accepts the scenarios on this host because each process needs at most PER_PROCESS_MAX
    descriptors; with one process per program the same scenario is refused, naming the limit."""
    sc = scenario.load(REPO / "scenarios" / f"{name}.yaml")
    wants = preflight.needs(plan.build_plan(sc))
    lim = preflight.read_limits(LocalHost())
    client = next(n for n in wants if n.program == "sb-client")
    assert client.conns == TARGET and client.procs == PROCS and client.ports_to_one_peer <= lim.ports
    assert all(n.fds <= PER_PROCESS_MAX and n.procs > 1 for n in wants), wants
    errors, _ = preflight.problems(wants, {"local": lim})
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    assert hard == resource.RLIM_INFINITY or hard >= PER_PROCESS_MAX, "this host cannot hold even the split"
    assert errors == []
    preflight.check(plan.build_plan(sc), {"local": LocalHost()}, log=lambda m: None)
    # Where even the split does not fit, one line per program names the host, the limit per process and
    # what to change.
    tight = preflight.Limits(nofile_hard=10_000, port_range=lim.port_range, somaxconn=lim.somaxconn)
    errors, _ = preflight.problems(wants, {"local": tight})
    assert len(errors) == len(wants)
    assert all(e.startswith(f"host local: {n.program} needs {n.fds:,} open files in each of {n.procs} processes "
                            f"for 100,000 connections, its RLIMIT_NOFILE hard limit is 10,000: raise it")
               and e.endswith(f"or lower conns, or spread it over more processes ({preflight.SPLITS[n.program]})")
               for e, n in zip(errors, wants)), errors
    # One process each, as before the split: refused under this host's kind of limit (20,000).
    single = [preflight.Need(n.host, n.program, n.conns, n.conns * preflight.FDS_PER_CONN[n.program]
                             + preflight.FD_SLACK, n.ports_to_one_peer, n.arriving) for n in wants]
    small = preflight.Limits(nofile_hard=20_000, port_range=lim.port_range, somaxconn=lim.somaxconn)
    errors, _ = preflight.problems(single, {"local": small})
    assert len(errors) == len(wants) and all("RLIMIT_NOFILE hard limit is 20,000" in e for e in errors)
