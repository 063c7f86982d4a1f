"""Multi-host runs on lab hosts: deploy (built on each host, cached), lab-2host and lab-4host end
to end, and a host that dies in the middle of a sample (needs root and the C sources)."""

from __future__ import annotations

import csv
import json
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from splicebench import scenario
from splicebench.programs import deploy
from splicebench.lab import netns as lab
from splicebench.hosts.inventory import load_inventory
from splicebench.scenario.plan import build_plan
from splicebench.run.runner import Runner
from splicebench.hosts.ssh import SSHHost
from splicebench.run.fleet import for_each_host, open_host

pytestmark = [pytest.mark.privileged, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
SCENARIOS = REPO / "scenarios"


@pytest.fixture(scope="module")
def env():
    """A 4-host lab with the programs deployed on every host."""
    # State in /tmp/<prefix> (removed by lab.down), not in pytest's tmp_path.
    cfg = lab.LabConfig(prefix="sbt" + secrets.token_hex(2), subnet=lab.free_subnet())
    try:
        lb = lab.up(4, cfg)
        inv = load_inventory(lb.inventory)
        hosts = {n: open_host(n, inv) for n in ("lab1", "lab2", "lab3", "lab4")}
        builds = for_each_host(list(hosts.values()),
                               lambda h: deploy.build(h, REPO, log=lambda m: None))
        yield {"lab": lb, "inv": inv, "hosts": hosts, "builds": builds}
        for h in hosts.values():
            h.close()
    finally:
        lab.down(cfg)


def run_scenario(env, text: str | None = None, path: Path | None = None, on_sample=None):
    inv = env["inv"]
    sc = (scenario.load(path, known_hosts=inv.names()) if path is not None
          else scenario.parse(text, "<test>", known_hosts=inv.names()))
    plan = build_plan(sc)
    hosts = {n: env["hosts"][n] for n in plan.hosts()}
    bins = {n: env["builds"][n].dir for n in hosts}
    return Runner(hosts, bins, run_id="test", on_sample=on_sample).run(plan)


def invoke(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=600, stdin=subprocess.DEVNULL)


def test_deploy_builds_on_each_host_then_hits_the_cache(env):
    first = env["builds"]
    assert all(isinstance(b, deploy.Build) for b in first.values()), first
    assert all(b.built for b in first.values())
    r = invoke("deploy", "--hosts", str(env["lab"].inventory))
    assert r.returncode == 0, r.stderr
    rows = [line.split() for line in r.stdout.splitlines()[1:]]
    assert [(row[0], row[1], row[2]) for row in rows] == \
        [(n, "cached", b.hash) for n, b in first.items()]
    for h in env["hosts"].values():  # each host has its own copy (own /tmp)
        assert h.exists(f"{first[h.name].dir}/sb-client")


def test_lab_2host_end_to_end_with_invoke_run(env):
    with tempfile.TemporaryDirectory(prefix="sb-e2e-") as d:
        r = invoke("run", "--scenario", "lab-2host", "--hosts", str(env["lab"].inventory),
                   "--results-dir", f"{d}/results", "--reports-dir", f"{d}/reports")
        assert r.returncode == 0, r.stdout + r.stderr
        (run_dir,) = Path(d, "results").iterdir()
        manifest = json.loads((run_dir / "manifest.json").read_text())
        rows = list(csv.DictReader((run_dir / "samples.csv").open()))
        assert list(Path(d, "reports").glob("*.html"))
    assert manifest["status"] == "complete"
    assert set(manifest["hosts"]) == {"lab1", "lab2"}
    assert manifest["hosts"]["lab2"]["kernel"]
    assert [r["status"] for r in rows] == ["ok"] * 12
    assert {r["server_host"] for r in rows} == {"lab1"}
    assert {r["client_hosts"] for r in rows} == {"lab2"}
    assert {r["server"] for r in rows} == {"naive", "splice", "sockmap"}
    assert {int(float(r["bytes_verified"])) for r in rows} == {2 * 32 * 2**20}


def test_lab_4host_clients_start_together_and_merge(env):
    text = (SCENARIOS / "lab-4host.yaml").read_text()
    text = text.replace("warmup: 1", "warmup: 0").replace("measured: 3", "measured: 1")
    out = run_scenario(env, text=text)
    assert [r["status"] for r in out.rows] == ["ok"] * 3, [r["error"] for r in out.rows]
    for r in out.rows:
        assert r["client_hosts"] == "lab2+lab3+lab4"
        assert r["bytes_verified"] == 3 * 2 * 16 * 2**20


DIES = """
name: lab-dies
servers: [{name: naive}]
workload: {type: pingpong, conns: 1, msg_size: 64, round_trips: 60000}
repetitions: {warmup: 0, measured: 2}
timeout: 60s
placement: {server: lab1, clients: [lab3, lab4]}
"""


def test_crr_latency_under_load_and_perf_over_ssh(env):
    """The new workloads and perf on SSH hosts: crr and latency-under-load byte-exact from lab2 to a
    server on lab1, perf counts from lab1 in every sample (the CPU sampler mounts tracefs
    for itself in the lab host's fresh sysfs), and the profile round's folded stacks
    fetched from lab1.

    The loaded part runs naive and splice: a SOCKMAP echo's bulk stream over the lab's veths meets a
    kernel bug now and then (docs/programs.md, "SOCKMAP over veth: repeated bytes"), which the sample
    reports as it should, and which is not what this test is about."""
    common = ("name: lab-new-workloads\nrepetitions: {warmup: 0, measured: 1}\nprofile: true\n"
              "placement: {server: lab1, clients: [lab2]}\ntimeout: 60s\n")
    raws: dict[str, dict] = {}
    crr = run_scenario(env, common + "servers: [naive, sockmap]\n"
                       "workload: {type: crr, msg_size: 64, transactions: 500, conns: 4}\n",
                       on_sample=lambda s, row, raw: raws.__setitem__(s.id, raw))
    loaded = run_scenario(env, common + "servers: [naive, splice]\n"
                          "workload: {type: latency-under-load, round_trips: 100, bulk_conns: 2}\n")
    assert [r["status"] for r in crr.rows + loaded.rows] == ["ok"] * 8, [r["error"] for r in crr.rows + loaded.rows]
    assert {r["conns_ok"] for r in crr.rows} == {500} and {r["bytes_verified"] for r in crr.rows} == {500 * 64}
    for r in loaded.rows:
        assert r["unloaded_lat_count"] == 100 and r["lat_count"] == 100 and r["bulk_bytes_verified"] > 0
    for r in crr.rows + loaded.rows:
        assert r["perf_server_syscalls"] > 0 and r["perf_host_ctxsw"] > 0 and r["perf_note"] is None, r
    profiles = {sid: raw for sid, raw in raws.items() if sid.endswith("-p1")}
    assert len(profiles) == 2
    for raw in profiles.values():
        assert isinstance(raw["perf.data"], bytes) and raw["perf.data"]
        assert any(line.startswith("sb-echo-") for line in raw["profile.folded"].splitlines())


def test_host_that_dies_mid_run_fails_cleanly(env):
    lb, inv = env["lab"], env["inv"]
    doomed = next(h for h in lb.hosts if h.name == "lab4")

    def killer():
        # As soon as lab4's client runs, kill lab4: its sshd, every process, its namespace.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for pid in lab.namespace_pids(doomed.namespace):
                try:
                    if Path(f"/proc/{pid}/exe").resolve().name == "sb-client":
                        time.sleep(0.5)  # let the runner finish starting it: die mid-sample
                        lab.kill_host(lb, "lab4")
                        return
                except OSError:
                    pass
            time.sleep(0.02)
    t = threading.Thread(target=killer, daemon=True)
    t.start()
    raws = []
    out = run_scenario(env, text=DIES, on_sample=lambda s, row, raw: raws.append(raw))
    t.join(5)
    first, second = out.rows
    assert first["status"] == "failed" and "lab4" in first["error"], first
    # lab3's client finished; its result is kept next to the failure.
    kept = raws[0]["client-0-lab3.json"].replace(" ", "")
    assert '"ok":true' in kept
    # The next sample fails at once on the dead host instead of hanging.
    assert second["status"] == "failed" and "lab4" in second["error"], second
    # Nothing is left running on the hosts that are still there.
    for name in ("lab1", "lab2", "lab3"):
        h = SSHHost(inv.get(name), inv)
        try:
            assert h.tagged_pids() == [], name
        finally:
            h.close()


def test_invoke_clean_removes_planted_leftovers(env):
    """Runs after the others (it drops the build caches)."""
    inv = env["inv"]
    planted = {}
    for name in ("lab1", "lab2"):
        h = SSHHost(inv.get(name), inv)
        b = env["builds"][name]
        h.start(["sleep", "300"])  # any program started by an earlier run
        h.start([b.program("sb-echo-naive"), "--listen", "127.0.0.1:0"])  # a server left behind
        planted[name] = h.tagged_pids()
        h._drop()  # the orchestrator vanished
        assert len(planted[name]) >= 6
    r = invoke("clean", "--hosts", str(env["lab"].inventory), "--only", "lab1,lab2")
    assert r.returncode == 0, r.stdout + r.stderr
    for name in ("lab1", "lab2"):
        assert f"{name}: stopped {len(planted[name])} leftover process(es)" in r.stdout
        h = SSHHost(inv.get(name), inv)
        try:
            assert h.tagged_pids() == []
            assert not h.exists(f"{h.workdir()}/build")
            assert not h.exists(f"{h.workdir()}/procs")
        finally:
            h.close()

