"""Samples -> summaries: medians, bootstrap CIs, ratios to a baseline, CPU per GiB (pure pandas).

Only measured samples with status 'ok' enter the statistics; warm-up samples and failures are
counted, not averaged. For every (host, matrix cell, server) group and every metric:
median, min, max, a 95 % percentile-bootstrap CI of the median, and the ratio of its median to the
baseline server's median in the same host and cell, with a bootstrap CI of that ratio (both groups
resampled independently). Rates of exchanges (round trips or bursts per second) are derived from the
client's own counts here, so that every report and table prints the same figure. Resampling uses a fixed seed, so the same samples give the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

GIB = float(1 << 30)
N_BOOT = 10_000
LEVEL = 0.95
SEED = 20261125
GROUP_KEYS = ["server_host", "cell", "server"]


@dataclass(frozen=True)
class Metric:
    column: str
    title: str
    unit: str
    higher_is_better: bool


METRICS: list[Metric] = [
    Metric("throughput_gib_s", "Throughput", "GiB/s", True),
    Metric("round_trips_per_s", "Round trips per second", "1/s", True),
    Metric("bursts_per_s", "Bursts per second", "1/s", True),
    Metric("conns_per_s", "Connections per second", "1/s", True),
    Metric("lat_p50_us", "Latency p50", "us", False),
    Metric("lat_p90_us", "Latency p90", "us", False),
    Metric("lat_p99_us", "Latency p99", "us", False),
    Metric("lat_p999_us", "Latency p99.9", "us", False),
    Metric("proc_cpu_s_per_gib", "Server process CPU per GiB", "s/GiB", False),
    Metric("host_cpu_s_per_gib", "Host CPU per GiB", "s/GiB", False),
    Metric("host_softirq_s_per_gib", "Host softirq per GiB", "s/GiB", False),
]
METRIC_BY_COLUMN = {m.column: m for m in METRICS}

# The figure each workload's readers look for first: goodput for a stream, the rate of exchanges
# (each a latency sample of the client: one round trip, one burst) for ping-pong and burst.
HEADLINE = {"stream": "throughput_gib_s", "pingpong": "round_trips_per_s", "burst": "bursts_per_s",
            "crr": "conns_per_s", "latency-under-load": "round_trips_per_s"}


def headline(workload: str) -> Metric:
    """The metric a workload's report leads with (throughput for an unknown workload)."""
    return METRIC_BY_COLUMN[HEADLINE.get(workload, "throughput_gib_s")]


def matrix_values(samples: pd.DataFrame, keys: Sequence[str]) -> dict[int, dict[str, float]]:
    """cell -> {matrix key: its numeric value in that cell}, for the keys whose samples.csv column
    holds a number in every sample (sizes are recorded in bytes); other keys are left out."""
    out: dict[int, dict[str, float]] = {}
    numeric = [k for k in keys if k in samples
               and pd.to_numeric(samples[k], errors="coerce").notna().all()]
    for cell, grp in samples.groupby("cell", sort=True):
        out[int(cell)] = {k: float(pd.to_numeric(grp[k], errors="coerce").iloc[0]) for k in numeric}
    return out


def add_derived(samples: pd.DataFrame) -> pd.DataFrame:
    """Copy of samples with the metric columns computed from the raw columns.

    CPU per GiB divides CPU seconds by the GiB of payload the client verified (each byte was
    received and sent back by the server once)."""
    df = samples.copy()
    num = lambda c: pd.to_numeric(df[c], errors="coerce") if c in df else pd.Series(np.nan, index=df.index)  # noqa: E731
    gib = num("bytes_verified") / GIB
    gib = gib.where(gib > 0)
    df["throughput_gib_s"] = num("goodput_bytes_per_s") / GIB
    # The client times its whole run (wall_s, the time goodput divides by) and counts one latency
    # sample per round trip (pingpong) or burst (burst), over all its connections.
    wall = num("wall_s").where(num("wall_s") > 0)
    rate = num("lat_count") / wall
    workload = df["workload"].astype(str) if "workload" in df else pd.Series("", index=df.index)
    # latency-under-load: the round trips of the ping-pong clients that ran under the bulk load
    df["round_trips_per_s"] = rate.where(workload.isin(["pingpong", "latency-under-load"]))
    df["bursts_per_s"] = rate.where(workload == "burst")
    df["conns_per_s"] = rate.where(workload == "crr")  # one latency sample per transaction (connection)
    for p in ("p50", "p90", "p99", "p999"):
        df[f"lat_{p}_us"] = num(f"lat_{p}_ns") / 1e3
    # The server's CPU clock over the transfer window (results format 2, ns); in format 1 runs its
    # own getrusage() totals (whole life incl. start-up) where it reported them, else the
    # /proc/PID/stat delta over the client's run (clock-tick resolution).
    life = num("server_life_cpu_user_s") + num("server_life_cpu_sys_s")
    interval = num("server_cpu_user_s") + num("server_cpu_sys_s")
    window = num("server_cpu_s")
    df["proc_cpu_s_per_gib"] = window.where(window.notna(), life.where(life.notna(), interval)) / gib
    df["host_cpu_s_per_gib"] = num("host_cpu_busy_s") / gib
    df["host_softirq_s_per_gib"] = num("host_cpu_softirq_s") / gib
    return df


def _clean(values: Sequence[float] | np.ndarray | pd.Series) -> np.ndarray:
    """The finite numbers among values (text that is no number counts as missing)."""
    if isinstance(getattr(values, "dtype", None), np.dtype) and values.dtype.kind in "fiu":
        a = np.asarray(values, dtype=float)  # numpy numbers already: no conversion needed
    else:
        a = np.asarray(pd.to_numeric(pd.Series(values), errors="coerce"), dtype=float)
    return a[np.isfinite(a)]


def _boot_medians(a: np.ndarray, rng: np.random.Generator, n_boot: int) -> np.ndarray:
    """The medians of n_boot resamples of `a` (finite values, from _clean): np.median's values,
    from one partition at the middle (np.median also partitions at the end to look for NaN, which
    cannot be there: four times the work here)."""
    idx = rng.integers(0, len(a), size=(n_boot, len(a)))
    n = len(a)
    mid = [n // 2] if n % 2 else [n // 2 - 1, n // 2]
    part = np.partition(a[idx], mid, axis=1)
    return part[:, mid[0]] if n % 2 else np.mean(part[:, mid], axis=1)


def bootstrap_median_ci(values, *, n_boot: int = N_BOOT, level: float = LEVEL,
                        seed: int = SEED) -> tuple[float, float]:
    """Percentile-bootstrap CI of the median; (nan, nan) with fewer than 2 values."""
    a = _clean(values)
    if len(a) < 2:
        return (np.nan, np.nan)
    meds = _boot_medians(a, np.random.default_rng(seed), n_boot)
    lo, hi = np.percentile(meds, [(1 - level) / 2 * 100, (1 + level) / 2 * 100])
    return float(lo), float(hi)


def bootstrap_ratio_ci(num, den, *, n_boot: int = N_BOOT, level: float = LEVEL,
                       seed: int = SEED) -> tuple[float, float]:
    """Percentile-bootstrap CI of median(num) / median(den), each resampled independently."""
    a, b = _clean(num), _clean(den)
    if len(a) < 2 or len(b) < 2:
        return (np.nan, np.nan)
    rng = np.random.default_rng(seed)
    ma = _boot_medians(a, rng, n_boot)
    mb = _boot_medians(b, rng, n_boot)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = ma / mb
    r = r[np.isfinite(r)]
    if len(r) == 0:
        return (np.nan, np.nan)
    lo, hi = np.percentile(r, [(1 - level) / 2 * 100, (1 + level) / 2 * 100])
    return float(lo), float(hi)


def ratio_of_medians(num, den) -> float:
    a, b = _clean(num), _clean(den)
    if len(a) == 0 or len(b) == 0:
        return np.nan
    mb = float(np.median(b))
    return float(np.median(a)) / mb if mb != 0 else np.nan


def summarize(samples: pd.DataFrame, baseline: str, metrics: Sequence[Metric] = METRICS) -> pd.DataFrame:
    """One row per (server_host, cell, server) in execution order, with statistics per metric."""
    df = add_derived(samples)
    measured = df[df["phase"] == "measured"]
    ok = measured[measured["status"] == "ok"]
    order = measured.sort_values("seq").drop_duplicates(GROUP_KEYS)[GROUP_KEYS + ["cell_label", "server_kind"]]
    rows = []
    for _, key in order.iterrows():
        sel = (measured[GROUP_KEYS] == key[GROUP_KEYS].values).all(axis=1)
        grp_all = measured[sel]
        grp = ok[(ok[GROUP_KEYS] == key[GROUP_KEYS].values).all(axis=1)]
        base = ok[(ok["server_host"] == key["server_host"]) & (ok["cell"] == key["cell"]) & (ok["server"] == baseline)]
        row = {k: key[k] for k in GROUP_KEYS + ["cell_label", "server_kind"]}
        row["n_total"] = int(len(grp_all))
        row["n_ok"] = int(len(grp))
        row["n_failed"] = int((grp_all["status"].isin(["failed", "interrupted"])).sum())
        row["is_baseline"] = key["server"] == baseline
        # Latency values behind the group's percentiles (NaN when the samples do not say).
        counts = pd.to_numeric(grp["lat_count"], errors="coerce") if "lat_count" in grp else pd.Series(dtype=float)
        row["lat_n"] = float(counts.sum()) if len(counts) and counts.notna().all() else np.nan
        for m in metrics:
            x = _clean(grp[m.column]) if m.column in grp else np.array([])
            c = m.column
            if len(x):
                row[f"{c}_median"] = float(np.median(x))
                row[f"{c}_min"] = float(np.min(x))
                row[f"{c}_max"] = float(np.max(x))
            else:
                row[f"{c}_median"] = row[f"{c}_min"] = row[f"{c}_max"] = np.nan
            row[f"{c}_ci_lo"], row[f"{c}_ci_hi"] = bootstrap_median_ci(x)
            bx = _clean(base[c]) if c in base else np.array([])
            row[f"{c}_ratio"] = ratio_of_medians(x, bx)
            row[f"{c}_ratio_lo"], row[f"{c}_ratio_hi"] = bootstrap_ratio_ci(x, bx)
        rows.append(row)
    return pd.DataFrame(rows)


def status_counts(samples: pd.DataFrame) -> dict[str, int]:
    return {str(k): int(v) for k, v in samples["status"].value_counts().sort_index().items()}
