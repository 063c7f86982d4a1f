"""Aggregation maths against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from splicebench.analysis import summary as analysis
from splicebench.results.metrics import SAMPLE_COLUMNS

pytestmark = pytest.mark.unit
GIB = 1 << 30


def rows(server, goodputs, *, cell=0, phase="measured", status="ok", cpu=None, host=None, verified=GIB):
    out = []
    for i, g in enumerate(goodputs):
        r = dict.fromkeys(SAMPLE_COLUMNS)
        r.update(run_id="t", sample_id=f"{server}-{cell}-{phase}-{i}", cell=cell, cell_label=f"c{cell}",
                 phase=phase, status=status, server=server, server_kind=server, server_host="local",
                 goodput_bytes_per_s=g, bytes_verified=verified,
                 lat_p50_ns=1000.0 * (i + 1), lat_p90_ns=2000.0, lat_p99_ns=3000.0, lat_p999_ns=4000.0,
                 server_life_cpu_user_s=(cpu[i] if cpu else 0.1), server_life_cpu_sys_s=0.0,
                 host_cpu_busy_s=(host[i] if host else 0.5), host_cpu_softirq_s=0.25)
        out.append(r)
    return out


def frame(*groups):
    df = pd.DataFrame([r for g in groups for r in g])
    df["seq"] = range(len(df))
    return df


def test_bootstrap_ci_of_a_constant_is_the_constant():
    assert analysis.bootstrap_median_ci([2.0, 2.0, 2.0]) == (2.0, 2.0)


def test_bootstrap_ci_of_three_values_spans_min_to_max():
    # Medians of resamples of {1,2,3}: P(1) = P(3) = 7/27 > 2.5 %, so the 95 % interval is [1, 3].
    assert analysis.bootstrap_median_ci([1.0, 2.0, 3.0]) == (1.0, 3.0)


def test_bootstrap_ci_needs_two_values_and_ignores_nan():
    lo, hi = analysis.bootstrap_median_ci([5.0])
    assert math.isnan(lo) and math.isnan(hi)
    assert analysis.bootstrap_median_ci([4.0, float("nan"), 4.0]) == (4.0, 4.0)


def test_bootstrap_is_deterministic():
    x = np.arange(1.0, 8.0) ** 1.5
    assert analysis.bootstrap_median_ci(x) == analysis.bootstrap_median_ci(list(x))


@pytest.mark.parametrize("n", [2, 3, 7, 8])
def test_bootstrap_cis_are_those_of_numpys_medians_of_the_same_resamples(n):
    """The resampled medians come from one partition at the middle: the CIs are exactly those of
    np.median over the same resamples (odd and even counts, ties, NaN dropped first)."""
    rng = np.random.default_rng(n)
    x = np.round(rng.random(n) * 50.0)
    y = rng.random(n) + 1.0
    level = [2.5, 97.5]

    def resampled(a, r):
        return np.median(a[r.integers(0, len(a), size=(analysis.N_BOOT, len(a)))], axis=1)

    want = np.percentile(resampled(x, np.random.default_rng(analysis.SEED)), level)
    assert analysis.bootstrap_median_ci(list(x) + [np.nan]) == (want[0], want[1])
    r = np.random.default_rng(analysis.SEED)
    ratios = resampled(x + 1.0, r) / resampled(y, r)
    want = np.percentile(ratios, level)
    assert analysis.bootstrap_ratio_ci(x + 1.0, y) == (want[0], want[1])


def test_ratio_and_its_ci_by_hand():
    assert analysis.ratio_of_medians([3, 3, 3], [2, 2, 2]) == 1.5
    assert analysis.bootstrap_ratio_ci([3, 3, 3], [2, 2, 2]) == (1.5, 1.5)
    # Constant denominator 1: the ratio's distribution is the numerator's median distribution.
    assert analysis.ratio_of_medians([1, 2, 3], [1, 1]) == 2.0
    assert analysis.bootstrap_ratio_ci([1, 2, 3], [1, 1]) == (1.0, 3.0)


def test_summary_by_hand():
    df = frame(
        rows("naive", [1 * GIB, 2 * GIB, 3 * GIB], cpu=[0.5, 1.0, 1.5], host=[1.0, 1.0, 1.0]),
        rows("splice", [2 * GIB, 4 * GIB, 6 * GIB, 100 * GIB][:3], cpu=[0.25, 0.25, 0.25], host=[2.0, 2.0, 2.0]),
        rows("naive", [50 * GIB], phase="warmup"),                 # warm-up: never counted
        rows("splice", [0.0], status="failed"),                    # failed: counted, not averaged
    )
    s = analysis.summarize(df, baseline="naive").set_index("server")
    assert list(s.index) == ["naive", "splice"]
    n, sp = s.loc["naive"], s.loc["splice"]
    assert (n.n_ok, n.n_total, n.n_failed) == (3, 3, 0)
    assert (sp.n_ok, sp.n_total, sp.n_failed) == (3, 4, 1)
    assert n.throughput_gib_s_median == 2.0 and n.throughput_gib_s_min == 1.0 and n.throughput_gib_s_max == 3.0
    assert (n.throughput_gib_s_ci_lo, n.throughput_gib_s_ci_hi) == (1.0, 3.0)
    assert sp.throughput_gib_s_median == 4.0
    assert sp.throughput_gib_s_ratio == 2.0
    assert n.throughput_gib_s_ratio == 1.0 and bool(n.is_baseline)
    # CPU seconds per GiB: each sample echoed 1 GiB; server CPU 0.5/1.0/1.5 s -> median 1.0
    assert n.proc_cpu_s_per_gib_median == 1.0
    assert sp.proc_cpu_s_per_gib_median == 0.25
    assert sp.proc_cpu_s_per_gib_ratio == 0.25
    assert n.host_cpu_s_per_gib_median == 1.0 and sp.host_cpu_s_per_gib_median == 2.0
    assert sp.host_softirq_s_per_gib_median == 0.25
    # latency: p50 of the samples were 1, 2, 3 us -> median 2 us
    assert n.lat_p50_us_median == 2.0 and n.lat_p99_us_median == 3.0


def test_cpu_per_gib_scales_with_bytes():
    df = frame(rows("naive", [GIB, GIB], cpu=[0.3, 0.3], host=[0.6, 0.6], verified=GIB // 4))
    s = analysis.summarize(df, "naive").iloc[0]
    assert s.proc_cpu_s_per_gib_median == pytest.approx(1.2)
    assert s.host_cpu_s_per_gib_median == pytest.approx(2.4)


def test_interval_cpu_is_used_when_the_server_reported_none():
    df = frame(rows("naive", [GIB, GIB]))
    df["server_life_cpu_user_s"] = np.nan
    df["server_life_cpu_sys_s"] = np.nan
    df["server_cpu_user_s"] = 0.2
    df["server_cpu_sys_s"] = 0.3
    assert analysis.summarize(df, "naive").iloc[0].proc_cpu_s_per_gib_median == pytest.approx(0.5)


def test_ratios_are_per_cell_and_host():
    df = frame(rows("naive", [GIB, GIB], cell=0), rows("splice", [2 * GIB, 2 * GIB], cell=0),
               rows("naive", [4 * GIB, 4 * GIB], cell=1), rows("splice", [2 * GIB, 2 * GIB], cell=1))
    s = analysis.summarize(df, "naive")
    got = {(r.cell, r.server): r.throughput_gib_s_ratio for r in s.itertuples()}
    assert got == {(0, "naive"): 1.0, (0, "splice"): 2.0, (1, "naive"): 1.0, (1, "splice"): 0.5}


def test_a_group_with_only_failures_has_counts_and_no_numbers():
    df = frame(rows("naive", [GIB, GIB]), rows("sockmap", [0, 0], status="failed"))
    s = analysis.summarize(df, "naive").set_index("server").loc["sockmap"]
    assert (s.n_ok, s.n_total, s.n_failed) == (0, 2, 2)
    assert math.isnan(s.throughput_gib_s_median) and math.isnan(s.throughput_gib_s_ratio)
