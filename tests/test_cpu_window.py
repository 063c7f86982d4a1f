"""CPU over a transfer window (results/cpu.py, analysis/cpu.py, report/format.cpu_figure) on
hand-made readings: marks between readings, marks outside the kept readings, tick counters."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from splicebench.analysis import cpu as cpu_analysis
from splicebench.report import format as fmt
from splicebench.results import cpu

pytestmark = pytest.mark.unit
MS = 1_000_000


def test_marks_between_readings_bound_the_value():
    # A counter rising 1 unit per ms, read every 2 ms; window [3 ms, 9 ms]: true value 6.
    t = [0, 2 * MS, 4 * MS, 6 * MS, 8 * MS, 10 * MS]
    c = [0, 2, 4, 6, 8, 10]
    f = cpu.window(t, c, 3 * MS, 9 * MS, rate=1 / MS)
    # lowest: C(8) - C(4) = 4, highest: C(10) - C(2) = 8
    assert (f.value, f.unc, f.note) == (6.0, 2.0, "")


def test_marks_on_readings_are_exact():
    t, c = [0, 2 * MS, 4 * MS], [0, 5, 9]
    assert cpu.window(t, c, 0, 4 * MS, rate=10 / MS) == cpu.Figure(9.0, 0.0, "")


def test_tick_quantum_widens_the_range_by_one_tick_per_cpu_and_reading():
    t, c = [0, 10 * MS, 20 * MS], [0, 1, 2]
    f = cpu.window(t, c, 0, 20 * MS, rate=2 / (10 * MS), quantum=2)
    # [2 - 2, 2 + 2]
    assert (f.value, f.unc) == (2.0, 2.0)


def test_lower_bound_never_below_zero():
    t, c = [0, 10 * MS], [0, 0]
    f = cpu.window(t, c, 2 * MS, 8 * MS, rate=1 / (10 * MS), quantum=1)
    assert f.value - f.unc == 0.0 and f.value + f.unc == 1.0


def test_mark_before_first_reading_widens_by_the_fastest_rate_and_says_so():
    t, c = [10 * MS, 20 * MS], [100, 110]
    f = cpu.window(t, c, 5 * MS, 20 * MS, rate=1 / MS)
    # C(s) in [100 - 5, 100]: value in [10, 15]
    assert (f.value, f.unc) == (12.5, 2.5)
    assert "before the first kept reading" in f.note


def test_mark_after_last_reading_widens_and_says_so():
    t, c = [0, 10 * MS], [0, 10]
    f = cpu.window(t, c, 0, 13 * MS, rate=2 / MS)
    assert (f.value, f.unc) == (13.0, 3.0) and "after the last kept reading" in f.note


def test_mark_in_the_gap_between_head_and_ring_uses_the_readings_around_it():
    t, c = [0, 2 * MS, 100 * MS, 102 * MS], [0, 2, 100, 102]  # readings 4..98 ms were not kept
    f = cpu.window(t, c, 1 * MS, 50 * MS, rate=1 / MS)
    # C(s) in [0, 2], C(e) in [2, 100]: the value lies in [2 - 2, 100 - 0]
    assert (f.value - f.unc, f.value + f.unc) == (0.0, 100.0)


def test_window_refuses_an_end_before_the_start():
    with pytest.raises(ValueError, match="ends before it starts"):
        cpu.window([0, 1], [0, 1], 5, 4, rate=1.0)


def summary_line(rows, ncpu=1, groups=((123,),)) -> str:
    return json.dumps({"event": "summary", "tool": "sb-cpustat", "format": 1, "interval_ns": 2 * MS,
                       "keep_s": 5, "clk_tck": 100, "ncpu": ncpu, "cpu_fields": list(cpu.FIELDS),
                       "groups": [list(g) for g in groups], "group_fields": ["cpu_ns", "utime", "stime"],
                       "taken": len(rows), "kept": len(rows), "dropped": 0, "self_cpu_s": 0.001,
                       "wall_s": 0.1, "readings": rows})


def reading(t_ms, self_ns, ticks, cpu_ns, ut, st):
    return [t_ms * MS, self_ns, *ticks, cpu_ns, ut, st]


def test_sample_cpu_from_readings_host_process_and_per_cpu():
    # One CPU; user 0 -> 10 ticks, softirq 0 -> 2 ticks over 0..100 ms; process 0 -> 60 ms.
    rows = [reading(0, 0, [0, 0, 0, 0, 0, 0, 0, 0], 0, 0, 0),
            reading(50, 500_000, [5, 0, 0, 0, 0, 0, 1, 0], 30 * MS, 3, 0),
            reading(100, 1_000_000, [10, 0, 0, 0, 0, 0, 2, 0], 60 * MS, 6, 0)]
    r = cpu.parse_cpustat('{"event":"ready"}\n' + summary_line(rows) + "\n")
    s = cpu.sample_cpu(r, 0, 100 * MS)
    assert s.groups[0]["cpu"].value == pytest.approx(0.06) and s.groups[0]["cpu"].unc == 0.0
    assert s.host["softirq"].value == pytest.approx(0.02) and s.host["softirq"].unc == pytest.approx(0.01)
    # busy = 12 ticks +- 1 tick, minus the sampler's own 1 ms
    assert s.host["busy"].value == pytest.approx(0.119) and s.host["busy"].unc == pytest.approx(0.01)
    assert s.per_cpu[0]["user"].value == pytest.approx(0.1)
    cols = cpu.row_columns(s, 0, 100 * MS)
    assert cols["server_cpu_s"] == pytest.approx(0.06) and cols["host_interval_s"] == pytest.approx(0.1)
    assert cols["cpu_note"] == ""


def test_parse_cpustat_refuses_output_without_summary_or_with_short_readings():
    with pytest.raises(ValueError, match="no summary line"):
        cpu.parse_cpustat('{"event":"ready"}\n')
    with pytest.raises(ValueError, match="numbers each"):
        cpu.parse_cpustat(summary_line([[1, 2, 3]]))


def test_marks_from_clients():
    assert cpu.marks([{"start_realtime_ns": 5, "end_realtime_ns": 9},
                      {"start_realtime_ns": 4, "end_realtime_ns": 8}]) == (4, 9)
    assert cpu.marks([{"wall_s": 1.0}]) is None


def test_pooled_cpu_per_gib_sums_cpu_and_bytes_and_adds_bounds():
    gib = 1 << 30
    g = pd.DataFrame({"bytes_verified": [gib, 3 * gib], "server_cpu_s": [1.0, 1.0], "server_cpu_unc_s": [0.1, 0.3],
                      "host_cpu_busy_s": [2.0, 2.0], "host_cpu_busy_unc_s": [0.5, 0.5],
                      "host_cpu_softirq_s": [0.0, 0.0], "host_cpu_softirq_unc_s": [0.01, 0.01]})
    assert cpu_analysis.pooled(g, "proc_cpu_s_per_gib") == pytest.approx((0.5, 0.1))
    assert cpu_analysis.pooled(g, "host_cpu_s_per_gib") == pytest.approx((1.0, 0.25))
    # the median of per-sample ratios would be 0.667 s/GiB; the pooled figure is 0.5


@pytest.mark.parametrize("value, unc, text, uncertain", [
    (0.637, 0.0002, "0.637 s", False),
    (0.637, 0.03, "0.64 s", False),      # within 5 %: not marked, but no digit finer than 0.03
    (0.637, 0.2, "~0.6 s", True),
    (0.01, 0.02, "< 0.03 s", True),      # within its uncertainty of zero
    (57.4, 0.2, "57.4 s", False),
    (None, 0.1, "n/a", False),
])
def test_cpu_figure_prints_the_digits_its_uncertainty_allows(value, unc, text, uncertain):
    f = fmt.cpu_figure(value, unc)
    assert (f.text, f.uncertain) == (text, uncertain)
    assert ("±" in f.title) == (value is not None)


def test_cpu_figure_without_uncertainty_says_it_was_not_recorded():
    f = fmt.cpu_figure(0.2, float("nan"))
    assert f.text == "0.200 s" and "not recorded" in f.title and not f.uncertain
