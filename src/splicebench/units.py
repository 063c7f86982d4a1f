"""Sizes, durations and rates: parse_* / format_* pairs (pure).

parse_size(format_size(n)) == n for every n >= 0, and format_size(parse_size(s)) is the canonical
spelling of s. Binary units (KiB = 1024) and decimal units (KB = 1000) are both accepted; a bare
K/M/G is refused because it is ambiguous.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

SIZE_UNITS: dict[str, int] = {
    "": 1,
    "B": 1,
    "KiB": 1 << 10,
    "MiB": 1 << 20,
    "GiB": 1 << 30,
    "TiB": 1 << 40,
    "KB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
    "TB": 1000**4,
}

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")
_DUR_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|)\s*$")
_DUR_UNITS = {"ms": Fraction(1, 1000), "s": Fraction(1), "": Fraction(1), "m": Fraction(60), "h": Fraction(3600)}
DURATION_HELP = "seconds as a number, or a string like '500ms', '90s', '2m', '1h'"


def parse_size(value: object) -> int:
    """Return the byte count of an int or a size string; ValueError if it is not one."""
    if isinstance(value, bool):
        raise ValueError("a boolean is not a size")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a size cannot be negative")
        return value
    if not isinstance(value, str):
        raise ValueError(f"a {type(value).__name__} is not a size")
    m = _SIZE_RE.match(value)
    if not m:
        raise ValueError(f"{value!r} is not a size")
    number, unit = m.group(1), m.group(2)
    if unit not in SIZE_UNITS:
        raise ValueError(f"unknown unit {unit!r}")
    exact = Fraction(number) * SIZE_UNITS[unit]
    if exact.denominator != 1:
        raise ValueError(f"{value!r} is not a whole number of bytes")
    return int(exact)


def format_size(n: int) -> str:
    """Canonical exact spelling of a byte count: the largest binary unit that divides it."""
    if n < 0:
        raise ValueError("a size cannot be negative")
    for unit in ("TiB", "GiB", "MiB", "KiB"):
        mult = SIZE_UNITS[unit]
        if n and n % mult == 0:
            return f"{n // mult}{unit}"
    return f"{n}B"


def parse_duration(value: object) -> float:
    """Return seconds from a number or a duration string; ValueError if it is not one."""
    if isinstance(value, bool):
        raise ValueError("a boolean is not a duration")
    if isinstance(value, (int, float)):
        if not math.isfinite(value) or value < 0:
            raise ValueError("a duration must be a finite number >= 0")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"a {type(value).__name__} is not a duration")
    m = _DUR_RE.match(value)
    if not m:
        raise ValueError(f"{value!r} is not a duration")
    return float(Fraction(m.group(1)) * _DUR_UNITS[m.group(2)])


def format_duration(seconds: float) -> str:
    """Short human spelling: '250ms', '42s', '3m05s', '1h02m'."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.0f}s" if seconds >= 10 else f"{seconds:.1f}s"
    s = int(round(seconds))
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def format_rate(bytes_per_s: float) -> str:
    """Throughput for humans in binary units: '1.52 GiB/s', '830 MiB/s'."""
    if bytes_per_s is None or not math.isfinite(bytes_per_s):
        return "n/a"
    for unit, mult in (("GiB/s", 1 << 30), ("MiB/s", 1 << 20), ("KiB/s", 1 << 10)):
        if bytes_per_s >= mult:
            return f"{_sig(bytes_per_s / mult)} {unit}"
    return f"{_sig(bytes_per_s)} B/s"


def format_ns(ns: float) -> str:
    """Latency for humans: '850 ns', '54.2 us', '12.0 ms', '1.20 s'."""
    if ns is None or not math.isfinite(ns):
        return "n/a"
    for unit, mult in (("s", 1e9), ("ms", 1e6), ("us", 1e3)):
        if ns >= mult:
            return f"{_sig(ns / mult)} {unit}"
    return f"{ns:.0f} ns"


def _sig(x: float) -> str:
    """Three significant digits without exponent."""
    if x >= 100:
        return f"{x:.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"
