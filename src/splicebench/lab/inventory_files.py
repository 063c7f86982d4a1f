"""The lab's inventory.yaml and known_hosts, in its state directory: their names, and every write to them.

The namespace hosts (netns) write both files whole when the lab is created; the arm64 guest
(arm64_guest) adds its own entry and host key to them, or creates them when it is alone, and takes
them out again. Host keys are filed under the name SSH looks them up by: an address, or
``[127.0.0.1]:PORT`` for a forwarded port.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from splicebench.util.files import atomic_write_text

INVENTORY = "inventory.yaml"
KNOWN_HOSTS = "known_hosts"

# The first line of each inventory: one for the namespace lab's, one for an inventory the guest edited.
NAMESPACES_HEADER = ("# splicebench lab inventory: written by `invoke lab.up`, removed by "
                     "`invoke lab.down`.\n")
EDITED_HEADER = ("# splicebench lab inventory: written by `invoke lab.up` / `invoke lab.arm64`, "
                 "removed by `invoke lab.down`.\n")


def inventory_path(state: Path) -> Path:
    return Path(state) / INVENTORY


def known_hosts_path(state: Path) -> Path:
    return Path(state) / KNOWN_HOSTS


def known_hosts_line(name: str, host_key_pub: str) -> str:
    """'NAME TYPE KEY' (no newline) from the text of a .pub file ('TYPE KEY COMMENT')."""
    key = host_key_pub.split()
    return f"{name} {key[0]} {key[1]}"


def namespaces_inventory_text(hosts: list[tuple[str, str]], user: str = "root", sudo: str = "root") -> str:
    """The inventory of a namespace lab whose hosts are (name, address); keys and defaults shared.
    user, sudo: the login and its sudo mode (a lab made with --user: that user, sudo or none)."""
    rows = "".join(f"  {name}: {{host: {address}, labels: [lab]}}\n" for name, address in hosts)
    return (
        NAMESPACES_HEADER +
        "version: 1\n"
        f"known_hosts: {KNOWN_HOSTS}\n"
        "ssh_config: null\n"
        "defaults:\n"
        f"  user: {user}\n"
        "  key: id_ed25519\n"
        f"  sudo: {sudo}\n"
        "  workdir: /tmp/splicebench\n"
        "  connect_timeout: 5\n"
        "  command_timeout: 300\n"
        "  io_timeout: 10\n"
        "  keepalive: 2\n"
        "hosts:\n" + rows)


def write_namespaces_files(state: Path, hosts: list[tuple[str, str]], known: list[str], user: str = "root",
                           sudo: str = "root") -> None:
    """A new lab's files: known_hosts with the lines known, the inventory of hosts (name, address)."""
    atomic_write_text(known_hosts_path(state), "".join(line + "\n" for line in known))
    atomic_write_text(inventory_path(state), namespaces_inventory_text(hosts, user, sudo))


def add_host(state: Path, name: str, entry: dict, known_as: str, host_key_pub: str) -> Path:
    """Put host name (its inventory entry) into the lab's inventory, replacing an entry of that name,
    and its host key into the lab's known_hosts as known_as. Creates both files (an inventory with
    only this host) when the lab has none. Returns the inventory's path.

    Raises ValueError if the inventory names a known_hosts file other than the lab's own."""
    inv = inventory_path(state)
    kh = known_hosts_path(state)
    if inv.exists():
        doc = yaml.safe_load(inv.read_text()) or {}
    else:
        doc = {"version": 1, "known_hosts": KNOWN_HOSTS, "ssh_config": None, "hosts": {}}
    doc.setdefault("hosts", {})
    doc["hosts"] = {k: v for k, v in (doc["hosts"] or {}).items() if k != name}
    doc["hosts"][name] = entry
    khname = doc.get("known_hosts") or KNOWN_HOSTS
    if khname != KNOWN_HOSTS:
        raise ValueError(f"{inv} names known_hosts {khname!r}; expected the lab's own")
    lines = [ln for ln in (kh.read_text().splitlines() if kh.exists() else [])
             if ln.split()[:1] != [known_as]]
    lines.append(known_hosts_line(known_as, host_key_pub))
    atomic_write_text(kh, "\n".join(lines) + "\n", 0o600)
    atomic_write_text(inv, EDITED_HEADER + yaml.safe_dump(doc, sort_keys=False), 0o600)
    return inv


def remove_host(state: Path, name: str, known_as: str) -> None:
    """Drop host name's inventory entry and its known_hosts line (known_as); the rest stays. An
    inventory left with no host is removed."""
    inv = inventory_path(state)
    kh = known_hosts_path(state)
    if kh.exists():
        lines = [ln for ln in kh.read_text().splitlines() if ln.split()[:1] != [known_as]]
        atomic_write_text(kh, "".join(ln + "\n" for ln in lines), 0o600)
    if inv.exists():
        doc = yaml.safe_load(inv.read_text()) or {}
        hosts = {k: v for k, v in (doc.get("hosts") or {}).items() if k != name}
        if hosts:
            doc["hosts"] = hosts
            atomic_write_text(inv, EDITED_HEADER + yaml.safe_dump(doc, sort_keys=False), 0o600)
        else:
            inv.unlink()
