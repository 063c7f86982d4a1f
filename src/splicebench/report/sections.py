"""The statistics sections both reports show, as view-models: comparisons with significance,
merged latency percentiles, noise and warm-up, adaptive repetitions, architectures side by side,
embedded downloads and the statistics method text.

Each builder takes analysis.compare's alignment (sources, aligned groups) or comparisons and
returns views from report/views.py with every number formatted by report/format.py. The run
report (through run_sections.py) and the comparison report (compare_report.py) both call them;
the templates _comparison_table, _percentiles_noise, _arch and _downloads print them.
"""

from __future__ import annotations

import json
import math
from typing import Any, Mapping, Sequence

import numpy as np

from splicebench.analysis import cpu, latency, stats
from splicebench.analysis.compare import (Alignment, Group, MetricComparison, RunData, Source, architectures,
                                          emulation, needs_arch_section, show_fact)
from splicebench.report import charts, export
from splicebench.report import format as fmt
from splicebench.report.views import (AdaptiveRowView, AdaptiveView, ArchColumnView, ArchRowView, ArchSourceView,
                                      ArchView, ChartView, ComparisonRowView, DownloadView, NoiseRowView,
                                      PercentileRowView)

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


def comparison_rows(comps: Sequence[MetricComparison], varying: Sequence[str]) -> list[ComparisonRowView]:
    """One row per comparison: both medians with CIs, ratio with CI, p (adjusted and raw), Cliff's delta."""
    out = []
    for c in comps:
        col = c.metric.column
        if col in cpu.POOLED:
            out.append(_cpu_comparison_row(c, varying))
            continue
        value = fmt.metric_formatter(col)
        out.append(ComparisonRowView(
            group=c.key.label(varying),
            metric=SHORT_METRIC.get(col, c.metric.title),
            ref=value(c.ref_ci.median),
            ref_ci=fmt.ci(c.ref_ci.lo, c.ref_ci.hi, value),
            other_label=f"{c.other.source.letter} vs {c.ref.source.letter}",
            other=value(c.other_ci.median),
            other_ci=fmt.ci(c.other_ci.lo, c.other_ci.hi, value),
            ratio=fmt.ratio(c.ratio.value),
            ratio_ci=fmt.ratio_ci(c.ratio.lo, c.ratio.hi),
            p=fmt.p_value(c.test.p_value),
            p_raw=fmt.p_value(c.p_raw),
            delta=fmt.cliffs_delta(c.test.delta, c.test.magnitude),
            verdict=VERDICT_TEXT.get(c.test.verdict, c.test.verdict),
            verdict_class=verdict_class(c.test.verdict),
            noisy=c.noisy,
            n=f"{c.test.n_a} / {c.test.n_b}",
        ))
    return out


def pooled_cpu(g: Group, metric: str) -> tuple[float, float]:
    """A group's CPU per GiB pooled over its measured samples, with its uncertainty (analysis.cpu)."""
    return cpu.pooled(g.measured, metric)


def _cpu_comparison_row(c: MetricComparison, varying: Sequence[str]) -> ComparisonRowView:
    """A comparison of a CPU metric: each side pooled with its resolution instead of a median of
    quantized per-sample figures; the ratio and its CI only to the digits both sides support."""
    (rv, ru), (ov, ou) = pooled_cpu(c.ref, c.metric.column), pooled_cpu(c.other, c.metric.column)
    rel = (ru / abs(rv) if fmt.is_number(ru) and rv else math.nan) + (ou / abs(ov) if fmt.is_number(ou) and ov
                                                                      else math.nan)
    rel = None if math.isnan(rel) else rel
    ratio = ov / rv if fmt.is_number(ov) and fmt.is_number(rv) and rv else math.nan
    def resolution(u: float) -> str:  # in place of a CI: the pooled figure's own resolution
        return f"± {u:.1g} s" if fmt.is_number(u) else "± n/a"

    return ComparisonRowView(
        group=c.key.label(varying), metric=SHORT_METRIC.get(c.metric.column, c.metric.title),
        ref=str(fmt.cpu_figure(rv, ru)), ref_ci=resolution(ru),
        other_label=f"{c.other.source.letter} vs {c.ref.source.letter}",
        other=str(fmt.cpu_figure(ov, ou)), other_ci=resolution(ou),
        ratio=fmt.ratio_resolved(ratio, rel), ratio_ci=fmt.ratio_ci_resolved(c.ratio.lo, c.ratio.hi, rel),
        p=fmt.p_value(c.test.p_value), p_raw=fmt.p_value(c.p_raw),
        delta=fmt.cliffs_delta(c.test.delta, c.test.magnitude),
        verdict=VERDICT_TEXT.get(c.test.verdict, c.test.verdict), verdict_class=verdict_class(c.test.verdict),
        noisy=c.noisy, n=f"{c.test.n_a} / {c.test.n_b}")


def percentile(p: dict[str, float], name: str, g) -> str:
    """Percentile `name` of a group's merged histogram, or "too few (n)" when its histogram holds
    fewer latency values than the percentile needs (analysis.latency.MIN_VALUES)."""
    n = float(g.n_hist_samples) if g.hist else math.nan
    return fmt.latency(p[name]) if latency.enough(name, n) else f"too few ({int(n)})"


def percentile_rows(al: Alignment) -> list[PercentileRowView]:
    """Latency percentiles of each group's merged histogram, per source (each only from enough values)."""
    out = []
    for s, k, g in al.each_group():
        p = g.percentiles()
        out.append(PercentileRowView(
            source=s.letter, group=k.label(al.varying), n_samples=str(len(g.measured)),
            n_latencies=f"{g.n_hist_samples:,}" if g.hist else "no histograms",
            p50=percentile(p, "p50", g), p90=percentile(p, "p90", g), p99=percentile(p, "p99", g),
            p999=percentile(p, "p999", g), emulated=s.emulated))
    return out


def noise_rows(al: Alignment, column: str = "throughput_gib_s") -> list[NoiseRowView]:
    """Spread of one metric per group: median with its order-statistics CI, CI width, CV, warm-up values."""
    out = []
    value = fmt.metric_formatter(column)
    for s, k, g in al.each_group():
        vals = g.values(column)
        ci = stats.median_ci(vals)
        c = stats.cv(vals)
        warm = stats.clean(g.warmup[column]) if column in g.warmup else []
        out.append(NoiseRowView(
            source=s.letter, group=k.label(al.varying), n=f"{len(vals)}/{g.n_measured}",
            median=value(ci.median), median_ci=fmt.ci(ci.lo, ci.hi, value),
            ci_width=fmt.percent(ci.rel_width) if len(vals) >= stats.min_n_for_median_ci() else
            f"unknown (< {stats.min_n_for_median_ci()} samples)",
            cv=fmt.percent(c), noisy=bool(fmt.is_number(c) and c > stats.NOISY_CV),
            warmup=", ".join(value(v) for v in warm) or "none"))
    return out


def adaptive_view(manifest: Mapping[str, Any], al: Alignment) -> AdaptiveView | None:
    """How adaptive repetitions ended per group, when the scenario used them."""
    reps = (manifest.get("scenario") or {}).get("repetitions") or {}
    target = reps.get("target_ci_width")
    if not target:
        return None
    policy = stats.RepetitionPolicy(int(reps.get("min", 1)), int(reps.get("max", 1)), float(target))
    rows = []
    for s, k, g in al.each_group():
        d = stats.enough_repetitions(g.values("throughput_gib_s"), policy, g.n_measured)
        outcome = {stats.TARGET_MET: "target met", stats.MAX_REACHED: "maximum reached: target NOT met",
                   stats.CONTINUE: "stopped early (run interrupted or stopped)"}[d.reason]
        rows.append(AdaptiveRowView(k.label(al.varying) + ("" if len(al.sources) == 1 else f" on {s.host}"),
                                    f"{d.n}/{g.n_measured}", fmt.percent(d.rel_width), outcome, d.bound_hit))
    return AdaptiveView(
        policy=f"at least {policy.minimum}, at most {policy.maximum} measured repetitions; stop when the 95 % CI "
               f"of the median throughput is at most {fmt.percent(policy.target_ci_width)} of the median wide",
        rows=rows, any_bound_hit=any(r.bound_hit for r in rows))


def _arch_rows(al: Alignment, s: Source) -> tuple[list[ArchRowView], list[tuple[str, Group]]]:
    """The table rows of one source in the architecture section, and its chart's (label, group) pairs."""
    throughput = fmt.metric_formatter("throughput_gib_s")
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
        per_core = med / cores if native and cores and fmt.is_number(med) else math.nan
        per_ghz = med / (cores * ghz) if native and cores and ghz and fmt.is_number(med) else math.nan
        p = g.percentiles()
        rows.append(ArchRowView(
            group=k.label(al.varying), n=f"{len(vals)}/{g.n_measured}",
            throughput=throughput(med),
            throughput_ci=fmt.ci(ci.lo, ci.hi, throughput),
            per_core=("emulated" if not native else
                      throughput(per_core) if fmt.is_number(per_core) else "unknown"),
            per_core_ghz=("emulated" if not native else
                          throughput(per_ghz) if fmt.is_number(per_ghz) else "clock unknown"),
            p50=percentile(p, "p50", g), p99=percentile(p, "p99", g),
            host_cpu=str(fmt.cpu_figure(*pooled_cpu(g, "host_cpu_s_per_gib"))),
            noisy=stats.is_noisy(vals)))
        chart_rows.append((k.server, g))
    return rows, chart_rows


def arch_view(al: Alignment) -> ArchView | None:
    """Per-architecture tables and charts side by side; None when all sources share one architecture."""
    if not needs_arch_section(list(al.sources)):
        return None
    native = [g for g in al.groups.values() if not g.source.emulated]
    ymax_vals = [float(np.max(g.values("throughput_gib_s"))) for g in native if len(g.values("throughput_gib_s"))]
    ymax_vals += [float(np.max(stats.clean(g.warmup["throughput_gib_s"]))) for g in native
                  if "throughput_gib_s" in g.warmup and len(stats.clean(g.warmup["throughput_gib_s"]))]
    ymax = max(ymax_vals) * 1.1 if ymax_vals else None
    columns = []
    for arch in architectures(list(al.sources)):
        views = []
        for s in [x for x in al.sources if x.arch == arch]:
            rows, chart_rows = _arch_rows(al, s)
            emulated = s.emulated
            views.append(ArchSourceView(
                letter=s.letter, title=f"{s.run.run_id} · host {s.host}", emulated=emulated,
                emulation_note=(emulation(s.facts)[1] + ": these numbers measure the emulator on the machine "
                                "that ran it, not the performance of this architecture") if emulated else "",
                cpu=f"{show_fact(s.facts.get('cpu_model'))} × {show_fact(s.cpu_count)}"
                    + (f" at {s.ghz:g} GHz" if s.ghz else ", clock unknown"),
                rows=rows,
                chart=ChartView(f"arch-{s.index}", f"{s.letter}: {arch}", charts.arch_chart(s, chart_rows, ymax),
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
    """The samples (CSV) and manifests (JSON) embedded as data: links, and the documents shown as text."""
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
    """The statistics method, as paragraphs."""
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
        f"Noisy: coefficient of variation (standard deviation / mean) above {fmt.percent(stats.NOISY_CV)}.",
        "Latency percentiles are taken from the client histograms of all measured samples merged by "
        "summing the counts of equal buckets (never by averaging percentiles). The value shown is the "
        "nearest-rank percentile's bucket upper end (the largest value the bucket holds): at most 1/64 "
        "(1.6 %) above the exact value, never below it.",
    ]
