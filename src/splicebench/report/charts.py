"""Every chart of the reports, as inline SVG strings made with matplotlib (no files, no external
references); `svg_of` turns a finished figure into such a string.

Run report: grouped_bars, latency_percentiles and cpu_per_gib take the summary DataFrame
(analysis.summary.summarize) and, where individual samples are drawn, the samples with derived
metrics (analysis.summary.add_derived). Shared statistics sections and the comparison report:
ratio_chart (forest plot of ratios), percentile_chart (merged-histogram percentiles) and
arch_chart (throughput on one host) take analysis.compare's comparisons and groups. Axis labels
print latency through report/format.py. Output is deterministic for the same input (fixed SVG
hash salt, no date metadata).
"""

from __future__ import annotations

import io
import math
import re
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator  # noqa: E402

from splicebench.analysis import stats  # noqa: E402
from splicebench.analysis.compare import Group, MetricComparison, Source  # noqa: E402
from splicebench.analysis.summary import Metric  # noqa: E402
from splicebench.report import format as fmt  # noqa: E402

PALETTE = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c"]
PERCENTILES = [("p50", "p50"), ("p90", "p90"), ("p99", "p99"), ("p999", "p99.9")]

plt.rcParams.update({
    "svg.fonttype": "none",  # text stays text: smaller, selectable, uses the page's font
    "svg.hashsalt": "splicebench",
    "font.size": 9,
    "font.family": "sans-serif",
    "axes.spines.top": False,
    "axes.spines.right": False,
})


def svg_of(fig) -> str:
    """The figure as inline SVG text (no XML declaration, DOCTYPE or metadata); closes the figure."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": None})
    plt.close(fig)
    text = buf.getvalue()
    # Inline SVG in HTML needs neither the XML declaration nor the DOCTYPE (which names a URL).
    text = re.sub(r"<\?xml[^>]*\?>\s*", "", text)
    text = re.sub(r"<!DOCTYPE[^>]*>\s*", "", text)
    text = re.sub(r"<metadata>.*?</metadata>\s*", "", text, flags=re.S)
    return text.strip()


def _servers(summary: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(summary["server"]))


def _cells(summary: pd.DataFrame) -> list[tuple[int, str]]:
    seen = summary.drop_duplicates("cell")[["cell", "cell_label"]]
    return [(int(c), str(lbl) or "all") for c, lbl in zip(seen["cell"], seen["cell_label"])]


def _yerr(sub: pd.DataFrame, col: str) -> np.ndarray:
    med = sub[f"{col}_median"].to_numpy(dtype=float)
    lo = sub[f"{col}_ci_lo"].to_numpy(dtype=float)
    hi = sub[f"{col}_ci_hi"].to_numpy(dtype=float)
    err = np.vstack([np.nan_to_num(med - lo, nan=0.0), np.nan_to_num(hi - med, nan=0.0)])
    return np.clip(err, 0, None)


def grouped_bars(summary: pd.DataFrame, samples: pd.DataFrame | None, col: str, ylabel: str,
                 title: str) -> str:
    """Median per server (bars) for every matrix cell, 95 % CI whiskers, samples as dots."""
    servers = _servers(summary)
    cells = _cells(summary)
    if len(cells) == 1:
        return _bars_by_server(summary, samples, col, ylabel, title)
    width = 0.8 / max(1, len(servers))
    fig, ax = plt.subplots(figsize=(max(5.5, 1.2 + len(cells) * len(servers) * 0.55), 3.2))
    x = np.arange(len(cells))
    for i, srv in enumerate(servers):
        sub = summary[summary["server"] == srv].set_index("cell").reindex([c for c, _ in cells])
        sub = sub.reset_index()
        pos = x - 0.4 + width * (i + 0.5)
        color = PALETTE[i % len(PALETTE)]
        ax.bar(pos, sub[f"{col}_median"].to_numpy(dtype=float), width * 0.92, label=srv, color=color,
               yerr=_yerr(sub, col), capsize=3, error_kw={"elinewidth": 1, "ecolor": "#333"})
        if samples is not None and col in samples:
            ok = samples[(samples["server"] == srv) & (samples["phase"] == "measured") & (samples["status"] == "ok")]
            for j, (c, _) in enumerate(cells):
                vals = pd.to_numeric(ok[ok["cell"] == c][col], errors="coerce").dropna().to_numpy()
                if len(vals):
                    jitter = np.linspace(-width * 0.25, width * 0.25, len(vals))
                    ax.plot(pos[j] + jitter, vals, "o", ms=2.5, color="#222", alpha=0.6, zorder=3)
    ax.set_xticks(x)
    ax.set_xticklabels([lbl for _, lbl in cells], rotation=20 if len(cells) > 3 else 0, ha="right" if len(cells) > 3 else "center")
    ax.set_ylabel(ylabel)
    ax.set_title(title, loc="left")
    ax.set_ylim(bottom=0)
    ax.legend(frameon=False, ncols=min(len(servers), 4), loc="upper left", bbox_to_anchor=(0, -0.12 if len(cells) <= 3 else -0.3))
    ax.grid(axis="y", alpha=0.3)
    return svg_of(fig)


def _bars_by_server(summary: pd.DataFrame, samples: pd.DataFrame | None, col: str, ylabel: str,
                    title: str) -> str:
    servers = _servers(summary)
    fig, ax = plt.subplots(figsize=(max(4.5, 1.5 + 1.1 * len(servers)), 3.0))
    x = np.arange(len(servers))
    sub = summary.set_index("server").reindex(servers).reset_index()
    colors = [PALETTE[i % len(PALETTE)] for i in range(len(servers))]
    ax.bar(x, sub[f"{col}_median"].to_numpy(dtype=float), 0.6, color=colors, yerr=_yerr(sub, col), capsize=4,
           error_kw={"elinewidth": 1, "ecolor": "#333"})
    if samples is not None and col in samples:
        ok = samples[(samples["phase"] == "measured") & (samples["status"] == "ok")]
        for i, srv in enumerate(servers):
            vals = pd.to_numeric(ok[ok["server"] == srv][col], errors="coerce").dropna().to_numpy()
            if len(vals):
                ax.plot(x[i] + np.linspace(-0.15, 0.15, len(vals)), vals, "o", ms=3, color="#222", alpha=0.6, zorder=3)
    ax.set_xticks(x)
    ax.set_xticklabels(servers)
    ax.set_ylabel(ylabel)
    ax.set_title(title, loc="left")
    ax.set_ylim(bottom=0)
    ax.grid(axis="y", alpha=0.3)
    return svg_of(fig)


def _us_label(v: float, _pos=None) -> str:
    if v <= 0 or not np.isfinite(v):
        return ""
    return fmt.latency_us(v).replace(".00 ", " ").replace(".0 ", " ")


def latency_percentiles(summary: pd.DataFrame) -> str:
    """Median p50/p90/p99/p99.9 latency per server, one panel per matrix cell, log scale."""
    servers = _servers(summary)
    cells = _cells(summary)
    n = len(cells)
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols + 0.6, 2.7 * rows), squeeze=False, sharey=True)
    for k, (cell, label) in enumerate(cells):
        ax = axes[k // cols][k % cols]
        for i, srv in enumerate(servers):
            sub = summary[(summary["server"] == srv) & (summary["cell"] == cell)]
            if sub.empty:
                continue
            ys = [float(sub[f"lat_{p}_us_median"].iloc[0]) for p, _ in PERCENTILES]
            lo = [float(sub[f"lat_{p}_us_ci_lo"].iloc[0]) for p, _ in PERCENTILES]
            hi = [float(sub[f"lat_{p}_us_ci_hi"].iloc[0]) for p, _ in PERCENTILES]
            color = PALETTE[i % len(PALETTE)]
            xs = np.arange(len(PERCENTILES))
            ax.plot(xs, ys, "o-", color=color, label=srv, ms=4)
            if not all(np.isnan(lo)):
                ax.fill_between(xs, lo, hi, color=color, alpha=0.15, linewidth=0)
        ax.set_xticks(np.arange(len(PERCENTILES)))
        ax.set_xticklabels([name for _, name in PERCENTILES])
        vals = summary[[f"lat_{p}_us_median" for p, _ in PERCENTILES]].to_numpy(dtype=float)
        vals = vals[np.isfinite(vals) & (vals > 0)]
        if len(vals) and vals.max() / vals.min() >= 20:
            ax.set_yscale("log")
            ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, p: ""))
        else:
            ax.set_ylim(bottom=0)
        ax.yaxis.set_major_formatter(FuncFormatter(_us_label))
        ax.set_title(label if n > 1 else "latency percentiles", loc="left", fontsize=9)
        ax.grid(axis="y", alpha=0.3, which="both")
        if k % cols == 0:
            ax.set_ylabel("latency")
    for k in range(n, rows * cols):
        axes[k // cols][k % cols].set_visible(False)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, frameon=False, loc="lower center", ncols=min(len(servers), 4),
               bbox_to_anchor=(0.5, -0.02))
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return svg_of(fig)


def cpu_per_gib(summary: pd.DataFrame) -> str:
    """Server-process and whole-host CPU seconds per GiB echoed, per server and cell."""
    servers = _servers(summary)
    cells = _cells(summary)
    n = len(cells)
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols + 0.6, 2.8 * rows), squeeze=False)
    series = [("proc_cpu_s_per_gib", "server process", "#4c72b0", ""),
              ("host_cpu_s_per_gib", "whole host", "#c44e52", ""),
              ("host_softirq_s_per_gib", "host softirq", "#dd8452", "//")]
    for k, (cell, label) in enumerate(cells):
        ax = axes[k // cols][k % cols]
        sub = summary[summary["cell"] == cell].set_index("server").reindex(servers).reset_index()
        x = np.arange(len(servers))
        w = 0.8 / len(series)
        for j, (col, name, color, hatch) in enumerate(series):
            ax.bar(x - 0.4 + w * (j + 0.5), sub[f"{col}_median"].to_numpy(dtype=float), w * 0.92,
                   yerr=_yerr(sub, col), capsize=2, color=color, hatch=hatch, label=name,
                   error_kw={"elinewidth": 1, "ecolor": "#333"})
        ax.set_xticks(x)
        ax.set_xticklabels(servers)
        ax.set_title(label if n > 1 else "CPU seconds per GiB echoed", loc="left", fontsize=9)
        ax.set_ylim(bottom=0)
        ax.grid(axis="y", alpha=0.3)
        if k % cols == 0:
            ax.set_ylabel("CPU s / GiB")
    for k in range(n, rows * cols):
        axes[k // cols][k % cols].set_visible(False)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, frameon=False, loc="lower center", ncols=3, bbox_to_anchor=(0.5, -0.02))
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return svg_of(fig)


# ---------------------------------------------------------------------------------------------
# Statistics sections and the comparison report


def _verdict_color(v: str) -> str:
    return {stats.BETTER: "#2e7d32", stats.WORSE: "#c62828"}.get(v, "#8c8c8c")


def ratio_chart(comps: Sequence[MetricComparison], metric: Metric, varying: Sequence[str]) -> str:
    """Forest plot: ratio other/reference per group, 95 % CI, colour by verdict, line at 1."""
    rows = [c for c in comps if c.metric.column == metric.column]
    labels = [f"{c.other.source.letter} / {c.ref.source.letter}: {c.key.label(varying)}" for c in rows]
    fig, ax = plt.subplots(figsize=(6.8, 0.9 + 0.38 * max(1, len(rows))))
    y = np.arange(len(rows))[::-1]
    for yi, c in zip(y, rows):
        color = _verdict_color(c.test.verdict)
        if fmt.is_number(c.ratio.lo) and fmt.is_number(c.ratio.hi):
            ax.plot([c.ratio.lo, c.ratio.hi], [yi, yi], "-", color=color, lw=2)
        if fmt.is_number(c.ratio.value):
            ax.plot([c.ratio.value], [yi], "o", color=color, ms=6,
                    mfc=color if c.test.significant else "white")
    ax.axvline(1.0, color="#333", lw=1, ls="--")
    ax.set_yticks(y)
    ax.set_yticklabels(labels)
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_minor_locator(LogLocator(base=10, subs=(3.0, 4.0, 6.0, 7.0, 8.0, 9.0)))
    # Tick marks of a log axis (0.5x, 1x, 2x), not measured values: kept short.
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
    ax.set_xlabel(f"{metric.title}: ratio of medians (log scale; "
                  f"{'right' if metric.higher_is_better else 'left'} of 1 is better)")
    ax.set_title(f"{metric.title} ratio, 95 % CI", loc="left")
    ax.grid(axis="x", alpha=0.3, which="both")
    return svg_of(fig)


def percentile_chart(groups: Sequence[tuple[str, str, dict[str, float], bool]]) -> str:
    """Merged-histogram latency percentiles (log scale): one line per (source, group, percentiles
    in ns, emulated)."""
    fig, ax = plt.subplots(figsize=(6.8, 3.4))
    xs = np.arange(len(stats.PERCENTILES))
    for i, (src, grp, pct, emulated) in enumerate(groups):
        ys = [pct.get(n, math.nan) / 1e3 for n, _ in stats.PERCENTILES]
        if not any(fmt.is_number(v) for v in ys):
            continue
        ax.plot(xs, ys, "o--" if emulated else "o-", color=PALETTE[i % len(PALETTE)], ms=4,
                label=f"{src}: {grp}" + (" (emulated)" if emulated else ""))
    ax.set_xticks(xs)
    ax.set_xticklabels([n.replace("p999", "p99.9") for n, _ in stats.PERCENTILES])
    ax.set_yscale("log")
    ax.set_ylabel("microseconds (log)")
    ax.set_title("Latency percentiles from merged histograms", loc="left")
    ax.grid(axis="y", alpha=0.3, which="both")
    ax.legend(frameon=False, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    return svg_of(fig)


def arch_chart(source: Source, rows: Sequence[tuple[str, Group]], ymax: float | None) -> str:
    """Throughput per group on one host: median bars, CI whiskers, samples as dots, warm-up hollow."""
    fig, ax = plt.subplots(figsize=(4.2, 2.9))
    x = np.arange(len(rows))
    emulated = source.emulated
    for i, (_, g) in enumerate(rows):
        vals = g.values("throughput_gib_s")
        ci = stats.median_ci(vals)
        med = ci.median if len(vals) else math.nan
        color = "#bdbdbd" if emulated else PALETTE[i % len(PALETTE)]
        ax.bar([i], [med if fmt.is_number(med) else 0], 0.6, color=color, hatch="///" if emulated else "",
               edgecolor="#555" if emulated else color)
        if fmt.is_number(ci.lo) and fmt.is_number(ci.hi):
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
    return svg_of(fig)
