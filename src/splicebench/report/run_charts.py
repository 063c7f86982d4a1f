"""The charts of a run report, readable for any number of servers, hosts and matrix cells.

- Bars are horizontal, one labelled row per server (and host), so labels never run into each other
  however many there are; a panel per matrix cell.
- When the hosts of a run differ by more than HOSTS_APART (10x) in a chart's quantity (an emulated
  host next to a native one), each host gets its own panel with its own scale, so no host's bars
  are flattened to nothing, and the caption says so.
- A sweep (a numeric matrix key with several values) is drawn as lines: x = the swept value, y = the
  median with its 95 % CI, one line per server, one panel per value of every other matrix key;
  an axis whose values span more than LOG_SPAN (10x) is logarithmic and labelled so.
- Latency percentiles are drawn only from enough values (analysis.latency.MIN_VALUES); a chart with
  nothing to draw is left out and the report says why.
- fit_labels measures the tick labels of every finished figure and thins out the labels of a
  numeric axis until none overlaps its neighbour.

Input: the summary DataFrame (analysis.summary.summarize, server labels as shown) and the samples
with derived metrics; output: inline SVG strings (charts.svg_of).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import pandas as pd
from matplotlib.gridspec import GridSpec
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullFormatter, NullLocator

from splicebench.analysis import latency
from splicebench.report import format as fmt
from splicebench.report.charts import PALETTE, new_figure, svg_of, tight_bbox
from splicebench.report.views import ChartView
from splicebench.scenario import format_param

HOSTS_APART = 10.0  # a panel per host when one host's largest value is this many times another's
LOG_SPAN = 10.0  # a logarithmic axis when its values span more than this factor
PERCENTILES = [("p50", "p50"), ("p90", "p90"), ("p99", "p99"), ("p999", "p99.9")]
WIDTH = 6.8  # inches: the figure width of the page's charts
ROW = 0.27  # inches per labelled bar row (9 px labels need about 0.17)


@dataclass(frozen=True)
class Series:
    """One quantity drawn in a chart: a summary metric column and how it is shown."""

    column: str
    name: str
    color: str = ""  # "" = one colour per server
    hatch: str = ""
    style: str = "-"


@dataclass(frozen=True)
class Sweep:
    """How a run's matrix is drawn as lines: the swept key and, per cell, its x value and panel."""

    key: str
    x: dict[int, float]
    panel: dict[int, str]  # cell -> panel title ("" when there is one panel)


def sweep_of(matrix_keys: Sequence[str], values: dict[int, dict[str, float]]) -> Sweep | None:
    """The sweep of a run whose matrix has a numeric key with at least two values (the one with
    the most values is the x axis), else None. values: analysis.summary.matrix_values."""
    def distinct(k: str) -> int:
        return len({v[k] for v in values.values() if k in v})

    numeric = [k for k in matrix_keys if values and all(k in v for v in values.values()) and distinct(k) > 1]
    if not numeric:
        return None
    key = max(numeric, key=distinct)  # the first of the keys with the most values
    others = [k for k in matrix_keys if k != key]
    panel = {cell: " ".join(f"{k}={format_param(k, _plain(v[k]))}" for k in others if k in v)
             for cell, v in values.items()}
    return Sweep(key, {cell: v[key] for cell, v in values.items()}, panel)


def _plain(v: float) -> float | int:
    return int(v) if float(v).is_integer() else v


def x_label(key: str, v: float) -> str:
    return format_param(key, _plain(v))


# ---------------------------------------------------------------------------------------------
# Shared pieces


def _servers(summary: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(summary["server"]))


def _err(sub: pd.DataFrame, col: str) -> np.ndarray:
    med = sub[f"{col}_median"].to_numpy(dtype=float)
    lo = sub[f"{col}_ci_lo"].to_numpy(dtype=float)
    hi = sub[f"{col}_ci_hi"].to_numpy(dtype=float)
    err = np.vstack([np.nan_to_num(med - lo, nan=0.0), np.nan_to_num(hi - med, nan=0.0)])
    return np.clip(err, 0, None)


def host_groups(summary: pd.DataFrame, columns: Sequence[str]) -> list[list[str]]:
    """The hosts drawn together: one group of all hosts, or one group per host when their largest
    medians of `columns` differ by more than HOSTS_APART."""
    hosts = list(dict.fromkeys(summary["server_host"].astype(str)))
    tops = []
    for h in hosts:
        sub = summary[summary["server_host"].astype(str) == h]
        vals = sub[[f"{c}_median" for c in columns]].to_numpy(dtype=float)
        vals = vals[np.isfinite(vals) & (vals > 0)]
        if len(vals):
            tops.append(float(vals.max()))
    if len(hosts) > 1 and len(tops) > 1 and max(tops) > HOSTS_APART * min(tops):
        return [[h] for h in hosts]
    return [hosts]


def split_note(groups: list[list[str]]) -> str:
    if len(groups) < 2:
        return ""
    return (f" Each host has its own panel and scale: their values differ by more than "
            f"{HOSTS_APART:g}x, so on one scale the smaller ones would not be visible.")


def overlap(a, b, pad: float = 1.0) -> bool:
    return a.x0 < b.x1 + pad and b.x0 < a.x1 + pad and a.y0 < b.y1 and b.y0 < a.y1


def fit_labels(fig, which: str = "x") -> None:
    """Thin out the tick labels of the numeric axes (`which`: "x" or "xy") of each axes until no
    two overlap, measured on the laid-out figure (drawn without rasterizing: only the text
    extents are needed); the first label is kept and then every k-th."""
    fig.draw_without_rendering()
    renderer = fig.canvas.get_renderer()
    for get in [g for ax in fig.axes for g in (ax.get_xticklabels, ax.get_yticklabels)[:len(which)]]:
        labels = [t for t in get() if t.get_text() and t.get_visible()]
        step = 1
        while step < len(labels):
            shown = labels[::step]
            boxes = [t.get_window_extent(renderer) for t in shown]
            if not any(overlap(a, b) for a, b in zip(boxes, boxes[1:])):
                break
            step += 1
            for i, t in enumerate(labels):
                t.set_visible(i % step == 0)


def _finish(fig, handles: list, labels: list[str], legend_rows: int, which: str = "x") -> str:
    if handles:
        fig.legend(handles, labels, frameon=False, loc="lower center", ncols=min(len(labels), 4),
                   bbox_to_anchor=(0.5, 0))
    fig.tight_layout(rect=(0, min(0.4, 0.3 * legend_rows / fig.get_figheight()), 1, 1))
    fit_labels(fig, which)
    return svg_of(fig, tight_bbox(fig))  # fit_labels has drawn the figure: no draw to find the bbox


def _plain_label(v: float, _pos=None) -> str:
    return f"{v:g}" if np.isfinite(v) else ""


def _rate_label(v: float, _pos=None) -> str:
    return fmt.per_second(v).removesuffix("/s").strip() if v > 0 else ("0" if v == 0 else "")


def us_label(v: float, _pos=None) -> str:
    """A latency tick (microseconds) through the latency formatter, without trailing zeros."""
    if v <= 0 or not np.isfinite(v):
        return ""
    return fmt.latency_us(v).replace(".00 ", " ").replace(".0 ", " ")


def tick_formatter(column: str) -> Callable[[float, object], str]:
    if column.endswith("_per_s"):
        return _rate_label
    if column.startswith("lat_"):
        return us_label
    return _plain_label


# ---------------------------------------------------------------------------------------------
# Horizontal bars: one row per server, a panel per cell (and per host when hosts are apart)


def bars(summary: pd.DataFrame, samples: pd.DataFrame | None, series: Sequence[Series], xlabel: str,
         title: str) -> tuple[str, str]:
    """Median bars with 95 % CI whiskers (and the samples as dots when one series is drawn).
    Returns (svg, note for the caption: empty, or why each host has its own panel)."""
    groups = host_groups(summary, [s.column for s in series])
    servers = _servers(summary)
    cells = list(dict.fromkeys(summary["cell"]))
    panels = []
    for hosts in groups:
        for cell in cells:
            sub = summary[(summary["cell"] == cell) & summary["server_host"].astype(str).isin(hosts)]
            if len(sub):
                label = str(sub["cell_label"].iloc[0]) if len(cells) > 1 else ""
                head = " / ".join(x for x in (", ".join(hosts) if len(groups) > 1 else "", label) if x)
                panels.append((head, sub))
    pitch = max(ROW, 0.13 * len(series) + 0.1)
    heights = [len(sub) * pitch + 0.15 for _, sub in panels]
    legend_rows = 1 if len(series) > 1 else 0
    fig = new_figure((WIDTH, sum(heights) + 0.55 * len(panels) + 0.35 + 0.3 * legend_rows))
    gs = GridSpec(len(panels), 1, figure=fig, height_ratios=heights)
    share = None
    for k, (head, sub) in enumerate(panels):
        ax = fig.add_subplot(gs[k], sharex=share if len(groups) == 1 else None)
        share = share or ax
        y = np.arange(len(sub))
        slot = 0.8 / len(series)
        for j, s in enumerate(series):
            pos = y - 0.4 + slot * (j + 0.5)
            colors = [s.color] if s.color else [PALETTE[servers.index(x) % len(PALETTE)] for x in sub["server"]]
            ax.barh(pos, np.nan_to_num(sub[f"{s.column}_median"].to_numpy(dtype=float)), slot * 0.9,
                    xerr=_err(sub, s.column), color=colors, hatch=s.hatch, label=s.name, capsize=2,
                    error_kw={"elinewidth": 1, "ecolor": "#333"})
            if samples is not None and len(series) == 1 and s.column in samples:
                ok = samples[(samples["phase"] == "measured") & (samples["status"] == "ok")]
                for yi, (srv, cell) in zip(pos, zip(sub["server"], sub["cell"])):
                    vals = pd.to_numeric(ok[(ok["server"] == srv) & (ok["cell"] == cell)][s.column],
                                         errors="coerce").dropna().to_numpy()
                    if len(vals):
                        ax.plot(vals, yi + np.linspace(-0.15, 0.15, len(vals)), "o", ms=2.5, color="#222",
                                alpha=0.6, zorder=3)
        ax.set_yticks(y)
        ax.set_yticklabels(list(sub["server"]))
        ax.set_ylim(len(sub) - 0.5, -0.5)
        ax.set_xlim(left=0)
        ax.xaxis.set_major_formatter(FuncFormatter(tick_formatter(series[0].column)))
        ax.grid(axis="x", alpha=0.3)
        if head:
            ax.set_title(head, loc="left", fontsize=9)
        if k == len(panels) - 1 or len(groups) > 1:
            ax.set_xlabel(xlabel)
    fig.suptitle(title, x=0.01, ha="left", fontsize=10)
    handles, labels = fig.axes[0].get_legend_handles_labels() if len(series) > 1 else ([], [])
    return _finish(fig, handles, labels, legend_rows), split_note(groups)


# ---------------------------------------------------------------------------------------------
# Sweeps: lines over the swept value


def log_ticks(axis, values) -> None:
    """Ticks of a logarithmic axis: 1, 2 and 5 per decade over at most two and a half decades
    (so that even a short span has labels), else one per decade."""
    subs = (1.0, 2.0, 5.0) if math.log10(max(_span(values), 1.0)) <= 2.5 else (1.0,)
    axis.set_major_locator(LogLocator(base=10, subs=subs))
    axis.set_minor_locator(NullLocator())


def _span(values) -> float:
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    return float(v.max() / v.min()) if len(v) else 1.0


def sweep_lines(summary: pd.DataFrame, sweep: Sweep, series: Sequence[Series], ylabel: str,
                title: str, shown: Callable[[pd.Series, Series], bool] = lambda row, s: True
                ) -> tuple[str, str]:
    """Median (marker) and 95 % CI (whiskers) against the swept value, one line per server and
    series (series told apart by line style), one panel per other-key value (and host when apart).
    `shown(row, series)` leaves out points that mean nothing (too few latency values).
    Returns (svg, note for the caption)."""
    groups = host_groups(summary, [s.column for s in series])
    servers = _servers(summary)
    panels: list[tuple[str, pd.DataFrame]] = []
    for hosts in groups:
        on = summary[summary["server_host"].astype(str).isin(hosts)]
        for name in dict.fromkeys(sweep.panel[int(c)] for c in on["cell"]):
            sub = on[[sweep.panel[int(c)] == name for c in on["cell"]]]
            head = " / ".join(x for x in (", ".join(hosts) if len(groups) > 1 else "", name) if x)
            panels.append((head, sub))
    xs_all = sorted(set(sweep.x.values()))
    logx = _span(xs_all) > LOG_SPAN
    ys = summary[[f"{s.column}_median" for s in series]].to_numpy(dtype=float)
    logy = _span(ys) > LOG_SPAN
    cols = min(len(panels), 3)
    rows = math.ceil(len(panels) / cols)
    fig = new_figure((WIDTH if cols > 1 else 5.2, 2.5 * rows + 0.9))
    axes = fig.subplots(rows, cols, squeeze=False, sharey=len(groups) == 1, sharex=True)
    for k, (head, sub) in enumerate(panels):
        ax = axes[k // cols][k % cols]
        for i, srv in enumerate(servers):
            color = PALETTE[i % len(PALETTE)]
            one = sub[sub["server"] == srv]
            for s in series:
                keep = [shown(r, s) and fmt.is_number(r[f"{s.column}_median"]) for _, r in one.iterrows()]
                pts = one[keep].assign(_x=[sweep.x[int(c)] for c in one[keep]["cell"]]).sort_values("_x")
                if pts.empty:
                    continue
                ax.errorbar(pts["_x"].to_numpy(dtype=float), pts[f"{s.column}_median"].to_numpy(dtype=float),
                            yerr=_err(pts, s.column), fmt="o", ls=s.style, color=color, ms=3.5, lw=1.3,
                            capsize=2, elinewidth=0.8)
        if logx:
            ax.set_xscale("log")
        if logy:
            ax.set_yscale("log")
            log_ticks(ax.yaxis, ys)
        ax.xaxis.set_major_locator(FixedLocator(xs_all))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _p: x_label(sweep.key, v)))
        ax.yaxis.set_major_formatter(FuncFormatter(tick_formatter(series[0].column)))
        ax.yaxis.set_minor_formatter(NullFormatter())
        if not logy:
            ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3, which="major")
        if head:
            ax.set_title(head, loc="left", fontsize=9)
        if k % cols == 0:
            ax.set_ylabel(ylabel + (" (log scale)" if logy else ""))
        if k // cols == rows - 1 or k + cols >= len(panels):
            ax.set_xlabel(sweep.key + (" (log scale)" if logx else ""))
            ax.xaxis.set_tick_params(labelbottom=True)
    for k in range(len(panels), rows * cols):
        axes[k // cols][k % cols].set_visible(False)
    fig.suptitle(title, x=0.01, ha="left", fontsize=10)
    handles = [Line2D([], [], color=PALETTE[i % len(PALETTE)], marker="o", ms=3.5, label=srv)
               for i, srv in enumerate(servers)]
    if len(series) > 1:
        handles += [Line2D([], [], color="#555", ls=s.style, label=s.name) for s in series]
    n_rows = math.ceil(len(handles) / 4)
    return _finish(fig, handles, [h.get_label() for h in handles], n_rows, "xy"), split_note(groups)


# ---------------------------------------------------------------------------------------------
# Latency percentiles of single cells


def enough_latencies(row: pd.Series, name: str) -> bool:
    return latency.enough(name, float(row.get("lat_n", math.nan)))


def latency_percentiles(summary: pd.DataFrame) -> tuple[str | None, list[str]]:
    """p50, p90, p99 and p99.9 per server, one panel per matrix cell; a percentile is drawn only
    from enough latency values (analysis.latency.MIN_VALUES), and left off the axis when no group
    has enough. Returns (svg, the percentiles left off); svg is None when no group has enough
    values for any percentile above p50 (a curve of one point says nothing the table does not)."""
    drawn = [(p, name) for p, name in PERCENTILES if any(enough_latencies(r, p) for _, r in summary.iterrows())]
    omitted = [name for p, name in PERCENTILES if (p, name) not in drawn]
    if len(drawn) < 2:
        return None, omitted
    names = [p for p, _ in drawn]
    servers = _servers(summary)
    cells = list(dict.fromkeys(summary["cell"]))
    n = len(cells)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig = new_figure((2.3 * cols + 2.2, 2.6 * rows + 0.6))
    axes = fig.subplots(rows, cols, squeeze=False, sharey=True)
    vals = summary[[f"lat_{p}_us_median" for p in names]].to_numpy(dtype=float)
    logy = _span(vals) > LOG_SPAN
    for k, cell in enumerate(cells):
        ax = axes[k // cols][k % cols]
        for i, srv in enumerate(servers):
            sub = summary[(summary["server"] == srv) & (summary["cell"] == cell)]
            if sub.empty:
                continue
            r = sub.iloc[0]
            idx = [j for j, p in enumerate(names) if enough_latencies(r, p)]
            xs = np.array(idx, dtype=float)
            ys = [float(r[f"lat_{names[j]}_us_median"]) for j in idx]
            lo = [float(r[f"lat_{names[j]}_us_ci_lo"]) for j in idx]
            hi = [float(r[f"lat_{names[j]}_us_ci_hi"]) for j in idx]
            color = PALETTE[i % len(PALETTE)]
            ax.plot(xs, ys, "o-", color=color, label=srv, ms=4)
            if idx and not all(np.isnan(lo)):
                ax.fill_between(xs, lo, hi, color=color, alpha=0.15, linewidth=0)
        ax.set_xticks(np.arange(len(drawn)))
        ax.set_xticklabels([name for _, name in drawn])
        ax.set_xlim(-0.3, len(drawn) - 0.7)
        if logy:
            ax.set_yscale("log")
            log_ticks(ax.yaxis, vals)
        else:
            ax.set_ylim(bottom=0)
        ax.yaxis.set_major_formatter(FuncFormatter(us_label))
        label = str(summary[summary["cell"] == cell]["cell_label"].iloc[0])
        ax.set_title(label if n > 1 and label not in ("", "nan") else "latency percentiles", loc="left", fontsize=9)
        ax.grid(axis="y", alpha=0.3, which="both")
        if k % cols == 0:
            ax.set_ylabel("latency" + (" (log scale)" if logy else ""))
    for k in range(n, rows * cols):
        axes[k // cols][k % cols].set_visible(False)
    handles = [Line2D([], [], color=PALETTE[i % len(PALETTE)], marker="o", ms=4, label=s) for i, s in enumerate(servers)]
    return _finish(fig, handles, servers, math.ceil(len(servers) / 4), "xy"), omitted


# ---------------------------------------------------------------------------------------------
# The charts of a run report


# What a latency value of each workload is (the client's latency samples, docs/programs.md).
LATENCY_OF = {"stream": "transfer time per connection", "pingpong": "latency per round trip",
              "burst": "latency per burst", "crr": "time per connection (connect to close)",
              "latency-under-load": "latency per round trip under bulk load"}
HEADLINE_AXIS = {"throughput_gib_s": "GiB/s", "round_trips_per_s": "round trips per second",
                 "bursts_per_s": "bursts per second", "conns_per_s": "connections per second"}
CPU_SERIES = [Series("proc_cpu_s_per_gib", "server process", "#4c72b0"),
              Series("host_cpu_s_per_gib", "whole host", "#c44e52"),
              Series("host_softirq_s_per_gib", "host softirq", "#dd8452", "//")]
CPU_CAPTION = ("CPU seconds per GiB echoed: {}. Each bar or point is the group's CPU pooled over its measured "
               "samples (CPU seconds summed over GiB summed, as in the tables); whiskers: its resolution "
               "(the range the sampler's readings and clock ticks leave).")


def pooled_cpu_view(summary: pd.DataFrame) -> pd.DataFrame:
    """summary with each CPU column's median and CI replaced by its pooled value +- resolution
    (analysis.cpu.add_pooled), so that the CPU charts draw what the tables print. Runs without
    pooled figures (no uncertainty recorded) keep the medians and CIs of their samples."""
    out = summary.copy()
    for s in CPU_SERIES:
        value, unc = f"{s.column}_pooled", f"{s.column}_pooled_unc"
        if value not in out or unc not in out:
            continue
        v = pd.to_numeric(out[value], errors="coerce")
        u = pd.to_numeric(out[unc], errors="coerce")
        has = v.notna() & u.notna()
        out.loc[has, f"{s.column}_median"] = v[has]
        out.loc[has, f"{s.column}_ci_lo"] = (v - u).clip(lower=0)[has]
        out.loc[has, f"{s.column}_ci_hi"] = (v + u)[has]
    return out


def thresholds_text() -> str:
    return ", ".join(f"{name} from {latency.MIN_VALUES[p]:,}" for p, name in PERCENTILES if latency.MIN_VALUES[p] > 1)


def build(summary: pd.DataFrame, derived: pd.DataFrame, headline, workload: str, sweep: Sweep | None,
          merged_caption: str) -> tuple[list[ChartView], list[str]]:
    """The run report's charts (headline figure first, then latency, then CPU) and the notes on
    what was left out. headline: analysis.summary.headline(workload); summary: latency columns
    already the merged-histogram percentiles where recorded (analysis.latency.with_merged_latency)."""
    if summary.empty or summary["n_ok"].sum() == 0:
        return [], []
    what = LATENCY_OF.get(workload, "latency")
    out: list[ChartView] = []
    notes: list[str] = []
    col, axis = headline.column, HEADLINE_AXIS.get(headline.column, headline.unit)
    if sweep:
        svg, note = sweep_lines(summary, sweep, [Series(col, headline.title)], axis,
                                f"{headline.title} against {sweep.key} (median, 95 % CI)")
        cap = f"Markers: median of the measured samples; whiskers: 95 % bootstrap CI of the median.{note}"
    else:
        svg, note = bars(summary, derived, [Series(col, headline.title)], axis,
                         f"{headline.title} (median, 95 % CI)")
        cap = ("Bars: median of the measured samples; whiskers: 95 % bootstrap CI of the median; "
               f"dots: individual samples.{note}")
    out.append(ChartView("headline", headline.title, svg, cap))

    if sweep:
        lat = [Series("lat_p50_us", "p50"), Series("lat_p99_us", "p99", style="--")]
        svg, note = sweep_lines(summary, sweep, lat, what, f"{what.capitalize()}: p50 and p99 against {sweep.key}",
                                shown=lambda r, s: enough_latencies(r, s.column[4:-3]))
        out.append(ChartView("latency", what.capitalize(), svg,
                             f"Solid: p50, dashed: p99 ({merged_caption.rstrip('.')}). A p99 is drawn only from "
                             f"{latency.MIN_VALUES['p99']:,} latency values or more.{note}"))
    else:
        svg, omitted = latency_percentiles(summary)
        if svg is None:
            notes.append(f"No latency percentile chart: every group has fewer than {latency.MIN_VALUES['p90']:,} "
                         f"latency values ({what}), too few for a percentile above the median "
                         f"(percentiles are drawn {thresholds_text()} values); the summary table gives the median.")
        else:
            out.append(ChartView("latency", f"Latency percentiles ({what})", svg,
                                 f"{merged_caption} A percentile is drawn only from enough latency values "
                                 f"({thresholds_text()}); points are left out for groups with fewer"
                                 + (f", and {' and '.join(omitted)} for all: no group has enough." if omitted else ".")))
    if sweep:
        svg, note = sweep_lines(pooled_cpu_view(summary), sweep,
                                [CPU_SERIES[1], Series(CPU_SERIES[0].column, "server process", style="--")],
                                "CPU s / GiB", f"CPU seconds per GiB against {sweep.key}")
        out.append(ChartView("cpu", "CPU per GiB", svg, CPU_CAPTION.format("the whole host, client included (solid), and the "
                                                                        "server process alone (dashed); softirq is in the table") + note))
    else:
        svg, note = bars(pooled_cpu_view(summary), None, CPU_SERIES, "CPU s / GiB", "CPU seconds per GiB echoed")
        out.append(ChartView("cpu", "CPU per GiB", svg, CPU_CAPTION.format("the server process alone, the whole host (client "
                                                                                      "included) and the host's softirq part") + note))
    return out, notes
