"""What the arm64 image is made of and where it is kept: the `Recipe` (the host's Debian release, its
apt sources, the packages, the kernel and its initramfs modules, the disk size) whose hash names the
cache directory, and the `Image` found there. Building one is arm64_build's job.

Cache: ``${SPLICEBENCH_CACHE:-~/.cache/splicebench}/arm64/<key>/`` holds base.qcow2, vmlinuz,
initrd.img, the guest's public host key, the client key and recipe.json (written last).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from splicebench.lab.apt_sources import AptSource, host_apt_sources, host_codename, select_sources
from splicebench.lab.arm64_host import Arm64Error
from splicebench.util.cache import cache_base

#: Bump when the build steps change in a way the recipe fields do not show.
#: 2: dpkg unsafe-io while building, own network unit instead of networkd, boot-time jobs masked.
RECIPE_VERSION = 2
# initramfs-tools comes with the base system so that its configuration is in place (and its
# triggers settled) before the kernel arrives: the initramfs is then built once, not twice.
# liburing-dev: the io_uring programs (servers/*_uring.c) build only where it is installed.
GUEST_PACKAGES = ("systemd-sysv", "openssh-server", "gcc", "make", "clang", "llvm", "libbpf-dev",
                  "libelf-dev", "zlib1g-dev", "bpftool", "liburing-dev", "python3", "iproute2", "procps",
                  "initramfs-tools")
KERNEL_PACKAGE = "linux-image-arm64"
INITRAMFS_MODULES = ("virtio_pci", "virtio_blk", "virtio_net", "ext4")
DISK_SIZE_GIB = 8


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
    return cache_base(environ) / "arm64"


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
