"""The crr workload (connect, request, response, close): byte-exact against every echo server, proxy
and peer, a corrupting server caught on every connection, and its command-line errors."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from progs import SERVERS, binary, corrupt_echo_cmd, descendants, run_client, running_server

from splicebench.cli import commands
from splicebench.results import rundir as results

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[1]
PROXIES = [pytest.param("naive", id="naive"), pytest.param("splice", id="splice"),
           pytest.param("sockmap", id="sockmap", marks=pytest.mark.privileged)]


@pytest.fixture(autouse=True)
def no_leftover_processes():
    yield
    left = descendants()
    assert left == [], f"processes left behind: {left}"


def assert_crr_clean(res: Any, transactions: int, msg_size: int) -> dict[str, Any]:
    """Every transaction passed: each connection's message came back verified, one latency sample each."""
    r = res.result
    assert res.returncode == 0, (res.stderr, r["errors"])
    assert r["ok"] is True and r["workload"] == "crr"
    assert r["errors"] == [] and r["errors_total"] == 0 and r["mismatch"] is None
    assert r["conns_ok"] == transactions and r["conns_failed"] == 0
    assert r["bytes_expected"] == r["bytes_sent"] == r["bytes_verified"] == transactions * msg_size
    assert r["latency_ns"]["count"] == transactions
    assert r["params"]["transactions"] == transactions and r["params"]["round_trips"] is None
    assert res.stderr == ""
    return r


@pytest.mark.parametrize("server", SERVERS)
@pytest.mark.parametrize("msg_size,transactions,conns", [(64, 2000, 8), (70_001, 40, 3)])
def test_crr_is_byte_exact(server: str, msg_size: int, transactions: int, conns: int) -> None:
    # 2,000 connections of 64 bytes: at loopback speed more than a thousand connections a second,
    # each writing the moment connect() returns (before the server accepted it).
    with running_server(server) as srv:
        res = run_client(srv.connect, "crr", conns=conns, msg_size=msg_size, transactions=transactions, timeout=60)
        assert_crr_clean(res, transactions, msg_size)
        assert srv.stop() == 0, srv.stderr
        s = srv.summary
        assert s["connections"] == transactions and s["active"] == 0 and s["errors"] == 0
        assert s["bytes_in"] == s["bytes_out"] == transactions * msg_size


@pytest.mark.parametrize("io_mode", ["epoll", "busy-poll"])
def test_crr_across_threads_is_byte_exact(io_mode: str) -> None:
    # Three threads draw the transactions from one counter: each passed once, every thread took part,
    # and TCP_INFO describes the six slots.
    with running_server("naive") as srv:
        res = run_client(srv.connect, "crr", conns=6, threads=3, io=io_mode, msg_size=200, transactions=1500,
                         timeout=60)
        r = assert_crr_clean(res, 1500, 200)
        assert [t["io"] for t in r["threads"]] == [io_mode] * 3
        assert sum(t["conns_ok"] for t in r["threads"]) == 1500 and all(t["conns_ok"] > 0 for t in r["threads"])
        assert sum(t["latency_count"] for t in r["threads"]) == 1500
        assert r["tcp_info"]["conns"] == 6
        assert srv.stop() == 0, srv.stderr
        assert srv.summary["connections"] == 1500 and srv.summary["bytes_in"] == 1500 * 200


@pytest.mark.parametrize("proxy", PROXIES)
def test_crr_through_each_proxy_is_byte_exact(proxy: str) -> None:
    name = f"proxy-{proxy}"
    with running_server("naive") as backend:
        with running_server(name, "--upstream", backend.connect, cmd=[str(binary(name))]) as px:
            res = run_client(px.connect, "crr", conns=8, msg_size=100, transactions=1000, timeout=60)
            assert_crr_clean(res, 1000, 100)
            assert px.stop() == 0, px.stderr
            assert px.summary["connections"] == 1000
        assert backend.stop() == 0
        assert backend.summary["connections"] == 1000 and backend.summary["bytes_in"] == 100_000


def test_a_corrupting_server_fails_every_transaction() -> None:
    with running_server("corrupt", "--flip", "10", cmd=corrupt_echo_cmd()) as srv:
        res = run_client(srv.connect, "crr", conns=2, msg_size=64, transactions=5, timeout=30)
    r = res.result
    assert res.returncode == 1 and r["ok"] is False
    assert r["conns_failed"] == 5 and r["conns_ok"] == 0 and r["errors_total"] == 5
    assert [e["error"] for e in r["errors"]] == ["mismatch"] * 5
    assert sorted(e["conn"] for e in r["errors"]) == [0, 1, 2, 3, 4]  # each transaction its own payload
    assert r["mismatch"]["offset"] == 10 and r["mismatch"]["got"] == r["mismatch"]["expected"] ^ 1
    assert r["bytes_verified"] == 5 * 10
    assert "5 of 5 connections failed" in res.stderr


@pytest.mark.parametrize("argv,expected", [
    (["--workload", "crr", "--round-trips", "3"], "--round-trips does not apply to the crr workload"),
    (["--workload", "stream", "--transactions", "3"], "--transactions does not apply to the stream workload"),
    (["--workload", "crr", "--transactions", "0"], "--transactions must be at least 1"),
    (["--workload", "crr", "--transactions", "4294967296"], "--transactions"),
    (["--workload", "crr", "--io", "blocking"], "--io blocking needs the pingpong workload"),
    (["--workload", "crr", "--io", "split"], "--io split needs the stream workload"),
])
def test_crr_bad_arguments_are_usage_errors(argv: list[str], expected: str) -> None:
    import subprocess

    p = subprocess.run([str(binary("client")), "--connect", "127.0.0.1:9", *argv], capture_output=True, text=True,
                       timeout=30)
    assert p.returncode == 2 and p.stdout == ""
    assert expected in p.stderr.splitlines()[0], p.stderr


@pytest.mark.privileged
@pytest.mark.slow
def test_crr_run_through_every_proxy_and_peer(tmp_path: Path, use_cache, no_leftovers) -> None:
    """`invoke run` of the proxy crr scenario, shortened: every proxy and peer, byte-exact, the
    report leads with connections per second."""
    text = (REPO / "scenarios" / "loopback-proxy-crr.yaml").read_text()
    text = text.replace("transactions: 3000", "transactions: 300").replace("warmup: 1", "warmup: 0") \
        .replace("measured: 5", "measured: 1")
    (tmp_path / "s.yaml").write_text(text)
    res = commands.run(commands.Paths.of(REPO, str(tmp_path / "results"), str(tmp_path / "reports")),
                       str(tmp_path / "s.yaml"), log=lambda m: None, progress_stream=io.StringIO())
    assert res.status == "complete"
    samples = results.load_samples(res.run_dir)
    assert len(samples) == 8 and (samples["status"] == "ok").all(), samples["error"].tolist()
    assert (samples["conns_ok"] == 300).all() and (samples["bytes_verified"] == 300 * 64).all()
    assert (samples["transactions"] == 300).all()
    assert "connections/s" in res.table.splitlines()[0]
    html = res.report.read_text()
    assert "crr (connect, request, response, close" in html
