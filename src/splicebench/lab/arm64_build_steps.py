"""The seven steps that build the arm64 image in a temp directory (`Builder`), each failure an
Arm64Error naming its step, with what the guest gets written into its root file system.

host tools -> binfmt -> apt sources -> debootstrap (first stage native, second stage emulated) ->
guest setup (keys, sshd, network, masked units, initramfs and apt configuration) -> kernel (in the
chroot, a small initramfs: MODULES=list) -> disk image (``mkfs.ext4 -d``, then a compressed qcow2).
The temp directory, the lock and publishing the result are arm64_build's.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

from splicebench.lab.apt_sources import render_deb822
from splicebench.lab.arm64_host import (HEARTBEAT_S, Arm64Error, Log, check_host_tools, ensure_binfmt,
                                        mounts_under, remove_tree, run_checked, unmount_all)
from splicebench.lab.arm64_image import Recipe
from splicebench.util.files import atomic_write_text
from splicebench.util.sshkeys import keygen

STEPS = ("host tools", "binfmt", "apt sources", "debootstrap", "guest setup", "kernel", "disk image")

# Jobs that slow the boot or wake up during measurements, and consoles nobody logs in on.
GUEST_MASKED_UNITS = ("e2scrub_reap.service", "e2scrub_all.timer", "fstrim.timer",
                      "apt-daily.timer", "apt-daily-upgrade.timer", "getty-static.service",
                      "getty@tty1.service", "serial-getty@ttyAMA0.service",
                      "systemd-networkd.service", "systemd-networkd-wait-online.service")

# Bounds (seconds). Generous: the machine may be busy and everything arm64 runs emulated.
DEBOOTSTRAP_TIMEOUT_S = 1800
KERNEL_TIMEOUT_S = 1200
DISK_TIMEOUT_S = 600


class Builder:
    """The build steps, sharing the temp dir: rootfs/, then disk.raw, then the cache files.

    Commands' output goes to tmp/build.log; `facts` collects what recipe.json records besides the
    recipe (the guest's kernel version, the base disk's size)."""

    def __init__(self, recipe: Recipe, tmp: Path, log: Log):
        self.r = recipe
        self.tmp = tmp
        self.rootfs = tmp / "rootfs"
        self.build_log = tmp / "build.log"
        self.log = log
        self.facts: dict = {}

    def run_steps(self) -> None:
        """Every step in order, each announced with what it does and how long it took."""
        fns = (self.host_tools, self.binfmt, self.sources, self.debootstrap, self.guest_setup,
               self.kernel, self.disk)
        n = len(STEPS)
        for i, (name, fn) in enumerate(zip(STEPS, fns), start=1):
            self.log(f"arm64 image [{i}/{n}] {name}: {self.about(name)}")
            t = time.monotonic()
            with _step_errors(name):
                fn()
            self.log(f"arm64 image [{i}/{n}] {name}: done in {time.monotonic() - t:.0f} s")

    def about(self, step: str) -> str:
        return {
            "host tools": "debootstrap, qemu-system-aarch64, qemu-img, mkfs.ext4",
            "binfmt": "arm64 programs run through qemu-user-static during the build",
            "apt sources": f"{self.r.mirror.uri} {self.r.codename} (from this host's apt sources)",
            "debootstrap": f"Debian {self.r.codename} arm64 minbase with {len(self.r.packages)} "
                           f"packages: download, then unpack and configure under emulation "
                           f"(3-10 minutes)",
            "guest setup": "SSH host key, root login by key only, network, initramfs modules",
            "kernel": f"{self.r.kernel} with a small initramfs (about 1-2 minutes)",
            "disk image": f"ext4 {self.r.disk_gib} GiB -> compressed qcow2",
        }[step]

    def run(self, step: str, argv: list[str], timeout: float, **kw) -> str:
        return _run_logged(argv, step=step, log_file=self.build_log, progress=self.log,
                           timeout=timeout, **kw)

    def unmount(self) -> None:
        """Whatever is still mounted in the root file system (the chroot's /proc, /sys, /dev)."""
        if self.rootfs.exists():
            unmount_all(self.rootfs)

    # --- the steps -------------------------------------------------------------------------------

    def host_tools(self) -> None:
        check_host_tools()

    def binfmt(self) -> None:
        ensure_binfmt()

    def sources(self) -> None:
        for s in self.r.sources:
            if s.signed_by and not Path(s.signed_by).is_file():
                raise Arm64Error("apt sources", f"keyring {s.signed_by} of {s.uri} is missing")

    def debootstrap(self) -> None:
        m = self.r.mirror
        argv = ["debootstrap", "--foreign", "--arch=arm64", "--variant=minbase",
                "--include=" + ",".join(self.r.packages), "--components=main"]
        if m.signed_by:
            argv.append(f"--keyring={m.signed_by}")
        argv += [self.r.codename, str(self.rootfs), m.uri]  # validated: none starts with "-"
        self.log("arm64 image: debootstrap: first stage (download and extract, native)")
        self.run("debootstrap", argv, DEBOOTSTRAP_TIMEOUT_S, summarize=debootstrap_summary)
        # dpkg without an fsync per file: nothing here survives a crash anyway (removed at kernel).
        _write(self.rootfs / "etc/dpkg/dpkg.cfg.d/splicebench-unsafe-io", "force-unsafe-io\n")
        self.log("arm64 image: debootstrap: second stage (unpack and configure, emulated)")
        try:
            self.run("debootstrap", ["chroot", str(self.rootfs), "/debootstrap/debootstrap",
                                     "--second-stage"], DEBOOTSTRAP_TIMEOUT_S, env=_CHROOT_ENV,
                     summarize=debootstrap_summary)
        finally:
            self.unmount()  # debootstrap unmounts what it mounted when it succeeds; be sure

    def guest_setup(self) -> None:
        self._ssh()
        self._identity()
        self._units()
        # The kernel package's initramfs: only what this virtual machine needs (see arm64.py).
        _write(self.rootfs / "etc/initramfs-tools/conf.d/splicebench", "MODULES=list\nCOMPRESS=gzip\n")
        _write(self.rootfs / "etc/initramfs-tools/modules", "\n".join(self.r.initramfs_modules) + "\n")
        self._apt_sources()

    def kernel(self) -> None:
        r = self.rootfs
        _write(r / "usr/sbin/policy-rc.d", "#!/bin/sh\nexit 101\n", 0o755)  # start no services
        self._mount_chroot()
        try:
            self.run("kernel", ["chroot", str(r), "/bin/sh", "-c", _KERNEL_SCRIPT, "sb-kernel",
                                self.r.kernel], KERNEL_TIMEOUT_S, env=_CHROOT_ENV)
            versions = self.run("kernel", ["chroot", str(r), "dpkg-query", "-W",
                                           "-f=${Package} ${Version}\\n"], 120, quiet=True)
        finally:
            self.unmount()
        (r / "usr/sbin/policy-rc.d").unlink()
        (r / "etc/dpkg/dpkg.cfg.d/splicebench-unsafe-io").unlink(missing_ok=True)
        (self.tmp / "packages.txt").write_text(versions)
        kernels = sorted((r / "boot").glob("vmlinuz-*"))
        initrds = sorted((r / "boot").glob("initrd.img-*"))
        if len(kernels) != 1 or len(initrds) != 1:
            raise Arm64Error("kernel", f"expected one kernel and one initrd in /boot, found "
                             f"{[p.name for p in kernels + initrds]}")
        shutil.copyfile(kernels[0], self.tmp / "vmlinuz")
        shutil.copyfile(initrds[0], self.tmp / "initrd.img")
        self.facts["guest_kernel"] = kernels[0].name.removeprefix("vmlinuz-")

    def disk(self) -> None:
        raw = self.tmp / "disk.raw"
        with open(raw, "wb") as f:
            f.truncate(self.r.disk_gib << 30)
        self.run("disk image", ["mkfs.ext4", "-q", "-F", "-L", "sb-arm64", "-d", str(self.rootfs),
                                str(raw)], DISK_TIMEOUT_S)
        remove_tree(self.rootfs)
        self.run("disk image", ["qemu-img", "convert", "-f", "raw", "-O", "qcow2", "-c", "-o",
                                "compression_type=zstd", "-m", "4", "-W", str(raw),
                                str(self.tmp / "base.qcow2")], DISK_TIMEOUT_S)
        raw.unlink()
        self.facts["base_bytes"] = (self.tmp / "base.qcow2").stat().st_size

    # --- guest setup, part by part -----------------------------------------------------------------

    def _ssh(self) -> None:
        """A new host key (only its public half stays in the cache) and client key; sshd for root
        by key only."""
        r = self.rootfs
        keygen(self.tmp / "ssh_host_ed25519_key", "splicebench-arm64-hostkey")
        keygen(self.tmp / "id_ed25519", "splicebench-arm64-client")
        for old in (r / "etc/ssh").glob("ssh_host_*"):
            old.unlink()
        shutil.copyfile(self.tmp / "ssh_host_ed25519_key", r / "etc/ssh/ssh_host_ed25519_key")
        os.chmod(r / "etc/ssh/ssh_host_ed25519_key", 0o600)
        shutil.copyfile(self.tmp / "ssh_host_ed25519_key.pub",
                        r / "etc/ssh/ssh_host_ed25519_key.pub")
        (self.tmp / "ssh_host_ed25519_key").unlink()  # only the guest needs the private key
        _write(r / "etc/ssh/sshd_config.d/splicebench.conf", _GUEST_SSHD, 0o644)
        (r / "root/.ssh").mkdir(mode=0o700, exist_ok=True)
        _write(r / "root/.ssh/authorized_keys", (self.tmp / "id_ed25519.pub").read_text(), 0o600)

    def _identity(self) -> None:
        """Host name, hosts, fstab, and an empty machine-id (made at first boot)."""
        r = self.rootfs
        _write(r / "etc/hostname", "sb-arm64\n")
        _write(r / "etc/hosts", "127.0.0.1\tlocalhost\n127.0.1.1\tsb-arm64\n::1\tlocalhost\n")
        _write(r / "etc/fstab", "/dev/vda / ext4 rw,relatime 0 1\n")
        _write(r / "etc/machine-id", "")

    def _units(self) -> None:
        """The network comes up before ssh.service without waiting for udev (networkd would);
        GUEST_MASKED_UNITS never run."""
        r = self.rootfs
        _write(r / "etc/systemd/system/sb-net.service", _GUEST_NETWORK_UNIT)
        wants = r / "etc/systemd/system/multi-user.target.wants"
        wants.mkdir(parents=True, exist_ok=True)
        for unit, target in (("sb-net.service", "/etc/systemd/system/sb-net.service"),
                             ("ssh.service", "/lib/systemd/system/ssh.service")):
            link = wants / unit
            if not link.exists() and not link.is_symlink():
                link.symlink_to(target)
        for unit in GUEST_MASKED_UNITS:
            link = r / "etc/systemd/system" / unit
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to("/dev/null")

    def _apt_sources(self) -> None:
        """The build host's sources for this release, and the keyrings they name if the guest lacks them."""
        r = self.rootfs
        _write(r / "etc/apt/sources.list", "")
        _write(r / "etc/apt/sources.list.d/debian.sources", render_deb822(self.r.sources))
        for s in self.r.sources:
            if s.signed_by and not (r / s.signed_by.lstrip("/")).exists():
                (r / s.signed_by.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(s.signed_by, r / s.signed_by.lstrip("/"))

    def _mount_chroot(self) -> None:
        r = self.rootfs
        for fs, target in (("proc", "proc"), ("sysfs", "sys")):
            if not mounts_under(r / target):
                run_checked(["mount", "-t", fs, f"sb-{fs}", str(r / target)], "kernel")
        if not _is_char_device(r / "dev/null"):  # debootstrap made no device nodes here
            run_checked(["mount", "--bind", "/dev", str(r / "dev")], "kernel")


_GUEST_SSHD = """\
# splicebench arm64 lab guest: root login by key only, one host key (made when the image was built)
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
HostKey /etc/ssh/ssh_host_ed25519_key
UseDNS no
MaxSessions 64
MaxStartups 64:30:128
ClientAliveInterval 5
ClientAliveCountMax 6
"""

# QEMU user-mode networking: the guest is 10.0.2.15 behind a NAT that (restrict=on) lets nothing
# out; the forwarded SSH port arrives there. eth0 exists early (virtio_net is in the initramfs) and
# keeps its name (net.ifnames=0 on the kernel command line). No route: there is nowhere to go.
_GUEST_NETWORK_UNIT = """\
[Unit]
Description=splicebench guest network (QEMU user-mode NAT, SSH port forwarded from the host)
DefaultDependencies=no
After=systemd-remount-fs.service
Before=network.target ssh.service
Wants=network.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/sbin/ip link set lo up
ExecStart=/sbin/ip addr add 10.0.2.15/24 dev eth0
ExecStart=/sbin/ip link set eth0 up

[Install]
WantedBy=multi-user.target
"""

_CHROOT_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive",
               "LC_ALL": "C", "HOME": "/root"}

# Inside the chroot: the kernel from the guest's sources, keeping our initramfs configuration
# (confold), then no package lists (the guest has no network to use them).
_KERNEL_SCRIPT = """set -e
apt-get -q -o Acquire::Retries=3 update
apt-get -q -y --no-install-recommends -o Dpkg::Options::=--force-confdef \
  -o Dpkg::Options::=--force-confold install "$@"
apt-get clean
rm -rf /var/lib/apt/lists/*
"""


def debootstrap_summary(lines: list[str]) -> str:
    """'configuring (120 of 160 packages done)' from debootstrap's I: lines so far."""
    got = {"Retrieving": 0, "Validating": 0, "Extracting": 0, "Unpacking": 0, "Configuring": 0}
    last = ""
    for line in lines:
        m = re.match(r"^I: (\w+) ", line)
        if m and m.group(1) in got:
            got[m.group(1)] += 1
            last = m.group(1)
    if not last:
        return lines[-1][:80] if lines else "starting"
    return f"{last.lower()} ({got[last]} packages so far)"


# ---------------------------------------------------------------------------------------------
# helpers


def _run_logged(argv: list[str], *, step: str, log_file: Path, progress: Log, timeout: float,
                env: dict | None = None, summarize: Callable[[list[str]], str] | None = None,
                quiet: bool = False) -> str:
    """Run argv (never a shell) in its own process group, output appended to log_file; a progress
    line every HEARTBEAT_S. Returns stdout+stderr; Arm64Error(step) with the last lines if it fails,
    times out, or is interrupted (then its whole group is killed)."""
    lines: list[str] = []
    with open(log_file, "ab") as lf:
        lf.write(f"$ {shlex.join(argv)}\n".encode())
        lf.flush()
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, env=env, start_new_session=True)

        def reader():
            for raw in p.stdout:
                lf.write(raw)
                lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
        t = threading.Thread(target=reader, daemon=True)
        t.start()
        t0 = time.monotonic()
        try:
            while True:
                try:
                    p.wait(timeout=HEARTBEAT_S)
                    break
                except subprocess.TimeoutExpired:
                    elapsed = time.monotonic() - t0
                    if elapsed > timeout:
                        raise Arm64Error(step, f"`{argv[0]}` did not finish within {timeout:.0f} s;"
                                         f" last output:\n" + "\n".join(lines[-10:])) from None
                    if not quiet:
                        what = summarize(lines) if summarize else (lines[-1][:80] if lines else "")
                        progress(f"arm64 image: {step}: {elapsed:.0f} s" + (f", {what}" if what
                                                                            else ""))
        finally:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait()
            t.join(5)
    if p.returncode != 0:
        tail = "\n".join(ln for ln in lines[-15:] if ln.strip())
        raise Arm64Error(step, f"`{shlex.join(argv[:3])} ...` exited with code {p.returncode}:\n"
                         f"{tail}")
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def _step_errors(name: str) -> Iterator[None]:
    """Errors of a step's commands and files as Arm64Error(name)."""
    try:
        yield
    except Arm64Error:
        raise
    except subprocess.TimeoutExpired as e:
        raise Arm64Error(name, f"`{e.cmd}` timed out") from None
    except subprocess.CalledProcessError as e:
        out = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        raise Arm64Error(name, f"`{shlex.join(map(str, e.cmd))}` exited with code {e.returncode}: "
                         f"{out.strip()}") from None
    except OSError as e:
        raise Arm64Error(name, str(e)) from None


def _is_char_device(p: Path) -> bool:
    try:
        return stat.S_ISCHR(os.lstat(p).st_mode)
    except OSError:
        return False


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    """A file of the guest's root file system (a symbolic link there is replaced, not followed)."""
    atomic_write_text(path, text, mode)
