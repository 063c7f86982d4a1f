"""Inventory of SSH hosts: YAML text -> validated, frozen host specs.

An inventory names the hosts a scenario may place programs on. `local` is always available and needs
no inventory; every other name comes from the inventory file given with ``--hosts FILE`` or, when that
is absent, from ``$SPLICEBENCH_HOSTS`` or ``~/.config/splicebench/hosts.yaml`` (see
`default_inventory_path`).

Format (version 1)::

    version: 1
    known_hosts: known_hosts        # optional; relative to this file; default ~/.ssh/known_hosts
    ssh_config: ~/.ssh/config       # optional; null disables; default ~/.ssh/config when it exists
    defaults:                       # optional; any per-host field except host/labels/jump
      user: root
      connect_timeout: 10
    hosts:
      web1:
        host: 10.0.0.5              # SSH target; default: the name itself (looked up in ssh_config)
        address: 192.168.7.5        # where clients on other hosts connect to servers on this one
                                    # (default: the SSH target's HostName)
        user: bench                 # default: ssh_config User, else the local user name
        port: 22                    # default: ssh_config Port, else 22
        key: ~/.ssh/id_ed25519      # or a list; default: ssh_config IdentityFile, else agent/defaults
        sudo: auto                  # auto | root | sudo | none  (see SUDO_MODES)
        labels: [server]
        workdir: ~/.cache/splicebench   # remote directory for sources, builds and run files
        jump: bastion               # another inventory host to jump through (like ProxyJump)
        connect_timeout: 10         # TCP connect + SSH handshake + auth, seconds
        command_timeout: 120        # default bound for one remote command
        io_timeout: 20              # bound for one small remote operation (poll, read, stat)
        keepalive: 5                # transport keepalive interval, seconds

Everything from an inventory that may reach a remote shell is restricted to a safe charset here and
quoted with `shlex.quote` where it is used (ssh.py). This module does no network I/O.
"""

from __future__ import annotations

import getpass
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from splicebench.errors import UserError

if TYPE_CHECKING:  # paramiko loads only where an inventory is read (about 40 ms at every start)
    import paramiko

FORMAT_VERSION = 1

#: sudo modes: ``root`` runs commands as the login user without sudo (the login user is root);
#: ``none`` does the same for a user without root, and only the programs that need no privileges run
#: (run/privileges.py refuses the others by name); ``sudo`` runs every command through ``sudo -n``
#: (password-less sudo); ``auto`` is ``root`` when the login user is root and ``sudo`` otherwise.
SUDO_MODES = ("auto", "root", "sudo", "none")

#: Name of the built-in host that runs programs on this machine without SSH.
LOCAL_HOST = "local"

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
LABEL_RE = NAME_RE
# DNS names, IPv4 and IPv6 literals (no brackets); never starting with "-" (option injection).
HOSTNAME_RE = re.compile(r"^[A-Za-z0-9_:][A-Za-z0-9_.:%-]{0,252}$")
USER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}$")
# Absolute, or relative to the remote home with "~/"; no "..", no shell metacharacters.
WORKDIR_RE = re.compile(r"^(/|~/)[A-Za-z0-9_.,+@/-]*$")

DEFAULT_WORKDIR = "~/.cache/splicebench"
DEFAULT_TIMEOUTS = {"connect_timeout": 10.0, "command_timeout": 120.0, "io_timeout": 20.0,
                    "keepalive": 5.0}

_HOST_FIELDS = {"host", "address", "user", "port", "key", "sudo", "labels", "workdir", "jump",
                *DEFAULT_TIMEOUTS}
_DEFAULT_FIELDS = _HOST_FIELDS - {"host", "address", "labels", "jump"}
_TOP_FIELDS = {"version", "known_hosts", "ssh_config", "defaults", "hosts"}


class InventoryError(UserError):
    """A problem in an inventory file that the user can fix; the message names file and field."""


@dataclass(frozen=True)
class Hop:
    """One ProxyJump hop from ssh_config: an SSH target with no inventory entry of its own."""

    hostname: str
    port: int
    user: str
    key_files: tuple[str, ...] = ()


@dataclass(frozen=True)
class HostSpec:
    """One inventory host, fully resolved (inventory, then ssh_config, then defaults)."""

    name: str
    hostname: str
    port: int
    user: str
    key_files: tuple[str, ...]
    sudo: str  # "root", "sudo" or "none" (auto is resolved)
    labels: tuple[str, ...]
    workdir: str
    known_hosts: tuple[str, ...]  # files whose keys are trusted for this host
    connect_timeout: float
    command_timeout: float
    io_timeout: float
    keepalive: float
    jump: str | None = None  # name of another inventory host
    proxy_jump: tuple[Hop, ...] = ()  # from ssh_config ProxyJump, outermost first
    proxy_command: str | None = None  # from ssh_config ProxyCommand (the user's own file)
    address: str | None = None  # data-path address for clients on other hosts

    @property
    def target(self) -> str:
        """``user@host:port`` for messages."""
        return f"{self.user}@{self.hostname}:{self.port}"

    @property
    def known_hosts_name(self) -> str:
        """The name this host's key is filed under in known_hosts (``[host]:port`` off port 22)."""
        return known_hosts_name(self.hostname, self.port)


@dataclass(frozen=True)
class Inventory:
    """Validated inventory. ``hosts`` never contains `LOCAL_HOST`, which is always available."""

    path: Path | None
    hosts: Mapping[str, HostSpec] = field(default_factory=dict)
    known_hosts_file: Path = Path("~/.ssh/known_hosts").expanduser()  # where `trust` writes

    def names(self) -> list[str]:
        """All host names usable in a scenario, `LOCAL_HOST` first."""
        return [LOCAL_HOST, *self.hosts]

    def get(self, name: str) -> HostSpec:
        """The spec of an SSH host; an error naming the inventory and the known names otherwise."""
        try:
            return self.hosts[name]
        except KeyError:
            if not self.path:
                raise InventoryError(f"host {name!r} is unknown: there is no inventory; name one with "
                                     f"--hosts FILE (without one, only 'local' exists)") from None
            known = ", ".join(self.hosts) or "none"
            raise InventoryError(
                f"host {name!r} is not in inventory {self.path}; hosts defined: {known}") from None

    def with_label(self, label: str) -> list[HostSpec]:
        """Hosts carrying ``label``, in inventory order."""
        return [h for h in self.hosts.values() if label in h.labels]


def known_hosts_name(hostname: str, port: int) -> str:
    """The key under which OpenSSH and paramiko file a host in known_hosts."""
    return hostname if port == 22 else f"[{hostname}]:{port}"


def default_inventory_path(environ: Mapping[str, str] | None = None) -> Path | None:
    """``$SPLICEBENCH_HOSTS`` if set, else ``~/.config/splicebench/hosts.yaml`` if it exists."""
    env = os.environ if environ is None else environ
    if env.get("SPLICEBENCH_HOSTS"):
        return Path(env["SPLICEBENCH_HOSTS"]).expanduser()
    p = Path("~/.config/splicebench/hosts.yaml").expanduser()
    return p if p.exists() else None


def empty_inventory() -> Inventory:
    """The inventory used without a file: only `LOCAL_HOST`."""
    return Inventory(path=None, hosts={})


def load_inventory(path: str | os.PathLike | None = None, *,
                   environ: Mapping[str, str] | None = None) -> Inventory:
    """Read and validate an inventory file; ``None`` means the default location (maybe none)."""
    p = Path(path).expanduser() if path is not None else default_inventory_path(environ)
    if p is None:
        return empty_inventory()
    try:
        text = p.read_text()
    except OSError as e:
        raise InventoryError(f"cannot read inventory {p}: {e.strerror}") from None
    return parse_inventory(text, source=p)


def parse_inventory(text: str, *, source: Path | str = "<inventory>",
                    ssh_config: paramiko.SSHConfig | None = None,
                    local_user: str | None = None) -> Inventory:
    """Parse inventory YAML text. Relative paths are relative to ``source``'s directory.

    ``ssh_config`` overrides the file named in the inventory (tests pass a parsed config or an empty
    one); ``local_user`` overrides the local login name used as the default user.
    """
    src = Path(source)
    base = src.parent if src.name != "<inventory>" else Path.cwd()
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise InventoryError(f"{src}: not valid YAML: {e}") from None
    if not isinstance(doc, dict):
        raise InventoryError(f"{src}: expected a mapping with 'version' and 'hosts'")
    _no_unknown(doc, _TOP_FIELDS, f"{src}")
    if doc.get("version") != FORMAT_VERSION:
        raise InventoryError(
            f"{src}: 'version' must be {FORMAT_VERSION} (got {doc.get('version')!r})")

    if doc.get("known_hosts") is None:
        doc.pop("known_hosts", None)
    if "known_hosts" in doc:
        kh = _path(doc["known_hosts"], base, f"{src}: known_hosts")
        trusted = (str(kh),)
    else:
        kh = Path("~/.ssh/known_hosts").expanduser()
        trusted = (str(kh), "/etc/ssh/ssh_known_hosts")

    if ssh_config is None:
        ssh_config = _load_ssh_config(doc, base, src)

    defaults = doc.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise InventoryError(f"{src}: 'defaults' must be a mapping")
    _no_unknown(defaults, _DEFAULT_FIELDS, f"{src}: defaults")

    hosts_doc = doc.get("hosts")
    if not isinstance(hosts_doc, dict) or not hosts_doc:
        raise InventoryError(f"{src}: 'hosts' must be a non-empty mapping of name -> host")
    user0 = local_user or getpass.getuser()
    hosts: dict[str, HostSpec] = {}
    for name, entry in hosts_doc.items():
        where = f"{src}: hosts.{name}"
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise InventoryError(
                f"{src}: host name {name!r} is not allowed: use letters, digits, '.', '_', '-' "
                f"(first a letter or digit, at most 63)")
        if name == LOCAL_HOST:
            raise InventoryError(f"{where}: {LOCAL_HOST!r} is built in and cannot be redefined")
        if entry is None:
            entry = {}
        if not isinstance(entry, dict):
            raise InventoryError(f"{where}: expected a mapping of fields")
        _no_unknown(entry, _HOST_FIELDS, where)
        hosts[name] = _host_spec(name, {**defaults, **entry}, entry, where, base, ssh_config,
                                 trusted, "known_hosts" in doc, user0)
    for h in hosts.values():
        _check_jumps(h, hosts, src)
    return Inventory(path=src if src.name != "<inventory>" else None, hosts=hosts,
                     known_hosts_file=kh)


def _load_ssh_config(doc: dict, base: Path, src: Path) -> paramiko.SSHConfig:
    import paramiko

    if "ssh_config" in doc:
        if doc["ssh_config"] is None:
            return paramiko.SSHConfig()
        p = _path(doc["ssh_config"], base, f"{src}: ssh_config")
        if not p.exists():
            raise InventoryError(f"{src}: ssh_config {p} does not exist")
    else:
        p = Path("~/.ssh/config").expanduser()
        if not p.exists():
            return paramiko.SSHConfig()
    try:
        return paramiko.SSHConfig.from_path(str(p))
    except Exception as e:  # paramiko raises several types for bad config lines
        raise InventoryError(f"cannot parse ssh config {p}: {e}") from None


def _host_spec(name: str, merged: dict, own: dict, where: str, base: Path,
               cfg: paramiko.SSHConfig, trusted: tuple[str, ...], inv_known_hosts: bool,
               user0: str) -> HostSpec:
    alias = merged.get("host", name)
    _check_str(alias, HOSTNAME_RE, f"{where}.host", "a DNS name or IP address")
    sc = cfg.lookup(alias)
    hostname = sc.get("hostname", alias)
    _check_str(hostname, HOSTNAME_RE, f"{where}: ssh_config HostName", "a DNS name or IP address")

    # Precedence: the host's own fields, then ssh_config, then inventory defaults, then built-ins.
    def pick(key: str, sc_key: str):
        if key in own:
            return own[key]
        if sc_key in sc:
            return sc[sc_key]
        return merged.get(key)

    user = pick("user", "user") or user0
    _check_str(user, USER_RE, f"{where}.user", "a login name (letters, digits, '_', '.', '-')")
    port = _port(pick("port", "port") or 22, f"{where}.port")

    if "key" in own:
        keys_raw = own["key"]
    elif "identityfile" in sc:
        keys_raw = sc["identityfile"]
    else:
        keys_raw = merged.get("key") or []
    if isinstance(keys_raw, str):
        keys_raw = [keys_raw]
    if not isinstance(keys_raw, list):
        raise InventoryError(f"{where}.key: expected a path or a list of paths")
    keys = tuple(str(_path(k, base, f"{where}.key")) for k in keys_raw)

    sudo = merged.get("sudo", "auto")
    if sudo not in SUDO_MODES:
        raise InventoryError(f"{where}.sudo: {sudo!r} is not one of {', '.join(SUDO_MODES)}")
    if sudo == "auto":
        sudo = "root" if user == "root" else "sudo"

    labels = merged.get("labels") or []
    if not isinstance(labels, list):
        raise InventoryError(f"{where}.labels: expected a list")
    for lab in labels:
        _check_str(lab, LABEL_RE, f"{where}.labels", "letters, digits, '.', '_', '-'")

    workdir = merged.get("workdir", DEFAULT_WORKDIR)
    _check_str(workdir, WORKDIR_RE, f"{where}.workdir",
               "an absolute path or one starting with '~/', of letters, digits and _.,+@/-")
    if ".." in workdir.split("/"):
        raise InventoryError(f"{where}.workdir: '..' is not allowed")

    timeouts = {}
    for k, dflt in DEFAULT_TIMEOUTS.items():
        v = merged.get(k, dflt)
        if k == "connect_timeout" and k not in merged and "connecttimeout" in sc:
            v = sc["connecttimeout"]
        try:
            v = float(v)
        except (TypeError, ValueError):
            raise InventoryError(f"{where}.{k}: expected seconds, got {v!r}") from None
        if not 0 < v <= 86400:
            raise InventoryError(f"{where}.{k}: must be > 0 and at most 86400 s (got {v})")
        timeouts[k] = v

    address = own.get("address")
    if address is not None:
        _check_str(address, HOSTNAME_RE, f"{where}.address", "a DNS name or IP address")

    jump = own.get("jump")
    if jump is not None:
        _check_str(jump, NAME_RE, f"{where}.jump", "the name of another inventory host")
    hops: tuple[Hop, ...] = ()
    proxy_command = None
    if jump is None and "proxyjump" in sc and sc["proxyjump"].lower() != "none":
        hops = tuple(_hop(h, cfg, user0, base, f"{where}: ssh_config ProxyJump")
                     for h in sc["proxyjump"].split(","))
    elif jump is None and "proxycommand" in sc and sc["proxycommand"].lower() != "none":
        proxy_command = sc["proxycommand"]

    known = trusted
    if not inv_known_hosts and "userknownhostsfile" in sc:
        # Without a file named by the inventory, ssh_config's UserKnownHostsFile applies.
        known = tuple(str(Path(p).expanduser()) for p in sc["userknownhostsfile"].split())

    return HostSpec(name=name, hostname=hostname, port=port, user=user, key_files=keys, sudo=sudo,
                    labels=tuple(labels), workdir=workdir, known_hosts=known,
                    connect_timeout=timeouts["connect_timeout"],
                    command_timeout=timeouts["command_timeout"],
                    io_timeout=timeouts["io_timeout"], keepalive=timeouts["keepalive"],
                    jump=jump, proxy_jump=hops, proxy_command=proxy_command, address=address)


def _hop(text: str, cfg: paramiko.SSHConfig, user0: str, base: Path, where: str) -> Hop:
    """Parse one ProxyJump hop ``[user@]host[:port]``, resolved through ssh_config like ssh does."""
    m = re.match(r"^(?:([^@]+)@)?([^:@]+)(?::(\d+))?$", text.strip())
    if not m:
        raise InventoryError(f"{where}: cannot parse hop {text!r} (expected [user@]host[:port])")
    user, alias, port = m.groups()
    _check_str(alias, HOSTNAME_RE, where, "a DNS name or IP address")
    sc = cfg.lookup(alias)
    hostname = sc.get("hostname", alias)
    _check_str(hostname, HOSTNAME_RE, where, "a DNS name or IP address")
    user = user or sc.get("user") or user0
    _check_str(user, USER_RE, where, "a login name")
    keys = tuple(str(_path(k, base, where)) for k in sc.get("identityfile", []))
    return Hop(hostname=hostname, port=_port(port or sc.get("port") or 22, where), user=user,
               key_files=keys)


def _check_jumps(h: HostSpec, hosts: dict[str, HostSpec], src: Path) -> None:
    seen = [h.name]
    cur = h
    while cur.jump is not None:
        if cur.jump not in hosts:
            raise InventoryError(
                f"{src}: hosts.{cur.name}.jump: {cur.jump!r} is not a host of this inventory")
        if cur.jump in seen:
            raise InventoryError(
                f"{src}: hosts.{h.name}.jump: jump loop {' -> '.join(seen + [cur.jump])}")
        seen.append(cur.jump)
        cur = hosts[cur.jump]


def _no_unknown(d: dict, allowed: set[str], where: str) -> None:
    extra = [k for k in d if k not in allowed]
    if extra:
        raise InventoryError(
            f"{where}: unknown field {extra[0]!r}; allowed: {', '.join(sorted(allowed))}")


def _check_str(v: Any, rx: re.Pattern, where: str, what: str) -> None:
    if not isinstance(v, str) or not rx.match(v):
        raise InventoryError(f"{where}: {v!r} is not allowed: expected {what}")


def _port(v: Any, where: str) -> int:
    try:
        p = int(str(v), 10)
    except ValueError:
        raise InventoryError(f"{where}: {v!r} is not a port number") from None
    if not 1 <= p <= 65535:
        raise InventoryError(f"{where}: port {p} is outside 1-65535")
    return p


def _path(v: Any, base: Path, where: str) -> Path:
    """A local path (never sent to a shell): expand ~, resolve relative to the inventory."""
    if not isinstance(v, str) or not v or "\0" in v or "\n" in v:
        raise InventoryError(f"{where}: expected a file path, got {v!r}")
    p = Path(v).expanduser()
    return p if p.is_absolute() else (base / p)
