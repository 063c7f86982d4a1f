"""Invoke task `lab.arm64`: an emulated aarch64 host in the lab (thin wrapper over arm64.py).

tasks_lab.py puts it into the `lab` collection.
"""

from __future__ import annotations

from invoke import Context

from splicebench.cli.edge import task
from splicebench.lab import arm64 as arm64mod
from splicebench.lab import arm64_guest
from splicebench.lab import netns as labmod


@task(name="arm64", help={
    "prefix": "name prefix of the lab to add the host to (default sb-lab)",
    "ssh-timeout": f"seconds to wait for the guest's SSH after starting QEMU "
                   f"(default {arm64_guest.SSH_TIMEOUT_S:g})",
    "no-provision": "do not install missing host packages (qemu-system-arm, debootstrap, ...)",
    "off": "power the arm64 host off and take it out of the lab (the rest of the lab stays)",
})
def arm64(c: Context, prefix: str = labmod.LabConfig.prefix, ssh_timeout: int = int(arm64_guest.SSH_TIMEOUT_S),
          no_provision: bool = False, off: bool = False) -> None:
    """Add an emulated aarch64 host to the lab: a Debian arm64 guest under QEMU (needs root).

    The first time builds its image (about 5 minutes; cached in ~/.cache/splicebench/arm64), then
    boots it on a throw-away overlay (20-60 s) and adds host `arm64` to the lab's inventory.
    `invoke lab.down` powers it off."""
    state = labmod.LabConfig(prefix=prefix).state
    if off:
        done = arm64_guest.power_off(state, log=print)
        print("\n".join(done) if done else "no arm64 host in this lab")
        return
    lg = arm64mod.up(state, ssh_timeout=float(ssh_timeout), provision=not no_provision)
    g = lg.guest
    print(f"{'host':<8} {'ssh':<17} {'qemu pid':<9} {'image':<17} kernel")
    print(f"{g.name:<8} 127.0.0.1:{g.port:<7} {g.pid:<9} {lg.image.key:<17} {lg.uname}")
    print(f"image:       {lg.image.dir} ({'built now' if lg.built else 'cached'})")
    print(f"inventory:   {lg.inventory}")
    print("emulated:    every instruction runs under QEMU (TCG): its numbers prove the arm64 path "
          "works, they are not arm64 hardware performance")
    print(f"next: invoke run --scenario lab-multiarch --hosts {lg.inventory}")
