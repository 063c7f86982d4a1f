"""Invoke tasks for the SSH lab and for inventory hosts: `lab.*` and `hosts.*` (thin wrappers).

Declared with cli/edge.py's `task`, so a UserError ends as its message and exit code.

tasks.py includes them with: ``for sub in tasks_lab.COLLECTIONS: ns.add_collection(sub)``
"""

from __future__ import annotations

import sys

from invoke import Collection, Context, Exit

from splicebench.lab import lifecycle, users
from splicebench.lab import netns as labmod
from splicebench.util.procs import pid_alive
from splicebench.hosts.inventory import load_inventory
from splicebench.cli.edge import task
from splicebench.cli.tasks_arm64 import arm64


def _cfg(prefix: str, subnet: str) -> labmod.LabConfig:
    return labmod.LabConfig(prefix=prefix, subnet=subnet)


@task(help={"hosts": "number of lab hosts, 1-32 (default 2)",
            "subnet": f"private IPv4 /24 for the lab (default {labmod.LabConfig.subnet})",
            "prefix": "name prefix of namespaces and links (default sb-lab)",
            "user": "log in as a non-root user created for the lab, <prefix>-USER (default: root)",
            "sudo": "that user's sudo: nopasswd (default), password (sudo -n fails) or none"})
def up(c: Context, hosts: int = 2, subnet: str = labmod.LabConfig.subnet,
       prefix: str = labmod.LabConfig.prefix, user: str | None = None, sudo: str = "nopasswd") -> None:
    """Create a lab of SSH hosts in network namespaces; print its inventory file (needs root)."""
    lb = lifecycle.up(int(hosts), _cfg(prefix, subnet), users.LabUser(user, sudo) if user else None)
    print(f"{'host':<8} {'address':<15} {'namespace':<12} sshd pid")
    for h in lb.hosts:
        print(f"{h.name:<8} {h.address:<15} {h.namespace:<12} {h.sshd_pid}")
    print(f"login:       {lb.user} (sudo: {lb.sudo})")
    print(f"inventory:   {lb.inventory}\nknown_hosts: {lb.known_hosts}")
    print(f"next: invoke run --scenario lab-2host --hosts {lb.inventory}")


@task(help={"prefix": "name prefix of the lab to remove (default sb-lab)"})
def down(c: Context, prefix: str = labmod.LabConfig.prefix) -> None:
    """Remove the lab: every process in its namespaces, the namespaces, links and its files."""
    removed = lifecycle.down(labmod.LabConfig(prefix=prefix))
    print("\n".join(f"removed {r}" for r in removed) if removed else "no lab to remove")


@task(help={"prefix": "name prefix of the lab (default sb-lab)"})
def status(c: Context, prefix: str = labmod.LabConfig.prefix) -> None:
    """Show the lab's hosts and whether their sshd (or the arm64 host's QEMU) is running."""
    from splicebench.lab import arm64_guest

    cfg = labmod.LabConfig(prefix=prefix)
    lb = labmod.status(cfg)
    guest = arm64_guest.status(cfg.state)
    if lb is None and guest is None:
        print("no lab (create one with: invoke lab.up)")
        return
    for h in lb.hosts if lb else []:
        state = "up" if pid_alive(h.sshd_pid) else "DOWN"
        print(f"{h.name:<8} {h.address:<15} {h.namespace:<12} sshd {h.sshd_pid} {state}")
    if guest is not None:
        state = "up" if arm64_guest.qemu_pids(cfg.state) else "DOWN"
        print(f"{guest.name:<8} {'127.0.0.1:' + str(guest.port):<15} {'(QEMU)':<12} qemu {guest.pid} "
              f"{state} (emulated aarch64)")
    print(f"inventory: {cfg.inventory}")


@task(help={"name": "inventory host whose key to trust",
            "hosts": "inventory file (default: $SPLICEBENCH_HOSTS or "
                     "~/.config/splicebench/hosts.yaml)",
            "yes": "write the key without asking (it is still printed first)"})
def trust(c: Context, name: str, hosts: str | None = None, yes: bool = False) -> None:
    """Fetch a host's SSH key, show its fingerprint, and add it to known_hosts when confirmed."""
    from splicebench.hosts.trust import trust_host

    def confirm(message: str) -> bool:
        print(message)
        if yes:
            return True
        if not sys.stdin.isatty():
            raise Exit("not a terminal: check the fingerprint above, then repeat with --yes")
        return input("Type 'yes' to trust it: ").strip().lower() == "yes"

    inv = load_inventory(hosts)
    result = trust_host(inv.get(name), inv, confirm)
    print({"already": f"{name}: this key is already trusted",
           "added": f"{name}: key added to {inv.known_hosts_file}",
           "declined": f"{name}: nothing written"}[result])


@task(name="list", help={"hosts": "inventory file"})
def list_(c: Context, hosts: str | None = None) -> None:
    """List the inventory's hosts: SSH target, sudo mode, labels."""
    inv = load_inventory(hosts)
    print(f"{'name':<12} {'target':<32} {'sudo':<5} labels")
    print(f"{'local':<12} {'(this machine)':<32} {'-':<5}")
    for h in inv.hosts.values():
        via = f" via {h.jump}" if h.jump else ""
        print(f"{h.name:<12} {h.target + via:<32} {h.sudo:<5} {','.join(h.labels)}")


lab = Collection("lab", up, down, status, arm64)
hosts = Collection("hosts", trust, list_)
COLLECTIONS = (lab, hosts)
