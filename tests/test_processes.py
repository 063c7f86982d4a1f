"""Programs that span processes (C100K: RLIMIT_NOFILE is per process): the servers' worker processes
(--workers N --processes; the SOCKMAP echo server's --workers) and sb-client --procs. Nothing they
fork outlives them, a worker that dies is named, SIGINT reaches the client's worker processes, and
--hold keeps every connection open until all got their bytes back."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from progs import client_argv, descendants, kill_group, run_client, running_server, wait_until

pytestmark = pytest.mark.e2e

SERVERS = [("naive", ["--workers", "3", "--processes"]), ("splice", ["--workers", "3", "--processes"]),
           ("sockmap", ["--workers", "3"])]


def _gone(pids: list[int]) -> bool:
    return all(not Path(f"/proc/{pid}").exists() for pid in pids)


@pytest.mark.privileged
@pytest.mark.parametrize("server, args", SERVERS, ids=[s for s, _ in SERVERS])
def test_worker_processes_die_with_the_server(server, args):
    """SIGKILL of the main process (no chance to stop its workers): PR_SET_PDEATHSIG takes them."""
    with running_server(server, *args) as srv:
        kids = [pid for pid, _, _ in descendants(srv.pid)]
        assert len(kids) == 3
        r = run_client(srv.connect, "pingpong", conns=30, threads=2, round_trips=5, timeout=30).result
        assert r["ok"] is True
        os.kill(srv.pid, signal.SIGKILL)
        srv.proc.wait(timeout=10)
        assert wait_until(lambda: _gone(kids), 10), descendants()


@pytest.mark.privileged
@pytest.mark.parametrize("server, args", SERVERS, ids=[s for s, _ in SERVERS])
def test_a_worker_process_that_dies_ends_the_server_naming_it(server, args):
    with running_server(server, *args) as srv:
        kids = [pid for pid, _, _ in descendants(srv.pid)]
        os.kill(kids[1], signal.SIGKILL)
        srv.proc.wait(timeout=10)
        assert srv.stop() == 1
        assert wait_until(lambda: _gone(kids), 10)
    assert srv.stderr.splitlines() == [f"sb-echo-{server}: worker process 1 ended with signal 9 (Killed)"]


def test_client_processes_hold_every_connection_open_until_all_are_done():
    """--hold 1: the peak of sockets open at once is every connection, across the worker processes."""
    with running_server("naive", "--workers", "2", "--processes") as srv:
        r = run_client(srv.connect, "pingpong", conns=300, threads=4, procs=3, hold=1, round_trips=3,
                       timeout=60).result
        plain = run_client(srv.connect, "crr", conns=4, transactions=200, threads=2, procs=2, timeout=60).result
        assert srv.stop() == 0
    assert r["ok"] is True and r["conns_ok"] == 300 and r["peak_open"] == 300
    assert r["params"]["procs"] == 3 and r["params"]["hold"] is True
    assert [t["proc"] for t in r["threads"]] == [0, 1, 2, 2]
    assert r["bytes_verified"] == r["bytes_expected"] == 300 * 3 * 64
    # crr's transaction counter is shared by the processes: each transaction runs once.
    assert plain["ok"] is True and plain["conns_ok"] == 200 and plain["latency_ns"]["count"] == 200
    assert plain["peak_open"] <= 4
    assert srv.summary["connections"] == 300 + 200


@contextmanager
def endless_stream_in_two_processes() -> Iterator[subprocess.Popen]:
    """A client streaming 4 connections without end from 2 threads in 2 processes to a naive echo
    server, once both processes exist; killed (its group) after the block."""
    with running_server("naive") as srv:
        argv = client_argv(srv.connect, "stream", conns=4, threads=2, procs=2, bytes=1 << 40, timeout=60)
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
        try:
            assert wait_until(lambda: len(descendants(p.pid)) == 2, 10)
            yield p
        finally:
            kill_group(p)


def test_sigint_stops_the_streams_of_every_client_process():
    """stream: SIGINT to the main process reaches the worker processes through the stop eventfd; each
    connection then expects back what it sent, byte-exact."""
    with endless_stream_in_two_processes() as p:
        time.sleep(0.3)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=30)
    r = json.loads(out)
    assert p.returncode == 0 and r["ok"] is True, err
    assert r["stopped_early"] is True and r["conns_ok"] == 4
    assert 0 < r["bytes_verified"] == r["bytes_expected"] == r["bytes_sent"]


def test_client_processes_die_with_the_client():
    with endless_stream_in_two_processes() as p:
        kids = [pid for pid, _, _ in descendants(p.pid)]
        os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=10)
        assert wait_until(lambda: _gone(kids), 10)


def test_a_client_process_that_dies_fails_its_connections_naming_it():
    with endless_stream_in_two_processes() as p:
        os.kill(descendants(p.pid)[0][0], signal.SIGKILL)  # the process of threads 0 (connections 0, 1)
        time.sleep(0.2)
        p.send_signal(signal.SIGINT)
        out, _ = p.communicate(timeout=30)
    r = json.loads(out)
    assert p.returncode == 1 and r["ok"] is False and r["conns_failed"] == 2 and r["conns_ok"] == 2
    assert sorted((e["conn"], e["error"]) for e in r["errors"]) == [
        (0, "client process 0 ended by signal 9"), (1, "client process 0 ended by signal 9")]
    assert r["threads"][0]["latency_count"] == 0  # its samples went with it
