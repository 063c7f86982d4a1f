"""An aarch64 lab host: a Debian arm64 guest under qemu-system-aarch64, fully emulated; `up` is the one
call behind `invoke lab.arm64` (image built or reused, guest booted, joined to the lab, checked).

Why a whole guest: qemu-user runs arm64 programs but answers bpf() with ENOSYS, so the SOCKMAP
server cannot run there; a real arm64 kernel under QEMU can. The guest is emulated (TCG): its
numbers prove that the arm64 path works and say nothing about arm64 hardware speed.

Image (built once, about 5 minutes, as root): ``debootstrap --arch=arm64 --variant=minbase`` from the
host's own apt sources with the build tools, then the kernel installed in the chroot with a small
initramfs (MODULES=list, only the virtio and ext4 modules: the default one takes ~7 minutes to
build under emulation), then ``mkfs.ext4 -d`` and a compressed qcow2. Every image gets its own SSH
host key and client key. It lives in ``${SPLICEBENCH_CACHE:-~/.cache/splicebench}/arm64/<key>/``,
where the key is a hash of everything that decides its content (`Recipe`).

Guest (one per lab): booted on a throw-away qcow2 overlay in ``<lab state>/arm64/``, reachable only
through ``127.0.0.1:PORT -> guest:22``. It joins the lab inventory as host ``arm64`` (labels lab,
arm64, emulated), its host key filed in the lab's known_hosts as ``[127.0.0.1]:PORT``. Clients of
its servers must run on the guest itself: nothing else can reach it. lab.down (lifecycle.py) powers
it off: `poweroff` over SSH, QEMU killed after a bound, the overlay removed.

Where each part lives:
    apt_sources.py        the host's apt sources -> debootstrap's mirror and the guest's sources (pure)
    arm64_image.py        Recipe (its hash names the cache entry), Image, cache_root
    arm64_build.py        ensure_image: the cached image, or one built under a lock and published
    arm64_build_steps.py  the seven build steps and what they write into the guest
    arm64_host.py         Arm64Error; root, host tools and packages, binfmt, mounts, on this machine
    arm64_guest.py        QEMU boot, status, power-off; the guest's inventory entry
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from splicebench.lab.arm64_build import ensure_image
from splicebench.lab.arm64_guest import (SSH_TIMEOUT_S, Guest, add_to_inventory, boot, power_off,
                                         qemu_pids, status)
from splicebench.lab.arm64_host import Arm64Error, Log, provision_host, stderr_log
from splicebench.lab.arm64_image import Image
from splicebench.util.signals import deferred_interrupts


@dataclass
class LabGuest:
    """What `up` did: the running guest, its image (built now or cached), the lab inventory it joined
    and what the guest says `uname -srm` is."""

    guest: Guest
    image: Image
    built: bool
    inventory: Path
    uname: str


def up(state: Path, *, ssh_timeout: float = SSH_TIMEOUT_S, provision: bool = True,
       root: Path | None = None, log: Log = stderr_log) -> LabGuest:
    """Build or reuse the image, boot the guest in the lab at state, add it to the inventory and
    check it over the verified SSH connection. A guest already running is reused.

    provision: install the host packages it needs (provision.ARM64_LAB_PACKAGES) when missing;
    root: the image cache (default `cache_root()`)."""
    if provision:
        provision_host(log)
    img, built = ensure_image(root=root, log=log)
    state = Path(state)
    g = status(state)
    if g is not None and (g.image != img.key or not qemu_pids(state)):
        power_off(state, log=log)
        g = None
    if g is None:
        state.mkdir(parents=True, exist_ok=True, mode=0o700)
        g = boot(img, state, ssh_timeout=ssh_timeout, log=log)
    try:
        inv_path = add_to_inventory(state, g, img)
        uname = _uname(inv_path, g.name)
    except BaseException:
        with deferred_interrupts():
            power_off(state)
        raise
    if not uname.endswith("aarch64"):
        power_off(state)
        raise Arm64Error("boot", f"the guest says `{uname}`, expected an aarch64 machine")
    return LabGuest(g, img, built, inv_path, uname)


def _uname(inventory: Path, name: str) -> str:
    """`uname -srm` of inventory host name, over SSH with the inventory's known_hosts."""
    from splicebench.hosts.inventory import load_inventory
    from splicebench.hosts.ssh import SSHHost

    inv = load_inventory(inventory)
    with SSHHost(inv.get(name), inv) as h:
        return h.run(["uname", "-srm"], timeout=60).stdout.strip()
