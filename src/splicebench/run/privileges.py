"""What each host's login may do, before anything else of a run reaches the host (I/O).

The first command a run sends to each host reports who its commands run as: the login user, or root
through ``sudo -n`` (inventory ``sudo: sudo``). A login whose sudo asks for a password, or that has
no sudo, is told so in one line with what to change, before anything runs. A host whose commands run
without root (``sudo: none``, or a local user) still runs the programs that need none (the naive,
splice and io_uring echo servers, the naive and splice proxies, NGINX and HAProxy, the client);
those that need privileges (the SOCKMAP programs, which load BPF) are refused by name, as are the
scenario's sysctls and SOCKMAP acceleration (accelerate: sk_msg). Provisioning with apt is refused by provision.py when something is missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from splicebench.errors import PreflightError
from splicebench.hosts.base import Host
from splicebench.hosts.facts import parse_capabilities
from splicebench.registry import ACCEL_NONE, SERVERS
from splicebench.run import fleet
from splicebench.scenario.plan import Plan

_WHO = 'id -u; id -un; grep "^CapEff:" /proc/self/status'
NO_ROOT_NEEDED = ", ".join(k for k, s in SERVERS.items() if not s.privileged)


@dataclass(frozen=True)
class Who:
    """Who a host's commands run as."""

    uid: int
    user: str
    privileged: bool  # root, or CAP_BPF and CAP_NET_ADMIN


def who(host: Host) -> Who | str:
    """Who host's commands run as, or one line saying why its sudo cannot be used."""
    r = host.run(["sh", "-c", _WHO], check=False, timeout=30)
    words = r.stdout.split("\n")
    if r.returncode == 0 and len(words) >= 2 and words[0].strip().isdigit():
        caps = parse_capabilities(r.stdout)
        uid = int(words[0])
        return Who(uid, words[1].strip(), uid == 0 or (caps["CAP_BPF"] and caps["CAP_NET_ADMIN"]))
    spec = host.spec if fleet.is_ssh(host) else None  # type: ignore[attr-defined]
    login = spec.user if spec else "this user"
    # The last line is sudo's verdict (a warning such as "unable to resolve host" may come first).
    err = (r.stderr.strip().splitlines() or [f"exit status {r.returncode}"])[-1].strip()
    if spec is None or spec.sudo != "sudo":
        return f"host {host.name}: cannot tell who its commands run as: {err}"
    # Without a password, sudo does not tell a rule that wants one from no rule at all.
    if "not found" in err or r.returncode == 127:
        why = f"sudo is not installed ({err})"
    else:
        why = f"sudo -n fails for {login}: its sudo asks for a password, or it may not use sudo ({err})"
    return (f"host {host.name}: {why}: allow {login} password-less sudo (a line '{login} ALL=(ALL) NOPASSWD: ALL' "
            f"in /etc/sudoers.d/{login}, checked with visudo -cf), or set 'sudo: none' for {host.name} in the "
            f"inventory to run only what needs no root ({NO_ROOT_NEEDED}, the client)")


def needs_root(plan: Plan) -> dict[str, list[str]]:
    """host -> what of the plan needs root there (server kinds by name, sysctls)."""
    out: dict[str, list[str]] = {}
    for s in plan.samples:
        if s.server_kind.privileged:
            what = f"{s.server.kind} (loads BPF: CAP_BPF and CAP_NET_ADMIN)"
            if what not in out.setdefault(s.server_host, []):
                out[s.server_host].append(what)
        if s.accelerate != ACCEL_NONE:
            what = f"accelerate {s.accelerate} (loads BPF, makes a cgroup: CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN)"
            for h in s.hosts():
                if what not in out.setdefault(h, []):
                    out[h].append(what)
    if plan.scenario.sysctl_names():
        for h in plan.hosts():
            out.setdefault(h, []).append("the scenario's sysctls (" + ", ".join(plan.scenario.sysctl_names()) + ")")
    return out


def check(plan: Plan, hosts: Mapping[str, Host]) -> dict[str, Who]:
    """Who every host's commands run as; PreflightError listing, one line per host, a sudo that
    cannot be used and what needs root on a host without it."""
    found = fleet.for_each_host(list(hosts.values()), who)
    err = fleet.failures(found, "reaching the hosts")
    if err:
        raise err
    lines = [w for w in found.values() if isinstance(w, str)]
    if lines:
        raise PreflightError("these hosts' logins cannot run privileged commands (nothing was run):\n"
                             + "\n".join(lines))
    lines = []
    for h, what in sorted(needs_root(plan).items()):
        w = found[h]
        if isinstance(w, Who) and not w.privileged:
            lines.append(f"host {h}: cannot run {', '.join(what)}: its commands run as {w.user} (uid {w.uid}) "
                         f"without root; allow {w.user} password-less sudo and set 'sudo: sudo' in the inventory, "
                         f"or remove them from the scenario")
    if lines:
        raise PreflightError("the scenario needs privileges these hosts do not give (nothing was run):\n"
                             + "\n".join(lines))
    return {h: w for h, w in found.items() if isinstance(w, Who)}
