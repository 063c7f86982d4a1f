"""Build and test dependencies of a host, installed when missing (I/O).

On Debian and Ubuntu the missing packages are installed with apt-get (as root, or through
`sudo -n` when that works without a password). Elsewhere, or without the privileges, the user gets
one message listing what is missing and the command that would install it.

BUILD_PACKAGES is what `make` needs on any host that runs the data-path programs; TEST_PACKAGES is
what the test suite and the benchmarks (bench/) need on top. Both are plain lists: add to them when a new part needs a package.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Callable, Iterable

from splicebench.errors import CommandFailed, ProvisionError
from splicebench.hosts.base import Host


@dataclass(frozen=True)
class Package:
    name: str  # Debian/Ubuntu package name
    probe: str  # a command on PATH or an absolute file path that shows it is present (other systems)


BUILD_PACKAGES: list[Package] = [
    Package("make", "make"),
    Package("gcc", "gcc"),
    Package("libc6-dev", "/usr/include/stdio.h"),
    Package("clang", "clang"),
    Package("llvm", "llvm-strip"),
    Package("libbpf-dev", "/usr/include/bpf/libbpf.h"),
    Package("libelf-dev", "/usr/include/libelf.h"),
    Package("zlib1g-dev", "/usr/include/zlib.h"),
    Package("bpftool", "bpftool"),
]

# Packages of the programs the Makefile builds only where they are installed (servers/*_uring.c
# need liburing's header), so that a host without them, such as the arm64 guest whose image
# predates them, still builds every other program. `invoke run` installs them on the hosts of a
# scenario that names one of those programs (deploy.OPTIONAL_PROGRAMS).
OPTIONAL_BUILD_PACKAGES: list[Package] = [
    Package("liburing-dev", "/usr/include/liburing.h"),  # sb-echo-uring, sb-proxy-uring
]

# Linux perf, the one place it is named: perf record for `profile: true` (run/perf_run.py; the build
# installs it, deploy.build), and bench/syscall_count.py's system calls per GiB (installed with the
# test packages, cli/commands.ensure_test_deps). The per-sample counts need no perf binary (the CPU
# sampler opens the events itself). A host where it cannot be installed still runs everything; its
# profile samples say that perf is missing.
PERF_PACKAGES: list[Package] = [
    Package("linux-perf", "perf"),
]

TEST_PACKAGES: list[Package] = [
    Package("util-linux", "setpriv"),  # setpriv --pdeathsig: programs die with the orchestrator
    Package("iproute2", "ip"),  # network namespaces for SSH test hosts
    Package("openssh-server", "/usr/sbin/sshd"),
    Package("openssh-client", "ssh"),
    Package("sudo", "sudo"),  # lab hosts that log in as a user with sudo (lab.up --user)
    # peer proxies (tests/test_peers.py; peers.PACKAGES is what `invoke run` installs for them)
    Package("nginx", "nginx"),
    Package("libnginx-mod-stream", "/usr/lib/nginx/modules/ngx_stream_module.so"),
    Package("haproxy", "haproxy"),
    Package("chromium", "/usr/bin/chromium"),  # tests/test_browser.py opens the reports in it (headless)
]

# The arm64 lab host (arm64.py): a Debian arm64 guest built with debootstrap, booted under QEMU.
ARM64_LAB_PACKAGES: list[Package] = [
    Package("qemu-system-arm", "qemu-system-aarch64"),
    Package("qemu-utils", "qemu-img"),
    Package("debootstrap", "debootstrap"),
    Package("qemu-user-static", "/usr/libexec/qemu-binfmt/aarch64-binfmt-P"),  # debootstrap's 2nd stage
    Package("binfmt-support", "update-binfmts"),
    Package("e2fsprogs", "mkfs.ext4"),  # mkfs.ext4 -d
    Package("openssh-client", "ssh-keygen"),
]

APT_TIMEOUT_S = 1800


@dataclass(frozen=True)
class OsInfo:
    id: str
    id_like: tuple[str, ...]
    pretty: str

    @property
    def apt(self) -> bool:
        return bool({"debian", "ubuntu"} & ({self.id} | set(self.id_like)))


def parse_os_release(text: str) -> OsInfo:
    """Fields of /etc/os-release (shell-style KEY=value lines)."""
    vals: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, raw = line.partition("=")
        try:
            words = shlex.split(raw)
        except ValueError:
            words = [raw]
        vals[key] = words[0] if words else ""
    return OsInfo(vals.get("ID", "unknown"), tuple(vals.get("ID_LIKE", "").split()),
                  vals.get("PRETTY_NAME", vals.get("ID", "unknown")))


def os_info(host: Host) -> OsInfo:
    try:
        return parse_os_release(host.read_text("/etc/os-release"))
    except OSError:
        return OsInfo("unknown", (), "unknown")


def missing(host: Host, packages: Iterable[Package]) -> list[Package]:
    """Packages not installed on `host` (dpkg on apt systems, probes elsewhere)."""
    packages = list(packages)
    if os_info(host).apt:
        names = [p.name for p in packages]
        r = host.run(["dpkg-query", "-W", "-f=${Package} ${db:Status-Abbrev}\\n", *names], check=False, timeout=60)
        installed = set()
        for line in r.stdout.splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[1].startswith("ii"):
                installed.add(parts[0].split(":")[0])
        return [p for p in packages if p.name not in installed]
    return [p for p in packages if not _probe(host, p.probe)]


def _probe(host: Host, probe: str) -> bool:
    if probe.startswith("/"):
        return host.exists(probe)
    r = host.run(["sh", "-c", 'command -v "$1"', "sh", probe], check=False, timeout=30)
    return r.returncode == 0


def _privilege_prefix(host: Host) -> list[str] | None:
    """[] as root, ['sudo', '-n'] with password-less sudo, None otherwise."""
    r = host.run(["id", "-u"], check=False, timeout=30)
    if r.stdout.strip() == "0":
        return []
    if host.run(["sudo", "-n", "true"], check=False, timeout=30).returncode == 0:
        return ["sudo", "-n"]
    return None


def install_commands(host_name: str, info: OsInfo, need: list[Package], prefix: list[str] | None,
                     what: str) -> tuple[list[str], list[str]]:
    """(install argv, update argv) for the missing packages, or ProvisionError saying what to do."""
    listed = " ".join(p.name for p in need)
    if not info.apt:
        probes = ", ".join(f"{p.name} ({p.probe})" for p in need)
        raise ProvisionError(
            f"host {host_name}: missing {what}: {probes}. {info.pretty} is not Debian or Ubuntu, so "
            f"splicebench cannot install them itself: install the equivalent packages with the system's "
            f"package manager and run again.")
    if prefix is None:
        raise ProvisionError(
            f"host {host_name}: missing {what}: {listed}. Installing them needs root: run as root, "
            f"or install them first with: sudo apt-get install -y --no-install-recommends {listed}")
    apt = [*prefix, "env", "DEBIAN_FRONTEND=noninteractive", "apt-get"]
    return ([*apt, "install", "-y", "-q", "--no-install-recommends", *(p.name for p in need)],
            [*apt, "update", "-q"])


def ensure(host: Host, packages: Iterable[Package], *, what: str = "build dependencies",
           log: Callable[[str], None] = print) -> list[str]:
    """Install what is missing of `packages` on `host`; return the names installed."""
    need = missing(host, packages)
    if not need:
        return []
    names = [p.name for p in need]
    listed = " ".join(names)
    info = os_info(host)
    install, update = install_commands(host.name, info, need, _privilege_prefix(host) if info.apt else [], what)
    log(f"host {host.name}: installing {what}: {listed}")
    try:
        host.run(install, timeout=APT_TIMEOUT_S)
    except CommandFailed:
        # Stale or absent package lists are the usual cause on a fresh machine.
        log(f"host {host.name}: apt-get install failed; running apt-get update and retrying")
        try:
            host.run(update, timeout=APT_TIMEOUT_S)
            host.run(install, timeout=APT_TIMEOUT_S)
        except CommandFailed as e:
            raise ProvisionError(f"host {host.name}: could not install {what} ({listed}):\n{e}") from None
    still = missing(host, need)
    if still:
        raise ProvisionError(f"host {host.name}: apt-get finished but these are still missing: "
                             f"{' '.join(p.name for p in still)}")
    return names
