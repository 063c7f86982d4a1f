"""Several runs (or several hosts of one run) side by side: alignment, statistics, host differences.

A *source* is one server host of one run: run A on host local, run B on host local, or hosts x86
and arm64 of one run. Samples are grouped per source by their scenario parameters (server label
and kind, workload and its parameters, server options), so groups of different runs line up when
they measured the same thing; a group found in only some sources is listed as unmatched, never
compared. The first source is the reference: every other one is compared with it, group by group
and metric by metric (ratio of medians with a bootstrap CI, Mann-Whitney U on the raw samples,
Benjamini-Hochberg adjusted p-values over the whole table).

Host facts that differ between sources are listed with a severity: "unfair" (different hardware,
power management, virtualization or emulation: the numbers compare machines, not code), "differs"
(kernel, tool revision, sysctls, compilers: possibly the variable under test, possibly an
explanation) or "info". A host running under emulation is recognised from its facts ("emulated"
as detected on the host; failing that, systemd-detect-virt saying "qemu", which is TCG: with KVM
it says "kvm").

Loading reads run directories (I/O); everything else here is pure.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import pandas as pd

from splicebench.analysis import summary as analysis
from splicebench.analysis import stats
from splicebench.errors import UserError
from splicebench.results.metrics import PARAM_COLUMNS
from splicebench.results.rundir import find_run, load_manifest, load_samples

# Metrics compared between sources: (Metric, from per-sample values).
COMPARE_METRICS: tuple[analysis.Metric, ...] = tuple(
    analysis.METRIC_BY_COLUMN[c] for c in (
        "throughput_gib_s", "lat_p50_us", "lat_p99_us", "proc_cpu_s_per_gib", "host_cpu_s_per_gib"))

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


# ---------------------------------------------------------------------------------------------
# Loading (I/O)


@dataclass(frozen=True)
class RunData:
    path: Path
    manifest: dict[str, Any]
    samples: pd.DataFrame  # samples.csv with analysis.add_derived's metric columns
    hists: dict[str, list[stats.Bucket]]  # sample id -> latency histogram of its clients, merged

    @property
    def run_id(self) -> str:
        return str(self.manifest.get("run_id") or self.path.name)

    @property
    def scenario_name(self) -> str:
        return str((self.manifest.get("scenario") or {}).get("name", "?"))


def read_histograms(run_dir: Path, samples: pd.DataFrame) -> dict[str, list[stats.Bucket]]:
    """Each sample's client histograms (raw/*.client*.json), merged per sample.

    A missing or unreadable file leaves that sample without a histogram (its percentiles are then
    missing from merged tables, never guessed)."""
    out: dict[str, list[stats.Bucket]] = {}
    if "raw_files" not in samples:
        return out
    for sid, files in zip(samples["sample_id"], samples["raw_files"]):
        hists = []
        for rel in str(files or "").split():
            name = Path(rel).name
            if not (name.endswith(".json") and ".client" in name):
                continue
            try:
                obj = json.loads((Path(run_dir) / rel).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            h = obj.get("hist") if isinstance(obj, dict) else None
            if isinstance(h, dict):
                hists.append(h)
        if hists:
            try:
                out[str(sid)] = stats.merge_histograms(hists)
            except ValueError:
                continue
    return out


def load_run(path: Path) -> RunData:
    path = Path(path)
    manifest = load_manifest(path)
    samples = analysis.add_derived(load_samples(path))
    return RunData(path, manifest, samples, read_histograms(path, samples))


def load_runs(results_root: Path, refs: Sequence[str]) -> list[RunData]:
    """Runs by id, unique prefix or path, in the order given; the same run twice is an error."""
    if len(refs) < 1:
        raise UserError("name at least one run (ids from `ls results/`, or paths to run directories)")
    paths = [find_run(results_root, r) for r in refs]
    seen: dict[Path, str] = {}
    for ref, p in zip(refs, paths):
        rp = p.resolve()
        if rp in seen:
            raise UserError(f"{ref!r} and {seen[rp]!r} are the same run ({p.name}); name each run once")
        seen[rp] = ref
    return [load_run(p) for p in paths]


# ---------------------------------------------------------------------------------------------
# Sources and host facts


def emulation(facts: Mapping[str, Any]) -> tuple[bool, str]:
    """(emulated?, how it was detected) from a host's facts.

    facts.py's detection decides ("emulated": true/false, evidence in "virt_how"). When it could not
    tell (None or absent) but the host is QEMU, the host counts as emulated: numbers that may come
    from an emulator are never shown as native performance."""
    flag = facts.get("emulated")
    virt = facts.get("virt") or facts.get("virtualization")
    how = facts.get("virt_how")
    if flag is True:
        return True, f"emulated ({how or virt or 'detected on the host'})"
    if flag is False:
        return False, "native"
    if str(virt or "").lower() == "qemu":
        return True, "QEMU without confirmed KVM: treated as emulated"
    return False, "native"


_GHZ_RE = re.compile(r"@\s*(\d+(?:\.\d+)?)\s*GHz", re.I)


def cpu_ghz(facts: Mapping[str, Any]) -> float | None:
    """Nominal CPU clock in GHz where known: a frequency fact (MHz), else '@ 2.60GHz' in the model name."""
    for key in ("cpu_max_mhz", "cpu_mhz"):
        v = facts.get(key)
        try:
            f = float(v)
        except (TypeError, ValueError):
            continue
        if f > 0:
            return f / 1000.0
    m = _GHZ_RE.search(str(facts.get("cpu_model") or ""))
    return float(m.group(1)) if m else None


@dataclass(frozen=True)
class Source:
    """The samples one run took with its servers on one host."""

    index: int
    letter: str  # A, B, ... (with the host appended when a run has several server hosts)
    run: RunData
    host: str
    facts: dict[str, Any]

    @property
    def arch(self) -> str:
        return str(self.facts.get("arch") or "unknown")

    @property
    def emulated(self) -> bool:
        return emulation(self.facts)[0]

    @property
    def cpu_count(self) -> int | None:
        v = self.facts.get("cpu_count")
        return int(v) if isinstance(v, (int, float)) and v > 0 else None

    @property
    def ghz(self) -> float | None:
        return cpu_ghz(self.facts)

    @property
    def label(self) -> str:
        return f"{self.letter} ({self.run.run_id}, {self.host}, {self.arch}{', emulated' if self.emulated else ''})"

    @property
    def samples(self) -> pd.DataFrame:
        df = self.run.samples
        return df[df["server_host"].astype(str) == self.host]


def sources(runs: Sequence[RunData]) -> list[Source]:
    """One source per (run, server host), in run order then order of first sample."""
    out: list[Source] = []
    for i, run in enumerate(runs):
        letter = LETTERS[i] if i < len(LETTERS) else f"R{i + 1}"
        hosts = list(dict.fromkeys(run.samples.sort_values("seq")["server_host"].astype(str))) \
            if len(run.samples) else []
        for h in hosts:
            facts = (run.manifest.get("hosts") or {}).get(h) or {}
            tag = letter if len(hosts) == 1 else f"{letter}:{h}"
            out.append(Source(len(out), tag, run, h, dict(facts)))
    return out


# (label, getter, severity when values differ)
UNFAIR, DIFFERS, INFO, CAUTION = "unfair", "differs", "info", "caution"


def _tool(source: Source) -> str:
    t = source.run.manifest.get("tool") or {}
    rev = t.get("git_revision") or "unknown"
    return f"{t.get('version', '?')} {rev[:12]}" + (" (modified)" if t.get("git_dirty") else "")


def _build(source: Source) -> str | None:
    b = (source.run.manifest.get("build") or {}).get(source.host) or {}
    return b.get("hash")


def _probe(f: Mapping[str, Any], key: str) -> Any:
    return (((f.get("bpf") or {}).get("bpftool_probe") or {}).get("system_config") or {}).get(key)


def _fact_table(source: Source) -> list[tuple[str, Any, str]]:
    f = source.facts
    emulated, how = emulation(f)
    rows: list[tuple[str, Any, str]] = [
        ("architecture", f.get("arch"), UNFAIR),
        ("emulation", how if emulated else "native", UNFAIR),
        ("virtual machine", f.get("virt"), UNFAIR),
        ("virtualization (systemd-detect-virt)", f.get("virtualization"), DIFFERS),
        ("CPU model", f.get("cpu_model"), UNFAIR),
        ("CPU count", f.get("cpu_count"), UNFAIR),
        ("CPU clock (GHz)", source.ghz, UNFAIR),
        ("CPU governor", f.get("cpu_governor"), UNFAIR),
        ("turbo / boost", f.get("turbo"), UNFAIR),
        ("memory", f.get("memory_bytes"), UNFAIR),
        ("kernel", f.get("kernel"), DIFFERS),
        ("kernel build", f.get("kernel_version"), DIFFERS),
        ("OS", f.get("os"), DIFFERS),
        ("splicebench revision", _tool(source), DIFFERS),
        ("program build", _build(source), DIFFERS),
        ("BPF JIT", _probe(f, "bpf_jit_enable"), DIFFERS),
        ("BPF JIT hardening", _probe(f, "bpf_jit_harden"), DIFFERS),
    ]
    for k, v in sorted((f.get("tools") or {}).items()):
        rows.append((f"tool {k}", v, DIFFERS))
    for k, v in sorted(((f.get("bpf") or {}).get("kernel_config") or {}).items()):
        rows.append((k, v, DIFFERS))
    for k, v in sorted((f.get("sysctls") or {}).items()):
        rows.append((k, v, DIFFERS))
    rows.append(("hostname", f.get("hostname"), INFO))
    return rows


def show_fact(v: Any) -> str:
    if v is None:
        return "unknown"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


@dataclass(frozen=True)
class FactDiff:
    name: str
    values: tuple[str, ...]  # one per source, formatted
    severity: str  # UNFAIR, DIFFERS or INFO


def fact_differences(srcs: Sequence[Source]) -> list[FactDiff]:
    """Facts whose values are not the same on every source (unknown counts as a value)."""
    tables = [_fact_table(s) for s in srcs]
    names = list(dict.fromkeys(name for t in tables for name, _, _ in t))
    out = []
    for name in names:
        sev = next(sv for t in tables for n, _, sv in t if n == name)
        vals = tuple(show_fact(next((v for n, v, _ in t if n == name), None)) for t in tables)
        if len(set(vals)) > 1:
            out.append(FactDiff(name, vals, sev))
    order = {UNFAIR: 0, DIFFERS: 1, INFO: 2}
    return sorted(out, key=lambda d: order[d.severity])


def busy_at_start(source: Source) -> str | None:
    """A caution when the host's 1-minute load average at the run's start exceeded half its CPUs."""
    load = str(source.facts.get("loadavg_at_start") or "").split()
    cpus = source.cpu_count or 1
    try:
        one = float(load[0])
    except (IndexError, ValueError):
        return None
    if one > 0.5 * cpus:
        return f"{source.letter}: load average {one:g} on {cpus} CPU(s) at the start: other work ran beside the benchmark"
    return None


@dataclass(frozen=True)
class Fairness:
    fair: bool
    reasons: tuple[str, ...]  # why not like for like (empty when fair)
    cautions: tuple[str, ...]  # what may add noise or explain differences, without making it unfair


def fairness(srcs: Sequence[Source], diffs: Sequence[FactDiff] | None = None) -> Fairness:
    """Whether the sources can be compared like for like, and why not."""
    diffs = fact_differences(srcs) if diffs is None else diffs
    reasons = []
    for d in diffs:
        if d.severity == UNFAIR:
            reasons.append(f"{d.name} differs: " + " vs ".join(f"{s.letter} {v}" for s, v in zip(srcs, d.values)))
    emulated = [s.letter for s in srcs if s.emulated]
    if emulated and len(emulated) < len(srcs):
        reasons.insert(0, f"{', '.join(emulated)} ran under emulation: those numbers measure the emulator, "
                          "not the hardware, and are not compared as native performance")
    cautions = [c for c in (busy_at_start(s) for s in srcs) if c]
    kern = [d for d in diffs if d.name in ("kernel", "kernel build", "splicebench revision", "program build")]
    for d in kern:
        cautions.append(f"{d.name} differs ({' vs '.join(d.values)}): if that is the change under test, "
                        "the comparison measures it; otherwise it may explain the differences")
    return Fairness(not reasons, tuple(reasons), tuple(cautions))


# ---------------------------------------------------------------------------------------------
# Alignment


def _norm(v: Any) -> Any:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, str) and v == "":
        return None
    return v


@dataclass(frozen=True)
class Key:
    """What a group measured: the server and every parameter the sample ran with."""

    server: str
    kind: str
    params: tuple[tuple[str, Any], ...]

    def label(self, varying: Iterable[str] | None = None) -> str:
        shown = [(k, v) for k, v in self.params if varying is None or k in set(varying)]
        from splicebench.scenario import format_param

        bits = [f"{k.removeprefix('opt_')}={format_param(k.removeprefix('opt_'), v)}" for k, v in shown if k != "workload"]
        return self.server + (f" · {' '.join(bits)}" if bits else "")


def row_key(row: Mapping[str, Any]) -> Key:
    params = tuple((c, _norm(row.get(c))) for c in PARAM_COLUMNS if _norm(row.get(c)) is not None)
    return Key(str(row["server"]), str(row.get("server_kind") or row["server"]), params)


@dataclass(frozen=True)
class Group:
    source: Source
    key: Key
    measured: pd.DataFrame  # measured samples with status ok
    n_measured: int  # measured samples, whatever their status
    warmup: pd.DataFrame  # warm-up samples with status ok (shown, never used)
    hist: list[stats.Bucket]  # merged histogram of the measured ok samples

    def values(self, column: str):
        return stats.clean(self.measured[column]) if column in self.measured else stats.clean([])

    def percentiles(self) -> dict[str, float]:
        return stats.hist_percentiles(self.hist) if self.hist else {n: math.nan for n, _ in stats.PERCENTILES}

    @property
    def n_hist_samples(self) -> int:
        return sum(n for _, _, n in self.hist)


def groups_of(source: Source) -> dict[Key, Group]:
    df = source.samples.sort_values("seq")
    keys = [row_key(r) for r in df.to_dict("records")]
    out: dict[Key, Group] = {}
    for key in dict.fromkeys(keys):
        sel = df[[k == key for k in keys]]
        measured_all = sel[sel["phase"] == "measured"]
        ok = measured_all[measured_all["status"] == "ok"]
        warm = sel[(sel["phase"] == "warmup") & (sel["status"] == "ok")]
        hists = [source.run.hists[s] for s in ok["sample_id"].astype(str) if s in source.run.hists]
        out[key] = Group(source, key, ok, int(len(measured_all)), warm, stats.merge_histograms(hists))
    return out


@dataclass(frozen=True)
class Alignment:
    sources: tuple[Source, ...]
    keys: tuple[Key, ...]  # in order of first appearance
    groups: dict[tuple[int, Key], Group]  # (source index, key) -> group
    varying: tuple[str, ...]  # parameter columns whose value differs between keys

    def present(self, key: Key) -> list[Source]:
        return [s for s in self.sources if (s.index, key) in self.groups]

    def each_group(self):
        """(source, key, group) for every group measured, source by source, keys in order."""
        for s in self.sources:
            for k in self.keys:
                g = self.groups.get((s.index, k))
                if g is not None:
                    yield s, k, g

    def unmatched(self) -> list[tuple[Key, list[Source]]]:
        """Keys not measured by every source."""
        return [(k, self.present(k)) for k in self.keys if len(self.present(k)) < len(self.sources)]

    def common_params(self) -> list[tuple[str, Any]]:
        if not self.keys:
            return []
        first = dict(self.keys[0].params)
        return [(c, v) for c, v in self.keys[0].params if c not in self.varying
                and all(dict(k.params).get(c) == first.get(c) for k in self.keys)]


def align(srcs: Sequence[Source]) -> Alignment:
    groups: dict[tuple[int, Key], Group] = {}
    keys: list[Key] = []
    for s in srcs:
        for k, g in groups_of(s).items():
            groups[(s.index, k)] = g
            if k not in keys:
                keys.append(k)
    cols = list(dict.fromkeys(c for k in keys for c, _ in k.params))
    varying = tuple(c for c in cols if len({dict(k.params).get(c) for k in keys}) > 1)
    return Alignment(tuple(srcs), tuple(keys), groups, varying)


# ---------------------------------------------------------------------------------------------
# Statistics per aligned group


@dataclass(frozen=True)
class MetricComparison:
    key: Key
    metric: analysis.Metric
    ref: Group
    other: Group
    ref_ci: stats.MedianCI
    other_ci: stats.MedianCI
    ratio: stats.Ratio  # other / ref
    test: stats.TwoSampleTest  # verdict from the adjusted p-value
    p_raw: float
    ref_cv: float
    other_cv: float

    @property
    def noisy(self) -> bool:
        return any(math.isfinite(c) and c > stats.NOISY_CV for c in (self.ref_cv, self.other_cv))


def compare(alignment: Alignment, metrics: Sequence[analysis.Metric] = COMPARE_METRICS,
            alpha: float = stats.ALPHA) -> list[MetricComparison]:
    """Every source after the first against the first, for each key both measured and each metric.

    p-values are adjusted (Benjamini-Hochberg) over all comparisons returned, and verdicts use
    the adjusted value."""
    if not alignment.sources:
        return []
    ref_src = alignment.sources[0]
    pairs = []
    for other_src in alignment.sources[1:]:
        for key in alignment.keys:
            ref = alignment.groups.get((ref_src.index, key))
            other = alignment.groups.get((other_src.index, key))
            if ref is not None and other is not None:
                pairs.append((key, ref, other))
    return compare_groups(pairs, metrics, alpha)


def compare_groups(pairs: Sequence[tuple[Key, Group, Group]],
                   metrics: Sequence[analysis.Metric] = COMPARE_METRICS,
                   alpha: float = stats.ALPHA) -> list[MetricComparison]:
    """Each (key, ref, other) pair on each metric either side measured; p-values adjusted
    (Benjamini-Hochberg) over all comparisons returned, verdicts from the adjusted value."""
    pending = []
    for key, ref, other in pairs:
        for m in metrics:
            a, b = ref.values(m.column), other.values(m.column)
            if len(a) == 0 and len(b) == 0:
                continue
            raw = stats.compare_samples(a, b, higher_is_better=m.higher_is_better, alpha=alpha)
            pending.append((key, m, ref, other, a, b, raw))
    adjusted = stats.adjust_p_values([t.p_value for *_, t in pending])
    out = []
    for (key, m, ref, other, a, b, raw), p_adj in zip(pending, adjusted):
        test = stats.compare_samples(a, b, higher_is_better=m.higher_is_better, alpha=alpha,
                                     p_value=p_adj if math.isfinite(p_adj) else None)
        out.append(MetricComparison(key, m, ref, other, stats.median_ci(a), stats.median_ci(b),
                                    stats.ratio_ci(a, b), test, raw.p_value, stats.cv(a), stats.cv(b)))
    return out


def architectures(srcs: Sequence[Source]) -> list[str]:
    return list(dict.fromkeys(s.arch for s in srcs))


def needs_arch_section(srcs: Sequence[Source]) -> bool:
    return len(architectures(srcs)) > 1
