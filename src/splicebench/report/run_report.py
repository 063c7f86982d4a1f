"""Run directory -> one self-contained HTML report, and the terminal summary table.

The report is built in one pass: the run's data (analysis.compare.RunData: manifest, samples with
derived metrics, histograms) -> ReportView, every number formatted by report/format.py -> the
template report.html.j2 through render.py's one autoescaping Environment. The summary table's
latency columns and the latency chart show percentiles of the samples' merged histograms where
they were recorded (analysis/latency.py); the statistics sections come from run_sections.py and
the proxy section from proxy_report.py.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from splicebench.analysis import cpu as cpu_analysis
from splicebench.analysis import latency
from splicebench.analysis import summary as analysis
from splicebench.analysis.compare import RunData, load_run
from splicebench.report import accel_report, proxy_report, render, run_charts, run_sections
from splicebench.report import conn_report, cpu_report, loaded_report, perf_report
from splicebench.report import format as fmt
from splicebench.report.views import ChartView, RunSectionsView
from splicebench.scenario import format_param
from splicebench.units import format_duration
from splicebench.util.files import atomic_write_text
from splicebench.util.side import Job, side


@dataclass(frozen=True)
class SummaryRowView:
    cell_label: str
    server: str
    kind: str
    is_baseline: bool
    n: str
    headline: str  # the workload's headline figure (throughput, round trips/s or bursts/s)
    headline_ci: str
    throughput: str
    throughput_ci: str
    ratio: str  # of the headline figure's medians
    ratio_ci: str
    ratio_mark: str  # "", "n.s." (not significant) or "few" (too few samples to tell)
    ratio_mark_title: str  # what the mark means, for its tooltip
    p50: str
    p99: str
    proc_cpu: fmt.CpuFigure  # pooled over the group's samples, to the digits its uncertainty allows
    host_cpu: fmt.CpuFigure
    softirq: fmt.CpuFigure
    warn: bool


@dataclass(frozen=True)
class SummaryTableView:
    """The summary rows of one matrix cell (cell "" when the run has one)."""

    cell: str
    rows: list[SummaryRowView]


@dataclass(frozen=True)
class HostView:
    name: str
    items: list[tuple[str, str]]


@dataclass(frozen=True)
class FailureView:
    sample_id: str
    server: str
    phase: str
    status: str
    error: str


@dataclass(frozen=True)
class ReportView:
    title: str
    scenario_name: str
    description: str
    run_id: str
    status: str
    status_note: str
    started_at: str
    duration: str
    tool: str
    baseline: str
    workload: str
    counts: str
    summary_rows: list[SummaryRowView]
    summary_tables: list[SummaryTableView]  # the same rows, one table per matrix cell
    show_cells: bool
    headline_title: str  # "throughput", "round trips/s" or "bursts/s"
    latency_title: str  # what a latency value is: "transfer time per connection", ...
    show_throughput: bool  # a throughput column after the latency ones (headline is a rate)
    latency_note: str  # where a p99 is omitted, and why
    latency_merged: bool  # summary latency columns and chart come from merged histograms
    charts: list[ChartView]
    chart_notes: list[str]  # charts left out, and why
    failures: list[FailureView]
    # Significance, merged percentiles, noise, adaptive repetitions, architectures and downloads.
    sections: RunSectionsView
    # Proxy scenarios: ratios to the naive proxy and to each peer, or None.
    proxies: proxy_report.ProxyView | None
    hosts: list[HostView]
    scenario_text: str
    order: list[str]
    method: list[str]
    notes: list[str] = field(default_factory=list)
    # Per-CPU user/system/softirq per server (runs with CPU sampler files), or None.
    cpu_breakdown: cpu_report.CpuBreakdownView | None = None
    # Connections, workers, client threads and TCP_INFO per server (runs whose client reports it), or None.
    connections: conn_report.ConnView | None = None
    # perf stat per GiB and the profiles (runs with perf or `profile: true`), or None.
    perf: perf_report.PerfView | None = None
    # latency-under-load runs: p50/p99 alone and loaded per server, or None.
    loaded: loaded_report.LoadedView | None = None
    accel: accel_report.AccelView | None = None


LATENCY_CAPTION = "Median across samples of each sample's p50, p90, p99 and p99.9; band: 95 % CI."
MERGED_LATENCY_CAPTION = ("p50, p90, p99 and p99.9 of all measured samples' latency histograms merged (bucket "
                          "counts summed); each value is the upper end of its bucket (at most 1.6 % above the "
                          "exact value).")


HEADLINE_TITLES = {"throughput_gib_s": "throughput", "round_trips_per_s": "round trips/s", "bursts_per_s": "bursts/s",
                   "conns_per_s": "connections/s"}


def wrappable_ci(lo: Any, hi: Any, f: Any) -> str:
    """A CI that a narrow column may break after its comma only, never inside a bound."""
    return fmt.ci(lo, hi, lambda v: f(v).replace(" ", "\u00a0"))


def p99_text(r: pd.Series, value: str) -> str:
    """The p99 cell: the value, or why it is left out (fewer values than a p99 needs)."""
    n = float(r.get("lat_n", math.nan))
    return value if latency.enough("p99", n) else f"too few ({int(n)})"


def _cpu(r: pd.Series, metric: str) -> fmt.CpuFigure:
    """A summary row's CPU per GiB: pooled over its samples with its uncertainty (analysis/cpu.py)."""
    return fmt.cpu_figure(r.get(f"{metric}_pooled"), r.get(f"{metric}_pooled_unc"))


def summary_rows(summary: pd.DataFrame, merged: Sequence[dict[str, float] | None],
                 marks: Sequence[tuple[str, str]], headline: str = "throughput_gib_s") -> list[SummaryRowView]:
    """The summary table: one row per summary row, with its merged latency percentiles (ns) where
    recorded (else the medians of per-sample percentiles), its p99 only from enough values
    (analysis.latency.MIN_VALUES), the headline metric's ratio and the mark of its significance
    (the throughput test's: within a cell a rate of exchanges is throughput over a fixed size)."""
    rows = []
    h = headline
    for (_, r), m, (mark, mark_title) in zip(summary.iterrows(), merged, marks):
        base = bool(r["is_baseline"])
        hf = fmt.metric_formatter(h)
        rows.append(SummaryRowView(
            cell_label=str(r["cell_label"]) if str(r["cell_label"]) not in ("", "nan") else "",
            server=str(r["server"]),
            kind=str(r["server_kind"]),
            is_baseline=base,
            n=f"{int(r['n_ok'])}/{int(r['n_total'])}",
            headline=hf(r[f"{h}_median"]),
            headline_ci=wrappable_ci(r[f"{h}_ci_lo"], r[f"{h}_ci_hi"], hf),
            throughput=fmt.throughput(r["throughput_gib_s_median"]),
            throughput_ci=wrappable_ci(r["throughput_gib_s_ci_lo"], r["throughput_gib_s_ci_hi"], fmt.throughput),
            ratio="baseline" if base else fmt.ratio(r[f"{h}_ratio"]),
            ratio_ci="" if base else fmt.ratio_ci(r[f"{h}_ratio_lo"], r[f"{h}_ratio_hi"]),
            ratio_mark=mark,
            ratio_mark_title=mark_title,
            p50=fmt.latency(m["p50"]) if m else fmt.latency_us(r["lat_p50_us_median"]),
            p99=p99_text(r, fmt.latency(m["p99"]) if m else fmt.latency_us(r["lat_p99_us_median"])),
            proc_cpu=_cpu(r, "proc_cpu_s_per_gib"),
            host_cpu=_cpu(r, "host_cpu_s_per_gib"),
            softirq=_cpu(r, "host_softirq_s_per_gib"),
            warn=int(r["n_ok"]) < int(r["n_total"]),
        ))
    return rows


def summary_tables(rows: Sequence[SummaryRowView]) -> list[SummaryTableView]:
    """The rows grouped by matrix cell, in order: narrow tables instead of one with a cell column."""
    cells: dict[str, list[SummaryRowView]] = {}
    for r in rows:
        cells.setdefault(r.cell_label, []).append(r)
    return [SummaryTableView(c, rs) for c, rs in cells.items()]


def latency_note(summary: pd.DataFrame, workload: str) -> str:
    """Why some p99 cells are empty, or ""."""
    few = [r for _, r in summary.iterrows() if not latency.enough("p99", float(r.get("lat_n", math.nan)))]
    if not few:
        return ""
    return (f"A p99 needs at least {latency.MIN_VALUES['p99']:,} latency values ({run_charts.LATENCY_OF.get(workload, 'latency')}"
            f"); {len(few)} of {len(summary)} groups have fewer (their count is shown instead): "
            "below that, the nearest-rank p99 is the largest value.")


def _with_host_labels(df: pd.DataFrame, hosts: dict[str, Any]) -> pd.DataFrame:
    """Servers on several hosts (placement lists): "label @ host", and "(emulated)" where it is."""
    out = df.copy()
    out["server"] = [f"{s} @ {h}" + (" (emulated)" if (hosts.get(h) or {}).get("emulated") else "")
                     for s, h in zip(df["server"], df["server_host"])]
    return out


def _host_items(facts: dict[str, Any]) -> list[tuple[str, str]]:
    def show(v: Any) -> str:
        if v is None:
            return "unknown"
        if isinstance(v, bool):
            return "yes" if v else "no"
        return str(v)

    items = [
        ("hostname", show(facts.get("hostname"))),
        ("OS", show(facts.get("os"))),
        ("kernel", f"{show(facts.get('kernel'))} {facts.get('kernel_version') or ''}".strip()),
        ("arch", show(facts.get("arch"))),
        ("CPU", f"{show(facts.get('cpu_model'))} x {show(facts.get('cpu_count'))}"),
        ("governor / turbo", f"{show(facts.get('cpu_governor'))} / {show(facts.get('turbo'))}"),
        ("virtualization", show(facts.get("virtualization"))),
        ("emulation", f"EMULATED ({facts.get('virt_how')}): its numbers are not {show(facts.get('arch'))} "
                      f"hardware performance" if facts.get("emulated") else
                      "native" if facts.get("emulated") is False else "unknown"),
        ("memory", f"{facts['memory_bytes'] / (1 << 30):.1f} GiB" if facts.get("memory_bytes") else "unknown"),
        ("load average at start", show(facts.get("loadavg_at_start"))),
    ]
    bpf = facts.get("bpf") or {}
    probe = bpf.get("bpftool_probe") or {}
    if probe:
        feats = [k for k in ("map_sockmap", "map_sockhash", "prog_sk_skb", "prog_sk_msg", "prog_sock_ops",
                             "helper_sk_redirect_map", "helper_sk_redirect_hash") if probe.get(k)]
        missing = [k for k in ("map_sockmap", "map_sockhash", "prog_sk_skb") if not probe.get(k)]
        items.append(("BPF features", ", ".join(feats) + (f" (missing: {', '.join(missing)})" if missing else "")))
        sc = probe.get("system_config") or {}
        items.append(("BPF JIT", f"enable={show(sc.get('bpf_jit_enable'))} harden={show(sc.get('bpf_jit_harden'))}"))
    else:
        items.append(("BPF features", "not probed (bpftool unavailable or not root)"))
    items.append(("BTF vmlinux", show(bpf.get("btf_vmlinux"))))
    kc = bpf.get("kernel_config") or {}
    if kc:
        items.append(("kernel config", ", ".join(f"{k}={v}" for k, v in kc.items() if v is not None)))
    tools = facts.get("tools") or {}
    items.append(("tools", "; ".join(f"{k}: {v}" for k, v in tools.items() if v)))
    for k, v in (facts.get("sysctls") or {}).items():
        items.append((k, show(v)))
    return items


CRR_METHOD = ("crr (connect, request, response, close, as netperf TCP_CRR): each transaction is a new "
              "connection that sends one message, half-closes, verifies the echo and sees the server close; "
              "conns connections are open at a time, each starting the next transaction when its last one "
              "ended. Connections per second: transactions completed divided by the client's wall time; "
              "latency: from socket() to the server's close, per transaction.")


LOADED_METHOD = ("latency-under-load: each sample runs the ping-pong clients alone, then starts bulk_conns "
                 "streams through the same server, after a short ramp runs the ping-pong clients again, and "
                 "then stops the streams (SIGINT: they stop sending and verify the echo of what they sent). "
                 "The summary's latency and round trips/s are the loaded run's; the alone run is in the "
                 "latency-under-load section. CPU and perf figures per GiB count the bytes of all of them.")


def method_text(manifest: dict[str, Any]) -> list[str]:
    sc = manifest["scenario"]
    wl = sc["workload"]
    reps = sc["repetitions"]
    measured = (f"{reps['measured']} measured round(s)" if "measured" in reps else
                f"{reps['min']} to {reps['max']} measured rounds (adaptive: until the 95 % CI of the median "
                f"throughput is at most {fmt.percent(reps['target_ci_width'])} of the median wide)")
    return [
        "Each sample starts a fresh server process, waits for its ready line, runs the verifying load "
        "client sb-client against it and then stops the server with SIGTERM. The client checks every "
        "echoed byte against a seeded pseudo-random stream; a sample counts only if every byte came back.",
        f"Servers are interleaved within each round ({', '.join(s['label'] for s in sc['servers'])}, then "
        f"again), {reps['warmup']} warm-up round(s) first, then {measured}; "
        "warm-up samples are recorded but not used. The execution order is listed below.",
        "Throughput is the client's goodput: verified echoed bytes divided by the time from connect to the "
        "last byte verified. Latency is per message for pingpong, per burst for burst and per connection "
        "for stream; each sample's percentiles are exact, the table shows their median across samples.",
        cpu_report.method(manifest),
        conn_report.method(sc),
        f"Statistics: median over the measured samples with status ok; 95 % percentile-bootstrap CI of "
        f"the median ({analysis.N_BOOT:,} resamples, fixed seed); ratio = median / median of the baseline "
        f"({manifest.get('baseline', sc.get('baseline'))}) in the same cell, its CI from resampling both. "
        "With few samples the CIs are wide and only ratios well away from 1 mean something.",
        f"Workload: {wl['type']}"
        + "".join(f", {k}={format_param(k, v)}" for k, v in wl.items() if k != "type")
        + "".join(f", {k}={' / '.join(format_param(k, x) for x in vals)} (matrix)"
                  for k, vals in (sc.get("matrix") or {}).items())
        + f"; client deadline {sc.get('timeout')} s per sample.",
        *([CRR_METHOD] if wl["type"] == "crr" else []),
        *([LOADED_METHOD] if wl["type"] == "latency-under-load" else []),
    ]


def build_view(run: RunData) -> tuple[ReportView, pd.DataFrame]:
    """The report's view-model and the summary table it shows (server labels as shown)."""
    with side() as beside:
        # The statistics sections and the CPU and perf sections are computed in a forked child while
        # this process computes the summary and draws the charts (util/side.py).
        sections = beside.submit(_side_sections, run)
        return _build_view(run, sections)


def _side_sections(run: RunData) -> tuple[RunSectionsView, Any, Any]:
    """The parts of the report that need neither the summary nor the charts."""
    manifest = run.manifest
    baseline = manifest.get("baseline") or manifest["scenario"]["baseline"]
    return (run_sections.build(run, baseline), cpu_report.build(run.path, run.samples),
            perf_report.build(run.path, run.samples, manifest))


def _build_view(run: RunData, sections: Job) -> tuple[ReportView, pd.DataFrame]:
    manifest, samples = run.manifest, run.samples
    sc = manifest["scenario"]
    baseline = manifest.get("baseline") or sc["baseline"]
    summary = cpu_analysis.add_pooled(analysis.summarize(samples, baseline), samples, analysis.GROUP_KEYS)
    merged = latency.merged_per_row(run, summary)
    derived = samples
    workload = str(sc["workload"]["type"])
    headline = analysis.headline(workload)
    sweep = run_charts.sweep_of(list(sc.get("matrix") or {}), analysis.matrix_values(samples, list(sc.get("matrix") or {})))
    if not summary.empty and summary["server_host"].nunique() > 1:
        hosts = manifest.get("hosts") or {}
        summary, derived = _with_host_labels(summary, hosts), _with_host_labels(samples, hosts)
    failures = [
        FailureView(str(r["sample_id"]), str(r["server"]), str(r["phase"]), str(r["status"]), str(r["error"]))
        for _, r in samples.iterrows() if r["status"] != "ok"
    ]
    counts = analysis.status_counts(samples) if len(samples) else {}
    status = manifest.get("status", "unknown")
    tool = manifest.get("tool", {})
    chart_list, chart_notes = run_charts.build(latency.with_merged_latency(summary, merged), derived, headline,
                                               workload, sweep, MERGED_LATENCY_CAPTION if any(merged) else LATENCY_CAPTION)
    stats_sections, cpu_breakdown, perf = sections.result()
    rows = summary_rows(summary, merged, run_sections.ratio_marks(stats_sections, summary), headline.column)
    view = ReportView(
        title=f"splicebench: {sc['name']}",
        scenario_name=sc["name"],
        description=sc.get("description", ""),
        run_id=manifest["run_id"],
        status=status,
        status_note=STATUS_NOTES.get(status, ""),
        started_at=manifest.get("started_at", ""),
        duration=format_duration(manifest.get("duration_s") or math.nan),
        tool=f"splicebench {tool.get('version', '?')}, git {tool.get('git_revision') or 'unknown'}"
             + (" (modified)" if tool.get("git_dirty") else ""),
        baseline=baseline,
        workload=f"{sc['workload']['type']}",
        counts=", ".join(f"{v} {k}" for k, v in counts.items()),
        summary_rows=rows,
        summary_tables=summary_tables(rows),
        show_cells=summary["cell"].nunique() > 1 if not summary.empty else False,
        headline_title=HEADLINE_TITLES[headline.column],
        latency_title=run_charts.LATENCY_OF.get(workload, "latency"),
        show_throughput=headline.column != "throughput_gib_s",
        latency_note=latency_note(summary, workload),
        latency_merged=any(merged),
        charts=chart_list,
        chart_notes=chart_notes,
        failures=failures,
        sections=stats_sections,
        proxies=proxy_report.build(manifest, samples),
        hosts=[HostView(name, _host_items(f)) for name, f in (manifest.get("hosts") or {}).items()],
        scenario_text=manifest.get("scenario_text") or json.dumps(sc, indent=2),
        order=[f"{r['sample_id']}" for _, r in samples.sort_values("seq").iterrows()],
        method=method_text(manifest),
        cpu_breakdown=cpu_breakdown,
        connections=conn_report.build(samples, not summary.empty and summary["cell"].nunique() > 1),
        perf=perf,
        loaded=loaded_report.build(samples, workload),
        accel=accel_report.build(manifest, samples),
        notes=list(manifest.get("notes", [])),
    )
    return view, summary


STATUS_NOTES = {
    "interrupted": "The run was interrupted; the report shows the samples taken before that.",
    "stopped": "The run stopped at the first failed sample (stop_on_failure).",
    "error": "The run ended with an internal error; the report shows the samples taken before that.",
}


def render_html(view: ReportView) -> str:
    return render.render("report.html.j2", view)


def report_path(reports_dir: Path, manifest: dict[str, Any]) -> Path:
    return Path(reports_dir) / f"{manifest['scenario']['name']}-{manifest['run_id']}.html"


def render_run(run_dir: Path, reports_dir: Path) -> tuple[Path, ReportView, pd.DataFrame]:
    """Write the report of a run directory; return its path, view and summary."""
    run = load_run(Path(run_dir))
    view, summary = build_view(run)
    out = report_path(reports_dir, run.manifest)
    atomic_write_text(out, render_html(view))
    return out, view, summary


def text_table(view: ReportView) -> str:
    """The summary table for the terminal, led by the workload's headline figure."""
    head = (["cell"] if view.show_cells else []) + [
        "server", "ok/n", view.headline_title, "95% CI", f"vs {view.baseline}", "95% CI", "p50", "p99",
        *(["throughput"] if view.show_throughput else []), "CPU s/GiB srv", "host"]
    rows = []
    for r in view.summary_rows:
        rows.append([x.replace("\u00a0", " ") for x in ([r.cell_label] if view.show_cells else []) + [
            r.server, r.n, r.headline, r.headline_ci, r.ratio, r.ratio_ci, r.p50, r.p99,
            *([r.throughput] if view.show_throughput else []), r.proc_cpu.text, r.host_cpu.text]])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)] if rows else [len(h) for h in head]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*head), fmt.format(*["-" * w for w in widths])]
    lines += [fmt.format(*r) for r in rows]
    return "\n".join(lines)
