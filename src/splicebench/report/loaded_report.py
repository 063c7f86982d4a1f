"""The report's latency-under-load section: ping-pong p50/p99 alone and under bulk load (pure).

Each latency-under-load sample runs the ping-pong clients alone, then again while bulk streams
run through the same server (run/runner.py); this section puts the two side by side per server,
medians over the measured samples with status ok, with the bulk streams' goodput.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from splicebench.report import format as fmt


@dataclass(frozen=True)
class LoadedRowView:
    cell: str
    server: str
    n: int
    p50_alone: str
    p99_alone: str
    p50_loaded: str
    p99_loaded: str
    p99_ratio: str  # loaded / alone, median of the samples' ratios
    bulk: str  # the bulk streams' goodput


@dataclass(frozen=True)
class LoadedView:
    rows: list[LoadedRowView]
    show_cells: bool
    note: str


NOTE = ("Each sample runs the ping-pong clients twice on a fresh server: alone, then while the bulk streams "
        "run through the same server (they start first and stop after). p50 and p99 are the median over the "
        "measured samples of each sample's exact percentiles; the ratio is the median of the samples' "
        "loaded p99 / alone p99 (above 1: bulk traffic delays the small messages). Bulk: the streams' "
        "verified goodput while they ran.")


def build(samples: pd.DataFrame, workload: str) -> LoadedView | None:
    if workload != "latency-under-load" or "unloaded_lat_p99_ns" not in samples:
        return None
    ok = samples[(samples["phase"] == "measured") & (samples["status"] == "ok")]
    rows = []
    for (_, _, server), grp in ok.groupby(["cell", "server_host", "server"], sort=False):
        num = {c: pd.to_numeric(grp[c], errors="coerce") for c in
               ("unloaded_lat_p50_ns", "unloaded_lat_p99_ns", "lat_p50_ns", "lat_p99_ns", "bulk_goodput_bytes_per_s")}
        ratio = (num["lat_p99_ns"] / num["unloaded_lat_p99_ns"]).median()
        label = str(grp["cell_label"].iloc[0]) if "cell_label" in grp else ""
        rows.append(LoadedRowView(
            cell="" if label in ("", "nan") else label, server=str(server), n=len(grp),
            p50_alone=fmt.latency(num["unloaded_lat_p50_ns"].median()),
            p99_alone=fmt.latency(num["unloaded_lat_p99_ns"].median()),
            p50_loaded=fmt.latency(num["lat_p50_ns"].median()), p99_loaded=fmt.latency(num["lat_p99_ns"].median()),
            p99_ratio=fmt.ratio(ratio), bulk=fmt.throughput(num["bulk_goodput_bytes_per_s"].median() / fmt.GIB)))
    return LoadedView(rows, len({r.cell for r in rows}) > 1, NOTE)
