"""The comparison report: `invoke compare RUN_A RUN_B ...` -> one self-contained HTML file.

Several runs (or several hosts of one run) side by side: the fairness verdict at the top, host
facts that differ, ratios with CIs and significance per aligned group, merged latency
percentiles, noise, the architecture section when architectures differ, every run's scenario and
manifest, and the samples embedded as CSV; the samples also go to a Parquet file beside it, and a
short table to the terminal. Builds CompareView in one pass from analysis.compare's alignment,
with the shared sections of sections.py and the charts of charts.py; compare.html.j2 prints it.
Output is deterministic for the same inputs apart from the "generated" timestamp.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

from splicebench.analysis import summary as analysis
from splicebench.analysis.compare import (RunData, Source, align, compare, fact_differences, fairness, load_runs,
                                          sources)
from splicebench.errors import UserError
from splicebench.report import charts, export, render, sections
from splicebench.report import format as fmt
from splicebench.report.views import (ArchView, ChartView, ComparisonRowView, DownloadView, NoiseRowView,
                                      PercentileRowView)
from splicebench.scenario import format_param
from splicebench.util.files import atomic_write_text


@dataclass(frozen=True)
class FactRowView:
    name: str
    values: list[str]
    severity: str


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
            chart_list.append(ChartView(f"ratio-{m.column}", f"{m.title} ratios",
                                        charts.ratio_chart(comps, m, al.varying),
                                        "Filled dot: significant after adjustment; hollow: not significant. "
                                        "Green better, red worse, grey not significant."))
    pct_groups = [(s.letter, k.label(al.varying), al.groups[(s.index, k)].percentiles(), s.emulated)
                  for s in srcs for k in al.keys if (s.index, k) in al.groups]
    if any(fmt.is_number(v) for *_, p, _ in pct_groups for v in p.values()):
        chart_list.append(ChartView("percentiles", "Latency percentiles", charts.percentile_chart(pct_groups),
                                    "Merged histograms of all measured samples of each group; dashed: emulated."))
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
        comparisons=sections.comparison_rows(comps, al.varying),
        unmatched=[f"{k.label()} (only in {', '.join(s.letter for s in present) or 'none'})"
                   for k, present in al.unmatched()],
        charts=chart_list,
        percentiles=sections.percentile_rows(al),
        noise=sections.noise_rows(al),
        arch=sections.arch_view(al),
        downloads=sections.downloads(runs, stem),
        method=sections.stats_method(),
    )


def render_compare(view: CompareView) -> str:
    return render.render("compare.html.j2", view)


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
    rows = [r for r in view.comparisons if r.metric == sections.SHORT_METRIC["throughput_gib_s"]]
    if rows:
        head = ["group", "runs", "reference", "compared", "ratio", "95% CI", "p (adj.)", "verdict"]
        table = [[r.group, r.other_label, r.ref, r.other, r.ratio, r.ratio_ci, r.p,
                  r.verdict + (" (noisy)" if r.noisy else "")] for r in rows]
        widths = [max(len(str(x)) for x in col) for col in zip(head, *table)]
        line = "  ".join(f"{{:<{w}}}" for w in widths)
        lines += [line.format(*head), line.format(*["-" * w for w in widths])] + [line.format(*r) for r in table]
    for u in view.unmatched:
        lines.append(f"not compared: {u}")
    return "\n".join(lines)


def compare_runs(results_root: Path, reports_dir: Path, refs: Sequence[str]) -> tuple[Path, Path | None, str]:
    """`invoke compare`: load the runs, write the report and its Parquet samples, return the terminal summary."""
    if len(refs) < 2:
        raise UserError("name at least two runs to compare (the first is the reference)")
    runs = load_runs(results_root, refs)
    out, pq, view = write_compare(runs, reports_dir)
    return out, pq, text_summary(view)
