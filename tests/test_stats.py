"""stats.py against hand-checked values, known distributions and real captured client output."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from splicebench.analysis import stats

pytestmark = pytest.mark.unit

RUNS = Path(__file__).parent / "data" / "runs"


# ---------------------------------------------------------------------------------------------
# median and its CI


def test_median_ci_order_statistics_hand_checked():
    # Distribution-free 95 % CI of the median (tables, e.g. Conover): n=10 -> 2nd and 9th values,
    # n=20 -> 6th and 15th, n=6 -> min and max (coverage 1 - 2/64 = 0.969).
    x10 = [3.0, 9.0, 1.0, 7.0, 5.0, 2.0, 10.0, 4.0, 8.0, 6.0]
    ci = stats.median_ci(x10)
    assert (ci.n, ci.median, ci.lo, ci.hi) == (10, 5.5, 2.0, 9.0)
    assert ci.rel_width == pytest.approx(7.0 / 5.5)
    ci20 = stats.median_ci(range(1, 21))
    assert (ci20.lo, ci20.hi) == (6.0, 15.0)
    ci6 = stats.median_ci([10, 11, 12, 13, 14, 15])
    assert (ci6.lo, ci6.hi) == (10.0, 15.0)


def test_median_ci_too_few_values_is_unknown_not_narrow():
    assert stats.min_n_for_median_ci(0.95) == 6
    assert stats.min_n_for_median_ci(0.90) == 5
    ci = stats.median_ci([1.0, 1.0001, 0.9999, 1.0, 1.0])
    assert ci.median == 1.0 and ci.n == 5
    assert math.isnan(ci.lo) and math.isnan(ci.hi) and math.isnan(ci.rel_width)
    empty = stats.median_ci([])
    assert empty.n == 0 and math.isnan(empty.median)


def test_clean_drops_non_numbers():
    assert stats.clean([1, "2", None, float("nan"), float("inf"), "x", 3.5]).tolist() == [1.0, 2.0, 3.5]


def test_cv_hand_checked_and_noisy_flag():
    assert stats.cv([1, 2, 3]) == pytest.approx(0.5)  # sd 1, mean 2
    assert stats.cv([10, 10, 10]) == 0.0
    assert math.isnan(stats.cv([5]))
    assert stats.is_noisy([1, 2, 3], threshold=0.10)
    assert not stats.is_noisy([100, 101, 99, 100], threshold=0.10)
    assert not stats.is_noisy([7])


# ---------------------------------------------------------------------------------------------
# adaptive repetitions


def test_enough_repetitions_stops_at_target():
    policy = stats.RepetitionPolicy(minimum=6, maximum=20, target_ci_width=0.05)
    tight = [100, 101, 99, 100.5, 99.5, 100]
    d = stats.enough_repetitions(tight, policy)
    assert d.done and d.reason == stats.TARGET_MET and not d.bound_hit
    assert d.rel_width == pytest.approx((101 - 99) / 100)


def test_enough_repetitions_needs_minimum_and_a_known_ci():
    policy = stats.RepetitionPolicy(minimum=3, maximum=20, target_ci_width=0.05)
    # 5 identical values: the median is clear but a 95 % CI needs 6 values: continue.
    d = stats.enough_repetitions([100] * 5, policy)
    assert not d.done and d.reason == stats.CONTINUE
    policy8 = stats.RepetitionPolicy(minimum=8, maximum=20, target_ci_width=0.05)
    assert not stats.enough_repetitions([100] * 7, policy8).done
    assert stats.enough_repetitions([100] * 8, policy8).done


def test_enough_repetitions_bound_hit_on_noise_and_on_failures():
    policy = stats.RepetitionPolicy(minimum=6, maximum=10, target_ci_width=0.05)
    noisy = [100, 150, 70, 130, 90, 160, 60, 140, 80]
    assert not stats.enough_repetitions(noisy, policy).done
    d = stats.enough_repetitions(noisy + [120], policy)
    assert d.done and d.bound_hit and d.reason == stats.MAX_REACHED and d.n == 10
    # Failed samples count as attempts: a group whose samples keep failing still stops.
    d = stats.enough_repetitions([100, 101], policy, attempts=10)
    assert d.done and d.bound_hit and d.n == 2


def test_enough_for_all_waits_for_every_group():
    policy = stats.RepetitionPolicy(minimum=6, maximum=12, target_ci_width=0.05)
    tight = [100, 101, 99, 100, 100, 100]
    wide = [100, 150, 70, 130, 90, 160]
    done, decisions = stats.enough_for_all({"a": (tight, 6), "b": (wide, 6)}, policy)
    assert not done and decisions["a"].done and not decisions["b"].done
    done, _ = stats.enough_for_all({"a": (tight, 6), "b": (wide * 2, 12)}, policy)
    assert done


@pytest.mark.parametrize("kwargs, message", [
    ({"minimum": 0, "maximum": 5, "target_ci_width": 0.05}, "need 1 <= minimum <= maximum"),
    ({"minimum": 6, "maximum": 5, "target_ci_width": 0.05}, "need 1 <= minimum <= maximum"),
    ({"minimum": 6, "maximum": 9, "target_ci_width": 0}, "target_ci_width must be positive"),
])
def test_repetition_policy_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        stats.RepetitionPolicy(**kwargs)


# ---------------------------------------------------------------------------------------------
# two samples


def test_mann_whitney_hand_checked():
    # Complete separation of 5 vs 5: exact two-sided p = 2 / C(10, 5) = 2/252.
    t = stats.compare_samples([1, 2, 3, 4, 5], [6, 7, 8, 9, 10])
    assert t.u == 25.0 and t.p_value == pytest.approx(2 / 252)
    assert t.delta == 1.0 and t.magnitude == "large" and t.prob_b_greater == 1.0
    assert t.significant and t.verdict == stats.BETTER
    assert t.min_p == pytest.approx(2 / 252)
    # The same numbers where lower is better (latency): B is worse.
    assert stats.compare_samples([1, 2, 3, 4, 5], [6, 7, 8, 9, 10], higher_is_better=False).verdict == stats.WORSE
    # U counted by hand: B=[2,4,6] vs A=[1,3,5]: pairs b>a: 2>1; 4>1,3; 6>1,3,5 -> U=6 of 9, delta=1/3.
    t = stats.compare_samples([1, 3, 5], [2, 4, 6])
    assert t.u == 6.0 and t.delta == pytest.approx(1 / 3) and t.magnitude == "medium"


def test_identical_samples_are_not_a_difference():
    x = [101.0, 99.0, 100.0, 102.0, 98.0, 100.5, 99.5]
    t = stats.compare_samples(x, list(x))
    assert t.p_value == pytest.approx(1.0) and t.delta == 0.0
    assert not t.significant and t.verdict == stats.NOT_SIGNIFICANT and t.magnitude == "negligible"


def test_too_few_samples_can_never_be_significant():
    # 3 vs 3: the smallest reachable p is 2/20 = 0.1 > 0.05, whatever the values.
    t = stats.compare_samples([1, 2, 3], [100, 200, 300])
    assert t.min_p == pytest.approx(0.1)
    assert not t.significant and t.verdict == stats.TOO_FEW
    assert stats.compare_samples([], [1, 2]).verdict == stats.NO_DATA


def test_shifted_normal_sample_is_detected():
    rng = np.random.default_rng(7)
    a = rng.normal(1000, 20, 30)
    b = rng.normal(1060, 20, 30)  # shifted by 3 standard deviations
    t = stats.compare_samples(a, b)
    assert t.p_value < 1e-6 and t.verdict == stats.BETTER and t.magnitude == "large"
    assert stats.compare_samples(b, a).verdict == stats.WORSE


def test_power_and_false_positive_rate_on_known_distributions():
    # 400 pairs drawn from one distribution: about 5 % false positives at alpha 0.05.
    # 200 pairs with a one-sd shift and n=20: power about 87 % for the Mann-Whitney test.
    rng = np.random.default_rng(20261125)
    false_pos = sum(stats.compare_samples(rng.lognormal(0, 0.2, 12), rng.lognormal(0, 0.2, 12)).significant
                    for _ in range(400))
    assert 4 <= false_pos <= 40
    detected = sum(stats.compare_samples(rng.normal(0, 1, 20), rng.normal(1, 1, 20)).verdict == stats.BETTER
                   for _ in range(200))
    assert detected >= 150


def test_adjusted_p_values_hand_checked():
    # Benjamini-Hochberg: p*m/rank = 0.04, 0.04, 0.04, 0.5 (then cumulative minimum from the top).
    assert stats.adjust_p_values([0.01, 0.02, 0.03, 0.5]) == pytest.approx([0.04, 0.04, 0.04, 0.5])
    out = stats.adjust_p_values([0.5, float("nan"), 0.01])
    assert out[0] == pytest.approx(0.5) and math.isnan(out[1]) and out[2] == pytest.approx(0.02)
    # The adjusted p-value drives the verdict when given.
    t = stats.compare_samples([1, 2, 3, 4, 5], [6, 7, 8, 9, 10], p_value=0.2)
    assert t.p_value == 0.2 and t.verdict == stats.NOT_SIGNIFICANT


def test_ratio_ci_contains_the_true_ratio_and_is_deterministic():
    rng = np.random.default_rng(3)
    a = rng.normal(100, 3, 12)
    b = 2 * a[::-1]
    r = stats.ratio_ci(a, b)
    assert r.value == pytest.approx(2.0)
    assert r.lo < 2.0 < r.hi and r.hi - r.lo < 0.3
    assert stats.ratio_ci(a, b) == r
    one = stats.ratio_ci([5.0], [10.0])
    assert one.value == 2.0 and math.isnan(one.lo)


# ---------------------------------------------------------------------------------------------
# histograms


def _bucket_of(v: int) -> tuple[int, int]:
    """The client's bucket of a value (docs/programs.md), written independently for the test."""
    if v < 128:
        return v, v + 1
    w = 2 ** (v.bit_length() - 1 - 6)
    lo = v // w * w
    return lo, lo + w


def _hist(values) -> list[list[int]]:
    acc: dict[tuple[int, int], int] = {}
    for v in values:
        b = _bucket_of(int(v))
        acc[b] = acc.get(b, 0) + 1
    return [[lo, hi, n] for (lo, hi), n in sorted(acc.items())]


def _nearest_rank(values, q):
    s = sorted(values)
    return s[max(1, math.ceil(q * len(s) - 1e-9)) - 1]


def test_hist_quantile_hand_computed():
    h = [[10, 11, 2], [11, 12, 1], [128, 130, 1]]  # values 10, 10, 11 and one in [128, 130)
    assert stats.hist_quantile(h, 0.25) == 10.0  # rank 1
    assert stats.hist_quantile(h, 0.50) == 10.0  # rank 2
    assert stats.hist_quantile(h, 0.75) == 11.0  # rank 3
    assert stats.hist_quantile(h, 0.90) == 129.0  # rank 4: the largest value of [128, 130)
    assert stats.hist_quantile(h, 1.0) == 129.0
    assert math.isnan(stats.hist_quantile([], 0.5))
    assert stats.hist_count(h) == 4


def test_merge_sums_equal_buckets_not_percentiles():
    a = [[100, 101, 3], [5000, 5056, 1]]  # 3 fast samples, 1 slow
    b = [[100, 101, 1], [5000, 5056, 3]]  # 1 fast, 3 slow
    merged = stats.merge_histograms([a, {"scheme": "log2-64", "buckets": b}])
    assert merged == [(100, 101, 4), (5000, 5056, 4)]
    # p50 of the merged 8 samples is rank 4: the fast bucket. Averaging the two p50s would say 2550.
    assert stats.hist_quantile(merged, 0.5) == 100.0
    assert (stats.hist_quantile(a, 0.5) + stats.hist_quantile(b, 0.5)) / 2 == 2577.5
    assert stats.hist_quantile(merged, 0.51) == 5055.0


def test_hist_percentiles_bound_the_exact_ones_from_raw_samples():
    rng = np.random.default_rng(11)
    reps = [rng.lognormal(np.log(40_000), 0.6, 500).astype(int) for _ in range(5)]
    merged = stats.merge_histograms(_hist(r) for r in reps)
    everything = np.concatenate(reps)
    assert stats.hist_count(merged) == len(everything)
    for name, q in stats.PERCENTILES:
        exact = _nearest_rank(everything, q)
        est = stats.hist_percentiles(merged)[name]
        assert exact <= est <= exact * (1 + 1 / 64), (name, exact, est)


def test_hist_percentiles_on_real_client_output():
    # Each recorded client reports exact nearest-rank percentiles and its histogram: the value
    # from the histogram is at most 1/64 above the exact one, never below.
    files = sorted(RUNS.glob("*/raw/*.client.json"))
    assert len(files) >= 20
    for f in files:
        obj = json.loads(f.read_text())
        got = stats.hist_percentiles(obj["hist"])
        assert stats.hist_count(obj["hist"]) == obj["latency_ns"]["count"]
        for name, _ in stats.PERCENTILES:
            exact = obj["latency_ns"][name]
            assert exact <= got[name] <= exact * (1 + 1 / 64), (f.name, name, exact, got[name])


@pytest.mark.parametrize("hists, message", [
    ([[[5, 5, 1]]], "need 0 <= lo < hi"),
    ([[[7, 3, 1]]], "need 0 <= lo < hi"),
    ([[[-1, 3, 1]]], "need 0 <= lo < hi"),
    ([[[1, 2, -1]]], "negative count"),
    ([[[1, 2]]], r"not \[lo, hi, count\]"),
    ([[[1.5, 2, 1]]], "must be integers"),
    ([[["1", 2, 1]]], "must be integers"),
    ([[[0, 10, 1]], [[5, 15, 1]]], "overlap: histograms of different schemes"),
])
def test_merge_rejects_bad_histograms(hists, message):
    with pytest.raises(ValueError, match=message):
        stats.merge_histograms(hists)


def test_hist_quantile_rejects_bad_q():
    with pytest.raises(ValueError, match=r"quantile must be in \(0, 1\]"):
        stats.hist_quantile([[1, 2, 1]], 0)
