"""Run directory -> one self-contained HTML report, and the terminal summary table.

View-model dataclasses are built first with every number already formatted; the Jinja2 template
only loops and prints. One Environment with autoescape on; the only `|safe` is for the SVG charts
that charts.py generates.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd
from jinja2 import Environment, PackageLoader, StrictUndefined

from splicebench.analysis import summary as analysis
from splicebench.report import charts
from splicebench.report import proxy_report
from splicebench.results.rundir import load_manifest, load_samples
from splicebench.util.files import atomic_write_text
from splicebench.scenario import format_param
from splicebench.units import format_duration, format_ns, format_rate


@dataclass(frozen=True)
class SummaryRowView:
    cell_label: str
    server: str
    kind: str
    is_baseline: bool
    n: str
    throughput: str
    throughput_ci: str
    ratio: str
    ratio_ci: str
    p50: str
    p99: str
    proc_cpu: str
    host_cpu: str
    softirq: str
    warn: bool


@dataclass(frozen=True)
class ChartView:
    id: str
    title: str
    svg: str
    caption: str


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
    show_cells: bool
    charts: list[ChartView]
    failures: list[FailureView]
    hosts: list[HostView]
    scenario_text: str
    order: list[str]
    method: list[str]
    notes: list[str] = field(default_factory=list)
    # Significance, merged percentiles, noise, adaptive repetitions, architectures and downloads
    # (compare_report.RunSectionsView); None when rendering without the run directory.
    extra: Any = None
    latency_merged: bool = False  # summary latency columns come from merged histograms
    ratio_marks: list[str] = field(default_factory=list)  # per summary row: "", "n.s." or "few"
    # Proxy scenarios: ratios to the naive proxy and to each peer (proxy_report.ProxyView), or None.
    proxies: Any = None


# ---------------------------------------------------------------------------------------------
# number formatting


def _f(x: Any) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return math.nan
    return v


def fmt_gibs(x: Any) -> str:
    v = _f(x)
    return "n/a" if math.isnan(v) else format_rate(v * (1 << 30))


def fmt_ci(lo: Any, hi: Any, fmt) -> str:
    a, b = _f(lo), _f(hi)
    if math.isnan(a) or math.isnan(b):
        return "n/a"
    return f"[{fmt(a)}, {fmt(b)}]"


def fmt_ratio(x: Any) -> str:
    v = _f(x)
    return "n/a" if math.isnan(v) else f"{v:.2f}x"


def fmt_us(x: Any) -> str:
    v = _f(x)
    return "n/a" if math.isnan(v) else format_ns(v * 1e3)


def fmt_cpu(x: Any) -> str:
    v = _f(x)
    if math.isnan(v):
        return "n/a"
    return f"{v:.3f}" if v < 10 else f"{v:.1f}"


def _num(v: float) -> str:
    return f"{v:.2f}"


# ---------------------------------------------------------------------------------------------
# view building


def summary_rows(summary: pd.DataFrame) -> list[SummaryRowView]:
    rows = []
    for _, r in summary.iterrows():
        rows.append(SummaryRowView(
            cell_label=str(r["cell_label"]) if str(r["cell_label"]) not in ("", "nan") else "",
            server=str(r["server"]),
            kind=str(r["server_kind"]),
            is_baseline=bool(r["is_baseline"]),
            n=f"{int(r['n_ok'])}/{int(r['n_total'])}",
            throughput=fmt_gibs(r["throughput_gib_s_median"]),
            throughput_ci=fmt_ci(r["throughput_gib_s_ci_lo"], r["throughput_gib_s_ci_hi"],
                                 lambda v: format_rate(v * (1 << 30))),
            ratio="baseline" if r["is_baseline"] else fmt_ratio(r["throughput_gib_s_ratio"]),
            ratio_ci="" if r["is_baseline"] else fmt_ci(r["throughput_gib_s_ratio_lo"], r["throughput_gib_s_ratio_hi"], _num),
            p50=fmt_us(r["lat_p50_us_median"]),
            p99=fmt_us(r["lat_p99_us_median"]),
            proc_cpu=fmt_cpu(r["proc_cpu_s_per_gib_median"]),
            host_cpu=fmt_cpu(r["host_cpu_s_per_gib_median"]),
            softirq=fmt_cpu(r["host_softirq_s_per_gib_median"]),
            warn=int(r["n_ok"]) < int(r["n_total"]),
        ))
    return rows


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


def method_text(manifest: dict[str, Any]) -> list[str]:
    sc = manifest["scenario"]
    wl = sc["workload"]
    reps = sc["repetitions"]
    measured = (f"{reps['measured']} measured round(s)" if "measured" in reps else
                f"{reps['min']} to {reps['max']} measured rounds (adaptive: until the 95 % CI of the median "
                f"throughput is at most {reps['target_ci_width']:.1%} of the median wide)")
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
        "Server CPU is the user+system time the server process reports for its whole life at exit "
        "(getrusage; start-up such as loading the BPF program included). Host CPU is the busy time of all "
        "CPUs (user, nice, system, irq, softirq, steal from /proc/stat) from just before the client started "
        "to just after it ended: it includes the client and anything else running on the host, and has "
        "a resolution of one clock tick per CPU, so it means little for samples much shorter than a "
        "second. SOCKMAP forwarding runs in softirq and kernel-thread context: it shows up in host CPU, "
        "not in the server process. Both are divided by the GiB of payload verified.",
        f"Statistics: median over the measured samples with status ok; 95 % percentile-bootstrap CI of "
        f"the median ({analysis.N_BOOT:,} resamples, fixed seed); ratio = median / median of the baseline "
        f"({manifest.get('baseline', sc.get('baseline'))}) in the same cell, its CI from resampling both. "
        "With few samples the CIs are wide and only ratios well away from 1 mean something.",
        f"Workload: {wl['type']}"
        + "".join(f", {k}={format_param(k, v)}" for k, v in wl.items() if k != "type")
        + "".join(f", {k}={' / '.join(format_param(k, x) for x in vals)} (matrix)"
                  for k, vals in (sc.get("matrix") or {}).items())
        + f"; client deadline {sc.get('timeout')} s per sample.",
    ]


def build_view(manifest: dict[str, Any], samples: pd.DataFrame) -> tuple[ReportView, pd.DataFrame]:
    """The report's view-model and the summary table it shows."""
    baseline = manifest.get("baseline") or manifest["scenario"]["baseline"]
    summary = analysis.summarize(samples, baseline)
    derived = analysis.add_derived(samples)
    sc = manifest["scenario"]
    if not summary.empty and summary["server_host"].nunique() > 1:
        # Servers on several hosts (placement lists): name the host, and say which are emulated.
        host_facts = manifest.get("hosts") or {}
        for df in (summary, derived):
            df["server"] = [f"{s} @ {h}" + (" (emulated)" if (host_facts.get(h) or {}).get("emulated") else "")
                            for s, h in zip(df["server"], df["server_host"])]
    chart_list: list[ChartView] = []
    if not summary.empty and summary["n_ok"].sum() > 0:
        chart_list = [
            ChartView("throughput", "Throughput",
                      charts.grouped_bars(summary, derived, "throughput_gib_s", "GiB/s", "Throughput (median, 95 % CI)"),
                      "Bars: median of the measured samples; whiskers: 95 % bootstrap CI of the median; "
                      "dots: individual samples."),
            ChartView("latency", "Latency percentiles", charts.latency_percentiles(summary),
                      "Median across samples of each sample's p50, p90, p99 and p99.9; band: 95 % CI."),
            ChartView("cpu", "CPU per GiB", charts.cpu_per_gib(summary),
                      "CPU seconds per GiB echoed: the server process alone, the whole host (client "
                      "included), and the host's softirq part."),
        ]
    failures = [
        FailureView(str(r["sample_id"]), str(r["server"]), str(r["phase"]), str(r["status"]), str(r["error"]))
        for _, r in samples.iterrows() if r["status"] != "ok"
    ]
    hosts = [HostView(name, _host_items(f)) for name, f in (manifest.get("hosts") or {}).items()]
    counts = analysis.status_counts(samples) if len(samples) else {}
    order = [f"{r['sample_id']}" for _, r in samples.sort_values("seq").iterrows()]
    status = manifest.get("status", "unknown")
    note = {
        "complete": "",
        "interrupted": "The run was interrupted; the report shows the samples taken before that.",
        "stopped": "The run stopped at the first failed sample (stop_on_failure).",
        "error": "The run ended with an internal error; the report shows the samples taken before that.",
    }.get(status, "")
    tool = manifest.get("tool", {})
    view = ReportView(
        title=f"splicebench: {sc['name']}",
        scenario_name=sc["name"],
        description=sc.get("description", ""),
        run_id=manifest["run_id"],
        status=status,
        status_note=note,
        started_at=manifest.get("started_at", ""),
        duration=format_duration(manifest.get("duration_s") or math.nan),
        tool=f"splicebench {tool.get('version', '?')}, git {tool.get('git_revision') or 'unknown'}"
             + (" (modified)" if tool.get("git_dirty") else ""),
        baseline=baseline,
        workload=f"{sc['workload']['type']}",
        counts=", ".join(f"{v} {k}" for k, v in counts.items()),
        summary_rows=summary_rows(summary) if not summary.empty else [],
        show_cells=summary["cell"].nunique() > 1 if not summary.empty else False,
        charts=chart_list,
        failures=failures,
        hosts=hosts,
        scenario_text=manifest.get("scenario_text") or json.dumps(sc, indent=2),
        order=order,
        method=method_text(manifest),
        notes=list(manifest.get("notes", [])),
        proxies=proxy_report.build(manifest, samples),
    )
    return view, summary


_ENV: Environment | None = None


def environment() -> Environment:
    global _ENV
    if _ENV is None:
        _ENV = Environment(loader=PackageLoader("splicebench.report", "templates"), autoescape=True,
                           undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    return _ENV


def render(view: ReportView) -> str:
    return environment().get_template("report.html.j2").render(v=view)


def report_path(reports_dir: Path, manifest: dict[str, Any]) -> Path:
    return Path(reports_dir) / f"{manifest['scenario']['name']}-{manifest['run_id']}.html"


def render_run(run_dir: Path, reports_dir: Path) -> tuple[Path, ReportView, pd.DataFrame]:
    """Write the report of a run directory; return its path, view and summary."""
    manifest = load_manifest(run_dir)
    samples = load_samples(run_dir)
    view, summary = build_view(manifest, samples)
    from splicebench.analysis import compare
    from splicebench.report import compare_report

    run = compare.RunData(Path(run_dir), manifest, analysis.add_derived(samples),
                          compare.read_histograms(Path(run_dir), samples))
    # Latency columns from the samples' histograms merged (bucket counts summed) where recorded.
    merged = [compare_report.merged_latency(run, r["server_host"], r["cell"], r["server"]) for _, r in summary.iterrows()]
    rows = [replace(v, p50=format_ns(m["p50"]), p99=format_ns(m["p99"])) if m else v
            for v, m in zip(view.summary_rows, merged)]
    extra = compare_report.run_sections(run, view.baseline)
    if any(merged):
        # The latency chart too shows percentiles of the merged histograms, never per-sample
        # percentiles averaged; groups without histograms keep their per-sample medians.
        lat = summary.copy()
        for i, m in enumerate(merged):
            if m:
                for key, _ in charts.PERCENTILES:
                    lat.iloc[i, lat.columns.get_loc(f"lat_{key}_us_median")] = m[key] / 1e3
                    lat.iloc[i, lat.columns.get_loc(f"lat_{key}_us_ci_lo")] = float("nan")
                    lat.iloc[i, lat.columns.get_loc(f"lat_{key}_us_ci_hi")] = float("nan")
        charts_list = [
            replace(c, svg=charts.latency_percentiles(lat),
                    caption="p50, p90, p99 and p99.9 of all measured samples' latency histograms "
                            "merged (bucket counts summed); each value is the upper end of its bucket "
                            "(at most 1.6 % above the exact value).")
            if c.id == "latency" else c
            for c in view.charts
        ]
        view = replace(view, charts=charts_list)
    view = replace(view, summary_rows=rows, latency_merged=any(merged), extra=extra,
                   ratio_marks=compare_report.summary_marks(extra, summary))
    out = report_path(reports_dir, manifest)
    atomic_write_text(out, render(view))
    return out, view, summary


def text_table(view: ReportView) -> str:
    """The summary table for the terminal."""
    head = (["cell"] if view.show_cells else []) + [
        "server", "ok/n", "throughput", "95% CI", f"vs {view.baseline}", "95% CI", "p50", "p99",
        "CPU s/GiB srv", "host"]
    rows = []
    for r in view.summary_rows:
        rows.append(([r.cell_label] if view.show_cells else []) + [
            r.server, r.n, r.throughput, r.throughput_ci, r.ratio, r.ratio_ci, r.p50, r.p99, r.proc_cpu, r.host_cpu])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)] if rows else [len(h) for h in head]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*head), fmt.format(*["-" * w for w in widths])]
    lines += [fmt.format(*r) for r in rows]
    return "\n".join(lines)
