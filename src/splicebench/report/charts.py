"""Charts as inline SVG strings made with matplotlib (no files, no external references).

Each function takes the summary DataFrame (analysis.summarize) and, where individual samples are
drawn, the samples with derived metrics (analysis.add_derived). Output is deterministic for the
same input (fixed SVG hash salt, no date metadata).
"""

from __future__ import annotations

import io
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from splicebench.units import format_ns  # noqa: E402

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


def _svg(fig) -> str:
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
    return _svg(fig)


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
    return _svg(fig)


def _us_label(v: float, _pos=None) -> str:
    if v <= 0 or not np.isfinite(v):
        return ""
    return format_ns(v * 1e3).replace(".00 ", " ").replace(".0 ", " ")


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
    return _svg(fig)


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
    return _svg(fig)
