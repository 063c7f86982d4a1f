"""parse_* / format_* pairs, both ways."""

from __future__ import annotations

import pytest

from splicebench.units import (format_duration, format_ns, format_rate, format_size, parse_duration,
                               parse_size)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("text,n", [
    ("64B", 64), ("64", 64), (64, 64), ("128KiB", 131072), ("100MiB", 104857600), ("1GiB", 1 << 30),
    ("1.5KiB", 1536), ("2TiB", 2 << 40), ("10KB", 10_000), ("1MB", 1_000_000), (" 4 MiB ", 4 << 20), (0, 0),
])
def test_parse_size(text, n):
    assert parse_size(text) == n


@pytest.mark.parametrize("bad", ["100MB2", "10 MiBs", "1.5B", "-1", -1, "", "MiB", "1K", "1e6", True, None, 1.0])
def test_parse_size_refuses(bad):
    with pytest.raises(ValueError):
        parse_size(bad)


@pytest.mark.parametrize("n,text", [(0, "0B"), (64, "64B"), (1024, "1KiB"), (1536, "1536B"),
                                    (100 << 20, "100MiB"), (1 << 30, "1GiB"), (3 << 40, "3TiB")])
def test_format_size(n, text):
    assert format_size(n) == text


@pytest.mark.parametrize("n", [0, 1, 63, 64, 1000, 1023, 1024, 4097, 1 << 20, (1 << 20) + 1, 7 << 30, 5 << 40])
def test_size_round_trip(n):
    assert parse_size(format_size(n)) == n


@pytest.mark.parametrize("text,s", [(60, 60.0), (0.5, 0.5), ("90s", 90.0), ("2m", 120.0), ("500ms", 0.5),
                                    ("1h", 3600.0), ("1.5", 1.5)])
def test_parse_duration(text, s):
    assert parse_duration(text) == s


@pytest.mark.parametrize("bad", ["soon", "1d", "-1s", -1, True, float("nan"), [1]])
def test_parse_duration_refuses(bad):
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_human_formats():
    assert format_rate(1.5 * (1 << 30)) == "1.50 GiB/s"
    assert format_rate(830 * (1 << 20)) == "830 MiB/s"
    assert format_ns(54_200) == "54.2 us"
    assert format_ns(850) == "850 ns"
    assert format_ns(12_000_000) == "12.0 ms"
    assert format_duration(0.25) == "250ms"
    assert format_duration(185) == "3m05s"
    assert format_duration(3720) == "1h02m"
