"""The invoke tasks themselves: every namespace listed, problems the user can fix end as one line and
their exit code in every namespace, Ctrl-C as 130, and the preflight table of `check`.

Most tests run `python -m invoke` in a subprocess, as a user would, with PYTHONPATH at this
checkout's src/ and SPLICEBENCH_CACHE in a temporary directory."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import invoke
import pytest

from splicebench.cli import commands, edge
from splicebench.errors import UserError
from splicebench.hosts.local import LocalHost
from splicebench.hosts.base import RunResult

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[1]

TASKS = ["check", "clean", "compare", "deploy", "export", "report", "run", "scenarios", "schema", "test",
         "hosts.list", "hosts.trust", "lab.arm64", "lab.down", "lab.status", "lab.up"]


def invoke_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "invoke", "-r", str(REPO), *args]


def env(tmp_path: Path) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if k != "SPLICEBENCH_HOSTS"}
    e.update(PYTHONPATH=str(REPO / "src"), SPLICEBENCH_CACHE=str(tmp_path / "cache"), HOME=str(tmp_path))
    return e


def tasks(tmp_path: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(invoke_cmd(*args), cwd=REPO, env=env(tmp_path), capture_output=True, text=True,
                          timeout=timeout)


def test_list_shows_every_task_of_every_namespace(tmp_path):
    r = tasks(tmp_path, "--list")
    assert r.returncode == 0, r.stderr
    listed = [line.split()[0] for line in r.stdout.splitlines() if line.startswith("  ") and line.split()
              and not line.startswith("    ")]
    assert sorted(listed) == sorted(TASKS)


@pytest.mark.parametrize("name, doc, flags", [
    ("run", "Run a scenario: build", ["--scenario", "--results-dir", "--reports-dir", "--no-provision", "--hosts"]),
    ("compare", "Compare runs", ["--run-a", "--run-b", "--more", "--results-dir", "--reports-dir"]),
    ("check", "Preflight this host", ["--hosts", "--only"]),
    ("lab.up", "Create a lab of SSH hosts", ["--hosts=INT", "--subnet=STRING", "--prefix=STRING"]),
    ("lab.arm64", "Add an emulated aarch64 host", ["--ssh-timeout=INT", "--no-provision", "--off", "--prefix"]),
    ("hosts.trust", "Fetch a host's SSH key", ["--name=STRING", "--hosts=STRING", "--yes"]),
])
def test_help_is_the_docstring_and_lists_the_flags(tmp_path, name, doc, flags):
    # The tasks are wrapped by the edge's UserError handler: their docstring and flags must survive it.
    r = tasks(tmp_path, "--help", name)
    assert r.returncode == 0, r.stderr
    assert f"Docstring:\n  {doc}" in r.stdout
    for flag in flags:
        assert flag in r.stdout


# (argv, exact stderr): problems the user can fix, in the top-level and the hosts.* namespaces.
BAD_INVENTORY = "version: 1\nhosts:\n  web1: {host: 10.0.0.5, sudo: maybe}\n"
GOOD_INVENTORY = "version: 1\nhosts:\n  web1: {host: 10.0.0.5}\n"
USER_ERRORS = [
    (["hosts.list", "--hosts", "/nonexistent"], "cannot read inventory /nonexistent: No such file or directory"),
    (["hosts.list", "--hosts", "{bad}"], "{bad}: hosts.web1.sudo: 'maybe' is not one of auto, root, sudo, none"),
    (["hosts.trust", "nope", "--hosts", "{good}"], "host 'nope' is not in inventory {good}; hosts defined: web1"),
    (["deploy", "--hosts", "/nonexistent"], "cannot read inventory /nonexistent: No such file or directory"),
    (["check", "--hosts", "{bad}"], "{bad}: hosts.web1.sudo: 'maybe' is not one of auto, root, sudo, none"),
]


@pytest.mark.parametrize("argv, message", USER_ERRORS, ids=[" ".join(a[:2]) for a, _ in USER_ERRORS])
def test_a_user_error_is_one_line_and_exit_code_1(tmp_path, argv, message):
    bad, good = tmp_path / "bad.yaml", tmp_path / "good.yaml"
    bad.write_text(BAD_INVENTORY)
    good.write_text(GOOD_INVENTORY)
    subst = {"{bad}": str(bad), "{good}": str(good)}
    r = tasks(tmp_path, *[subst.get(a, a) for a in argv])
    assert r.returncode == 1
    assert r.stderr == message.format(bad=bad, good=good) + "\n"
    assert r.stdout == ""


def test_unknown_scenario_exits_1_with_the_message(tmp_path):
    r = tasks(tmp_path, "run", "--scenario", "does-not-exist", "--results-dir", str(tmp_path / "r"))
    assert r.returncode == 1
    assert r.stderr.startswith(f"no scenario 'does-not-exist': not a file and not in {REPO / 'scenarios'}/ "
                               f"(available: ")
    assert len(r.stderr.splitlines()) == 1 and "Traceback" not in r.stderr
    assert not (tmp_path / "r").exists()


def test_ctrl_c_in_a_hosts_task_exits_130(tmp_path):
    # A host that accepts the TCP connection but never sends its SSH banner: hosts.trust waits for it
    # (up to connect_timeout, 60 s here) until Ctrl-C.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        inv = tmp_path / "hosts.yaml"
        inv.write_text(f"version: 1\nhosts:\n  mute: {{host: 127.0.0.1, port: {silent.getsockname()[1]}, "
                       f"connect_timeout: 60}}\n")
        proc = subprocess.Popen(invoke_cmd("hosts.trust", "mute", "--hosts", str(inv), "--yes"), cwd=REPO,
                                env=env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            silent.settimeout(30)
            conn, _ = silent.accept()  # the task is now waiting for the banner
            with conn:
                proc.send_signal(signal.SIGINT)
                out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 130
    assert err == "interrupted\n" and out == ""


class Exit3(UserError):
    exit_code = 3


def test_the_edge_keeps_a_user_errors_exit_code_and_turns_ctrl_c_into_130(capsys):
    @edge.task(help={"what": "error | interrupt | nothing"})
    def act(c: invoke.Context, what: str = "nothing") -> None:
        """Raise what was asked for."""
        if what == "error":
            raise Exit3("line one of what to do")
        if what == "interrupt":
            raise KeyboardInterrupt

    assert isinstance(act, invoke.Task) and act.help == {"what": "error | interrupt | nothing"}
    assert act.__doc__ == "Raise what was asked for."
    program = invoke.Program(namespace=invoke.Collection(act), binary="sb")
    for what, code, message in [("error", 3, "line one of what to do\n"), ("interrupt", 130, "interrupted\n")]:
        with pytest.raises(SystemExit) as e:
            program.run(["sb", "act", "--what", what])
        assert e.value.code == code
        assert capsys.readouterr().err == message
    program.run(["sb", "act"])  # no error: returns


def test_check_prints_its_table(tmp_path):
    r = tasks(tmp_path, "check")
    rows = [line.split(None, 1) for line in r.stdout.splitlines()]
    assert [status for status, _ in rows if status not in ("ok", "warn", "FAIL")] == []
    whats = [rest.split("  ")[0] for _, rest in rows]
    for what in ("kernel", "machine", "privileges", "BPF support", "setpriv --pdeathsig", "load average"):
        assert what in whats
    assert r.returncode == (1 if any(s == "FAIL" for s, _ in rows) else 0), r.stderr


def test_check_and_clean_of_inventory_hosts_print_a_line_per_host(tmp_path):
    r = tasks(tmp_path, "check", "--only", "local")
    head, *rows = r.stdout.splitlines()
    assert head.split() == ["host", "check", "detail"]
    assert rows and all(row.startswith("local  ") for row in rows)
    r = tasks(tmp_path, "clean", "--only", "local")
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"local: stopped 0 leftover process(es); removed build cache {tmp_path / 'cache'}/build\n"


class NoSetprivHost(LocalHost):
    """This machine, except that setpriv cannot run: stands in for a remote host without setpriv,
    which cannot be had here without a second machine."""

    def run(self, argv, **kw) -> RunResult:
        if argv and argv[0] == "setpriv":
            return RunResult(127, "", "sh: 1: setpriv: not found")
        return super().run(argv, **kw)


def test_check_probes_setpriv_on_the_host_it_checks(tmp_path):
    assert commands.has_pdeathsig(LocalHost()), "this machine has setpriv --pdeathsig (util-linux)"
    paths = commands.Paths.of(REPO, str(tmp_path / "results"))
    rows = {what: (status, detail) for status, what, detail in commands.check(paths, NoSetprivHost())}
    assert rows["setpriv --pdeathsig"] == (
        "warn", "missing: programs survive a SIGKILLed orchestrator until their deadman timer")
    rows = {what: (status, detail) for status, what, detail in commands.check(paths, LocalHost())}
    assert rows["setpriv --pdeathsig"] == ("ok", "programs die with the orchestrator")


def test_check_has_an_io_uring_row(tmp_path):
    paths = commands.Paths.of(REPO, str(tmp_path / "results"))
    rows = {what: (status, detail) for status, what, detail in commands.check(paths, LocalHost())}
    disabled = Path("/proc/sys/kernel/io_uring_disabled").read_text().strip()
    status, detail = rows["io_uring"]
    assert detail == (f"kernel.io_uring_disabled={disabled} (allowed); opcodes present: ACCEPT POLL_ADD RECV SEND "
                      "SEND_ZC SPLICE ASYNC_CANCEL, liburing-dev installed")
    assert status == ("ok" if disabled == "0" else "warn")


@pytest.mark.privileged
def test_check_says_when_io_uring_is_disabled(tmp_path, io_uring_disabled):
    paths = commands.Paths.of(REPO, str(tmp_path / "results"))
    rows = {what: (status, detail) for status, what, detail in commands.check(paths, LocalHost())}
    assert rows["io_uring"] == ("warn", "kernel.io_uring_disabled=2 (disabled: the uring programs cannot run); "
                                        "io_uring_setup refused: Operation not permitted, liburing-dev installed")


@pytest.mark.parametrize("disabled, allowed, probe, expected", [
    ("0", True, {"present": ["ACCEPT", "RECV"], "missing": ["SEND_ZC"]},
     ("kernel.io_uring_disabled=0 (allowed); opcodes present: ACCEPT RECV; missing: SEND_ZC", False)),
    ("absent (before Linux 6.6: allowed)", True, None,
     ("kernel.io_uring_disabled=absent (before Linux 6.6: allowed) (allowed); opcodes not probed: no compiler",
      False)),
    ("1", False, {"present": ["ACCEPT"], "missing": []},
     ("kernel.io_uring_disabled=1 (disabled: the uring programs cannot run); opcodes present: ACCEPT", False)),
])
def test_io_uring_detail(disabled, allowed, probe, expected):
    assert commands.io_uring_detail(disabled, allowed, probe, "not probed: no compiler") == expected
