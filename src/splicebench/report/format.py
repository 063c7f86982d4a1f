"""One formatter per quantity: every table, chart caption and terminal line of the reports prints
its numbers through these functions, so a quantity reads the same everywhere (pure).

Every formatter prints MISSING ("n/a") for a value that is absent, None, not a number, NaN or
infinite; nothing prints "nan", "None" or an empty cell for a missing number.

- throughput(gib_s): GiB/s in; binary units, three significant digits: "1.52 GiB/s", "830 MiB/s"
  (units.format_rate on bytes/s).
- latency(ns), latency_us(us): the same spelling from nanoseconds or microseconds, three
  significant digits: "850 ns", "54.2 us", "12.0 ms", "1.20 s" (units.format_ns).
- cpu_per_gib(s): CPU seconds per GiB, three decimals below 10 and one from 10 up, with its unit:
  "0.300 s", "57.4 s".
- cpu_figure(s, unc): a CPU figure with its uncertainty, to the digits the uncertainty allows:
  "0.64 s", "< 0.02 s" (within its uncertainty of zero), "~0.2 s" (uncertainty above 5 %: greyed,
  +- in its title). Every CPU figure of a report or terminal table goes through it.
- per_second(rate): round trips or bursts per second, three significant digits with k, M or G:
  "850 /s", "55.2 k/s", "1.20 M/s".
- ratio(x): a ratio of medians, three significant digits and "x": "2.00x", "0.291x", "12.3x".
- ci(lo, hi, fmt): a 95 % CI as "[lo, hi]", both bounds through the quantity's own formatter;
  ratio_ci(lo, hi) prints a ratio's CI with three significant digits and no "x": "[0.950, 2.37]".
  MISSING when either bound is missing.
- p_value(p): "< 0.001", else three decimals: "0.016".
- percent(fraction): one decimal and a spaced sign: 0.123 -> "12.3 %".
- cliffs_delta(delta, magnitude): signed, two decimals, with its magnitude: "+0.52 (large)".
- metric(column, v): the formatter of a metric column of analysis.summary (throughput_gib_s,
  *_per_s, lat_*_us, *_cpu_s_per_gib).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

from splicebench.units import format_ns, format_rate

MISSING = "n/a"
GIB = 1 << 30


def number(x: Any) -> float | None:
    """x as a finite float, or None when it is missing (None, not a number, NaN, infinite)."""
    if isinstance(x, bool):
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def is_number(x: Any) -> bool:
    return number(x) is not None


def sig3(v: float) -> str:
    """Three significant digits without exponent (at least three digits from 100 up)."""
    if v == 0:
        return "0.00"
    decimals = max(0, 2 - math.floor(math.log10(abs(v))))
    text = f"{v:.{decimals}f}"
    if decimals and abs(float(text)) >= 10 ** (3 - decimals):  # 9.996 rounds to 10.00: one digit less
        text = f"{v:.{decimals - 1}f}"
    return text


def throughput(gib_s: Any) -> str:
    v = number(gib_s)
    return MISSING if v is None else format_rate(v * GIB)


def latency(ns: Any) -> str:
    v = number(ns)
    return MISSING if v is None else format_ns(v)


def latency_us(us: Any) -> str:
    v = number(us)
    return MISSING if v is None else format_ns(v * 1e3)


def cpu_per_gib(seconds: Any) -> str:
    v = number(seconds)
    if v is None:
        return MISSING
    return f"{v:.3f} s" if v < 10 else f"{v:.1f} s"


def per_second(rate: Any) -> str:
    """Events per second (round trips, bursts), three significant digits with a decimal prefix:
    "850 /s", "55.2 k/s", "1.20 M/s"."""
    v = number(rate)
    if v is None:
        return MISSING
    for scale, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= scale * 0.9995:  # 999.6 prints as "1.00 k/s", not "1000 /s"
            return f"{sig3(v / scale)} {prefix}/s"
    return f"{sig3(v)} /s"


def ratio(x: Any) -> str:
    v = number(x)
    return MISSING if v is None else f"{sig3(v)}x"


def ci(lo: Any, hi: Any, fmt: Callable[[Any], str]) -> str:
    a, b = number(lo), number(hi)
    if a is None or b is None:
        return MISSING
    return f"[{fmt(a)}, {fmt(b)}]"


def ratio_ci(lo: Any, hi: Any) -> str:
    return ci(lo, hi, sig3)


def resolved_digits(rel_unc: Any) -> int:
    """Significant digits a figure with this relative uncertainty supports (3 when unknown)."""
    r = number(rel_unc)
    if r is None:
        return 3
    return 3 if r <= 0.005 else (2 if r <= CPU_REL_LIMIT else 1)


def ratio_resolved(x: Any, rel_unc: Any) -> str:
    """A ratio of CPU figures: only the digits their relative uncertainty (summed) supports, "~" when
    it exceeds CPU_REL_LIMIT."""
    v, r = number(x), number(rel_unc)
    if v is None:
        return MISSING
    d = resolved_digits(r)
    return ("~" if r is not None and r > CPU_REL_LIMIT else "") + f"{float(f'{v:.{d}g}'):g}x"


def ratio_ci_resolved(lo: Any, hi: Any, rel_unc: Any) -> str:
    d = resolved_digits(rel_unc)
    return ci(lo, hi, lambda v: f"{float(f'{v:.{d}g}'):g}")


def count(v: Any) -> str:
    """A count or a count per unit, three significant digits with a decimal prefix: "850", "41.2 k"."""
    x = number(v)
    if x is None:
        return MISSING
    if x == 0:
        return "0"
    for scale, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= scale * 0.9995:
            return f"{sig3(x / scale)} {prefix}"
    return f"{x:.0f}" if abs(x) >= 100 else sig3(x)


def share(fraction: Any, n: int) -> str:
    """A share of n samples, to the resolution n allows (one decimal only from 1,000 samples)."""
    v = number(fraction)
    if v is None or n <= 0:
        return MISSING
    return f"{100 * v:.1f} %" if n >= 1000 else f"{100 * v:.0f} %"


def p_value(p: Any) -> str:
    v = number(p)
    if v is None:
        return MISSING
    return "< 0.001" if v < 0.001 else f"{v:.3f}"


def percent(fraction: Any) -> str:
    v = number(fraction)
    return MISSING if v is None else f"{100 * v:.1f} %"


def cliffs_delta(delta: Any, magnitude: str) -> str:
    v = number(delta)
    return MISSING if v is None else f"{v:+.2f} ({magnitude})"


def metric(column: str, v: Any) -> str:
    """A value of a metric column of analysis.summary, through the formatter of its quantity."""
    if column == "throughput_gib_s":
        return throughput(v)
    if column.endswith("_per_s"):
        return per_second(v)
    if column.startswith("lat_") and column.endswith("_us"):
        return latency_us(v)
    if column.endswith("_s_per_gib"):
        return cpu_per_gib(v)
    raise ValueError(f"no formatter for metric column {column!r}")


def metric_formatter(column: str) -> Callable[[Any], str]:
    return lambda v: metric(column, v)


# A CPU figure whose uncertainty exceeds this fraction of it is marked (greyed, "~", fewer digits).
CPU_REL_LIMIT = 0.05


@dataclass(frozen=True)
class CpuFigure:
    """A CPU figure as printed: text (the same in HTML and terminal), the tooltip giving its
    uncertainty, and whether it is marked as uncertain (greyed in HTML)."""

    text: str
    title: str = ""
    uncertain: bool = False

    def __str__(self) -> str:
        return self.text


def cpu_figure(seconds: Any, unc: Any = None, unit: str = "s") -> CpuFigure:
    """CPU seconds (per GiB) with its uncertainty (half-width of the range the true value lies in).

    Printed to the digits the uncertainty allows (the last digit no finer than the uncertainty's
    leading digit, at most the digits of cpu_per_gib); a value within its uncertainty of zero as
    "< upper bound" ("< 0.02 s"); above CPU_REL_LIMIT relative uncertainty marked "~" and greyed
    with "+- u" in its title. Without an uncertainty (results format 1): cpu_per_gib, title saying
    the resolution was not recorded."""
    v, u = number(seconds), number(unc)
    if v is None:
        return CpuFigure(MISSING)
    if u is None:
        return CpuFigure(cpu_per_gib(v), "resolution not recorded (results format 1)")
    full = 3 if abs(v) < 10 else 1
    decimals = full if u <= 0 else min(full, max(0, -math.floor(math.log10(u))))
    title = f"{v:.{max(decimals + 1, 1)}f} ± {u:.2g} {unit}"
    if v - u <= 0:
        step = 10.0 ** -decimals
        upper = math.ceil((v + u) / step - 1e-9) * step
        return CpuFigure(f"< {upper:.{decimals}f} {unit}", title + ": within its uncertainty of zero", True)
    rel = u / abs(v)
    if rel <= CPU_REL_LIMIT:
        return CpuFigure(f"{v:.{decimals}f} {unit}", title)
    return CpuFigure(f"~{v:.{decimals}f} {unit}", f"{title} ({100 * rel:.0f} %)", True)
