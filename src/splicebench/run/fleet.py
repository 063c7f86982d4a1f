"""Several hosts at once: open them, start programs on them together, deploy, check and clean them.

Every function runs its per-host work concurrently and returns name -> result, where a host that
failed with a problem the user can fix has its `UserError` as the value: one failed host is reported
next to the others' results instead of hiding them (`failures` turns them into one error when the
caller needs every host).
"""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence, TypeVar

from splicebench.errors import HostError, UserError
from splicebench.hosts import facts, sysctls
from splicebench.hosts.base import LOCAL, Host, Proc
from splicebench.hosts.inventory import Inventory
from splicebench.hosts.local import LocalHost
from splicebench.programs import accel, deploy
from splicebench.programs.provision import Package

T = TypeVar("T")
Log = Callable[[str], None]


def open_host(name: str, inventory: Inventory) -> Host:
    """The Host for a scenario host name: `LocalHost` for "local", else an `SSHHost` (lazy)."""
    if name == LOCAL:
        return LocalHost()
    from splicebench.hosts.ssh import SSHHost  # fabric and paramiko load only for SSH hosts

    return SSHHost(inventory.get(name), inventory)


def is_ssh(h: Host) -> bool:
    """Whether h is an SSHHost (none can be while hosts.ssh has not been imported)."""
    ssh = sys.modules.get("splicebench.hosts.ssh")
    return ssh is not None and isinstance(h, ssh.SSHHost)


def start_together(starts: list[tuple[Host, list[str], dict]]) -> list[Proc]:
    """Start programs on several hosts so that they begin within milliseconds of each other.

    starts: (host, argv, keyword arguments of Host.start). Programs on SSH hosts are launched
    gated, in parallel, and released together once all are ready; local ones start in this thread
    (they must be started by the thread that outlives them). If one start fails, the programs
    already started are killed and the error is raised.
    """
    remote = [(i, h, a, kw) for i, (h, a, kw) in enumerate(starts) if is_ssh(h)]
    procs: dict[int, Proc] = {}
    try:
        if remote:
            with ThreadPoolExecutor(max_workers=min(16, len(remote))) as pool:
                futs = {i: pool.submit(h.start, a, gated=True, **kw) for i, h, a, kw in remote}
                errors = []
                for i, f in futs.items():
                    try:
                        procs[i] = f.result()
                    except Exception as e:  # noqa: BLE001 - re-raised below after cleanup
                        errors.append(e)
                if errors:
                    raise errors[0]
                for f in [pool.submit(procs[i].release) for i, *_ in remote]:
                    f.result()
        for i, (h, a, kw) in enumerate(starts):
            if i not in procs:
                procs[i] = h.start(a, **kw)
    except BaseException:
        for p in procs.values():
            p.kill()
        raise
    return [procs[i] for i in range(len(starts))]


def for_each_host(hosts: list[Host], fn: Callable[[Host], T], *,
                  max_workers: int = 8) -> dict[str, T | HostError | Exception]:
    """fn(host) for every host in parallel; name -> result, or the exception that host raised.

    One failed host is a value next to the others' results, not an exception that hides them.
    Errors the user can fix (UserError) and lost hosts come back as values; a bug still raises.
    """
    def one(h: Host):
        try:
            return fn(h)
        except UserError as e:
            return e
    if not hosts:
        return {}
    pool = ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(hosts))))
    try:
        futures = {h.name: pool.submit(one, h) for h in hosts}
        return {name: f.result() for name, f in futures.items()}
    finally:
        # On Ctrl-C, do not wait for the other hosts' work (their commands end by remote timeout).
        pool.shutdown(wait=False, cancel_futures=True)


def open_hosts(names: list[str], inventory: Inventory) -> dict[str, Host]:
    """Host objects for names (local needs no inventory; the others must be in it)."""
    for n in names:
        if n != LOCAL:
            inventory.get(n)  # an unknown name fails before anything connects
    return {n: open_host(n, inventory) for n in names}


def inventory_hosts(inventory: Inventory, only: str | None = None) -> list[str]:
    """The inventory's host names, or the comma-separated subset `only` (local allowed there)."""
    if not only:
        if not inventory.hosts:
            raise UserError("no hosts: name an inventory with --hosts FILE")
        return list(inventory.hosts)
    names = [n.strip() for n in only.split(",") if n.strip()]
    for n in names:
        if n != LOCAL:
            inventory.get(n)
    return names


def failures(results: dict[str, object], what: str) -> UserError | None:
    """One error naming every failed host and every host that succeeded, or None."""
    bad = {n: r for n, r in results.items() if isinstance(r, Exception)}
    if not bad:
        return None
    good = [n for n in results if n not in bad]
    msg = f"{what} failed on {len(bad)} of {len(results)} host(s):\n"
    msg += "\n".join(f"- {n}: {e}" for n, e in bad.items())
    if good:
        msg += f"\n{what} succeeded on: {', '.join(good)}"
    return UserError(msg)


def deploy_all(hosts: dict[str, Host], root: Path, *, provision: bool = True,
               extra: Sequence[Package] = (), log: Log = print) -> dict[str, deploy.Build | UserError]:
    """Build the programs on every host in parallel (each natively; cached by content hash); with
    provision, `extra` optional build packages are installed too (deploy.build)."""
    return for_each_host(list(hosts.values()),
                         lambda h: deploy.build(h, root, provision=provision, extra=extra, log=log))


def facts_all(hosts: dict[str, Host]) -> dict[str, dict]:
    """facts.gather for every host in parallel; a host whose facts fail gets {"error": ...}."""
    res = for_each_host(list(hosts.values()), facts.gather)
    return {n: (r if isinstance(r, dict) else {"name": n, "error": str(r)}) for n, r in res.items()}


def deploy_table(results: dict[str, deploy.Build | UserError]) -> str:
    """One line per host: built / cached / FAILED, with hash, seconds and directory or the error."""
    lines = [f"{'host':<12} {'result':<7} {'hash':<16} {'s':>7}  where"]
    for n, r in results.items():
        if isinstance(r, deploy.Build):
            lines.append(f"{n:<12} {'built' if r.built else 'cached':<7} {r.hash:<16} "
                         f"{r.seconds:>7.2f}  {r.dir}")
        else:
            first, *rest = str(r).splitlines() or [""]
            lines.append(f"{n:<12} {'FAILED':<7} {'':<16} {'':>7}  {first}")
            lines += [f"{'':<46}{x}" for x in rest[-8:]]
    return "\n".join(lines)


def check_all(hosts: dict[str, Host],
              check: Callable[[Host], list[tuple[str, str, str]]]) -> dict[str, list | UserError]:
    """The preflight `check(host)` on every host in parallel."""
    return for_each_host(list(hosts.values()), check)


def check_table(results: dict[str, list | UserError]) -> tuple[str, bool]:
    """Rows host | status | check | detail, and whether anything FAILed (an unreachable host does)."""
    rows: list[tuple[str, str, str, str]] = []
    failed = False
    for n, r in results.items():
        if isinstance(r, Exception):
            rows.append((n, "FAIL", "reachable", str(r).splitlines()[0]))
            failed = True
            continue
        for status, what, detail in r:
            rows.append((n, status, what, detail))
            failed |= status == "FAIL"
    wh = max([len(r[0]) for r in rows] + [4])
    ww = max([len(r[2]) for r in rows] + [5])
    out = [f"{'host':<{wh}}  {'':<5} {'check':<{ww}}  detail"]
    out += [f"{h:<{wh}}  {s:<5} {w:<{ww}}  {d}" for h, s, w, d in rows]
    return "\n".join(out), failed


@dataclass
class HostClean:
    programs: list[int]  # leftover programs stopped (tagged background programs, build binaries)
    cache: str  # build cache directory removed
    restored: list[str] = field(default_factory=list)  # sysctls put back from journals of earlier runs
    cgroups: list[str] = field(default_factory=list)  # leftover acceleration cgroups removed


def clean_all(hosts: dict[str, Host]) -> dict[str, HostClean | UserError]:
    """On every host in parallel: stop leftovers of earlier runs, drop the build cache."""

    def one(h: Host) -> HostClean:
        killed: list[int] = []
        if is_ssh(h):
            killed += h.clean()  # programs started over SSH (any earlier run), and their files
        base = f"{h.workdir()}/build"
        if h.exists(base):
            pids = [p for p in h.pids_with_exe_under(base) if p not in killed]
            h.kill_pids(pids)
            killed += pids
        restored = sysctls.restore_journals(h)  # before the cache goes: the journals live beside it
        cgroups = accel.sweep(h)  # after the programs: a cgroup goes once nothing runs in it
        return HostClean(sorted(killed), deploy.drop_cache(h), restored, cgroups)
    return for_each_host(list(hosts.values()), one)


def close_all(hosts: dict[str, Host]) -> None:
    for h in hosts.values():
        try:
            h.close()
        except UserError:
            pass
