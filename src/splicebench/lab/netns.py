"""A lab of real SSH hosts on this machine: network namespaces on a private bridge, one sshd each.

Layout for ``LabConfig(prefix="sb-lab", subnet="10.203.0.0/24")`` and N hosts::

    root namespace:  bridge sb-lab-br 10.203.0.1/24, veth sb-lab-<i>v enslaved to it
    namespace sb-lab-<i>: eth0 10.203.0.<10+i>/24 (peer of sb-lab-<i>v), lo, and one sshd:
        own ed25519 host key, key-only root login, own private /run and /tmp (tmpfs)

Each lab host has its own network stack, host name and /tmp (so its own workdir and build cache),
like a separate machine; it shares the kernel, the PID space and the rest of the file system with
this one (so /proc/stat, and the CPU it reports, is the whole machine's).
The state directory (default /tmp/<prefix>) holds inventory.yaml, known_hosts, the client key and
per-host sshd files; `down` removes namespaces, links, every process inside the namespaces and the
state directory, and works from the names alone, so it also cleans up after a crash. All traffic stays
on addresses this module created. Needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN for mounts).

The state directory may hold other tenants (the arm64 guest of `invoke lab.arm64`): `up` and `down`
take their stop functions as `tenants` and call them before removing it; lifecycle.py passes them,
so this module knows nothing of them.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from splicebench.errors import UserError
from splicebench.lab import inventory_files
from splicebench.lab import users
from splicebench.lab.processes import terminate, wait_for_sshd
from splicebench.util.procs import pid_alive
from splicebench.util.sshkeys import keygen

SSHD = "/usr/sbin/sshd"
MAX_HOSTS = 32
PREFIX_RE = re.compile(r"^[a-z][a-z0-9-]{0,7}$")  # interface names: prefix + "-32v" <= 15 chars

# Runs inside the namespace (its own mount namespace, from `ip netns exec`, and its own UTS
# namespace, from `unshare --uts`): the host name, a private /run for sshd's privilege separation
# directory (see NOTES), the sshd files copied there, then a private /tmp.
_SSHD_SCRIPT = r"""set -e
h=$1
echo "$3" >/proc/sys/kernel/hostname
mount -t tmpfs -o mode=755,size=16m sb-lab-run /run
mkdir -m 755 /run/sshd /run/sb-lab
cp "$h/sshd_config" "$h/ssh_host_ed25519_key" "$h/authorized_keys" /run/sb-lab/
chmod 600 /run/sb-lab/ssh_host_ed25519_key
mount -t tmpfs -o mode=1777,size=2g sb-lab-tmp /tmp
exec "$2" -D -e -f /run/sb-lab/sshd_config
"""

_SSHD_CONFIG = """\
# sshd of one splicebench lab host (written by splicebench.lab.netns)
ListenAddress {addr}:22
HostKey /run/sb-lab/ssh_host_ed25519_key
PidFile /run/sb-lab/sshd.pid
AuthorizedKeysFile /run/sb-lab/authorized_keys
PermitRootLogin prohibit-password
AllowUsers root{extra_user}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PrintMotd no
X11Forwarding no
AllowTcpForwarding yes
MaxSessions 64
MaxStartups 64:30:128
ClientAliveInterval 5
ClientAliveCountMax 3
Subsystem sftp internal-sftp
LogLevel INFO
"""


class LabError(UserError):
    """The lab cannot be created or removed; the message says why and what to do."""


@dataclass(frozen=True)
class LabConfig:
    """Names and addresses of one lab. Two labs with different prefixes and subnets coexist."""

    prefix: str = "sb-lab"
    subnet: str = "10.203.0.0/24"
    state_dir: Path | None = None  # default /tmp/<prefix>

    def __post_init__(self):
        if not PREFIX_RE.match(self.prefix):
            raise LabError(f"lab prefix {self.prefix!r}: use 1-8 of a-z, 0-9, '-' (a letter first)")
        net = ipaddress.ip_network(self.subnet, strict=True)
        if net.version != 4 or not net.is_private or net.prefixlen > 24:
            raise LabError(f"lab subnet {self.subnet}: use a private IPv4 /24 or larger")

    @property
    def state(self) -> Path:
        return self.state_dir or Path("/tmp") / self.prefix

    @property
    def bridge(self) -> str:
        return f"{self.prefix}-br"

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.subnet)

    @property
    def gateway(self) -> str:
        return str(self.network.network_address + 1)

    def ns(self, i: int) -> str:
        return f"{self.prefix}-{i}"

    def veth(self, i: int) -> str:
        return f"{self.prefix}-{i}v"

    def addr(self, i: int) -> str:
        return str(self.network.network_address + 10 + i)

    @property
    def inventory(self) -> Path:
        return inventory_files.inventory_path(self.state)

    @property
    def known_hosts(self) -> Path:
        return inventory_files.known_hosts_path(self.state)


@dataclass
class LabHost:
    name: str  # inventory name, lab1..labN
    index: int
    namespace: str
    address: str
    sshd_pid: int


@dataclass
class Lab:
    """A running lab, as recorded in <state>/lab.json."""

    config: LabConfig
    hosts: list[LabHost] = field(default_factory=list)
    user: str = "root"  # the login of its inventory (users.py: a lab user, with --user)
    sudo: str = "root"  # its sudo mode in the inventory
    access: str = "root"  # root, or the lab user's sudo (users.SUDO_KINDS)

    @property
    def inventory(self) -> Path:
        return self.config.inventory

    @property
    def known_hosts(self) -> Path:
        return self.config.known_hosts


def host_name(i: int) -> str:
    """Inventory name of lab host i (1-based)."""
    return f"lab{i}"


#: A tenant of the state directory: stops itself, given the state directory; returns what it did.
Tenant = Callable[[Path], list[str]]


def up(n: int = 2, config: LabConfig | None = None, *, tenants: Iterable[Tenant] = (),
       user: users.LabUser | None = None) -> Lab:
    """Create (or reuse, if already running with n hosts and the same login) a lab of n SSH hosts.

    user: log in as this non-root user (created for the lab, users.py) instead of root.
    A lab that is not reused is removed first, its tenants stopped (see `down`)."""
    cfg = config or LabConfig()
    if not 1 <= n <= MAX_HOSTS:
        raise LabError(f"lab size {n}: use 1 to {MAX_HOSTS} hosts")
    _require_root_tools()
    existing = status(cfg)
    login, sudo = _login(cfg, user)
    access = user.sudo if user is not None else "root"
    if existing is not None and len(existing.hosts) == n and _healthy(existing) \
            and (existing.user, existing.sudo, existing.access) == (login, sudo, access):
        return existing
    down(cfg, tenants=tenants)
    _check_subnet_free(cfg)
    try:
        if user is not None:
            users.create(cfg.prefix, user)
        return _build(n, cfg, login, sudo, access)
    except BaseException:
        down(cfg)
        raise


def down(config: LabConfig | None = None, *, tenants: Iterable[Tenant] = ()) -> list[str]:
    """Remove everything of the lab named by config's prefix; idempotent. Returns what was removed.

    tenants: stop functions of what else lives in the state directory, called first (in order)."""
    cfg = config or LabConfig()
    removed: list[str] = [done for stop in tenants for done in stop(cfg.state)]
    pat = re.compile(rf"^{re.escape(cfg.prefix)}-\d+$")
    for ns in netns_list():
        if pat.match(ns):
            _kill_namespace(ns)
            removed.append(f"netns {ns}")
    links = link_names()
    for link in links:
        if re.match(rf"^{re.escape(cfg.prefix)}-\d+v$", link):
            _ip("link", "del", link, check=False)
            removed.append(f"link {link}")
    if cfg.bridge in links:
        _ip("link", "del", cfg.bridge, check=False)
        removed.append(f"bridge {cfg.bridge}")
    removed += users.remove(cfg.prefix)  # after the namespaces: none of its processes is left
    if cfg.state.exists():
        shutil.rmtree(cfg.state, ignore_errors=True)
        removed.append(f"dir {cfg.state}")
    return removed


def status(config: LabConfig | None = None) -> Lab | None:
    """The lab recorded in the state directory, or None if there is none."""
    cfg = config or LabConfig()
    try:
        doc = json.loads((cfg.state / "lab.json").read_text())
    except (OSError, ValueError):
        return None
    return Lab(config=cfg, hosts=[LabHost(**h) for h in doc.get("hosts", [])],
               user=doc.get("user", "root"), sudo=doc.get("sudo", "root"), access=doc.get("access", "root"))


def kill_host(lab: Lab, name: str) -> None:
    """Make a lab host die: kill every process in its namespace (sshd first) and delete it."""
    for h in lab.hosts:
        if h.name == name:
            _kill_namespace(h.namespace)
            return
    raise LabError(f"lab has no host {name!r}")


def namespace_pids(ns: str) -> list[int]:
    """PIDs of the processes living in network namespace ns (empty if it does not exist)."""
    r = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
    return [int(p) for p in r.stdout.split() if p.isdigit()] if r.returncode == 0 else []


# --- building ----------------------------------------------------------------------------------


def _login(cfg: LabConfig, user: users.LabUser | None) -> tuple[str, str]:
    """The lab's login and its inventory sudo mode."""
    if user is None:
        return "root", "root"
    return user.login(cfg.prefix), "none" if user.sudo == "none" else "sudo"


def _build(n: int, cfg: LabConfig, login: str = "root", sudo: str = "root", access: str = "root") -> Lab:
    st = cfg.state
    st.mkdir(parents=True, mode=0o700)
    key = st / "id_ed25519"
    keygen(key, "splicebench-lab-client")
    pub = (st / "id_ed25519.pub").read_text()

    cmds = [f"link add {cfg.bridge} type bridge",
            f"addr add {cfg.gateway}/{cfg.network.prefixlen} dev {cfg.bridge}",
            f"link set {cfg.bridge} up"]
    for i in range(1, n + 1):
        cmds += [f"netns add {cfg.ns(i)}",
                 f"link add {cfg.veth(i)} type veth peer name eth0 netns {cfg.ns(i)}",
                 f"link set {cfg.veth(i)} master {cfg.bridge} up"]
    _ip_batch(cmds)
    for i in range(1, n + 1):
        _ip_batch([f"addr add {cfg.addr(i)}/{cfg.network.prefixlen} dev eth0",
                   "link set eth0 up", "link set lo up"], ns=cfg.ns(i))

    hosts: list[LabHost] = []
    known: list[str] = []
    procs: list[subprocess.Popen] = []
    for i in range(1, n + 1):
        hd = st / "hosts" / str(i)
        hd.mkdir(parents=True)
        keygen(hd / "ssh_host_ed25519_key", f"{host_name(i)}-hostkey")
        (hd / "sshd_config").write_text(_SSHD_CONFIG.format(
            addr=cfg.addr(i), extra_user="" if login == "root" else f" {login}"))
        (hd / "authorized_keys").write_text(pub)
        known.append(inventory_files.known_hosts_line(
            cfg.addr(i), (hd / "ssh_host_ed25519_key.pub").read_text()))
        log = open(hd / "sshd.log", "wb")
        p = subprocess.Popen(
            ["ip", "netns", "exec", cfg.ns(i), "unshare", "--uts", "sh", "-c", _SSHD_SCRIPT,
             "sb-lab-sshd", str(hd), SSHD, host_name(i)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        log.close()
        procs.append(p)
        hosts.append(LabHost(name=host_name(i), index=i, namespace=cfg.ns(i),
                             address=cfg.addr(i), sshd_pid=p.pid))
    for h, p in zip(hosts, procs):
        _wait_sshd(h, p, st / "hosts" / str(h.index) / "sshd.log")

    inventory_files.write_namespaces_files(st, [(h.name, h.address) for h in hosts], known, login, sudo)
    lab = Lab(config=cfg, hosts=hosts, user=login, sudo=sudo, access=access)
    (st / "lab.json").write_text(json.dumps(
        {"prefix": cfg.prefix, "subnet": cfg.subnet, "user": login, "sudo": sudo, "access": access,
         "hosts": [h.__dict__ for h in hosts]}, indent=1) + "\n")
    return lab


def _wait_sshd(h: LabHost, p: subprocess.Popen, log: Path, timeout: float = 10.0) -> None:
    got = wait_for_sshd(h.address, 22, timeout=timeout, alive=lambda: p.poll() is None,
                        interval=0.05, connect_timeout=1, read_timeout=2)
    if got == "exited":
        tail = log.read_text(errors="replace").strip().splitlines()[-5:]
        raise LabError(f"sshd of lab host {h.name} exited with code {p.returncode}:\n"
                       + "\n".join(tail))
    if got == "timeout":
        raise LabError(f"sshd of lab host {h.name} ({h.address}) did not answer in {timeout} s"
                       f"; see {log}")


def _healthy(lab: Lab) -> bool:
    names = set(netns_list())
    for h in lab.hosts:
        if h.namespace not in names or not pid_alive(h.sshd_pid):
            return False
    return lab.config.inventory.exists() and lab.config.known_hosts.exists()


def _check_subnet_free(cfg: LabConfig) -> None:
    """Refuse a subnet that overlaps any address or route of this machine (root namespace)."""
    conflict = subnet_conflict(cfg.network)
    if conflict:
        raise LabError(f"lab subnet {cfg.network} overlaps {conflict}; choose another with --subnet")


def subnet_conflict(net: ipaddress.IPv4Network) -> str | None:
    """What on this machine (root namespace) overlaps net: an address or a route; None if free."""
    out = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True).stdout
    for m in re.finditer(r"^\d+:\s+(\S+)\s+inet\s+(\S+)", out, re.M):
        if ipaddress.ip_interface(m.group(2)).network.overlaps(net):
            return f"{m.group(2)} on {m.group(1)}"
    out = subprocess.run(["ip", "-4", "route", "show", "table", "all"], capture_output=True,
                         text=True).stdout
    for line in out.splitlines():
        words = line.split()
        if not words:
            continue
        dest = words[1] if words[0] in ("local", "broadcast", "unicast", "blackhole") else words[0]
        if dest == "default" or not re.match(r"^\d+\.\d+\.\d+\.\d+(/\d+)?$", dest):
            continue
        if ipaddress.ip_network(dest, strict=False).overlaps(net):
            return f"the route '{line.strip()}'"
    return None


def free_subnet(pool: str = "10.203.0.0/16", *, avoid_first: bool = True) -> str:
    """A /24 of pool that nothing on this machine uses (tests use it to run beside a user's lab).

    avoid_first skips the pool's first /24, the default lab subnet."""
    import random

    nets = list(ipaddress.ip_network(pool).subnets(new_prefix=24))[1 if avoid_first else 0:]
    random.shuffle(nets)
    for net in nets[:64]:
        if subnet_conflict(net) is None:
            return str(net)
    raise LabError(f"no free /24 in {pool}")


def _require_root_tools() -> None:
    if os.geteuid() != 0:
        raise LabError("the lab needs root (network namespaces, mounts): run as root")
    for tool in ("ip", "ssh-keygen", SSHD):
        if shutil.which(tool) is None:
            pkg = "openssh-server" if tool == SSHD else ("iproute2" if tool == "ip"
                                                         else "openssh-client")
            raise LabError(f"{tool} not found: apt-get install {pkg}")


# --- removal -----------------------------------------------------------------------------------


def _kill_namespace(ns: str) -> None:
    """Kill every process in namespace ns (TERM, then KILL), wait until gone, delete ns."""
    terminate(lambda: namespace_pids(ns), term_wait=1.0, kill_wait=5.0)
    _ip("netns", "del", ns, check=False)


# --- ip(8) -------------------------------------------------------------------------------------


def _ip(*args: str, check: bool = True) -> str:
    r = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and r.returncode != 0:
        raise LabError(f"`ip {' '.join(args)}` failed: {r.stderr.strip()}")
    return r.stdout


def _ip_batch(cmds: list[str], ns: str | None = None) -> None:
    r = subprocess.run(["ip", *(["-n", ns] if ns else []), "-batch", "-"],
                       input="\n".join(cmds) + "\n", capture_output=True, text=True)
    if r.returncode != 0:
        raise LabError(f"setting up lab links failed: {r.stderr.strip()}")


def netns_list() -> list[str]:
    """Names of this machine's network namespaces (`ip netns list`)."""
    return [line.split()[0] for line in _ip("netns", "list", check=False).splitlines()
            if line.strip()]


def link_names() -> list[str]:
    """Names of the root namespace's network interfaces."""
    out = _ip("-o", "link", "show", check=False)
    return [m.group(1) for m in re.finditer(r"^\d+:\s+([^:@\s]+)", out, re.M)]
