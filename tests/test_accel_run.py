"""`invoke run` with `accelerate: [none, sk_msg]` on this machine: every proxy and peer byte-exact
both ways with the acceleration's counters in samples.csv, and no cgroup, attached program or map
left after a run, after Ctrl-C, and after SIGKILL of the orchestrator followed by `invoke clean`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from splicebench.cli import commands
from splicebench.programs import accel
from tests.test_run_e2e import REPO, one_run, paths, running, scenario_file, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.privileged]


def accel_cgroups() -> set[str]:
    mount = accel.cgroup2_mount(Path("/proc/self/mountinfo").read_text())
    assert mount
    return {str(p) for p in Path(mount).glob(f"{accel.CGROUP_PREFIX}*")}


def attached_anywhere(name: str) -> bool:
    mount = accel.cgroup2_mount(Path("/proc/self/mountinfo").read_text())
    tree = subprocess.run(["bpftool", "cgroup", "tree", mount], capture_output=True, text=True, timeout=30)
    return name in tree.stdout


def test_proxies_and_peers_byte_exact_with_and_without(tmp_path, use_cache, no_leftovers):
    before = accel_cgroups()
    p = scenario_file(tmp_path, "name: accel\nservers: [proxy-naive, proxy-uring, nginx, haproxy]\n"
                                "backend: {name: naive}\n"
                                "accelerate: [none, sk_msg]\nworkload: {type: stream, bytes: 2MiB, conns: 3}\n"
                                "repetitions: {warmup: 0, measured: 1}\ntimeout: 30s\n"
                                # Pinned too: taskset and the cgroup's shell both exec the program.
                                "cpus: {server: 0, backend: 1, client: 1}\n")
    res = commands.run(paths(tmp_path), str(p), log=lambda m: None)
    run = one_run(tmp_path)
    assert res.status == "complete" and res.counts == {"ok": 10}
    df = pd.read_csv(run / "samples.csv")
    assert list(df["server"]) == ["direct", "direct+sk_msg", "proxy-naive", "proxy-naive+sk_msg", "proxy-uring",
                                  "proxy-uring+sk_msg", "nginx",
                                  "nginx+sk_msg", "haproxy", "haproxy+sk_msg"]
    assert (df["bytes_verified"] == 3 * (2 << 20)).all()
    plain, fast = df[df["accelerate"] == "none"], df[df["accelerate"] == "sk_msg"]
    assert plain["accel_sockets"].isna().all() and (fast["accel_hosts"] == "local").all()
    # Client <-> proxy and proxy <-> backend: 4 sockets and 4 directions a connection (2 without a proxy).
    legs = fast["server"].map(lambda s: 1 if s.startswith("direct") else 2)
    assert (fast["accel_sockets"] == 2 * 3 * legs).all()
    assert (fast["accel_dirs_redirected"] + fast["accel_dirs_tcp_early"] == 2 * 3 * legs).all()
    full = fast[fast["accel_dirs_tcp_early"] == 0]
    assert (full["accel_bytes"] == 2 * 3 * (2 << 20) * legs[full.index]).all()
    assert (fast["accel_redirect_failed"] == 0).all()
    names = " ".join(fast["raw_files"])
    assert "accel-local.jsonl" in names
    assert accel_cgroups() == before
    page = res.report.read_text()
    assert "SOCKMAP acceleration (sk_msg): with and without, side by side" in page
    for server, dirs in (("direct", 6), ("proxy-naive", 12), ("proxy-uring", 12), ("nginx", 12), ("haproxy", 12)):
        assert f"{server} <span class=\"ci\">vs {server}+sk_msg</span>" in page
        early = int(fast.loc[fast["server"] == f"{server}+sk_msg", "accel_dirs_tcp_early"].sum())
        if not early:
            assert f"{server}+sk_msg: 100 % &mdash; {dirs} of {dirs} directions redirected from their first byte" in page


@pytest.mark.unit
def test_share_below_100_percent_says_why():
    from splicebench.report.accel_report import share_text

    grp = pd.DataFrame({"status": ["ok", "ok", "failed"], "accel_dirs_redirected": [1000, 997, None],
                        "accel_dirs_tcp_early": [0, 3, None], "accel_dirs_tcp_remote": [0, 0, None],
                        "accel_insert_failed": [0, 0, None], "accel_redirect_failed": [0, 0, None],
                        "accel_no_storage": [0, 0, None]})
    assert share_text(grp) == (
        "99.9 %", "1,997 of 2,000 directions redirected from their first byte; 3 direction(s) by TCP: the peer "
        "socket was not in the map yet at the first send (handshake not complete on the passive side); 1 "
        "sample(s) failed (listed under failures)")
    grp.loc[1, ["accel_dirs_redirected", "accel_dirs_tcp_early"]] = [1_999_999, 1]
    assert share_text(grp.iloc[1:2])[0] == "99.9 %"
    assert share_text(grp.iloc[:1]) == ("100 %", "1,000 of 1,000 directions redirected from their first byte")


def invoke_run(tmp_path: Path, cache_dir: Path, text: str) -> subprocess.Popen:
    p = scenario_file(tmp_path, text)
    env = {**os.environ, "SPLICEBENCH_CACHE": str(cache_dir)}
    cmd = [sys.executable, "-m", "invoke", "-r", str(REPO), "run", "--scenario", str(p), "--no-provision",
           "--results-dir", str(tmp_path / "results"), "--reports-dir", str(tmp_path / "reports")]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


LONG = ("servers: [naive]\naccelerate: [sk_msg]\nworkload: {type: pingpong, round_trips: 50000000}\n"
        "repetitions: {warmup: 0, measured: 1}\ntimeout: 120s\n")


def loader_of_running_sample(cache_dir: Path) -> tuple[int, str]:
    """The running sb-accel's pid and cgroup, once the sample's client runs inside it."""
    pid = wait_for(lambda: (running(cache_dir, "sb-accel") or [None])[0])
    cg = wait_for(lambda: next((c for c in accel_cgroups() if c.rsplit("/", 1)[1].startswith(
        f"{accel.CGROUP_PREFIX}{pid}-")), None))
    wait_for(lambda: running(cache_dir, "sb-client"))
    return pid, cg


def test_ctrl_c_leaves_no_cgroup_program_or_map(tmp_path, use_cache, cache_dir, no_leftovers):
    proc = invoke_run(tmp_path, cache_dir, LONG)
    try:
        pid, cg = loader_of_running_sample(cache_dir)
        held = {("prog", i) for k, i in _bpf(pid) if k == "prog"}
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, err
    assert not os.path.exists(cg) and not attached_anywhere(cg.rsplit("/", 1)[1])
    from tests.progs import bpf_id_exists, wait_until

    assert held and wait_until(lambda: not any(bpf_id_exists(k, i) for k, i in held), 30)
    df = pd.read_csv(one_run(tmp_path) / "samples.csv")
    assert list(df["status"]) == ["interrupted"]


def _bpf(pid: int):
    from tests.progs import bpf_ids

    return bpf_ids(pid)


def test_sigkill_then_clean_leaves_nothing(tmp_path, use_cache, cache_dir, no_leftovers, monkeypatch):
    proc = invoke_run(tmp_path, cache_dir, LONG)
    try:
        pid, cg = loader_of_running_sample(cache_dir)
        held = _bpf(pid)
        os.kill(proc.pid, signal.SIGKILL)  # the orchestrator only: its programs die of their parent-death signal
        proc.wait()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    from tests.progs import bpf_id_exists, wait_until

    # The loader died with its descriptors: nothing attached, its maps and programs freed; only the empty
    # cgroup directory stays, for `invoke clean`.
    assert wait_until(lambda: not running(cache_dir, "sb-accel") and not running(cache_dir, "sb-client"), 30)
    assert wait_until(lambda: not any(bpf_id_exists(k, i) for k, i in held), 30), held
    assert os.path.isdir(cg) and not attached_anywhere(cg.rsplit("/", 1)[1])
    monkeypatch.setenv("SPLICEBENCH_CACHE", str(tmp_path / "other-cache"))  # keep the session's build
    report = commands.clean(commands.Paths.of(tmp_path, str(tmp_path / "results")))
    assert cg in report.cgroups and f"removed acceleration cgroup {cg}" in report.lines()
    assert not os.path.exists(cg)


def test_run_without_cgroup2_is_refused_before_anything_runs(tmp_path, use_cache, cache_dir):
    # `invoke run` in a mount namespace without any cgroup2 mount: one line naming the host and what is
    # missing, exit 1, no results directory.
    p = scenario_file(tmp_path, "servers: [naive]\naccelerate: [none, sk_msg]\nworkload: {type: stream, bytes: 1MiB}\n")
    script = ('for m in $(awk \'$0 ~ / - cgroup2 / {print $5}\' /proc/self/mountinfo | sort -r); do '
              'umount -l "$m" || exit 3; done; exec "$@"')
    cmd = [sys.executable, "-m", "invoke", "-r", str(REPO), "run", "--scenario", str(p), "--no-provision",
           "--results-dir", str(tmp_path / "results"), "--reports-dir", str(tmp_path / "reports")]
    r = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *cmd],
                       env={**os.environ, "SPLICEBENCH_CACHE": str(cache_dir)}, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 1, r.stderr
    assert ("host local: accelerate sk_msg needs a cgroup2 mount, /proc/self/mountinfo has none: mount one "
            "(mount -t cgroup2 none DIR) or run with accelerate: [none]") in r.stderr.splitlines()
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").iterdir())


def test_check_has_the_acceleration_row():
    rows = {what: (status, detail) for status, what, detail in commands.check(commands.Paths.of(REPO))}
    mount = accel.cgroup2_mount(Path("/proc/self/mountinfo").read_text())
    assert rows["SOCKMAP acceleration"] == ("ok", f"cgroup2 at {mount}, sockops and sk_msg programs load")



@pytest.mark.parametrize("workload", ["{type: latency-under-load, conns: 2, bulk_conns: 2, round_trips: 200}",
                                      "{type: crr, conns: 2, transactions: 50}"])
def test_loaded_and_crr_accelerated_with_perf_and_a_profile_round(tmp_path, use_cache, no_leftovers, workload):
    """Every client of latency-under-load (the bulk streams too) runs inside the loader's cgroup, so
    all its sockets are in the sockmap, as are crr's short connections; perf stat counts, and the
    profile round (one per server, the accelerated one included) stays out of the statistics."""
    before = accel_cgroups()
    p = scenario_file(tmp_path, f"name: accel-w\nservers: [naive]\naccelerate: [none, sk_msg]\nworkload: {workload}\n"
                                "profile: true\nrepetitions: {warmup: 0, measured: 1}\ntimeout: 60s\n")
    res = commands.run(paths(tmp_path), str(p), log=lambda m: None)
    df = pd.read_csv(one_run(tmp_path) / "samples.csv")
    assert res.status == "complete" and (df["status"] == "ok").all(), df["error"].tolist()
    assert list(df["phase"]) == ["measured", "measured", "profile", "profile"]
    assert list(df["server"]) == ["naive", "naive+sk_msg"] * 2
    fast = df[df["accelerate"] == "sk_msg"]
    if "latency-under-load" in workload:
        # Ping-pong alone (2), loaded (2) and the bulk streams (2): 6 connections, both their ends.
        assert (fast["accel_sockets"] == 2 * 6).all()
        assert (df["bulk_bytes_verified"] > 0).all() and (df["unloaded_lat_count"] > 0).all()
    else:
        assert (fast["accel_sockets"] == 2 * 50).all()
    assert (fast["accel_redirect_failed"] == 0).all()
    measured = df[df["phase"] == "measured"]
    assert (measured["perf_server_syscalls"] > 0).all() and measured["perf_note"].isna().all()
    assert accel_cgroups() == before
