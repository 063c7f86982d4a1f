"""Opening verified SSH connections (Fabric/paramiko) with bounded waits, and remote command lines.

Waits: TCP connect, handshake and authentication are bounded by ``connect_timeout``; opening a
channel by ``io_timeout``. A transport keepalive runs every ``keepalive`` seconds. A host that does
not answer fails with `HostUnreachable` instead of hanging.

Quoting: commands are argv lists joined with `shlex.join`; every path is passed quoted or as a
positional argument of a fixed script, never interpolated into one.
"""

from __future__ import annotations

import os
import shlex
import socket

import fabric
import paramiko

from splicebench.errors import HostError
from splicebench.hosts.host_keys import ChangedHostKey, HostKeyError, RejectUnknown, target
from splicebench.hosts.inventory import Hop, HostSpec, Inventory


class HostUnreachable(HostError):
    """Connecting failed, or the host stopped answering within a timeout."""


def remote_command(argv: list[str], *, cwd: str | None = None, sudo: bool = False,
                   env: dict[str, str] | None = None) -> str:
    """The shell command line that runs argv on a POSIX remote shell; every word quoted."""
    words = [str(a) for a in argv]
    if not words:
        raise ValueError("empty argv")
    for w in words:
        if "\0" in w:
            raise ValueError(f"NUL byte in argument {w!r}")
    cmd = shlex.join(words)
    if env:
        for k in env:
            if not k.isidentifier():
                raise ValueError(f"bad environment variable name {k!r}")
        cmd = "env " + " ".join(shlex.quote(f"{k}={v}") for k, v in env.items()) + " " + cmd
    if cwd:
        cmd = f"cd -- {_quote_path(cwd)} && {cmd}"
    if sudo:
        cmd = "sudo -n -- sh -c " + shlex.quote(cmd)
    else:
        # A user's PATH often lacks the sbin directories (Debian), where bpftool, nginx and haproxy
        # live; sudo's secure_path and root's PATH have them.
        cmd = SBIN_PATH + cmd
    return cmd


SBIN_PATH = 'PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"; export PATH; '


def _quote_path(p: str) -> str:
    if p == "~":
        return '"$HOME"'
    if p.startswith("~/"):
        return '"$HOME"/' + shlex.quote(p[2:])
    return shlex.quote(p)


# ---------------------------------------------------------------------------------------------
# Connections


def _connection(spec: HostSpec | Hop, name: str, known: tuple[str, ...], timeouts: HostSpec,
                gateway) -> fabric.Connection:
    """A Fabric Connection that verifies the host key and bounds every wait (not yet open)."""
    kwargs = {"banner_timeout": timeouts.connect_timeout, "auth_timeout": timeouts.connect_timeout,
              "channel_timeout": timeouts.io_timeout}
    if spec.key_files:
        kwargs.update(key_filename=list(spec.key_files), look_for_keys=False, allow_agent=False)
    # An explicit empty ssh_config: Fabric must not apply ~/.ssh/config on its own (its ProxyJump
    # hops would accept any host key); inventory.py already resolved it.
    cfg = fabric.Config(ssh_config=paramiko.SSHConfig())
    c = fabric.Connection(host=spec.hostname, user=spec.user, port=spec.port, config=cfg,
                          gateway=gateway if gateway is not None else False,
                          connect_timeout=max(1, round(timeouts.connect_timeout)),
                          connect_kwargs=kwargs)
    client = paramiko.SSHClient()  # a fresh client: no AutoAddPolicy anywhere
    for f in known:
        if os.path.exists(f):
            try:
                client.load_system_host_keys(f)
            except (OSError, paramiko.SSHException) as e:
                raise HostKeyError(f"cannot read known_hosts file {f}: {e}") from None
    client.set_missing_host_key_policy(RejectUnknown(spec, name, known))
    c.client = client
    return c


def _open(c: fabric.Connection, spec: HostSpec | Hop, name: str, known: tuple[str, ...],
          timeouts: HostSpec) -> None:
    """Open c, turning paramiko/socket failures into HostKeyError/HostUnreachable/HostError.

    known: the known_hosts files c verifies against (named in a changed-key message)."""
    try:
        c.open()
    except HostKeyError:
        raise
    except paramiko.BadHostKeyException as e:
        raise ChangedHostKey(spec, name, e.key, e.expected_key, known) from None
    except paramiko.AuthenticationException as e:
        keys = ", ".join(spec.key_files) or "agent/default keys"
        raise HostError(f"host {name} ({target(spec)}): authentication failed with {keys}: {e}. "
                        f"Check user and key in the inventory.") from None
    except (socket.timeout, TimeoutError) as e:
        raise HostUnreachable(f"host {name} ({target(spec)}): no answer within "
                              f"{timeouts.connect_timeout:g} s ({e or 'timeout'})") from None
    except (OSError, EOFError, paramiko.SSHException) as e:
        raise HostUnreachable(f"host {name} ({target(spec)}): cannot connect: {e}") from None
    t = c.transport
    if t is not None:
        t.set_keepalive(max(1, round(timeouts.keepalive)))
        if isinstance(t.sock, socket.socket):
            # Small request/response messages: without this, delayed ACKs add ~40 ms to each.
            t.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def open_connection(spec: HostSpec, inventory: Inventory | None = None) -> fabric.Connection:
    """An open, verified Fabric Connection to spec (through its jump host or ProxyJump hops)."""
    gateway = None
    if spec.jump is not None:
        if inventory is None:
            raise HostError(f"host {spec.name}: jump host {spec.jump} needs the inventory")
        gateway = open_connection(inventory.get(spec.jump), inventory)
    elif spec.proxy_jump:
        for i, hop in enumerate(spec.proxy_jump):
            hop_name = f"{spec.name} (ProxyJump hop {i + 1}: {hop.hostname})"
            conn = _connection(hop, hop_name, spec.known_hosts, spec, gateway)
            _open(conn, hop, hop_name, spec.known_hosts, spec)
            gateway = conn
    elif spec.proxy_command:
        gateway = spec.proxy_command
    c = _connection(spec, spec.name, spec.known_hosts, spec, gateway)
    _open(c, spec, spec.name, spec.known_hosts, spec)
    return c


