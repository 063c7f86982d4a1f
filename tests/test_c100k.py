"""C100K: 100,000 concurrent connections, every byte verified, against the naive and SOCKMAP echo servers
and the naive proxy on one host (slow).

Each program needs a descriptor per connection (the proxy two), so the children get their RLIMIT_NOFILE
hard limit raised to what that takes where the test may (root with CAP_SYS_RESOURCE, up to
fs.nr_open); the client spreads its source addresses over 127.0.0.0/8 and the proxy its upstream ones,
so that the ephemeral port range (about 28,000 per address) is no limit. Where the hard limit cannot be
raised (a container without CAP_SYS_RESOURCE), the test runs as many connections as that limit holds
and says how many in its output; the scenario itself is then refused by preflight, naming the limit.
"""

from __future__ import annotations

import json
import resource
import subprocess
from pathlib import Path

import pytest

from progs import binary, client_argv, running_server
from splicebench import scenario
from splicebench.errors import PreflightError
from splicebench.hosts.local import LocalHost
from splicebench.run import preflight
from splicebench.scenario import plan

pytestmark = [pytest.mark.e2e, pytest.mark.privileged, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
TARGET = 100_000
SLACK = 64  # listeners, epoll, signalfd, stdio, BPF objects


def _nr_open() -> int:
    return int(Path("/proc/sys/fs/nr_open").read_text())


def _raise_nofile(want: int) -> list[str]:
    """A command prefix that raises the hard and soft RLIMIT_NOFILE to `want` where it may (else leaves the
    hard limit as it is) and then runs the program in its place (same pid)."""
    return ["sh", "-c", f'ulimit -Hn {want} 2>/dev/null; ulimit -Sn "$(ulimit -Hn)"; exec "$@"', "sh"]


def _children_limit(want: int) -> int:
    """The hard RLIMIT_NOFILE a child started through _raise_nofile(want) gets."""
    out = subprocess.run([*_raise_nofile(want), "sh", "-c", "ulimit -Hn"], capture_output=True, text=True,
                         timeout=30).stdout.strip()
    return resource.RLIM_INFINITY if out == "unlimited" else int(out)


def _conns(fds_per_conn: int) -> int:
    want = min(_nr_open(), fds_per_conn * TARGET + SLACK)
    got = _children_limit(want)
    n = min(TARGET, (got - SLACK) // fds_per_conn)
    print(f"C100K: {n:,} connections (RLIMIT_NOFILE hard limit for the children: {got:,})")
    return n


def _run_client(connect: str, conns: int) -> dict:
    argv = client_argv(connect, "pingpong", conns=conns, threads=2, round_trips=2, msg_size=64,
                       source_addrs=8, stall=60, timeout=180)
    want = conns + SLACK
    proc = subprocess.run([*_raise_nofile(want), *argv], capture_output=True, text=True, timeout=300)
    r = json.loads(proc.stdout)
    assert proc.returncode == 0 and r["ok"] is True, (proc.stderr, r["errors"][:3])
    assert r["conns_ok"] == conns and r["bytes_verified"] == r["bytes_expected"] == conns * 128
    assert r["tcp_info"]["conns"] == conns
    return r


@pytest.mark.parametrize("server, args", [("echo-naive", ["--buf", "4096"]),
                                          ("echo-sockmap", ["--max-conns", "131072"])])
def test_c100k_echo_servers(server, args):
    conns = _conns(1)
    cmd = [*_raise_nofile(conns + SLACK), str(binary(server)), *args]
    with running_server(server, cmd=cmd, ready_timeout=60) as srv:
        _run_client(srv.connect, conns)
        assert srv.stop() == 0
    assert srv.summary["connections"] == conns and srv.summary["errors"] == 0


def test_c100k_naive_proxy():
    conns = _conns(2)
    bcmd = [*_raise_nofile(conns + SLACK), str(binary("echo-naive")), "--buf", "4096"]
    with running_server("naive", cmd=bcmd, ready_timeout=60) as backend:
        pcmd = [*_raise_nofile(2 * conns + SLACK), str(binary("proxy-naive")), "--buf", "4096",
                "--upstream", backend.connect, "--upstream-sources", "8"]
        with running_server("proxy-naive", cmd=pcmd, ready_timeout=60) as proxy:
            _run_client(proxy.connect, conns)
            assert proxy.stop() == 0
        assert backend.stop() == 0
    assert proxy.summary["connections"] == backend.summary["connections"] == conns
    assert proxy.summary["errors"] == proxy.summary["upstream_errors"] == 0


def test_the_c100k_scenario_fits_or_is_refused_naming_the_limit():
    sc = scenario.load(REPO / "scenarios" / "loopback-c100k.yaml")
    wants = preflight.needs(plan.build_plan(sc))
    lim = preflight.read_limits(LocalHost())
    errors, _ = preflight.problems(wants, {"local": lim})
    client = next(n for n in wants if n.program == "sb-client")
    assert client.conns == TARGET and client.ports_to_one_peer <= lim.ports  # source_addrs spread them
    if lim.nofile_hard is not None and lim.nofile_hard < client.fds:
        assert errors and all("RLIMIT_NOFILE hard limit is" in e for e in errors)
        assert any(e.startswith(f"host local: sb-client needs {client.fds:,} open files for 100,000 connections, "
                                f"its RLIMIT_NOFILE hard limit is {lim.nofile_hard:,}") for e in errors)
        with pytest.raises(PreflightError):
            preflight.check(plan.build_plan(sc), {"local": LocalHost()}, log=lambda m: None)
    else:
        assert errors == []
