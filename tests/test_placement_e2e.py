"""A scenario with client threads, server workers and CPU placement through `invoke run`'s code path:
the programs get them, samples.csv and the manifest record them, the report shows them; a placement
beyond the host's CPUs is refused before anything runs."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pandas as pd
import pytest

from splicebench.cli import commands
from splicebench.errors import PreflightError
from splicebench.results import rundir

pytestmark = [pytest.mark.e2e, pytest.mark.privileged]
REPO = Path(__file__).resolve().parents[1]


def _paths(tmp_path: Path) -> commands.Paths:
    return commands.Paths.of(REPO, str(tmp_path / "results"), str(tmp_path / "reports"))


def test_threads_workers_and_cpus_reach_the_programs_and_the_report(tmp_path, use_cache, no_leftovers):
    cpus = sorted(os.sched_getaffinity(0))
    server_cpu, client_cpu = cpus[-1], cpus[0]
    p = tmp_path / "placed.yaml"
    p.write_text(f"name: placed\nservers: [naive, sockmap]\nworkload: {{type: pingpong, conns: 40, round_trips: 20}}\n"
                 f"matrix: {{workers: [1, 2], threads: [1, 2]}}\nrepetitions: {{warmup: 0, measured: 1}}\n"
                 f"cpus: {{server: {server_cpu}, client: '{client_cpu}'}}\ntimeout: 30s\n")
    res = commands.run(_paths(tmp_path), str(p), log=lambda m: None, progress_stream=io.StringIO())
    assert res.status == "complete" and res.counts == {"ok": 8}
    run = rundir.list_runs(tmp_path / "results")[0]
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["scenario"]["cpus"] == {"server": str(server_cpu), "client": str(client_cpu)}
    df = pd.read_csv(run / "samples.csv")
    assert (df["bytes_verified"] == 40 * 20 * 64).all() and (df["tcp_conns"] == 40).all()
    page = res.report.read_text()
    assert list(df["threads"]) == [1, 1, 2, 2, 1, 1, 2, 2] and list(df["client_threads"]) == list(df["threads"])
    naive = df[df["server"] == "naive"]
    assert list(naive["opt_workers"]) == [1, 1, 2, 2]
    two = naive[naive["opt_workers"] == 2]["server_worker_connections"]
    assert all(sum(map(int, w.split("+"))) == 40 and w.count("+") == 1 for w in two)
    sockmap = df[df["server"] == "sockmap"]  # its workers are processes that accept and insert
    assert list(sockmap["opt_workers"]) == [1, 1, 2, 2]
    assert all(sum(map(int, w.split("+"))) == 40 for w in sockmap["server_worker_connections"])
    assert list(df["workers"]) == [1, 1, 1, 1, 2, 2, 2, 2]  # the matrix's value, for the sweep
    # Drawn as lines over threads (each line a server), one panel per workers value.
    assert "workers=1" in page and "workers=2" in page
    for files in df["raw_files"]:
        client = json.loads((run / next(n for n in files.split() if n.endswith(".client.json"))).read_text())
        assert {t["cpu"] for t in client["threads"]} == {client_cpu}
        assert {t["last_cpu"] for t in client["threads"]} == {client_cpu}
    assert "Connections and TCP" in page and f"server on CPU(s) {server_cpu}" in page
    assert "The SOCKMAP loaders&#39; thread only accepts and inserts sockets" in page


def test_a_placement_beyond_the_hosts_cpus_is_refused_before_the_run(tmp_path, no_leftovers):
    n = len(os.sched_getaffinity(0))
    p = tmp_path / "far.yaml"
    p.write_text(f"servers: [naive]\nworkload: {{type: pingpong}}\ncpus: {{server: '0,{n}'}}\n")
    with pytest.raises(PreflightError) as e:
        commands.run(_paths(tmp_path), str(p), log=lambda m: None, provision_deps=False)
    assert str(e.value).splitlines() == [
        "the scenario does not fit these hosts' limits (nothing was run):",
        f"host local: sb-echo-naive is placed on CPU {n} (cpus.server: 0,{n}), the host has {n} CPU(s) "
        f"(0-{n - 1}): change cpus.server"]
    assert not (tmp_path / "results").exists()
