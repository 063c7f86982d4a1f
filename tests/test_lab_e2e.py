"""Multi-host runs on lab hosts: deploy (built on each host, cached), lab-2host and lab-4host end
to end, and a host that dies in the middle of a sample (needs root and the C sources)."""

from __future__ import annotations

import secrets
import threading
import time
from pathlib import Path

import pytest

from splicebench import deploy, lab, scenario
from splicebench.inventory import load_inventory
from splicebench.plan import build_plan
from splicebench.runner import Runner
from splicebench.ssh import SSHHost, for_each_host, open_host

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


def test_deploy_builds_on_each_host_then_hits_the_cache(env):
    first = env["builds"]
    assert all(isinstance(b, deploy.Build) for b in first.values()), first
    assert all(b.built for b in first.values())
    again = for_each_host(list(env["hosts"].values()),
                          lambda h: deploy.build(h, REPO, log=lambda m: None))
    assert [b.built for b in again.values()] == [False] * 4
    assert {n: b.dir for n, b in again.items()} == {n: b.dir for n, b in first.items()}
    for h in env["hosts"].values():  # each host has its own copy (own /tmp)
        assert h.exists(f"{again[h.name].dir}/sb-client")


def test_lab_2host_end_to_end(env):
    raw_seen = []
    out = run_scenario(env, path=SCENARIOS / "lab-2host.yaml",
                       on_sample=lambda s, row, raw: raw_seen.append(raw))
    assert out.status == "complete"
    assert [r["status"] for r in out.rows] == ["ok"] * len(out.rows), \
        [r["error"] for r in out.rows]
    assert {r["server_host"] for r in out.rows} == {"lab1"}
    assert {r["client_hosts"] for r in out.rows} == {"lab2"}
    assert {r["server"] for r in out.rows} == {"naive", "splice", "sockmap"}
    assert all(r["bytes_verified"] == 2 * 32 * 2**20 for r in out.rows)
    assert all('"ok":true' in raw["client.json"].replace(" ", "") for raw in raw_seen)


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
