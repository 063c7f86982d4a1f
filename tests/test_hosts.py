"""LocalHost and LocalProc with real processes: process groups, events, deadman, parent death."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from splicebench.errors import CommandFailed, ProcError
from splicebench.hosts.local import PARENT_PID_ENV, SELF_GUARDED, LocalHost, guarded, launch, pdeathsig_prefix
from splicebench.programs import accel
from splicebench.registry import pinned, program_argv, program_name

pytestmark = pytest.mark.e2e


def gone(pid: int, within: float = 10.0) -> bool:
    """True once pid no longer exists or is a zombie (orphans are reaped by PID 1 within ~1 s)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
            if state in (b"Z", b"X"):
                return True
        except (FileNotFoundError, ProcessLookupError):
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def host():
    h = LocalHost()
    yield h
    h.close()


def test_run_captures_output_and_exit_code(host):
    r = host.run(["sh", "-c", 'echo out; echo err >&2; exit 3', "sh"], check=False)
    assert (r.returncode, r.stdout, r.stderr) == (3, "out\n", "err\n")
    with pytest.raises(CommandFailed) as exc:
        host.run(["sh", "-c", "echo boom >&2; exit 2"])
    assert "exited with code 2" in str(exc.value) and "boom" in str(exc.value)


def test_arguments_are_never_interpreted_by_a_shell(host, tmp_path):
    evil = f"$(touch {tmp_path}/pwned); `touch {tmp_path}/pwned2`"
    r = host.run(["printf", "%s", evil])
    assert r.stdout == evil
    assert os.listdir(tmp_path) == []


def test_run_timeout_kills_the_whole_group(host, tmp_path):
    pidfile = tmp_path / "pid"
    r = host.run(["sh", "-c", 'sleep 60 & echo $! > "$1"; wait', "sh", str(pidfile)], timeout=0.5, check=False)
    assert r.returncode == 124 and "timed out" in r.stderr
    assert gone(int(pidfile.read_text()))


def test_json_event_and_stop(host):
    p = host.start([sys.executable, "-c", textwrap.dedent("""
        import json, signal, sys, time
        signal.signal(signal.SIGTERM, lambda *a: (print(json.dumps({"event": "summary"}), flush=True), sys.exit(0)))
        print("noise", flush=True)
        print(json.dumps({"event": "ready", "port": 1234}), flush=True)
        time.sleep(60)
    """)])
    assert p.wait_json_event("ready", 20) == {"event": "ready", "port": 1234}
    p.signal(signal.SIGTERM)
    assert p.wait(20) == 0
    assert p.read_stdout_lines()[0] == "noise"
    assert '"summary"' in p.stdout()


def test_wait_json_event_reports_an_early_exit(host):
    p = host.start(["sh", "-c", "echo cannot bind >&2; exit 3"])
    with pytest.raises(ProcError) as exc:
        p.wait_json_event("ready", 20)
    assert "exited with code 3 before printing a 'ready' line" in str(exc.value)
    assert "cannot bind" in str(exc.value)


def test_wait_json_event_times_out(host):
    p = host.start(["sleep", "60"])
    with pytest.raises(ProcError, match="printed no 'ready' line within 0.2 s"):
        p.wait_json_event("ready", 0.2)
    p.kill()
    assert gone(p.pid)


def test_kill_takes_the_whole_process_group(host, tmp_path):
    p = host.start(["sh", "-c", 'sleep 60 & echo $!; sleep 60 & echo $!; wait'])
    deadline = time.monotonic() + 20
    while len(p.read_stdout_lines()) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    children = [int(x) for x in p.read_stdout_lines()]
    assert len(children) == 2
    p.kill()
    assert all(gone(pid) for pid in children + [p.pid])
    p.kill()  # idempotent


def test_deadman_kills_a_forgotten_program(host):
    p = host.start(["sleep", "60"], deadman_s=0.3)
    assert p.wait(20) == -signal.SIGKILL


def test_cpu_times_of_a_busy_program(host):
    t_start = time.monotonic()
    p = host.start([sys.executable, "-c", "import time\nt=time.process_time()\nwhile time.process_time()-t<0.3: pass\n"
                                          "print('done', flush=True)\ntime.sleep(60)"])
    deadline = time.monotonic() + 30
    while not p.read_stdout_lines() and time.monotonic() < deadline:
        time.sleep(0.02)
    user, sys_ = p.cpu_times()
    wall = time.monotonic() - t_start
    # One thread burnt 0.3 s of CPU: at least that (less clock ticks), never more than the wall time
    # since it started (one clock tick of rounding allowed).
    assert 0.25 <= user + sys_ <= wall + 0.01
    p.kill()
    # Once the program has ended, /proc has nothing more to say: the last reading stays.
    assert p.cpu_times() == (user, sys_)


def test_close_kills_what_the_host_started():
    h = LocalHost()
    p = h.start(["sleep", "60"])
    h.close()
    assert gone(p.pid)


def test_programs_die_with_a_killed_orchestrator(tmp_path):
    assert pdeathsig_prefix(), "setpriv with --pdeathsig is needed (util-linux)"
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(os.path.dirname(os.path.dirname(__file__)) + '/src')!r})
        from splicebench.hosts.local import LocalHost
        p = LocalHost().start(["sleep", "60"])
        print(p.pid, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert r.returncode == -signal.SIGKILL
    assert gone(int(r.stdout.split()[0]))


def test_built_programs_guard_themselves(programs):
    """Every built program arms its parent-death signal and checks its parent before main()
    (servers/net.c): started by launch() it needs no setpriv or shell, refuses to run under a
    parent that is not the orchestrator named in its environment, and dies with a killed
    orchestrator."""
    built = sorted(p.name for p in Path(programs.dir).iterdir() if p.name in SELF_GUARDED)
    assert {"sb-client", "sb-cpustat", "sb-echo-naive", "sb-echo-splice", "sb-echo-sockmap"} <= set(built)
    for name in built:
        argv, env = launch([f"{programs.dir}/{name}", "--help"])
        assert argv[0] == f"{programs.dir}/{name}" and env is not None and env[PARENT_PID_ENV] == str(os.getpid())
        r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)
        assert r.returncode == 0 and "usage" in (r.stdout + r.stderr).lower(), (name, r)
        for stale in ("1", "x", ""):
            r = subprocess.run(argv, env={**env, PARENT_PID_ENV: stale}, capture_output=True, text=True, timeout=30)
            assert (r.returncode, r.stdout, r.stderr) == (70, "", ""), (name, stale, r)
    # Anything else still goes through setpriv and the shell's parent check.
    assert launch(["/bin/echo", "x"]) == (guarded(["/bin/echo", "x"]), None)
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(os.path.dirname(os.path.dirname(__file__)) + '/src')!r})
        from splicebench.hosts.local import LocalHost
        p = LocalHost().start([{programs.dir + '/sb-echo-naive'!r}])
        p.wait_json_event("ready", 30)
        print(p.pid, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert r.returncode == -signal.SIGKILL
    assert gone(int(r.stdout.split()[0]))


def test_parent_guard_stops_a_program_whose_orchestrator_is_already_gone():
    """The window between fork and setpriv's prctl: a program whose parent is no longer the
    orchestrator must not start (the guard compares $PPID with the orchestrator's pid)."""
    argv = guarded(["/bin/echo", "started"])
    assert argv[: len(pdeathsig_prefix())] == pdeathsig_prefix()
    # As if the orchestrator had another pid: the guard refuses to exec the program.
    stale = argv.copy()
    stale[stale.index(str(os.getpid()))] = "1"
    r = subprocess.run(stale, capture_output=True, text=True, timeout=30)
    assert (r.returncode, r.stdout) == (70, "")
    # With this process as the parent it runs the program, arguments passed through untouched.
    hostile = ["/bin/echo", "$(touch /tmp/x)", "a; b", "'\""]
    r = subprocess.run(guarded(hostile), capture_output=True, text=True, timeout=30)
    assert (r.returncode, r.stdout) == (0, "$(touch /tmp/x) a; b '\"\n")


def test_programs_behind_taskset_and_a_cgroup_guard_themselves(programs):
    """A built program pinned (taskset) and inside a cgroup (the acceleration's shell) is still
    started with PARENT_PID_ENV: both wrappers exec it in place, so its own parent check sees the
    orchestrator, refuses a stale one, and the program dies with a killed orchestrator."""
    mount = accel.cgroup2_mount(Path("/proc/self/mountinfo").read_text())
    assert mount, "no cgroup2 mount"
    cg = f"{mount}/sb-test-guard-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    os.mkdir(cg)
    try:
        prog = f"{programs.dir}/sb-echo-naive"
        wrapped = accel.in_cgroup(pinned([prog, "--help"], "0"), cg)
        assert program_argv(wrapped) == [prog, "--help"] and program_name(wrapped) == "sb-echo-naive"
        argv, env = launch(wrapped)
        assert argv == wrapped and env is not None and env[PARENT_PID_ENV] == str(os.getpid())
        r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)
        assert r.returncode == 0 and "usage" in (r.stdout + r.stderr).lower(), r
        r = subprocess.run(argv, env={**env, PARENT_PID_ENV: "1"}, capture_output=True, text=True, timeout=30)
        assert (r.returncode, r.stdout, r.stderr) == (70, "", ""), r
        # A peer (not built here) behind the same wrappers still goes through setpriv and the guard.
        other = accel.in_cgroup(pinned(["/bin/echo", "x"], "0"), cg)
        assert launch(other) == (guarded(other), None)
        script = textwrap.dedent(f"""
            import os, signal, sys
            sys.path.insert(0, {str(os.path.dirname(os.path.dirname(__file__)) + '/src')!r})
            from splicebench.hosts.local import LocalHost
            p = LocalHost().start({accel.in_cgroup(pinned([prog], "0"), cg)!r})
            p.wait_json_event("ready", 30)
            print(p.pid, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        """)
        r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
        assert r.returncode == -signal.SIGKILL
        pid = int(r.stdout.split()[0])
        assert gone(pid)
    finally:
        for _ in range(100):
            try:
                os.rmdir(cg)
                break
            except OSError:
                time.sleep(0.1)
    assert not os.path.exists(cg)
