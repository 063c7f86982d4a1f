"""An aarch64 lab host: a Debian arm64 guest under qemu-system-aarch64, fully emulated (I/O).

Why a whole guest: qemu-user runs arm64 programs but answers bpf() with ENOSYS, so the SOCKMAP
server cannot run there; a real arm64 kernel under QEMU can. The guest is emulated (TCG): its
numbers prove that the arm64 path works and say nothing about arm64 hardware speed.

Image (built once, about 5 minutes, as root): ``debootstrap --arch=arm64 --variant=minbase`` from the
host's own apt sources with the build tools, then the kernel installed in the chroot with a small
initramfs (MODULES=list, only the virtio and ext4 modules: the default one takes ~7 minutes to
build under emulation), then ``mkfs.ext4 -d`` and a compressed qcow2. Every image gets its own SSH
host key and client key. It lives in ``${SPLICEBENCH_CACHE:-~/.cache/splicebench}/arm64/<key>/``,
where the key is a hash of everything that decides its content (`Recipe`). It is built in a temp
directory next to it and renamed when complete, so a failed or interrupted build leaves no partial
image and no mounts; a lock file makes a second build of the same recipe wait for the first.

Guest (one per lab): booted on a throw-away qcow2 overlay in ``<lab state>/arm64/``, QEMU
daemonized, user-mode network with ``restrict=on`` (the guest reaches nothing) and one forwarded port
``127.0.0.1:PORT -> guest:22``. It joins the lab inventory as host ``arm64`` (labels lab, arm64,
emulated), its host key filed in the lab's known_hosts as ``[127.0.0.1]:PORT``. Clients of its
servers must run on the guest itself: nothing else can reach it. `power_off` (called by lab.down)
asks the guest to power off over SSH, kills QEMU after a bound and removes the overlay; it finds
QEMU by its command line, so it works from another process and after a crash as well.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

import yaml

from splicebench.errors import HostError, UserError
from splicebench.util.files import atomic_write_text, utc_now_iso
from splicebench.util.procs import pid_alive
from splicebench.util.signals import deferred_interrupts, interrupt_on_terminate
from splicebench.util.sshkeys import keygen

Log = Callable[[str], None]

#: Bump when the build steps change in a way the recipe fields do not show.
#: 2: dpkg unsafe-io while building, own network unit instead of networkd, boot-time jobs masked.
RECIPE_VERSION = 2
GUEST_NAME = "arm64"
GUEST_LABELS = ("lab", "arm64", "emulated")
GUEST_WORKDIR = "/var/tmp/splicebench"
# initramfs-tools comes with the base system so that its configuration is in place (and its
# triggers settled) before the kernel arrives: the initramfs is then built once, not twice.
GUEST_PACKAGES = ("systemd-sysv", "openssh-server", "gcc", "make", "clang", "llvm", "libbpf-dev",
                  "libelf-dev", "zlib1g-dev", "bpftool", "python3", "iproute2", "procps",
                  "initramfs-tools")
# Jobs that slow the boot or wake up during measurements, and consoles nobody logs in on.
GUEST_MASKED_UNITS = ("e2scrub_reap.service", "e2scrub_all.timer", "fstrim.timer",
                      "apt-daily.timer", "apt-daily-upgrade.timer", "getty-static.service",
                      "getty@tty1.service", "serial-getty@ttyAMA0.service",
                      "systemd-networkd.service", "systemd-networkd-wait-online.service")
KERNEL_PACKAGE = "linux-image-arm64"
INITRAMFS_MODULES = ("virtio_pci", "virtio_blk", "virtio_net", "ext4")
DISK_SIZE_GIB = 8

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

# Bounds (seconds). Generous: the machine may be busy and everything arm64 runs emulated.
DEBOOTSTRAP_TIMEOUT_S = 1800
KERNEL_TIMEOUT_S = 1200
DISK_TIMEOUT_S = 600
SSH_TIMEOUT_S = 180.0
POWEROFF_TIMEOUT_S = 30.0
HEARTBEAT_S = 15.0

STEPS = ("host tools", "binfmt", "apt sources", "debootstrap", "guest setup", "kernel", "disk image")


class Arm64Error(UserError):
    """A step of building, booting or stopping the arm64 guest failed; the message names it."""

    def __init__(self, step: str, message: str):
        self.step = step
        self.detail = message
        super().__init__(f"arm64 guest: {step}: {message}")


def _stderr_log(msg: str) -> None:
    import sys

    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# apt sources (pure)


@dataclass(frozen=True)
class AptSource:
    """One 'deb' source: a URI, one suite, its components and its keyring file if named."""

    uri: str
    suite: str
    components: tuple[str, ...]
    signed_by: str | None = None


URI_RE = re.compile(r"^(https?://[A-Za-z0-9._~:@%+-]+(/[A-Za-z0-9._~:@%+/-]*)?|file:/[A-Za-z0-9._~:@%+/-]*)$")


def parse_sources_list(text: str) -> list[AptSource]:
    """One-line format (sources.list): ``deb [opts] URI SUITE COMPONENT...``; deb-src skipped."""
    out: list[AptSource] = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        words = line.split()
        if not words or words[0] != "deb":
            continue
        opts: dict[str, str] = {}
        words = words[1:]
        if words and words[0].startswith("["):
            raw = []
            while words:
                w = words.pop(0)
                raw.append(w)
                if w.endswith("]"):
                    break
            for kv in " ".join(raw).strip("[]").split():
                k, _, v = kv.partition("=")
                opts[k] = v
        if len(words) < 2 or not _arch_ok(opts.get("arch")):
            continue
        out.append(AptSource(words[0], words[1], tuple(words[2:]), opts.get("signed-by")))
    return out


def parse_deb822_sources(text: str) -> list[AptSource]:
    """deb822 format (*.sources): paragraphs of Types/URIs/Suites/Components/Signed-By fields."""
    out: list[AptSource] = []
    for para in _deb822_paragraphs(text):
        if "deb" not in para.get("types", "").split():
            continue
        if para.get("enabled", "yes").strip().lower() == "no":
            continue
        if not _arch_ok(para.get("architectures")):
            continue
        signed = para.get("signed-by", "").strip()
        # An inline key block has several lines; only a file name is kept.
        signed_by = signed if signed and "\n" not in signed and signed.startswith("/") else None
        for uri in para.get("uris", "").split():
            for suite in para.get("suites", "").split():
                out.append(AptSource(uri, suite, tuple(para.get("components", "").split()),
                                     signed_by))
    return out


def _deb822_paragraphs(text: str) -> list[dict[str, str]]:
    paras: list[dict[str, str]] = []
    cur: dict[str, str] = {}
    key = None
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        if not line.strip():
            if cur:
                paras.append(cur)
            cur, key = {}, None
            continue
        if line[0] in " \t" and key is not None:
            cur[key] += "\n" + line.strip()
            continue
        k, sep, v = line.partition(":")
        if sep:
            key = k.strip().lower()
            cur[key] = v.strip()
    if cur:
        paras.append(cur)
    return paras


def _arch_ok(archs: str | None) -> bool:
    """A source restricted to some architectures serves arm64 only if it lists it."""
    if not archs:
        return True
    return "arm64" in archs.replace(",", " ").split()


def host_apt_sources(etc: Path = Path("/etc/apt")) -> list[AptSource]:
    """Every 'deb' source of this host (sources.list, sources.list.d/*.list and *.sources)."""
    out: list[AptSource] = []
    main = etc / "sources.list"
    if main.is_file():
        out += parse_sources_list(main.read_text(errors="replace"))
    d = etc / "sources.list.d"
    if d.is_dir():
        for f in sorted(d.iterdir()):
            if f.suffix == ".list":
                out += parse_sources_list(f.read_text(errors="replace"))
            elif f.suffix == ".sources":
                out += parse_deb822_sources(f.read_text(errors="replace"))
    return out


def select_sources(sources: list[AptSource], codename: str) -> tuple[AptSource, tuple[AptSource, ...]]:
    """(the source debootstrap uses, every source the guest gets) for the host's release.

    The guest gets the sources of this release (``codename`` and ``codename-*`` suites, e.g.
    updates and security) that carry 'main'; debootstrap uses the first with the plain suite."""
    own = [s for s in sources if (s.suite == codename or s.suite.startswith(codename + "-"))
           and "main" in s.components]
    for s in own:
        if not URI_RE.match(s.uri):
            raise Arm64Error("apt sources", f"source URI {s.uri!r} is not an http(s) or file URI")
    base = [s for s in own if s.suite == codename]
    if not base:
        raise Arm64Error("apt sources", f"no 'deb' source for suite {codename!r} with component "
                         f"'main' in /etc/apt/sources.list or /etc/apt/sources.list.d/: the image is "
                         f"built from the host's own mirror; add one")
    return base[0], tuple(own)


def render_deb822(sources: tuple[AptSource, ...]) -> str:
    """The guest's /etc/apt/sources.list.d/debian.sources."""
    paras = []
    for s in sources:
        lines = [f"Types: deb", f"URIs: {s.uri}", f"Suites: {s.suite}",
                 f"Components: {' '.join(s.components)}"]
        if s.signed_by:
            lines.append(f"Signed-By: {s.signed_by}")
        paras.append("\n".join(lines) + "\n")
    return "# written by splicebench when the image was built (the build host's sources)\n" + \
        "\n".join(paras)


def host_codename(os_release: str) -> str:
    m = re.search(r"^VERSION_CODENAME=\"?([a-z]+)\"?$", os_release, re.M)
    if not m:
        raise Arm64Error("apt sources", "no VERSION_CODENAME in /etc/os-release: the arm64 image is "
                         "built from the host's Debian release")
    return m.group(1)


# ---------------------------------------------------------------------------------------------
# recipe and cache


@dataclass(frozen=True)
class Recipe:
    """Everything that decides the image's content; its `key` names the cache directory."""

    codename: str
    mirror: AptSource
    sources: tuple[AptSource, ...]
    packages: tuple[str, ...] = GUEST_PACKAGES
    kernel: str = KERNEL_PACKAGE
    initramfs_modules: tuple[str, ...] = INITRAMFS_MODULES
    disk_gib: int = DISK_SIZE_GIB
    version: int = RECIPE_VERSION

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def key(self) -> str:
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def host_recipe(etc: Path = Path("/etc")) -> Recipe:
    """The recipe for this host: its Debian release and its own apt sources."""
    try:
        codename = host_codename((etc / "os-release").read_text())
    except OSError as e:
        raise Arm64Error("apt sources", f"cannot read {etc / 'os-release'}: {e.strerror}") from None
    mirror, sources = select_sources(host_apt_sources(etc / "apt"), codename)
    packages = GUEST_PACKAGES
    if any(s.uri.startswith("https:") for s in sources):
        packages += ("ca-certificates",)
    return Recipe(codename=codename, mirror=mirror, sources=sources, packages=packages)


def cache_root(environ=None) -> Path:
    """<cache>/arm64 where <cache> is $SPLICEBENCH_CACHE, else ${XDG_CACHE_HOME:-~/.cache}/splicebench
    (the same directory as this host's build cache)."""
    env = os.environ if environ is None else environ
    if env.get("SPLICEBENCH_CACHE"):
        return Path(env["SPLICEBENCH_CACHE"]).expanduser() / "arm64"
    base = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "splicebench" / "arm64"


@dataclass(frozen=True)
class Image:
    """A complete cached image: base disk, kernel, initrd and the keys made for it."""

    dir: Path

    @property
    def key(self) -> str:
        return self.dir.name

    base = property(lambda self: self.dir / "base.qcow2")
    kernel = property(lambda self: self.dir / "vmlinuz")
    initrd = property(lambda self: self.dir / "initrd.img")
    host_key_pub = property(lambda self: self.dir / "ssh_host_ed25519_key.pub")
    client_key = property(lambda self: self.dir / "id_ed25519")

    FILES = ("base.qcow2", "vmlinuz", "initrd.img", "ssh_host_ed25519_key.pub", "id_ed25519",
             "recipe.json")

    def complete(self) -> bool:
        return all((self.dir / f).is_file() for f in self.FILES)

    def info(self) -> dict:
        try:
            return json.loads((self.dir / "recipe.json").read_text())
        except (OSError, ValueError):
            return {}


def cached_image(recipe: Recipe, root: Path | None = None) -> Image | None:
    img = Image((root or cache_root()) / recipe.key)
    return img if img.complete() else None


def ensure_image(recipe: Recipe | None = None, *, root: Path | None = None,
                 log: Log = _stderr_log) -> tuple[Image, bool]:
    """The cached image of recipe (default: this host's), built first if missing. (image, built)."""
    _require_root("build the arm64 image")
    recipe = recipe or host_recipe()
    root = root or cache_root()
    img = cached_image(recipe, root)
    if img is not None:
        return img, False
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root / f"{recipe.key}.lock", log):
        img = cached_image(recipe, root)  # built by another process while we waited
        if img is not None:
            return img, False
        _remove_stale_builds(root, log)
        img = build_image(recipe, root, log=log)
        _remove_other_images(root, keep=img.key, log=log)
        return img, True


@contextlib.contextmanager
def _locked(path: Path, log: Log) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"arm64 image: another process is building it; waiting ({path})")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _remove_other_images(root: Path, keep: str, log: Log) -> None:
    """Images of older recipes (a guest still running on one keeps its open files)."""
    for d in root.iterdir():
        if d.is_dir() and re.fullmatch(r"[0-9a-f]{16}", d.name) and d.name != keep:
            log(f"arm64 image: removing the image of an older recipe: {d}")
            _remove_tree(d)
            (root / f"{d.name}.failed.log").unlink(missing_ok=True)
            (root / f"{d.name}.lock").unlink(missing_ok=True)


def _remove_stale_builds(root: Path, log: Log) -> None:
    """Temp dirs of builds whose process is gone (killed with SIGKILL): unmount, then remove."""
    for d in root.glob(".tmp-*"):
        try:
            pid = int((d / "pid").read_text())
        except (OSError, ValueError):
            pid = 0
        if pid and pid_alive(pid):
            continue
        log(f"arm64 image: removing {d} left by an interrupted build")
        _remove_tree(d)


# ---------------------------------------------------------------------------------------------
# building


def build_image(recipe: Recipe, root: Path, *, log: Log = _stderr_log) -> Image:
    """Build the image of recipe into root/<key>/ (atomically); every failure names its step.

    Ctrl-C, SIGTERM or a failure stop the step's processes and remove the temp dir and its
    mounts; SIGKILL leaves them to the next build (`_remove_stale_builds`)."""

    with interrupt_on_terminate():
        return _build_image(recipe, root, log)


def _build_image(recipe: Recipe, root: Path, log: Log) -> Image:
    t0 = time.monotonic()
    tmp = root / f".tmp-{recipe.key}-{secrets.token_hex(3)}"
    tmp.mkdir(mode=0o700)  # the disk holds the guest's private host key
    (tmp / "pid").write_text(str(os.getpid()))
    build_log = tmp / "build.log"
    n = len(STEPS)
    b = _Builder(recipe, tmp, build_log, log)
    failed_log = root / f"{recipe.key}.failed.log"
    try:
        for i, (name, fn) in enumerate(zip(STEPS, (b.host_tools, b.binfmt, b.sources,
                                                     b.debootstrap, b.guest_setup, b.kernel,
                                                     b.disk)), start=1):
            log(f"arm64 image [{i}/{n}] {name}: {b.about(name)}")
            t = time.monotonic()
            with _step(name):
                fn()
            log(f"arm64 image [{i}/{n}] {name}: done in {time.monotonic() - t:.0f} s")
        (tmp / "recipe.json").write_text(json.dumps(
            {"recipe": recipe.to_dict(), "key": recipe.key, "built_at": utc_now_iso("seconds"),
             "build_seconds": round(time.monotonic() - t0, 1), **b.facts}, indent=1) + "\n")
        (tmp / "pid").unlink()
        final = root / recipe.key
        if final.exists():  # an incomplete leftover of an older layout: replace it
            _remove_tree(final)
        os.rename(tmp, final)
        failed_log.unlink(missing_ok=True)
        log(f"arm64 image: built in {time.monotonic() - t0:.0f} s: {final}")
        return Image(final)
    except BaseException as e:
        with deferred_interrupts():
            if build_log.exists():
                with contextlib.suppress(OSError):
                    shutil.copyfile(build_log, failed_log)
            b.unmount()
            _remove_tree(tmp)
        if isinstance(e, Arm64Error) and failed_log.exists():
            raise Arm64Error(e.step, f"{e.detail}\n(full log: {failed_log})") from None
        raise


class _Builder:
    """The build steps, sharing the temp dir: rootfs/, then disk.raw, then the cache files."""

    def __init__(self, recipe: Recipe, tmp: Path, build_log: Path, log: Log):
        self.r = recipe
        self.tmp = tmp
        self.rootfs = tmp / "rootfs"
        self.build_log = build_log
        self.log = log
        self.facts: dict = {}

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
        return _run(argv, step=step, log_file=self.build_log, progress=self.log, timeout=timeout,
                    **kw)

    # steps
    def host_tools(self) -> None:
        missing = sorted({pkg for tool, pkg in HOST_TOOLS.items() if not _which(tool)})
        if missing:
            raise Arm64Error("host tools", f"missing {', '.join(missing)}: install with "
                             f"`apt-get install {' '.join(missing)} qemu-user-static`")

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
        self.run("debootstrap", argv, DEBOOTSTRAP_TIMEOUT_S, summarize=_debootstrap_summary)
        # dpkg without an fsync per file: nothing here survives a crash anyway (removed at kernel).
        _write(self.rootfs / "etc/dpkg/dpkg.cfg.d/splicebench-unsafe-io", "force-unsafe-io\n")
        self.log("arm64 image: debootstrap: second stage (unpack and configure, emulated)")
        try:
            self.run("debootstrap", ["chroot", str(self.rootfs), "/debootstrap/debootstrap",
                                     "--second-stage"], DEBOOTSTRAP_TIMEOUT_S, env=_CHROOT_ENV,
                     summarize=_debootstrap_summary)
        finally:
            self.unmount()  # debootstrap unmounts what it mounted when it succeeds; be sure

    def guest_setup(self) -> None:
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
        _write(r / "etc/hostname", "sb-arm64\n")
        _write(r / "etc/hosts", "127.0.0.1\tlocalhost\n127.0.1.1\tsb-arm64\n::1\tlocalhost\n")
        _write(r / "etc/fstab", "/dev/vda / ext4 rw,relatime 0 1\n")
        _write(r / "etc/machine-id", "")
        # The network comes up before ssh.service without waiting for udev (networkd would).
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
        # The kernel package's initramfs: only what this virtual machine needs (see module doc).
        _write(r / "etc/initramfs-tools/conf.d/splicebench", "MODULES=list\nCOMPRESS=gzip\n")
        _write(r / "etc/initramfs-tools/modules", "\n".join(self.r.initramfs_modules) + "\n")
        _write(r / "etc/apt/sources.list", "")
        _write(r / "etc/apt/sources.list.d/debian.sources", render_deb822(self.r.sources))
        for s in self.r.sources:  # keyrings named by the sources, if the guest lacks them
            if s.signed_by and not (r / s.signed_by.lstrip("/")).exists():
                (r / s.signed_by.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(s.signed_by, r / s.signed_by.lstrip("/"))

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
        _remove_tree(self.rootfs)
        self.run("disk image", ["qemu-img", "convert", "-f", "raw", "-O", "qcow2", "-c", "-o",
                                "compression_type=zstd", "-m", "4", "-W", str(raw),
                                str(self.tmp / "base.qcow2")], DISK_TIMEOUT_S)
        raw.unlink()
        self.facts["base_bytes"] = (self.tmp / "base.qcow2").stat().st_size

    # mounts
    def _mount_chroot(self) -> None:
        r = self.rootfs
        for fs, target in (("proc", "proc"), ("sysfs", "sys")):
            if not _mounts_under(r / target):
                _check(["mount", "-t", fs, f"sb-{fs}", str(r / target)], "kernel")
        if not _is_char_device(r / "dev/null"):  # debootstrap made no device nodes here
            _check(["mount", "--bind", "/dev", str(r / "dev")], "kernel")

    def unmount(self) -> None:
        if self.rootfs.exists():
            _unmount_all(self.rootfs)


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


def _debootstrap_summary(lines: list[str]) -> str:
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
# guest: boot and power-off


@dataclass
class Guest:
    """A running guest, as recorded in <lab state>/arm64/guest.json."""

    name: str
    port: int
    pid: int
    image: str  # the image key
    dir: str  # <lab state>/arm64
    started_at: str = ""
    boot_seconds: float = 0.0

    @property
    def known_hosts_name(self) -> str:
        return f"[127.0.0.1]:{self.port}"


def guest_dir(state: Path) -> Path:
    return Path(state) / "arm64"


def qemu_argv(image: Image, gdir: Path, port: int, *, cpus: int = 2, memory_mb: int = 2048,
              append: str = "") -> list[str]:
    """The QEMU command line of a guest whose files are in gdir (pure)."""
    def opt(p: Path) -> str:  # QEMU option values: a comma is written twice
        return str(p).replace(",", ",,")

    cmdline = "root=/dev/vda rw console=ttyAMA0 panic=-1 net.ifnames=0 " + append
    return [
        "qemu-system-aarch64",
        "-name", "splicebench-arm64,process=sb-arm64",
        "-M", "virt", "-cpu", "max,pauth-impdef=on",  # plain max emulates pointer auth slowly
        "-smp", str(cpus), "-m", str(memory_mb),
        "-nodefaults", "-display", "none", "-no-reboot",
        "-kernel", str(image.kernel), "-initrd", str(image.initrd), "-append", cmdline.strip(),
        "-drive", f"if=none,id=hd,format=qcow2,file={opt(gdir / 'overlay.qcow2')}",
        "-device", "virtio-blk-pci,drive=hd",
        "-netdev", f"user,id=n,restrict=on,hostfwd=tcp:127.0.0.1:{port}-:22",
        "-device", "virtio-net-pci,netdev=n,romfile=",
        "-chardev", f"file,id=con,path={opt(gdir / 'console.log')}", "-serial", "chardev:con",
        "-pidfile", str(gdir / "qemu.pid"),
        "-daemonize",
    ]


def boot(image: Image, state: Path, *, name: str = GUEST_NAME, cpus: int = 2,
         memory_mb: int = 2048, ssh_timeout: float = SSH_TIMEOUT_S, append: str = "",
         log: Log = _stderr_log) -> Guest:
    """Boot image on a fresh overlay under state/arm64 and wait until SSH answers.

    Raises Arm64Error('boot') if QEMU does not start or exits, or SSH does not answer within
    ssh_timeout; then nothing is left running and the overlay is gone."""
    _require_root("boot the arm64 guest")
    if not _which("qemu-system-aarch64"):
        raise Arm64Error("boot", "qemu-system-aarch64 not found: apt-get install qemu-system-arm")
    gdir = guest_dir(state)
    if qemu_pids(state):
        raise Arm64Error("boot", f"a guest of this lab is already running ({gdir}); "
                         f"remove it first with `invoke lab.down`")
    if gdir.exists():
        _remove_tree(gdir)
    gdir.mkdir(parents=True, mode=0o700)
    t0 = time.monotonic()
    try:
        _check(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(image.base),
                str(gdir / "overlay.qcow2")], "boot")
        pid, port = _start_qemu(image, gdir, cpus, memory_mb, append)
        log(f"arm64 guest: QEMU pid {pid}, SSH on 127.0.0.1:{port}; waiting for the guest to boot "
            f"(about 20-60 s, at most {ssh_timeout:.0f} s)")
        _wait_ssh(pid, port, gdir, ssh_timeout, log)
        g = Guest(name=name, port=port, pid=pid, image=image.key, dir=str(gdir),
                  started_at=utc_now_iso("seconds"), boot_seconds=round(time.monotonic() - t0, 1))
        (gdir / "guest.json").write_text(json.dumps(asdict(g), indent=1) + "\n")
        return g
    except BaseException:
        with deferred_interrupts():
            _kill_qemu(state)
            _remove_tree(gdir)
        raise


def _start_qemu(image: Image, gdir: Path, cpus: int, memory_mb: int, append: str
                ) -> tuple[int, int]:
    """Start QEMU daemonized on a free port; (pid, port). Retries if the port was taken meanwhile."""
    for attempt in range(3):
        port = _free_port()
        argv = qemu_argv(image, gdir, port, cpus=cpus, memory_mb=memory_mb, append=append)
        (gdir / "qemu.argv").write_text(shlex.join(argv) + "\n")
        r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=60, start_new_session=True)
        if r.returncode == 0:
            try:
                return int((gdir / "qemu.pid").read_text().strip()), port
            except (OSError, ValueError):
                raise Arm64Error("boot", f"QEMU started but wrote no pid file in {gdir}") from None
        err = (r.stderr or r.stdout).strip() or "(no output)"
        if "host forwarding" in err and attempt < 2:
            continue
        how = f"was killed by signal {-r.returncode}" if r.returncode < 0 else \
            f"exited with code {r.returncode}"
        raise Arm64Error("boot", f"QEMU {how} at start: {err}")
    raise AssertionError("unreachable")


def _wait_ssh(pid: int, port: int, gdir: Path, timeout: float, log: Log) -> None:
    """Until the guest's sshd sends its banner; Arm64Error if QEMU exits or time runs out."""
    t0 = time.monotonic()
    next_note = t0 + HEARTBEAT_S
    while True:
        if not pid_alive(pid):
            raise Arm64Error("boot", f"QEMU (pid {pid}) exited before the guest's SSH answered; "
                             f"last console lines:\n{_console_tail(gdir)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                s.settimeout(3)
                if s.recv(64).startswith(b"SSH-"):
                    return
        except OSError:
            pass
        now = time.monotonic()
        if now - t0 > timeout:
            raise Arm64Error("boot", f"SSH on 127.0.0.1:{port} did not answer within "
                             f"{timeout:.0f} s; last console lines:\n{_console_tail(gdir)}")
        if now >= next_note:
            last = _console_tail(gdir, 1).strip()
            log(f"arm64 guest: booting, {now - t0:.0f} s" + (f" (console: {last[:70]})" if last
                                                            else ""))
            next_note = now + HEARTBEAT_S
        time.sleep(0.5)


def _console_tail(gdir: Path, lines: int = 8) -> str:
    try:
        text = (gdir / "console.log").read_bytes().decode("utf-8", "replace")
    except OSError:
        return "(no console output)"
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)  # colours and cursor moves of systemd
    rows = [r.rstrip() for r in text.replace("\r", "\n").splitlines() if r.strip()]
    return "\n".join(rows[-lines:]) or "(no console output)"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def status(state: Path) -> Guest | None:
    """The guest recorded for this lab, or None."""
    try:
        doc = json.loads((guest_dir(state) / "guest.json").read_text())
        return Guest(**doc)
    except (OSError, ValueError, TypeError):
        return None


def qemu_pids(state: Path) -> list[int]:
    """PIDs of QEMU processes running a guest of this lab (found by their overlay path)."""
    overlay = f"file={str(guest_dir(state) / 'overlay.qcow2').replace(',', ',,')}"
    out = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            args = (p / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if args and args[0].endswith(b"qemu-system-aarch64") and \
                any(a.decode(errors="replace").endswith(overlay) for a in args) and \
                pid_alive(int(p.name)):
            out.append(int(p.name))
    return sorted(out)


def power_off(state: Path, *, timeout: float = POWEROFF_TIMEOUT_S,
              log: Log = lambda m: None) -> list[str]:
    """Power the lab's guest off: `poweroff` over SSH, QEMU killed after timeout; overlay, inventory
    entry and known_hosts line removed. Idempotent; returns what it did."""
    done: list[str] = []
    g = status(state)
    pids = qemu_pids(state)
    if pids and g is not None:
        try:
            _ssh_poweroff(state, g)
            deadline = time.monotonic() + timeout
            while qemu_pids(state) and time.monotonic() < deadline:
                time.sleep(0.2)
            if not qemu_pids(state):
                done.append(f"arm64 guest (QEMU pid {', '.join(map(str, pids))}, powered off)")
        except (HostError, OSError) as e:
            log(f"arm64 guest: poweroff over SSH failed ({e}); stopping QEMU")
    killed = _kill_qemu(state)
    if killed:
        done.append(f"arm64 guest (QEMU pid {', '.join(map(str, killed))}, killed)")
    if g is not None:
        remove_from_inventory(state, g)
    gdir = guest_dir(state)
    if gdir.exists():
        _remove_tree(gdir)
        done.append(f"dir {gdir}")
    return done


def _ssh_poweroff(state: Path, g: Guest) -> None:
    from splicebench.hosts.inventory import load_inventory
    from splicebench.hosts.ssh import SSHHost

    inv = load_inventory(Path(state) / "inventory.yaml")
    h = SSHHost(inv.get(g.name), inv)
    try:
        h.run(["systemctl", "poweroff", "--no-block"], check=False, timeout=15)
    finally:
        h.close()


def _kill_qemu(state: Path) -> list[int]:
    """TERM, then KILL, every QEMU of this lab; wait until gone. Returns the pids signalled."""
    pids = qemu_pids(state)
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 10.0)):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not any(pid_alive(p) for p in pids):
            break
    return pids


# ---------------------------------------------------------------------------------------------
# lab inventory


def inventory_entry(g: Guest, image: Image) -> dict:
    """The guest's host entry in the lab inventory. Timeouts are generous: everything is emulated."""
    return {"host": "127.0.0.1", "port": g.port, "key": str(image.client_key), "user": "root",
            "sudo": "root", "labels": list(GUEST_LABELS), "workdir": GUEST_WORKDIR,
            "connect_timeout": 30, "command_timeout": 1200, "io_timeout": 30, "keepalive": 5}


def add_to_inventory(state: Path, g: Guest, image: Image) -> Path:
    """Add the guest to <state>/inventory.yaml and its host key to <state>/known_hosts.

    Creates both (an inventory with only the guest) when the lab has no namespace hosts."""
    state = Path(state)
    inv = state / "inventory.yaml"
    kh = state / "known_hosts"
    if inv.exists():
        doc = yaml.safe_load(inv.read_text()) or {}
    else:
        doc = {"version": 1, "known_hosts": "known_hosts", "ssh_config": None, "hosts": {}}
    doc.setdefault("hosts", {})
    doc["hosts"] = {k: v for k, v in (doc["hosts"] or {}).items() if k != g.name}
    doc["hosts"][g.name] = inventory_entry(g, image)
    khname = doc.get("known_hosts") or "known_hosts"
    if khname != "known_hosts":
        raise Arm64Error("inventory", f"{inv} names known_hosts {khname!r}; expected the lab's own")
    key = image.host_key_pub.read_text().split()
    lines = [ln for ln in (kh.read_text().splitlines() if kh.exists() else [])
             if ln.split()[:1] != [g.known_hosts_name]]
    lines.append(f"{g.known_hosts_name} {key[0]} {key[1]}")
    atomic_write_text(kh, "\n".join(lines) + "\n", 0o600)
    atomic_write_text(inv, _INVENTORY_HEADER + yaml.safe_dump(doc, sort_keys=False), 0o600)
    return inv


_INVENTORY_HEADER = ("# splicebench lab inventory: written by `invoke lab.up` / `invoke lab.arm64`, "
                     "removed by `invoke lab.down`.\n")


def remove_from_inventory(state: Path, g: Guest) -> None:
    """Drop the guest's entry and known_hosts line (the rest of the lab stays as it is)."""
    state = Path(state)
    inv = state / "inventory.yaml"
    kh = state / "known_hosts"
    if kh.exists():
        lines = [ln for ln in kh.read_text().splitlines() if ln.split()[:1] != [g.known_hosts_name]]
        atomic_write_text(kh, "".join(ln + "\n" for ln in lines), 0o600)
    if inv.exists():
        doc = yaml.safe_load(inv.read_text()) or {}
        hosts = {k: v for k, v in (doc.get("hosts") or {}).items() if k != g.name}
        if hosts:
            doc["hosts"] = hosts
            atomic_write_text(inv, _INVENTORY_HEADER + yaml.safe_dump(doc, sort_keys=False), 0o600)
        else:
            inv.unlink()


# ---------------------------------------------------------------------------------------------
# one call for `invoke lab.arm64`


def provision_host(log: Log = _stderr_log) -> None:
    """Install the host packages the arm64 lab needs (provision.ARM64_LAB_PACKAGES) when missing."""
    from splicebench.hosts.local import LocalHost
    from splicebench.programs.provision import ARM64_LAB_PACKAGES, ensure

    ensure(LocalHost(), ARM64_LAB_PACKAGES, what="arm64 lab packages", log=log)


@dataclass
class LabGuest:
    guest: Guest
    image: Image
    built: bool
    inventory: Path
    uname: str


def up(state: Path, *, ssh_timeout: float = SSH_TIMEOUT_S, provision: bool = True,
       root: Path | None = None, log: Log = _stderr_log) -> LabGuest:
    """Build or reuse the image, boot the guest in the lab at state, add it to the inventory and
    check it over the verified SSH connection. A guest already running is reused.

    provision: install the host packages it needs (provision.ARM64_LAB_PACKAGES) when missing;
    root: the image cache (default `cache_root()`)."""
    from splicebench.hosts.inventory import load_inventory
    from splicebench.hosts.ssh import SSHHost

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
        inv = load_inventory(inv_path)
        h = SSHHost(inv.get(g.name), inv)
        try:
            uname = h.run(["uname", "-srm"], timeout=60).stdout.strip()
        finally:
            h.close()
    except BaseException:
        with deferred_interrupts():
            power_off(state)
        raise
    if not uname.endswith("aarch64"):
        power_off(state)
        raise Arm64Error("boot", f"the guest says `{uname}`, expected an aarch64 machine")
    return LabGuest(g, img, built, inv_path, uname)


# ---------------------------------------------------------------------------------------------
# helpers


def _run(argv: list[str], *, step: str, log_file: Path, progress: Log, timeout: float,
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


def _check(argv: list[str], step: str) -> None:
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise Arm64Error(step, f"`{shlex.join(argv)}` failed: {(r.stderr or r.stdout).strip()}")


@contextlib.contextmanager
def _step(name: str) -> Iterator[None]:
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


def _mounts_under(path: Path) -> list[str]:
    """Mount points at or below path (from /proc/self/mounts), deepest first."""
    base = os.path.realpath(path)
    out = []
    with open("/proc/self/mounts") as f:
        for line in f:
            mp = line.split()[1].encode().decode("unicode_escape")  # \040 for a space etc.
            if mp == base or mp.startswith(base + "/"):
                out.append(mp)
    return sorted(out, key=len, reverse=True)


def _unmount_all(path: Path) -> None:
    """Unmount everything at or below path (lazily if busy); raise if something stays mounted."""
    for _ in range(3):
        mps = _mounts_under(path)
        if not mps:
            return
        for mp in mps:
            if subprocess.run(["umount", mp], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", mp], capture_output=True)
    left = _mounts_under(path)
    if left:
        raise Arm64Error("cleanup", f"cannot unmount {', '.join(left)}")


def _remove_tree(path: Path) -> None:
    """rm -rf that never crosses into a mount (e.g. a /dev bind mount left in a chroot)."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return
    _unmount_all(path)
    subprocess.run(["rm", "-rf", "--one-file-system", "--", str(path)], check=False)


def _is_char_device(p: Path) -> bool:
    import stat

    try:
        return stat.S_ISCHR(os.lstat(p).st_mode)
    except OSError:
        return False


def _which(tool: str) -> str | None:
    return shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink():
        path.unlink()
    path.write_text(text)
    os.chmod(path, mode)


def _require_root(what: str) -> None:
    if os.geteuid() != 0:
        raise Arm64Error("host tools", f"root is needed to {what} (debootstrap, chroot, mounts)")
