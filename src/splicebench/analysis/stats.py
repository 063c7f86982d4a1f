"""Statistics for publishable reports (pure: numbers in, numbers out; scipy does the maths).

- Median and its confidence interval: the exact distribution-free interval from order statistics
  (scipy.stats.quantile_test). It needs no assumption about the shape of the distribution, and it
  is honest about small samples: with fewer than 6 values no pair of order statistics covers the
  median with 95 % probability, so the interval is unknown (nan) rather than deceptively narrow.
- Adaptive repetitions: `enough_repetitions` answers "enough yet?" after each round: done when
  the CI of the median is at most `target_ci_width` (relative to the median) wide, or when the
  maximum count is reached (the bound was hit: the report says so).
- Two samples (server vs server, run vs run): Mann-Whitney U test (scipy.stats.mannwhitneyu) on
  the raw samples, with the rank-biserial correlation as effect size (Cliff's delta: the
  probability that a value of B exceeds one of A minus the reverse) and Romano et al.'s
  magnitude labels. A difference is a win or a loss only when p < alpha; below the smallest
  p-value the sample sizes can reach, the test cannot say anything and the result says so.
- Ratio of medians with a percentile-bootstrap CI (scipy.stats.bootstrap, both samples resampled
  independently, fixed seed: the same samples give the same numbers).
- Noise: coefficient of variation (sample standard deviation / mean, scipy.stats.variation).
- Latency histograms: merged by summing the counts of equal [lo, hi) buckets (never by averaging
  percentiles); a percentile is the nearest-rank value of the merged histogram, reported as the
  largest value its bucket can hold (hi - 1 ns). With the client's log-linear buckets (exact below
  128 ns, then 64 sub-buckets per power of two) that value is never below the exact nearest-rank
  percentile of the raw samples and at most 1/64 (1.6 %) above it.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from scipy import special
from scipy import stats as sst

LEVEL = 0.95
ALPHA = 0.05
NOISY_CV = 0.10
N_RESAMPLES = 9_999
SEED = 20261125
PERCENTILES: tuple[tuple[str, float], ...] = (("p50", 0.50), ("p90", 0.90), ("p99", 0.99), ("p999", 0.999))

# |Cliff's delta| thresholds (Romano et al. 2006): below 0.147 negligible, below 0.33 small,
# below 0.474 medium, else large.
EFFECT_LABELS: tuple[tuple[float, str], ...] = ((0.147, "negligible"), (0.33, "small"), (0.474, "medium"))


def clean(values: Iterable[Any]) -> np.ndarray:
    """Finite floats of `values` (None, nan, inf and non-numbers dropped), in the given order."""
    out = []
    for v in values if values is not None else ():
        try:
            f = float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(f):
            out.append(f)
    return np.asarray(out, dtype=float)


# ---------------------------------------------------------------------------------------------
# One sample


@dataclass(frozen=True)
class MedianCI:
    """Median of n values and its confidence interval at `level` (nan bounds: not enough values)."""

    n: int
    median: float
    lo: float
    hi: float
    level: float = LEVEL

    @property
    def width(self) -> float:
        return self.hi - self.lo

    @property
    def rel_width(self) -> float:
        """CI width relative to the median (0.05 = the interval spans 5 % of the median); nan if unknown."""
        if not (math.isfinite(self.lo) and math.isfinite(self.hi)) or self.median == 0 or math.isnan(self.median):
            return math.nan
        return (self.hi - self.lo) / abs(self.median)


def min_n_for_median_ci(level: float = LEVEL) -> int:
    """Smallest n for which [min, max] covers the median with probability >= level (6 for 95 %)."""
    n = 1
    while 1 - 2 * 0.5**n < level:
        n += 1
    return n


def median_ci(values: Iterable[Any], level: float = LEVEL) -> MedianCI:
    """Median and exact distribution-free CI of the median (order statistics, scipy.stats.quantile_test)."""
    x = clean(values)
    if len(x) == 0:
        return MedianCI(0, math.nan, math.nan, math.nan, level)
    med = float(np.median(x))
    if len(x) < min_n_for_median_ci(level):
        return MedianCI(len(x), med, math.nan, math.nan, level)
    ci = sst.quantile_test(x, q=med, p=0.5).confidence_interval(confidence_level=level)
    lo, hi = float(ci.low), float(ci.high)
    return MedianCI(len(x), med, lo, hi, level)


def cv(values: Iterable[Any]) -> float:
    """Coefficient of variation: sample standard deviation (ddof=1) / mean; nan with < 2 values or mean 0."""
    x = clean(values)
    if len(x) < 2 or np.mean(x) == 0:
        return math.nan
    return float(abs(sst.variation(x, ddof=1)))


def is_noisy(values: Iterable[Any], threshold: float = NOISY_CV) -> bool:
    c = cv(values)
    return bool(math.isfinite(c) and c > threshold)


# ---------------------------------------------------------------------------------------------
# Adaptive repetitions


@dataclass(frozen=True)
class RepetitionPolicy:
    """Measured repetitions: at least `minimum`, at most `maximum`; stop early once the CI of the
    median is at most `target_ci_width` (relative to the median) wide."""

    minimum: int
    maximum: int
    target_ci_width: float
    level: float = LEVEL

    def __post_init__(self) -> None:
        if not 1 <= self.minimum <= self.maximum:
            raise ValueError(f"need 1 <= minimum <= maximum; got minimum={self.minimum}, maximum={self.maximum}")
        if not self.target_ci_width > 0:
            raise ValueError(f"target_ci_width must be positive; got {self.target_ci_width}")


CONTINUE, TARGET_MET, MAX_REACHED = "continue", "target", "max"


@dataclass(frozen=True)
class Decision:
    """The answer to "enough yet?" for one group of samples."""

    done: bool
    reason: str  # CONTINUE, TARGET_MET or MAX_REACHED
    n: int
    rel_width: float

    @property
    def bound_hit(self) -> bool:
        """Stopped by the maximum count with the target not met."""
        return self.reason == MAX_REACHED


def enough_repetitions(values: Iterable[Any], policy: RepetitionPolicy, attempts: int | None = None) -> Decision:
    """Whether a group has enough measured samples.

    `values` are the group's usable measurements (failed samples left out); `attempts` is how many
    measured repetitions ran, failed ones included (default: len(values)); the maximum bounds
    attempts, so a group whose samples keep failing still stops."""
    x = clean(values)
    n = len(x)
    tried = n if attempts is None else max(int(attempts), n)
    w = median_ci(x, policy.level).rel_width
    if n >= policy.minimum and math.isfinite(w) and w <= policy.target_ci_width:
        return Decision(True, TARGET_MET, n, w)
    if tried >= policy.maximum:
        return Decision(True, MAX_REACHED, n, w)
    return Decision(False, CONTINUE, n, w)


def enough_for_all(groups: Mapping[Any, tuple[Iterable[Any], int]], policy: RepetitionPolicy
                   ) -> tuple[bool, dict[Any, Decision]]:
    """Decisions for several groups ({key: (values, attempts)}); done when every group is done."""
    decisions = {k: enough_repetitions(v, policy, a) for k, (v, a) in groups.items()}
    return all(d.done for d in decisions.values()), decisions


# ---------------------------------------------------------------------------------------------
# Two samples


def effect_label(delta: float) -> str:
    if math.isnan(delta):
        return "n/a"
    a = abs(delta)
    for limit, name in EFFECT_LABELS:
        if a < limit:
            return name
    return "large"


def min_p_value(n_a: int, n_b: int) -> float:
    """Smallest two-sided p-value the exact Mann-Whitney test can give for these sample sizes."""
    if n_a < 1 or n_b < 1:
        return math.nan
    return float(min(1.0, 2.0 / special.comb(n_a + n_b, n_a, exact=True)))


BETTER, WORSE, NOT_SIGNIFICANT, TOO_FEW, NO_DATA = "better", "worse", "not significant", "too few samples", "no data"


@dataclass(frozen=True)
class TwoSampleTest:
    """B compared with A (A is the reference: baseline server or earlier run)."""

    n_a: int
    n_b: int
    u: float  # Mann-Whitney U of B: pairs with b > a, ties counted one half
    p_value: float
    delta: float  # Cliff's delta = rank-biserial correlation, in [-1, 1]; > 0: B tends to be larger
    magnitude: str  # negligible, small, medium, large
    min_p: float  # smallest p-value these sample sizes can reach
    alpha: float
    significant: bool
    verdict: str  # better, worse, not significant, too few samples, no data (B relative to A)

    @property
    def prob_b_greater(self) -> float:
        return (self.delta + 1) / 2


def compare_samples(a: Iterable[Any], b: Iterable[Any], *, higher_is_better: bool = True,
                    alpha: float = ALPHA, p_value: float | None = None) -> TwoSampleTest:
    """Mann-Whitney U test (two-sided) of B against A and the verdict for B.

    `p_value`, when given, replaces the test's own p-value for the verdict (e.g. one adjusted for
    multiple comparisons by `adjust_p_values`)."""
    xa, xb = clean(a), clean(b)
    na, nb = len(xa), len(xb)
    if na == 0 or nb == 0:
        return TwoSampleTest(na, nb, math.nan, math.nan, math.nan, "n/a", math.nan, alpha, False, NO_DATA)
    res = sst.mannwhitneyu(xb, xa, alternative="two-sided", method="auto")
    u = float(res.statistic)
    p = float(res.pvalue) if p_value is None else float(p_value)
    delta = 2.0 * u / (na * nb) - 1.0
    floor = min_p_value(na, nb)
    significant = bool(math.isfinite(p) and p < alpha)
    if significant and delta != 0:
        verdict = BETTER if (delta > 0) == higher_is_better else WORSE
    elif floor >= alpha:
        verdict = TOO_FEW
    else:
        verdict, significant = NOT_SIGNIFICANT, False
    return TwoSampleTest(na, nb, u, p, delta, effect_label(delta), floor, alpha, significant, verdict)


def adjust_p_values(p_values: Sequence[float]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values (scipy.stats.false_discovery_control); nan stays nan."""
    ps = np.asarray([float(p) for p in p_values], dtype=float)
    out = np.full(len(ps), np.nan)
    ok = np.isfinite(ps)
    if ok.any():
        out[ok] = sst.false_discovery_control(ps[ok], method="bh")
    return [float(v) for v in out]


@dataclass(frozen=True)
class Ratio:
    """median(B) / median(A) and its bootstrap CI (nan bounds: fewer than 2 values on a side)."""

    value: float
    lo: float
    hi: float
    level: float = LEVEL


def _median_ratio(b, a, axis=-1):
    return np.median(b, axis=axis) / np.median(a, axis=axis)


def ratio_ci(a: Iterable[Any], b: Iterable[Any], *, level: float = LEVEL, n_resamples: int = N_RESAMPLES,
             seed: int = SEED) -> Ratio:
    """median(b) / median(a) with a percentile-bootstrap CI, both samples resampled independently."""
    xa, xb = clean(a), clean(b)
    if len(xa) == 0 or len(xb) == 0 or np.median(xa) == 0:
        return Ratio(math.nan, math.nan, math.nan, level)
    value = float(np.median(xb) / np.median(xa))
    if len(xa) < 2 or len(xb) < 2:
        return Ratio(value, math.nan, math.nan, level)
    # Identical values (e.g. CPU times at clock-tick resolution) make scipy warn that the
    # distribution is degenerate; the percentile interval is then simply [value, value].
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", sst.DegenerateDataWarning)
        res = sst.bootstrap((xb, xa), _median_ratio, paired=False, vectorized=True, n_resamples=n_resamples,
                            confidence_level=level, method="percentile", random_state=np.random.default_rng(seed))
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return Ratio(value, math.nan, math.nan, level)
    return Ratio(value, lo, hi, level)


# ---------------------------------------------------------------------------------------------
# Latency histograms


Bucket = tuple[int, int, int]  # [lo, hi) in ns and the count of samples in it


def _buckets(hist: Any) -> list[Bucket]:
    """Buckets of one histogram: a client's "hist" object or a list of [lo, hi, count]."""
    if isinstance(hist, Mapping):
        hist = hist.get("buckets") or []
    out = []
    for i, b in enumerate(hist):
        try:
            lo, hi, n = b
        except (TypeError, ValueError):
            raise ValueError(f"bucket {i}: not [lo, hi, count]: {b!r}") from None
        if any(isinstance(v, bool) or not isinstance(v, (int, float)) or v != int(v) for v in (lo, hi, n)):
            raise ValueError(f"bucket {i}: lo, hi and count must be integers: {b!r}")
        lo, hi, n = int(lo), int(hi), int(n)
        if lo < 0 or hi <= lo:
            raise ValueError(f"bucket {i}: need 0 <= lo < hi: {b!r}")
        if n < 0:
            raise ValueError(f"bucket {i}: negative count: {b!r}")
        out.append((lo, hi, n))
    return out


def merge_histograms(hists: Iterable[Any]) -> list[Bucket]:
    """One histogram from several: counts of equal [lo, hi) buckets summed, sorted by lo.

    Raises ValueError when buckets overlap without being equal (histograms of different schemes)."""
    acc: dict[tuple[int, int], int] = {}
    for h in hists:
        for lo, hi, n in _buckets(h):
            acc[(lo, hi)] = acc.get((lo, hi), 0) + n
    merged = [(lo, hi, n) for (lo, hi), n in sorted(acc.items()) if n > 0]
    for (lo1, hi1, _), (lo2, hi2, _) in zip(merged, merged[1:]):
        if lo2 < hi1:
            raise ValueError(f"buckets [{lo1}, {hi1}) and [{lo2}, {hi2}) overlap: histograms of different schemes")
    return merged


def hist_count(buckets: Iterable[Any]) -> int:
    return sum(n for _, _, n in _buckets(buckets))


def hist_quantile(buckets: Iterable[Any], q: float) -> float:
    """Nearest-rank q-quantile (0 < q <= 1) of a histogram: the largest value (hi - 1) of the bucket
    holding the ceil(q * N)-th smallest sample; nan for an empty histogram."""
    if not 0 < q <= 1:
        raise ValueError(f"quantile must be in (0, 1]; got {q}")
    rows = sorted(b for b in _buckets(buckets) if b[2] > 0)
    total = sum(n for _, _, n in rows)
    if total == 0:
        return math.nan
    # The same rank as the client's exact percentiles (servers/client.c), robust to q * N rounding.
    rank = min(total, max(1, math.ceil(q * total - 1e-9)))
    seen = 0
    for _lo, hi, n in rows:
        seen += n
        if seen >= rank:
            return float(hi - 1)
    return float(rows[-1][1] - 1)


def hist_percentiles(buckets: Iterable[Any], percentiles: Sequence[tuple[str, float]] = PERCENTILES
                     ) -> dict[str, float]:
    """{name: value} for each (name, q) in `percentiles`, from one histogram."""
    rows = _buckets(buckets)
    return {name: hist_quantile(rows, q) for name, q in percentiles}
