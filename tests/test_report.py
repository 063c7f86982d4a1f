"""The HTML report: self-contained, autoescaped, showing the numbers of the run."""

from __future__ import annotations

import html.parser
import re
from pathlib import Path

import pytest

from splicebench import scenario
from splicebench.report import proxy_report, render, run_charts
from splicebench.report import run_report as report
from splicebench.results import rundir as results
from splicebench.results.metrics import SAMPLE_COLUMNS

pytestmark = pytest.mark.unit
GIB = 1 << 30
EVIL = "<script>alert(1)</script>"


def make_run(tmp_path, *, status="complete", description=EVIL, servers=("naive", "splice", "sockmap"), extra="", baseline="naive"):
    text = (f"description: '{description}'\nservers: [{', '.join(servers)}]\n"
            "workload: {type: stream, bytes: 1MiB}\nrepetitions: {warmup: 0, measured: 3}\n" + extra)
    sc = scenario.parse(text, "evil.yaml")
    servers = [s["label"] for s in sc.to_dict()["servers"]]
    rows = []
    seq = 0
    for rep in range(3):
        for i, srv in enumerate(servers):
            r = dict.fromkeys(SAMPLE_COLUMNS)
            r.update(run_id="r", sample_id=f"{seq + 1:04d}-c0-{srv}-m{rep + 1}", seq=seq, cell=0, cell_label="",
                     round=rep + 1, phase="measured", repetition=rep + 1, server=srv, server_kind=srv,
                     server_host="local", client_hosts="local", workload="stream", status="ok", error="",
                     goodput_bytes_per_s=(i + 1) * GIB * (1 + rep / 10), bytes_verified=GIB,
                     lat_p50_ns=1e6, lat_p90_ns=2e6, lat_p99_ns=3e6, lat_p999_ns=4e6,
                     server_life_cpu_user_s=0.1, server_life_cpu_sys_s=0.2, host_cpu_busy_s=0.9,
                     host_cpu_softirq_s=0.3)
            if srv == "sockmap" and rep == 2:
                r.update(status="failed", error=f"client on local: {EVIL}", goodput_bytes_per_s=None)
            rows.append(r)
            seq += 1
    rd = results.RunDir(tmp_path / "results", "20261125T000000Z-abcdef")
    rd.write_samples(rows)
    rd.write_manifest({"run_id": "20261125T000000Z-abcdef", "status": status, "started_at": "2026-11-25T00:00:00Z",
                       "duration_s": 12.5, "tool": {"version": "0.1.0", "git_revision": "abc123", "git_dirty": False},
                       "scenario": sc.to_dict(), "scenario_text": text, "baseline": baseline,
                       "hosts": {"local": {"hostname": EVIL, "kernel": "6.18", "cpu_model": "Test CPU", "cpu_count": 2,
                                           "sysctls": {"fs.pipe-max-size": "1048576"}, "bpf": {}, "tools": {}}}})
    return rd.finish()


class Refs(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs, self.tags = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for k, v in attrs:
            if k in ("src", "href", "xlink:href", "action", "data", "poster", "srcset") and v:
                self.refs.append(v)


def test_report_is_self_contained_and_escaped(tmp_path):
    run = make_run(tmp_path)
    out, view, summary = report.render_run(run, tmp_path / "reports")
    assert out == tmp_path / "reports" / "evil-20261125T000000Z-abcdef.html"
    page = out.read_text()
    p = Refs()
    p.feed(page)
    # Only in-page references: nothing is fetched when the file is opened.
    assert all(r.startswith("#") or r.startswith("data:") for r in p.refs), p.refs
    assert "script" not in p.tags and "link" not in p.tags and "img" not in p.tags
    assert not re.search(r"url\(\s*['\"]?(https?:)?//", page)
    assert "@import" not in page
    # Scenario text, host facts and errors are escaped, never markup.
    assert EVIL not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert page.count("<svg") == 3


def test_proxy_scenario_shows_ratios_to_the_naive_proxy_and_the_peer(tmp_path):
    run = make_run(tmp_path, servers=("proxy-naive", "proxy-splice", "nginx"), baseline="proxy-naive",
                   extra="backend: {name: naive}\nbaseline: proxy-naive\n")
    out, view, _ = report.render_run(run, tmp_path / "reports")
    p = view.proxies
    assert p is not None and p.references == ["proxy-naive", "nginx"]
    throughput = p.tables[0]
    rows = {r.server: r for r in throughput.rows}
    assert [r.server for r in throughput.rows] == ["direct", "proxy-naive", "proxy-splice", "nginx"]
    assert rows["proxy-naive"].cells[0] == proxy_report.RatioCell("=", "")
    # Medians 1.1 (direct), 2.2 (naive proxy), 3.3 and 4.4 GiB/s (nginx): one ratio formatter.
    assert rows["proxy-splice"].median == "3.30 GiB/s"
    assert [(c.ratio, c.ci) for c in rows["proxy-splice"].cells] == [("1.50x", "[1.25, 1.80]"),
                                                                     ("0.750x", "[0.625, 0.900]")]
    assert rows["direct"].cells[0].ratio == "0.500x" and rows["nginx"].cells[1] == proxy_report.RatioCell("=", "")
    assert p.tables[2].rows[0].median == "0.300 s"  # proxy process CPU per GiB, with its unit
    page = out.read_text()
    assert 'id="proxies"' in page and 'id="proxies-throughput_gib_s"' in page and "0.500x" in page


def test_report_shows_the_numbers(tmp_path):
    run = make_run(tmp_path)
    _, view, summary = report.render_run(run, tmp_path / "reports")
    rows = {r.server: r for r in view.summary_rows}
    assert rows["naive"].throughput == "1.10 GiB/s"  # medians of 1.0, 1.1, 1.2 GiB/s
    assert rows["splice"].throughput == "2.20 GiB/s"
    assert rows["splice"].ratio == "2.00x"
    assert rows["naive"].ratio == "baseline"
    assert rows["sockmap"].n == "2/3" and rows["sockmap"].warn
    assert rows["naive"].p50 == "1.00 ms"
    assert rows["naive"].proc_cpu.text == "0.300 s" and rows["naive"].host_cpu.text == "0.900 s"
    assert [f.sample_id for f in view.failures] == ["0009-c0-sockmap-m3"]
    table = report.text_table(view)
    assert table.splitlines()[0].split()[:3] == ["server", "ok/n", "throughput"]
    assert "2.00x" in table
    page = report.render_html(view)
    for s in ("1.10 GiB/s", "2.00x", "Method", "Test CPU", "0009-c0-sockmap-m3", "Execution order"):
        assert s in page


def test_interrupted_run_says_so(tmp_path):
    run = make_run(tmp_path, status="interrupted")
    out, view, _ = report.render_run(run, tmp_path / "reports")
    assert "interrupted" in view.status_note
    assert view.status_note in out.read_text()


def test_rendering_is_deterministic(tmp_path):
    run = make_run(tmp_path)
    a, _, _ = report.render_run(run, tmp_path / "a")
    b, _, _ = report.render_run(run, tmp_path / "b")
    assert a.read_text() == b.read_text()


def test_autoescape_is_on():
    assert render.environment().autoescape is True


@pytest.mark.unit
def test_latency_chart_plots_merged_histogram_percentiles(tmp_path):
    """The latency chart shows percentiles of the merged histograms (the same values as the summary
    table), not the median of per-sample percentiles."""
    import shutil

    src = Path(__file__).parent / "data" / "runs" / "20261125T185321Z-f99079"
    run = tmp_path / "run"
    shutil.copytree(src, run)
    out, view, summary = report.render_run(run, tmp_path / "reports")
    chart = next(c for c in view.charts if c.id == "latency")
    assert "merged" in chart.caption
    per_sample, _ = run_charts.latency_percentiles(summary)
    assert chart.svg != per_sample  # the plotted values changed
    assert view.latency_merged
