"""Every chart of the reports, as inline SVG strings made with matplotlib (no files, no external
references); `svg_of` turns a finished figure into such a string.

The run report's own charts are in run_charts.py (they use new_figure, svg_of and PALETTE from here, where
matplotlib is configured). Shared statistics sections and the comparison report:
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
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator

from splicebench.analysis import stats
from splicebench.analysis.compare import Group, MetricComparison, Source
from splicebench.analysis.summary import Metric
from splicebench.report import format as fmt

PALETTE = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c"]

matplotlib.rcParams.update({
    "svg.fonttype": "none",  # text stays text: smaller, selectable, uses the page's font
    "svg.hashsalt": "splicebench",
    "font.size": 9,
    "font.family": "sans-serif",
    "axes.spines.top": False,
    "axes.spines.right": False,
})


def new_figure(figsize: tuple[float, float]) -> Figure:
    """A figure outside pyplot (no global registry to close, and pyplot is never imported: it is the
    slowest part of matplotlib to load), with an Agg canvas so that text extents can be measured."""
    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def svg_of(fig, bbox_inches="tight") -> str:
    """The figure as inline SVG text (no XML declaration, DOCTYPE or metadata).

    bbox_inches: the area to save; "tight" (the default) draws the figure once more to find it,
    which a caller that has just drawn it can spare with tight_bbox(fig)."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches=bbox_inches, metadata={"Date": None, "Creator": None})
    text = buf.getvalue()
    # Inline SVG in HTML needs neither the XML declaration nor the DOCTYPE (which names a URL).
    text = re.sub(r"<\?xml[^>]*\?>\s*", "", text)
    text = re.sub(r"<!DOCTYPE[^>]*>\s*", "", text)
    text = re.sub(r"<metadata>.*?</metadata>\s*", "", text, flags=re.S)
    return text.strip()


def tight_bbox(fig):
    """What savefig(bbox_inches="tight") saves, from the figure's last draw on its own canvas.

    Also drops the placeholder layout engine that tight_layout() leaves behind, for which savefig
    would draw the figure once more before saving it: the layout is done."""
    bbox = fig.get_tightbbox(fig.canvas.get_renderer())
    fig.set_layout_engine(None)
    return bbox.padded(matplotlib.rcParams["savefig.pad_inches"])


# ---------------------------------------------------------------------------------------------
# Statistics sections and the comparison report


def _verdict_color(v: str) -> str:
    return {stats.BETTER: "#2e7d32", stats.WORSE: "#c62828"}.get(v, "#8c8c8c")


def ratio_chart(comps: Sequence[MetricComparison], metric: Metric, varying: Sequence[str]) -> str:
    """Forest plot: ratio other/reference per group, 95 % CI, colour by verdict, line at 1."""
    rows = [c for c in comps if c.metric.column == metric.column]
    labels = [f"{c.other.source.letter} / {c.ref.source.letter}: {c.key.label(varying)}" for c in rows]
    fig = new_figure((6.8, 0.9 + 0.38 * max(1, len(rows))))
    ax = fig.subplots()
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
    fig = new_figure((6.8, 3.4))
    ax = fig.subplots()
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
    fig = new_figure((4.2, 2.9))
    ax = fig.subplots()
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
