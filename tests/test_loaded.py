"""Latency under load: a bulk sb-client stopped by SIGINT verifies every byte it sent, against every
echo server and proxy, while a ping-pong client runs beside it; a corrupting server is caught; and
`invoke run` of the latency-under-load scenarios records alone and loaded percentiles per sample."""

from __future__ import annotations

import io
import json
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from progs import SERVERS, binary, client_argv, corrupt_echo_cmd, descendants, run_client, running_server

from splicebench.cli import commands
from splicebench.registry import PAYLOAD_MAX
from splicebench.results import rundir as results

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def no_leftover_processes():
    yield
    left = descendants()
    assert left == [], f"processes left behind: {left}"


def loaded_pingpong(connect: str, bulk_conns: int = 3, round_trips: int = 300) -> tuple[dict, dict, str]:
    """A bulk stream client (SIGINT-stopped), a ping-pong client while it runs: (bulk JSON, ping-pong
    JSON, bulk stderr)."""
    bulk = subprocess.Popen(client_argv(connect, "stream", conns=bulk_conns, bytes=PAYLOAD_MAX, chunk=65_537,
                                        seed=7, timeout=60),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(0.2)
        pp = run_client(connect, "pingpong", conns=1, msg_size=64, round_trips=round_trips, timeout=60)
    finally:
        bulk.send_signal(signal.SIGINT)
        out, err = bulk.communicate(timeout=60)
    assert pp.returncode == 0, pp.result["errors"]
    return json.loads(out), pp.result, err


def assert_bulk_clean(b: dict, conns: int) -> None:
    assert b["ok"] is True and b["stopped_early"] is True, b["errors"]
    assert b["errors_total"] == 0 and b["mismatch"] is None and b["conns_ok"] == conns
    # Stopped early: each connection expects back exactly what it had written, and got it.
    assert 0 < b["bytes_sent"] == b["bytes_verified"] == b["bytes_expected"] < conns * PAYLOAD_MAX


@pytest.mark.parametrize("server", SERVERS)
def test_bulk_stopped_by_sigint_is_byte_exact_beside_pingpong(server: str) -> None:
    with running_server(server) as srv:
        b, pp, err = loaded_pingpong(srv.connect)
        assert_bulk_clean(b, 3)
        assert err == ""
        assert pp["ok"] is True and pp["latency_ns"]["count"] == 300
        assert srv.stop() == 0, srv.stderr
        s = srv.summary
        assert s["connections"] == 4 and s["errors"] == 0
        assert s["bytes_in"] == s["bytes_out"] == b["bytes_verified"] + 300 * 64


@pytest.mark.parametrize("proxy", [pytest.param("naive"), pytest.param("splice"),
                                   pytest.param("sockmap", marks=pytest.mark.privileged)])
def test_bulk_and_pingpong_through_each_proxy_are_byte_exact(proxy: str) -> None:
    name = f"proxy-{proxy}"
    with running_server("naive") as backend:
        with running_server(name, "--upstream", backend.connect, cmd=[str(binary(name))]) as px:
            b, pp, _ = loaded_pingpong(px.connect, bulk_conns=2, round_trips=200)
            assert_bulk_clean(b, 2)
            assert pp["bytes_verified"] == 200 * 64
            assert px.stop() == 0
        assert backend.stop() == 0
        assert backend.summary["bytes_in"] == b["bytes_verified"] + 200 * 64


@pytest.mark.parametrize("opts", [{"conns": 4, "threads": 2}, {"conns": 2, "io": "split"}],
                         ids=["threads", "split"])
def test_sigint_stops_the_streams_of_every_thread(opts: dict) -> None:
    # The signal lands in one thread; every thread's connections (the epoll loops, woken through the
    # eventfd, or each writing thread of --io split) must stop and verify the echo of what they sent.
    with running_server("naive") as srv:
        bulk = subprocess.Popen(client_argv(srv.connect, "stream", bytes=PAYLOAD_MAX, timeout=60, **opts),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(0.5)
        bulk.send_signal(signal.SIGINT)
        out, err = bulk.communicate(timeout=60)
        b = json.loads(out)
        assert bulk.returncode == 0 and err == "", err
        assert_bulk_clean(b, opts["conns"])
        assert len(b["threads"]) == opts.get("threads", 2 * opts["conns"])  # split: two per connection
        assert sum(t["conns_ok"] for t in b["threads"]) == opts["conns"]
        assert srv.stop() == 0, srv.stderr
        assert srv.summary["bytes_in"] == srv.summary["bytes_out"] == b["bytes_verified"]


def test_sigint_wakes_threads_that_wait_in_epoll() -> None:
    # A listener that never accepts: once the socket buffers are full both threads sleep in
    # epoll_wait (the main thread takes the signal, interrupting neither) until the eventfd wakes them;
    # each connection then expects back only what it had written, and the deadline fails them as
    # timeouts. Without the wake-up they would meet the deadline still expecting 2^50 bytes each.
    with socket.create_server(("127.0.0.1", 0), backlog=8) as lsn:
        connect = f"127.0.0.1:{lsn.getsockname()[1]}"
        bulk = subprocess.Popen(client_argv(connect, "stream", conns=2, threads=2, bytes=PAYLOAD_MAX, stall=0,
                                            timeout=3),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(1)
        bulk.send_signal(signal.SIGINT)
        out, _ = bulk.communicate(timeout=60)
    b = json.loads(out)
    assert bulk.returncode == 1 and b["stopped_early"] is True
    assert [e["error"] for e in b["errors"]] == ["timeout", "timeout"]
    assert 0 < b["bytes_expected"] == b["bytes_sent"] < 2 * PAYLOAD_MAX and b["bytes_verified"] == 0


def test_a_corrupting_server_is_caught_in_the_bulk_stream_and_the_pingpong() -> None:
    with running_server("corrupt", "--flip", "100000", cmd=corrupt_echo_cmd()) as srv:
        bulk = subprocess.Popen(client_argv(srv.connect, "stream", conns=2, bytes=PAYLOAD_MAX, timeout=30),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            time.sleep(0.3)
            pp = run_client(srv.connect, "pingpong", conns=1, msg_size=1000, round_trips=200, timeout=30)
        finally:
            bulk.send_signal(signal.SIGINT)
            out, err = bulk.communicate(timeout=60)
    b = json.loads(out)
    assert bulk.returncode == 1 and b["ok"] is False and b["mismatch"]["offset"] == 100_000
    assert "mismatch" in {e["error"] for e in b["errors"]} and "connections failed" in err
    r = pp.result
    assert pp.returncode == 1 and r["mismatch"]["offset"] == 100_000 and r["errors"][0]["error"] == "mismatch"


def test_repeated_sigint_only_stops_sending_and_sigterm_ends_the_client() -> None:
    with running_server("corrupt", "--stall", cmd=corrupt_echo_cmd()) as srv:
        bulk = subprocess.Popen(client_argv(srv.connect, "stream", conns=1, bytes=PAYLOAD_MAX, timeout=60),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(0.3)
        for _ in range(3):  # stops sending; the echo never comes (stalled server)
            bulk.send_signal(signal.SIGINT)
            time.sleep(0.1)
        time.sleep(0.3)
        assert bulk.poll() is None
        bulk.send_signal(signal.SIGTERM)
        assert bulk.wait(10) == -signal.SIGTERM
        bulk.communicate()


def short(name: str, **replace: str) -> str:
    text = (REPO / "scenarios" / f"{name}.yaml").read_text()
    for a, b in {"round_trips: 2000": "round_trips: 200", "warmup: 1": "warmup: 0", "measured: 5": "measured: 1",
                 **replace}.items():
        text = text.replace(a, b)
    return text


@pytest.mark.privileged
@pytest.mark.parametrize("name,rt", [("loopback-latency-under-load", 200),
                                     pytest.param("loopback-proxy-latency-under-load", 50, marks=pytest.mark.slow)])
def test_run_records_alone_and_loaded_percentiles(tmp_path: Path, use_cache, no_leftovers, name: str, rt: int) -> None:
    # The peers let bulk streams delay a ping-pong round trip by up to ~0.2 s here: few round trips.
    (tmp_path / "s.yaml").write_text(short(name, **{"round_trips: 200": f"round_trips: {rt}",
                                                    "bulk_conns: 4": "bulk_conns: 2"}))
    res = commands.run(commands.Paths.of(REPO, str(tmp_path / "results"), str(tmp_path / "reports")),
                       str(tmp_path / "s.yaml"), log=lambda m: None, progress_stream=io.StringIO())
    assert res.status == "complete"
    s = results.load_samples(res.run_dir)
    assert (s["status"] == "ok").all(), s["error"].tolist()
    assert (s["lat_count"] == rt).all() and (s["unloaded_lat_count"] == rt).all()
    assert (s["unloaded_lat_p99_ns"] >= s["unloaded_lat_p50_ns"]).all() and (s["lat_p99_ns"] >= s["lat_p50_ns"]).all()
    assert (s["bulk_goodput_bytes_per_s"] > 0).all()
    # Every byte of the three clients, each verified: two ping-pong runs and the bulk streams.
    assert (s["bytes_verified"] == 2 * rt * 64 + s["bulk_bytes_verified"]).all()
    raw = sorted(p.name.split(".", 1)[1] for p in (res.run_dir / "raw").glob(f"{s['sample_id'][0]}.client*"))
    assert raw == ["client-bulk.json", "client-unloaded.json", "client.json"]
    html = res.report.read_text()
    assert 'id="latency-under-load"' in html and "p99 loaded / alone" in html
