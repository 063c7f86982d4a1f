"""Lab hosts reached as a non-root user, as most remote hosts are: password-less sudo end to end
(every server kind: deploy, check, run, clean; Ctrl-C and a SIGKILLed orchestrator), a sudo that asks
for a password and a user without sudo (needs root: real sshd in network namespaces)."""

from __future__ import annotations

import csv
import pwd
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from splicebench.hosts.inventory import load_inventory
from splicebench.hosts.ssh import SSHHost
from splicebench.lab import netns as lab
from splicebench.lab import users
from splicebench.run.privileges import NO_ROOT_NEEDED

pytestmark = [pytest.mark.privileged, pytest.mark.lab, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
PLACE = "timeout: 60s\nplacement: {server: lab1, clients: [lab2]}\n"
ECHO = ("name: user-echo\nservers: [naive, splice, sockmap, uring]\n"
        "workload: {type: stream, conns: 2, bytes: 2MiB}\nrepetitions: {warmup: 0, measured: 1}\n" + PLACE)
PROXIES = ("name: user-proxies\nservers: [proxy-naive, proxy-splice, proxy-sockmap, proxy-uring, nginx, haproxy, "
           "haproxy-splice-auto, haproxy-splice]\nbackend: {name: splice, host: lab1}\n"
           "workload: {type: stream, conns: 2, bytes: 2MiB}\nrepetitions: {warmup: 0, measured: 1}\n" + PLACE)
LONG = ("name: user-long\nservers: [sockmap, naive]\n"
        "workload: {type: pingpong, conns: 1, msg_size: 64, round_trips: 5000000}\n"
        "repetitions: {warmup: 0, measured: 2}\n" + PLACE)


def new_config() -> lab.LabConfig:
    return lab.LabConfig(prefix="sbu" + secrets.token_hex(2), subnet=lab.free_subnet())


def lab_users(prefix: str) -> list[str]:
    return [e.pw_name for e in pwd.getpwall() if e.pw_gecos == f"splicebench lab {prefix}"]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    cfg = new_config()
    try:
        lb = lab.up(2, cfg, user=users.LabUser("bench"))
        yield {"lab": lb, "dir": tmp_path_factory.mktemp("user"), "login": f"{cfg.prefix}-bench"}
    finally:
        removed = lab.down(cfg)
    assert f"user {cfg.prefix}-bench" in removed
    assert lab_users(cfg.prefix) == []
    assert not Path(f"/etc/sudoers.d/{cfg.prefix}-bench").exists()
    assert not Path(f"/home/{cfg.prefix}-bench").exists()


def invoke(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=600, stdin=subprocess.DEVNULL)


def run_args(env, text: str, name: str) -> list[str]:
    f = env["dir"] / f"{name}.yaml"
    f.write_text(text)
    return ["run", "--scenario", str(f), "--hosts", str(env["lab"].inventory),
            "--results-dir", str(env["dir"] / name / "results"), "--reports-dir", str(env["dir"] / name / "reports")]


def others(env) -> dict[int, str]:
    """Processes in the lab's namespaces other than the sshd listeners: pid -> 'user exe'."""
    out = {}
    listeners = {h.sshd_pid for h in env["lab"].hosts}
    for h in env["lab"].hosts:
        for pid in lab.namespace_pids(h.namespace):
            try:
                exe = Path(f"/proc/{pid}/exe").resolve().name
                owner = pwd.getpwuid(Path(f"/proc/{pid}").stat().st_uid).pw_name
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except (OSError, KeyError):
                continue
            # the listener runs as `sh -c ... exec sshd`: same pid
            if pid not in listeners:
                out[pid] = f"{owner} {exe} {cmd[:60]}"
    return out


def nothing_left(env, timeout: float = 20) -> dict[int, str]:
    deadline = time.monotonic() + timeout
    while others(env) and time.monotonic() < deadline:
        time.sleep(0.1)
    return others(env)


def test_lab_user_logs_in_with_password_less_sudo(env):
    login = env["login"]
    entry = pwd.getpwnam(login)
    assert entry.pw_uid != 0 and entry.pw_dir == f"/home/{login}"
    assert Path(f"/etc/sudoers.d/{login}").read_text().splitlines()[-1] == f"{login} ALL=(ALL) NOPASSWD: ALL"
    inv = load_inventory(env["lab"].inventory)
    assert {(h.user, h.sudo) for h in inv.hosts.values()} == {(login, "sudo")}
    h = SSHHost(inv.get("lab1"), inv)
    try:
        assert h.run(["id", "-u"]).stdout.strip() == "0"  # commands through sudo -n
        assert h.sftp_op("whoami", lambda s: s.normalize(".")) == f"/home/{login}"  # SFTP as the user
    finally:
        h.close()


def test_every_server_kind_end_to_end_as_a_user(env):
    inv = str(env["lab"].inventory)
    r = invoke("deploy", "--hosts", inv)
    assert r.returncode == 0, r.stdout + r.stderr
    r = invoke("check", "--hosts", inv)
    assert "FAIL" not in r.stdout, r.stdout
    for name, text, servers in (("echo", ECHO, 4), ("proxies", PROXIES, 9)):
        r = invoke(*run_args(env, text, name))
        assert r.returncode == 0, r.stdout + r.stderr
        (run_dir,) = (env["dir"] / name / "results").iterdir()
        rows = (run_dir / "samples.csv").read_text().splitlines()[1:]
        assert len(rows) == servers and all(",ok," in row for row in rows), rows
    # The user owns the workdir it made over SFTP; the programs ran as root through sudo.
    h = SSHHost(load_inventory(inv).get("lab1"), load_inventory(inv))
    try:
        assert h.run(["stat", "-c", "%U", "/tmp/splicebench", "/tmp/splicebench/build"]).stdout.split() == \
            [env["login"]] * 2
    finally:
        h.close()
    assert nothing_left(env) == {}
    r = invoke("clean", "--hosts", inv)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "lab1: stopped 0 leftover process(es)" in r.stdout
    assert nothing_left(env) == {}


def wait_for_client(env) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if any("sb-client" in v for v in others(env).values()):
            time.sleep(0.3)  # into the sample
            return
        time.sleep(0.05)
    raise AssertionError(f"no client started: {others(env)}")


def test_ctrl_c_leaves_no_process_of_either_user(env):
    p = subprocess.Popen([sys.executable, "-m", "invoke", *run_args(env, LONG, "ctrlc")], cwd=REPO,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for_client(env)
    assert any(v.startswith("root ") for v in others(env).values())  # the programs run as root
    p.send_signal(signal.SIGINT)
    out, _ = p.communicate(timeout=120)
    assert p.returncode == 130, out
    assert nothing_left(env) == {}


def test_sigkilled_orchestrator_then_invoke_clean_leaves_nothing(env):
    p = subprocess.Popen([sys.executable, "-m", "invoke", *run_args(env, LONG, "kill")], cwd=REPO,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_client(env)
    p.kill()
    p.wait()
    r = invoke("clean", "--hosts", str(env["lab"].inventory))
    assert r.returncode == 0, r.stdout + r.stderr
    assert nothing_left(env) == {}


LINE = ("host lab1: sudo -n fails for {login}: its sudo asks for a password, or it may not use sudo (sudo: a password "
        "is required): allow {login} password-less sudo (a line '{login} ALL=(ALL) NOPASSWD: ALL' in "
        "/etc/sudoers.d/{login}, checked with visudo -cf), or set 'sudo: none' for lab1 in the inventory to run only "
        "what needs no root (" + NO_ROOT_NEEDED + ", the client)")


@pytest.mark.parametrize("sudo", ["password", "none"])
def test_a_sudo_that_cannot_be_used_is_told_in_one_line(tmp_path, sudo):
    cfg = new_config()
    try:
        lb = lab.up(1, cfg, user=users.LabUser("bench", sudo))
        login = f"{cfg.prefix}-bench"
        inv = lb.inventory
        inv.write_text(inv.read_text().replace("sudo: none", "sudo: sudo"))  # as if sudo were expected
        f = tmp_path / "s.yaml"
        f.write_text(ECHO.replace("clients: [lab2]", "clients: [lab1]"))
        r = invoke("run", "--scenario", str(f), "--hosts", str(inv), "--results-dir", str(tmp_path / "r"))
        assert r.returncode == 1, r.stdout + r.stderr
        lines = r.stderr.splitlines()
        assert "these hosts' logins cannot run privileged commands (nothing was run):" in lines, r.stderr
        assert lines[-1] == LINE.format(login=login), r.stderr
        assert not (tmp_path / "r").exists()
    finally:
        lab.down(cfg)
    assert lab_users(cfg.prefix) == []


def test_without_root_the_unprivileged_programs_run_and_sockmap_is_refused(tmp_path, paranoid_2):
    """Also: the CPU sampler runs as the user, the kernel refuses its perf events
    (kernel.perf_event_paranoid=2), and the samples say so instead of failing."""
    cfg = new_config()
    try:
        lb = lab.up(1, cfg, user=users.LabUser("bench", "none"))
        login = f"{cfg.prefix}-bench"
        f = tmp_path / "s.yaml"
        f.write_text(ECHO.replace("clients: [lab2]", "clients: [lab1]"))
        r = invoke("run", "--scenario", str(f), "--hosts", str(lb.inventory), "--results-dir", str(tmp_path / "r"))
        assert r.returncode == 1
        assert r.stderr.splitlines()[-1] == (
            f"host lab1: cannot run sockmap (loads BPF: CAP_BPF and CAP_NET_ADMIN): its commands run as {login} "
            f"(uid {pwd.getpwnam(login).pw_uid}) without root; allow {login} password-less sudo and set "
            f"'sudo: sudo' in the inventory, or remove them from the scenario"), r.stderr
        f.write_text(PROXIES.replace("clients: [lab2]", "clients: [lab1]").replace(
            "proxy-sockmap, ", "").replace(", haproxy-splice-auto, haproxy-splice", ""))
        r = invoke("run", "--scenario", str(f), "--hosts", str(lb.inventory), "--results-dir", str(tmp_path / "r"),
                   "--reports-dir", str(tmp_path / "reports"))
        assert r.returncode == 0, r.stdout + r.stderr
        (run_dir,) = (tmp_path / "r").iterdir()
        rows = (run_dir / "samples.csv").read_text().splitlines()[1:]
        assert len(rows) == 6 and all(",ok," in row for row in rows), rows  # direct, 3 proxies, nginx, haproxy
        with open(run_dir / "samples.csv", newline="") as fh:
            for row in csv.DictReader(fh):
                assert row["perf_server_ctxsw"] == "" and row["server_cpu_s"] != "", row
                assert "context-switches, cpu-migrations of --pid" in row["perf_note"], row["perf_note"]
                assert "kernel.perf_event_paranoid=2" in row["perf_note"], row["perf_note"]
    finally:
        lab.down(cfg)


def test_lab_down_after_a_crash_removes_the_user():
    # lab.up died half-way: the user was created, the lab's state directory and namespaces are gone.
    cfg = new_config()
    login = users.create(cfg.prefix, users.LabUser("bench"))
    assert lab_users(cfg.prefix) == [login] and Path(f"/etc/sudoers.d/{login}").exists()
    assert Path(f"/home/{login}").is_dir()
    with pytest.raises(users.LabUserError, match=f"user {login} exists already"):
        users.create(cfg.prefix, users.LabUser("bench"))
    assert lab.down(cfg) == [f"user {login}"]
    assert lab_users(cfg.prefix) == []
    assert not Path(f"/etc/sudoers.d/{login}").exists() and not Path(f"/home/{login}").exists()
