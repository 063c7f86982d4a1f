"""The lab: namespaces with real sshd, created and removed completely (needs root)."""

from __future__ import annotations

import os
import secrets
import subprocess
from pathlib import Path

import pytest

from splicebench.lab import netns as lab
from splicebench.util.procs import pid_alive
from splicebench.hosts.inventory import load_inventory
from splicebench.hosts.ssh import SSHHost

pytestmark = [pytest.mark.privileged]


def make_config() -> lab.LabConfig:
    """A lab with its own names and subnet, beside any lab a user has running."""
    # State in /tmp/<prefix> (removed by lab.down), not in pytest's tmp_path: another pytest
    # session may prune that while this one still runs.
    return lab.LabConfig(prefix="sbt" + secrets.token_hex(2), subnet=lab.free_subnet())


def leftovers(cfg: lab.LabConfig) -> list[str]:
    """Everything of cfg's lab that still exists on this machine."""
    found = [f"netns {n}" for n in lab.netns_list() if n.startswith(cfg.prefix + "-")]
    found += [f"link {n}" for n in lab.link_names() if n.startswith(cfg.prefix + "-")]
    if cfg.state.exists():
        found.append(f"dir {cfg.state}")
    return found


@pytest.fixture
def cfg():
    c = make_config()
    yield c
    lab.down(c)
    assert leftovers(c) == []


def test_up_makes_separate_ssh_hosts(cfg):
    lb = lab.up(3, cfg)
    inv = load_inventory(lb.inventory)
    assert inv.names() == ["local", "lab1", "lab2", "lab3"]
    keys = {line.split()[2] for line in lb.known_hosts.read_text().splitlines()}
    assert len(keys) == 3  # one host key per host
    hosts = [SSHHost(inv.get(h.name), inv) for h in lb.hosts]
    try:
        for h, lh in zip(hosts, lb.hosts):
            assert h.address == lh.address
            out = h.run(["ip", "-4", "-o", "addr", "show", "dev", "eth0"]).stdout
            assert f" {lh.address}/24 " in out
            assert h.run(["uname", "-n"]).stdout == f"{lh.name}\n"  # own host name
            assert lh.sshd_pid in lab.namespace_pids(lh.namespace)
        # each host has its own /tmp
        hosts[0].run(["sh", "-c", "echo one > /tmp/marker"])
        assert hosts[1].run(["cat", "/tmp/marker"], check=False).returncode != 0
        assert not Path("/tmp/marker").exists() or Path("/tmp/marker").read_text() != "one\n"
        # lab hosts reach each other over the bridge
        r = hosts[0].run(["bash", "-c", 'exec 3<>/dev/tcp/"$1"/22 && head -c 4 <&3', "bash",
                          lb.hosts[1].address])
        assert r.stdout == "SSH-"
    finally:
        for h in hosts:
            h.close()
    again = lab.up(3, cfg)
    assert [h.sshd_pid for h in again.hosts] == [h.sshd_pid for h in lb.hosts]


def test_down_removes_namespaces_links_processes_and_files(cfg):
    lb = lab.up(2, cfg)
    inv = load_inventory(lb.inventory)
    h = SSHHost(inv.get("lab2"), inv)
    h.start(["sleep", "300"])  # a program left running on purpose
    h.connect().close()  # the orchestrator goes away without cleaning up
    pids = [p for x in lb.hosts for p in lab.namespace_pids(x.namespace)]
    assert len(pids) >= 3
    removed = lab.down(cfg)
    assert f"netns {cfg.ns(1)}" in removed and f"bridge {cfg.bridge}" in removed
    assert leftovers(cfg) == []
    assert not [p for p in pids if pid_alive(p)]
    assert lab.down(cfg) == []


def test_down_works_without_state_after_a_crash(cfg):
    lb = lab.up(2, cfg)
    pids = [h.sshd_pid for h in lb.hosts]
    subprocess.run(["rm", "-rf", str(cfg.state)], check=True)  # state lost
    assert lab.status(cfg) is None
    lab.down(cfg)
    assert leftovers(cfg) == []
    assert not [p for p in pids if pid_alive(p)]


def test_subnet_in_use_is_refused(cfg):
    lab.up(1, cfg)
    other = lab.LabConfig(prefix="sbt" + secrets.token_hex(2), subnet=cfg.subnet)
    with pytest.raises(lab.LabError, match=f"lab subnet {cfg.subnet} overlaps .* on {cfg.bridge}"):
        lab.up(1, other)
    assert leftovers(other) == []


@pytest.mark.parametrize("kw,msg", [
    ({"prefix": "Bad"}, "lab prefix 'Bad'"),
    ({"prefix": "waytoolong"}, "lab prefix 'waytoolong'"),
    ({"prefix": "x;y"}, "lab prefix 'x;y'"),
    ({"subnet": "8.8.8.0/24"}, "use a private IPv4 /24 or larger"),
    ({"subnet": "10.1.2.0/28"}, "use a private IPv4 /24 or larger"),
])
def test_bad_lab_config_is_refused(kw, msg):
    with pytest.raises(lab.LabError, match=msg.replace("(", r"\(")):
        lab.LabConfig(**kw)


def test_bad_size_is_refused(cfg):
    with pytest.raises(lab.LabError, match="lab size 0: use 1 to 32 hosts"):
        lab.up(0, cfg)


def test_needs_root_message():
    r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                        "python3", "-c", "from splicebench.lab import netns; netns.up(1)"],
                       capture_output=True, text=True, cwd="/",
                       env={**os.environ, "PYTHONPATH": str(Path(lab.__file__).parents[2])})
    assert "the lab needs root" in r.stderr
