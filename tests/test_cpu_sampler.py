"""CPU figures of real programs over real transfers: sb-cpustat beside a test server that burns a
known CPU time (tests/burn_echo.py), sb-client's marks, results/cpu.py's window.

Tolerances: a figure must contain the truth within its uncertainty plus 20 % + 50 ms for the
echo work of the Python test server itself, which is not part of the burn."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from progs import binary, kill_group, running_server, wait_until
from splicebench.report import format as fmt
from splicebench.results import cpu, perf

pytestmark = [pytest.mark.e2e]
TESTS = Path(__file__).resolve().parent
MIB = 1 << 20


@contextmanager
def burn_server(*args: str):
    p = subprocess.Popen([sys.executable, str(TESTS / "burn_echo.py"), *args], stdout=subprocess.PIPE,
                         text=True, start_new_session=True)
    try:
        ready = json.loads(p.stdout.readline())
        yield p, ready
    finally:
        kill_group(p)


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100


def transfer(ready: dict, nbytes: int, **kw) -> tuple[cpu.SampleCpu, dict]:
    """sampled(), then the CPU figures over the client's marks: (figures, client JSON)."""
    readings, client = sampled(ready, nbytes, **kw)
    return cpu.sample_cpu(readings, *cpu.marks([client])), client


def sampled(ready: dict, nbytes: int, *, server: subprocess.Popen | None = None, before: float = 0.0,
            after: float = 0.0, usr1: bool = False, prefix: tuple[str, ...] = (), conns: int = 1) -> tuple[cpu.Readings, dict]:
    """Sampler started (behind `prefix`, e.g. setpriv), (SIGUSR1 to the server and wait for its burn), `before` s
    of waiting (an orchestrator's round trip), the client, `after` s, sampler stopped: (its
    readings, client JSON)."""
    s = subprocess.Popen([*prefix, str(binary("cpustat")), "--pid", str(ready["pid"])], stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        json.loads(s.stdout.readline())
        if usr1:
            assert server is not None
            c0 = proc_cpu_s(ready["pid"])
            server.send_signal(signal.SIGUSR1)
            assert wait_until(lambda: proc_cpu_s(ready["pid"]) - c0 >= 0.25, 30)
        time.sleep(before)  # a fake for command latency: what an SSH round trip adds
        out = subprocess.run([str(binary("client")), "--connect", f"127.0.0.1:{ready['port']}", "--workload",
                              "stream", "--bytes", str(nbytes), "--conns", str(conns)], capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        client = json.loads(out.stdout)
        time.sleep(after)
        s.send_signal(signal.SIGTERM)
        text, _ = s.communicate(timeout=30)
        assert s.returncode == 0
    finally:
        kill_group(s)
    return cpu.parse_cpustat(text), client


def server_summary(p: subprocess.Popen) -> dict:
    p.send_signal(signal.SIGTERM)
    out, _ = p.communicate(timeout=30)
    return json.loads(out.strip().splitlines()[-1])


def test_cpu_burned_during_the_transfer_is_measured(no_leftovers):
    with burn_server("--per-mib", "0.02") as (p, ready):
        figs, _ = transfer(ready, 32 * MIB)
        truth = server_summary(p)["burned_in_transfer_s"]
    f = figs.groups[0]["cpu"]
    print(f"burned {truth:.3f} s, measured {f.value:.4f} +- {f.unc:.4f} s")
    assert truth >= 0.6
    assert truth - f.unc <= f.value <= truth * 1.2 + 0.05 + f.unc
    # the host figure holds the server's burn too (and the client's work)
    assert figs.host["busy"].value + figs.host["busy"].unc >= truth


def thread_cpu_s(pid: int) -> dict[int, tuple[str, float]]:
    """(name, user + system CPU in s) of every thread of process pid now (clock ticks)."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            out[int(task.name)] = ((task / "comm").read_text().strip(), (int(fields[11]) + int(fields[12])) / 100)
        except (FileNotFoundError, ProcessLookupError):
            continue  # the thread exited meanwhile
    return out


def test_io_uring_worker_threads_count_as_server_cpu(no_leftovers):
    """sb-echo-uring --mode splice: the kernel runs each IORING_OP_SPLICE in an io-wq worker thread
    (iou-wrk-PID), a thread of the server process (they idle for seconds before they exit). The
    server's figure holds their CPU as well as the main thread's."""
    with running_server("uring-splice") as srv:
        figs, _ = transfer(srv.ready, 256 * MIB)
        threads = thread_cpu_s(srv.pid)
    main = threads[srv.pid][1]
    workers = sum(c for name, c in threads.values() if name.startswith("iou-wrk-"))
    f = figs.groups[0]["cpu"]
    print(f"server {f.value:.3f} +- {f.unc:.3f} s; main thread {main:.2f} s, io-wq workers {workers:.2f} s "
          f"({sorted(name for name, _ in threads.values())})")
    assert any(name.startswith("iou-wrk-") for name, _ in threads.values()), threads
    assert workers >= 0.03  # the splices ran there
    # Without the workers the figure would be about `main`; ticks of 10 ms per thread, hence 0.03 s.
    assert f.value + f.unc + 0.03 >= main + workers
    assert f.value - f.unc <= 1.3 * (main + workers) + 0.03


def test_worker_processes_count_as_server_cpu(no_leftovers):
    """sb-echo-naive --workers 3 --processes: the workers are child processes, forked before the ready
    line, so the sampler (which takes a --pid's descendants when it starts) counts their CPU."""
    with running_server("naive", "--workers", "3", "--processes") as srv:
        figs, _ = transfer(srv.ready, 64 * MIB, conns=12)
        assert srv.stop() == 0
    workers = [w["cpu_user_s"] + w["cpu_sys_s"] for w in srv.summary["workers"]]
    total = srv.summary["cpu_user_s"] + srv.summary["cpu_sys_s"]  # the main process and its reaped workers
    f = figs.groups[0]["cpu"]
    print(f"server {f.value:.3f} +- {f.unc:.3f} s; worker processes {[round(w, 3) for w in workers]} s, "
          f"summary {total:.3f} s")
    assert all(w["connections"] > 0 for w in srv.summary["workers"])
    assert sum(workers) >= 0.05 and total >= sum(workers)
    # The main process only waits: without its workers the figure would be about 0. Ticks of 10 ms per
    # process, hence 0.01 s each.
    assert f.value + f.unc + 0.04 >= sum(workers)
    assert f.value - f.unc <= 1.3 * total + 0.04


def test_cpu_burned_before_and_after_the_transfer_is_left_out(no_leftovers):
    with burn_server("--outside", "0.3") as (p, ready):
        figs, client = transfer(ready, 8 * MIB, server=p, usr1=True, after=0.5)
        # the burn after EOF ran while the sampler was still reading
        total = proc_cpu_s(ready["pid"])
    f = figs.groups[0]["cpu"]
    print(f"server total {total:.2f} s (0.6 s burned outside), in the window {f.value:.4f} +- {f.unc:.4f} s")
    assert total >= 0.55
    assert f.value + f.unc < 0.15


def test_slow_command_round_trips_do_not_inflate_the_figures(no_leftovers):
    with burn_server("--per-mib", "0.01") as (p, ready):
        quick, _ = transfer(ready, 16 * MIB)
        slow, client = transfer(ready, 16 * MIB, before=0.3, after=0.3)
    w = (client["end_realtime_ns"] - client["start_realtime_ns"]) / 1e9
    q, s = quick.groups[0]["cpu"], slow.groups[0]["cpu"]
    print(f"server CPU quick {q.value:.4f} +- {q.unc:.4f} s, with 300 ms round trips {s.value:.4f} +- {s.unc:.4f} s; "
          f"host busy {quick.host['busy'].value:.3f} vs {slow.host['busy'].value:.3f} s")
    # nothing of the 0.6 s of waiting enters: host busy stays within 2 CPUs x the transfer window
    assert slow.host["busy"].value - slow.host["busy"].unc <= 2 * w
    assert s.value <= q.value * 1.5 + 0.02 + s.unc


def test_short_samples_are_marked_uncertain_long_ones_are_not(no_leftovers):
    gib = 1 << 30
    with burn_server() as (_, ready):
        short, c_short = transfer(ready, 1 * MIB)
    with burn_server("--per-mib", "0.02") as (_, ready):
        long_, c_long = transfer(ready, 64 * MIB)
    fs = fmt.cpu_figure(short.host["busy"].value * gib / c_short["bytes_verified"],
                        short.host["busy"].unc * gib / c_short["bytes_verified"])
    fl = fmt.cpu_figure(long_.host["busy"].value * gib / c_long["bytes_verified"],
                        long_.host["busy"].unc * gib / c_long["bytes_verified"])
    print(f"host CPU per GiB: 1 MiB sample {fs.text} ({fs.title}), 64 MiB sample {fl.text} ({fl.title})")
    assert fs.uncertain and not fl.uncertain


# --- perf counts (system calls, context switches, migrations) ----------------------------------

GETPPID = 40  # extra system calls per chunk echoed
# Besides its getppid() calls, the Python test server makes a recv() and a send() or two per chunk,
# and the handler a few dozen calls to start (thread creation, fork, the pipe): the count must lie
# between the known calls and the known calls + 4 per chunk + 400.
PER_CHUNK, START = 4, 400


@pytest.mark.parametrize("handler", ["main", "thread", "fork"])
def test_system_calls_of_the_server_over_the_transfer_are_counted(handler, no_leftovers):
    """burn_echo.py makes GETPPID getppid() per chunk, all inside the transfer; with 'thread' and
    'fork' they are made by a thread or a process created after the sampler started watching the
    server (counted through inherit, like NGINX's workers and io_uring's iou-wrk threads)."""
    with burn_server("--getppid", str(GETPPID), "--handler", handler) as (p, ready):
        readings, client = sampled(ready, 32 * MIB)
        truth = server_summary(p)
    counts, notes = cpu.perf_counts(readings, *cpu.marks([client]))
    n, known = counts["server"]["raw_syscalls:sys_enter"], truth["extra_syscalls"]
    print(f"{handler}: {truth['chunks']} chunks, {known} getppid calls; counted {n.value:.0f} +- {n.unc:.0f} "
          f"system calls ({n.value / known:.3f}x), {counts['server']['context-switches'].value:.0f} context "
          f"switches; host {counts['host']['raw_syscalls:sys_enter']}")
    assert notes == [] and known == GETPPID * truth["chunks"] and truth["chunks"] >= 512
    assert known - n.unc <= n.value <= known + PER_CHUNK * truth["chunks"] + START + n.unc
    assert n.unc < 0.25 * known  # readings every 2 ms over a transfer of more than 30 ms
    row = perf.stat_row(counts, client["bytes_verified"])
    assert row["perf_server_syscalls_per_gib"] == pytest.approx(n.value * 32)
    assert row["perf_server_syscalls_unc"] == n.unc
    # the host's count holds the server's (and the client's), less the sampler's own calls
    h = counts["host"]["raw_syscalls:sys_enter"]
    assert h.value + h.unc >= n.value - n.unc
    assert counts["server"]["context-switches"].value > 0


def test_refused_perf_events_give_notes_and_the_cpu_figures_go_on(paranoid_2, no_leftovers):
    """sb-cpustat as nobody without capabilities, kernel.perf_event_paranoid=2: every event is refused;
    it says why, and its CPU readings are complete."""
    nobody = ("setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--inh-caps=-all")
    p = subprocess.Popen([*nobody, sys.executable, str(TESTS / "burn_echo.py")], stdout=subprocess.PIPE, text=True,
                         start_new_session=True)
    try:
        ready = json.loads(p.stdout.readline())
        readings, client = sampled(ready, 8 * MIB, prefix=nobody)
    finally:
        kill_group(p)
    counts, notes = cpu.perf_counts(readings, *cpu.marks([client]))
    text = "; ".join(notes)
    print(text)
    assert readings.perf_counted == {"self": [False] * 3, "host": [False] * 3, "groups": [[False] * 3]}
    assert all(v is None for scope in counts.values() for v in scope.values())
    assert "kernel.perf_event_paranoid=2" in text and "host-wide context-switches, cpu-migrations not counted" in text
    assert f"context-switches, cpu-migrations of --pid {ready['pid']} not counted" in text
    assert "system calls not counted" in text or "raw_syscalls:sys_enter of --pid" in text
    figs = cpu.sample_cpu(readings, *cpu.marks([client]))
    assert figs.groups[0]["cpu"].value > 0 and figs.host["busy"].value > 0
    row = perf.stat_row(counts, client["bytes_verified"])
    assert row["perf_server_syscalls"] is None and row["perf_host_ctxsw_per_gib"] is None


def test_without_tracefs_the_sampler_mounts_it_privately_and_stays_in_its_mount_namespace(no_leftovers):
    """A mount namespace without tracefs (as `ip netns exec` leaves a lab host): sb-cpustat mounts it in
    a namespace of its own to read the tracepoint's id, counts system calls, and runs in the namespace
    it was started in (hosts/ssh.py tells a host's programs by it), where no tracefs was left."""
    script = ('umount /sys/kernel/tracing 2>/dev/null; umount /sys/kernel/debug 2>/dev/null; '
              'readlink /proc/self/ns/mnt; exec "$@"')
    with burn_server("--getppid", "5") as (p, ready):
        s = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
                              str(binary("cpustat")), "--pid", str(ready["pid"])],
                             stdout=subprocess.PIPE, text=True, start_new_session=True)
        try:
            ns = s.stdout.readline().strip()
            json.loads(s.stdout.readline())
            assert os.readlink(f"/proc/{s.pid}/ns/mnt") == ns != os.readlink("/proc/self/ns/mnt")
            mounts = Path(f"/proc/{s.pid}/mountinfo").read_text()
            assert " - tracefs " not in mounts and " - debugfs " not in mounts
            out = subprocess.run([str(binary("client")), "--connect", f"127.0.0.1:{ready['port']}", "--workload",
                                  "stream", "--bytes", str(16 * MIB)], capture_output=True, text=True, timeout=120)
            assert out.returncode == 0, out.stderr
            s.send_signal(signal.SIGTERM)
            text, _ = s.communicate(timeout=30)
        finally:
            kill_group(s)
        truth = server_summary(p)
    readings = cpu.parse_cpustat(text)
    counts, notes = cpu.perf_counts(readings, *cpu.marks([json.loads(out.stdout)]))
    assert notes == [] and readings.perf_counted["groups"] == [[True, True, True]]
    n = counts["server"]["raw_syscalls:sys_enter"]
    assert n.value + n.unc >= truth["extra_syscalls"] > 0


def test_the_tracepoint_holder_holds_until_sigterm_and_takes_no_pids(no_leftovers):
    h = subprocess.Popen([str(binary("cpustat")), "--hold"], stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        ready = json.loads(h.stdout.readline())
        assert ready["event"] == "ready" and ready["holding"] is True and ready["notes"] == []
        # The holder's event keeps the tracepoint registered: a sampler meanwhile still counts.
        with running_server("naive") as srv:
            readings, client = sampled(srv.ready, 16 * MIB)
        counts, notes = cpu.perf_counts(readings, *cpu.marks([client]))
        assert notes == [] and counts["server"]["raw_syscalls:sys_enter"].value > 0
        assert h.poll() is None
        h.send_signal(signal.SIGTERM)
        assert h.wait(timeout=30) == 0
    finally:
        kill_group(h)
    r = subprocess.run([str(binary("cpustat")), "--hold", "--pid", str(os.getpid())], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 2 and "--hold takes no --pid" in r.stderr
