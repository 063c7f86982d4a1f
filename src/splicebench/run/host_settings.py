"""A scenario's kernel settings (`sysctls:` and sysctl matrix keys) on the hosts of a run (I/O).

`open_settings` checks every setting on every host before anything changes (the setting exists, is
writable, the commands run as root) and then, with a journal and a guard on each host
(hosts/sysctls.py), that the kernel accepts every value the run will set: each is written, read
back and the value found put back. Any problem stops the run before its first sample, one line per
problem. `HostSettings.apply` sets a cell's values before its first sample; `close` puts back what
was found (the guards do it on the hosts), also after Ctrl-C; an orchestrator that dies or loses
its connection leaves it to the guards, and a guard that died too leaves its journal to the next
`invoke clean` or run.

Scope: settings under net.* belong to a network namespace, the others (kernel.*, vm.*, fs.*) to
the kernel. Hosts that share a kernel (the lab's namespaces and this machine: one boot_id) share its
kernel-wide settings, and hosts in one network namespace share its net.* settings: such a setting
is read, journaled, set and restored once, on the first of those hosts in the plan (its owner), and
the manifest names the owner for the others. Some net.* settings exist only in the initial network
namespace (net.core.busy_poll, net.ipv4.tcp_mem): a lab host does not have them, and the run says so.
"""

from __future__ import annotations

import secrets
from typing import Any, Callable, Mapping

from splicebench.errors import PreflightError
from splicebench.hosts import sysctls
from splicebench.hosts.base import Held, Host
from splicebench.run import fleet
from splicebench.scenario.model import Cell
from splicebench.scenario.plan import Plan

Log = Callable[[str], None]


class HostSettings:
    """The settings of one run on its hosts, from the journals written to the values put back."""

    def __init__(self, plan: Plan, hosts: Mapping[str, Host], log: Log):
        self.hosts = hosts
        self.log = log
        self.names = plan.scenario.sysctl_names()
        self.values = {k: sorted({dict(c.sysctls)[k] for c in plan.scenario.cells()}) for k in self.names}
        self.session = f"run-{secrets.token_hex(4)}"
        self.owner: dict[tuple[str, str], str] = {}  # (host, name) -> host that sets it
        self.found: dict[str, dict[str, str]] = {}  # owner host -> name -> value found
        self.guards: dict[str, Held] = {}
        self.current: dict[str, dict[str, str]] = {}  # owner host -> name -> value now
        # The manifest's record: host -> name -> {found, set: [values], scope, owner}
        self.record: dict[str, dict[str, dict[str, Any]]] = {}

    # --- opening --------------------------------------------------------------------------------

    def open(self) -> None:
        """Check, journal, guard, try every value; PreflightError (after putting everything back)
        listing every problem."""
        ids = fleet.for_each_host(list(self.hosts.values()), sysctls.identity)
        err = fleet.failures(ids, "reading the kernel identity")
        if err:
            raise err
        problems = self._assign(ids)
        if problems:  # not root: nothing can be read for sure, nor set
            raise PreflightError(_refusal(problems))
        owners = sorted(set(self.owner.values()))
        for h in owners:  # settings a crashed run left changed: back first, then read
            for line in sysctls.restore_journals(self.hosts[h]):
                self.log(f"host {h}: {line} (left by an earlier run)")
        for h in owners:
            mine = [n for n in self.names if self.owner[(h, n)] == h]
            for n, f in sysctls.read(self.hosts[h], mine).items():
                if f.state == "missing":
                    problems.append(f"host {h}: sysctl {n}: {sysctls.proc_path(n)} does not exist there "
                                    f"(unknown setting, or not in this kernel or network namespace)")
                elif f.state != "ok":
                    problems.append(f"host {h}: sysctl {n} is {f.state} and cannot be set")
                else:
                    self.found.setdefault(h, {})[n] = f.value or ""
        # The settings found are journaled and their values tried even when others are missing,
        # so that one refusal lists every problem.
        try:
            for h, found in self.found.items():
                host = self.hosts[h]
                journal = sysctls.write_journal(host, self.session, found)
                self.guards[h] = sysctls.guard(host, journal)
                self.current[h] = dict(found)
            problems += self._try_values()
        except BaseException:
            self.close()
            raise
        if problems:
            self.close()
            raise PreflightError(_refusal(problems))
        for (h, n), o in sorted(self.owner.items()):
            self.record.setdefault(h, {})[n] = {
                "found": self.found[o][n], "set": [], "owner": o,
                "scope": "network namespace" if n.startswith("net.") else "kernel"}

    def _assign(self, ids: Mapping[str, Any]) -> list[str]:
        """Owners of every (host, setting); problems of hosts whose commands do not run as root."""
        problems = []
        first: dict[tuple, str] = {}
        for h, ident in ids.items():
            if ident.uid != 0:
                problems.append(f"host {h}: setting sysctls needs root, its commands run as uid {ident.uid}: "
                                f"log in as root or allow password-less sudo (inventory sudo: sudo), or "
                                f"remove the scenario's sysctls")
            for n in self.names:
                scope = (ident.boot_id, ident.netns) if n.startswith("net.") else (ident.boot_id,)
                self.owner[(h, n)] = first.setdefault((scope, n), h)
        return problems

    def _try_values(self) -> list[str]:
        """Write every value the run will set on each owner, then the value found again."""
        problems = []
        for h, found in self.found.items():
            for n in found:
                for v in self.values[n]:
                    why = self._set(h, n, v)
                    if why:
                        problems.append(f"host {h}: sysctl {n}: {why}")
                back = self._set(h, n, found[n])
                if back:
                    problems.append(f"host {h}: sysctl {n}: cannot put back {found[n]!r}: {back}")
        return problems

    def _set(self, h: str, name: str, value: str) -> str | None:
        if self.current[h].get(name) == value:
            return None
        why = sysctls.write(self.hosts[h], name, value)
        self.current[h][name] = value if why is None else "?"
        return why

    # --- during the run -------------------------------------------------------------------------

    def apply(self, cell: Cell) -> None:
        """Set the cell's values on every owner (those it has already are not written again)."""
        want = dict(cell.sysctls)
        problems = []
        for h in self.found:
            for n in self.found[h]:
                why = self._set(h, n, want[n])
                if why:
                    problems.append(f"host {h}: sysctl {n}: {why}")
        for names in self.record.values():
            for n, rec in names.items():
                if not rec["set"] or rec["set"][-1] != want[n]:
                    rec["set"].append(want[n])
        if problems:
            raise PreflightError(_refusal(problems))

    # --- closing --------------------------------------------------------------------------------

    def close(self) -> list[str]:
        """End the guards (each puts its host's values back) and check the values found are there
        again; lines saying what was restored, or what could not be."""
        lines = []
        guards, self.guards = self.guards, {}
        for h, g in guards.items():
            try:
                res = g.finish(30)
                lines += [f"host {h}: {ln}" for ln in res.stdout.splitlines()
                          if ln.startswith(("restored", "FAILED"))]
                now = sysctls.read(self.hosts[h], sorted(self.found[h]))
            except Exception as e:  # noqa: BLE001 - a lost host keeps its guard, or its journal
                lines.append(f"host {h}: cannot confirm its sysctls were put back ({e}); "
                             f"`invoke clean --hosts ...` restores them from the journal on the host")
                continue
            bad = [n for n, v in self.found[h].items() if now[n].value != v]
            lines += [f"host {h}: sysctl {n} is {now[n].value!r}, not {self.found[h][n]!r} as found: "
                      f"`invoke clean` restores it from the journal" for n in bad]
        return lines


def _refusal(problems: list[str]) -> str:
    return "the scenario's sysctls cannot be set on these hosts (nothing was run):\n" + "\n".join(problems)


def open_settings(plan: Plan, hosts: Mapping[str, Host], log: Log) -> HostSettings | None:
    """The run's settings, checked and journaled on every host; None if the scenario has none."""
    if not plan.scenario.sysctl_names():
        return None
    s = HostSettings(plan, hosts, log)
    s.open()
    return s
