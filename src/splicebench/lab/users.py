"""A non-root login for the lab's hosts (`invoke lab.up --user NAME`): created for one lab, removed with it.

Most remote hosts let an ordinary user in, with password-less sudo, not root. The lab creates such
a user on this machine (the namespace hosts share its /etc/passwd), so that every lab host logs in
as it:

- its login name is ``<lab prefix>-<NAME>`` (e.g. ``sb-lab-bench``), never an existing user's, and
  its comment field (GECOS) is ``splicebench lab <prefix>``: `remove` finds the lab's users by that
  mark in /etc/passwd, so `lab.down` removes them also after a crash that lost the lab's state;
- its home is /home/<login> (removed with it); the lab's sshd reads the client key from its own
  AuthorizedKeysFile, the same for root and this user;
- sudo (`sudo` argument): "nopasswd" puts ``<login> ALL=(ALL) NOPASSWD: ALL`` in
  /etc/sudoers.d/<login> (checked with ``visudo -cf`` before it is moved into place); "password"
  writes ``<login> ALL=(ALL) ALL`` there, so sudo asks for a password it does not have (sudo -n
  fails); "none" writes no file (no sudo at all).
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from splicebench.errors import UserError
from splicebench.lab.processes import terminate

SUDO_KINDS = ("nopasswd", "password", "none")
SUDOERS_D = Path("/etc/sudoers.d")
NAME_RE = re.compile(r"^[a-z][a-z0-9]{0,15}$")
GECOS = "splicebench lab {prefix}"


class LabUserError(UserError):
    """The lab's user cannot be created or removed."""


@dataclass(frozen=True)
class LabUser:
    """The non-root login the lab's hosts are reached as (NAME before the lab's prefix is added)."""

    name: str
    sudo: str = "nopasswd"

    def __post_init__(self):
        if not NAME_RE.match(self.name):
            raise LabUserError(f"lab user {self.name!r}: use 1-16 of a-z, 0-9 (a letter first)")
        if self.sudo not in SUDO_KINDS:
            raise LabUserError(f"lab user sudo {self.sudo!r}: use one of {', '.join(SUDO_KINDS)}")

    def login(self, prefix: str) -> str:
        return f"{prefix}-{self.name}"


def create(prefix: str, user: LabUser) -> str:
    """Create the lab's user (home, sudo as asked); its login name. Refuses a name that exists."""
    for tool in ("useradd", "userdel", "visudo", "sudo"):
        if shutil.which(tool) is None:
            raise LabUserError(f"{tool} not found: a lab with --user needs it (apt-get install "
                               f"{'sudo' if tool in ('visudo', 'sudo') else 'passwd'})")
    login = user.login(prefix)
    try:
        pwd.getpwnam(login)
        raise LabUserError(f"user {login} exists already: remove that lab first (invoke lab.down --prefix "
                           f"{prefix}) or choose another --user")
    except KeyError:
        pass
    # Password "*": no password opens it, but the account is not locked ("!"), which sshd refuses.
    _retry(["useradd", "--password", "*", "--create-home", "--home-dir", f"/home/{login}", "--shell", "/bin/sh",
            "--comment", GECOS.format(prefix=prefix), "--user-group", login])
    if user.sudo != "none":
        rule = "NOPASSWD: ALL" if user.sudo == "nopasswd" else "ALL"
        _sudoers(login, f"# splicebench lab {prefix}: removed by `invoke lab.down`\n{login} ALL=(ALL) {rule}\n")
    return login


def _sudoers(login: str, text: str) -> None:
    """Write /etc/sudoers.d/<login>: first under a name sudo skips (it has a dot), checked, renamed."""
    tmp = SUDOERS_D / f"{login}.new"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o440)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    r = subprocess.run(["visudo", "-cf", str(tmp)], capture_output=True, text=True)
    if r.returncode != 0:
        tmp.unlink()
        raise LabUserError(f"visudo rejected the lab's sudoers rule: {(r.stdout + r.stderr).strip()}")
    os.replace(tmp, SUDOERS_D / login)


def remove(prefix: str) -> list[str]:
    """Remove every user marked as this lab's (home, group, sudoers file); what was removed."""
    removed = []
    mark = GECOS.format(prefix=prefix)
    for entry in pwd.getpwall():
        if entry.pw_gecos != mark or not entry.pw_name.startswith(prefix + "-"):
            continue
        login = entry.pw_name
        for f in (SUDOERS_D / login, SUDOERS_D / f"{login}.new"):
            if f.exists():
                f.unlink()
        terminate(lambda uid=entry.pw_uid: _pids_of(uid), term_wait=1.0, kill_wait=5.0)
        _retry(["userdel", "--remove", login], ok=(0, 6, 12))  # 12: the home was gone already
        removed.append(f"user {login}")
    return removed


def _pids_of(uid: int) -> list[int]:
    """PIDs of the processes running as uid (real user id)."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if d.stat().st_uid == uid:
                    out.append(int(d.name))
            except OSError:
                pass
    return out


def _retry(argv: list[str], ok: tuple[int, ...] = (0,)) -> None:
    """Run a shadow-utils command; retry while /etc/passwd is locked by another (exit status 10)."""
    for _ in range(50):
        r = subprocess.run(argv, capture_output=True, text=True)
        if r.returncode in ok:
            return
        if r.returncode != 10:
            break
        time.sleep(0.1)
    raise LabUserError(f"`{' '.join(argv)}` failed: {r.stderr.strip()}")
