"""perf's outputs -> numbers (pure): `perf stat` counts per sample, `perf script` stacks folded.

Two uses of Linux perf (docs/reports.md, "Where the CPU goes"):

- every sample, where the kernel allows it: system calls (raw_syscalls:sys_enter), context
  switches and CPU migrations over exactly the client's transfer, of the server's processes and of
  the whole host. No perf process: the CPU sampler (servers/cpustat.c) counts them with
  perf_event_open(2) and reads them with every reading; results/cpu.py brackets the client's marks
  (perf_counts). Divided by the GiB the clients verified, they say how much kernel crossing and
  scheduling each data path costs per byte. The perf binary is not needed for them.
- a scenario with `profile: true` adds one round per server after the measured rounds, recorded
  host-wide with `perf record -a -g -e cpu-clock` (no hardware counters in a VM). Its stacks are
  folded (one line per distinct stack, root first, with its sample count), the format flame-graph
  tools read, and kept in the run directory next to perf.data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Mapping, Protocol

GIB = float(1 << 30)
# perf events -> the name of their samples.csv columns (and of sb-cpustat's perf_fields)
STAT_EVENTS: dict[str, str] = {
    "raw_syscalls:sys_enter": "syscalls",
    "context-switches": "ctxsw",
    "cpu-migrations": "migrations",
}
SCOPES = ("server", "host")  # column prefixes: perf_server_*, perf_host_*
# perf record's workload: a ready line, then sleep $1 seconds.
READY_WORKLOAD = 'echo \'{"event":"ready","tool":"perf record"}\' && exec sleep "$1"'
RECORD_FREQ_HZ = 997  # samples per second per CPU (prime: not in step with timer ticks)
KERNEL_SUFFIX = "_[k]"  # marks a kernel frame in folded stacks (as stackcollapse-perf --kernel)
IDLE_FRAMES = frozenset({"do_idle", "cpu_idle", "cpuidle_enter", "default_idle", "cpu_startup_entry"})
# Work done in interrupt context on top of whatever ran (an idle CPU, another process): network
# receive processing and SOCKMAP's redirects run here.
_IRQ_WORK = re.compile(r"softirq|interrupt|irq_exit|net_rx_action")
# Processes of the data path: the servers, proxies and client of this project, the peers, and the
# kernel threads that run network and psock work (ksoftirqd, kworker); the idle task's interrupt
# work counts too. The CPU sampler (sb-cpustat) and perf itself are measurement, not data path.
DATA_PATH_COMMS = ("sb-echo-", "sb-proxy-", "sb-client", "nginx", "haproxy", "ksoftirqd", "kworker", "swapper")


def stat_columns() -> list[str]:
    """samples.csv columns of the perf counts, their uncertainty (half the range the sampler's
    readings leave around the client's marks) and their per-GiB figures."""
    cols = []
    for scope in SCOPES:
        for name in STAT_EVENTS.values():
            cols += [f"perf_{scope}_{name}", f"perf_{scope}_{name}_unc", f"perf_{scope}_{name}_per_gib"]
    return cols


def record_argv(out_path: str, deadman_s: float) -> list[str]:
    """perf record of every CPU's stacks, cpu-clock sampling, into out_path, until SIGINT (-B: no
    build-id collection at the end, which can take seconds). Its workload prints a ready line once
    perf has enabled its events (perf lets the workload run only then) and sleeps, at most
    deadman_s."""
    return ["perf", "record", "-a", "-g", "-e", "cpu-clock", "-F", str(RECORD_FREQ_HZ), "-B", "-q",
            "-o", out_path, "--", "sh", "-c", READY_WORKLOAD, "sh", str(int(deadman_s) + 1)]


def script_argv(data_path: str) -> list[str]:
    return ["perf", "script", "-i", data_path, "-F", "comm,pid,ip,sym,dso"]


class Count(Protocol):
    value: float
    unc: float


def stat_row(counts: Mapping[str, Mapping[str, Count | None]], bytes_verified: float | None) -> dict[str, float | None]:
    """samples.csv columns from {scope: {event: count +- unc}} (results/cpu.perf_counts): the counts,
    their uncertainty and, where bytes were verified, the counts per GiB."""
    out: dict[str, float | None] = {}
    gib = bytes_verified / GIB if isinstance(bytes_verified, (int, float)) and bytes_verified > 0 else None
    for scope, c in counts.items():
        for event, name in STAT_EVENTS.items():
            v = c.get(event)
            out[f"perf_{scope}_{name}"] = v.value if v is not None else None
            out[f"perf_{scope}_{name}_unc"] = v.unc if v is not None else None
            out[f"perf_{scope}_{name}_per_gib"] = v.value / gib if v is not None and gib else None
    return out


_FRAME = re.compile(r"^\s*(?P<ip>[0-9a-fA-F]+)\s+(?P<sym>.*?)\s+\((?P<dso>[^()]*)\)\s*$")
_OFFSET = re.compile(r"\+0x[0-9a-fA-F]+$")


def _is_kernel(ip: str, dso: str) -> bool:
    """A kernel frame: [kernel.kallsyms], a module, a JIT-compiled BPF program: an address in the
    upper half of a 64-bit address space (x86-64 and arm64 kernels live there)."""
    return dso.startswith("[kernel") or (len(ip) == 16 and int(ip, 16) >= 1 << 63)


def _frame_name(ip: str, sym: str, dso: str) -> str:
    sym = _OFFSET.sub("", sym.strip()) or "[unknown]"
    if sym == "[unknown]" and dso and dso != "[unknown]":
        sym = f"[{dso.rsplit('/', 1)[-1]}]"
    # ';' separates frames in folded stacks and ' ' the count: neither may appear in a name.
    sym = sym.replace(";", ":").replace(" ", "_")
    return sym + KERNEL_SUFFIX if _is_kernel(ip, dso) else sym


# Servers and proxies (this project's and the peers'): on a shared host, other runs of the same
# programs are told apart from the sample's own by process id (fold's `servers`).
SERVER_COMMS = ("sb-echo-", "sb-proxy-", "nginx", "haproxy")


def fold(script_text: str, servers: Iterable[int] | None = None) -> dict[str, int]:
    """`perf script -F comm,pid,ip,sym,dso` output (pid optional) -> {folded stack: samples}: the
    command name, then the frames from the outermost caller to the function that was running;
    kernel frames end in KERNEL_SUFFIX. With `servers` (the sample's server and backend processes),
    samples of other server processes (SERVER_COMMS: another run on the same host) are left out."""
    own = set(servers) if servers is not None else None
    folded: dict[str, int] = {}
    comm: str | None = None
    pid: int | None = None
    frames: list[str] = []

    def flush() -> None:
        if comm is not None and not (own is not None and pid is not None and pid not in own
                                     and comm.startswith(SERVER_COMMS)):
            key = ";".join([comm, *reversed(frames)])
            folded[key] = folded.get(key, 0) + 1

    for line in script_text.splitlines():
        if not line.strip():
            flush()
            comm, frames = None, []
            continue
        if line[0] in " \t":
            m = _FRAME.match(line)
            if m and comm is not None:
                frames.append(_frame_name(m.group("ip"), m.group("sym"), m.group("dso")))
            continue
        flush()
        head = line.split()
        pid = int(head[-1]) if len(head) > 1 and head[-1].isdigit() else None
        name = " ".join(head[:-1] if pid is not None else head)
        comm = name.replace(";", ":").replace(" ", "_") or "[unknown]"
        frames = []
    flush()
    return folded


def format_folded(folded: Mapping[str, int]) -> str:
    """The folded-stacks text (flamegraph.pl's input format), heaviest stacks first."""
    return "".join(f"{k} {v}\n" for k, v in sorted(folded.items(), key=lambda kv: (-kv[1], kv[0])))


def parse_folded(text: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in text.splitlines():
        stack, _, n = line.rstrip().rpartition(" ")
        if stack and n.isdigit():
            out[stack] = out.get(stack, 0) + int(n)
    return out


def is_idle(stack: str) -> bool:
    """A sample of an idle CPU (the idle task in its idle loop, not in an interrupt's work)."""
    frames = stack.split(";")[1:]
    return any(f.removesuffix(KERNEL_SUFFIX) in IDLE_FRAMES for f in frames) and not _irq_work(frames)


def data_path(folded: Mapping[str, int]) -> dict[str, int]:
    """The busy stacks of the data path: its processes (DATA_PATH_COMMS), and interrupt work
    (softirq: network receive, SOCKMAP redirects) that ran on top of any other process. What is
    left out is other work on the host (on a shared machine: other people's programs)."""
    out = {}
    for stack, n in busy(folded).items():
        comm, _, rest = stack.partition(";")
        if comm.startswith(DATA_PATH_COMMS) or _irq_work(rest.split(";")):
            out[stack] = n
    return out


def _irq_work(frames: list[str]) -> bool:
    """Kernel interrupt or softirq work among the frames (user functions with such names, as in an
    emulator, do not count)."""
    return any(f.endswith(KERNEL_SUFFIX) and _IRQ_WORK.search(f) for f in frames)


@dataclass(frozen=True)
class TopFunction:
    name: str  # without KERNEL_SUFFIX
    kernel: bool
    self_share: float  # of the busy samples: the function itself was running
    total_share: float  # of the busy samples: the function was on the stack


def busy(folded: Mapping[str, int]) -> dict[str, int]:
    """The stacks of busy CPUs (idle loop samples left out)."""
    return {k: v for k, v in folded.items() if not is_idle(k)}


def top_functions(folded: Mapping[str, int], kernel: bool, n: int = 15) -> list[TopFunction]:
    """The n kernel (or user) functions with the largest self share of the busy samples of `folded`."""
    work = busy(folded)
    total = sum(work.values())
    if not total:
        return []
    self_n: dict[str, int] = {}
    total_n: dict[str, int] = {}
    for stack, count in work.items():
        frames = stack.split(";")[1:]
        for f in set(frames):
            total_n[f] = total_n.get(f, 0) + count
        if frames:
            self_n[frames[-1]] = self_n.get(frames[-1], 0) + count
    names = [f for f in self_n if f.endswith(KERNEL_SUFFIX) == kernel]
    names.sort(key=lambda f: (-self_n[f], f))
    return [TopFunction(f.removesuffix(KERNEL_SUFFIX), kernel, self_n[f] / total, total_n[f] / total)
            for f in names[:n]]
