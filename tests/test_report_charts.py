"""Charts and tables that stay readable: the headline figure of each workload, sweeps drawn as
lines, a panel per host when hosts are far apart, percentiles only from enough values, tick labels
that do not overlap (measured by matplotlib here; the browser test measures the page)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from splicebench.analysis import latency
from splicebench.analysis import summary as analysis
from splicebench.analysis.compare import load_run
from splicebench.report import charts
from splicebench.report import format as fmt
from splicebench.report import run_charts
from splicebench.report import run_report as report

sys.path.insert(0, str(Path(__file__).parent))
import recorded  # noqa: E402

pytestmark = pytest.mark.unit


def test_rates_come_from_the_clients_counts_and_wall_time():
    df = pd.DataFrame({"workload": ["pingpong", "burst", "stream"], "lat_count": [2000, 40, 1],
                       "wall_s": [0.5, 0.2, 0.1], "goodput_bytes_per_s": [1e6, 1e6, 1e9], "bytes_verified": [1, 1, 1]})
    d = analysis.add_derived(df)
    assert d["round_trips_per_s"].tolist()[0] == 4000.0 and math.isnan(d["round_trips_per_s"][1])
    assert d["bursts_per_s"].tolist()[1] == 200.0 and math.isnan(d["bursts_per_s"][0])
    assert d[["round_trips_per_s", "bursts_per_s"]].iloc[2].isna().all()
    assert [analysis.headline(w).column for w in ("stream", "pingpong", "burst")] == [
        "throughput_gib_s", "round_trips_per_s", "bursts_per_s"]


def test_per_second_formatter():
    assert [fmt.per_second(v) for v in (850, 999.6, 55194.3, 1.2e6, None, math.nan)] == [
        "850 /s", "1.00 k/s", "55.2 k/s", "1.20 M/s", "n/a", "n/a"]
    assert fmt.metric("bursts_per_s", 2186.1) == "2.19 k/s"


@pytest.mark.parametrize(("name", "n", "shown"), [
    ("p50", 1, True), ("p90", 9, False), ("p90", 10, True), ("p99", 99, False), ("p99", 100, True),
    ("p999", 999, False), ("p999", 1000, True), ("p99", math.nan, True)])
def test_percentile_thresholds(name, n, shown):
    assert latency.enough(name, n) is shown


def test_a_sweep_is_the_numeric_key_with_most_values_and_panels_per_other_key():
    run = load_run(recorded.RUN_SWEEP)
    keys = list(run.manifest["scenario"]["matrix"])
    sweep = run_charts.sweep_of(keys, analysis.matrix_values(run.samples, keys))
    assert sweep is not None and sweep.key == "msg_size"
    assert sorted(set(sweep.x.values())) == [64.0, 1024.0, 16384.0]
    assert sorted(set(sweep.panel.values())) == ["conns=1", "conns=4"]
    assert [run_charts.x_label("msg_size", v) for v in (64.0, 16384.0)] == ["64B", "16KiB"]
    # One value, or no matrix: bars, not lines.
    assert run_charts.sweep_of(["conns"], {0: {"conns": 1.0}}) is None
    assert run_charts.sweep_of([], {0: {}}) is None


def test_sweep_report_leads_with_round_trips_and_draws_lines(tmp_path):
    out, view, summary = report.render_run(recorded.RUN_SWEEP, tmp_path)
    assert [c.id for c in view.charts] == ["headline", "latency", "cpu"] and view.chart_notes == []
    assert "against msg_size" in view.charts[0].svg and "log scale" in view.charts[0].svg
    assert view.headline_title == "round trips/s" and view.show_throughput
    assert [t.cell for t in view.summary_tables][:2] == ["msg_size=64B conns=1", "msg_size=64B conns=4"]
    assert all(len(t.rows) == 3 for t in view.summary_tables)
    head = report.text_table(view).splitlines()[0].split()
    assert head[:5] == ["cell", "server", "ok/n", "round", "trips/s"] and "throughput" in head
    first = view.summary_rows[0]
    assert first.headline == fmt.per_second(summary["round_trips_per_s_median"].iloc[0])
    assert first.headline.endswith("k/s") and "\u00a0" in first.headline_ci
    assert view.latency_note == ""  # 1,500 round trips per group and more: every p99 is shown


def test_hosts_far_apart_get_a_panel_each(tmp_path):
    run = load_run(recorded.RUN_MULTI)
    summary = analysis.summarize(run.samples, "naive")
    assert run_charts.host_groups(summary, ["throughput_gib_s"]) == [["local"], ["arm64"]]
    assert run_charts.host_groups(summary[summary["server_host"] == "local"], ["throughput_gib_s"]) == [["local"]]
    _, view, _ = report.render_run(recorded.RUN_MULTI, tmp_path)
    assert all("its own panel and scale" in c.caption for c in view.charts)


def test_burst_percentile_chart_leaves_out_what_too_few_values_support(tmp_path):
    out, view, summary = report.render_run(recorded.RUN_A, tmp_path)
    assert view.headline_title == "bursts/s" and view.charts[0].id == "headline"
    chart = next(c for c in view.charts if c.id == "latency")
    assert ">p99<" in chart.svg and "p99.9" not in chart.svg  # 240 bursts per group: no p99.9
    assert "p99.9 for all: no group has enough" in chart.caption
    page = out.read_text()
    assert run_charts.thresholds_text() in page  # the percentile table's caption states the same rule
    assert "too few (240)" in page


def test_fit_labels_thins_out_crowded_tick_labels():
    fig = charts.new_figure((2.0, 1.5))
    ax = fig.subplots()
    ax.plot(np.arange(40), np.arange(40))
    ax.set_xticks(np.arange(40))
    ax.set_xticklabels([f"{v} GiB/s" for v in range(40)])
    run_charts.fit_labels(fig)
    r = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(r) for t in ax.get_xticklabels() if t.get_visible() and t.get_text()]
    assert 1 < len(boxes) < 40
    assert not any(run_charts.overlap(a, b, 0) for a, b in zip(boxes, boxes[1:]))


def test_cpu_charts_draw_the_pooled_figures_the_tables_print():
    summary = pd.DataFrame({
        "host_cpu_s_per_gib_median": [3.0, 5.0], "host_cpu_s_per_gib_ci_lo": [1.0, 4.0],
        "host_cpu_s_per_gib_ci_hi": [9.0, 6.0],
        "host_cpu_s_per_gib_pooled": [2.0, float("nan")], "host_cpu_s_per_gib_pooled_unc": [0.5, float("nan")],
    })
    view = run_charts.pooled_cpu_view(summary)
    # Pooled value +- resolution where a run recorded it; the samples' median and CI where it did not.
    assert list(view["host_cpu_s_per_gib_median"]) == [2.0, 5.0]
    assert list(view["host_cpu_s_per_gib_ci_lo"]) == [1.5, 4.0]
    assert list(view["host_cpu_s_per_gib_ci_hi"]) == [2.5, 6.0]
    assert list(summary["host_cpu_s_per_gib_median"]) == [3.0, 5.0]  # the summary itself is left alone
