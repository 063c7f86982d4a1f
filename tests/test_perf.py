"""Linux perf in runs: perf count columns per sample (from the CPU sampler), `profile: true` rounds folded and drawn, and a host
without perf (PATH without it) that still runs and says why the figures are missing.

Parsers first, on output captured from this machine's perf (tests/data/perf-*.txt); then real runs
over loopback with the real servers (one short run per scenario, shared by the tests that read it).
"""

from __future__ import annotations

import io
import json
import os
import re
import sys
from pathlib import Path

import pandas as pd
import pytest

from splicebench.cli import commands
from splicebench.hosts import facts
from splicebench.report import flame
from splicebench.report import run_report
from splicebench.results import cpu, perf
from splicebench.results import rundir as results

sys.path.insert(0, str(Path(__file__).parent))
import cdp  # noqa: E402

DATA = Path(__file__).parent / "data"
REPO = Path(__file__).resolve().parents[1]

# Function families (not exact names, which change between kernels).
SOCKMAP_FAMILY = re.compile(r"^(sk_psock|tcp_bpf|bpf_|sk_skb|sock_map)")
READ_WRITE_FAMILY = re.compile(r"^(ksys_read|ksys_write|vfs_read|vfs_write|tcp_sendmsg|tcp_recvmsg|sock_read_iter|"
                               r"sock_write_iter)")


@pytest.mark.unit
def test_perf_counts_bracket_the_marks_and_leave_the_sampler_out_of_the_host():
    """Format 2 readings: t, self CPU, 1 CPU x 8 ticks, 1 group x 3, then perf counts of the
    sampler, the host and the group (syscalls, ctxsw, migrations)."""
    def reading(t_ms, own, host, server):
        return [t_ms * 1_000_000, 0, *[0] * 8, 0, 0, 0, *own, *host, *server]
    rows = [reading(0, (0, 0, 0), (0, 0, 0), (0, 0, 0)), reading(2, (20, 1, 0), (120, 5, 1), (50, 2, 0)),
            reading(4, (40, 2, 0), (640, 9, 1), (450, 4, 0)), reading(6, (60, 3, 0), (700, 12, 2), (460, 5, 0))]
    summary = {"event": "summary", "tool": "sb-cpustat", "format": 2, "interval_ns": 2_000_000, "clk_tck": 100,
               "ncpu": 1, "cpu_fields": list(cpu.FIELDS), "groups": [[7]], "perf_fields": list(cpu.PERF_FIELDS),
               "perf_counted": {"self": [True] * 3, "host": [True] * 3, "groups": [[True, True, False]]},
               "perf_notes": ["cpu-migrations of --pid 7 not counted: perf_event_open: Permission denied"],
               "taken": 4, "dropped": 0, "self_cpu_s": 0.0, "readings": rows}
    r = cpu.parse_cpustat(json.dumps(summary))
    counts, notes = cpu.perf_counts(r, 2_000_000, 4_000_000)  # marks on readings: exact
    assert counts["server"]["raw_syscalls:sys_enter"] == cpu.Figure(400, 0)
    assert counts["host"]["raw_syscalls:sys_enter"] == cpu.Figure(500, 0)  # 520 less the sampler's 20
    assert counts["server"]["cpu-migrations"] is None and notes == summary["perf_notes"]
    between = cpu.perf_counts(r, 1_000_000, 5_000_000)[0]["server"]["raw_syscalls:sys_enter"]
    assert (between.value - between.unc, between.value + between.unc) == (400, 460)
    late, notes = cpu.perf_counts(r, 1_000_000, 7_000_000)
    assert late["server"]["raw_syscalls:sys_enter"] is None
    assert "perf counts left out: a transfer mark lies outside the sampler's kept readings (end mark 1.0 ms after the last kept reading)" in notes
    row = perf.stat_row(counts, 512 << 20)
    assert row["perf_server_syscalls"] == 400 and row["perf_server_syscalls_per_gib"] == 800
    assert row["perf_server_migrations"] is None and row["perf_host_ctxsw_unc"] == 0
    assert perf.stat_row(counts, 0)["perf_host_ctxsw_per_gib"] is None
    summary["format"] = 1  # an older sampler: no perf counts, and it says so
    del summary["perf_counted"]
    summary["readings"] = [x[:13] for x in rows]
    counts, notes = cpu.perf_counts(cpu.parse_cpustat(json.dumps(summary)), 2_000_000, 4_000_000)
    assert counts == {} and "counted no perf events" in notes[0]


@pytest.mark.unit
def test_fold_marks_kernel_frames_and_keeps_every_sample():
    text = (DATA / "perf-script-sockmap.txt").read_text()
    folded = perf.fold(text)
    assert sum(folded.values()) == len([b for b in text.split("\n\n") if b.strip()])
    assert perf.parse_folded(perf.format_folded(folded)) == folded
    frames = {f for s in folded for f in s.split(";")[1:]}
    # The JIT-compiled verdict program is kernel code although perf names no kernel DSO for it.
    assert any(f.startswith("bpf_prog_") and f.endswith(perf.KERNEL_SUFFIX) for f in frames)
    assert "sk_psock_backlog" + perf.KERNEL_SUFFIX in frames
    assert not any("+0x" in f or " " in f for f in frames)
    idle = {s: n for s, n in folded.items() if perf.is_idle(s)}
    assert idle and all(s.startswith("swapper;") for s in idle)
    top = perf.top_functions(folded, kernel=True, n=50)
    assert top and all(t.kernel for t in top)
    assert abs(sum(t.self_share for t in top) - sum(perf.busy({s: n for s, n in folded.items()
                                                                if s.split(";")[-1].endswith(perf.KERNEL_SUFFIX)})
                                                          .values()) / sum(perf.busy(folded).values())) < 1e-9
    assert all(t.total_share >= t.self_share for t in top)


@pytest.mark.unit
def test_flame_layout_nests_callees_inside_callers():
    g = flame.layout({"a;f;g": 3, "a;f": 1, "b;<h>": 4, "a;tiny": 0})
    assert g.samples == 8
    by = {b.title.split(" ")[0]: b for b in g.boxes}
    assert by["a"].w == pytest.approx(flame.WIDTH / 2) and by["b"].w == pytest.approx(flame.WIDTH / 2)
    assert by["f"].x == by["a"].x and by["g"].w == pytest.approx(flame.WIDTH * 3 / 8)
    assert by["g"].y < by["f"].y < by["a"].y  # callees above their callers
    assert "tiny" not in by and by["<h>"].label == "<h>"  # escaped by the template, not here


def paths(tmp_path: Path) -> commands.Paths:
    return commands.Paths.of(REPO, str(tmp_path / "results"), str(tmp_path / "reports"))


PROFILE_SCENARIO = """\
name: perf-profile
description: naive and SOCKMAP echo, one measured round, then the profile round
servers: [naive, sockmap]
workload: {type: stream, bytes: 256MiB}
repetitions: {warmup: 0, measured: 1}
profile: true
timeout: 60s
"""


@pytest.fixture(scope="module")
def profiled(tmp_path_factory, programs, cache_dir):
    """One real run of PROFILE_SCENARIO: (run directory, samples, report path, report view)."""
    tmp = tmp_path_factory.mktemp("perf-run")
    (tmp / "s.yaml").write_text(PROFILE_SCENARIO)
    mp = pytest.MonkeyPatch()
    mp.setenv("SPLICEBENCH_CACHE", str(cache_dir))
    try:
        res = commands.run(paths(tmp), str(tmp / "s.yaml"), log=lambda m: None, progress_stream=io.StringIO())
    finally:
        mp.undo()
    assert res.status == "complete", res
    samples = pd.read_csv(res.run_dir / "samples.csv")
    return res.run_dir, samples, res.report, run_report.build_view(results_run(res.run_dir))[0]


def results_run(run_dir: Path):
    from splicebench.analysis.compare import load_run
    return load_run(run_dir)


def _folded(run_dir: Path, samples: pd.DataFrame, server: str) -> dict[str, int]:
    r = samples[(samples["phase"] == "profile") & (samples["server"] == server)].iloc[0]
    rel = next(x for x in r["raw_files"].split() if x.endswith(".profile.folded"))
    assert any(x.endswith(".perf.data") and (run_dir / x).stat().st_size > 0 for x in r["raw_files"].split())
    return perf.parse_folded((run_dir / rel).read_text())


@pytest.mark.e2e
@pytest.mark.privileged
def test_perf_stat_columns_and_profile_rounds_out_of_the_statistics(profiled):
    run_dir, samples, _, view = profiled
    assert list(samples["phase"]) == ["measured", "measured", "profile", "profile"]
    assert (samples["status"] == "ok").all(), samples["error"].tolist()
    for scope in perf.SCOPES:
        for name in perf.STAT_EVENTS.values():
            assert (samples[f"perf_{scope}_{name}"] >= 0).all()
            assert (samples[f"perf_{scope}_{name}_unc"] >= 0).all()
    assert (samples["perf_server_syscalls"] > 0).all() and (samples["perf_host_syscalls"] > 0).all()
    # Host-wide counts include the server's (same window, counted at the same time).
    assert (samples["perf_host_syscalls"] + samples["perf_host_syscalls_unc"]
            >= samples["perf_server_syscalls"] - samples["perf_server_syscalls_unc"]).all()
    assert samples["perf_note"].isna().all()
    # No perf process counted them: the CPU sampler did (its summary says which events it opened).
    for raw_files in samples["raw_files"]:
        stat = next(x for x in raw_files.split() if x.endswith(".cpustat.json"))
        assert '"perf_counted":{"self":[true,true,true],"host":[true,true,true]' in (run_dir / stat).read_text()
        assert not any("perf-stat" in x for x in raw_files.split())
    # The profile samples are not in the summary: one measured sample per server.
    assert [r.n for r in view.summary_rows] == ["1/1", "1/1"]
    assert [r.n for r in view.perf.stat_rows] == [1, 1]
    assert [p.server for p in view.perf.profiles] == ["naive", "sockmap"]


@pytest.mark.e2e
@pytest.mark.privileged
def test_profiles_name_each_data_paths_kernel_functions(profiled):
    run_dir, samples, _, view = profiled
    frames = {}
    for server in ("naive", "sockmap"):
        folded = _folded(run_dir, samples, server)
        frames[server] = {f.removesuffix(perf.KERNEL_SUFFIX) for s in perf.busy(folded)
                          for f in s.split(";")[1:] if f.endswith(perf.KERNEL_SUFFIX)}
    assert any(SOCKMAP_FAMILY.match(f) for f in frames["sockmap"]), sorted(frames["sockmap"])[:80]
    assert any(READ_WRITE_FAMILY.match(f) for f in frames["naive"]), sorted(frames["naive"])[:80]
    # The naive server itself reads and writes: its own stacks pass through the read/write path.
    naive = _folded(run_dir, samples, "naive")
    assert any(s.startswith("sb-echo-naive;") and any(READ_WRITE_FAMILY.match(f) for f in s.split(";"))
               for s in naive)


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.privileged
def test_profile_report_in_chromium(profiled):
    _, _, report, view = profiled
    html = report.read_text()
    assert "Profiling perturbs" in html and "excluded from every statistic" in html
    assert "<script" not in html.split('<section id="perf">', 1)[1].split("</section>", 1)[0]
    b = cdp.Browser()
    try:
        page = b.open_page(1280, 900)
        page.navigate(report.as_uri())
        b.pump(0.3)
        reqs = page.requests()
        assert reqs and all(u.startswith(("file:", "data:")) for u in reqs), reqs
        assert page.errors() == []
        graphs = page.evaluate("""Array.from(document.querySelectorAll('svg.flame-graph')).map(s => {
            const r = s.getBoundingClientRect();
            return {w: r.width, h: r.height, rects: s.querySelectorAll('rect').length,
                    labels: Array.from(s.querySelectorAll('text')).map(t => t.textContent)}; })""")
        assert len(graphs) == 2
        for g in graphs:
            assert g["w"] > 500 and g["h"] > 50 and g["rects"] > 5 and g["labels"], g
        tops = page.evaluate("""Array.from(document.querySelectorAll('table.top-kernel')).map(t =>
            Array.from(t.tBodies[0].rows).map(r => Array.from(r.cells).map(c => c.innerText)))""")
        assert len(tops) == 2 and all(len(t) >= 3 for t in tops)
        for t in tops:
            assert all(re.fullmatch(r"\d+(\.\d)? %", row[1]) for row in t), t
        names = [row[0] for row in tops[1]]
        assert names == [f.name for f in view.perf.profiles[1].kernel]
        stat = page.evaluate("document.querySelector('table.perf-stat').innerText")
        assert "naive" in stat and "sockmap" in stat
    finally:
        b.close()


@pytest.mark.e2e
@pytest.mark.privileged
def test_a_host_without_perf_runs_and_the_report_says_why(tmp_path, use_cache, no_leftovers, monkeypatch):
    """PATH without perf (every other program linked into a private directory): the run completes,
    the counts are there (the CPU sampler needs no perf binary), the profile sample says perf is
    missing, and the report's section says so instead of a profile."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for d in ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"):
        if not os.path.isdir(d):
            continue
        for name in os.listdir(d):
            if name.startswith("perf") or (bindir / name).exists():
                continue
            (bindir / name).symlink_to(os.path.join(d, name))
    monkeypatch.setenv("PATH", str(bindir))
    (tmp_path / "s.yaml").write_text(PROFILE_SCENARIO.replace("256MiB", "8MiB").replace("[naive, sockmap]", "[naive]"))
    res = commands.run(paths(tmp_path), str(tmp_path / "s.yaml"), log=lambda m: None, progress_stream=io.StringIO())
    assert res.status == "complete"
    samples = results.load_samples(res.run_dir)
    assert (samples["status"] == "ok").all()
    assert (samples["perf_server_syscalls"] > 0).all()
    measured, profile = samples[samples["phase"] == "measured"], samples[samples["phase"] == "profile"]
    assert measured["perf_note"].isna().all()
    assert all(str(n).startswith("perf is not installed (Debian package linux-perf") for n in profile["perf_note"])
    html = res.report.read_text()
    assert "no profile for naive" in html and "perf is not installed" in html
    assert "svg class=\"flame-graph\"" not in html and 'class="perf-stat"' in html


@pytest.mark.unit
def test_data_path_keeps_its_programs_and_interrupt_work_on_top_of_others():
    k = perf.KERNEL_SUFFIX
    folded = {f"sb-echo-naive;read;ksys_read{k}": 2, "python3;eval": 3,
              f"python3;eval;asm_common_interrupt{k};handle_softirqs{k};net_rx_action{k}": 1,
              f"swapper;do_idle{k};default_idle{k}": 5,
              f"swapper;do_idle{k};irq_exit_rcu{k};handle_softirqs{k};sk_psock_verdict_recv{k}": 4,
              f"kworker/0:1;process_one_work{k};sk_psock_backlog{k}": 6}
    assert set(perf.busy(folded)) == set(folded) - {f"swapper;do_idle{k};default_idle{k}"}
    kept = perf.data_path(folded)
    assert sorted(kept.values()) == [1, 2, 4, 6]  # not python3's own work, not the idle loop
    assert f"python3;eval;asm_common_interrupt{k};handle_softirqs{k};net_rx_action{k}" in kept
    top = perf.top_functions(perf.data_path(folded), kernel=True)
    assert [t.name for t in top[:2]] == ["sk_psock_backlog", "sk_psock_verdict_recv"]
    assert top[0].self_share == pytest.approx(6 / 13)


@pytest.mark.unit
def test_fold_leaves_out_other_runs_of_the_server_programs():
    text = ("sb-echo-naive 11 \n\tffffffff81000000 ksys_read+0x1 ([kernel.kallsyms])\n\n"
            "sb-echo-naive 99 \n\tffffffff81000000 ksys_read+0x1 ([kernel.kallsyms])\n\n"
            "nginx 98 \n\t55d0c0 ngx_process_events (/usr/sbin/nginx)\n\n"
            "sb-client 12 \n\t4010 main (/x/sb-client)\n\n"
            "ksoftirqd/0 16 \n\tffffffff81000010 net_rx_action ([kernel.kallsyms])\n\n")
    k = perf.KERNEL_SUFFIX
    assert perf.fold(text, servers=[11]) == {f"sb-echo-naive;ksys_read{k}": 1, "sb-client;main": 1,
                                             f"ksoftirqd/0;net_rx_action{k}": 1}
    assert perf.fold(text)[f"sb-echo-naive;ksys_read{k}"] == 2


@pytest.mark.unit
@pytest.mark.parametrize("uid, caps, paranoid, ok, says", [
    (0, {}, "2", True, "host-wide and per process (root)"),
    (1000, {"CAP_PERFMON": True}, "2", False, "cannot count system calls where tracefs is root's only"),
    (1000, {}, "2", False, "cannot count host-wide counts, per-process counts, system calls"),
    (1000, {}, "1", False, "cannot count host-wide counts, system calls"),
    (1000, {}, "0", False, "cannot count system calls where tracefs is root's only (kernel.perf_event_paranoid=0"),
])
def test_check_says_what_the_sampler_can_count(uid, caps, paranoid, ok, says):
    f = {"uid": uid, "capabilities": caps, "sysctls": {"kernel.perf_event_paranoid": paranoid},
         "perf": {"why_not": None}}
    (counts_ok, what, detail), profiles = facts.perf_check(f)
    assert what == "perf counts" and counts_ok is ok and says in detail
    assert profiles == (True, "perf profiles", "perf record -a (profile: true)")


def test_check_has_the_perf_rows_of_this_host():
    rows = {what: (status, detail) for status, what, detail in commands.check(commands.Paths.of(REPO))}
    assert rows["perf counts"] == ("ok", "system calls, context switches, CPU migrations, host-wide and per "
                                         "process (root)")
    assert rows["perf profiles"] == ("ok", "perf record -a (profile: true)")
