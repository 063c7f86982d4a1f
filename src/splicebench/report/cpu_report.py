"""The report's per-CPU breakdown: on which CPU user, system and softirq time went (pure + reading
the run's raw sampler files).

For every server (and host) the measured ok samples' per-CPU figures over their transfer windows
(results/cpu.py, from raw/<sample-id>.cpustat.json and the client's marks) are pooled like the
summary's CPU figures: summed seconds per GiB verified, uncertainties added. Runs without sampler
files (results format 1) have no breakdown.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from splicebench.registry import SAMPLER_INTERVAL_US
from splicebench.report import format as fmt
from splicebench.results import cpu

GIB = float(1 << 30)
FIGURES = ("user", "sys", "softirq", "irq")


@dataclass(frozen=True)
class CpuRowView:
    cpu: str
    figures: list[fmt.CpuFigure]  # in FIGURES order


@dataclass(frozen=True)
class CpuTableView:
    server: str
    host: str
    n: int
    rows: list[CpuRowView]


@dataclass(frozen=True)
class CpuBreakdownView:
    figures: list[str]
    tables: list[CpuTableView]
    note: str


# Results format 1: two /proc/stat reads by the orchestrator around the client's run.
METHOD_V1 = (
    "Server CPU is the user+system time the server process reports for its whole life at exit "
    "(getrusage; start-up such as loading the BPF program included). Host CPU is the busy time of all "
    "CPUs (user, nice, system, irq, softirq, steal from /proc/stat) from just before the client started "
    "to just after it ended: it includes the client and anything else running on the host, and has "
    "a resolution of one clock tick per CPU, so it means little for samples much shorter than a "
    "second. SOCKMAP forwarding runs in softirq and kernel-thread context: it shows up in host CPU, "
    "not in the server process. Both are divided by the GiB of payload verified.")


def method(manifest: dict[str, Any]) -> str:
    """How CPU was measured in this run (by its results format)."""
    if manifest.get("format", 1) < 2:
        return METHOD_V1
    return (
        f"CPU is measured over exactly each client's transfer: sb-client stamps its start (just before the "
        f"first connect) and its end (the last byte verified) on CLOCK_REALTIME, and the sampler sb-cpustat, "
        f"started on the server's host right before the clients and stopped right after them, reads every "
        f"{SAMPLER_INTERVAL_US / 1000:g} ms (about 4 % of one CPU; subtracted from host busy) each CPU's "
        f"/proc/stat counters and the server's (and backend's) process CPU clock, each reading stamped on "
        f"the same clock. Server CPU is the process CPU clock (ns, all threads) over the window; host CPU "
        f"is the busy time of all CPUs (user, nice, system, irq, softirq, steal), client included. "
        f"/proc/stat counts whole clock ticks (10 ms at CLK_TCK 100), and this kernel charges each "
        f"scheduler tick to what the CPU was doing at that instant: softirq time (where SOCKMAP's "
        f"redirects and the receive path run) is such a tick sample, not a timed figure. Uncertainty: the "
        f"readings before and after each mark bound the counter there; a reading may lag the kernel's "
        f"count by up to one tick per CPU; the figure is the middle of the resulting range and its "
        f"uncertainty half the range (the error of tick sampling itself is not bounded and not included). "
        f"A group's CPU per GiB is its samples' CPU summed over their GiB summed; uncertainties add. A "
        f"figure whose uncertainty exceeds 5 % is printed to the digits it allows, marked ~ and greyed "
        f"(its title gives ±), or as \"< x\" when it is within its uncertainty of zero.")


def _sample_per_cpu(run_dir: Path, raw_files: str) -> list[dict[str, float]] | None:
    """One sample's per-CPU table (results/cpu.py), or None when its files do not give one."""
    rels = str(raw_files or "").split()
    stat = next((r for r in rels if r.endswith(".cpustat.json")), None)
    clients = [r for r in rels if ".client" in Path(r).name and r.endswith(".json")]
    if stat is None or not clients:
        return None
    try:
        readings = cpu.parse_cpustat((run_dir / stat).read_text(encoding="utf-8"))
        objs: list[dict[str, Any] | None] = [json.loads((run_dir / c).read_text(encoding="utf-8")) for c in clients]
    except (OSError, ValueError):
        return None
    window = cpu.marks(objs)
    if window is None:
        return None
    return cpu.per_cpu_table(cpu.sample_cpu(readings, *window))


def build(run_dir: Path, samples: pd.DataFrame) -> CpuBreakdownView | None:
    """Per-CPU seconds per GiB of every (host, server) over its measured ok samples; None without
    sampler files."""
    ok = samples[(samples["phase"] == "measured") & (samples["status"] == "ok")]
    tables = []
    for (host, server), grp in ok.groupby(["server_host", "server"], sort=False):
        acc: dict[int, dict[str, float]] = {}
        gib = 0.0
        n = 0
        for _, r in grp.iterrows():
            table = _sample_per_cpu(Path(run_dir), r.get("raw_files", ""))
            if table is None:
                continue
            n += 1
            gib += float(r["bytes_verified"]) / GIB
            for row in table:
                a = acc.setdefault(int(row["cpu"]), {})
                for k in FIGURES:
                    a[k] = a.get(k, 0.0) + row[k]
                    a[f"{k}_unc"] = a.get(f"{k}_unc", 0.0) + row[f"{k}_unc"]
        if not n or gib <= 0:
            continue
        rows = [CpuRowView(f"cpu{c}", [fmt.cpu_figure(a[k] / gib, a[f"{k}_unc"] / gib) for k in FIGURES])
                for c, a in sorted(acc.items())]
        tables.append(CpuTableView(str(server), str(host), n, rows))
    if not tables:
        return None
    return CpuBreakdownView(
        list(FIGURES), tables,
        "CPU seconds per GiB verified on each CPU of the server's host over the clients' transfer windows, "
        "summed over the measured samples (user includes nice; softirq is where SOCKMAP's redirects and "
        "the network stack's receive work run, on the CPU that received the data). Each CPU counts in "
        "clock ticks, so these figures carry one tick per CPU and reading of uncertainty.")
