"""This machine's side of the arm64 lab: the error every arm64 step raises, where progress goes, and
the host operations the image build and the guest share: root and host commands, host packages,
binfmt_misc for arm64 programs, and removing directories without crossing into a mount.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

from splicebench.errors import UserError

#: Where progress lines go: one call per line.
Log = Callable[[str], None]

#: Seconds between progress lines while a long step (a build command, the guest's boot) runs.
HEARTBEAT_S = 15.0

#: Host commands the arm64 lab needs -> the Debian package that has them.
HOST_TOOLS = {
    "debootstrap": "debootstrap",
    "qemu-system-aarch64": "qemu-system-arm",
    "qemu-img": "qemu-utils",
    "update-binfmts": "binfmt-support",
    "mkfs.ext4": "e2fsprogs",
    "ssh-keygen": "openssh-client",
}
BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")


class Arm64Error(UserError):
    """A step of building, booting or stopping the arm64 guest failed; the message names it."""

    def __init__(self, step: str, message: str):
        self.step = step
        self.detail = message
        super().__init__(f"arm64 guest: {step}: {message}")


def stderr_log(msg: str) -> None:
    """The default Log: one line to stderr, flushed."""
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# root, commands, packages


def require_root(what: str) -> None:
    if os.geteuid() != 0:
        raise Arm64Error("host tools", f"root is needed to {what} (debootstrap, chroot, mounts)")


def which(tool: str) -> str | None:
    """shutil.which, also looking in the sbin directories (mkfs.ext4 is there)."""
    return shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")


def check_host_tools() -> None:
    """Arm64Error('host tools') naming the packages to install when a HOST_TOOLS command is missing."""
    missing = sorted({pkg for tool, pkg in HOST_TOOLS.items() if not which(tool)})
    if missing:
        raise Arm64Error("host tools", f"missing {', '.join(missing)}: install with "
                         f"`apt-get install {' '.join(missing)} qemu-user-static`")


def run_checked(argv: list[str], step: str) -> None:
    """Run a short host command (never a shell); Arm64Error(step) with its output if it fails."""
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise Arm64Error(step, f"`{shlex.join(argv)}` failed: {(r.stderr or r.stdout).strip()}")


def provision_host(log: Log = stderr_log) -> None:
    """Install the host packages the arm64 lab needs (provision.ARM64_LAB_PACKAGES) when missing."""
    from splicebench.hosts.local import LocalHost
    from splicebench.programs.provision import ARM64_LAB_PACKAGES, ensure

    ensure(LocalHost(), ARM64_LAB_PACKAGES, what="arm64 lab packages", log=log)


# ---------------------------------------------------------------------------------------------
# binfmt


def ensure_binfmt() -> None:
    """arm64 programs run on this host through qemu-user-static (binfmt_misc), needed by debootstrap.

    Mounts binfmt_misc when it is not (it stays mounted: other tools expect it) and enables the
    qemu-aarch64 entry; raises Arm64Error('binfmt') naming what is missing."""
    if not (BINFMT_DIR / "status").exists():
        r = subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT_DIR)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise Arm64Error("binfmt", f"cannot mount binfmt_misc on {BINFMT_DIR}: "
                             f"{r.stderr.strip()} (the kernel needs CONFIG_BINFMT_MISC)")
    entry = BINFMT_DIR / "qemu-aarch64"
    if not _binfmt_enabled(entry):
        r = subprocess.run(["update-binfmts", "--enable", "qemu-aarch64"], capture_output=True,
                           text=True)
        if not _binfmt_enabled(entry):
            raise Arm64Error("binfmt", "no enabled qemu-aarch64 entry in binfmt_misc "
                             f"({(r.stderr or r.stdout).strip() or 'update-binfmts failed'}): "
                             "install qemu-user-static and binfmt-support")
    text = entry.read_text()
    flags = re.search(r"^flags:\s*(\S*)", text, re.M)
    interp = re.search(r"^interpreter\s+(\S+)", text, re.M)
    if not (flags and "F" in flags.group(1)) and interp and not Path(interp.group(1)).exists():
        raise Arm64Error("binfmt", f"the qemu-aarch64 interpreter {interp.group(1)} is missing")


def _binfmt_enabled(entry: Path) -> bool:
    try:
        return entry.read_text().splitlines()[0].strip() == "enabled"
    except (OSError, IndexError):
        return False


# ---------------------------------------------------------------------------------------------
# mounts and trees


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below path (from /proc/self/mounts), deepest first."""
    base = os.path.realpath(path)
    out = []
    with open("/proc/self/mounts") as f:
        for line in f:
            mp = line.split()[1].encode().decode("unicode_escape")  # \040 for a space etc.
            if mp == base or mp.startswith(base + "/"):
                out.append(mp)
    return sorted(out, key=len, reverse=True)


def unmount_all(path: Path) -> None:
    """Unmount everything at or below path (lazily if busy); raise if something stays mounted."""
    for _ in range(3):
        mps = mounts_under(path)
        if not mps:
            return
        for mp in mps:
            if subprocess.run(["umount", mp], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", mp], capture_output=True)
    left = mounts_under(path)
    if left:
        raise Arm64Error("cleanup", f"cannot unmount {', '.join(left)}")


def remove_tree(path: Path) -> None:
    """rm -rf that never crosses into a mount (e.g. a /dev bind mount left in a chroot)."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return
    unmount_all(path)
    subprocess.run(["rm", "-rf", "--one-file-system", "--", str(path)], check=False)
