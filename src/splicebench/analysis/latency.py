"""Latency percentiles of a run's summary groups from merged client histograms (pure).

A group (server host, matrix cell, server) has one histogram per measured ok sample; merging them
(bucket counts summed, stats.merge_histograms) gives the percentiles of all its latencies together,
never an average of per-sample percentiles. Values are bucket upper ends in nanoseconds (at most
1/64 above the exact value).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import pandas as pd

from splicebench.analysis import stats
from splicebench.analysis.compare import RunData

# The percentiles a summary carries as lat_{name}_us_* columns.
NAMES = tuple(name for name, _ in stats.PERCENTILES)

# The fewest latency values a percentile is shown from: the nearest-rank p99 of fewer than 100
# values is the largest value (p90 of fewer than 10, p99.9 of fewer than 1000 likewise), i.e. the
# maximum under another name. p50 is shown from any number of values.
MIN_VALUES = {"p50": 1, "p90": 10, "p99": 100, "p999": 1000}


def enough(name: str, n: float) -> bool:
    """Whether percentile `name` (p50, p90, p99, p999) means something from n latency values; an
    unknown count (NaN: older runs that did not record it) is given the benefit of the doubt."""
    return math.isnan(n) or n >= MIN_VALUES[name]


def merged_latency(run: RunData, host: str, cell: Any, server: str) -> dict[str, float] | None:
    """Percentiles (ns) of the merged histograms of one group's measured ok samples; None when none
    of them has a histogram."""
    df = run.samples
    sel = df[(df["server_host"].astype(str) == str(host)) & (df["cell"] == cell) & (df["server"].astype(str) == str(server))
             & (df["phase"] == "measured") & (df["status"] == "ok")]
    hists = [run.hists[s] for s in sel["sample_id"].astype(str) if s in run.hists]
    if not hists:
        return None
    return stats.hist_percentiles(stats.merge_histograms(hists))


def merged_per_row(run: RunData, summary: pd.DataFrame) -> list[dict[str, float] | None]:
    """merged_latency for each row of analysis.summary.summarize(run.samples, ...), in order."""
    return [merged_latency(run, r["server_host"], r["cell"], r["server"]) for _, r in summary.iterrows()]


def with_merged_latency(summary: pd.DataFrame, merged: Sequence[dict[str, float] | None]) -> pd.DataFrame:
    """A copy of the summary whose latency medians are the merged percentiles (in microseconds, like
    the summary) where a row has them; their CI columns are then NaN (a merged histogram has no
    CI of a median). Rows without histograms keep their medians of per-sample percentiles."""
    out = summary.copy()
    for i, m in enumerate(merged):
        if not m:
            continue
        for name in NAMES:
            out.iloc[i, out.columns.get_loc(f"lat_{name}_us_median")] = m[name] / 1e3
            out.iloc[i, out.columns.get_loc(f"lat_{name}_us_ci_lo")] = math.nan
            out.iloc[i, out.columns.get_loc(f"lat_{name}_us_ci_hi")] = math.nan
    return out
