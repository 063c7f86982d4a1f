"""A scenario's sysctls on lab hosts (logged in as a user with sudo): set for the run, recorded, and always put back (after a normal
run, Ctrl-C, a SIGKILLed orchestrator, and through `invoke clean` when the guard died too); bad names
and values refused before any sample runs (needs root: real sshd in network namespaces)."""

from __future__ import annotations

import json
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from splicebench.hosts.inventory import load_inventory
from splicebench.lab import netns as lab
from splicebench.lab import users
from splicebench.run.fleet import open_hosts
from splicebench.run.host_settings import HostSettings
from splicebench.hosts import sysctls
from splicebench.scenario import parse
from splicebench.scenario.plan import build_plan

pytestmark = [pytest.mark.privileged, pytest.mark.lab]

REPO = Path(__file__).resolve().parents[1]
RMEM = "net.ipv4.tcp_rmem"
SWEEP = ["4096 65536 1048576", "4096 131072 2097152"]


def scenario(rounds: int, sweep=SWEEP) -> str:
    values = ", ".join(f"'{v}'" for v in sweep)
    return (f"name: sysctl-test\nservers: [naive]\n"
            f"workload: {{type: pingpong, conns: 1, msg_size: 64, round_trips: {rounds}}}\n"
            f"repetitions: {{warmup: 0, measured: 1}}\ntimeout: 60s\n"
            f"sysctls: {{net.core.somaxconn: 1000}}\n"
            f"matrix: {{{RMEM}: [{values}]}}\nplacement: {{server: lab1, clients: [lab2]}}\n")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    cfg = lab.LabConfig(prefix="sbt" + secrets.token_hex(2), subnet=lab.free_subnet())
    d = tmp_path_factory.mktemp("sysctl")
    try:
        # A non-root login with password-less sudo, as on most remote hosts: every change through sudo.
        lb = lab.up(2, cfg, user=users.LabUser("bench"))
        yield {"lab": lb, "dir": d}
    finally:
        lab.down(cfg)


def sysctl(env, host: int, name: str) -> str:
    ns = env["lab"].config.ns(host)
    path = "/proc/sys/" + name.replace(".", "/")
    return " ".join(subprocess.run(["ip", "netns", "exec", ns, "cat", path], capture_output=True,
                                   text=True, check=True).stdout.split())


def state(env) -> dict:
    return {(h, n): sysctl(env, h, n) for h in (1, 2) for n in (RMEM, "net.core.somaxconn")}


def guards(env, shells_only: bool = False) -> list[int]:
    """PIDs of sysctl guards in the lab's namespaces: with sudo and the login shell that started them,
    or only the guard shells (their $0 is the guard's name)."""
    out = []
    for h in env["lab"].hosts:
        for pid in lab.namespace_pids(h.namespace):
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                if (b"sb-sysctl-guard" in argv) if shells_only else any(b"sb-sysctl-guard" in a for a in argv):
                    out.append(pid)
            except OSError:
                pass
    return out


def run_argv(env, text: str, name: str) -> list[str]:
    f = env["dir"] / f"{name}.yaml"
    f.write_text(text)
    return [sys.executable, "-m", "invoke", "run", "--scenario", str(f), "--hosts", str(env["lab"].inventory),
            "--results-dir", str(env["dir"] / name / "results"), "--reports-dir", str(env["dir"] / name / "reports")]


def invoke(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=600, stdin=subprocess.DEVNULL)


def start_and_wait_for_sweep(env, name: str) -> subprocess.Popen:
    """An `invoke run` started, returned once its first sample runs with the first swept value."""
    p = subprocess.Popen(run_argv(env, scenario(5_000_000), name), cwd=REPO, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        clients = [pid for pid in lab.namespace_pids(env["lab"].hosts[1].namespace)
                   if Path(f"/proc/{pid}/exe").exists() and _exe(pid) == "sb-client"]
        if clients and sysctl(env, 1, RMEM) == SWEEP[0]:
            return p
        assert p.poll() is None, p.stdout.read()
        time.sleep(0.05)
    p.kill()
    raise AssertionError("the first sample never started")


def _exe(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/exe").resolve().name
    except OSError:
        return ""


def wait_until(cond, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.1)
    return cond()


def test_sweep_is_set_recorded_and_restored(env):
    before = state(env)
    assert before[(1, RMEM)] not in SWEEP and before[(1, "net.core.somaxconn")] != "1000"
    r = subprocess.run(run_argv(env, scenario(200), "normal"), cwd=REPO, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert state(env) == before
    (run_dir,) = (env["dir"] / "normal" / "results").iterdir()
    m = json.loads((run_dir / "manifest.json").read_text())
    for h in ("lab1", "lab2"):  # each lab host is a network namespace of its own: its own settings
        assert m["sysctls"][h][RMEM] == {"found": before[(1, RMEM)], "set": SWEEP, "owner": h,
                                         "scope": "network namespace"}
        assert m["sysctls"][h]["net.core.somaxconn"]["set"] == ["1000"]
    assert m["scenario"]["matrix"] == {RMEM: SWEEP}
    assert f"host lab1: restored /proc/sys/net/ipv4/tcp_rmem {before[(1, RMEM)]}" in r.stderr
    assert guards(env) == []


BAD = {  # name: (value, the problem on every host)
    "net.ipv4.no_such_setting": ("1", ": /proc/sys/net/ipv4/no_such_setting does not exist there (unknown setting, "
                                      "or not in this kernel or network namespace)"),
    "net.core.somaxconn": ("many", ": the kernel refused 'many' (Invalid argument)"),
    "net.ipv4.tcp_congestion_control": ("no-such-cc", ": the kernel refused 'no-such-cc' (No such file or "
                                                      "directory)"),
    "net.ipv4.tcp_notsent_lowat": ("1 2", ": the kernel holds '1' after '1 2' was written (write it as the kernel "
                                          "shows it)"),
    "net.core.rmem_max": ("1048576", " is readonly and cannot be set"),  # the initial namespace's only
}


def test_bad_names_and_values_are_refused_before_any_sample(env):
    before = state(env) | {(h, n): sysctl(env, h, n) for h in (1, 2) for n in BAD if n != "net.ipv4.no_such_setting"}
    settings = ", ".join(f"{n}: '{v}'" for n, (v, _) in BAD.items())
    text = scenario(200).replace("sysctls: {net.core.somaxconn: 1000}\n", "").replace(
        "matrix:", f"sysctls: {{{settings}}}\nmatrix:")
    r = subprocess.run(run_argv(env, text, "bad"), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 1, r.stdout + r.stderr
    lines = r.stderr.splitlines()
    i = lines.index("the scenario's sysctls cannot be set on these hosts (nothing was run):")
    assert sorted(lines[i + 1:]) == sorted(f"host {h}: sysctl {n}{p}" for h in ("lab1", "lab2")
                                           for n, (_, p) in BAD.items()), r.stderr
    assert not (env["dir"] / "bad" / "results").exists()  # no sample ran, no run directory
    assert {k: sysctl(env, *k) for k in before} == before  # the values tried were put back
    assert guards(env) == []


def test_ctrl_c_restores(env):
    before = state(env)
    p = start_and_wait_for_sweep(env, "ctrlc")
    assert state(env) != before
    p.send_signal(signal.SIGINT)
    out, _ = p.communicate(timeout=120)
    assert p.returncode == 130, out
    assert state(env) == before
    assert guards(env) == []


def test_sigkilled_orchestrator_the_guards_restore(env):
    before = state(env)
    p = start_and_wait_for_sweep(env, "kill")
    p.kill()
    p.wait()
    # sshd sees the connection close and ends the guards' input: they put the values back.
    assert wait_until(lambda: state(env) == before), state(env)
    assert wait_until(lambda: guards(env) == [])
    r = invoke("clean", "--hosts", str(env["lab"].inventory))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "restored" not in r.stdout  # nothing left to restore


def test_sigkilled_orchestrator_and_guards_then_invoke_clean_restores(env):
    before = state(env)
    p = start_and_wait_for_sweep(env, "killall")
    changed = state(env)
    # The guard shells die first (a dying sudo or login shell would end their input: they would restore).
    found = guards(env, shells_only=True)
    assert len(found) == 2
    for pid in found:  # only the journals remain
        subprocess.run(["kill", "-KILL", str(pid)])
    assert wait_until(lambda: guards(env) == []), (found, guards(env))
    assert state(env) == changed
    p.kill()
    p.wait()
    assert wait_until(lambda: guards(env) == [])
    assert state(env)[(1, RMEM)] == SWEEP[0]  # left changed
    r = invoke("clean", "--hosts", str(env["lab"].inventory))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"lab1: restored /proc/sys/net/ipv4/tcp_rmem {before[(1, RMEM)]}" in r.stdout
    assert f"lab2: restored /proc/sys/net/core/somaxconn {before[(2, 'net.core.somaxconn')]}" in r.stdout
    assert state(env) == before
    r = invoke("clean", "--hosts", str(env["lab"].inventory))
    assert "restored" not in r.stdout  # the journals are gone


def test_a_setting_is_owned_once_per_kernel_or_network_namespace(env):
    # kernel.* is one setting for the whole machine (this one and its lab hosts share a kernel); net.* is
    # one per network namespace. Nothing is written here: only who would set what.
    inv = load_inventory(env["lab"].inventory)
    sc = parse("name: own\nservers: [naive]\nworkload: {type: stream}\n"
               "sysctls: {kernel.printk_ratelimit: 5, net.ipv4.tcp_rmem: '4096 131072 6291456'}\n"
               "placement: {server: lab1, clients: [lab2, local]}\n", "<t>", known_hosts=inv.names())
    plan = build_plan(sc)
    hosts = open_hosts(plan.hosts(), inv)
    try:
        s = HostSettings(plan, hosts, log=lambda m: None)
        ids = {n: sysctls.identity(h) for n, h in hosts.items()}
        assert s._assign(ids) == []
    finally:
        for h in hosts.values():
            h.close()
    assert {n: s.owner[(n, "kernel.printk_ratelimit")] for n in hosts} == {"lab1": "lab1", "lab2": "lab1",
                                                                           "local": "lab1"}
    assert {n: s.owner[(n, RMEM)] for n in hosts} == {"lab1": "lab1", "lab2": "lab2", "local": "local"}
