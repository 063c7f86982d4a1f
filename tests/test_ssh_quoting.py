"""Command lines for remote shells: hostile words reach the program verbatim, never the shell.

Checked with the real /bin/sh of this machine (the same shell family a remote login runs)."""

from __future__ import annotations

import subprocess

import pytest

from splicebench.hosts.ssh_proc import exit_code, parse_times
from splicebench.hosts.host_keys import fingerprint
from splicebench.hosts.connection import remote_command

pytestmark = pytest.mark.unit

HOSTILE = [
    "plain", "two words", "$(touch {canary})", "`touch {canary}`", "a;touch {canary}",
    "a|touch {canary}", "a&&touch {canary}", "'; touch {canary}; '", '"; touch {canary}; "',
    "$HOME", "${{IFS}}", "*", "~", "-n", "--", "\\", "a\nb", "tab\there", "", "é ü ✓", "$'\\x41'",
    "!", "#comment", ">{canary}",
]


def run_sh(cmd: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, cwd=cwd, timeout=10)


@pytest.mark.parametrize("word", HOSTILE)
def test_hostile_word_reaches_the_program_verbatim(word, tmp_path):
    canary = tmp_path / "pwned"
    w = word.format(canary=canary)
    r = run_sh(remote_command(["printf", "[%s]", w, w]))
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"[{w}][{w}]"
    assert not canary.exists()


@pytest.mark.parametrize("word", ["dir with space", "x;touch {canary}", "$(touch {canary})", "-x"])
def test_hostile_cwd_and_env_are_quoted(word, tmp_path):
    canary = tmp_path / "pwned"
    d = tmp_path / word.format(canary=canary).replace("/", "_")
    d.mkdir()
    r = run_sh(remote_command(["sh", "-c", 'pwd; printf "%s" "$V"'], cwd=str(d),
                              env={"V": word.format(canary=canary)}))
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"{d}\n{word.format(canary=canary)}"
    assert not canary.exists()


def test_home_relative_cwd_expands_home_only(tmp_path):
    (tmp_path / "a b").mkdir()
    r = subprocess.run(["sh", "-c", remote_command(["pwd"], cwd="~/a b")], capture_output=True,
                       text=True, env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert r.stdout.strip() == str(tmp_path / "a b")


def test_sudo_wraps_the_whole_command_once():
    cmd = remote_command(["printf", "%s", "a;b"], cwd="/tmp", sudo=True)
    assert cmd.startswith("sudo -n -- sh -c ")
    # What sudo would run, run directly: same words come out.
    inner = cmd[len("sudo -n -- "):]
    assert run_sh(inner).stdout == "a;b"


@pytest.mark.parametrize("argv,err", [([], "empty argv"), (["a\0b"], "NUL byte")])
def test_unsendable_argv_is_refused(argv, err):
    with pytest.raises(ValueError, match=err):
        remote_command(argv)


def test_bad_env_name_is_refused():
    with pytest.raises(ValueError, match="bad environment variable name"):
        remote_command(["true"], env={"A;B": "x"})


def test_exit_code_and_times_parsing():
    assert [exit_code(x) for x in (0, 1, 124, 137, 143, 255)] == [0, 1, 124, -9, -15, 255]
    assert parse_times("1m2.50s") == pytest.approx(62.5)
    assert parse_times("0m0.010000s") == pytest.approx(0.01)


def test_fingerprint_matches_ssh_keygen(tmp_path):
    import paramiko

    key = tmp_path / "k"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    out = subprocess.run(["ssh-keygen", "-lf", f"{key}.pub"], capture_output=True, text=True,
                         check=True).stdout.split()[1]
    pub = paramiko.Ed25519Key(filename=str(key))
    assert fingerprint(pub) == out
