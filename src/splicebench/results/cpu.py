"""CPU over exactly a transfer, from sb-cpustat's readings and the client's marks (pure).

sb-cpustat (servers/cpustat.c) reads the server host's counters every couple of milliseconds, each
reading stamped with CLOCK_REALTIME; sb-client reports when its transfer started (just before the
first connect) and ended (last byte verified) on the same clock. For a monotonic counter C and the
window [s, e], the readings a <= s <= b and c <= e <= d bracket the marks, so

    C(c) - C(b)  <=  C(e) - C(s)  <=  C(d) - C(a)

(the bracketing interval, (a) below). A counter that a reading shows lagging the kernel's count by
less than `quantum` (tick counters: the kernel truncates to whole ticks, one tick per CPU summed
over) widens that to [C(c) - C(b) - quantum, C(d) - C(a) + quantum] ((b) below). The figure is the
middle of that range and its uncertainty half its width: the true value lies within value +- unc.
A mark outside the kept readings (before the first, after the last) is bounded by the counter's
fastest possible rate (`rate`: ncpu CPU-seconds per second for a host total, 1 for one CPU): the
range widens by rate * distance and the row says so; nothing is interpolated beyond the readings.
A mark in the gap between the kept head and tail of a long sample is bracketed by the readings on
either side of the gap, which is the same rule with a wider interval.

Uncertainties of several samples add (bounds add: the sum of values lies within the sum of the
ranges), see analysis/summary.py.

Format 2 readings also hold perf event counts (system calls, context switches, CPU migrations) of
the sampler itself, the host and each --pid group; they are exact when read (no quantum), so the
same bracketing gives their range over the window (perf_counts). Format 1 (older runs) has none.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, Sequence

from splicebench.results.metrics import server_events
from splicebench.results.perf import STAT_EVENTS

# The fields of a /proc/stat CPU line, in its order.
FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
BUSY_FIELDS = ("user", "nice", "system", "irq", "softirq", "steal")
# Per-CPU breakdown: figure -> the /proc/stat fields it sums.
PER_CPU_FIGURES = {"user": ("user", "nice"), "sys": ("system",), "irq": ("irq",), "softirq": ("softirq",)}
NS = 1e9


PERF_FIELDS = tuple(STAT_EVENTS.values())  # sb-cpustat's perf_fields: syscalls, ctxsw, migrations


@dataclass(frozen=True)
class Readings:
    """sb-cpustat's summary line: readings [t_ns, self_cpu_ns, ncpu * 8 tick counters, 3 per group,
    then (format 2) 3 perf counts each of the sampler, the host and every group]."""

    interval_ns: int
    clk_tck: int
    ncpu: int
    groups: list[list[int]]  # per --pid: that pid and its descendants
    rows: list[list[int]]
    taken: int
    dropped: int
    self_cpu_s: float
    # format 2: which perf counts are real ({"self": [3 bools], "host": [...], "groups": [[...], ...]})
    # and why the others are not; empty for format 1
    perf_counted: dict[str, Any] = field(default_factory=dict)
    perf_notes: tuple[str, ...] = ()

    @property
    def times(self) -> list[int]:
        return [r[0] for r in self.rows]

    def cpu_counter(self, cpu: int, fields: Sequence[str]) -> list[int]:
        """One CPU's sum of the given /proc/stat fields, per reading (ticks)."""
        idx = [2 + cpu * len(FIELDS) + FIELDS.index(f) for f in fields]
        if len(idx) == 1:
            return list(map(itemgetter(idx[0]), self.rows))
        return list(map(sum, map(itemgetter(*idx), self.rows)))

    def host_counter(self, fields: Sequence[str]) -> list[int]:
        """All CPUs' sum of the given fields, per reading (ticks)."""
        per = [self.cpu_counter(c, fields) for c in range(self.ncpu)]
        return list(map(sum, zip(*per))) if per else []

    def group_counter(self, group: int, field: str) -> list[int]:
        """A --pid group's counter per reading: 'cpu_ns', 'utime' or 'stime' (ticks)."""
        i = 2 + self.ncpu * len(FIELDS) + 3 * group + ("cpu_ns", "utime", "stime").index(field)
        return list(map(itemgetter(i), self.rows))

    def self_counter(self) -> list[int]:
        return list(map(itemgetter(1), self.rows))

    def perf_counter(self, scope: str | int, event: str) -> list[int] | None:
        """A perf count per reading of scope 'self', 'host' or a group's index, or None where it
        was not counted (perf_notes says why)."""
        if not self.perf_counted:
            return None
        e = PERF_FIELDS.index(event)
        counted = self.perf_counted["groups"][scope] if isinstance(scope, int) else self.perf_counted[scope]
        if not counted[e]:
            return None
        slot = 2 + scope if isinstance(scope, int) else ("self", "host").index(scope)
        i = 2 + self.ncpu * len(FIELDS) + 3 * len(self.groups) + 3 * slot + e
        return list(map(itemgetter(i), self.rows))


def parse_cpustat(text: str) -> Readings:
    """sb-cpustat's stdout (ready line, summary line) -> Readings; ValueError when it has no usable
    summary line."""
    summary = server_events(text).get("summary")
    if summary is None:
        raise ValueError("the CPU sampler printed no summary line")
    try:
        fields = tuple(summary["cpu_fields"])
        if fields != FIELDS:
            raise ValueError(f"the CPU sampler's fields are {fields}, expected {FIELDS}")
        ncpu = int(summary["ncpu"])
        groups = [list(map(int, g)) for g in summary["groups"]]
        rows = [list(map(int, r)) for r in summary["readings"]]
        counted: dict[str, Any] = {}
        width = 2 + ncpu * len(FIELDS) + 3 * len(groups)
        if int(summary.get("format", 1)) >= 2:
            if tuple(summary["perf_fields"]) != PERF_FIELDS:
                raise ValueError(f"the CPU sampler's perf fields are {summary['perf_fields']}, expected {PERF_FIELDS}")
            c = summary["perf_counted"]
            counted = {"self": [bool(x) for x in c["self"]], "host": [bool(x) for x in c["host"]],
                       "groups": [[bool(x) for x in g] for g in c["groups"]]}
            if len(counted["groups"]) != len(groups):
                raise ValueError("the CPU sampler's perf_counted does not list every group")
            width += len(PERF_FIELDS) * (2 + len(groups))
        if not rows or any(len(r) != width for r in rows):
            raise ValueError(f"the CPU sampler's readings are not {width} numbers each")
        return Readings(int(summary["interval_ns"]), int(summary["clk_tck"]), ncpu, groups, rows,
                        int(summary["taken"]), int(summary["dropped"]), float(summary["self_cpu_s"]),
                        counted, tuple(map(str, summary.get("perf_notes") or ())))
    except (KeyError, TypeError) as e:
        raise ValueError(f"the CPU sampler's summary line lacks {e}") from None


@dataclass(frozen=True)
class Figure:
    """A counter over a window: value +- unc, in the counter's unit; note says what widened it."""

    value: float
    unc: float
    note: str = ""

    def scaled(self, k: float) -> "Figure":
        return Figure(self.value * k, self.unc * k, self.note)

    def minus(self, other: "Figure") -> "Figure":
        return Figure(self.value - other.value, self.unc + other.unc, self.note or other.note)


def window(times: Sequence[int], counter: Sequence[float], start_ns: int, end_ns: int, *,
           rate: float, quantum: float = 0.0) -> Figure:
    """The counter's increase over [start_ns, end_ns] (module docstring).

    times: reading timestamps (ns, ascending); counter: its values (monotonic); rate: the most it
    can grow per ns; quantum: how far a reading may lag the kernel's count."""
    if not times or len(times) != len(counter):
        raise ValueError("no readings")
    if end_ns < start_ns:
        raise ValueError(f"the window ends before it starts ({end_ns} < {start_ns})")
    notes = []
    s_lo, s_hi, n = _bracket(times, counter, start_ns, rate)
    notes += [f"start mark {n}"] if n else []
    e_lo, e_hi, n = _bracket(times, counter, end_ns, rate)
    notes += [f"end mark {n}"] if n else []
    lo = max(0.0, e_lo - s_hi - quantum)
    hi = max(lo, e_hi + quantum - s_lo)
    return Figure((lo + hi) / 2, (hi - lo) / 2, "; ".join(notes))


def _bracket(times: Sequence[int], counter: Sequence[float], t: int, rate: float) -> tuple[float, float, str]:
    """(lowest, highest) possible counter value at time t, and why it was widened ('' if bracketed)."""
    i = bisect.bisect_right(times, t)  # times[:i] <= t < times[i:]
    if i == 0:  # before the first reading
        return counter[0] - rate * (times[0] - t), float(counter[0]), \
            f"{(times[0] - t) / 1e6:.1f} ms before the first kept reading: bound widened"
    if times[i - 1] == t:
        return float(counter[i - 1]), float(counter[i - 1]), ""
    if i == len(times):  # after the last reading
        return float(counter[-1]), counter[-1] + rate * (t - times[-1]), \
            f"{(t - times[-1]) / 1e6:.1f} ms after the last kept reading: bound widened"
    return float(counter[i - 1]), float(counter[i]), ""


@dataclass(frozen=True)
class SampleCpu:
    """The CPU figures of one sample over its transfer window (seconds)."""

    host: dict[str, Figure]  # busy, user, sys, irq, softirq, steal, idle
    per_cpu: list[dict[str, Figure]]  # per CPU: user, sys, irq, softirq
    groups: list[dict[str, Figure]]  # per --pid group: cpu, user, sys
    sampler: Figure  # the sampler's own CPU over the window (subtracted from host busy)


def sample_cpu(r: Readings, start_ns: int, end_ns: int) -> SampleCpu:
    """Every figure of one sample: host totals, per CPU, per process group, in seconds."""
    t, tick = r.times, 1.0 / r.clk_tck
    ncpu = r.ncpu

    def ticks(counter: Sequence[int], cpus: int) -> Figure:
        return window(t, counter, start_ns, end_ns, rate=cpus / NS * r.clk_tck, quantum=cpus).scaled(tick)

    sampler = window(t, r.self_counter(), start_ns, end_ns, rate=1.0).scaled(1 / NS)
    host = {
        "busy": ticks(r.host_counter(BUSY_FIELDS), ncpu).minus(sampler),
        "user": ticks(r.host_counter(("user", "nice")), ncpu),
        "sys": ticks(r.host_counter(("system",)), ncpu),
        "irq": ticks(r.host_counter(("irq",)), ncpu),
        "softirq": ticks(r.host_counter(("softirq",)), ncpu),
        "steal": ticks(r.host_counter(("steal",)), ncpu),
        "idle": ticks(r.host_counter(("idle", "iowait")), ncpu),
    }
    per_cpu = [{k: ticks(r.cpu_counter(c, fields), 1) for k, fields in PER_CPU_FIGURES.items()}
               for c in range(r.ncpu)]
    groups = []
    for g in range(len(r.groups)):
        groups.append({
            "cpu": window(t, r.group_counter(g, "cpu_ns"), start_ns, end_ns, rate=float(ncpu)).scaled(1 / NS),
            # utime/stime of a process: whole ticks, lagging by less than one tick each
            "user": window(t, r.group_counter(g, "utime"), start_ns, end_ns,
                           rate=ncpu / NS * r.clk_tck, quantum=1).scaled(tick),
            "sys": window(t, r.group_counter(g, "stime"), start_ns, end_ns,
                          rate=ncpu / NS * r.clk_tck, quantum=1).scaled(tick),
        })
    return SampleCpu(host, per_cpu, groups, sampler)


def perf_counts(r: Readings, start_ns: int, end_ns: int) -> tuple[dict[str, dict[str, Figure | None]], list[str]]:
    """The perf counts over [start_ns, end_ns] of the server (group 0) and of the host (without the
    sampler's own, where it counted them): ({'server'|'host': {perf event: count +- unc, or None}},
    notes on what is missing). A count whose window is not bracketed by readings is None: a count
    has no fastest rate to bound it with."""
    if not r.perf_counted:
        return {}, ["the CPU sampler counted no perf events (an older sb-cpustat)"]
    notes = list(r.perf_notes)
    out: dict[str, dict[str, Figure | None]] = {}
    scopes: list[tuple[str, str | int]] = [("host", "host")] + ([("server", 0)] if r.groups else [])
    for name, scope in scopes:
        out[name] = {}
        for event, field_ in STAT_EVENTS.items():
            counter = r.perf_counter(scope, field_)
            fig = None if counter is None else window(r.times, counter, start_ns, end_ns, rate=0.0)
            if fig is not None and scope == "host" and (own := r.perf_counter("self", field_)) is not None:
                fig = fig.minus(window(r.times, own, start_ns, end_ns, rate=0.0))
            if fig is not None and fig.note:
                notes.append("perf counts left out: a transfer mark lies outside the sampler's kept readings ("
                             + fig.note.replace(": bound widened", "") + ")")
                fig = None
            out[name][event] = fig
    return out, list(dict.fromkeys(notes))


def marks(clients: Sequence[dict[str, Any] | None]) -> tuple[int, int] | None:
    """The transfer window of a sample's clients: earliest start, latest end (CLOCK_REALTIME ns);
    None when a client reported no marks."""
    starts, ends = [], []
    for c in clients:
        s, e = (c or {}).get("start_realtime_ns"), (c or {}).get("end_realtime_ns")
        if not isinstance(s, int) or not isinstance(e, int) or s <= 0 or e < s:
            return None
        starts.append(s)
        ends.append(e)
    return (min(starts), max(ends)) if starts else None


def row_columns(cpu: SampleCpu, start_ns: int, end_ns: int) -> dict[str, Any]:
    """The samples.csv columns of one sample's CPU figures (results format 2)."""
    h = cpu.host
    out: dict[str, Any] = {"host_interval_s": (end_ns - start_ns) / NS}
    for name, col in (("busy", "busy"), ("user", "user"), ("sys", "sys"), ("irq", "irq"),
                      ("softirq", "softirq"), ("steal", "steal"), ("idle", "idle")):
        out[f"host_cpu_{col}_s"] = h[name].value
    for name in ("busy", "user", "sys", "irq", "softirq"):
        out[f"host_cpu_{name}_unc_s"] = h[name].unc
    out["sampler_cpu_s"] = cpu.sampler.value
    for prefix, g in zip(("server", "backend"), cpu.groups):
        out[f"{prefix}_cpu_s"] = g["cpu"].value
        out[f"{prefix}_cpu_unc_s"] = g["cpu"].unc
    if cpu.groups:
        out["server_cpu_user_s"] = cpu.groups[0]["user"].value
        out["server_cpu_sys_s"] = cpu.groups[0]["sys"].value
    notes = sorted({f.note for f in [*h.values(), *(x for g in cpu.groups for x in g.values())] if f.note})
    out["cpu_note"] = "; ".join(notes)
    return out


def per_cpu_table(cpu: SampleCpu) -> list[dict[str, float]]:
    """One row per CPU: cpu, and value and unc of user, sys, irq, softirq (seconds)."""
    rows = []
    for i, figs in enumerate(cpu.per_cpu):
        row: dict[str, float] = {"cpu": i}
        for k, f in figs.items():
            row[k], row[f"{k}_unc"] = f.value, f.unc
        rows.append(row)
    return rows
