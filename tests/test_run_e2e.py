"""End-to-end runs with the real programs over loopback: results, report, failures recorded, no
process left behind after a failing client, a crashing server, a stop on failure, Ctrl-C or SIGTERM."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest
from progs import descendants

from splicebench.cli import commands
from splicebench.results import rundir as results
from splicebench.hosts.local import LocalHost

pytestmark = [pytest.mark.e2e, pytest.mark.privileged]
REPO = Path(__file__).resolve().parents[1]


def scenario_file(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "scenario.yaml"
    p.write_text(text)
    return p


def paths(tmp_path: Path) -> commands.Paths:
    return commands.Paths.of(REPO, str(tmp_path / "results"), str(tmp_path / "reports"))


def one_run(tmp_path: Path) -> Path:
    runs = results.list_runs(tmp_path / "results")
    assert len(runs) == 1, runs
    assert [p.name for p in (tmp_path / "results").iterdir() if p.name.startswith(".")] == []
    return runs[0]


def running(cache_dir: Path, name: str) -> list[int]:
    host = LocalHost()
    out = []
    for pid in host.pids_with_exe_under(str(cache_dir)):
        try:
            if os.path.basename(os.readlink(f"/proc/{pid}/exe")) == name:
                out.append(pid)
        except OSError:  # exited meanwhile
            pass
    return out


def wait_for(cond, timeout: float = 60.0, step: float = 0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(step)
    raise AssertionError("condition not reached")


def test_loopback_run_end_to_end(tmp_path, use_cache, no_leftovers):
    p = scenario_file(tmp_path, "name: e2e\ndescription: three servers, 4 MiB\nservers: [naive, splice, sockmap]\n"
                                "workload: {type: stream, bytes: 4MiB}\nrepetitions: {warmup: 1, measured: 2}\n"
                                "timeout: 30s\n")
    progress = io.StringIO()
    res = commands.run(paths(tmp_path), str(p), log=lambda m: None, progress_stream=progress)
    run = one_run(tmp_path)
    assert res.run_dir == run and res.status == "complete" and res.counts == {"ok": 9}

    m = json.loads((run / "manifest.json").read_text())
    assert m["format"] == 2 and m["status"] == "complete" and m["run_id"] == run.name
    assert m["scenario"]["name"] == "e2e" and m["scenario_text"] == p.read_text()
    assert m["tool"]["version"] and m["tool"]["git_revision"]
    local = m["hosts"]["local"]
    assert local["kernel"] == os.uname().release and local["arch"] == os.uname().machine
    assert local["cpu_count"] == os.cpu_count() and local["hostname"]
    assert local["bpf"]["bpftool_probe"]["map_sockhash"] is True
    assert "net.ipv4.tcp_rmem" in local["sysctls"]
    assert m["build"]["local"]["built"] is False  # the session already built these sources
    # When each step before the first sample ended, in order, all before the run's start; the report's
    # libraries finished loading during the warm-up round, before the first measured sample started.
    # Both at millisecond resolution: ISO timestamps truncated, phases rounded, hence 2 ms of slack.
    phases = m["phases"]
    steps = ["run_called", "validated", "preflight_done", "hosts_prepared"]
    assert list(phases) == [*steps, "report_imported", "report_wait_s"]
    started = datetime.fromisoformat(m["started_at"].replace("Z", "+00:00")).timestamp()
    assert [phases[k] for k in steps] == sorted(phases[k] for k in steps) and phases["hosts_prepared"] <= started + 0.002
    assert 0 <= phases["report_wait_s"] <= phases["report_imported"] - started + 0.002

    df = pd.read_csv(run / "samples.csv")
    first_measured = df[df["phase"] == "measured"]["started_at"].min()
    assert phases["report_imported"] <= datetime.fromisoformat(first_measured.replace("Z", "+00:00")).timestamp() + 0.002
    assert len(df) == 9 and set(df["status"]) == {"ok"}
    assert list(df["sample_id"]) == m["plan"]["order"]
    assert list(df["server"]) == ["naive", "splice", "sockmap"] * 3
    assert list(df["phase"]) == ["warmup"] * 3 + ["measured"] * 6
    assert (df["bytes_verified"] == 4 << 20).all() and (df["server_bytes_in"] == 4 << 20).all()
    assert (df["goodput_bytes_per_s"] > 0).all() and (df["host_cpu_busy_unc_s"] > 0).all() and (df["server_cpu_s"] > 0).all()
    for files in df["raw_files"]:
        names = files.split()
        assert any(n.endswith(".client.json") for n in names) and any(n.endswith(".server.jsonl") for n in names)
        for n in names:
            assert (run / n).is_file()
        client = json.loads((run / [n for n in names if n.endswith(".client.json")][0]).read_text())
        assert client["ok"] is True

    page = res.report.read_text()
    # Headline and CPU charts; 2 stream samples per server hold too few latencies for a percentile chart,
    # which the report says instead of drawing one.
    assert res.report.parent == tmp_path / "reports" and page.count("<svg") == 2
    assert "No latency percentile chart: every group has fewer than 10" in page
    for s in ("naive", "splice", "sockmap", run.name):
        assert s in page
    assert "sockmap" in res.table and "vs naive" in res.table
    out = progress.getvalue()
    assert "[1/9]" in out and "[9/9]" in out and "ETA" in out and "measured 2/2" in out


def test_failed_client_is_recorded_and_the_run_goes_on(tmp_path, use_cache, no_leftovers):
    # The first cell cannot finish 10 million round trips within the 1 s deadline; the second can.
    p = scenario_file(tmp_path, "servers: [naive, splice]\nworkload: {type: pingpong}\n"
                                "matrix: {round_trips: [10000000, 100]}\nrepetitions: {warmup: 0, measured: 1}\n"
                                "timeout: 1s\n")
    res = commands.run(paths(tmp_path), str(p), log=lambda m: None, progress_stream=io.StringIO())
    df = pd.read_csv(one_run(tmp_path) / "samples.csv")
    assert list(df["status"]) == ["failed", "failed", "ok", "ok"]
    assert res.counts == {"failed": 2, "ok": 2} and res.status == "complete"
    for err in df["error"][:2]:
        assert err.startswith("client on local: exit code 1; connection 0: timeout at offset")
    assert res.report.is_file()


def test_stop_on_failure_skips_the_rest(tmp_path, use_cache, no_leftovers):
    p = scenario_file(tmp_path, "servers: [naive, splice]\nworkload: {type: pingpong, round_trips: 10000000}\n"
                                "repetitions: {warmup: 0, measured: 2}\ntimeout: 0.5s\nstop_on_failure: true\n")
    res = commands.run(paths(tmp_path), str(p), log=lambda m: None, progress_stream=io.StringIO())
    run = one_run(tmp_path)
    df = pd.read_csv(run / "samples.csv")
    assert list(df["status"]) == ["failed", "skipped", "skipped", "skipped"]
    assert df["error"][1] == "not run: stopped after sample 0001-c0-naive-m1 failed (stop_on_failure)"
    m = json.loads((run / "manifest.json").read_text())
    assert m["status"] == "stopped" and res.status == "stopped"
    assert m["counts"] == {"failed": 1, "skipped": 3}


def test_server_crash_mid_sample(tmp_path, use_cache, cache_dir, no_leftovers):
    # Cell 0 runs long enough for the killer to find its server while the client is talking to it.
    p = scenario_file(tmp_path, "servers: [naive]\nworkload: {type: pingpong}\n"
                                "matrix: {round_trips: [5000000, 100]}\nrepetitions: {warmup: 0, measured: 1}\n"
                                "timeout: 60s\n")
    killed = []

    def killer():
        try:
            server = wait_for(lambda: running(cache_dir, "sb-echo-naive"))[0]
            wait_for(lambda: running(cache_dir, "sb-client"))
            time.sleep(0.2)
            os.kill(server, signal.SIGKILL)
            killed.append(server)
        except AssertionError:
            pass

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    res = commands.run(paths(tmp_path), str(p), log=lambda m: None, progress_stream=io.StringIO())
    t.join(30)
    assert killed, "the killer never saw the server"
    df = pd.read_csv(one_run(tmp_path) / "samples.csv")
    assert list(df["status"]) == ["failed", "ok"]
    assert df["server_pid"][0] == killed[0]
    assert "server was killed by SIGKILL during the sample" in df["error"][0]
    assert "client on local:" in df["error"][0]
    assert res.counts == {"failed": 1, "ok": 1}


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupt_stops_everything_and_keeps_what_was_done(tmp_path, use_cache, cache_dir, no_leftovers, sig):
    p = scenario_file(tmp_path, "servers: [naive, splice]\nworkload: {type: pingpong}\n"
                                "matrix: {round_trips: [100, 5000000]}\nrepetitions: {warmup: 0, measured: 1}\n"
                                "timeout: 60s\n")
    # faulthandler: should the run hang after the signal, SIGABRT makes it print every thread's stack.
    env = {**os.environ, "SPLICEBENCH_CACHE": str(cache_dir), "PYTHONFAULTHANDLER": "1"}
    cmd = [sys.executable, "-m", "invoke", "-r", str(REPO), "run", "--scenario", str(p), "--no-provision",
           "--results-dir", str(tmp_path / "results"), "--reports-dir", str(tmp_path / "reports")]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        # Interrupt while the long sample's client and server are running.
        wait_for(lambda: running(cache_dir, "sb-client") and len(list((tmp_path / "results").glob(
            ".tmp-*/raw/*.client.json"))) >= 2)
        proc.send_signal(sig)
        try:
            out, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            tree = "".join(f"{pid} {comm} {state}\n" for pid, comm, state in descendants(proc.pid))
            proc.send_signal(signal.SIGABRT)
            out, err = proc.communicate(timeout=30)
            pytest.fail(f"the run did not end within 60 s of {signal.Signals(sig).name}; the processes under it:\n{tree}"
                        f"its stacks (SIGABRT):\n{err[-8000:]}")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, err
    run = one_run(tmp_path)
    assert f"interrupted: partial results in {run}" in err
    m = json.loads((run / "manifest.json").read_text())
    assert m["status"] == "interrupted"
    df = pd.read_csv(run / "samples.csv")
    assert list(df["status"]) == ["ok", "ok", "interrupted", "skipped"]
    assert df["error"][2] == f"interrupted ({signal.Signals(sig).name})"
    assert df["error"][3] == "not run: the run was interrupted"
    assert m["counts"] == {"interrupted": 1, "ok": 2, "skipped": 1}


class BusyRoundTripHost(LocalHost):
    """A fake for a remote host's command latency (this machine, so the test needs no guest): every
    command, file read and program start first keeps a CPU busy for BUSY_S, as sshd and the shell
    do for each round trip to an emulated or slow host. It burns CPU outside the clients' transfer."""

    BUSY_S = 0.25

    def _busy(self) -> None:
        end = time.thread_time() + self.BUSY_S
        while time.thread_time() < end:
            pass

    def run(self, argv, **kw):
        self._busy()
        return super().run(argv, **kw)

    def read_text(self, path):
        self._busy()
        return super().read_text(path)

    def start(self, argv, **kw):
        self._busy()
        return super().start(argv, **kw)


def test_busy_command_round_trips_stay_out_of_the_cpu_figures(tmp_path, use_cache, no_leftovers, monkeypatch):
    from splicebench.run import fleet

    text = ("servers: [naive]\nworkload: {type: stream, bytes: 64MiB}\n"
            "repetitions: {warmup: 0, measured: 3}\n")
    runs = {}
    for name, host in (("plain", LocalHost), ("busy", BusyRoundTripHost)):
        monkeypatch.setattr(fleet, "open_host", lambda n, inv, host=host: host())
        d = tmp_path / name
        d.mkdir()
        res = commands.run(paths(d), str(scenario_file(d, text)), log=lambda m: None, progress_stream=io.StringIO())
        assert res.status == "complete"
        runs[name] = pd.read_csv(one_run(d) / "samples.csv")
    plain, busy = runs["plain"], runs["busy"]
    # Each busy sample had several busy round trips (at least start server, sampler, client, stop):
    # a window from before the starts to after the stop would hold at least BUSY_S x 3 of it.
    assert (busy["duration_s"] - busy["wall_s"]).min() > 3 * BusyRoundTripHost.BUSY_S
    # A window holding one busy round trip would hold BUSY_S more host CPU; a fifth of it covers what
    # the machine's other work moves a 64 MiB sample's figures by (server CPU: 0.02 s here, once 0.055 s).
    for col in ("host_cpu_busy_s", "server_cpu_s"):
        margin = (plain[col].median() * 0.5 + plain[f"{col[:-2]}_unc_s"].max() + busy[f"{col[:-2]}_unc_s"].max()
                  + BusyRoundTripHost.BUSY_S / 5)
        assert busy[col].median() <= plain[col].median() + margin, (col, list(plain[col]), list(busy[col]))
    assert busy["host_cpu_busy_s"].max() < BusyRoundTripHost.BUSY_S  # not even one round trip inside


def test_the_cpu_sampler_watches_the_pid_the_server_names(tmp_path, use_cache, no_leftovers):
    """The sampler starts beside a local server, watching the pid it was started with; a server
    whose ready line names another pid (here a wrapper that runs the real server as its child)
    gets a sampler watching that pid instead, and nothing of the first one is left."""
    from splicebench import scenario
    from splicebench.run.runner import Runner
    from splicebench.scenario.plan import build_plan

    real = Path(use_cache.dir)
    wrapped = tmp_path / "bin"
    wrapped.mkdir()
    for name in ("sb-client", "sb-cpustat"):
        (wrapped / name).symlink_to(real / name)
    wrapper = wrapped / "sb-echo-naive"
    wrapper.write_text(f"""#!/bin/sh
echo $$ >> {tmp_path}/wrapper.pids
env -u SPLICEBENCH_PARENT_PID {real}/sb-echo-naive "$@" &
child=$!
trap 'kill -TERM $child; wait $child; exit $?' TERM
wait $child
""")
    wrapper.chmod(0o755)
    sc = scenario.parse("name: watched\nservers: [naive]\nworkload: {type: stream, bytes: 4MiB}\n"
                        "repetitions: {warmup: 0, measured: 2}\n", "<test>")
    hosts = {"local": LocalHost()}
    try:
        for bins, wrapped_server in ((real, False), (wrapped, True)):
            done: list[tuple[dict, dict]] = []
            outcome = Runner(hosts, {"local": str(bins)}, run_id="test",
                             on_sample=lambda s, row, raw, done=done: done.append((row, raw))).run(build_plan(sc))
            rows, raws = [r for r, _ in done], [raw for _, raw in done]
            assert outcome.status == "complete" and [r["status"] for r in rows] == ["ok", "ok"], rows
            for row, raw in zip(rows, raws):
                summary = json.loads(raw["cpustat.json"].strip().splitlines()[-1])
                assert summary["groups"][0][0] == row["server_pid"]
                assert row["server_cpu_s"] is not None and row["server_cpu_s"] > 0
            if wrapped_server:
                started = [int(x) for x in (tmp_path / "wrapper.pids").read_text().split()]
                assert len(started) == 2 and not set(started) & {r["server_pid"] for r in rows}
    finally:
        hosts["local"].close()


def test_the_run_holds_the_system_call_tracepoint_on_the_server_host_throughout(tmp_path, use_cache, no_leftovers,
                                                                                monkeypatch):
    started = []
    real = LocalHost.start

    def start(self, argv, **kw):
        p = real(self, argv, **kw)
        started.append((list(argv), p))
        return p

    monkeypatch.setattr(LocalHost, "start", start)
    p = scenario_file(tmp_path, "servers: [naive, splice]\nworkload: {type: stream, bytes: 4MiB}\n"
                                "repetitions: {warmup: 0, measured: 2}\n")
    res = commands.run(paths(tmp_path), str(p), log=lambda m: None, progress_stream=io.StringIO(), report=False)
    assert res.status == "complete"
    holders = [(argv, proc) for argv, proc in started if "--hold" in argv]
    samplers = [i for i, (argv, _) in enumerate(started) if argv[0].endswith("sb-cpustat") and "--hold" not in argv]
    assert len(holders) == 1 and len(samplers) == 4
    (argv, holder), = holders
    assert started.index((argv, holder)) < samplers[0]  # before the first sample's sampler
    assert holder.poll() == 0  # stopped with SIGTERM at the run's end, exited cleanly
    assert json.loads(holder.stdout().splitlines()[0])["holding"] is True
