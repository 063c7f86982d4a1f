"""Trust on first use, explicitly: fetch a host's key, show its fingerprint, write it when confirmed."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import paramiko

from splicebench.errors import HostError
from splicebench.hosts.connection import HostUnreachable, open_connection
from splicebench.hosts.host_keys import ChangedHostKey, fingerprint
from splicebench.hosts.inventory import HostSpec, Inventory, known_hosts_name


def fetch_host_key(spec: HostSpec, inventory: Inventory | None = None) -> paramiko.PKey:
    """The host key spec's server offers (no authentication); jump hosts are verified first."""
    gw_conn = None
    try:
        if spec.jump is not None or spec.proxy_jump:
            # Connect to the last hop verified, then a direct-tcpip channel to the target.
            if spec.jump is not None:
                assert inventory is not None
                gw_conn = open_connection(inventory.get(spec.jump), inventory)
            else:
                hop_spec = _hops_only(spec)
                gw_conn = open_connection(hop_spec, inventory)
            sock = gw_conn.transport.open_channel(
                "direct-tcpip", (spec.hostname, spec.port), ("", 0), timeout=spec.connect_timeout)
        elif spec.proxy_command:
            sock = paramiko.ProxyCommand(spec.proxy_command)
        else:
            sock = socket.create_connection((spec.hostname, spec.port),
                                            timeout=spec.connect_timeout)
        t = paramiko.Transport(sock)
        t.banner_timeout = spec.connect_timeout
        try:
            t.start_client(timeout=spec.connect_timeout)
            return t.get_remote_server_key()
        finally:
            t.close()
    except HostError:
        raise
    except (OSError, EOFError, paramiko.SSHException) as e:
        raise HostUnreachable(f"host {spec.name} ({spec.target}): cannot fetch its host key: "
                              f"{e or type(e).__name__}") from None
    finally:
        if gw_conn is not None:
            gw_conn.close()


def _hops_only(spec: HostSpec) -> HostSpec:
    """A spec for the last ProxyJump hop, reached through the hops before it."""
    *before, last = spec.proxy_jump
    return replace(spec, name=f"{spec.name}-jump", hostname=last.hostname, port=last.port,
                   user=last.user, key_files=last.key_files or spec.key_files, jump=None,
                   proxy_jump=tuple(before), proxy_command=None)


def trust_host(spec: HostSpec, inventory: Inventory, confirm: Callable[[str], bool],
               *, known_hosts: Path | None = None) -> str:
    """Fetch spec's host key, show it through confirm(message), write it if confirmed.

    Returns "already", "added" or "declined". A known host with a different key is refused
    (ChangedHostKey): remove the old line first.
    """
    path = known_hosts or inventory.known_hosts_file
    key = fetch_host_key(spec, inventory)
    name = known_hosts_name(spec.hostname, spec.port)
    hk = paramiko.HostKeys()
    for f in spec.known_hosts:
        if os.path.exists(f):
            hk.load(f)
    entry = hk.lookup(name)
    if entry is not None and key.get_name() in entry:
        if entry[key.get_name()] == key:
            return "already"
        raise ChangedHostKey(spec, spec.name, key, entry[key.get_name()], spec.known_hosts)
    msg = (f"host {spec.name} ({spec.target}) offers this {key.get_name()} host key:\n"
           f"  {fingerprint(key)}\n"
           f"Compare it with the host's own (ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub on the "
           f"host). Write it to {path}?")
    if not confirm(msg):
        return "declined"
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    line = f"{name} {key.get_name()} {key.get_base64()}\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a") as f:
        f.write(line)
    return "added"
