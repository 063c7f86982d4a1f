"""Publishable sections and the comparison report: view-models, charts, one self-contained HTML file.

- `render_compare` / `write_compare`: `invoke compare RUN_A RUN_B ...`: one report from several
  runs: fairness verdict at the top, host facts that differ, ratios with CIs and significance
  per aligned group, merged latency percentiles, the architecture section when architectures
  differ, every run's scenario and manifest, and the samples embedded as CSV.
- `run_sections`: the same statistics for a single run (servers against the baseline server),
  used by report.py: significance, noise, warm-up, merged percentiles, adaptive repetitions, the
  architecture section when the run's hosts differ in architecture, downloads.

As in report.py: view-model dataclasses hold formatted strings; templates only loop and print;
one autoescaping Environment; `|safe` only for the SVG made by the chart functions here. Output is
deterministic for the same inputs apart from the "generated" timestamp.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from splicebench.analysis import summary as analysis
from splicebench.report import charts
from splicebench.report import export
from splicebench.analysis import stats
from splicebench.analysis.compare import (Alignment, Group, MetricComparison, RunData, Source, align, architectures,
                      compare, compare_groups, emulation, fact_differences, fairness, needs_arch_section, show_fact, sources)
from splicebench.report.run_report import ChartView
from splicebench.util.files import atomic_write_text
from splicebench.units import format_ns, format_rate

# ---------------------------------------------------------------------------------------------
# Formatting


def _finite(x: Any) -> bool:
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def fmt_metric(column: str, v: Any) -> str:
    if not _finite(v):
        return "n/a"
    v = float(v)
    if column == "throughput_gib_s":
        return format_rate(v * (1 << 30))
    if column.startswith("lat_"):
        return format_ns(v * 1e3)
    return f"{v:.3f}" if v < 10 else f"{v:.1f}"


def fmt_ci(lo: Any, hi: Any, fmt) -> str:
    if not (_finite(lo) and _finite(hi)):
        return "n/a"
    return f"[{fmt(lo)}, {fmt(hi)}]"


def fmt_ratio(v: Any) -> str:
    return f"{float(v):.3f}x" if _finite(v) else "n/a"


def fmt_p(p: Any) -> str:
    if not _finite(p):
        return "n/a"
    p = float(p)
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def fmt_pct(v: Any) -> str:
    return f"{100 * float(v):.1f} %" if _finite(v) else "n/a"


def fmt_delta(t: stats.TwoSampleTest) -> str:
    return "n/a" if not _finite(t.delta) else f"{t.delta:+.2f} ({t.magnitude})"


SHORT_METRIC = {
    "throughput_gib_s": "throughput",
    "lat_p50_us": "latency p50",
    "lat_p99_us": "latency p99",
    "proc_cpu_s_per_gib": "server CPU s/GiB",
    "host_cpu_s_per_gib": "host CPU s/GiB",
}

VERDICT_TEXT = {
    stats.BETTER: "better",
    stats.WORSE: "worse",
    stats.NOT_SIGNIFICANT: "not significant",
    stats.TOO_FEW: "too few samples",
    stats.NO_DATA: "no data",
}


def verdict_class(v: str) -> str:
    return {stats.BETTER: "better", stats.WORSE: "worse"}.get(v, "ns")


# ---------------------------------------------------------------------------------------------
# View-models


@dataclass(frozen=True)
class ComparisonRowView:
    group: str
    metric: str
    ref: str
    ref_ci: str
    other_label: str
    other: str
    other_ci: str
    ratio: str
    ratio_ci: str
    p: str
    p_raw: str
    delta: str
    verdict: str
    verdict_class: str
    noisy: bool
    n: str


@dataclass(frozen=True)
class PercentileRowView:
    source: str
    group: str
    n_samples: str  # measured samples merged
    n_latencies: str  # latency values in the merged histogram
    p50: str
    p90: str
    p99: str
    p999: str
    emulated: bool


@dataclass(frozen=True)
class NoiseRowView:
    source: str
    group: str
    n: str
    median: str
    median_ci: str
    ci_width: str
    cv: str
    noisy: bool
    warmup: str  # warm-up values (not used)


@dataclass(frozen=True)
class FactRowView:
    name: str
    values: list[str]
    severity: str


@dataclass(frozen=True)
class ArchRowView:
    group: str
    n: str
    throughput: str
    throughput_ci: str
    per_core: str
    per_core_ghz: str
    p50: str
    p99: str
    host_cpu: str
    noisy: bool


@dataclass(frozen=True)
class ArchSourceView:
    letter: str
    title: str
    emulated: bool
    emulation_note: str
    cpu: str
    rows: list[ArchRowView]
    chart: ChartView


@dataclass(frozen=True)
class ArchColumnView:
    arch: str
    sources: list[ArchSourceView]


@dataclass(frozen=True)
class ArchView:
    columns: list[ArchColumnView]
    notes: list[str]


@dataclass(frozen=True)
class DownloadView:
    csv_name: str
    csv_href: str
    csv_rows: int
    csv_columns: int
    json_name: str
    json_href: str
    documents: list[tuple[str, str, str]]  # (id, title, text) shown in <details>


@dataclass(frozen=True)
class AdaptiveView:
    policy: str
    rows: list[tuple[str, str, str, str, bool]]  # (group, n, CI width, outcome, bound hit)
    any_bound_hit: bool


@dataclass(frozen=True)
class RunSectionsView:
    """What report.py adds to a single run's report."""

    comparisons: list[ComparisonRowView]
    baseline: str
    percentiles: list[PercentileRowView]
    noise: list[NoiseRowView]
    adaptive: AdaptiveView | None
    arch: ArchView | None
    downloads: DownloadView
    method: list[str]
    noisy_count: int
    # (server host, cell, server label) -> verdict of its throughput against the baseline
    throughput_verdicts: dict[tuple[str, int, str], str] = field(default_factory=dict)


@dataclass(frozen=True)
class SourceView:
    letter: str
    run_id: str
    scenario: str
    host: str
    arch: str
    emulated: bool
    started: str
    status: str
    counts: str


@dataclass(frozen=True)
class CompareView:
    title: str
    generated_at: str
    sources: list[SourceView]
    fair: bool
    unfair_reasons: list[str]
    cautions: list[str]
    facts: list[FactRowView]
    fact_headers: list[str]
    common: str
    comparisons: list[ComparisonRowView]
    unmatched: list[str]
    charts: list[ChartView]
    percentiles: list[PercentileRowView]
    noise: list[NoiseRowView]
    arch: ArchView | None
    downloads: DownloadView
    method: list[str]


# ---------------------------------------------------------------------------------------------
# Charts


def _verdict_color(v: str) -> str:
    return {stats.BETTER: "#2e7d32", stats.WORSE: "#c62828"}.get(v, "#8c8c8c")


def ratio_chart(comps: Sequence[MetricComparison], metric: analysis.Metric, varying: Sequence[str]) -> str:
    """Forest plot: ratio other/reference per group, 95 % CI, colour by verdict, line at 1."""
    import matplotlib.pyplot as plt

    rows = [c for c in comps if c.metric.column == metric.column]
    labels = [f"{c.other.source.letter} / {c.ref.source.letter}: {c.key.label(varying)}" for c in rows]
    fig, ax = plt.subplots(figsize=(6.8, 0.9 + 0.38 * max(1, len(rows))))
    y = np.arange(len(rows))[::-1]
    for yi, c in zip(y, rows):
        color = _verdict_color(c.test.verdict)
        if _finite(c.ratio.lo) and _finite(c.ratio.hi):
            ax.plot([c.ratio.lo, c.ratio.hi], [yi, yi], "-", color=color, lw=2)
        if _finite(c.ratio.value):
            ax.plot([c.ratio.value], [yi], "o", color=color, ms=6,
                    mfc=color if c.test.significant else "white")
    ax.axvline(1.0, color="#333", lw=1, ls="--")
    ax.set_yticks(y)
    ax.set_yticklabels(labels)
    ax.set_xscale("log")
    from matplotlib.ticker import FuncFormatter, LogLocator

    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_minor_locator(LogLocator(base=10, subs=(3.0, 4.0, 6.0, 7.0, 8.0, 9.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
    ax.set_xlabel(f"{metric.title}: ratio of medians (log scale; "
                  f"{'right' if metric.higher_is_better else 'left'} of 1 is better)")
    ax.set_title(f"{metric.title} ratio, 95 % CI", loc="left")
    ax.grid(axis="x", alpha=0.3, which="both")
    return charts._svg(fig)


def percentile_chart(groups: Sequence[tuple[str, str, dict[str, float], bool]]) -> str:
    """Merged-histogram latency percentiles (log scale): one line per (source, group)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.8, 3.4))
    xs = np.arange(len(stats.PERCENTILES))
    for i, (src, grp, pct, emulated) in enumerate(groups):
        ys = [pct.get(n, math.nan) / 1e3 for n, _ in stats.PERCENTILES]
        if not any(_finite(v) for v in ys):
            continue
        ax.plot(xs, ys, "o--" if emulated else "o-", color=charts.PALETTE[i % len(charts.PALETTE)], ms=4,
                label=f"{src}: {grp}" + (" (emulated)" if emulated else ""))
    ax.set_xticks(xs)
    ax.set_xticklabels([n.replace("p999", "p99.9") for n, _ in stats.PERCENTILES])
    ax.set_yscale("log")
    ax.set_ylabel("microseconds (log)")
    ax.set_title("Latency percentiles from merged histograms", loc="left")
    ax.grid(axis="y", alpha=0.3, which="both")
    ax.legend(frameon=False, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    return charts._svg(fig)


def arch_chart(source: Source, rows: Sequence[tuple[str, Group]], ymax: float | None) -> str:
    """Throughput per group on one host: median bars, CI whiskers, samples as dots, warm-up hollow."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.2, 2.9))
    x = np.arange(len(rows))
    emulated = source.emulated
    for i, (label, g) in enumerate(rows):
        vals = g.values("throughput_gib_s")
        ci = stats.median_ci(vals)
        med = ci.median if len(vals) else math.nan
        color = "#bdbdbd" if emulated else charts.PALETTE[i % len(charts.PALETTE)]
        ax.bar([i], [med if _finite(med) else 0], 0.6, color=color, hatch="///" if emulated else "",
               edgecolor="#555" if emulated else color)
        if _finite(ci.lo) and _finite(ci.hi):
            ax.errorbar([i], [med], yerr=[[med - ci.lo], [ci.hi - med]], color="#333", capsize=3, lw=1)
        if len(vals):
            ax.plot(i + np.linspace(-0.15, 0.15, len(vals)), vals, "o", ms=2.5, color="#222", alpha=0.6)
        warm = stats.clean(g.warmup["throughput_gib_s"]) if "throughput_gib_s" in g.warmup else []
        if len(warm):
            ax.plot(i + np.linspace(-0.2, 0.2, len(warm)) + 0.22, warm, "o", ms=3, mfc="white", mec="#777")
    ax.set_xticks(x)
    ax.set_xticklabels([r[0] for r in rows], rotation=15 if len(rows) > 3 else 0)
    ax.set_ylabel("GiB/s")
    if ymax:
        ax.set_ylim(0, ymax)
    else:
        ax.set_ylim(bottom=0)
    title = f"{source.letter}: {source.arch}"
    if emulated:
        title += " EMULATED: not native performance"
    ax.set_title(title, loc="left", color="#b3261e" if emulated else "#1d1f21")
    ax.grid(axis="y", alpha=0.3)
    return charts._svg(fig)


# ---------------------------------------------------------------------------------------------
# Builders


def comparison_rows(comps: Sequence[MetricComparison], varying: Sequence[str]) -> list[ComparisonRowView]:
    out = []
    for c in comps:
        col = c.metric.column
        fmt = lambda v, col=col: fmt_metric(col, v)  # noqa: E731
        out.append(ComparisonRowView(
            group=c.key.label(varying),
            metric=SHORT_METRIC.get(col, c.metric.title),
            ref=fmt(c.ref_ci.median),
            ref_ci=fmt_ci(c.ref_ci.lo, c.ref_ci.hi, fmt),
            other_label=f"{c.other.source.letter} vs {c.ref.source.letter}",
            other=fmt(c.other_ci.median),
            other_ci=fmt_ci(c.other_ci.lo, c.other_ci.hi, fmt),
            ratio=fmt_ratio(c.ratio.value),
            ratio_ci=fmt_ci(c.ratio.lo, c.ratio.hi, lambda v: f"{float(v):.3f}"),
            p=fmt_p(c.test.p_value),
            p_raw=fmt_p(c.p_raw),
            delta=fmt_delta(c.test),
            verdict=VERDICT_TEXT.get(c.test.verdict, c.test.verdict),
            verdict_class=verdict_class(c.test.verdict),
            noisy=c.noisy,
            n=f"{c.test.n_a} / {c.test.n_b}",
        ))
    return out


def percentile_rows(al: Alignment) -> list[PercentileRowView]:
    out = []
    for s in al.sources:
        for k in al.keys:
            g = al.groups.get((s.index, k))
            if g is None:
                continue
            p = g.percentiles()
            out.append(PercentileRowView(
                source=s.letter, group=k.label(al.varying), n_samples=str(len(g.measured)),
                n_latencies=f"{g.n_hist_samples:,}" if g.hist else "no histograms",
                p50=format_ns(p["p50"]), p90=format_ns(p["p90"]), p99=format_ns(p["p99"]), p999=format_ns(p["p999"]),
                emulated=s.emulated))
    return out


def noise_rows(al: Alignment, column: str = "throughput_gib_s") -> list[NoiseRowView]:
    out = []
    fmt = lambda v: fmt_metric(column, v)  # noqa: E731
    for s in al.sources:
        for k in al.keys:
            g = al.groups.get((s.index, k))
            if g is None:
                continue
            vals = g.values(column)
            ci = stats.median_ci(vals)
            c = stats.cv(vals)
            warm = stats.clean(g.warmup[column]) if column in g.warmup else []
            out.append(NoiseRowView(
                source=s.letter, group=k.label(al.varying), n=f"{len(vals)}/{g.n_measured}",
                median=fmt(ci.median), median_ci=fmt_ci(ci.lo, ci.hi, fmt),
                ci_width=fmt_pct(ci.rel_width) if len(vals) >= stats.min_n_for_median_ci() else
                f"unknown (< {stats.min_n_for_median_ci()} samples)",
                cv=fmt_pct(c), noisy=bool(_finite(c) and c > stats.NOISY_CV),
                warmup=", ".join(fmt(v) for v in warm) or "none"))
    return out


def arch_view(al: Alignment) -> ArchView | None:
    """Per-architecture tables and charts side by side; None when all sources share one architecture."""
    if not needs_arch_section(list(al.sources)):
        return None
    ymax_vals = [float(np.max(g.values("throughput_gib_s"))) for g in al.groups.values()
                 if len(g.values("throughput_gib_s")) and not g.source.emulated]
    ymax_vals += [float(np.max(stats.clean(g.warmup["throughput_gib_s"]))) for g in al.groups.values()
                  if "throughput_gib_s" in g.warmup and len(stats.clean(g.warmup["throughput_gib_s"]))
                  and not g.source.emulated]
    ymax = max(ymax_vals) * 1.1 if ymax_vals else None
    columns = []
    for arch in architectures(list(al.sources)):
        views = []
        for s in [x for x in al.sources if x.arch == arch]:
            rows, chart_rows = [], []
            for k in al.keys:
                g = al.groups.get((s.index, k))
                if g is None:
                    continue
                vals = g.values("throughput_gib_s")
                ci = stats.median_ci(vals)
                med = ci.median
                cores, ghz = s.cpu_count, s.ghz
                native = not s.emulated
                per_core = med / cores if native and cores and _finite(med) else math.nan
                per_ghz = med / (cores * ghz) if native and cores and ghz and _finite(med) else math.nan
                p = g.percentiles()
                label = k.label(al.varying)
                rows.append(ArchRowView(
                    group=label, n=f"{len(vals)}/{g.n_measured}",
                    throughput=fmt_metric("throughput_gib_s", med),
                    throughput_ci=fmt_ci(ci.lo, ci.hi, lambda v: fmt_metric("throughput_gib_s", v)),
                    per_core=("emulated" if not native else
                              fmt_metric("throughput_gib_s", per_core) if _finite(per_core) else "unknown"),
                    per_core_ghz=("emulated" if not native else
                                  fmt_metric("throughput_gib_s", per_ghz) if _finite(per_ghz) else "clock unknown"),
                    p50=format_ns(p["p50"]), p99=format_ns(p["p99"]),
                    host_cpu=fmt_metric("host_cpu_s_per_gib",
                                        stats.median_ci(g.values("host_cpu_s_per_gib")).median),
                    noisy=stats.is_noisy(vals)))
                chart_rows.append((k.server, g))
            emulated = s.emulated
            views.append(ArchSourceView(
                letter=s.letter, title=f"{s.run.run_id} · host {s.host}", emulated=emulated,
                emulation_note=(emulation(s.facts)[1] + ": these numbers measure the emulator on the machine "
                                "that ran it, not the performance of this architecture") if emulated else "",
                cpu=f"{show_fact(s.facts.get('cpu_model'))} × {show_fact(s.cpu_count)}"
                    + (f" at {s.ghz:g} GHz" if s.ghz else ", clock unknown"),
                rows=rows,
                chart=ChartView(f"arch-{s.index}", f"{s.letter}: {arch}", arch_chart(s, chart_rows, ymax),
                                "Throughput per server: bars are medians of the measured samples, whiskers the "
                                "95 % CI of the median, dots the samples, hollow dots the warm-up samples "
                                "(not used)." + (" Hatched grey: emulated." if emulated else ""))))
        columns.append(ArchColumnView(arch, views))
    notes = ["Per core: median throughput divided by the host's CPU count; per core·GHz: divided again by "
             "the nominal clock where the host reports one. Both put machines of different size on one scale "
             "for orientation; they are not measurements."]
    if any(s.emulated for s in al.sources):
        notes.insert(0, "Hosts marked EMULATED ran under full-system emulation (QEMU TCG, detected on the host): "
                        "their numbers prove that the data paths work on that architecture and say nothing "
                        "about its hardware. They are not normalised and not compared with native hosts.")
    return ArchView(columns, notes)


def downloads(runs: Sequence[RunData], stem: str, scenarios: bool = True) -> DownloadView:
    table = export.samples_table([(r.manifest, r.samples) for r in runs])
    csv = export.csv_text(table)
    manifests = [r.manifest for r in runs]
    mjson = json.dumps(manifests if len(manifests) > 1 else manifests[0], indent=2, sort_keys=True, default=str)
    docs = []
    for r in runs if scenarios else ():
        text = r.manifest.get("scenario_text") or json.dumps(r.manifest.get("scenario"), indent=2)
        docs.append((f"scenario-{r.run_id}", f"Scenario of run {r.run_id} ({r.scenario_name})", str(text)))
    docs.append(("manifest", "Manifest" + ("s" if len(runs) > 1 else "") + " (JSON)", mjson))
    return DownloadView(csv_name=f"{stem}-samples.csv", csv_href=export.data_uri(csv, "text/csv"),
                        csv_rows=len(table), csv_columns=len(table.columns),
                        json_name=f"{stem}-manifest.json", json_href=export.data_uri(mjson, "application/json"),
                        documents=docs)


def stats_method() -> list[str]:
    lo_n = stats.min_n_for_median_ci()
    return [
        "Medians and their 95 % confidence intervals use only measured samples with status ok; warm-up "
        "samples are shown but never used. The CI of a median is the exact distribution-free interval "
        f"between two order statistics (scipy.stats.quantile_test); it needs at least {lo_n} samples and is "
        "reported as unknown below that.",
        "Differences are tested on the raw samples with the two-sided Mann-Whitney U test "
        "(scipy.stats.mannwhitneyu); p-values are adjusted for the number of comparisons in the table "
        "(Benjamini-Hochberg), and a difference counts as better or worse only when the adjusted p is below "
        f"{stats.ALPHA}. Effect size: Cliff's delta (the probability that a value of the compared side exceeds "
        "one of the reference minus the reverse; magnitude after Romano et al.). With very few samples no "
        "p-value can get below the threshold: such rows say 'too few samples'.",
        "Ratios are of medians, with a 95 % percentile-bootstrap CI (scipy.stats.bootstrap, "
        f"{stats.N_RESAMPLES:,} resamples, both sides resampled independently, fixed seed).",
        f"Noisy: coefficient of variation (standard deviation / mean) above {stats.NOISY_CV:.0%}.",
        "Latency percentiles are taken from the client histograms of all measured samples merged by "
        "summing the counts of equal buckets (never by averaging percentiles). The value shown is the "
        "nearest-rank percentile's bucket upper end (the largest value the bucket holds): at most 1/64 "
        "(1.6 %) above the exact value, never below it.",
    ]


def _source_view(s: Source) -> SourceView:
    m = s.run.manifest
    counts = m.get("counts") or {}
    return SourceView(s.letter, s.run.run_id, s.run.scenario_name, s.host, s.arch, s.emulated,
                      str(m.get("started_at", "")), str(m.get("status", "unknown")),
                      ", ".join(f"{v} {k}" for k, v in counts.items()))


def build_compare_view(runs: Sequence[RunData], generated_at: str | None = None) -> CompareView:
    srcs = sources(runs)
    if not srcs:
        raise ValueError("the runs have no samples")
    al = align(srcs)
    comps = compare(al)
    diffs = fact_differences(srcs)
    fair = fairness(srcs, diffs)
    chart_list = []
    for m in (analysis.METRIC_BY_COLUMN["throughput_gib_s"], analysis.METRIC_BY_COLUMN["lat_p99_us"]):
        if any(c.metric.column == m.column for c in comps):
            chart_list.append(ChartView(f"ratio-{m.column}", f"{m.title} ratios", ratio_chart(comps, m, al.varying),
                                        "Filled dot: significant after adjustment; hollow: not significant. "
                                        "Green better, red worse, grey not significant."))
    pct_groups = [(s.letter, k.label(al.varying), al.groups[(s.index, k)].percentiles(), s.emulated)
                  for s in srcs for k in al.keys if (s.index, k) in al.groups]
    if any(_finite(v) for *_, p, _ in pct_groups for v in p.values()):
        chart_list.append(ChartView("percentiles", "Latency percentiles", percentile_chart(pct_groups),
                                    "Merged histograms of all measured samples of each group; dashed: emulated."))
    from splicebench.scenario import format_param

    common = " ".join(f"{c.removeprefix('opt_')}={format_param(c.removeprefix('opt_'), v)}"
                      for c, v in al.common_params())
    title = "splicebench comparison: " + " vs ".join(f"{s.letter} {s.run.scenario_name}" for s in srcs)
    stem = "compare-" + "-".join(r.run_id for r in runs)
    return CompareView(
        title=title,
        generated_at=generated_at or datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        sources=[_source_view(s) for s in srcs],
        fair=fair.fair, unfair_reasons=list(fair.reasons), cautions=list(fair.cautions),
        facts=[FactRowView(d.name, list(d.values), d.severity) for d in diffs],
        fact_headers=[s.letter for s in srcs],
        common=common,
        comparisons=comparison_rows(comps, al.varying),
        unmatched=[f"{k.label()} (only in {', '.join(s.letter for s in present) or 'none'})"
                   for k, present in al.unmatched()],
        charts=chart_list,
        percentiles=percentile_rows(al),
        noise=noise_rows(al),
        arch=arch_view(al),
        downloads=downloads(runs, stem),
        method=stats_method(),
    )


def adaptive_view(manifest: Mapping[str, Any], al: Alignment) -> AdaptiveView | None:
    """How adaptive repetitions ended per group, when the scenario used them."""
    reps = (manifest.get("scenario") or {}).get("repetitions") or {}
    target = reps.get("target_ci_width")
    if not target:
        return None
    policy = stats.RepetitionPolicy(int(reps.get("min", 1)), int(reps.get("max", 1)), float(target))
    rows = []
    for s in al.sources:
        for k in al.keys:
            g = al.groups.get((s.index, k))
            if g is None:
                continue
            d = stats.enough_repetitions(g.values("throughput_gib_s"), policy, g.n_measured)
            outcome = {stats.TARGET_MET: "target met", stats.MAX_REACHED: "maximum reached: target NOT met",
                       stats.CONTINUE: "stopped early (run interrupted or stopped)"}[d.reason]
            rows.append((k.label(al.varying) + ("" if len(al.sources) == 1 else f" on {s.host}"),
                         f"{d.n}/{g.n_measured}", fmt_pct(d.rel_width), outcome, d.bound_hit))
    return AdaptiveView(
        policy=f"at least {policy.minimum}, at most {policy.maximum} measured repetitions; stop when the 95 % CI "
               f"of the median throughput is at most {policy.target_ci_width:.1%} of the median wide",
        rows=rows, any_bound_hit=any(r[4] for r in rows))


def run_sections(run: RunData, baseline: str) -> RunSectionsView:
    """Statistics sections of a single run's report: each server against the baseline server."""
    srcs = sources([run])
    al = align(srcs)
    pairs = []
    for s in srcs:
        for k in al.keys:
            if k.server == baseline:
                continue
            base_key = next((b for b in al.keys if b.server == baseline and _same_cell(b, k)), None)
            g = al.groups.get((s.index, k))
            bg = al.groups.get((s.index, base_key)) if base_key else None
            if g is not None and bg is not None:
                pairs.append((k, bg, g))
    comps = compare_groups(pairs)
    rows = comparison_rows(comps, al.varying)
    # In one run the "other" side is a server, not a run letter.
    many = len(srcs) > 1
    rows = [ComparisonRowView(**{**r.__dict__, "other_label": f"vs {baseline}" + (f" on {c.other.source.host}"
                                                                                   if many else "")})
            for r, c in zip(rows, comps)]
    noise = noise_rows(al)
    return RunSectionsView(
        comparisons=rows, baseline=baseline, percentiles=percentile_rows(al), noise=noise,
        adaptive=adaptive_view(run.manifest, al), arch=arch_view(al),
        downloads=downloads([run], f"{run.scenario_name}-{run.run_id}", scenarios=False),
        method=stats_method(), noisy_count=sum(1 for n in noise if n.noisy),
        throughput_verdicts={(c.other.source.host, int(c.other.measured["cell"].iloc[0]), c.key.server): c.test.verdict
                             for c in comps if c.metric.column == "throughput_gib_s" and len(c.other.measured)})


def _same_cell(a, b) -> bool:
    """Keys of two servers in the same matrix cell: equal workload parameters and common options.

    Server-specific options (opt_*) differ between servers by nature and are ignored."""
    pa = {c: v for c, v in a.params if not c.startswith("opt_")}
    pb = {c: v for c, v in b.params if not c.startswith("opt_")}
    return pa == pb


# ---------------------------------------------------------------------------------------------
# Rendering


def render_compare(view: CompareView) -> str:
    from splicebench.report.run_report import environment

    return environment().get_template("compare.html.j2").render(v=view)


def compare_report_path(reports_dir: Path, runs: Sequence[RunData]) -> Path:
    return Path(reports_dir) / ("compare-" + "-vs-".join(r.run_id for r in runs) + ".html")


def write_compare(runs: Sequence[RunData], reports_dir: Path, *, parquet: bool = True,
                  generated_at: str | None = None) -> tuple[Path, Path | None, CompareView]:
    """Write the comparison report (and the samples as Parquet next to it)."""
    view = build_compare_view(runs, generated_at)
    out = compare_report_path(reports_dir, runs)
    atomic_write_text(out, render_compare(view))
    pq_path = None
    if parquet:
        table = export.samples_table([(r.manifest, r.samples) for r in runs])
        pq_path = export.write_parquet(out.with_suffix(".parquet"), table, [r.manifest for r in runs])
    return out, pq_path, view


def text_summary(view: CompareView) -> str:
    """The comparison for the terminal: fairness, then one line per throughput comparison."""
    lines = []
    if not view.fair:
        lines.append("NOT LIKE FOR LIKE: " + "; ".join(view.unfair_reasons))
    for c in view.cautions:
        lines.append(f"caution: {c}")
    rows = [r for r in view.comparisons if r.metric == SHORT_METRIC["throughput_gib_s"]]
    if rows:
        head = ["group", "runs", "reference", "compared", "ratio", "95% CI", "p (adj.)", "verdict"]
        table = [[r.group, r.other_label, r.ref, r.other, r.ratio, r.ratio_ci, r.p,
                  r.verdict + (" (noisy)" if r.noisy else "")] for r in rows]
        widths = [max(len(str(x)) for x in col) for col in zip(head, *table)]
        fmt = "  ".join(f"{{:<{w}}}" for w in widths)
        lines += [fmt.format(*head), fmt.format(*["-" * w for w in widths])] + [fmt.format(*r) for r in table]
    for u in view.unmatched:
        lines.append(f"not compared: {u}")
    return "\n".join(lines)


def compare_runs(results_root: Path, reports_dir: Path, refs: Sequence[str]) -> tuple[Path, Path | None, str]:
    """`invoke compare`: load the runs, write the report and its Parquet samples, return the terminal summary."""
    from splicebench.analysis.compare import load_runs
    from splicebench.errors import UserError

    if len(refs) < 2:
        raise UserError("name at least two runs to compare (the first is the reference)")
    runs = load_runs(results_root, refs)
    out, pq, view = write_compare(runs, reports_dir)
    return out, pq, text_summary(view)


def merged_latency(run: RunData, host: str, cell: Any, server: str) -> dict[str, float] | None:
    """Percentiles of the merged histograms of one group's measured ok samples; None without histograms.

    `server` may be the report's "label @ host" form (server labels never contain spaces)."""
    server = str(server).split(" @ ", 1)[0]
    df = run.samples
    sel = df[(df["server_host"].astype(str) == str(host)) & (df["cell"] == cell) & (df["server"].astype(str) == server)
             & (df["phase"] == "measured") & (df["status"] == "ok")]
    hists = [run.hists[s] for s in sel["sample_id"].astype(str) if s in run.hists]
    if not hists:
        return None
    return stats.hist_percentiles(stats.merge_histograms(hists))


def summary_marks(x: RunSectionsView, summary) -> list[str]:
    """For each row of report.py's summary table: "" or a short mark for its throughput ratio
    ("n.s." not significant, "few" too few samples to tell), from the significance section."""
    marks = []
    for _, r in summary.iterrows():
        v = x.throughput_verdicts.get((str(r["server_host"]), int(r["cell"]), str(r["server"]).split(" @ ", 1)[0]))
        marks.append({stats.NOT_SIGNIFICANT: "n.s.", stats.TOO_FEW: "few", stats.NO_DATA: ""}.get(v, "") if v else "")
    return marks
