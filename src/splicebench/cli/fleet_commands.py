"""What `deploy`, `check --hosts` and `clean --hosts` do to inventory hosts, as plain functions.

Each opens the inventory's hosts (or the `only` subset), does its work on all of them in parallel,
closes them and returns name -> result, where a host that failed has its `UserError` as the value
(run/fleet.py). Problems with the inventory itself (missing file, unknown host) raise UserError.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable, Iterator

from splicebench.cli import commands
from splicebench.errors import UserError
from splicebench.hosts.inventory import load_inventory
from splicebench.hosts.base import Host
from splicebench.programs import deploy as deploy_mod
from splicebench.run import fleet

Log = Callable[[str], None]


@contextlib.contextmanager
def inventory_hosts(hosts_file: str | None, only: str | None) -> Iterator[dict[str, Host]]:
    """The inventory's hosts (or the comma-separated subset `only`), opened; closed at the end."""
    inv = load_inventory(hosts_file)
    hs = fleet.open_hosts(fleet.inventory_hosts(inv, only), inv)
    try:
        yield hs
    finally:
        fleet.close_all(hs)


def deploy(root: Path, hosts_file: str | None, only: str | None, *, provision: bool = True,
           log: Log = print) -> dict[str, deploy_mod.Build | UserError]:
    """Provision, upload and build the programs on every host in parallel (cached by hash)."""
    with inventory_hosts(hosts_file, only) as hs:
        return fleet.deploy_all(hs, root, provision=provision, log=log)


def deploy_failed_hosts(results: dict[str, deploy_mod.Build | UserError]) -> int:
    """How many hosts the deployment failed on."""
    return sum(isinstance(r, Exception) for r in results.values())


def check(paths: commands.Paths, hosts_file: str | None,
          only: str | None) -> dict[str, list[tuple[str, str, str]] | UserError]:
    """The preflight commands.check on every host in parallel."""
    with inventory_hosts(hosts_file, only) as hs:
        return fleet.check_all(hs, lambda h: commands.check(paths, h))


def clean(hosts_file: str | None, only: str | None) -> dict[str, fleet.HostClean | UserError]:
    """On every host in parallel: stop leftovers of earlier runs, drop the build cache."""
    with inventory_hosts(hosts_file, only) as hs:
        return fleet.clean_all(hs)


def clean_lines(results: dict[str, fleet.HostClean | UserError]) -> list[str]:
    """One line per host: what clean stopped and removed there, or why it failed."""
    lines = []
    for n, r in results.items():
        if isinstance(r, Exception):
            lines.append(f"{n}: FAILED: {r}")
        else:
            lines.append(f"{n}: stopped {len(r.programs)} leftover process(es)"
                         + (f": {' '.join(map(str, r.programs))}" if r.programs else "")
                         + f"; removed build cache {r.cache}"
                         + (f"; removed acceleration cgroup(s) {' '.join(r.cgroups)}" if r.cgroups else ""))
            lines += [f"{n}: {line}" for line in r.restored]
    return lines
