"""The report's "Where the CPU goes" section: perf counts per GiB and the profiles (pure + reading the
run's raw profile files).

perf counts (every sample where the kernel allowed the CPU sampler's events): medians over the measured ok samples of system calls,
context switches and CPU migrations per GiB verified, of the server's processes and of the host.
Profiles (scenario `profile: true`): per profile sample, the kernel and user functions with the
largest self share of the busy CPU samples, and a flame graph (report/flame.py). Where either is
missing the section says why (perf_note of the samples, the hosts' perf facts).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from splicebench.report import flame
from splicebench.report import format as fmt
from splicebench.results import perf

STAT_FIGURES = (("syscalls", "syscalls"), ("ctxsw", "ctx switches"), ("migrations", "migrations"))
TOP_KERNEL = 15
TOP_USER = 10
PERTURB_NOTE = ("Profiling perturbs: perf record samples every CPU about a thousand times a second and "
                "unwinds each stack, which slows the data path down (often by a third or more). The "
                "profile samples ran after the measured rounds and are excluded from every statistic, "
                "chart and table above; only this section uses them.")


@dataclass(frozen=True)
class StatRowView:
    cell: str
    server: str
    host: str
    n: int
    figures: list[str]  # server's per-GiB figures then the host's, in STAT_FIGURES order


@dataclass(frozen=True)
class FunctionView:
    name: str
    self_share: str
    total_share: str


@dataclass(frozen=True)
class ProfileView:
    sample_id: str
    server: str
    host: str
    cell: str
    samples: int
    idle: str  # share of all samples in which a CPU was idle
    other: str  # share of the busy samples outside the data path (other programs on the host)
    kernel_share: str  # of the data path's samples: running in the kernel
    kernel: list[FunctionView]
    user: list[FunctionView]
    graph: flame.FlameGraph
    files: list[str]
    note: str


@dataclass(frozen=True)
class PerfView:
    stat_columns: list[str]
    stat_rows: list[StatRowView]
    stat_note: str  # what the figures are, or why they are missing
    profiles: list[ProfileView]
    profile_notes: list[str]  # why profiles are missing
    profile_requested: bool
    perturb_note: str = PERTURB_NOTE
    min_share: str = fmt.percent(flame.MIN_SHARE)


def _cell(r: pd.Series) -> str:
    v = str(r.get("cell_label", ""))
    return "" if v in ("", "nan") else v


def _notes(frame: pd.DataFrame) -> list[str]:
    if "perf_note" not in frame:
        return []
    return list(dict.fromkeys(str(n) for n in frame["perf_note"] if isinstance(n, str) and n.strip()))


def _stat_rows(samples: pd.DataFrame) -> list[StatRowView]:
    cols = [f"perf_{scope}_{name}_per_gib" for scope in perf.SCOPES for name, _ in STAT_FIGURES]
    if any(c not in samples for c in cols):
        return []
    ok = samples[(samples["phase"] == "measured") & (samples["status"] == "ok")]
    rows = []
    for (_, host, server), grp in ok.groupby(["cell", "server_host", "server"], sort=False):
        have = grp.dropna(subset=cols[:1])
        if have.empty:
            continue
        meds = [pd.to_numeric(have[c], errors="coerce").median() for c in cols]
        rows.append(StatRowView(_cell(grp.iloc[0]), str(server), str(host), len(have), [fmt.count(m) for m in meds]))
    return rows


def _raw(run_dir: Path, raw_files: Any, suffix: str) -> Path | None:
    for rel in str(raw_files or "").split():
        if rel.endswith(suffix) and (run_dir / rel).is_file():
            return run_dir / rel
    return None


def _functions(folded: dict[str, int], kernel: bool, n: int, total: int) -> list[FunctionView]:
    return [FunctionView(f.name, fmt.share(f.self_share, total), fmt.share(f.total_share, total))
            for f in perf.top_functions(folded, kernel, n)]


def _profile(run_dir: Path, r: pd.Series) -> ProfileView | None:
    path = _raw(run_dir, r.get("raw_files"), ".profile.folded")
    if path is None:
        return None
    folded = perf.parse_folded(path.read_text(encoding="utf-8"))
    total, all_busy = sum(folded.values()), sum(perf.busy(folded).values())
    work = perf.data_path(folded)
    busy_n = sum(work.values())
    kernel_n = sum(n for s, n in work.items() if s.rsplit(";", 1)[-1].endswith(perf.KERNEL_SUFFIX))
    files = [rel for rel in str(r.get("raw_files") or "").split() if rel.endswith((".perf.data", ".profile.folded"))]
    status = str(r.get("status"))
    return ProfileView(
        sample_id=str(r["sample_id"]), server=str(r["server"]), host=str(r["server_host"]), cell=_cell(r),
        samples=total, idle=fmt.share((total - all_busy) / total if total else None, total),
        other=fmt.share((all_busy - busy_n) / all_busy if all_busy else None, all_busy),
        kernel_share=fmt.share(kernel_n / busy_n if busy_n else None, busy_n),
        kernel=_functions(work, True, TOP_KERNEL, busy_n), user=_functions(work, False, TOP_USER, busy_n),
        graph=flame.layout(work), files=files,
        note="" if status == "ok" else f"this profile sample's status is {status}: {r.get('error')}")


def build(run_dir: Path, samples: pd.DataFrame, manifest: dict[str, Any]) -> PerfView | None:
    """The section's view, or None for a run that neither tried perf nor asked for profiles (runs
    from before perf)."""
    requested = bool((manifest.get("scenario") or {}).get("profile"))
    hosts = manifest.get("hosts") or {}
    host_why = {n: (f.get("perf") or {}).get("why_not") for n, f in hosts.items() if isinstance(f.get("perf"), dict)}
    if "perf_note" not in samples and not requested and not host_why:
        return None
    stat_rows = _stat_rows(samples) if len(samples) else []
    measured = samples[samples["phase"] == "measured"] if len(samples) else samples
    if stat_rows:
        stat_note = ("Medians over the measured samples with status ok, per GiB verified, over exactly the "
                     "client's transfer (its start and end marks, the same window as CPU): system calls "
                     "(raw_syscalls:sys_enter), context switches and CPU migrations of the server's processes "
                     "(every thread of the server and its children, also those started during the sample), and "
                     "of the whole host (clients, kernel threads and anything else running included; the CPU "
                     "sampler's own left out). The CPU sampler counts them with perf_event_open and reads them "
                     "every 2 ms; the readings on either side of each mark bound each count (perf_*_unc in "
                     "samples.csv).")
    else:
        why = _notes(measured) or [f"{n}: {w}" for n, w in host_why.items() if w]
        stat_note = "perf counts are missing: " + ("; ".join(why) if why else "no sample recorded them.")
    profiles, profile_notes = [], []
    if requested and len(samples):
        prof = samples[samples["phase"] == "profile"]
        for _, r in prof.iterrows():
            view = _profile(Path(run_dir), r)
            if view is not None:
                profiles.append(view)
            else:
                why = r.get("perf_note") if isinstance(r.get("perf_note"), str) else r.get("error")
                profile_notes.append(f"no profile for {r['server']} ({r['sample_id']}, status {r['status']}): "
                                     f"{why if isinstance(why, str) and why else 'no folded stacks were recorded'}")
        if prof.empty:
            profile_notes.append("the run ended before its profile round")
    columns = [f"{scope} {label}/GiB" for scope in ("server", "host") for _, label in STAT_FIGURES]
    return PerfView(columns, stat_rows, stat_note, profiles, profile_notes, requested)
