"""SOCKMAP acceleration of a sample's programs (bpf/accel.c, sb-accel): how the loader is started,
how a program starts inside its cgroup, its counters as samples.csv columns, the `check` row and the
sweep of leftovers (I/O only through the Host given).

The loader creates a cgroup v2 named sb-accel-<pid>-<random> under the host's cgroup2 mount, attaches
the sockops and sk_msg programs and prints {"event":"ready",...,"cgroup":PATH}; every program of an
accelerated sample is started through `in_cgroup`, a shell that writes its own pid into the cgroup's
cgroup.procs and then execs the program (same pid: the runner's signals, CPU sampler and peers' port
checks are unaffected). On SIGTERM the loader detaches, removes the cgroup and prints its counters.
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

from splicebench.hosts.base import Host
from splicebench.registry import CGROUP_ENTER, CGROUP_ENTER_NAME, MAX_CONNS_MAX, program_argv
from splicebench.results.metrics import ACCEL_COUNTER_COLUMNS, accel_reasons

CGROUP_PREFIX = "sb-accel-"  # bpf/accel.c CGROUP_PREFIX; `invoke clean` removes what is left

# Sockets of a sample in the map of one host: a client socket and a server socket per connection,
# and a proxy holds two (client leg, upstream leg), as does its backend's side of the upstream leg.
SOCKETS_PER_CONN = 4
MAP_SLACK = 64
DEFAULT_MAP = 65536


def in_cgroup(argv: Sequence[str], cgroup: str) -> list[str]:
    """argv started inside cgroup (a directory of the cgroup2 mount): registry.CGROUP_ENTER, whose
    shell's pid (the program's after its exec) goes into cgroup.procs."""
    return ["sh", "-c", CGROUP_ENTER, CGROUP_ENTER_NAME, cgroup, *argv]


def program_of(argv: Sequence[str]) -> list[str]:
    """The program's own argv in an argv made by in_cgroup (or pinned; any other argv as it is)."""
    return program_argv(list(argv))


def map_size(conns: int) -> int:
    """accel_hash's size for a sample with `conns` connections in all (every host's map holds at
    most every socket of the sample)."""
    return min(MAX_CONNS_MAX, max(DEFAULT_MAP, SOCKETS_PER_CONN * conns + MAP_SLACK))


def loader_argv(program_path: str, conns: int) -> list[str]:
    return [program_path, "--max-conns", str(map_size(conns))]


def summary_columns(summaries: Mapping[str, Mapping[str, Any] | None]) -> dict[str, Any]:
    """host -> the loader's summary line (None: it printed none) -> the sample's accel_* columns:
    the counters summed over the hosts, and in accel_note why directions were not redirected."""
    out: dict[str, Any] = {"accel_hosts": "+".join(summaries)}
    missing = [h for h, s in summaries.items() if not s or not isinstance(s.get("counters"), Mapping)]
    for key, col in ACCEL_COUNTER_COLUMNS.items():
        out[col] = sum(int(s["counters"].get(key) or 0) for h, s in summaries.items() if h not in missing)
    notes = []
    if missing:
        notes.append(f"no counters from {', '.join(missing)}")
    notes += [why for why in accel_reasons(out) if why]
    out["accel_note"] = "; ".join(notes)
    return out


def cgroup2_mount(mountinfo: str) -> str | None:
    """The mount point of the first cgroup2 file system in /proc/PID/mountinfo text, or None."""
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        fields = left.split()
        if sep and right.split()[:1] == ["cgroup2"] and len(fields) >= 5:
            return _unescape(fields[4])
    return None


def _unescape(path: str) -> str:
    """mountinfo's octal escapes (\\040 for a space) decoded."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), path)


def support(mountinfo: str, bpf_probe: Mapping[str, Any] | None) -> tuple[bool | None, str]:
    """check()'s row for SOCKMAP acceleration: (ok, detail), ok None when BPF was not probed. The
    detail names everything missing in one line."""
    mount = cgroup2_mount(mountinfo)
    missing = [] if mount else ["no cgroup2 mount in /proc/self/mountinfo (mount -t cgroup2 none DIR)"]
    if bpf_probe is None:
        return (None if mount else False), "; ".join(missing + ["BPF program types not probed (bpftool "
                                                               "missing or not root)"])
    if not bpf_probe.get("prog_sock_ops"):
        missing.append("sockops program load (CONFIG_CGROUP_BPF)")
    if not bpf_probe.get("prog_sk_msg"):
        missing.append("sk_msg program load (CONFIG_NET_SOCK_MSG)")
    if not bpf_probe.get("map_sockhash"):
        missing.append("SOCKHASH maps (CONFIG_NET_SOCK_MSG)")
    if missing:
        return False, "missing " + "; ".join(missing)
    return True, f"cgroup2 at {mount}, sockops and sk_msg programs load"


def read_support(host: Host, bpf_probe: Mapping[str, Any] | None) -> tuple[bool | None, str]:
    """`support` for host, its mountinfo read there."""
    r = host.run(["cat", "/proc/self/mountinfo"], check=False, timeout=10)
    return support(r.stdout if r.returncode == 0 else "", bpf_probe)


# Removes cgroups left by killed loaders under every cgroup2 mount: kills what still runs in each
# (only programs started into it for a run can be there), then rmdir; prints each removed path.
# Positional: the name prefix. Paths with spaces (mountinfo's \040) are not expected here.
_SWEEP = (
    'p=$1; for m in $(awk \'{ for (i = 1; i <= NF; i++) if ($i == "-") { if ($(i+1) == "cgroup2") '
    'print $5; break } }\' /proc/self/mountinfo); do for d in "$m/$p"*; do [ -d "$d" ] || continue; '
    'if [ -e "$d/cgroup.kill" ]; then echo 1 >"$d/cgroup.kill" 2>/dev/null; else '
    'for q in $(cat "$d/cgroup.procs" 2>/dev/null); do kill -KILL "$q" 2>/dev/null; done; fi; '
    'i=0; while ! rmdir "$d" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.02; i=$((i+1)); done; '
    '[ -d "$d" ] || echo "$d"; done; done'
)


def sweep(host: Host) -> list[str]:
    """Remove leftover sb-accel cgroups on host (after a killed run); the paths removed. Their BPF
    programs and maps went with the loader's descriptors: nothing is pinned."""
    r = host.run(["sh", "-c", _SWEEP, "sb-sweep", CGROUP_PREFIX], check=False, timeout=60)
    return [ln for ln in r.stdout.splitlines() if ln.strip()]
