"""analysis/compare.py, the comparison report, the run report's statistics sections and export.py on
recorded runs (tests/data/runs/)."""

from __future__ import annotations

import base64
import csv
import html.parser
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from splicebench.analysis import compare
from splicebench.report import compare_report, render, run_sections, sections
from splicebench.report import format as fmt
from splicebench.report import export
from splicebench.report import run_report as report
from splicebench.analysis import stats
from splicebench.errors import UserError

sys.path.insert(0, str(Path(__file__).parent))
import recorded  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
EVIL = "<script>alert(1)</script>"


def goodput(run: Path, host: str = "local") -> dict[str, list[float]]:
    """Measured ok throughput (GiB/s) per server on one host, read straight from samples.csv."""
    out: dict[str, list[float]] = {}
    with open(run / "samples.csv", newline="") as f:
        for r in csv.DictReader(f):
            if r["phase"] == "measured" and r["status"] == "ok" and r["server_host"] == host:
                out.setdefault(r["server"], []).append(float(r["goodput_bytes_per_s"]) / (1 << 30))
    return out


@pytest.fixture(scope="module")
def ab():
    return [compare.load_run(recorded.RUN_A), compare.load_run(recorded.RUN_B)]


@pytest.mark.unit
def test_two_recorded_runs_align_on_every_server(ab):
    srcs = compare.sources(ab)
    assert [s.letter for s in srcs] == ["A", "B"]
    al = compare.align(srcs)
    assert [k.server for k in al.keys] == ["naive", "splice", "sockmap"]
    assert al.unmatched() == [] and al.varying == ()
    assert dict(al.common_params()) == {"workload": "burst", "conns": 2, "burst_size": 262144, "bursts": 20}
    g = al.groups[(0, al.keys[0])]
    assert len(g.measured) == 6 and g.n_measured == 6 and len(g.warmup) == 1


@pytest.mark.unit
def test_comparison_numbers_match_the_samples(ab):
    al = compare.align(compare.sources(ab))
    comps = compare.compare(al)
    assert len(comps) == 3 * len(compare.COMPARE_METRICS)
    a, b = goodput(recorded.RUN_A), goodput(recorded.RUN_B)
    tput = {c.key.server: c for c in comps if c.metric.column == "throughput_gib_s"}
    for server in ("naive", "splice", "sockmap"):
        c = tput[server]
        assert c.ref_ci.median == pytest.approx(float(np.median(a[server])))
        assert c.ratio.value == pytest.approx(float(np.median(b[server]) / np.median(a[server])))
        assert c.ratio.lo <= c.ratio.value <= c.ratio.hi
        assert c.p_raw == pytest.approx(stats.compare_samples(a[server], b[server]).p_value)
        assert c.test.p_value >= c.p_raw  # adjusted for the 15 comparisons
    # B ran while the machine was busier: naive and splice are slower beyond doubt (all six samples
    # of B below all six of A for naive), sockmap overlaps too much to say.
    assert tput["naive"].p_raw == pytest.approx(2 / 924) and tput["naive"].test.verdict == stats.WORSE
    assert tput["splice"].test.verdict == stats.WORSE
    assert tput["sockmap"].test.verdict == stats.NOT_SIGNIFICANT
    assert all(c.noisy for c in tput.values())


@pytest.mark.unit
def test_merged_percentiles_come_from_summed_histograms(ab):
    al = compare.align(compare.sources(ab))
    g = al.groups[(0, al.keys[0])]
    hists = []
    for files in g.measured["raw_files"]:
        f = next(p for p in files.split() if p.endswith(".client.json"))
        hists.append(json.loads((recorded.RUN_A / f).read_text())["hist"]["buckets"])
    merged = stats.merge_histograms(hists)
    assert g.hist == merged
    assert g.n_hist_samples == 6 * 40  # 2 connections x 20 bursts per sample
    assert g.percentiles() == stats.hist_percentiles(merged)


@pytest.mark.unit
def test_same_host_is_fair_but_busy_hosts_are_cautioned(ab):
    srcs = compare.sources(ab)
    assert compare.fact_differences(srcs) == []
    f = compare.fairness(srcs)
    assert f.fair and f.reasons == ()
    assert any("load average 5.41 on 2 CPU(s)" in c for c in f.cautions)


@pytest.mark.unit
def test_different_hardware_is_unfair(tmp_path):
    arm = recorded.as_other_arch(recorded.RUN_B, tmp_path, recorded.ARM_NATIVE, "20261125T185330Z-arm000")
    runs = [compare.load_run(recorded.RUN_A), compare.load_run(arm)]
    srcs = compare.sources(runs)
    diffs = {d.name: d for d in compare.fact_differences(srcs)}
    assert diffs["architecture"].values == ("x86_64", "aarch64") and diffs["architecture"].severity == compare.UNFAIR
    assert diffs["CPU model"].values == ("AMD EPYC", "Neoverse-N1")
    assert diffs["CPU clock (GHz)"].values == ("unknown", "3")
    assert diffs["hostname"].severity == compare.INFO
    f = compare.fairness(srcs)
    assert not f.fair
    assert any(r.startswith("architecture differs: A x86_64 vs B aarch64") for r in f.reasons)
    assert compare.needs_arch_section(srcs)


@pytest.mark.unit
def test_kernel_difference_is_a_caution_not_unfair(tmp_path):
    other = recorded.as_other_arch(recorded.RUN_B, tmp_path, {"kernel": "6.19.0-rc1"}, "20261125T185330Z-kern00")
    srcs = compare.sources([compare.load_run(recorded.RUN_A), compare.load_run(other)])
    f = compare.fairness(srcs)
    assert f.fair
    assert any(c.startswith("kernel differs (6.18.44-fc-v657 vs 6.19.0-rc1)") for c in f.cautions)


@pytest.mark.unit
@pytest.mark.parametrize("facts, emulated", [
    ({"emulated": True, "virt": "qemu"}, True),
    ({"emulated": False, "virt": "qemu"}, False),  # detected on the host (KVM confirmed): the flag wins
    ({"emulated": None, "virt": "qemu"}, True),  # QEMU, KVM not confirmed: never shown as native
    ({"virtualization": "qemu"}, True),  # older facts: systemd-detect-virt says qemu only without KVM
    ({"emulated": False, "virt": "kvm"}, False),
    ({"virtualization": "kvm"}, False),
    ({"virtualization": "docker"}, False),
    ({}, False),
])
def test_emulation_detection(facts, emulated):
    assert compare.emulation(facts)[0] is emulated


@pytest.mark.unit
@pytest.mark.parametrize("facts, ghz", [
    ({"cpu_model": "Intel(R) Xeon(R) CPU E5-2680 v4 @ 2.40GHz"}, 2.4),
    ({"cpu_model": "AMD EPYC", "cpu_max_mhz": 3500}, 3.5),
    ({"cpu_model": "AMD EPYC", "cpu_mhz": "2994.3"}, 2.9943),
    ({"cpu_model": "AMD EPYC"}, None),
    ({"cpu_model": None, "cpu_mhz": "n/a"}, None),
])
def test_cpu_clock(facts, ghz):
    got = compare.cpu_ghz(facts)
    assert got == (pytest.approx(ghz) if ghz else None)


@pytest.mark.unit
def test_unmatched_parameters_are_listed_not_compared(tmp_path):
    other = recorded.as_other_arch(recorded.RUN_B, tmp_path, {}, "20261125T185330Z-bigger")
    df = pd.read_csv(other / "samples.csv")
    df.loc[df["server"] == "splice", "burst_size"] = 1 << 20
    df.to_csv(other / "samples.csv", index=False)
    al = compare.align(compare.sources([compare.load_run(recorded.RUN_A), compare.load_run(other)]))
    assert al.varying == ("burst_size",)
    unmatched = {k.label(al.varying): [s.letter for s in present] for k, present in al.unmatched()}
    assert unmatched == {"splice · burst_size=256KiB": ["A"], "splice · burst_size=1MiB": ["B"]}
    assert {c.key.server for c in compare.compare(al)} == {"naive", "sockmap"}


@pytest.mark.unit
def test_load_runs_refuses_the_same_run_twice(tmp_path):
    with pytest.raises(UserError, match="are the same run"):
        compare.load_runs(tmp_path, [str(recorded.RUN_A), str(recorded.RUN_A)])


# ---------------------------------------------------------------------------------------------
# architectures


@pytest.mark.unit
def test_architecture_section_for_runs_of_two_architectures(tmp_path):
    arm = recorded.as_other_arch(recorded.RUN_B, tmp_path, recorded.ARM_NATIVE, "20261125T185330Z-arm000")
    view = compare_report.build_compare_view([compare.load_run(recorded.RUN_A), compare.load_run(arm)], "T")
    assert view.arch is not None
    assert [c.arch for c in view.arch.columns] == ["x86_64", "aarch64"]
    x86, a64 = view.arch.columns[0].sources[0], view.arch.columns[1].sources[0]
    assert not x86.emulated and not a64.emulated
    assert [r.group for r in a64.rows] == ["naive", "splice", "sockmap"]
    # Per core: median / 4 CPUs; per core.GHz: / (4 x 3.0); the x86 host reports no clock.
    b = goodput(recorded.RUN_B)
    med = float(np.median(b["naive"]))
    assert a64.rows[0].per_core == fmt.metric("throughput_gib_s", med / 4)
    assert a64.rows[0].per_core_ghz == fmt.metric("throughput_gib_s", med / 12)
    assert x86.rows[0].per_core_ghz == "clock unknown"
    assert "<svg" in x86.chart.svg and "<svg" in a64.chart.svg
    assert not view.fair


@pytest.mark.unit
def test_architecture_section_for_one_run_with_an_emulated_host(tmp_path):
    run_dir = recorded.two_host_run(recorded.RUN_A, recorded.RUN_B, tmp_path, "20261125T190000Z-multi0")
    run = compare.load_run(run_dir)
    srcs = compare.sources([run])
    assert [(s.letter, s.host, s.arch, s.emulated) for s in srcs] == [
        ("A:local", "local", "x86_64", False), ("A:arm64", "arm64", "aarch64", True)]
    x = run_sections.build(run, "naive")
    assert x.arch is not None
    emu = x.arch.columns[1].sources[0]
    assert emu.emulated and "not the performance of this architecture" in emu.emulation_note
    assert all(r.per_core == "emulated" and r.per_core_ghz == "emulated" for r in emu.rows)
    assert "EMULATED" in emu.chart.svg
    # Servers are compared with the baseline on their own host only.
    assert {r.other_label for r in x.comparisons} == {"vs naive on local", "vs naive on arm64"}
    # The emulated host's merged percentiles are those of the recorded run they came from.
    b = compare.align(compare.sources([compare.load_run(recorded.RUN_B)]))
    want = sections.percentile_rows(b)
    got = [p for p in x.percentiles if p.emulated]
    assert [(p.p50, p.p99, p.p999) for p in got] == [(p.p50, p.p99, p.p999) for p in want]

    page = render.environment().get_template("_run_sections.html.j2").render(x=x)
    assert 'id="architectures"' in page and "EMULATED: not native performance" in page
    assert page.count("<svg") == 2  # one chart per host


@pytest.mark.unit
def test_comparing_with_an_emulated_host_says_so_at_the_top(tmp_path):
    emu = recorded.as_other_arch(recorded.RUN_B, tmp_path, recorded.ARM_EMULATED, "20261125T185330Z-emu000")
    view = compare_report.build_compare_view([compare.load_run(recorded.RUN_A), compare.load_run(emu)], "T")
    assert not view.fair
    assert "ran under emulation" in view.unfair_reasons[0]
    page = compare_report.render_compare(view)
    banner = page.index("Not a like-for-like comparison")
    assert banner < page.index('id="comparison"') and banner < page.index('id="architectures"')


# ---------------------------------------------------------------------------------------------
# the file


class Refs(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs, self.tags, self.ids = [], [], set()

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for k, v in attrs:
            if k == "id":
                self.ids.add(v)
            if k in ("src", "href", "xlink:href", "action", "data", "poster", "srcset") and v:
                self.refs.append(v)


@pytest.mark.unit
def test_compare_report_is_self_contained_escaped_and_deterministic(tmp_path, ab):
    evil = recorded.as_other_arch(recorded.RUN_B, tmp_path, {"hostname": EVIL, "kernel": EVIL},
                                  "20261125T185330Z-evil00")
    runs = [ab[0], compare.load_run(evil)]
    page = compare_report.render_compare(compare_report.build_compare_view(runs, "2026-11-25T19:00:00Z"))
    p = Refs()
    p.feed(page)
    assert all(r.startswith("#") or r.startswith("data:") for r in p.refs), p.refs
    assert {r[1:] for r in p.refs if r.startswith("#")} <= p.ids  # every in-page link has a target
    assert not {"script", "link", "img", "iframe"} & set(p.tags)
    assert not re.search(r"url\(\s*['\"]?(https?:)?//", page) and "@import" not in page
    assert EVIL not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    again = compare_report.render_compare(compare_report.build_compare_view(runs, "2026-11-25T19:00:00Z"))
    assert again == page
    later = compare_report.render_compare(compare_report.build_compare_view(runs, "2027-01-01T00:00:00Z"))
    assert later != page and later.replace("2027-01-01T00:00:00Z", "2026-11-25T19:00:00Z") == page


@pytest.mark.unit
def test_embedded_csv_and_parquet_hold_every_sample(tmp_path, ab):
    out, pq, view = compare_report.write_compare(ab, tmp_path, generated_at="T")
    page = out.read_text()
    href = re.search(r'id="download-csv" download="[^"]+" href="data:text/csv;base64,([^"]+)"', page).group(1)
    table = pd.read_csv(io.StringIO(base64.b64decode(href).decode()))
    assert len(table) == 42 and set(table["run_id"]) == {r.run_id for r in ab}
    assert set(table["phase"]) == {"warmup", "measured"}
    assert list(table["sample_id"][:3]) == ["0001-c0-naive-w1", "0002-c0-splice-w1", "0003-c0-sockmap-w1"]
    back = pd.read_parquet(pq)
    assert len(back) == 42 and set(back["host_arch"]) == {"x86_64"} and not back["host_emulated"].any()
    assert back["throughput_gib_s"].notna().sum() == 42
    assert [m["run_id"] for m in export.read_parquet_manifests(pq)] == [r.run_id for r in ab]
    assert export.parquet_bytes(back.iloc[:0]) == export.parquet_bytes(back.iloc[:0])
    for r in ab:  # both scenarios and the manifests are in the file
        assert f'id="doc-scenario-{r.run_id}"' in page
    assert "burst_size: 256KiB" in page and "&#34;scenario_sha256&#34;" in page


@pytest.mark.unit
def test_adaptive_repetitions_report_the_bound(ab):
    run = ab[0]
    for target, hit in ((0.05, True), (5.0, False)):
        m = json.loads(json.dumps(run.manifest))
        m["scenario"]["repetitions"] = {"warmup": 1, "min": 6, "max": 6, "target_ci_width": target}
        x = run_sections.build(compare.RunData(run.path, m, run.samples, run.hists), "naive")
        assert x.adaptive is not None and x.adaptive.any_bound_hit is hit
        assert all(r[4] is hit for r in x.adaptive.rows)
    assert run_sections.build(run, "naive").adaptive is None


@pytest.mark.slow
def test_invoke_compare_and_export(tmp_path):
    """The tasks as a user runs them (processes started: not a unit test)."""
    env = {**os.environ, "HOME": str(tmp_path)}
    r = subprocess.run([sys.executable, "-m", "invoke", "compare", str(recorded.RUN_A), str(recorded.RUN_B),
                        "--results-dir", str(tmp_path / "results"), "--reports-dir", str(tmp_path / "reports")],
                       cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    # Expected figures from samples.csv by an independent calculation: the median of the measured
    # ok goodputs of each run (numpy), their ratio B/A, printed to three significant digits.
    for server, a in goodput(recorded.RUN_A).items():
        b = goodput(recorded.RUN_B)[server]
        ma, mb = float(np.median(a)) * 1024, float(np.median(b)) * 1024  # GiB/s -> MiB/s
        line = rf"^{server}\s+B vs A\s+{ma:.3g} MiB/s\s+{mb:.3g} MiB/s\s+{mb / ma:.3g}x"
        assert re.search(line, r.stdout, re.M), (line, r.stdout)
    html_files = list((tmp_path / "reports").glob("compare-*.html"))
    assert len(html_files) == 1 and html_files[0].with_suffix(".parquet").is_file()
    out = tmp_path / "a.parquet"
    r = subprocess.run([sys.executable, "-m", "invoke", "export", "--run", str(recorded.RUN_A), "--output", str(out)],
                       cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    with open(recorded.RUN_A / "samples.csv", newline="") as f:
        assert len(pd.read_parquet(out)) == sum(1 for _ in csv.DictReader(f))  # one row per sample


@pytest.mark.unit
def test_run_report_latency_columns_are_merged_percentiles(tmp_path):
    out, view, summary = report.render_run(recorded.RUN_A, tmp_path)
    run = compare.load_run(recorded.RUN_A)
    al = compare.align(compare.sources([run]))
    for row, key in zip(view.summary_rows, al.keys):
        p = al.groups[(0, key)].percentiles()
        assert (row.server, row.p50, row.p99) == (key.server, fmt.latency(p["p50"]),
                                                  fmt.latency(p["p99"]))
    assert view.latency_merged and view.sections is not None
    page = out.read_text()
    assert "latency per burst p50 and p99 from the clients' histograms" in page
    assert 'id="significance"' in page and 'id="download-csv"' in page


@pytest.mark.unit
def test_run_report_is_deterministic(tmp_path):
    first, _, _ = report.render_run(recorded.RUN_A, tmp_path / "one")
    second, _, _ = report.render_run(recorded.RUN_A, tmp_path / "two")
    assert first.read_text() == second.read_text()


@pytest.mark.unit
def test_recorded_run_on_x86_and_an_emulated_arm64_guest(tmp_path):
    run = compare.load_run(recorded.RUN_MULTI)
    srcs = compare.sources([run])
    assert [(s.letter, s.arch, s.emulated) for s in srcs] == [("A:local", "x86_64", False),
                                                              ("A:arm64", "aarch64", True)]
    assert "TCG" in compare.emulation(srcs[1].facts)[1]
    x = run_sections.build(run, "naive")
    assert [c.arch for c in x.arch.columns] == ["x86_64", "aarch64"]
    native, emu = x.arch.columns[0].sources[0], x.arch.columns[1].sources[0]
    assert not native.emulated and emu.emulated and "TCG" in emu.emulation_note
    assert [r.per_core for r in emu.rows] == ["emulated"] * 3
    med = float(np.median(goodput(recorded.RUN_MULTI)["naive"]))
    assert len(goodput(recorded.RUN_MULTI, "arm64")["naive"]) == 6
    assert native.rows[0].per_core == fmt.metric("throughput_gib_s", med / 2)
    # Stream with one connection: one latency (transfer time) per sample, six per group: a median,
    # but no p99 and no percentile chart, and the report says so.
    out, view, _ = report.render_run(recorded.RUN_MULTI, tmp_path)
    first = view.summary_rows[0]
    assert first.server == "naive @ local" and first.p99 == "too few (6)"
    assert view.latency_title == "transfer time per connection" and "100 latency values" in view.latency_note
    assert [c.id for c in view.charts] == ["headline", "cpu"] and "fewer than 10 latency values" in view.chart_notes[0]
    page = out.read_text()
    assert page.count("<svg") == 2 + 2 and "EMULATED: not native performance" in page
    assert view.chart_notes[0] in page.replace("&#39;", "'")
    f = compare.fairness(srcs)
    assert not f.fair and "ran under emulation" in f.reasons[0]


@pytest.mark.unit
def test_summary_ratios_not_significant_are_marked(tmp_path):
    # RUN_A: splice 1.52x and sockmap 0.562x of naive, neither significant after adjustment.
    out, view, _ = report.render_run(recorded.RUN_A, tmp_path)
    assert [(r.server, r.ratio) for r in view.summary_rows] == [("naive", "baseline"), ("splice", "1.52x"),
                                                               ("sockmap", "0.562x")]
    assert [r.ratio_mark for r in view.summary_rows] == ["", "n.s.", "n.s."]
    assert out.read_text().count('title="not significant">n.s.</span>') == 2
    _, multi, _ = report.render_run(recorded.RUN_MULTI, tmp_path)
    marks = [r.ratio_mark for r in multi.summary_rows]
    assert len(marks) == 6 and marks[0] == marks[3] == ""
