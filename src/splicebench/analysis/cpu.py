"""CPU per GiB of a group of samples, pooled, with its uncertainty (pure pandas).

A group's CPU per GiB is the sum of its samples' CPU seconds divided by the sum of the GiB they
verified, not the median of per-sample ratios: short samples hold few clock ticks each, and a
median of quantized ratios keeps their quantization. Each sample's figure lies within value +- unc
(results/cpu.py); the sum lies within the sum of those ranges (bounds add, nothing is assumed about
independence), so the pooled uncertainty is sum(unc) / sum(GiB). A sample without an uncertainty
(results format 1) gives the group an unknown uncertainty (NaN).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

GIB = float(1 << 30)

# Metric column of analysis.summary -> (samples.csv CPU column, its uncertainty column).
POOLED = {
    "proc_cpu_s_per_gib": ("server_cpu_s", "server_cpu_unc_s"),
    "host_cpu_s_per_gib": ("host_cpu_busy_s", "host_cpu_busy_unc_s"),
    "host_softirq_s_per_gib": ("host_cpu_softirq_s", "host_cpu_softirq_unc_s"),
}
# Format 1 runs have no window figure of the server process: its life-time getrusage total.
LEGACY_PROC = ("server_life_cpu_user_s", "server_life_cpu_sys_s")


def _num(df: pd.DataFrame, col: str) -> pd.Series:
    return pd.to_numeric(df[col], errors="coerce") if col in df else pd.Series(np.nan, index=df.index)


def pooled(group: pd.DataFrame, metric: str) -> tuple[float, float]:
    """(value, uncertainty) of a metric column of POOLED over a group's samples (s/GiB); NaN when a
    sample lacks the figure, NaN uncertainty when one lacks its uncertainty."""
    col, unc_col = POOLED[metric]
    gib = _num(group, "bytes_verified") / GIB
    cpu, unc = _num(group, col), _num(group, unc_col)
    if metric == "proc_cpu_s_per_gib" and cpu.isna().all():
        cpu = _num(group, LEGACY_PROC[0]) + _num(group, LEGACY_PROC[1])
    if len(group) == 0 or gib.isna().any() or gib.sum() <= 0 or cpu.isna().any():
        return (np.nan, np.nan)
    total = float(gib.sum())
    return float(cpu.sum()) / total, (float(unc.sum()) / total if unc.notna().all() else np.nan)


def add_pooled(summary: pd.DataFrame, samples: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """summary with `<metric>_pooled` and `<metric>_pooled_unc` for every metric of POOLED, over the
    measured ok samples of each summary row's group (keys: the grouping columns)."""
    out = summary.copy()
    ok = samples[(samples["phase"] == "measured") & (samples["status"] == "ok")]
    groups = [ok[(ok[keys] == r[keys].values).all(axis=1)] for _, r in summary.iterrows()]  # once, not per metric
    for metric in POOLED:
        figures = [pooled(grp, metric) for grp in groups]
        out[f"{metric}_pooled"] = [v for v, _ in figures]
        out[f"{metric}_pooled_unc"] = [u for _, u in figures]
    return out
